"""Tests for train.data: scanning, reading, validating and loading a dataset folder.

Synthetic datasets are written to tmp_path; the real data, when present, are read
from /work/shared/data/median-nerve and never copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pytest
import torch

from train.augment import JointAugment
from train.data import (
    DEFAULT_PATIENT_REGEX,
    LoadedData,
    Sample,
    SegmentationDataset,
    dataset_hash,
    load_samples,
    patient_id,
    read_image,
    read_mask,
    scan_dataset,
)
from train.errors import DataError, UserError
from train.preprocess import preprocess_image

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "median-nerve"
SIZE = (32, 24)  # model input (W, H) for the synthetic tests
NATIVE = (40, 30)  # synthetic frame size (W, H)


def _frame(seed: int, size: tuple[int, int] = NATIVE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def _disc_mask(size: tuple[int, int] = NATIVE, centre: tuple[int, int] = (20, 12), radius: int = 6) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    cv2.circle(mask, centre, radius, 255, thickness=-1)
    return mask


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def make_dataset(
    root: Path,
    stems: Iterable[str] = ("Pz001-001", "Pz001-002", "Pz002-001"),
    image_ext: str = ".png",
    mask_ext: str = ".png",
) -> Path:
    """Write a small synthetic dataset (colour frames, {0,255} disc masks) under ``root``."""
    for seed, stem in enumerate(stems):
        _write(root / "Images" / f"{stem}{image_ext}", _frame(seed))
        _write(root / "Masks" / f"{stem}{mask_ext}", _disc_mask(centre=(15 + seed, 12)))
    return root


# --- patient ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "patient"),
    [("Pz003-004", "Pz003"), ("Pz101-001", "Pz101"), ("site-a-07-3", "site-a-07")],
)
def test_patient_id_default(stem: str, patient: str) -> None:
    assert patient_id(stem) == patient
    assert patient_id(stem, DEFAULT_PATIENT_REGEX) == patient


def test_patient_id_custom_regex() -> None:
    assert patient_id("case12_left", r"^(case\d+)_") == "case12"
    assert patient_id("P7.img3", r"^(P\d+)\.") == "P7"


def test_patient_id_no_match_names_file_and_regex() -> None:
    with pytest.raises(DataError) as info:
        patient_id("Pz003", path=Path("/data/Images/Pz003.png"))
    message = str(info.value)
    assert "/data/Images/Pz003.png" in message
    assert DEFAULT_PATIENT_REGEX in message
    assert "--patient-regex" in message


def test_patient_id_bad_regex() -> None:
    with pytest.raises(UserError, match="capture group"):
        patient_id("Pz003-001", r"^Pz\d+")
    with pytest.raises(UserError, match="invalid"):
        patient_id("Pz003-001", r"^(Pz")


# --- scanning --------------------------------------------------------------------------


def test_scan_dataset_pairs_sorted_by_stem(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, stems=("Pz002-001", "Pz001-002", "Pz001-001"))
    samples = scan_dataset(root)
    assert [s.stem for s in samples] == ["Pz001-001", "Pz001-002", "Pz002-001"]
    assert [s.patient for s in samples] == ["Pz001", "Pz001", "Pz002"]
    expected = Sample("Pz001-001", "Pz001", root / "Images" / "Pz001-001.png", root / "Masks" / "Pz001-001.png")
    assert samples[0] == expected


def test_scan_dataset_mixed_extensions_and_ignored_files(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, stems=("Pz001-001",), image_ext=".bmp", mask_ext=".png")
    make_dataset(tmp_path, stems=("Pz002-001",), image_ext=".PNG", mask_ext=".bmp")
    (root / "Images" / ".DS_Store").write_bytes(b"junk")
    (root / "Images" / "._Pz001-001.bmp").write_bytes(b"junk")
    (root / "Images" / "notes.txt").write_text("not an image")
    (root / "Masks" / "old").mkdir()
    samples = scan_dataset(root)
    assert [(s.image_path.name, s.mask_path.name) for s in samples] == [
        ("Pz001-001.bmp", "Pz001-001.png"),
        ("Pz002-001.PNG", "Pz002-001.bmp"),
    ]


def test_scan_dataset_custom_regex(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, stems=("case1_a", "case1_b", "case2_a"))
    assert [s.patient for s in scan_dataset(root, r"^(case\d+)_")] == ["case1", "case1", "case2"]
    with pytest.raises(DataError, match="case1_a"):
        scan_dataset(root)  # no '-' in the names: the default regex does not match


def test_scan_dataset_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        scan_dataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_scan_dataset_missing_images_folder(tmp_path: Path) -> None:
    (tmp_path / "Masks").mkdir()
    with pytest.raises(DataError) as info:
        scan_dataset(tmp_path)
    message = str(info.value)
    assert "Images/" in message and str(tmp_path) in message and "Masks" in message


def test_scan_dataset_wrong_case_folder_hint(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    (tmp_path / "Images").rename(tmp_path / "images")
    with pytest.raises(DataError, match="rename it to 'Images'"):
        scan_dataset(tmp_path)


def test_scan_dataset_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "Images").mkdir()
    (tmp_path / "Masks").mkdir()
    with pytest.raises(DataError, match="no images") as info:
        scan_dataset(tmp_path)
    assert str(tmp_path / "Images") in str(info.value)


def test_scan_dataset_image_without_mask(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    _write(root / "Images" / "Pz009-001.png", _frame(9))
    with pytest.raises(DataError, match="have no mask") as info:
        scan_dataset(root)
    assert "Pz009-001.png" in str(info.value)


def test_scan_dataset_mask_without_image(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    _write(root / "Masks" / "Pz009-003.bmp", _disc_mask())
    with pytest.raises(DataError, match="have no image") as info:
        scan_dataset(root)
    assert "Pz009-003.bmp" in str(info.value)


def test_scan_dataset_many_unpaired_are_counted(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    for i in range(15):
        (root / "Images" / f"Pz050-{i:03d}.png").write_bytes(b"")  # contents are not read here
    with pytest.raises(DataError) as info:
        scan_dataset(root)
    message = str(info.value)
    assert "15 image(s)" in message and "Pz050-000.png" in message and "and 5 more" in message


def test_scan_dataset_duplicate_stems(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    _write(root / "Images" / "Pz001-001.bmp", _frame(0))
    with pytest.raises(DataError, match="more than one extension") as info:
        scan_dataset(root)
    assert "Pz001-001.bmp" in str(info.value) and "Pz001-001.png" in str(info.value)


# --- reading ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_read_image_formats(tmp_path: Path, ext: str) -> None:
    frame = _frame(3)
    path = _write(tmp_path / f"frame{ext}", frame)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == frame.shape[:2]
    np.testing.assert_array_equal(image, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))


def test_read_image_grey_and_16_bit(tmp_path: Path) -> None:
    grey = cv2.cvtColor(_frame(4), cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(read_image(_write(tmp_path / "g.png", grey)), grey)
    deep = read_image(_write(tmp_path / "d.png", grey.astype(np.uint16) * 257))
    assert deep.dtype == np.uint16
    np.testing.assert_array_equal(deep, grey.astype(np.uint16) * 257)


@pytest.mark.parametrize("contents", [b"this is not a PNG at all", b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_read_image_corrupt_file_names_it(tmp_path: Path, contents: bytes) -> None:
    path = tmp_path / "Pz001-001.png"
    path.write_bytes(contents)
    with pytest.raises(DataError, match="cannot decode image") as info:
        read_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="cannot decode mask"):
        read_mask(path)


def test_read_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read image") as info:
        read_image(tmp_path / "gone.png")
    assert "gone.png" in str(info.value)


def test_read_mask_binary_variants(tmp_path: Path) -> None:
    mask = _disc_mask()
    np.testing.assert_array_equal(read_mask(_write(tmp_path / "a.png", mask)), mask)
    np.testing.assert_array_equal(read_mask(_write(tmp_path / "b.png", mask // 255)), mask)
    np.testing.assert_array_equal(read_mask(_write(tmp_path / "c.bmp", np.dstack([mask] * 3))), mask)
    empty = read_mask(_write(tmp_path / "d.png", np.zeros_like(mask)))
    assert empty.dtype == np.uint8 and not empty.any()


def test_read_mask_not_binary_names_file_and_values(tmp_path: Path) -> None:
    mask = _disc_mask()
    mask[0, 0] = 128
    path = _write(tmp_path / "Pz001-001.png", mask)
    with pytest.raises(DataError, match="is not binary") as info:
        read_mask(path)
    message = str(info.value)
    assert str(path) in message and "128" in message


# --- loading ---------------------------------------------------------------------------


def test_load_samples(tmp_path: Path) -> None:
    samples = scan_dataset(make_dataset(tmp_path))
    data = load_samples(samples, SIZE, progress=False)
    assert isinstance(data, LoadedData) and len(data) == 3
    assert data.stems == ["Pz001-001", "Pz001-002", "Pz002-001"]
    assert data.patients == ["Pz001", "Pz001", "Pz002"]
    assert data.images.shape == (3, 1, 24, 32) and data.images.dtype == np.float32
    assert data.masks.shape == (3, 1, 24, 32) and data.masks.dtype == np.float32
    np.testing.assert_allclose(data.images.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(data.images.std(axis=(1, 2, 3)), 1, atol=1e-5)
    np.testing.assert_array_equal(data.images[0, 0], preprocess_image(_frame(0), SIZE))
    assert data.masks.min() == 0 and data.masks.max() == 1
    assert np.any((data.masks > 0) & (data.masks < 1))
    assert data.native_sizes == [NATIVE] * 3
    assert all(m.dtype == np.uint8 and m.shape == (30, 40) for m in data.native_masks)
    np.testing.assert_array_equal(data.native_masks[0], _disc_mask(centre=(15, 12)))
    part = data.subset([2, 0])
    assert part.stems == ["Pz002-001", "Pz001-001"] and part.images.shape[0] == 2
    np.testing.assert_array_equal(part.masks[1], data.masks[0])


def test_load_samples_size_mismatch_names_both_files(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    _write(root / "Masks" / "Pz001-002.png", _disc_mask(size=(41, 30)))
    samples = scan_dataset(root)
    with pytest.raises(DataError) as info:
        load_samples(samples, SIZE, progress=False)
    message = str(info.value)
    assert "Images/Pz001-002.png" in message and "Masks/Pz001-002.png" in message
    assert "40x30" in message and "41x30" in message


def test_load_samples_corrupt_and_non_binary(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    (root / "Images" / "Pz002-001.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="Pz002-001.png"):
        load_samples(scan_dataset(root), SIZE, progress=False)
    root2 = make_dataset(tmp_path / "second")
    grey_mask = _disc_mask()
    grey_mask[grey_mask == 0] = 3
    _write(root2 / "Masks" / "Pz001-001.png", grey_mask)
    with pytest.raises(DataError, match=r"Pz001-001.png is not binary \(found values 3, 255\)"):
        load_samples(scan_dataset(root2), SIZE, progress=False)


# --- hashing ---------------------------------------------------------------------------


def test_dataset_hash_stable_and_sensitive(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    samples = scan_dataset(root)
    first = dataset_hash(samples)
    assert len(first) == 64 and int(first, 16) >= 0
    assert dataset_hash(list(reversed(samples))) == first
    assert dataset_hash(samples) == first
    _write(root / "Masks" / "Pz001-002.png", _disc_mask(centre=(25, 12)))
    assert dataset_hash(samples) != first
    assert dataset_hash(samples[:2]) != dataset_hash(samples)


# --- torch dataset ---------------------------------------------------------------------


def _arrays(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.standard_normal((n, 1, 24, 32)).astype(np.float32)
    masks = np.zeros((n, 1, 24, 32), dtype=np.float32)
    masks[:, :, 8:16, 10:20] = 1.0
    return images, masks


def test_segmentation_dataset_plain() -> None:
    images, masks = _arrays()
    dataset = SegmentationDataset(images, masks)
    assert len(dataset) == 4
    image, mask = dataset[1]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.shape == (1, 24, 32)
    assert mask.dtype == torch.float32 and mask.shape == (1, 24, 32)
    np.testing.assert_array_equal(image.numpy(), images[1])
    np.testing.assert_array_equal(dataset[-1][1].numpy(), masks[3])
    image.zero_()
    assert images[1].any(), "items must not share memory with the dataset's arrays"
    with pytest.raises(IndexError):
        dataset[4]


def test_segmentation_dataset_augmentation_reproducible() -> None:
    images, masks = _arrays()
    augment = JointAugment()
    dataset = SegmentationDataset(images, masks, augment=augment, seed=7)
    dataset.set_epoch(3)
    a_img, a_mask = dataset[2]
    b_img, b_mask = dataset[2]
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    # Depends only on (seed, epoch, index): a fresh instance agrees ...
    other = SegmentationDataset(images, masks, augment=augment, seed=7)
    other.set_epoch(3)
    assert torch.equal(other[2][0], a_img)
    # ... and so does a direct call with the documented generator.
    exp_img, exp_mask = augment(images[2, 0], masks[2, 0], np.random.default_rng([7, 3, 2]))
    np.testing.assert_array_equal(a_img.numpy()[0], exp_img)
    np.testing.assert_array_equal(a_mask.numpy()[0], exp_mask)
    dataset.set_epoch(4)
    assert not torch.equal(dataset[2][0], a_img)
    assert not torch.equal(SegmentationDataset(images, masks, augment=augment, seed=8).__getitem__(2)[0], dataset[2][0])


def test_segmentation_dataset_in_dataloader() -> None:
    images, masks = _arrays()
    loader = torch.utils.data.DataLoader(SegmentationDataset(images, masks, JointAugment(), seed=0), batch_size=3)
    batch_images, batch_masks = next(iter(loader))
    assert batch_images.shape == (3, 1, 24, 32) and batch_masks.shape == (3, 1, 24, 32)


def test_segmentation_dataset_rejects_bad_input() -> None:
    images, masks = _arrays()
    with pytest.raises(ValueError):
        SegmentationDataset(images[:, 0], masks[:, 0])
    with pytest.raises(ValueError):
        SegmentationDataset(images, masks[:3])
    with pytest.raises(ValueError):
        SegmentationDataset(images, masks).set_epoch(-1)


# --- the real dataset (read in place, never copied) ------------------------------------


@pytest.fixture(scope="module")
def real_samples() -> list[Sample]:
    if not (REAL_DATA / "Images").is_dir():
        pytest.skip(f"real dataset not found at {REAL_DATA}")
    return scan_dataset(REAL_DATA)


def test_real_dataset_scan(real_samples: list[Sample]) -> None:
    assert len(real_samples) == 202
    assert len({s.patient for s in real_samples}) == 87
    assert real_samples[0].stem == "Pz001-001" and real_samples[0].patient == "Pz001"


def test_real_dataset_load_two(real_samples: list[Sample]) -> None:
    data = load_samples(real_samples[:2], progress=False)
    assert data.images.shape == (2, 1, 288, 384)
    assert data.native_sizes == [(606, 468), (606, 468)]
    assert all(set(np.unique(m).tolist()) == {0, 255} for m in data.native_masks)
    frame = cv2.imread(str(real_samples[0].image_path), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(data.images[0, 0], preprocess_image(frame))
