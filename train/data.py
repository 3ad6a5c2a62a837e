"""Reading a segmentation dataset from disk.

Layout (the authors' ``Dataset/`` folder and ``/work/shared/data/median-nerve``)::

    ROOT/Images/<stem>.<ext>   ultrasound frames (grey or colour, any size)
    ROOT/Masks/<stem>.<ext>    binary masks, same stem and same size as the image

``<ext>`` is any extension in :data:`IMAGE_EXTENSIONS` (case-insensitive); images
and masks are matched by file stem, so ``Images/Pz003-001.bmp`` pairs with
``Masks/Pz003-001.png``. Hidden files (starting with ``.``) and sub-folders are
ignored. The patient of each image comes from its stem through a regular
expression (:data:`DEFAULT_PATIENT_REGEX`); every split is by patient.

Everything here raises :class:`~train.errors.DataError` with the offending files
named and a hint on how to fix them.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from train.errors import DataError, UserError
from train.preprocess import DEFAULT_SIZE, check_size, preprocess_image, preprocess_mask, to_grey

log = logging.getLogger(__name__)

IMAGES_DIR = "Images"
MASKS_DIR = "Masks"

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".bmp", ".dib", ".jpg", ".jpeg", ".jpe", ".tif", ".tiff",
    ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm",
)
"""File extensions read as images (lower case; matching ignores case)."""

DEFAULT_PATIENT_REGEX = r"^(.+)-[^-]+$"
"""Patient id = everything before the last ``-`` of the stem: ``Pz003-004`` -> ``Pz003``.

A custom regex is searched in the stem (anchor it with ``^``/``$`` if needed) and its
first capture group is the patient id, e.g. ``^(case\\d+)_`` for ``case12_left``.
"""

MAX_LISTED = 10
"""How many file names an error message lists before it says "and N more"."""

AugmentFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
"""``augment(image, mask, rng) -> (image, mask)`` on float32 ``[H, W]`` arrays."""


@dataclass(frozen=True)
class Sample:
    """One image/mask pair on disk."""

    stem: str
    patient: str
    image_path: Path
    mask_path: Path


@dataclass
class LoadedData:
    """A dataset read into memory and preprocessed for training.

    Attributes:
        stems, patients: one entry per sample, in the order of the samples given.
        images: float32 ``[N, 1, H, W]``, per-image z-scored.
        masks: float32 ``[N, 1, H, W]`` in [0, 1], soft edges.
        native_masks: the uint8 {0, 255} masks at their original size.
        native_sizes: ``(width, height)`` of each original image.
        size: the model input size ``(width, height)``.
    """

    stems: list[str]
    patients: list[str]
    images: np.ndarray
    masks: np.ndarray
    native_masks: list[np.ndarray]
    native_sizes: list[tuple[int, int]]
    size: tuple[int, int] = DEFAULT_SIZE

    def __len__(self) -> int:
        return len(self.stems)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LoadedData:
        """The samples at ``indices`` (in that order), as a new LoadedData (arrays copied)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return LoadedData(
            stems=[self.stems[i] for i in idx],
            patients=[self.patients[i] for i in idx],
            images=self.images[idx],
            masks=self.masks[idx],
            native_masks=[self.native_masks[i] for i in idx],
            native_sizes=[self.native_sizes[i] for i in idx],
            size=self.size,
        )


def _list_names(names: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a, b, c`` or ``a, b, ... (and 12 more)`` for error messages."""
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f" (and {len(names) - limit} more)"
    return shown


def _compile_patient_regex(regex: str | re.Pattern[str] | None) -> re.Pattern[str]:
    if regex is None:
        regex = DEFAULT_PATIENT_REGEX
    try:
        pattern = regex if isinstance(regex, re.Pattern) else re.compile(regex)
    except re.error as exc:
        raise UserError(f"invalid --patient-regex {regex!r}: {exc}") from None
    if pattern.groups < 1:
        raise UserError(
            f"--patient-regex {pattern.pattern!r} has no capture group: put the patient id "
            f"in parentheses, e.g. {DEFAULT_PATIENT_REGEX!r}"
        )
    return pattern


def patient_id(stem: str, regex: str | re.Pattern[str] | None = None, *, path: Path | None = None) -> str:
    """The patient id of a file stem: the first capture group of ``regex``.

    Args:
        stem: file name without extension, e.g. ``"Pz003-004"``.
        regex: pattern searched in the stem; default :data:`DEFAULT_PATIENT_REGEX`.
        path: the file, named in the error message when given.

    Raises:
        DataError: the stem does not match or the group is empty.
        UserError: the regex is invalid or has no capture group.
    """
    pattern = _compile_patient_regex(regex)
    match = pattern.search(stem)
    if match is None or not match.group(1):
        where = f"file {path}" if path is not None else f"file name {stem!r}"
        raise DataError(
            f"cannot find a patient id in {where}: stem {stem!r} does not match the patient regex "
            f"{pattern.pattern!r} (its first capture group is the patient). Rename the file "
            f"(e.g. Pz003-004.png for patient Pz003) or pass --patient-regex with a pattern that "
            f"matches your file names"
        )
    return match.group(1)


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _index_folder(folder: Path) -> dict[str, Path]:
    """Map stem -> file for the image files of ``folder``; duplicate stems are an error."""
    by_stem: dict[str, list[Path]] = {}
    ignored: list[str] = []
    for path in sorted(folder.iterdir()):
        if _is_image_file(path):
            by_stem.setdefault(path.stem, []).append(path)
        elif not path.name.startswith("."):
            ignored.append(path.name)
    if ignored:
        log.warning("ignoring %d non-image entries in %s: %s", len(ignored), folder, _list_names(ignored))
    duplicates = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if duplicates:
        listed = [" and ".join(p.name for p in paths) for paths in duplicates.values()]
        raise DataError(
            f"{len(duplicates)} file stem(s) in {folder} appear with more than one extension: "
            f"{_list_names(listed)}. Keep one file per stem (delete or move the other copies)"
        )
    return {stem: paths[0] for stem, paths in by_stem.items()}


def _layout_hint(root: Path) -> str:
    exts = " ".join(IMAGE_EXTENSIONS[:6])
    return (
        f"expected {root}/{IMAGES_DIR}/<name>.png and {root}/{MASKS_DIR}/<name>.png "
        f"(any of {exts} ...), one mask per image with the same file name stem"
    )


def _require_dir(root: Path, name: str) -> Path:
    folder = root / name
    if folder.is_dir():
        return folder
    near = [p.name for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    hint = f"; found {near[0]!r}: rename it to {name!r}" if near else ""
    raise DataError(f"dataset folder {root} has no {name}/ folder{hint}. {_layout_hint(root)}")


def scan_dataset(root: str | Path, patient_regex: str | re.Pattern[str] | None = None) -> list[Sample]:
    """List the image/mask pairs of a dataset folder, sorted by stem.

    Reads no pixels: only the file names are checked here (see :func:`load_samples`).

    Raises:
        DataError: missing or empty folders, images without a mask, masks without an
            image, stems present with several extensions, stems without a patient id.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"dataset folder {root} {what}. {_layout_hint(root)}")
    images_dir = _require_dir(root, IMAGES_DIR)
    masks_dir = _require_dir(root, MASKS_DIR)
    images = _index_folder(images_dir)
    if not images:
        raise DataError(f"no images in {images_dir}. {_layout_hint(root)}")
    masks = _index_folder(masks_dir)

    problems = []
    no_mask = sorted(images.keys() - masks.keys())
    if no_mask:
        problems.append(
            f"{len(no_mask)} image(s) in {images_dir} have no mask in {masks_dir}: "
            f"{_list_names([images[s].name for s in no_mask])}"
        )
    no_image = sorted(masks.keys() - images.keys())
    if no_image:
        problems.append(
            f"{len(no_image)} mask(s) in {masks_dir} have no image in {images_dir}: "
            f"{_list_names([masks[s].name for s in no_image])}"
        )
    if problems:
        raise DataError(
            "; ".join(problems)
            + ". Every image needs a mask with the same file name stem (the extension may differ); "
            "add the missing files or remove the unpaired ones"
        )

    pattern = _compile_patient_regex(patient_regex)
    samples = [
        Sample(stem, patient_id(stem, pattern, path=images[stem]), images[stem], masks[stem])
        for stem in sorted(images)
    ]
    n_patients = len({s.patient for s in samples})
    log.info("found %d image/mask pairs of %d patients in %s", len(samples), n_patients, root)
    return samples


def _decode(path: Path, what: str) -> np.ndarray:
    """Decode an image file with OpenCV, unchanged depth and channels."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    image = None
    if data.size:
        try:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
    if image is None:
        raise DataError(
            f"cannot decode {what} {path}: the file is empty, corrupt or not an image format "
            f"OpenCV reads; re-export it (e.g. as PNG) or remove it together with its pair"
        )
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D grey array.

    Colour is converted as :func:`train.preprocess.to_grey` does. The bit depth of
    the file is kept: uint8 for the usual 8-bit files (all of the paper's data),
    uint16 for 16-bit PNG/TIFF.

    Raises:
        DataError: missing, unreadable or corrupt file, or unsupported pixel layout.
    """
    image = _decode(Path(path), "image")
    try:
        return to_grey(image)
    except UserError as exc:
        raise DataError(f"image {path} cannot be used: {exc}") from None


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as uint8 {0, 255}; a {0, 1} mask is scaled to {0, 255}.

    Raises:
        DataError: unreadable file, or values other than {0, 255} / {0, 1}.
    """
    path = Path(path)
    try:
        grey = to_grey(_decode(path, "mask"))
    except UserError as exc:
        raise DataError(f"mask {path} cannot be used: {exc}") from None
    values = np.unique(grey)
    if set(values.tolist()) <= {0, 255}:
        return grey.astype(np.uint8, copy=False)
    if set(values.tolist()) <= {0, 1}:
        return grey.astype(np.uint8) * np.uint8(255)
    shown = ", ".join(str(v) for v in values[:MAX_LISTED].tolist())
    more = f", ... ({len(values)} distinct)" if len(values) > MAX_LISTED else ""
    raise DataError(
        f"mask {path} is not binary (found values {shown}{more}); masks must hold only 0 "
        f"(background) and 255 (nerve), or 0 and 1. Re-export it losslessly (PNG/BMP, "
        f"no anti-aliasing, no JPEG) or threshold it"
    )


def load_samples(
    samples: Sequence[Sample], size: tuple[int, int] = DEFAULT_SIZE, progress: bool = True
) -> LoadedData:
    """Read and preprocess every image/mask pair.

    Args:
        samples: from :func:`scan_dataset`.
        size: model input ``(width, height)``.
        progress: show a tqdm progress bar.

    Raises:
        DataError: an unreadable file, a non-binary mask, or an image and mask of
            different sizes.
    """
    from tqdm import tqdm

    size = check_size(size)
    width, height = size
    n = len(samples)
    images = np.empty((n, 1, height, width), dtype=np.float32)
    masks = np.empty((n, 1, height, width), dtype=np.float32)
    native_masks: list[np.ndarray] = []
    native_sizes: list[tuple[int, int]] = []
    for i, sample in enumerate(tqdm(samples, desc="reading images", unit="img", disable=not progress)):
        image = read_image(sample.image_path)
        mask = read_mask(sample.mask_path)
        if image.shape != mask.shape:
            raise DataError(
                f"image {sample.image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                f"{sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} (width x height); "
                f"a mask must have the size of its image"
            )
        images[i, 0] = preprocess_image(image, size)
        masks[i, 0] = preprocess_mask(mask, size)
        native_masks.append(mask)
        native_sizes.append((image.shape[1], image.shape[0]))
    log.info("loaded %d samples at %dx%d", n, width, height)
    return LoadedData(
        stems=[s.stem for s in samples],
        patients=[s.patient for s in samples],
        images=images,
        masks=masks,
        native_masks=native_masks,
        native_sizes=native_sizes,
        size=size,
    )


def _hash_file(hasher: Any, path: Path) -> None:
    """Feed the length and the bytes of ``path`` into ``hasher``."""
    try:
        hasher.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path} to hash the dataset: {exc.strerror or exc}") from None


def dataset_hash(samples: Iterable[Sample]) -> str:
    """SHA-256 (hex) over the sorted stems and the bytes of every image and mask.

    Independent of the folder's location and of the samples' order; changes when a
    file is added, removed, renamed or modified.
    """
    hasher = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.stem):
        stem = sample.stem.encode("utf-8")
        hasher.update(len(stem).to_bytes(8, "little"))
        hasher.update(stem)
        _hash_file(hasher, Path(sample.image_path))
        _hash_file(hasher, Path(sample.mask_path))
    return hasher.hexdigest()


class SegmentationDataset(Dataset):
    """Preprocessed images and masks as a torch Dataset, with optional joint augmentation.

    Item ``i`` of epoch ``e`` is augmented with ``np.random.default_rng([seed, e, i])``,
    so the result depends only on (seed, epoch, index): not on the number of
    DataLoader workers, their order, or a resume. Call :meth:`set_epoch` before each
    epoch; with DataLoader workers keep ``persistent_workers=False`` (the default) so
    that the workers see the new epoch.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        augment: AugmentFn | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            images: float32 ``[N, 1, H, W]`` (from :func:`load_samples`).
            masks: float32 ``[N, 1, H, W]``, same shape.
            augment: e.g. :class:`train.augment.JointAugment`; None for no augmentation.
            seed: non-negative base seed of the augmentation stream.
        """
        images = np.asarray(images, dtype=np.float32)
        masks = np.asarray(masks, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be [N, 1, H, W], got shape {images.shape}")
        if masks.shape != images.shape:
            raise ValueError(f"masks shape {masks.shape} differs from images shape {images.shape}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.images = images
        self.masks = masks
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (non-negative)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, mask)``, each a float32 tensor ``[1, H, W]``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index = int(index) % n
        image = self.images[index, 0]
        mask = self.masks[index, 0]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, mask = self.augment(image, mask, rng)
        image_t = torch.from_numpy(np.array(image, dtype=np.float32, copy=True).reshape(1, *image.shape[-2:]))
        mask_t = torch.from_numpy(np.array(mask, dtype=np.float32, copy=True).reshape(1, *mask.shape[-2:]))
        return image_t, mask_t


class DatasetWrapper(Dataset):
    """A dataset made from another one's items: the epoch passes through to ``base``, the length is its."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return int(self.base.epoch)

    def __len__(self) -> int:
        return len(self.base)


class RemovedNerveDataset(DatasetWrapper):
    """A share of the items of ``base`` with the nerve removed and an empty mask (``mn-train --nerve-removed``).

    Item ``i`` of epoch ``e`` is a negative when ``default_rng([seed, e, i, 11]).random() < share``:
    :func:`train.perturb.remove_nerve` paints the tissue beside the nerve over it (after ``base``'s
    augmentation), so the network learns that the same anatomy without a median nerve holds none.
    Other items are exactly ``base``'s. An item whose nerve cannot be removed (no room beside it)
    stays a positive.
    """

    def __init__(self, base: Any, share: float, seed: int = 0) -> None:
        if not 0.0 <= share < 1.0:
            raise UserError(f"--nerve-removed is a share of the training items in [0, 1), got {share}")
        super().__init__(base)
        self.share = float(share)
        self.seed = int(seed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.base[index]
        if np.random.default_rng([self.seed, self.epoch, int(index) % len(self), 11]).random() < self.share:
            from train.perturb import remove_nerve

            removed = remove_nerve(image[0].numpy(), mask[0].numpy())
            if removed is not None:
                return torch.from_numpy(removed)[None], torch.zeros_like(mask)
        return image, mask
