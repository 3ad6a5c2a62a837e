"""benchmarks.speckle_stability: known answers with stand-in refiners, and the command on a synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from benchmarks import speckle_stability
from benchmarks.speckle_stability import measure


class Darker(torch.nn.Module):
    """A stand-in refiner: 'nerve' wherever the window is darker than ``level`` (sharp logits)."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 50.0 * (self.level - x)


def _disc_frame(radius: int = 10, ramp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 128x96 z-scored-like frame with a dark disc (the nerve) in bright tissue, and its mask."""
    mask = np.zeros((96, 128), np.uint8)
    cv2.circle(mask, (64, 48), radius, 1, -1)
    image = np.where(mask > 0, -1.0, 1.0).astype(np.float32)
    if ramp:  # the disc's inside grades from -1.2 to 0.6: the outline at level 0 depends on the speckle
        image[mask > 0] = np.linspace(-1.2, 0.6, int(mask.sum()), dtype=np.float32)
    image[0, 0] = -3.0  # the darkest pixel (zero echo)
    return image[None, None], mask[None, None].astype(np.float32)


def test_a_sharp_outline_well_inside_the_window_does_not_move() -> None:
    image, mask = _disc_frame()
    r = measure(Darker(0.0), image, mask, (64, 48), patterns=3, shifts=[1, 3], strength=0.15, seed=0, image_ids=[0])
    assert r["images"] == 1 and r["skipped"] == 0
    assert r["clean_window_dsc"]["mean"] == 1.0  # the stand-in outlines the disc exactly
    # the disc's pixels sit at -1 and the tissue's at 1: speckle of 15 % cannot cross level 0, a 1-3 px move
    # keeps the disc inside the window
    for name in ("speckle", "shift 1 px", "shift 3 px"):
        s = r["area_change"][name]
        assert s["median"] == 0.0 and s["p95"] == 0.0, name
    assert r["area_change"]["speckle"]["n"] == 3 and r["area_change"]["shift 1 px"]["n"] == 1


def test_an_outline_decided_by_the_speckle_moves_and_strength_0_does_not() -> None:
    image, mask = _disc_frame(ramp=True)
    moved = measure(Darker(0.0), image, mask, (64, 48), 4, [], 0.15, 0, [0])["area_change"]["speckle"]
    assert moved["n"] == 4 and moved["median"] > 0.005
    still = measure(Darker(0.0), image, mask, (64, 48), 4, [], 0.0, 0, [0])["area_change"]["speckle"]
    assert still["median"] == 0.0 and still["p95"] == 0.0
    # the same generator keys give the same numbers; another image id another speckle
    again = measure(Darker(0.0), image, mask, (64, 48), 4, [], 0.15, 0, [0])["area_change"]["speckle"]
    other = measure(Darker(0.0), image, mask, (64, 48), 4, [], 0.15, 0, [7])["area_change"]["speckle"]
    assert again == moved and other != moved


def test_masks_are_cut_at_the_threshold_given() -> None:
    image, mask = _disc_frame(ramp=True)  # logits 50 * (0 - x): the ramp's pixels above -0.044 fall below 0.9
    at_half = measure(Darker(0.0), image, mask, (64, 48), 0, [], 0.15, 0, [0])
    strict = measure(Darker(0.0), image, mask, (64, 48), 0, [], 0.15, 0, [0], threshold=0.9)
    assert strict["clean_window_dsc"]["mean"] < at_half["clean_window_dsc"]["mean"]


def test_the_model_carries_the_threshold_and_a_given_one_wins(tmp_path: Path) -> None:
    assert speckle_stability.refiner_threshold(str(_refiner(tmp_path / "r.pt")), None) == 0.5
    calibrated = str(_refiner(tmp_path / "c.pt", threshold=0.425))
    assert speckle_stability.refiner_threshold(calibrated, None) == 0.425
    assert speckle_stability.refiner_threshold(calibrated, 0.6) == 0.6


def test_a_window_edge_through_the_nerve_moves_with_a_shift() -> None:
    image, mask = _disc_frame(radius=30)  # 60 px across: a 64x48 window cuts it
    r = measure(Darker(0.0), image, mask, (64, 48), 0, [3], 0.15, 0, [0])
    assert r["area_change"]["speckle"]["n"] == 0 and r["area_change"]["speckle"]["median"] is None
    from train.window import crop_box, mask_centre

    def inside(centre):  # type: ignore[no-untyped-def]
        x0, y0 = crop_box(centre, (64, 48), (128, 96))
        return float(mask[0, 0, y0:y0 + 48, x0:x0 + 64].sum())

    cx, cy = mask_centre(mask[0, 0])
    a0, a3 = inside((cx, cy)), inside((cx + 3, cy + 3))
    assert a0 != a3 and r["area_change"]["shift 3 px"]["median"] == pytest.approx(abs(a3 - a0) / a0)


def test_images_without_a_nerve_or_an_outline_are_left_out() -> None:
    image, mask = _disc_frame()
    empty = np.zeros_like(mask)
    r = measure(Darker(-5.0), np.concatenate([image, image]), np.concatenate([mask, empty]), (64, 48), 2, [1], 0.15,
                0, [0, 1])
    assert r["skipped"] == 2 and r["area_change"]["speckle"]["n"] == 0 and r["clean_window_dsc"]["mean"] == 0.0


def _refiner(path: Path, crop: bool = True, threshold: float | None = None) -> Path:
    from train.checkpoint import save_checkpoint
    from train.models import build_model

    torch.manual_seed(0)
    config = {"model": {"name": "lunet", "kwargs": {"width": 0.25}}, "preprocessing": {"size": [128, 96]}}
    if crop:
        config["crop"] = {"size": [64, 48], "frame_size": [128, 96]}
    if threshold is not None:
        config["postprocess"] = {"threshold": threshold}
    save_checkpoint(path, build_model("lunet", width=0.25), config)
    return path


@pytest.fixture
def torch_threads():  # type: ignore[no-untyped-def]
    """Restores torch's thread count, which the command's --threads sets for the whole process."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_the_command_writes_json_and_markdown(synthetic_dataset_shared: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture, torch_threads: None) -> None:
    out = tmp_path / "s.json"
    ref = str(_refiner(tmp_path / "r.pt"))
    code = speckle_stability.cli(["--refiner", ref, "--data", str(synthetic_dataset_shared),
                                  "--split", "kfold", "--folds", "4", "--fold", "1", "--patterns", "2",
                                  "--shifts", "2", "--threads", "1", "--json", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "date", "refiner", "machine", "command", "split", "patterns", "strength",
                           "shifts_px", "threshold", "window", "frame", "result"}
    assert report["threshold"] == 0.5  # a refiner's own checkpoint carries none
    assert report["split"] == "kfold, fold 1 of 4, seed 42 (val)" and report["strength"] == 0.15
    assert (report["window"], report["frame"], report["shifts_px"]) == ([64, 48], [128, 96], [2])
    r = report["result"]
    assert set(r["area_change"]) == {"speckle", "shift 2 px"}
    measured = r["images"] - r["skipped"]
    assert r["area_change"]["speckle"]["n"] == 2 * measured and r["area_change"]["shift 2 px"]["n"] == measured
    assert "| speckle | " in out.with_suffix(".md").read_text()


def test_bad_input_is_one_line_and_exit_2(synthetic_dataset_shared: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    data = str(synthetic_dataset_shared)
    code = speckle_stability.cli(["--refiner", str(_refiner(tmp_path / "f.pt", crop=False)), "--data", data,
                                  "--json", str(tmp_path / "x.json")])
    assert code == 2 and "is not a refiner" in capsys.readouterr().err
    ref = str(_refiner(tmp_path / "r.pt"))
    for args, message in ((["--data", str(tmp_path / "nope")], "is not a folder"),
                          (["--data", data, "--strength", "2"], "--strength"),
                          (["--data", data, "--threshold", "1"], "--threshold must be between 0 and 1"),
                          (["--data", data, "--split", "kfold"], "--split kfold needs --fold"),
                          (["--data", data, "--json", str(tmp_path / "no" / "x.json")], "cannot write")):
        extra = [] if "--json" in args else ["--json", str(tmp_path / "x.json")]
        assert speckle_stability.cli(["--refiner", ref, *args, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(SystemExit):
        speckle_stability.build_parser().parse_args(["--refiner", ref, "--data", data, "--shifts", "0"])
