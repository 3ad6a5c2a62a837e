"""``mn-train`` under torchrun, keeping what every rank ends with (rank 0 alone writes the run's files):
``python -m tests.train._ddp_driver KEEP_DIR <mn-train arguments>`` writes ``KEEP_DIR/rank{R}.pt`` (the
model's state dict: parameters and BatchNorm buffers) and ``KEEP_DIR/rank{R}.json`` (history, best epoch
and loss) for each rank R, so a test can compare the ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import train.trainer as trainer_mod
from train.train_cli import cli


def main(argv: list[str]) -> int:
    keep = Path(argv[0])
    fit = trainer_mod.Trainer.fit

    def fit_and_keep(self: trainer_mod.Trainer) -> dict:
        summary = fit(self)
        rank = self.dist.rank
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, keep / f"rank{rank}.pt")
        (keep / f"rank{rank}.json").write_text(json.dumps(
            {"history": self.history, "best_epoch": self.best_epoch, "best_val": self.best_val}))
        return summary

    trainer_mod.Trainer.fit = fit_and_keep  # type: ignore[method-assign]
    return cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
