"""Verification against the fp32 torch model (engines/verify.py): frame sources, metrics, acceptance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import load_engine
from engines.verify import (ACCEPTANCE_DICE, VerifyFrame, acceptance_threshold, folder_frames, format_report,
                            load_frames, spread_indices, verify_engine, video_frames)
from train.errors import DataError
from tests.conftest import make_dataset
from tests.engines._helpers import make_checkpoint, write_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("verify") / "best.pt", "lunet", (64, 48))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("verify-data") / "data", n_patients=5, per_patient=2)


def test_spread_indices() -> None:
    assert spread_indices(10, 3) == [0, 4, 9]
    assert spread_indices(3, 32) == [0, 1, 2]
    assert spread_indices(0, 5) == [] and spread_indices(5, 0) == []
    assert len(spread_indices(202, 32)) == 32


def test_folder_frames_spread_with_masks(dataset: Path) -> None:
    frames = folder_frames(dataset, max_frames=4)
    assert [f.name for f in frames] == ["Pz001-001", "Pz002-002", "Pz004-001", "Pz005-002"]
    assert all(f.image.ndim == 2 and f.mask is not None and f.mask.dtype == np.uint8 for f in frames)


def test_folder_without_masks_and_plain_image_folder(dataset: Path, tmp_path: Path) -> None:
    frames = folder_frames(dataset / "Images", max_frames=2)  # a folder of images, no Masks/
    assert len(frames) == 2 and all(f.mask is None for f in frames)
    with pytest.raises(DataError, match="no images in"):
        folder_frames(tmp_path)


def test_video_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", n_frames=12)
    frames = video_frames(video, max_frames=4)
    assert len(frames) == 4 and frames[0].name == "frame000000" and frames[-1].name == "frame000011"
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
    assert len(video_frames(video, max_frames=50)) == 12


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mn-synth --phantom"):
        load_frames("synthetic")
    with pytest.raises(DataError, match="does not exist"):
        load_frames(tmp_path / "nope")
    (tmp_path / "notavideo.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="cannot read video"):
        load_frames(tmp_path / "notavideo.mp4")
    with pytest.raises(DataError, match="at least 1"):
        load_frames(tmp_path, max_frames=0)


def test_acceptance_thresholds() -> None:
    assert acceptance_threshold("fp32") == 0.99 == ACCEPTANCE_DICE["fp32"]
    assert acceptance_threshold("fp16") == 0.98
    assert acceptance_threshold("int8") == 0.97  # its own constant (engines.verify.INT8_ACCEPTANCE_DICE)
    assert acceptance_threshold("bf16") == 0.97  # an unknown precision: the lowest threshold


def test_verify_engine_passes_on_the_same_model(ckpt: Path, dataset: Path) -> None:
    engine = load_engine(ckpt, "torch", device="cpu")
    result = verify_engine(engine, ckpt, folder_frames(dataset, 3), progress=False)
    assert result["passed"] and result["frames"] == 3 and result["failed_frames"] == []
    assert result["dice_vs_torch"] == {"min": 1.0, "mean": 1.0} and result["max_abs_prob_diff"] < 1e-5
    assert {"dice_truth_engine", "dice_truth_torch", "area_diff_px"} <= set(result["per_frame"][0])
    assert result["threshold"] == 0.99 and result["engine"]["backend"] == "torch"
    assert "PASSED" in format_report(result)


def test_verify_engine_fails_an_engine_that_computes_other_masks(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = load_engine(ckpt, "torch", device="cpu", batch=2)  # static batch 2: 3 frames are padded
    real = engine._infer
    monkeypatch.setattr(engine, "_infer", lambda batch: 1.0 - real(batch))
    rng = np.random.default_rng(0)
    frames = [VerifyFrame(f"f{i}", rng.integers(0, 255, (60, 80), dtype=np.uint8)) for i in range(3)]
    result = verify_engine(engine, ckpt, frames, progress=False)
    assert not result["passed"] and result["failed_frames"] == ["f0", "f1", "f2"]
    assert result["dice_vs_torch"]["min"] < 0.5 and result["max_abs_prob_diff"] > 0.05
    assert "FAILED on 3 frame(s)" in format_report(result) and "FAIL" in format_report(result).splitlines()[1]


def test_verify_engine_threshold_override(ckpt: Path, dataset: Path) -> None:
    engine = load_engine(ckpt, "torch", device="cpu")
    result = verify_engine(engine, ckpt, folder_frames(dataset, 2), threshold=1.01, progress=False)
    assert not result["passed"] and result["threshold"] == 1.01
