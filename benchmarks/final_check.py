"""Is a final model (``mn-cv --final``) fit to ship? Its weights beside the fold models' on every image.

    python -m benchmarks.final_check --final CV/final/model.pt --folds CV/fold-*/model.pt --data DATA \\
        [--json F] [--md F]

A final model trains on every image for the folds' median best epoch and keeps its *last* weights; a fold model
keeps the weights of its best validation epoch. Nothing held out can say how the final does, but one thing can
say that something went wrong: on the very images it trained on, the final should fit at least as well as fold
models that trained on four fifths of them. Every model is evaluated on every image (``mn-eval --split none``,
paper protocol); the verdict fails when the final's mean DSC is below every fold model's, or its CSA bias
(mean signed relative error) is further from 0 than every fold model's by more than ``--bias-margin`` (2 points).
Exit codes: 0 the final passes, 1 it does not (the report says why), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

from train.cli_util import add_logging_args, setup_logging
from train.errors import UserError, run_cli

log = logging.getLogger(__name__)


def evaluate_all(model: str, data: str, threads: int | None) -> dict[str, Any]:
    """``mn-eval --split none --protocol paper`` of ``model``: DSC, CSA |error| median, bias, missed."""
    from train.evaluate import main as evaluate_main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        evaluate_main(["--checkpoint", model, "--data", data, "--split", "none", "--protocol", "paper",
                       "--json", str(out), "-q", *(["--threads", str(threads)] if threads else [])])
        result = json.loads(out.read_text())
    agreement = result.get("csa_agreement") or {}
    return {"model": model, "n": result["n"], "dsc": result["dsc"]["mean"],
            "csa_abs_median": (result.get("csa_rel_error") or {}).get("median"),
            "csa_bias": agreement.get("bias_rel"), "missed": agreement.get("missed")}


def verdict(final: dict[str, Any], folds: Sequence[dict[str, Any]], bias_margin: float = 0.02) -> list[str]:
    """Why ``final`` is not fit to ship (empty: it passes)."""
    reasons = []
    if folds and final["dsc"] < min(f["dsc"] for f in folds):
        reasons.append(f"its mean DSC on every image ({final['dsc']:.4f}) is below every fold model's "
                       f"({min(f['dsc'] for f in folds):.4f} to {max(f['dsc'] for f in folds):.4f}), though it trained "
                       "on all of them")
    biases = [abs(f["csa_bias"]) for f in folds if f.get("csa_bias") is not None]
    if biases and final.get("csa_bias") is not None and abs(final["csa_bias"]) > max(biases) + bias_margin:
        reasons.append(f"its CSA bias ({100 * final['csa_bias']:+.1f} %) is further from 0 than every fold model's "
                       f"(at most {100 * max(biases):.1f} % away) by more than {100 * bias_margin:.0f} points")
    return reasons


def format_md(report: dict[str, Any]) -> str:
    lines = ["| model | images | DSC (paper) | CSA \\|error\\| median | CSA bias | missed |",
             "|---|---|---|---|---|---|"]
    for label, row in [("final", report["final"]), *(("fold model", r) for r in report["folds"])]:
        lines.append(f"| {label}: `{row['model']}` | {row['n']} | {row['dsc']:.4f} | "
                     f"{100 * (row['csa_abs_median'] or 0):.1f} % | {100 * (row['csa_bias'] or 0):+.1f} % | "
                     f"{row['missed']} |")
    lines.append("")
    lines.append("Verdict: " + ("the final fits its own training images as well as the fold models do."
                                if report["passes"] else "not fit to ship: " + "; ".join(report["reasons"]) + "."))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.final_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--final", required=True, help="the final model (mn-cv --final: CV/final/model.pt)")
    p.add_argument("--folds", nargs="+", required=True, metavar="MODEL", help="fold models of the same recipe")
    p.add_argument("--data", required=True, help="the median-nerve dataset")
    p.add_argument("--bias-margin", type=float, default=0.02, help="see above (default 0.02: 2 points)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of each evaluation")
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--md", default=None, metavar="FILE", help="write the report as Markdown")
    add_logging_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    for model in [args.final, *args.folds]:
        if not Path(model).is_file():
            raise UserError(f"{model} does not exist: give mn-cv's OUT/final/model.pt and OUT/fold-K/model.pt files")
    final = evaluate_all(args.final, args.data, args.threads)
    folds = [evaluate_all(m, args.data, args.threads) for m in args.folds]
    reasons = verdict(final, folds, args.bias_margin)
    report = {"final": final, "folds": folds, "passes": not reasons, "reasons": reasons,
              "bias_margin": args.bias_margin, "data": args.data,
              "what": "every model on every image (mn-eval --split none, paper protocol); the fold models trained "
                      "on four fifths of them, the final on all"}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    text = format_md(report)
    if args.md:
        Path(args.md).write_text(text + "\n")
    print(text)
    return 0 if report["passes"] else 1


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m benchmarks.final_check", main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
