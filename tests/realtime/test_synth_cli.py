"""mn-synth: a playable clip whose decoded frame count is N, a truth file with N masks that match
the frames, the animated-still mode, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.sources import open_source
from realtime.synth_cli import main
from train.errors import run_cli


def decode(path: Path) -> list:
    with open_source(str(path), realtime=False) as src:
        frames = list(src)
    assert not src.failed, src.error
    return frames


def test_phantom_clip_and_truth(tmp_path: Path) -> None:
    out, truth = tmp_path / "clip.mp4", tmp_path / "sub" / "truth.npz"
    assert main(["--phantom", "--frames", "24", "--seed", "2", "--out", str(out), "--truth", str(truth), "-q"]) == 0
    frames = decode(out)
    assert len(frames) == 24
    assert frames[0].image.shape == (468, 606, 3)
    np.testing.assert_allclose([f.pts for f in frames], np.arange(24) / 24, atol=1e-3)
    data = np.load(truth)
    masks = data["masks"]
    assert masks.shape == (24, 468, 606) and masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}
    assert float(data["fps"]) == 24.0
    np.testing.assert_allclose(data["pts"], np.arange(24) / 24)
    assert json.loads(str(data["source"]))["kind"] == "synthetic"
    np.testing.assert_allclose(data["nerve_a"] * data["nerve_b"] * np.pi, masks.sum(axis=(1, 2)), rtol=0.03)
    # the morphometry of every truth mask (realtime.morphometry is part of the package: the keys must be there)
    from realtime.morphometry import measure_mask

    np.testing.assert_array_equal(data["area_px"], masks.sum(axis=(1, 2)))
    for i in (0, 11, 23):
        m = measure_mask(masks[i])
        for key in ("perimeter_px", "flattening_ratio", "circularity", "centroid_x_px", "centroid_y_px",
                    "n_components"):
            assert data[key].shape == (24,) and data[key][i] == pytest.approx(getattr(m, key), rel=1e-9), (key, i)
    # the mask lies on the dark nerve of the decoded (compressed) frame, which still looks the same
    grey = cv2.cvtColor(frames[5].image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    inside = cv2.erode(masks[5], np.ones((3, 3), np.uint8), iterations=3) > 0
    ring = (cv2.dilate(masks[5], np.ones((3, 3), np.uint8), iterations=2) > 0) & (masks[5] == 0)
    assert grey[inside].mean() < grey[ring].mean() - 20
    from realtime.sources.phantom import PhantomSource

    original = PhantomSource(seed=2).render(5)[0].astype(np.float32)
    assert np.abs(grey - original).mean() < 8  # CRF 18 keeps the picture


def test_animated_still_odd_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    h, w = 95, 127
    img = np.clip(100 + 30 * rng.standard_normal((h, w)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (63, 45), (24, 12), 0, 0, 360, 255, -1)
    img[mask > 0] = 40
    cv2.imwrite(str(tmp_path / "still.png"), img)
    cv2.imwrite(str(tmp_path / "still_mask.png"), mask)
    out, truth = tmp_path / "a.mp4", tmp_path / "a.npz"
    rc = main(["--image", str(tmp_path / "still.png"), "--mask", str(tmp_path / "still_mask.png"), "--frames", "12",
               "--fps", "12", "--out", str(out), "--truth", str(truth), "-q"])
    assert rc == 0
    frames = decode(out)
    assert len(frames) == 12 and frames[0].image.shape == (96, 128, 3)  # padded to even
    data = np.load(truth)
    assert data["masks"].shape == (12, 96, 128) and data["matrices"].shape == (12, 2, 3)
    area0 = (mask > 0).sum()
    assert data["masks"][0].sum() == pytest.approx(area0 * abs(np.linalg.det(data["matrices"][0][:, :2])), rel=0.05)
    np.testing.assert_allclose(data["pts"], np.arange(12) / 12)


def test_bad_input_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--frames", "4", "--out", str(tmp_path / "x.mp4"), "--truth", str(tmp_path / "x.npz"), "-q"]
    assert run_cli("mn-synth", main, ["--image", str(tmp_path / "missing.png"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mn-synth: error:") and "missing.png" in err and "\n" not in err
    cv2.imwrite(str(tmp_path / "lone.png"), np.zeros((20, 20), np.uint8))
    assert run_cli("mn-synth", main, ["--image", str(tmp_path / "lone.png"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "no mask" in err and "--mask" in err and "\n" not in err
    bad_n = ["--phantom", "--frames", "0", "--out", str(tmp_path / "x.mp4"), "--truth", str(tmp_path / "x.npz")]
    assert run_cli("mn-synth", main, bad_n) == 2
    assert "--frames" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_long_clip_keeps_its_masks_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    """A clip whose masks would not fit in memory keeps them in a temporary file beside the truth file (the same
    truth file comes out, the temporary file is gone); without disk for them either: one line, exit 2."""
    import realtime.synth_cli as synth

    args = ["--phantom", "--frames", "6", "--seed", "4", "-q"]
    assert main([*args, "--out", str(tmp_path / "a.mp4"), "--truth", str(tmp_path / "a.npz")]) == 0
    stores: list[np.ndarray] = []
    real_store = synth.mask_store

    def spy(shape, folder):  # type: ignore[no-untyped-def]
        cm = real_store(shape, folder)
        stores.append(cm)
        return cm

    monkeypatch.setattr(synth, "available_memory", lambda: 1000)  # 6 x 468 x 606 bytes > half of 1000
    monkeypatch.setattr(synth, "mask_store", spy)
    disk = tmp_path / "disk"
    assert main([*args, "--out", str(disk / "b.mp4"), "--truth", str(disk / "b.npz")]) == 0
    assert len(stores) == 1
    a, b = np.load(tmp_path / "a.npz"), np.load(disk / "b.npz")
    np.testing.assert_array_equal(a["masks"], b["masks"])
    np.testing.assert_array_equal(a["area_px"], b["area_px"])
    assert sorted(p.name for p in disk.iterdir()) == ["b.mp4", "b.npz"]  # no temporary file left

    class Usage:
        free = 10_000

    monkeypatch.setattr(synth.shutil, "disk_usage", lambda _: Usage())
    assert run_cli("mn-synth", main, [*args, "--out", str(tmp_path / "c.mp4"), "--truth", str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mn-synth: error: --frames 6 of 606x468") and "fewer frames" in err and "\n" not in err
    assert not any(p.name.startswith(".mn-synth-masks-") for p in tmp_path.iterdir())
    assert not (tmp_path / "c.mp4").exists() and not (tmp_path / "c.npz").exists()


def test_mask_store_in_memory_or_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import realtime.synth_cli as synth

    with synth.mask_store((2, 3, 4), tmp_path) as masks:
        assert type(masks) is np.ndarray and masks.shape == (2, 3, 4) and not masks.any()
    monkeypatch.setattr(synth, "available_memory", lambda: 10)
    with synth.mask_store((2, 3, 4), tmp_path / "sub") as masks:
        assert isinstance(masks, np.memmap) and masks.shape == (2, 3, 4) and masks.dtype == np.uint8
        masks[1, 2, 3] = 1
        assert len(list((tmp_path / "sub").iterdir())) == 1
    assert list((tmp_path / "sub").iterdir()) == []
    assert synth.available_memory() is None or synth.available_memory() > 0


@pytest.mark.data
def test_real_still(tmp_path: Path, real_data: Path) -> None:
    image = sorted((real_data / "Images").glob("*.png"))[0]
    out, truth = tmp_path / "r.mp4", tmp_path / "r.npz"
    assert main(["--image", str(image), "--frames", "6", "--out", str(out), "--truth", str(truth), "-q"]) == 0
    data = np.load(truth)
    assert data["masks"].shape == (6, 468, 606) and data["masks"].sum() > 0
    assert len(decode(out)) == 6


def test_phantom_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from train.data import scan_dataset

    root = tmp_path / "ph"
    assert main(["--phantom", "--dataset", str(root), "--frames", "3", "--seed", "7", "--every", "5", "-q"]) == 0
    names = sorted(p.name for p in (root / "Images").iterdir())
    assert names == ["Ph007-0000.png", "Ph007-0005.png", "Ph007-0010.png"]
    assert sorted(p.name for p in (root / "Masks").iterdir()) == names
    images = [cv2.imread(str(root / "Images" / n), cv2.IMREAD_UNCHANGED) for n in names]
    masks = [cv2.imread(str(root / "Masks" / n), cv2.IMREAD_UNCHANGED) for n in names]
    assert all(i.shape == (468, 606) and i.dtype == np.uint8 for i in images)
    assert all(set(np.unique(m).tolist()) == {0, 255} for m in masks)
    assert not np.array_equal(images[0], images[1])
    samples = scan_dataset(root)
    assert len(samples) == 3 and {s.patient for s in samples} == {"Ph007"}
    # a clip still needs --out and --truth; --dataset is phantom-only and writes no clip
    assert run_cli("mn-synth", main, ["--phantom", "--frames", "2"]) == 2
    assert "--out" in capsys.readouterr().err
    img = tmp_path / "x.png"
    assert run_cli("mn-synth", main, ["--image", str(img), "--dataset", str(root), "--frames", "2"]) == 2
    assert "--phantom" in capsys.readouterr().err
    bad = ["--phantom", "--dataset", str(root), "--frames", "2", "--out", str(tmp_path / "c.mp4")]
    assert run_cli("mn-synth", main, bad) == 2
    assert "--out/--truth" in capsys.readouterr().err
