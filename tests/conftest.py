"""Shared fixtures: synthetic annotated datasets (never real images) and the real data's location."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "median-nerve"


def make_dataset(root: Path, n_patients: int = 6, per_patient: int = 2, size: tuple[int, int] = (128, 96),
                 seed: int = 0, ext: str = ".png") -> Path:
    """Write ``root/Images`` and ``root/Masks`` with a speckled background and a dark, bright-rimmed
    ellipse ("nerve") whose filled shape is the mask. File names follow the real data: PzNNN-MMM."""
    rng = np.random.default_rng(seed)
    w, h = size
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / "Masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w]
    for p in range(1, n_patients + 1):
        for k in range(1, per_patient + 1):
            img = 90 + 40 * rng.rayleigh(1.0, (h, w)) - 0.3 * yy
            cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.6) * h
            ax, ay = rng.uniform(0.10, 0.16) * w, rng.uniform(0.08, 0.12) * h
            mask = np.zeros((h, w), np.uint8)
            cv2.ellipse(mask, (int(cx), int(cy)), (int(ax), int(ay)), float(rng.uniform(-20, 20)), 0, 360, 255, -1)
            rim = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
            img[rim] = 220
            img[mask > 0] = 40 + 20 * rng.random(int((mask > 0).sum()))
            img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (3, 3), 0)
            stem = f"Pz{p:03d}-{k:03d}"
            cv2.imwrite(str(root / "Images" / f"{stem}{ext}"), img)
            cv2.imwrite(str(root / "Masks" / f"{stem}{ext}"), mask)
    return root


@pytest.fixture
def synthetic_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def synthetic_dataset_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only dataset shared by the tests of a session (do not modify it)."""
    return make_dataset(tmp_path_factory.mktemp("shared-data") / "data", n_patients=8)


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "Images").is_dir():
        pytest.skip(f"the real dataset is not at {REAL_DATA}")
    return REAL_DATA
