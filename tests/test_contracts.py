"""The documented output contracts, written out as literals and checked against real runs.

Every name below is copied from README.md, not imported from the code: a swapped, renamed or dropped
column or key fails here even when the module's own constant moved with it. The README is read too, so
a contract that changes in the code and the tests but not in the documentation fails as well.

Pinned here (each on real runs of the console scripts' entry points, tiny random-weights engine):
- ``measurements.csv``: the header, in order, of ``mn-live`` uncalibrated (the defaults: ``rejected``)
  and calibrated (``--mm-per-px FX,FY``, ``--smoothing ema``: ``*_smooth``), and of ``mn-segment``; a ``#``
  unit line per column; mm columns filled exactly when calibrated, equal to px x spacing (known answer).
- ``summary.json``: the top-level key set, the nested sections the README documents, ``truth`` (phantom and
  ``mn-segment --truth``) with numbers for CSA p95 and FR errors; ``batch-summary.json``.
- the JSON of ``mn-eval --json`` (``--checkpoint`` and ``--model``), ``mn-bench --json``, ``mn-export --json``.

Exit codes and signals: tests/test_contracts_exit_codes.py and tests/test_contracts_signals.py.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from realtime.fusion import DEFAULT_WEIGHT

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

# --------------------------------------------------------------------------------------------- literals
CSV_CONTRACT = [
    "frame", "t_s", "status", "area_px", "area_mm2", "perimeter_px", "perimeter_mm", "flattening_ratio",
    "circularity", "centroid_x_px", "centroid_y_px", "centroid_x_mm", "centroid_y_mm", "n_components",
    "confidence", "csa_change_pct", "displacement_mm", "latency_ms", "dropped_before", "paused_before",
    "paused_s", "wall_time_utc", "source_time_s", "window", "fused",
]
"""README, *Per-frame CSV columns*: the contract, in this order."""
CSV_STAGES = ["capture_wait_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "track_ms", "render_ms", "write_ms"]
"""Then the per-stage times, in this order."""
CSV_TRACKER = [
    "n_detections", "frames_since_seen", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "displacement_px",
    "displacement_dx_px", "displacement_dy_px", "displacement_dx_mm", "displacement_dy_mm", "baseline_area_px",
    "baseline_area_mm2",
]
"""Then the tracker's extra columns, always."""
CSV_SMOOTH = [f"{c}_smooth" for c in (
    "area_px", "area_mm2", "perimeter_px", "perimeter_mm", "flattening_ratio", "circularity", "centroid_x_px",
    "centroid_y_px", "centroid_x_mm", "centroid_y_mm", "csa_change_pct", "displacement_px", "displacement_mm")]
"""With ``--smoothing ema|median``."""
CSV_PRESENCE_SCORE = ["presence_score"]
"""With the presence gate's appearance check (``--presence on``, the default), before ``rejected``."""
CSV_REJECTED = ["rejected"]
"""When a detection can go unmeasured: the presence gate on (``--presence on|shape``) or ``--confirm`` above 1
(both the default), last."""
MM_COLUMNS = ["area_mm2", "perimeter_mm", "centroid_x_mm", "centroid_y_mm", "displacement_mm",
              "displacement_dx_mm", "displacement_dy_mm", "baseline_area_mm2"]
STATUSES = {"ok", "no_detection", "lost", "reacquired"}

SUMMARY_KEYS = {
    "frames_seen", "frames_processed", "frames_dropped", "frames_paused", "paused_s", "status_counts", "units",
    "csa", "csa_px", "flattening_ratio", "circularity", "max_displacement", "deformation", "latency_ms",
    "stage_ms", "latency_warmup_frames_excluded", "source", "model", "model_file", "backend", "precision", "device",
    "input_size", "mask_threshold", "calibration", "calibration_detail", "versions", "engine_notes", "mode", "partial",
    "exit_code", "ended_because", "wall_time_s", "processing_fps", "source_info", "source_error", "engine", "tracker",
    "outputs", "events", "baseline", "window", "fusion", "truth",
}
"""``summary.json`` of a finished mn-live run with a known truth (the phantom); mn-segment adds ``batch``."""
SUMMARY_SEGMENT_EXTRA = {"batch"}
FUSION_KEYS = {"weight", "motion", "max_shift", "max_area_change", "frames"}
"""``summary.json``'s ``fusion`` (``null`` with ``--fusion 1``)."""
MIN_MEDIAN_MAX = {"min", "median", "max"}
PERCENTILES = {"p50", "p90", "p95", "p99", "max", "mean", "std", "n"}
STAGES = {"capture_wait", "preprocess", "infer", "postprocess", "track", "render", "write"}
NOT_RUN_WITHOUT_VIDEO = {"render", "write"}
"""Without the overlay video (``--no-video``, no window) nothing is drawn or encoded: these cells stay empty."""
UNITS_KEYS = {"area", "displacement"}
DEFORMATION_KEYS = {"csa_max_over_min", "fr_range"}
CALIBRATION_DETAIL_KEYS = {"calibrated", "mm_per_px_x", "mm_per_px_y", "source", "text"}
TRACKER_KEYS = {"calibration", "fps", "gate", "gate_unit", "lost_after_frames", "baseline", "bifid_gap",
                "max_parts", "smoothing", "smoothing_window", "presence_gate", "confirm_frames",
                "area_step", "refresh_frames"}
PRESENCE_GATE_KEYS = {"min_area_frac", "max_area_frac", "min_area_mm2", "max_area_mm2", "max_flattening",
                      "min_circularity", "min_confidence", "min_echo_ratio", "appearance"}
BASELINE_KEYS = {"frame", "t_s", "how", "frames", "n_frames", "area_px", "area_mm2"}
SOURCE_INFO_KEYS = {"kind", "spec", "name", "fps", "size", "native_size", "roi", "realtime", "frames_delivered",
                    "frames_dropped", "failed", "error"}
"""Every source reports at least these (each kind adds its own)."""
OUTPUTS_KEYS = {"csv", "video", "summary", "plot", "report"}
TRUTH_KEYS = {"frames", "dice_mean", "dice_min", "csa_rel_error_median", "csa_rel_error_p95", "fr_abs_error_median",
              "centroid_error_px_median", "jitter", "truth_jitter"}
JITTER_KEYS = {"area_rel", "flattening_abs", "centroid_px"}
JITTER_STATS = {"n", "median", "p95", "max"}
BATCH_SUMMARY_KEYS = {"exit_code", "inputs", "failed", "finished", "results"}
BATCH_RESULT_KEYS = {"input", "folder", "exit_code", "frames_processed", "ended_because"}

EVAL_KEYS = {"n", "protocol", "dsc", "iou", "precision", "recall", "csa_rel_error", "csa_agreement", "checkpoint",
             "model", "data", "split", "per_image", "dsc_paper_filtered"}
"""``mn-eval --checkpoint ... --json`` (``output1_dsc`` too for the double networks)."""
EVAL_ENGINE_EXTRA = {"engine", "model_arg"}
"""``mn-eval --model ... --json``: through the live engine."""
MEAN_STD = {"mean", "std"}
EVAL_PER_IMAGE_KEYS = {"index", "stem", "dsc", "iou", "precision", "recall", "csa_rel_error", "area_pred_px",
                       "area_true_px"}
CSA_AGREEMENT_KEYS = {"n", "n_rel", "bias_rel", "sd_rel", "loa_rel", "abs_rel_median", "abs_rel_mean", "bias_px",
                      "sd_px", "loa_px", "mae_px", "mm2_per_px", "bias_mm2", "sd_mm2", "loa_mm2", "mae_mm2", "missed",
                      "missed_stems"}
ENGINE_KEYS = {"name", "backend", "precision", "device", "input_shape", "max_batch", "source", "model",
               "preprocessing", "notes"}

BENCH_KEYS = {"benchmark", "command", "date", "timing", "speedup", "settings", "system", "runs"}
"""``mn-bench --json`` (pipeline); a stopped run adds ``interrupted``."""
BENCH_SETTINGS_KEYS = {"source", "frames", "warmup", "repeats", "fps", "threads", "prefetch", "roi", "modes",
                       "batches", "window", "presence", "fusion", "fusion_motion", "calibrate"}
BENCH_SYSTEM_KEYS = {"host", "cpu", "cpu_features", "cores", "gpu", "gpu_driver", "platform", "python", "threads",
                     "torch_threads", "versions"}
BENCH_RUN_KEYS = {"model", "backend", "precision", "size", "mode", "batch", "baseline", "status", "reason", "repeats",
                  "warmup", "frames", "frames_seen", "dropped", "fps", "fps_per_repeat", "speedup_vs_baseline",
                  "latency_ms", "tail_ms", "flatness_ms", "notes", "device", "engine", "source_fps", "prefetch",
                  "ended_because"}
BENCH_LATENCY_KEYS = {"e2e", *STAGES}
BENCH_PERCENTILES = {"p10", "p50", "p90", "p95", "p99", "max", "mean", "std", "n", "tail_ms", "flatness_ms"}

EXPORT_KEYS = {"format", "backend", "precision", "model", "checkpoint", "output", "onnx", "size", "verify_source",
               "frames", "passed", "threshold", "dice_vs_torch", "max_abs_prob_diff", "area_diff_px", "failed_frames",
               "per_frame", "engine"}
"""``mn-export --json`` with ``--verify``; a failed verification adds ``deleted``."""
EXPORT_PER_FRAME_KEYS = {"name", "passed", "dice", "max_abs_prob_diff", "area_torch_px", "area_engine_px",
                         "area_diff_px", "dice_truth_torch", "dice_truth_engine"}

ENGINE = ["--model", "lunet", "--size", "64x48", "--backend", "torch", "--threads", "1", "-q"]
"""Random weights (seeded), a tiny input, no ONNX export: the plumbing, not accuracy. A random L-UNet
outlines one large region (~10^4 px) on every phantom frame, so the measurement columns are filled."""
FRAMES = 24
SPACING = (0.08, 0.09)  # anisotropic on purpose: a swap of x and y shows


# --------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contracts")


@pytest.fixture(scope="module")
def cache(work: Path) -> list[str]:
    return ["--cache-dir", str(work / "cache")]


@pytest.fixture(scope="module")
def live_uncalibrated(work: Path, cache: list[str]) -> Path:
    """mn-live on the phantom, uncalibrated, presence gate on (the defaults), with the overlay video."""
    from realtime.live_cli import cli

    out = work / "live-uncal"
    assert cli(["--source", "synthetic:1", "--headless", "--no-drop", "--frames", str(FRAMES), "--out", str(out),
                *ENGINE, *cache]) == 0
    return out


@pytest.fixture(scope="module")
def live_calibrated(work: Path, cache: list[str]) -> Path:
    """mn-live on the phantom with an anisotropic spacing, every detection measured, smoothed columns."""
    from realtime.live_cli import cli

    out = work / "live-cal"
    assert cli(["--source", "synthetic:1", "--headless", "--no-drop", "--frames", str(FRAMES), "--no-video",
                "--mm-per-px", f"{SPACING[0]},{SPACING[1]}", "--presence", "off", "--confirm", "1",
                "--area-step", "0", "--smoothing", "ema",
                "--out", str(out), *ENGINE, *cache]) == 0
    return out


@pytest.fixture(scope="module")
def clip(work: Path) -> tuple[Path, Path]:
    """A synthetic phantom clip and its truth, written by mn-synth."""
    from realtime.synth_cli import cli

    video, truth = work / "clip.mp4", work / "clip.npz"
    assert cli(["--phantom", "--frames", str(FRAMES), "--seed", "3", "--out", str(video), "--truth", str(truth),
                "-q"]) == 0
    return video, truth


@pytest.fixture(scope="module")
def segmented(work: Path, cache: list[str], clip: tuple[Path, Path]) -> Path:
    """mn-segment on the clip, scored against its truth, uncalibrated, every detection measured."""
    from realtime.segment_cli import cli

    out = work / "seg"
    assert cli([str(clip[0]), "--truth", str(clip[1]), "--presence", "off", "--confirm", "1", "--area-step", "0",
                "--no-video", "--out", str(out),
                *ENGINE, *cache]) == 0
    return out


def header(path: Path) -> list[str]:
    """The CSV's header row, read with the standard library alone."""
    with open(path, newline="") as fh:
        return next(csv.reader(line for line in fh if not line.startswith("#")))


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def backticked(text: str) -> list[str]:
    """The inline code spans of Markdown ``text`` (fenced blocks left out)."""
    return re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))


# --------------------------------------------------------------------------------------------- the README
def test_the_readme_documents_the_csv_contract_in_this_order() -> None:
    start = README.index("Per-frame CSV columns")
    paragraph = README[start:README.index("\n\n", start)]
    names = [n.strip() for chunk in backticked(paragraph) for n in chunk.split(",") if n.strip()]
    listed = [n for n in names if re.fullmatch(r"[a-z0-9_]+", n)]
    assert listed[:len(CSV_CONTRACT) + len(CSV_STAGES)] == CSV_CONTRACT + CSV_STAGES
    for name in (*CSV_TRACKER, *CSV_PRESENCE_SCORE, *CSV_REJECTED, "<name>_smooth"):
        assert f"`{name}`" in paragraph, name


@pytest.mark.parametrize("keys", [
    SUMMARY_KEYS | SUMMARY_SEGMENT_EXTRA, TRUTH_KEYS, BATCH_SUMMARY_KEYS | BATCH_RESULT_KEYS,
    EVAL_KEYS | EVAL_ENGINE_EXTRA | CSA_AGREEMENT_KEYS | EVAL_PER_IMAGE_KEYS, BENCH_KEYS | BENCH_RUN_KEYS,
    EXPORT_KEYS | {"deleted"},
], ids=["summary", "truth", "batch-summary", "mn-eval", "mn-bench", "mn-export"])
def test_the_readme_names_every_key(keys: set[str]) -> None:
    documented = set(backticked(README))
    assert sorted(keys - documented) == []


# --------------------------------------------------------------------------------------------- the CSV
def test_live_csv_header_uncalibrated(live_uncalibrated: Path) -> None:
    assert header(live_uncalibrated / "measurements.csv") == (CSV_CONTRACT + CSV_STAGES + CSV_TRACKER
                                                              + CSV_PRESENCE_SCORE + CSV_REJECTED)


def test_live_csv_header_calibrated_and_smoothed(live_calibrated: Path) -> None:
    assert header(live_calibrated / "measurements.csv") == CSV_CONTRACT + CSV_STAGES + CSV_TRACKER + CSV_SMOOTH


def test_segment_csv_header(segmented: Path) -> None:
    assert header(segmented / "clip" / "measurements.csv") == CSV_CONTRACT + CSV_STAGES + CSV_TRACKER


def test_every_column_has_its_unit_line(live_calibrated: Path) -> None:
    """README: units in the file's ``#`` header; the first line names the format."""
    lines = (live_calibrated / "measurements.csv").read_text().splitlines()
    assert lines[0] == "# mn-seg per-frame measurements, format 1"
    comments = {line[2:].split(":", 1)[0] for line in lines if line.startswith("# ")}
    assert set(header(live_calibrated / "measurements.csv")) <= comments


def test_rows_are_the_frames_in_order(live_uncalibrated: Path, live_calibrated: Path, segmented: Path) -> None:
    for path in (live_uncalibrated / "measurements.csv", live_calibrated / "measurements.csv",
                 segmented / "clip" / "measurements.csv"):
        got = rows(path)
        assert [int(r["frame"]) for r in got] == list(range(FRAMES)), path
        assert {r["status"] for r in got} <= STATUSES
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["wall_time_utc"]) for r in got)
        assert all(r["paused_s"] == "0" and r["paused_before"] == "0" for r in got)
        assert all(r["window"] == "" for r in got)  # a model without a window
        assert {r["fused"] for r in got} <= {"0", "1"} and got[0]["fused"] == "0"  # --fusion on by default


def test_mm_columns_are_px_times_the_spacing(live_calibrated: Path) -> None:
    """Known answer: area x sx*sy, centroid x by sx and y by sy, displacement by axis; the perimeter of a
    shape measured with sx < sy lies between P*sx and P*sy."""
    sx, sy = SPACING
    got = [r for r in rows(live_calibrated / "measurements.csv") if r["status"] in ("ok", "reacquired")]
    assert len(got) >= FRAMES // 2  # the random network outlines its region on most frames
    for r in got:
        f = {k: float(v) for k, v in r.items() if k.endswith(("_px", "_mm", "_mm2")) and v != ""}
        assert f["area_mm2"] == pytest.approx(f["area_px"] * sx * sy, rel=1e-5, abs=1e-3)
        assert f["centroid_x_mm"] == pytest.approx(f["centroid_x_px"] * sx, rel=1e-5, abs=1e-3)
        assert f["centroid_y_mm"] == pytest.approx(f["centroid_y_px"] * sy, rel=1e-5, abs=1e-3)
        assert f["perimeter_px"] * sx * (1 - 1e-5) <= f["perimeter_mm"] <= f["perimeter_px"] * sy * (1 + 1e-5)
        if "baseline_area_px" in f:
            assert f["baseline_area_mm2"] == pytest.approx(f["baseline_area_px"] * sx * sy, rel=1e-5, abs=1e-3)
        if "displacement_dx_px" in f:
            assert f["displacement_dx_mm"] == pytest.approx(f["displacement_dx_px"] * sx, rel=1e-4, abs=1e-3)
            assert f["displacement_dy_mm"] == pytest.approx(f["displacement_dy_px"] * sy, rel=1e-4, abs=1e-3)
            assert f["displacement_mm"] == pytest.approx(math.hypot(f["displacement_dx_mm"], f["displacement_dy_mm"]),
                                                         rel=1e-3, abs=1e-3)
    assert any(r["baseline_area_mm2"] for r in got) and any(r["displacement_dx_mm"] for r in got)
    assert all(r["area_mm2_smooth"] for r in got)


def test_mm_columns_are_empty_when_uncalibrated(segmented: Path) -> None:
    got = rows(segmented / "clip" / "measurements.csv")
    assert sum(1 for r in got if r["area_px"]) >= FRAMES // 2  # measured ...
    assert all(r[c] == "" for r in got for c in MM_COLUMNS)  # ... in pixels only


def test_stage_cells_of_stages_that_did_not_run_are_empty(live_uncalibrated: Path, live_calibrated: Path) -> None:
    with_video, without = rows(live_uncalibrated / "measurements.csv"), rows(live_calibrated / "measurements.csv")
    assert all(r[c] != "" for r in with_video for c in CSV_STAGES)
    assert all((r[c] == "") is (c[:-3] in NOT_RUN_WITHOUT_VIDEO) for r in without for c in CSV_STAGES)


# --------------------------------------------------------------------------------------------- summary.json
def check_summary(s: dict, *, calibrated: bool, presence: bool, video: bool) -> None:
    assert s["partial"] is False and s["exit_code"] == 0
    assert s["frames_processed"] == FRAMES and set(s["status_counts"]) <= STATUSES
    assert sum(s["status_counts"].values()) == FRAMES
    for key in ("csa", "csa_px", "flattening_ratio", "circularity"):
        assert set(s[key]) == MIN_MEDIAN_MAX, key
    assert set(s["latency_ms"]) == PERCENTILES
    assert set(s["stage_ms"]) == (STAGES if video else STAGES - NOT_RUN_WITHOUT_VIDEO)  # the stages that ran
    assert all(set(v) == PERCENTILES for v in s["stage_ms"].values())
    assert set(s["units"]) == UNITS_KEYS and set(s["deformation"]) == DEFORMATION_KEYS
    assert s["units"] == ({"area": "mm2", "displacement": "mm"} if calibrated else {"area": "px", "displacement": "px"})
    assert set(s["calibration_detail"]) == CALIBRATION_DETAIL_KEYS
    assert (s["calibration_detail"]["calibrated"] is calibrated
            and (s["calibration"] == "uncalibrated") is not calibrated)
    assert set(s["tracker"]) == TRACKER_KEYS
    assert s["tracker"]["confirm_frames"] == (2 if presence else 1)  # the fixtures without a gate measure all
    if presence:
        assert set(s["tracker"]["presence_gate"]) == PRESENCE_GATE_KEYS
    else:
        assert s["tracker"]["presence_gate"] is None
    assert SOURCE_INFO_KEYS <= set(s["source_info"])
    assert set(s["outputs"]) == (OUTPUTS_KEYS if video else OUTPUTS_KEYS - {"video"})
    assert set(ENGINE_KEYS) == set(s["engine"])
    assert s["window"] == {"mode": None}  # a model without a cascade window
    assert set(s["fusion"]) == FUSION_KEYS and set(s["fusion"]["frames"]) == {"fused", "own"}
    assert sum(s["fusion"]["frames"].values()) == s["frames_processed"] and s["fusion"]["weight"] == DEFAULT_WEIGHT
    if s["baseline"] is not None:
        assert set(s["baseline"]) == BASELINE_KEYS
        (event,) = [e for e in s["events"] if e["event"] == "baseline_set"]
        assert set(event) == BASELINE_KEYS | {"event"}
    check_truth(s["truth"], measured=not presence)


def check_truth(truth: dict, *, measured: bool) -> None:
    assert set(truth) == TRUTH_KEYS
    assert set(truth["jitter"]) == set(truth["truth_jitter"]) == JITTER_KEYS
    assert all(set(v) == JITTER_STATS for v in (*truth["jitter"].values(), *truth["truth_jitter"].values()))
    assert truth["frames"] == FRAMES
    assert is_number(truth["dice_mean"]) and is_number(truth["dice_min"])
    assert is_number(truth["csa_rel_error_median"]) and is_number(truth["csa_rel_error_p95"])
    if measured:  # errors of shape and position exist only where the nerve was measured
        assert is_number(truth["fr_abs_error_median"]) and is_number(truth["centroid_error_px_median"])


def test_live_summary_uncalibrated(live_uncalibrated: Path) -> None:
    s = summary(live_uncalibrated)
    assert set(s) == SUMMARY_KEYS
    check_summary(s, calibrated=False, presence=True, video=True)


def test_live_summary_calibrated(live_calibrated: Path) -> None:
    s = summary(live_calibrated)
    assert set(s) == SUMMARY_KEYS
    check_summary(s, calibrated=True, presence=False, video=False)
    assert (s["calibration_detail"]["mm_per_px_x"], s["calibration_detail"]["mm_per_px_y"]) == SPACING
    assert s["csa"]["median"] == pytest.approx(s["csa_px"]["median"] * SPACING[0] * SPACING[1], rel=1e-4)


def test_segment_summary_with_truth(segmented: Path) -> None:
    s = summary(segmented / "clip")
    assert set(s) == SUMMARY_KEYS | SUMMARY_SEGMENT_EXTRA
    check_summary(s, calibrated=False, presence=False, video=False)
    assert len(rows(segmented / "clip" / "measurements.csv")) == s["frames_processed"]


def test_batch_summary(segmented: Path, clip: tuple[Path, Path]) -> None:
    batch = json.loads((segmented / "batch-summary.json").read_text())
    assert set(batch) == BATCH_SUMMARY_KEYS
    assert (batch["exit_code"], batch["inputs"], batch["failed"]) == (0, 1, 0)
    (result,) = batch["results"]
    assert set(result) == BATCH_RESULT_KEYS
    assert (result["input"], result["exit_code"], result["frames_processed"]) == (str(clip[0]), 0, FRAMES)


# --------------------------------------------------------------------------------------------- other JSON
@pytest.fixture(scope="module")
def dataset(work: Path) -> Path:
    from tests.conftest import make_dataset

    return make_dataset(work / "data", n_patients=3, per_patient=2)


@pytest.fixture(scope="module")
def checkpoint(work: Path) -> Path:
    from tests.engines._helpers import make_checkpoint

    return make_checkpoint(work / "lunet.pt", "lunet", (64, 48))


@pytest.mark.parametrize("how", ["checkpoint", "model"])
def test_eval_json(how: str, work: Path, dataset: Path, checkpoint: Path) -> None:
    from engines.evaluate_cli import cli

    out = work / f"eval-{how}.json"
    engine = ["--backend", "torch"] if how == "model" else []
    assert cli([f"--{how}", str(checkpoint), *engine, "--data", str(dataset), "--split", "random", "--protocol",
                "paper", "--threads", "1", "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    assert set(result) == (EVAL_KEYS | EVAL_ENGINE_EXTRA if how == "model" else EVAL_KEYS)
    for key in ("dsc", "iou", "precision", "recall"):
        assert set(result[key]) == MEAN_STD, key
    assert set(result["csa_rel_error"]) == {"median", "mean"}
    assert set(result["dsc_paper_filtered"]) == MEAN_STD | {"n"}
    assert set(result["csa_agreement"]) == CSA_AGREEMENT_KEYS
    assert result["n"] == len(result["per_image"]) > 0
    assert all(set(row) == EVAL_PER_IMAGE_KEYS for row in result["per_image"])
    if how == "model":
        assert set(result["engine"]) == ENGINE_KEYS


def test_bench_json(work: Path, cache: list[str]) -> None:
    from benchmarks.bench_cli import cli

    out = work / "bench.json"
    assert cli(["--models", "lunet", "--sizes", "64x48", "--backends", "torch", "--precisions", "fp32", "--mode",
                "offline", "--frames", "4", "--warmup", "1", "--no-baseline", "--no-plot", "--threads", "1",
                "--json", str(out), *cache, "-q"]) == 0
    result = json.loads(out.read_text())
    assert set(result) == BENCH_KEYS
    assert set(result["settings"]) == BENCH_SETTINGS_KEYS and set(result["system"]) == BENCH_SYSTEM_KEYS
    (run,) = result["runs"]
    assert set(run) == BENCH_RUN_KEYS and set(run["engine"]) == ENGINE_KEYS
    assert set(run["latency_ms"]) == BENCH_LATENCY_KEYS
    assert all(set(v) == BENCH_PERCENTILES for v in run["latency_ms"].values())
    assert (run["status"], run["frames"]) == ("ok", 4)


def test_export_json(work: Path, dataset: Path, checkpoint: Path, cache: list[str]) -> None:
    from engines.export_cli import cli

    out, report = work / "lunet.onnx", work / "export.json"
    assert cli(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), "--verify", str(dataset),
                "--verify-frames", "2", "--json", str(report), *cache, "-q"]) == 0
    result = json.loads(report.read_text())
    assert set(result) == EXPORT_KEYS
    assert set(result["dice_vs_torch"]) == {"mean", "min"} and set(result["area_diff_px"]) == {"max_abs", "mean"}
    assert len(result["per_frame"]) == result["frames"] == 2
    assert all(set(row) == EXPORT_PER_FRAME_KEYS for row in result["per_frame"])
    assert set(result["engine"]) == ENGINE_KEYS
    assert result["passed"] is True and result["output"] == str(out) and out.is_file()
