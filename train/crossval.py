"""``mn-cv``: patient-level k-fold cross-validation of a training recipe, resumable, aggregated.

For every fold ``k`` of ``--folds K`` (patients dealt into K folds by :func:`train.splits.kfold_split`
with ``--seed``), ``mn-cv`` trains each part of the recipe (:mod:`train.recipes`) with
``mn-train --folds K --fold k``, joins a cascade's parts, and evaluates the model on fold k's
validation patients by both protocols (``mn-eval --protocol paper`` and ``native``, with CSA
agreement and per-image rows). Then it aggregates: mean +- SD across folds of every metric, and
the pooled per-image CSA agreement of all folds (every image is validated exactly once).

Resumable: each step leaves a file behind (``FOLD/PART/.done`` after a finished training,
``FOLD/model.pt``, ``FOLD/eval-PROTOCOL.json``); running the same command again skips what is
done and continues a stopped training with ``mn-train --resume``. Ctrl-C / SIGTERM stop the
training in flight after it saved ``last.pt`` (exit 130). ``--fold k`` runs one fold (several
folds can run at once, e.g. on one GPU); ``--aggregate`` only writes the summary.

``--share DIR ...``: a part whose training would be the very one a finished run in another mn-cv folder
already did (same fold and part; the same mn-train settings, those that only say where it writes, on
what device, how often it saves and whether it resumed aside: :func:`same_training`) is copied from
there instead of trained again, e.g. the refiners of ``cascade-strong-ph`` for ``cascade-acqloc``,
whose refiner is trained alike. When that training has begun there and not finished, the run stops
before it (exit 2, what came before it kept) rather than train a second copy of it.

``--part NAME`` trains only that part of the recipe (in each fold run, or in ``--final``): a cascade's
localiser and refiner train independently of each other, so on one GPU they can run as two processes at
once; then the same command without ``--part`` joins and evaluates (copies nothing, trains nothing again).

``--as-final`` checks that procedure before it is trusted: each fold trained the way ``--final`` trains (the
folds' schedule, nothing chosen by its validation images: ``mn-train --blind``, last weights kept) and
evaluated on the fold's patients, beside the fold's own model. It also writes ``cv-summary-as-final.json``
(and ``.md``): the same summary of the folds trained that way, the estimate of the final procedure itself
(``--aggregate --as-final`` writes it alone; ``python -m tools.bundle add --cv-summary`` takes either).

``--final`` trains the recipe on every image (``--split none``) for a schedule the folds fix
(:mod:`train.schedule`, ``--schedule PART=RULE``: by default the median of the folds' best epochs; ``best-drops``
and ``fold-drops`` also drop the learning rate where the folds did): the model that ships, its epochs chosen by
cross-validation and not by any image it is evaluated on; ``OUT/final/schedule.json`` says what was taken.
Its mask threshold is chosen the same way (:mod:`train.threshold`): the one whose median signed CSA error over
every fold's out-of-fold images is nearest 0, written into its config; the summary's leave-one-fold-out table
says what that threshold does on patients that did not choose it.

Layout of ``--out``::

    OUT/fold-K/PART/        mn-train run folders (best.pt, last.pt, history.csv, .done)
    OUT/fold-K/model.pt     the fold's model (a cascade joined from its parts)
    OUT/fold-K/eval-{paper,native}.json, per-image-{paper,native}.csv
    OUT/fold-K/threshold-sweep.csv  native areas and Dice at thresholds 0.30-0.70 (train.threshold)
    OUT/fold-K/as-final/... --as-final: fold K trained as --final trains, evaluated on its patients
    OUT/final/...           --final
    OUT/cv-summary.json, cv-summary.md

Exit codes: 0 done, 2 bad input, 130 stopped (run again to continue), 1 a training failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from train.errors import EXIT_INTERRUPTED, UserError, run_cli
from train.recipes import RECIPES, Recipe, check_trainable, get_recipe, part_args, shared_part_name
from train.schedule import DEFAULT_PATIENCE, Schedule, final_schedule, parse_schedules, rate_drops
from train.window import TTA_MODES, check_tta

log = logging.getLogger(__name__)

PROTOCOLS = ("paper", "native")
SUMMARY_METRICS = ("dsc", "iou", "precision", "recall")
AGREEMENT_METRICS = ("bias_rel", "sd_rel", "abs_rel_median", "abs_rel_mean", "mae_px", "missed")


NOT_THE_TRAINING = ("out", "resume", "device", "workers", "save_every_min", "max_minutes")
"""``mn-train`` settings that do not change what a run learns: where it writes, whether it resumed, the device
(the same CPU or GPU kind is the user's call), data-loading workers and how often it saves; a run stopped by
``--max-minutes`` has no ``.done``."""


def same_training(recorded: dict, args: Sequence[str]) -> list[str]:
    """The settings in which the mn-train arguments ``args`` differ from a run's recorded ``config.json``
    ``train`` block (empty: the same training); paths compare resolved."""
    from dataclasses import asdict

    from train.train_cli import build_parser, training_config

    wanted = json.loads(json.dumps(asdict(training_config(build_parser().parse_args(list(args)), "cpu"))))

    def norm(key: str, value: Any) -> Any:
        if key == "data" and value is not None:
            return str(Path(value).resolve())
        if key == "extra_train":
            return sorted(str(Path(v).resolve()) for v in value or [])
        return value

    defaults = json.loads(json.dumps(asdict(training_config(build_parser().parse_args(["--data", ".", "--out", "."]),
                                                            "cpu"))))
    # a setting added to mn-train after a run was recorded: that run had its default
    recorded = {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}
    return sorted(k for k in set(wanted) | set(recorded) if k not in NOT_THE_TRAINING
                  and norm(k, wanted.get(k)) != norm(k, recorded.get(k)))


class TrainingFailed(UserError):
    """An ``mn-train`` run failed; its log is named."""

    exit_code = 1


def run_forwarding_sigterm(args: Sequence[str], log_file: Any) -> int:
    """Run ``args`` with output to ``log_file``; a SIGTERM to this process is passed on to it (a Ctrl-C
    reaches it directly, from the terminal) and its own exit code is returned once it has saved."""
    proc = subprocess.Popen(list(args), stdout=log_file, stderr=subprocess.STDOUT)

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward) if threading.current_thread() is threading.main_thread() else None
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the child got the same Ctrl-C: let it save and exit
                continue
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class CrossValidation:
    """Runs (or continues) the folds of one recipe; see the module docstring."""

    def __init__(self, recipe: Recipe, data: str, out: str, *, folds: int = 5, seed: int = 42,
                 extra: Sequence[str] = (), epochs: int | None = None, train_args: Sequence[str] = (),
                 device: str = "cpu", size: str | None = None, crop: str | None = None, candidates: int = 1,
                 tta: str = "none", python: str = sys.executable, share: Sequence[str] = (), parts: Sequence[str] = (),
                 summary_only: bool = False, threshold_from: str = "folds",
                 schedules: Sequence[str] = ()) -> None:
        """``threshold_from``: the sweeps ``--final`` chooses the mask threshold on: ``"folds"`` (the fold
        models') or ``"as-final"`` (``fold-K/as-final/``: models trained the way the final is).
        ``summary_only``: only :meth:`write_summary` will be called (``--aggregate``), so the dataset and the
        extra frames are recorded as given but not required. ``parts``: train only these parts (default all);
        the model is then neither joined nor evaluated (a run with every part does that). ``schedules``:
        ``PART=RULE`` items, the rule (:mod:`train.schedule`) of each part's schedule in --final and --as-final."""
        if folds < 2:
            raise UserError(f"--folds must be at least 2, got {folds}")
        if not summary_only and not Path(data).is_dir():
            raise UserError(f"--data {data} is not a folder; give the dataset folder holding Images/ and Masks/")
        for folder in () if summary_only else extra:
            if not Path(folder).is_dir():
                raise UserError(f"--extra-train {folder} is not a folder")
        if epochs is not None and epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {epochs}")
        if threshold_from not in ("folds", "as-final"):
            raise UserError(f"--threshold-from must be folds or as-final, got {threshold_from!r}")
        self.threshold_from = threshold_from
        self.recipe = recipe
        self.data = str(data)
        self.out = Path(out)
        self.folds = int(folds)
        self.seed = int(seed)
        self.extra = [str(e) for e in extra]
        self.epochs = epochs
        self.train_args = list(train_args)
        self.device = device
        self.size = size
        self.crop = crop
        if candidates < 1:
            raise UserError(f"--candidates must be at least 1, got {candidates}")
        self.candidates = int(candidates)
        self.tta = check_tta(tta)
        self.python = python
        self.share = [Path(d) for d in share]
        unknown = [q for q in parts if q not in recipe.parts]
        if unknown:
            raise UserError(f"--part {unknown[0]}: recipe {recipe.name} has the parts {', '.join(recipe.parts)}")
        self.parts = [q for q in recipe.parts if not parts or q in parts]
        self.schedules = parse_schedules(schedules, list(recipe.parts))
        fixed = [q for q, rule in self.schedules.items() if rule != "best"]
        if fixed and epochs is not None:
            raise UserError(f"--epochs and --schedule {fixed[0]}={self.schedules[fixed[0]]} both set that part's "
                            "epochs; drop --epochs (the rule takes them from the folds)")
        if fixed and "--lr-drops" in self.train_args:
            raise UserError(f"--train-args gives --lr-drops and --schedule {fixed[0]}={self.schedules[fixed[0]]} "
                            "derives them from the folds; drop one")
        for folder in self.share:
            if not folder.is_dir():
                raise UserError(f"--share {folder} is not a folder; give another mn-cv run's --out")
            if folder.resolve() == self.out.resolve():
                raise UserError(f"--share {folder} is this run's own --out")
        if recipe.needs_extra and not self.extra and not summary_only:
            part_args(recipe, next(iter(recipe.parts)), extra=[], epochs=1)  # raises the explanation

    # -- one fold -----------------------------------------------------------------------------

    def fold_dir(self, fold: int) -> Path:
        return self.out / f"fold-{fold}"

    def part_epochs(self, part: str) -> int:
        return self.epochs or int(self.recipe.epochs.get(part, 100))

    def train_part(self, run: Path, part: str, split_args: Sequence[str], epochs: int) -> None:
        """Train (or continue) one part into ``run``; returns when ``run/.done`` exists."""
        if (run / ".done").is_file():
            log.info("%s: done already", run)
            return
        recipe_args = part_args(self.recipe, part, extra=self.extra, epochs=epochs)
        if self.crop and "--crop" in recipe_args:
            recipe_args[recipe_args.index("--crop") + 1] = self.crop
        args = [self.python, "-m", "train.train_cli", "--data", self.data, "--out", str(run), "--seed", str(self.seed),
                "--device", self.device, *split_args, *recipe_args, *(["--size", self.size] if self.size else []),
                *self.train_args]
        if self.copy_shared(run, args[3:]):
            return
        if (run / "last.pt").is_file():
            args.append("--resume")
        run.mkdir(parents=True, exist_ok=True)
        log_path = run.with_name(run.name + ".log")
        log.info("training %s (%s): %s", run, "resume" if "--resume" in args else "new",
                 " ".join(args[3:]))
        started = time.monotonic()
        with open(log_path, "a") as fh:
            code = run_forwarding_sigterm(args, fh)
        if code == EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        if code != 0:
            raise TrainingFailed(f"training {run} failed (exit {code}); see {log_path}")
        (run / ".done").write_text(f"{time.monotonic() - started:.0f} s\n")

    def copy_shared(self, run: Path, args: Sequence[str]) -> bool:
        """Copy the same finished training from a ``--share`` folder into ``run`` (which must not have begun);
        returns whether it did."""
        if not self.share or (run.is_dir() and any(run.iterdir())):
            return False
        relative = run.relative_to(self.out)
        alias = relative.with_name(shared_part_name(relative.name))
        for folder, source in [(f, f / rel) for f in self.share for rel in dict.fromkeys((relative, alias))]:
            config = source / "config.json"
            if not config.is_file():
                continue
            differ = same_training(json.loads(config.read_text()).get("train") or {}, args)
            if differ:
                log.info("%s: not the same training as %s (%s differ)", run, source, ", ".join(differ))
                continue
            if not (source / ".done").is_file():
                raise UserError(f"{run}: the same training is under way in {source} and not finished; finish it "
                                f"there (run that mn-cv again) and then run this again, or leave out --share "
                                f"{folder} to train a copy here")
            tmp = run.with_name(run.name + ".sharing")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            (tmp / ".done").write_text(f"copied from {source.resolve()}\n")
            run.parent.mkdir(parents=True, exist_ok=True)
            if run.is_dir():
                run.rmdir()
            os.replace(tmp, run)
            log.info("%s: the same training finished in %s: copied", run, source)
            return True
        return False

    def build_model(self, folder: Path, checkpoint: str = "best.pt") -> Path:
        """The model of one fold (or ``final``): the single part's checkpoint or the joined cascade."""
        model = folder / "model.pt"
        if model.is_file():
            if self.recipe.is_cascade:
                self.check_joined(model)
            return model
        if self.recipe.is_cascade:
            from train.cascade import build_cascade_checkpoint

            tmp = folder / "model.pt.tmp"
            refiners = [str(folder / part / checkpoint) for part in self.recipe.refiner_parts]
            localisers = [str(folder / part / checkpoint) for part in self.recipe.localiser_parts]
            build_cascade_checkpoint(localisers[0] if len(localisers) == 1 else localisers,
                                     refiners[0] if len(refiners) == 1 else refiners,
                                     str(tmp), candidates=self.candidates, tta=self.tta, mirror=self.recipe.mirror,
                                     localiser_mirror=self.recipe.localiser_mirror if len(localisers) > 1 else None)
            os.replace(tmp, model)
        else:
            shutil.copyfile(folder / "model" / checkpoint, folder / "model.pt.tmp")
            os.replace(folder / "model.pt.tmp", model)
        return model

    def check_joined(self, model: Path) -> None:
        """Refuse a cascade joined earlier with other ``--candidates`` / ``--tta`` (or another recipe's ``mirror`` or
        ``localiser_mirror``) than this run's: its evaluations would be reported as this run's."""
        from train.checkpoint import load_checkpoint

        kwargs = ((load_checkpoint(model).get("config") or {}).get("model") or {}).get("kwargs") or {}
        def mirror(part: str) -> str:
            return "alternate" if any(((kwargs.get(part) or {}).get("kwargs") or {}).get("mirrored") or []) else "none"

        joined = {"candidates": int(kwargs.get("candidates", 1)), "tta": kwargs.get("tta", "none"),
                  "mirror": mirror("refiner"), "localiser-mirror": mirror("localiser")}
        asked = {"candidates": self.candidates, "tta": self.tta, "mirror": self.recipe.mirror,
                 "localiser-mirror": self.recipe.localiser_mirror}
        if joined != asked:
            differ = ", ".join(f"--{k} {joined[k]} there, {asked[k]} here" for k in asked if joined[k] != asked[k])
            raise UserError(f"{model} was joined with other settings ({differ}); evaluate these settings in a new "
                            f"--out with --share {self.out} (the trained parts are copied, not trained again)")

    def evaluate_fold(self, fold: int, model: Path, folder: Path | None = None) -> None:
        """Both protocols' results of fold ``fold``'s model on its validation patients, and the native threshold sweep
        (:mod:`train.threshold`; for a fold evaluated before sweeps existed, the native evaluation runs again)."""
        from train.evaluate import main as evaluate_main
        from train.threshold import SWEEP_NAME

        folder = folder or self.fold_dir(fold)
        sweep = folder / SWEEP_NAME
        for protocol in PROTOCOLS:
            target = folder / f"eval-{protocol}.json"
            with_sweep = protocol == "native" and not sweep.is_file()
            if target.is_file() and not with_sweep:
                continue
            tmp = folder / f"eval-{protocol}.json.tmp"
            sweep_tmp = folder / (SWEEP_NAME + ".tmp")
            code = evaluate_main(["--checkpoint", str(model), "--data", self.data, "--split", "kfold",
                                  "--folds", str(self.folds), "--fold", str(fold), "--seed", str(self.seed),
                                  "--protocol", protocol, "--device", self.device, "--json", str(tmp),
                                  "--per-image", str(folder / f"per-image-{protocol}.csv"), "-q",
                                  *(["--sweep", str(sweep_tmp)] if with_sweep else [])])
            if code != 0:  # pragma: no cover - main raises on failure
                raise UserError(f"evaluating {model} failed")
            os.replace(tmp, target)
            if with_sweep:
                os.replace(sweep_tmp, sweep)
            log.info("fold %d %s protocol: %s", fold, protocol, target)

    def threshold_report(self, sub: str = "") -> dict[str, Any] | None:
        """:func:`train.threshold.leave_one_fold_out` of the folds with a sweep (``sub="as-final"``: of the folds
        trained as the final is); None below two."""
        from train.threshold import leave_one_fold_out, load_cv

        folds = {k: rows for k, rows in load_cv(self.out, sub).items() if k < self.folds}
        return leave_one_fold_out(folds) if len(folds) >= 2 else None

    def run_fold(self, fold: int) -> None:
        if not 0 <= fold < self.folds:
            raise UserError(f"--fold must be in 0..{self.folds - 1}, got {fold}")
        folder = self.fold_dir(fold)
        split = ["--folds", str(self.folds), "--fold", str(fold)]
        for part in self.parts:
            self.train_part(folder / part, part, split, self.part_epochs(part))
        if not self.all_done(folder):
            return
        self.evaluate_fold(fold, self.build_model(folder))

    def all_done(self, folder: Path) -> bool:
        """Whether this run trains every part of the recipe, so it joins and evaluates the model; with ``--part``
        it does not (two part runs finishing at once would both join): say what does."""
        if len(self.parts) < len(self.recipe.parts):
            log.info("%s: %s trained; the model is joined and evaluated by the same command without --part",
                     folder, ", ".join(self.parts))
            return False
        return True

    # -- all folds, the final model, the summary ----------------------------------------------

    def _fold_records(self, fold: int, part: str) -> tuple[Path | None, Path | None]:
        """A finished fold part's ``(config.json, history.csv)``: its run folder's, or the ``PART-config.json`` /
        ``PART-history.csv`` that ``benchmarks/cv_collect.sh`` keeps of a finished part whose run is gone."""
        run = self.fold_dir(fold) / part
        if (run / ".done").is_file() and (run / "config.json").is_file():
            return run / "config.json", run / "history.csv" if (run / "history.csv").is_file() else None
        cfg, hist = self.fold_dir(fold) / f"{part}-config.json", self.fold_dir(fold) / f"{part}-history.csv"
        return (cfg if cfg.is_file() else None), (hist if hist.is_file() else None)

    def _finished_folds(self, part: str) -> list[tuple[dict[str, Any], Path | None]]:
        """``(config, history.csv or None)`` of each fold whose ``part`` finished with a best epoch
        (:meth:`_fold_records`), in fold order."""
        out = []
        for fold in range(self.folds):
            cfg, hist = self._fold_records(fold, part)
            if cfg is not None:
                config = json.loads(cfg.read_text())
                if (config.get("metrics") or {}).get("best_epoch"):
                    out.append((config, hist))
        return out

    def best_epochs(self) -> dict[str, list[int]]:
        """``{part: [best epoch of each finished fold]}`` (1-based, from each run's config.json, or from the
        ``PART-config.json`` that ``benchmarks/cv_collect.sh`` keeps of a finished part whose run is gone)."""
        return {part: [int(c["metrics"]["best_epoch"]) for c, _ in self._finished_folds(part)]
                for part in self.recipe.parts}

    def final_schedules(self) -> dict[str, Schedule]:
        """Each part's schedule for --final and --as-final (:mod:`train.schedule`, the rule of ``--schedule``,
        ``best`` by default): from every fold's best epoch, plateau patience and learning-rate drops; ``--epochs``
        overrides the ``best`` rule's epoch count."""
        out = {}
        for part in self.parts:
            finished = self._finished_folds(part)
            configs, histories = [c for c, _ in finished], [h for _, h in finished]
            if len(configs) < self.folds:
                raise UserError(f"--final and --as-final need every fold trained first ({len(configs)} of "
                                f"{self.folds} folds have a finished {part}); run mn-cv without them")
            rule = self.schedules.get(part, "best")
            best = [int(c["metrics"]["best_epoch"]) for c in configs]
            drops: list[list[int]] = []
            if rule == "fold-drops":
                missing = [k for k, h in enumerate(histories) if h is None]
                if missing:
                    raise UserError(f"--schedule {part}=fold-drops needs every fold's {part} history.csv; folds "
                                    f"{missing} have none (benchmarks/cv_collect.sh keeps it as {part}-history.csv)")
                drops = [rate_drops(h) for h in histories if h is not None]
            patience = statistics.median_low([int((c.get("train") or {}).get("lr_patience") or DEFAULT_PATIENCE)
                                              for c in configs])
            schedule = final_schedule(rule, best, drops, patience=patience)
            if self.epochs and rule == "best":
                schedule = Schedule(rule, self.epochs, (), {**schedule.source, "epochs_given": self.epochs})
            out[part] = schedule
            log.info("%s: %d epochs%s (%s: %s)", part, schedule.epochs,
                     f", rate drops after {', '.join(map(str, schedule.drops))}" if schedule.drops else "",
                     rule, schedule.source)
        return out

    def write_schedule(self, folder: Path, schedules: dict[str, Schedule]) -> None:
        """``folder/schedule.json``: each part's schedule and where it came from (what a reader of the final
        model's folder needs to know how it was trained)."""
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_json(folder / "schedule.json", {part: s.as_dict() for part, s in schedules.items()})
        for part, schedule in schedules.items():
            cfg = folder / part / "config.json"
            if not cfg.is_file():
                continue
            train = json.loads(cfg.read_text()).get("train") or {}
            had = (train.get("epochs"), list(train.get("lr_drops") or []))
            if had != (schedule.epochs, list(schedule.drops)):
                log.warning("%s was trained (or begun) for %s epochs with rate drops %s, not this schedule's %d and "
                            "%s: it is kept as it is; train this schedule into a new --out", folder / part, had[0],
                            had[1] or "none", schedule.epochs, list(schedule.drops) or "none")

    def run_as_final(self, fold: int) -> None:
        """Fold ``fold`` trained the way --final trains (the folds' median best epochs, its validation images
        measured but choosing nothing: ``mn-train --blind``, last weights kept) and evaluated on its validation
        patients: what the final procedure does on patients it never saw (OUT/fold-K/as-final/)."""
        if not 0 <= fold < self.folds:
            raise UserError(f"--fold must be in 0..{self.folds - 1}, got {fold}")
        folder = self.fold_dir(fold) / "as-final"
        split = ["--folds", str(self.folds), "--fold", str(fold), "--blind"]
        schedules = self.final_schedules()
        self.write_schedule(folder, schedules)
        for part, schedule in schedules.items():
            self.train_part(folder / part, part, [*split, *schedule.train_args()], schedule.epochs)
        if self.all_done(folder):
            self.evaluate_fold(fold, self.build_model(folder, checkpoint="last.pt"), folder)

    def run_final(self) -> Path | None:
        folder = self.out / "final"
        schedules = self.final_schedules()
        self.write_schedule(folder, schedules)
        for part, schedule in schedules.items():
            self.train_part(folder / part, part, ["--split", "none", *schedule.train_args()], schedule.epochs)
        if not self.all_done(folder):
            return None
        model = self.build_model(folder, checkpoint="last.pt")
        self.calibrate_final(model)
        return model

    def calibrate_final(self, model: Path) -> None:
        """Write the mask threshold the out-of-fold images choose into the final model's config
        (``postprocess.threshold``). ``--threshold-from folds`` (default) needs every fold's sweep;
        ``as-final`` takes the folds trained the way the final is (``mn-cv --as-final``; at least two, and the
        config names them), since a schedule that keeps the last weights can shift areas by a few percent
        against the fold models' best-epoch weights. Else the model stays at 0.5, and the log says why."""
        import torch

        from train.checkpoint import load_checkpoint
        from train.threshold import DEFAULT_THRESHOLD

        as_final = self.threshold_from == "as-final"
        report = self.threshold_report("as-final" if as_final else "")
        needed = 2 if as_final else self.folds
        if report is None or len(report["folds"]) < needed:
            log.warning("the final model keeps the mask threshold 0.5: %s of %d folds have a threshold sweep%s "
                        "(%s writes one when it evaluates a fold; %d needed)",
                        0 if report is None else len(report["folds"]), self.folds,
                        " in fold-K/as-final/" if as_final else "", "mn-cv --as-final" if as_final else "mn-cv",
                        needed)
            return
        payload = load_checkpoint(model)
        chosen = float(report["final"])
        which = (f"folds {', '.join(str(k) for k in report['folds'])} of {self.folds}, each trained the way the "
                 f"final is (mn-cv --as-final)" if as_final else f"{self.folds} patient folds")
        rule = f"median signed CSA error nearest 0 over the out-of-fold images of {which} (seed {self.seed})"
        if not report["helps"]:
            rule = (f"kept {DEFAULT_THRESHOLD:g}: {float(report['chosen_all']):.3f}, the {rule}, made the pooled CSA "
                    "|error| median larger when each fold was measured at the other folds' choice")
        payload["config"]["postprocess"] = {
            "threshold": chosen,
            "chosen_by": f"mn-cv {self.recipe.name}: {rule}",
            "leave_one_fold_out": {"at_default": report["pooled_at_default"], "at_chosen": report["pooled_at_chosen"]},
        }
        tmp = model.with_name(model.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, model)
        log.info("final model: mask threshold %.3f (%s)", chosen, rule)

    def summary(self, sub: str = "") -> dict[str, Any]:
        """Mean +- SD across folds and pooled per-image agreement; written to cv-summary.json/.md.

        ``sub="as-final"``: of the folds trained the way the final is (``fold-K/as-final/``, ``mn-cv --as-final``),
        the estimate of the final procedure itself; ``models`` in the result says which."""
        from train.metrics import csa_agreement

        result: dict[str, Any] = {"recipe": self.recipe.name, "description": self.recipe.description,
                                  "models": sub or "folds", "candidates": self.candidates, "tta": self.tta,
                                  "data": self.data, "folds": self.folds, "seed": self.seed,
                                  "folds_done": [], "best_epochs": self.best_epochs(), "protocols": {}}
        for protocol in PROTOCOLS:
            per_fold: list[dict[str, Any]] = []
            rows: list[dict[str, Any]] = []
            for fold in range(self.folds):
                path = self.fold_dir(fold) / sub / f"eval-{protocol}.json"
                if path.is_file():
                    r = json.loads(path.read_text())
                    r["fold"] = fold
                    per_fold.append(r)
                    rows.extend(r.get("per_image", []))
            entry: dict[str, Any] = {"folds_evaluated": [r["fold"] for r in per_fold], "n_images": len(rows)}
            for key in SUMMARY_METRICS:
                entry[key] = _across([r[key]["mean"] for r in per_fold])
            entry["csa_rel_error_median"] = _across([r["csa_rel_error"]["median"] for r in per_fold])
            for key in AGREEMENT_METRICS:
                entry[f"agreement_{key}"] = _across([(r.get("csa_agreement") or {}).get(key) for r in per_fold])
            entry["pooled"] = {
                "dsc_mean": _mean([row["dsc"] for row in rows]),
                "csa_agreement": csa_agreement([row.get("area_true_px") for row in rows],
                                               [row.get("area_pred_px") for row in rows],
                                               dsc=[row["dsc"] for row in rows],
                                               stems=[str(row.get("stem", "")) for row in rows]) if rows else None,
            }
            result["protocols"][protocol] = entry
            if protocol == "paper":
                result["folds_done"] = entry["folds_evaluated"]
        result["threshold"] = self.threshold_report(sub)
        return result

    def summary_path(self, sub: str = "") -> Path:
        """``cv-summary.json`` (the fold models) or ``cv-summary-as-final.json`` (``sub="as-final"``)."""
        return self.out / (f"cv-summary-{sub}.json" if sub else "cv-summary.json")

    def write_summary(self, sub: str = "") -> dict[str, Any]:
        result = self.summary(sub)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.summary_path(sub)
        _atomic_json(path, result)
        path.with_suffix(".md").write_text(format_summary(result) + "\n")
        return result


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _across(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """``{mean, sd, n}`` across folds (sample SD, ``ddof=1``; None below two folds)."""
    vals = [float(v) for v in values if v is not None]
    return {"mean": _mean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def format_summary(result: dict[str, Any]) -> str:
    """A Markdown table of the summary (one row per protocol)."""
    def ms(d: dict | None, scale: float = 1.0, digits: int = 4) -> str:
        if not d or d.get("mean") is None:
            return "-"
        sd = f" ± {d['sd'] * scale:.{digits}f}" if d.get("sd") is not None else ""
        return f"{d['mean'] * scale:.{digits}f}{sd}"

    models = str(result.get("models") or "folds")
    as_final = models.startswith("as-final")  # also a repeat kept beside it, e.g. fold-K/as-final-r2/
    lines = [f"# {result['recipe']}: {result['folds']}-fold patient cross-validation"
             + (f", each fold trained the way the final is (mn-cv --as-final; fold-K/{models}/)" if as_final else ""),
             "", result["description"], "",
             f"Folds evaluated: {result['folds_done']} (seed {result['seed']}); best epochs per part: "
             f"{result['best_epochs']}", "",
             "| protocol | images | DSC | IoU | CSA abs. error median (%) | CSA bias (%) | CSA SD (%) "
             "| missed (DSC<0.5) | pooled CSA bias (%) [95 % LoA] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for protocol, e in result["protocols"].items():
        pooled = (e.get("pooled") or {}).get("csa_agreement") or {}
        loa = pooled.get("loa_rel")
        pooled_text = "-" if pooled.get("bias_rel") is None else (
            f"{100 * pooled['bias_rel']:+.1f}" + (f" [{100 * loa[0]:+.1f}, {100 * loa[1]:+.1f}]" if loa else ""))
        missed = pooled.get("missed")
        lines.append(f"| {protocol} | {e['n_images']} | {ms(e['dsc'])} | {ms(e['iou'])} | "
                     f"{ms(e['csa_rel_error_median'], 100, 1)} | {ms(e['agreement_bias_rel'], 100, 1)} | "
                     f"{ms(e['agreement_sd_rel'], 100, 1)} | {'-' if missed is None else missed} | {pooled_text} |")
    lines += ["", "Mean ± SD across folds (sample SD); pooled = every validation image of every fold together."]
    if result.get("threshold"):
        from train.threshold import format_report

        lines += ["", "## Mask threshold", "", format_report(result["threshold"])]
    return "\n".join(lines)


def part_status(run: Path, epochs: int) -> dict[str, Any]:
    """Where one part's training stands, from its folder alone: ``state`` (``not started``, ``training`` or
    ``done``), ``epochs_done``, ``epochs`` (the planned count), ``best_epoch`` and its ``best_val_dsc``, the median
    ``seconds_per_epoch`` of the last 10 epochs, ``last_saved_min_ago`` (of ``last.pt``) and, while training,
    ``eta_h``: the hours the remaining epochs take at that pace (an early stop can end it sooner)."""
    import csv

    out: dict[str, Any] = {"state": "not started", "epochs": epochs, "epochs_done": 0, "best_epoch": None,
                           "best_val_dsc": None, "seconds_per_epoch": None, "last_saved_min_ago": None, "eta_h": None}
    history = run / "history.csv"
    if not history.is_file():
        return out
    with open(history, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("epoch")]
    config = run / "config.json"
    if config.is_file():
        recorded = json.loads(config.read_text())
        out["epochs"] = int((recorded.get("train") or {}).get("epochs") or epochs)
    out["state"] = "done" if (run / ".done").is_file() else "training"
    out["epochs_done"] = len(rows)
    best = [r for r in rows if r.get("best") == "1"]
    if best:
        out["best_epoch"] = int(best[-1]["epoch"])
        out["best_val_dsc"] = float(best[-1]["val_dsc"])
    seconds = [float(r["seconds"]) for r in rows[-10:] if r.get("seconds")]
    if seconds:
        out["seconds_per_epoch"] = statistics.median(seconds)
    if (run / "last.pt").is_file():
        out["last_saved_min_ago"] = (time.time() - (run / "last.pt").stat().st_mtime) / 60.0
    if out["state"] == "training" and out["seconds_per_epoch"] is not None:
        out["eta_h"] = max(0, out["epochs"] - len(rows)) * out["seconds_per_epoch"] / 3600.0
    return out


def status(out: Path, recipe: Recipe, folds: int) -> list[dict[str, Any]]:
    """One row per fold and part (:func:`part_status`), plus each fold's ``evaluated`` protocols and, once
    evaluated, its paper-protocol ``dsc``: what ``mn-cv --status`` prints."""
    rows = []
    for fold in range(folds):
        folder = out / f"fold-{fold}"
        evaluated = [p for p in PROTOCOLS if (folder / f"eval-{p}.json").is_file()]
        dsc = None
        if "paper" in evaluated:
            dsc = json.loads((folder / "eval-paper.json").read_text())["dsc"]["mean"]
        for part in recipe.parts:
            rows.append({"fold": fold, "part": part, **part_status(folder / part, int(recipe.epochs.get(part, 100))),
                         "evaluated": evaluated, "dsc": dsc})
    return rows


def format_status(rows: Sequence[dict[str, Any]]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = ["| fold | part | state | epochs | best epoch (val DSC) | s / epoch | last saved | left | evaluated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = "-" if r["best_epoch"] is None else f"{r['best_epoch']} ({r['best_val_dsc']:.4f})"
        saved = "-" if r["last_saved_min_ago"] is None else f"{r['last_saved_min_ago']:.0f} min ago"
        left = "-" if r["eta_h"] is None else f"<= {r['eta_h']:.1f} h"
        evaluated = ", ".join(r["evaluated"]) + (f" (DSC {r['dsc']:.4f})" if r["dsc"] is not None else "") \
            if r["evaluated"] else "-"
        lines.append(f"| {r['fold']} | {r['part']} | {r['state']} | {r['epochs_done']} of {r['epochs']} | {best} | "
                     f"{num(r['seconds_per_epoch'], '.0f')} | {saved} | {left} | {evaluated} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from train.cli_util import add_logging_args

    p = argparse.ArgumentParser(
        prog="mn-cv",
        description="Patient-level k-fold cross-validation of a training recipe: trains (or continues) every fold, "
                    "evaluates each on its validation patients by both protocols and aggregates mean ± SD across "
                    "folds. Run the same command again to continue after a stop.",
        epilog="Exit codes: 0 done, 1 a training failed (its log is named), 2 bad input, 130 stopped by Ctrl-C / "
               "SIGTERM after the training in flight saved (run the same command again to continue).")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    p.add_argument("--recipe", help="what to train (see --list-recipes)")
    p.add_argument("--data", help="dataset folder holding Images/ and Masks/")
    p.add_argument("--out", help="folder of the cross-validation (fold-K/, cv-summary.json)")
    p.add_argument("--folds", type=int, default=5, help="number of patient folds")
    p.add_argument("--fold", type=int, default=None, help="run only this fold (0-based); default: every fold")
    p.add_argument("--seed", type=int, default=42, help="seed of the patient split and of training")
    p.add_argument("--extra-train", nargs="+", default=[], metavar="DIR",
                   help="extra training-only folders for recipes that use them (phantom frames)")
    p.add_argument("--epochs", type=int, default=None,
                   help="override every part's epochs (default: the recipe's; with --final: the folds' median best)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (training and evaluation)")
    p.add_argument("--train-args", default="", metavar="'ARGS'",
                   help="extra mn-train arguments for every part, quoted, e.g. '--workers 3 --threads 1'")
    p.add_argument("--size", default=None, metavar="WxH", help="override the frame size of every part")
    p.add_argument("--crop", default=None, metavar="WxH", help="override a cascade refiner's window")
    p.add_argument("--candidates", type=int, default=1,
                   help="cascades: windows refined per frame in the joined models (see python -m train.cascade)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="cascades: the refiner's test-time augmentation in the joined models (hflip: each window and "
                        "its mirror refined, the probabilities averaged; see python -m train.cascade)")
    p.add_argument("--share", nargs="+", default=[], metavar="DIR",
                   help="other mn-cv --out folders: a part trained there exactly as this recipe would train it "
                        "(same fold, same mn-train settings) is copied instead of trained again")
    p.add_argument("--aggregate", action="store_true",
                   help="only aggregate the folds evaluated so far (also a folder benchmarks/cv_collect.sh wrote); "
                        "needs only --recipe and --out")
    p.add_argument("--status", action="store_true",
                   help="print where every fold's parts stand (epochs, best, pace, time left, evaluated) and exit; "
                        "needs only --recipe and --out, and trains nothing")
    p.add_argument("--part", action="append", default=[], metavar="NAME",
                   help="train only this part of the recipe (repeatable; e.g. a cascade's localiser and refiner as "
                        "two processes at once on one GPU); then the same command without --part joins and "
                        "evaluates, training nothing again")
    p.add_argument("--as-final", action="store_true",
                   help="train each fold (or --fold K) the way --final trains (the folds' median best epochs, "
                        "mn-train --blind: its validation images choose nothing, the last weights are kept) into "
                        "OUT/fold-K/as-final/ and evaluate it on the fold's patients: validates the final procedure "
                        "(summary of those folds: OUT/cv-summary-as-final.json; with --aggregate: only that)")
    p.add_argument("--threshold-from", choices=("folds", "as-final"), default="folds",
                   help="with --final: the out-of-fold sweeps that choose the final model's mask threshold: the fold "
                        "models' (every fold needed) or those of the folds trained as the final is (--as-final "
                        "run first; two or more folds)")
    p.add_argument("--schedule", action="append", default=[], metavar="PART=RULE",
                   help="with --final / --as-final: how a part's epochs and learning-rate drops come from the folds "
                        "(repeatable): best (default: the median best epoch, the rate left to mn-train), best-drops "
                        "(the median best epoch, then 10 epochs at a tenth and 10 at a hundredth of the rate) or "
                        "fold-drops (the medians of the folds' own first two rate drops, ending at their third's)")
    p.add_argument("--final", action="store_true",
                   help="after the folds: train on every image for the folds' median best epoch (OUT/final/model.pt), "
                        "with the mask threshold the folds' out-of-fold images choose")
    add_logging_args(p)
    return p


def _recorded_data(out: Path) -> str:
    """The dataset an earlier summary in ``out`` recorded (``--aggregate`` without ``--data``): the folds' summary's,
    else an as-final one's (a folder that holds only those); else ""."""
    for path in (out / "cv-summary.json", *sorted(out.glob("cv-summary-as-final*.json"))):
        try:
            data = json.loads(path.read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            continue
        if data:
            return str(data)
    return ""


def _glue_train_args(argv: Sequence[str]) -> list[str]:
    """``--train-args --amp`` as ``--train-args=--amp``: argparse takes a lone value that starts with ``-``
    for an option (and says "expected one argument"), though it is the one thing --train-args carries."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--train-args":
            value = next(it, None)
            out.append(a if value is None else f"--train-args={value}")
        else:
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import shlex

    from train.cli_util import setup_logging

    args = build_parser().parse_args(_glue_train_args(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose, args.quiet)
    if args.list_recipes:
        for r in RECIPES.values():
            print(f"{r.name:<20} {r.description}")
        return 0
    if args.status:
        if not (args.recipe and args.out):
            raise UserError("--status needs --recipe NAME and --out DIR")
        if not Path(args.out).is_dir():
            raise UserError(f"--out {args.out} is not a folder: no cross-validation there yet")
        if args.folds < 2:
            raise UserError(f"--folds must be at least 2, got {args.folds}")
        print(format_status(status(Path(args.out), get_recipe(args.recipe), args.folds)))
        return 0
    if args.aggregate:
        if not (args.recipe and args.out):
            raise UserError("--aggregate needs --recipe NAME and --out DIR")
        if not Path(args.out).is_dir():
            raise UserError(f"--out {args.out} is not a folder: no cross-validation there to aggregate")
        cv = CrossValidation(get_recipe(args.recipe), args.data or _recorded_data(Path(args.out)), args.out,
                             folds=args.folds, seed=args.seed, extra=args.extra_train,
                             candidates=args.candidates, tta=args.tta, summary_only=True)
    else:
        if not (args.recipe and args.data and args.out):
            raise UserError("--recipe NAME, --data DIR and --out DIR are required (or --list-recipes)")
        check_trainable(get_recipe(args.recipe))
        cv = CrossValidation(get_recipe(args.recipe), args.data, args.out, folds=args.folds, seed=args.seed,
                             extra=args.extra_train, epochs=args.epochs, train_args=shlex.split(args.train_args),
                             device=args.device, size=args.size, crop=args.crop,
                             candidates=args.candidates, tta=args.tta, share=args.share, parts=args.part,
                             threshold_from=args.threshold_from, schedules=args.schedule)
        if args.final and args.as_final:
            raise UserError("--final and --as-final are two runs: --as-final first (it validates what --final does)")
        if args.schedule and not (args.final or args.as_final):
            raise UserError("--schedule says how --final and --as-final train; the folds train by the recipe")
        if args.as_final:
            for fold in [args.fold] if args.fold is not None else range(args.folds):
                cv.run_as_final(fold)
        elif args.final:
            model = cv.run_final()
            if model is not None:
                log.info("final model: %s", model)
        else:
            for fold in [args.fold] if args.fold is not None else range(args.folds):
                cv.run_fold(fold)
    if not (args.aggregate and args.as_final):  # --aggregate --as-final: only the as-final summary
        result = cv.write_summary()
    if args.as_final:  # the estimate of the final procedure, from the folds trained its way
        result = cv.write_summary("as-final")
    print(format_summary(result))
    log.info("wrote %s", cv.summary_path("as-final" if args.as_final else ""))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli("mn-cv", main, argv)


if __name__ == "__main__":
    sys.exit(cli())
