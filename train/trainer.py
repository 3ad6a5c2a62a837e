"""The training loop behind ``mn-train``: the authors' recipe, resumable and checkpointed.

Recipe (paper-code-spec §3.4): BCE + batch-pooled soft Dice, Adam (eps 1e-7), batch 8,
100 epochs, learning rate per model (1e-2 for unet/lunet, 1e-3 for the double networks, as the
authors' code), ReduceLROnPlateau x0.1 after 10 epochs without a 1e-4 improvement of the
validation loss (Keras semantics), early stop after 50, the best-validation-loss checkpoint kept.

Determinism and resume: the batch order of epoch *e* is a permutation seeded by ``(seed, e)`` and
the augmentation of image *i* in epoch *e* by ``(seed, e, i)``, so ``--resume`` after a stop
(even mid-epoch: Ctrl-C or SIGTERM saves ``last.pt`` with the number of batches done) replays the
same sequence. Dropout draws from torch's global RNG, whose state is saved too.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) every global batch is split across the
ranks and gradients are averaged by DistributedDataParallel (gloo on CPU, nccl on CUDA). Each
rank validates the whole (small) validation set, so all ranks take the same scheduler and
early-stopping decisions; only rank 0 writes files.

Augmentation: ``augment`` names one of :data:`train.augment.AUGMENT_NAMES` (``paper``, ``strong``,
``acquisition``, ``fov``, ``compress``, ``none``), recorded in the run config.
Extra training data: the folders of ``extra_train`` (e.g.
phantom frames from ``mn-synth --phantom --dataset``) are read like ``data`` and all their images
join the training side; the split is computed on ``data`` alone, so validation is unchanged.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from common.figures import save_figure
from train.augment import AUGMENT_NAMES, augment_record, make_augment
from train.checkpoint import code_version, load_checkpoint, save_checkpoint
from train.data import LoadedData, SegmentationDataset, dataset_hash, load_samples, scan_dataset
from train.errors import CheckpointError, UserError
from train.losses import LOSSES, get_loss, soft_dice
from train.metrics import dice_hard
from train.models import build_model, check_input_size
from train.models.vgg import load_vgg19_weights
from train.preprocess import preprocessing_config
from train.splits import make_split
from train.swa import WeightAverage, has_batchnorm, recompute_batchnorm

log = logging.getLogger(__name__)

#: Learning rates the authors' notebooks actually used (paper-code-spec §3.4, §4 item 3).
DEFAULT_LR = {"unet": 1e-2, "lunet": 1e-2}
DEFAULT_LR_OTHER = 1e-3

HISTORY_FIELDS = [
    "epoch", "lr", "train_loss", "train_soft_dice", "val_loss", "val_soft_dice", "val_dsc",
    "best", "seconds",
]


@dataclass
class TrainConfig:
    """Everything that defines a training run (all flags of ``mn-train``)."""

    data: str
    model: str
    out: str
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 8
    lr: float | None = None
    size: tuple[int, int] = (384, 288)
    split: str = "paper"
    folds: int | None = None
    fold: int | None = None
    val_fraction: float = 0.2
    seed: int = 42
    device: str = "cpu"
    lr_factor: float = 0.1
    lr_patience: int = 10
    lr_min_delta: float = 1e-4
    early_stop: int = 50
    augment: str = "paper"
    amp: bool | None = None
    amp_dtype: str = "auto"
    encoder_weights: str | None = None
    patient_regex: str | None = None
    max_images: int | None = None
    resume: bool = False
    save_every_min: float = 10.0
    extra_train: list[str] = field(default_factory=list)
    crop: tuple[int, int] | None = None
    crop_jitter: float = 0.25
    crop_negatives: float = 0.0
    nerve_removed: float = 0.0
    init: str | None = None
    init_part: str | None = None
    max_minutes: float | None = None
    workers: int = 0
    consistency: float = 0.0
    speckle: tuple[float, float] | None = None
    compress: tuple[float, float] | None = None
    blind: bool = False
    lr_drops: list[int] = field(default_factory=list)
    swa_from: int | None = None
    loss: str = "bce_dice"

    def __post_init__(self) -> None:
        # Backwards compatibility: augment=True/False (the old boolean flag) means "paper"/"none".
        if isinstance(self.augment, bool):
            self.augment = "paper" if self.augment else "none"
        if self.augment not in AUGMENT_NAMES:
            raise UserError(f"unknown augmentation {self.augment!r}; choose one of: {', '.join(AUGMENT_NAMES)}")
        self.extra_train = [str(root) for root in self.extra_train or []]
        self.lr_drops = sorted(int(e) for e in self.lr_drops or [])
        if any(e < 1 for e in self.lr_drops):
            raise UserError(f"--lr-drops are epochs (1 or more) after which the learning rate drops, "
                            f"got {self.lr_drops}")
        if self.crop is not None:
            self.crop = (int(self.crop[0]), int(self.crop[1]))
        if self.loss not in LOSSES:
            raise UserError(f"unknown loss {self.loss!r}; choose one of: {', '.join(sorted(LOSSES))}")
        if self.swa_from is not None and not 1 <= self.swa_from <= self.epochs:
            raise UserError(f"--swa-from {self.swa_from}: the first epoch whose weights are averaged must be between 1 "
                            f"and --epochs ({self.epochs})")
        if self.workers < 0:
            raise UserError("--workers must be 0 (augment in the training process) or more")
        if self.crop_negatives and self.crop is None:
            raise UserError("--crop-negatives goes with --crop WxH (it places refiner windows away from the nerve)")
        from train.consistency import check_weight

        self.consistency = check_weight(self.consistency)
        if self.speckle is not None:
            from train.augment import SPECKLE_AUGMENTS, check_speckle_range

            self.speckle = check_speckle_range(self.speckle)
            if self.augment not in SPECKLE_AUGMENTS:
                raise UserError(f"--speckle LO HI sets the speckle of --augment {', '.join(SPECKLE_AUGMENTS)}; "
                                f"this run has --augment {self.augment}")
        if self.compress is not None:
            from train.augment import COMPRESS_AUGMENTS, COMPRESS_AUGMENTS_TEXT, check_compress

            self.compress = check_compress(self.compress)
            if self.augment not in COMPRESS_AUGMENTS:
                raise UserError(f"--compress LEVEL P sets the nerve's compression of --augment "
                                f"{COMPRESS_AUGMENTS_TEXT}; this run has --augment {self.augment}")

    @property
    def input_size(self) -> tuple[int, int]:
        """What the network sees: the --crop window, else the whole --size frame."""
        return self.crop if self.crop is not None else self.size

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.model, DEFAULT_LR_OTHER)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size)
        d["crop"] = list(self.crop) if self.crop is not None else None
        d["speckle"] = list(self.speckle) if self.speckle is not None else None
        d["compress"] = list(self.compress) if self.compress is not None else None
        d["lr"] = self.learning_rate()
        return d


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def cpu_bf16() -> tuple[bool, str]:
    """``(native, reason)``: whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), which is
    when ``--amp`` on a CPU pays (the refiner's batch: 0.40 s against 0.80 s in float32 on a 2-core AVX512-BF16
    EPYC); elsewhere PyTorch emulates it, slower than float32."""
    probes = (("avx512_bf16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    found = []
    for name, fn in probes:
        try:
            if getattr(torch.cpu, fn)():
                found.append(name)
        except (AttributeError, RuntimeError):  # an older or newer PyTorch without the probe
            continue
    if found:
        return True, f"the CPU has {' and '.join(found)}"
    return False, "the CPU has neither AVX512-BF16 nor AMX (bfloat16 would be emulated, slower than float32)"


def _init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info = DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    return info


class Trainer:
    """One training run. ``Trainer(cfg).fit()`` returns the summary dict also written to config.json."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.out = Path(cfg.out)
        self.dist = _init_distributed(device)
        if device.type == "cuda" and self.dist.world > 1:
            self.device = device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        if cfg.batch_size % self.dist.world:
            raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {self.dist.world} processes; "
                            f"use a multiple of {self.dist.world}")
        check_input_size(cfg.model, cfg.size)
        if cfg.crop is not None:
            from train.cascade import check_crop
            from train.models import model_stride

            check_crop(cfg.crop, cfg.size, model_stride(cfg.model), cfg.model)
        self.progress = self.dist.is_main and log.isEnabledFor(logging.INFO)
        self._resume_payload = self._read_resume_checkpoint() if cfg.resume else None
        if cfg.amp_dtype not in ("auto", "bf16", "fp16"):
            raise UserError(f"--amp-dtype must be auto, bf16 or fp16, not {cfg.amp_dtype!r}")
        # CUDA: on by default. A CPU: only with --amp, in bfloat16, and only where the CPU computes it natively
        # (emulated bfloat16 is slower than float32); results differ from float32 in the last digits.
        self.amp = (device.type == "cuda") if cfg.amp is None else bool(cfg.amp)
        if self.amp and device.type == "cpu":
            if cfg.amp_dtype == "fp16":
                raise UserError("--amp-dtype fp16 is for CUDA: on a CPU mixed precision is bfloat16 "
                                "(--amp-dtype bf16 or auto), or leave out --amp for float32")
            native, why = cpu_bf16()
            if not native:
                log.warning("--amp: %s; training in float32", why)
                self.amp = False
            else:
                log.info("mixed precision on the CPU: bfloat16 (%s)", why)
        elif self.amp and device.type != "cuda":
            log.warning("mixed precision is only used on CUDA and CPUs; training in float32 on %s", device)
            self.amp = False

        self._load_data()
        self.model = self._build_model().to(device)
        if device.type == "cuda":  # faster convolutions under autocast; weights and results unchanged
            torch.backends.cudnn.benchmark = True
        self.channels_last = device.type == "cuda" or self.amp  # on a CPU: 1.3x more with bfloat16, ~1x without
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate(), eps=1e-7)
        if cfg.lr_drops:  # a fixed schedule: x lr_factor after each listed epoch, nothing watched
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, cfg.lr_drops, gamma=cfg.lr_factor)
        else:
            self.scheduler = keras_plateau_scheduler(self.optimizer, cfg.lr_factor, cfg.lr_patience,
                                                     cfg.lr_min_delta)
        # bfloat16 where the GPU has it: float16 overflowed in the VGG encoders of dbunet / dlunet
        # (NaN losses from the first epochs on an H100), bfloat16 has float32's range and needs no scaler.
        bf16 = device.type == "cpu" or cfg.amp_dtype == "bf16" or (
            cfg.amp_dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and not bf16)
        self.net: nn.Module = self.model
        if self.dist.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)

        self._loader: Any = None  # DataLoader with persistent workers (cfg.workers > 0)
        self._sampler: Any = None
        self.epoch = 0          # next epoch to run (0-based)
        self.step_in_epoch = 0  # batches already done in self.epoch (mid-epoch resume)
        self.running = {"loss": 0.0, "dice": 0.0, "n": 0}
        self.best_val = math.inf
        self.best_epoch = -1
        self.es_best = math.inf
        self.es_wait = 0
        self.history: list[dict] = []
        self.swa = WeightAverage() if cfg.swa_from else None
        self.loss_fn = get_loss(cfg.loss)  # training and validation alike
        self.swa_metrics: dict[str, Any] | None = None
        if cfg.resume:
            self._resume()

    # ----------------------------------------------------------------------------- setup
    def _load_data(self) -> None:
        cfg = self.cfg
        samples = scan_dataset(cfg.data, patient_regex=cfg.patient_regex)
        if cfg.max_images is not None:
            if cfg.max_images < 2:
                raise UserError("--max-images must be at least 2")
            samples = _spread(samples, cfg.max_images)
        patients = [s.patient for s in samples]
        kfold = cfg.split == "kfold"
        self.split = make_split(cfg.split, patients, folds=cfg.folds if kfold else None,
                                fold=cfg.fold if kfold else None, seed=cfg.seed, val_fraction=cfg.val_fraction)
        train_idx, val_idx = self.split.indices(patients)
        if len(train_idx) == 0:
            raise UserError(f"split {self.split.name!r} leaves no training images in {cfg.data}")
        self.data_hash = dataset_hash(samples)
        data: LoadedData = load_samples(samples, cfg.size, progress=self.progress)
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.val_idx = np.asarray(val_idx, dtype=np.int64)
        train_images, train_masks = data.images[self.train_idx], data.masks[self.train_idx]
        extra_images, extra_masks = self._load_extra_train()
        if extra_images:
            train_images = np.concatenate([train_images, *extra_images])
            train_masks = np.concatenate([train_masks, *extra_masks])
        self.augment = make_augment(cfg.augment, cfg.speckle, cfg.compress)
        self.train_set = SegmentationDataset(train_images, train_masks, augment=self.augment, seed=cfg.seed)
        val_images, val_masks = data.images[self.val_idx], data.masks[self.val_idx]
        if cfg.crop is not None:
            from train.cascade import CropDataset, crop_around_truth

            self.train_set = CropDataset(self.train_set, cfg.crop, cfg.crop_jitter, seed=cfg.seed,
                                         negatives=cfg.crop_negatives, removed=cfg.nerve_removed)
            val_images, val_masks = crop_around_truth(val_images, val_masks, cfg.crop)
            log.info("refiner windows: %dx%d of the %dx%d frame, centred on the true nerve and shifted by up to "
                     "%.0f%% of half the window (validation: not shifted); %.0f%% negative windows (no nerve)",
                     *cfg.crop, *cfg.size, 100 * cfg.crop_jitter, 100 * cfg.crop_negatives)
        elif cfg.nerve_removed:
            from train.data import RemovedNerveDataset

            self.train_set = RemovedNerveDataset(self.train_set, cfg.nerve_removed, seed=cfg.seed)
        if cfg.nerve_removed:
            log.info("%.0f%% of the training items with the nerve removed (empty target)", 100 * cfg.nerve_removed)
        if cfg.consistency:
            from train.consistency import TwinViewDataset

            self.train_set = TwinViewDataset(self.train_set, seed=cfg.seed)
            log.info("temporal consistency: every item also under a new speckle pattern, their disagreement "
                     "weighted %g (twice the compute per batch)", cfg.consistency)
        self.val_images = torch.from_numpy(val_images)
        self.val_masks = torch.from_numpy(val_masks)
        self.n_images = len(samples)
        log.info("data %s: %d images of %d patients; split %s: %d train / %d validation images",
                 cfg.data, len(samples), len(set(patients)), self.split.name, len(train_idx), len(val_idx))
        if self.extra_train:
            log.info("extra training data: %d images from %d folder(s) added to the training side (%d training "
                     "images in all)", sum(e["images"] for e in self.extra_train), len(self.extra_train),
                     len(self.train_set))
        log.info("augmentation: %s", cfg.augment)
        if len(val_idx) == 0:
            log.warning("no validation images: the learning-rate schedule, early stopping and best.pt follow the "
                        "training loss instead")

    def _load_extra_train(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Read every ``extra_train`` folder with the main data's reader and preprocessing.

        Sets ``self.extra_train`` to the run-config records ``{"root", "hash", "images"}`` and returns
        the images and masks of each folder (all of them go to the training side).
        """
        cfg = self.cfg
        self.extra_train: list[dict[str, Any]] = []
        images: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for root in cfg.extra_train:
            if Path(root).resolve() == Path(cfg.data).resolve():
                raise UserError(f"--extra-train {root} is the --data folder itself: its validation images would "
                                "be trained on; give other folders (e.g. phantom frames from mn-synth --dataset)")
            samples = scan_dataset(root, patient_regex=cfg.patient_regex)
            extra = load_samples(samples, cfg.size, progress=self.progress)
            images.append(extra.images)
            masks.append(extra.masks)
            self.extra_train.append({"root": str(root), "hash": dataset_hash(samples), "images": len(samples)})
            log.info("extra training data %s: %d images of %d patients", root, len(samples),
                     len({s.patient for s in samples}))
        return images, masks

    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, **cfg.model_kwargs)
        if getattr(model, "has_vgg_encoder", False):
            if cfg.encoder_weights:
                load_vgg19_weights(model, cfg.encoder_weights)
            elif not cfg.resume:
                log.warning("%s has a VGG19 encoder and no --encoder-weights were given: random initialisation "
                            "(the paper fine-tuned ImageNet weights; expect lower accuracy)", cfg.model)
        elif cfg.encoder_weights:
            raise UserError(f"--encoder-weights only applies to networks with a VGG19 encoder, not {cfg.model}")
        if cfg.init and not cfg.resume:
            load_init_weights(model, cfg.init, cfg.init_part)
        return model

    def run_config(self) -> dict:
        """The JSON-able description stored in every checkpoint and in config.json."""
        crop = None
        if self.cfg.crop is not None:
            crop = {"size": list(self.cfg.crop), "frame_size": list(self.cfg.size), "jitter": self.cfg.crop_jitter,
                    "negatives": self.cfg.crop_negatives,
                    "note": "a cascade refiner: its input is a window of the preprocessed frame; join it with a "
                            "localiser by python -m train.cascade"}
        return {
            "model": {"name": self.cfg.model, "kwargs": dict(self.cfg.model_kwargs)},
            "preprocessing": preprocessing_config(self.cfg.size),
            "crop": crop,
            "data": {"root": str(self.cfg.data), "hash": self.data_hash, "images": self.n_images,
                     "extra_train": [dict(e) for e in self.extra_train]},
            "augmentation": augment_record(self.augment),
            "split": self.split.to_config(),
            "train": self.cfg.to_dict(),
            "world_size": self.dist.world,
            "precision": {"device": self.device.type, "mixed": bool(self.amp),
                          "dtype": str(self.amp_dtype).replace("torch.", "") if self.amp else "float32"},
            "code_version": code_version(),
            "metrics": {"best_epoch": self.best_epoch + 1, "val_loss": _finite(self.best_val),
                        "epochs_run": len(self.history),
                        "stopped_by_time_budget": bool(getattr(self, "stopped_by_budget", False)),
                        **({"val_dsc": self.history[self.best_epoch]["val_dsc"]}
                           if 0 <= self.best_epoch < len(self.history) else {})},
            **({"swa": self.swa_metrics} if self.swa_metrics else {}),
        }

    # ----------------------------------------------------------------------------- resume
    def _train_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "running": dict(self.running),
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "es_best": self.es_best,
            "es_wait": self.es_wait,
            "history": list(self.history),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "run_args": self.cfg.to_dict(),
            "swa": self.swa.state_dict() if self.swa is not None else None,
        }

    def _read_resume_checkpoint(self) -> dict:
        """Read and check ``last.pt`` before any data is loaded, so a wrong --resume fails at once."""
        path = self.out / "last.pt"
        payload = load_checkpoint(path)
        state = payload.get("train_state")
        if not state:
            raise CheckpointError(f"{path} has no training state to resume from (is it a best.pt copy?)")
        saved, mine = state.get("run_args", {}), self.cfg.to_dict()
        for key in ("model", "model_kwargs", "size", "batch_size", "split", "folds", "fold", "seed", "max_images",
                    "extra_train", "consistency", "speckle", "compress", "swa_from", "loss"):
            if key in saved and saved[key] != mine[key]:
                raise UserError(f"--resume: {path} was trained with {key}={saved[key]!r}, this run asks for "
                                f"{mine[key]!r}; use the same flags or a new --out")
        return payload

    def _resume(self) -> None:
        payload = self._resume_payload
        state = payload["train_state"]
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.running = dict(state["running"])
        self.best_val = float(state["best_val"])
        self.best_epoch = int(state["best_epoch"])
        self.es_best = float(state["es_best"])
        self.es_wait = int(state["es_wait"])
        self.history = list(state["history"])
        if self.swa is not None and state.get("swa"):
            self.swa.load_state_dict(state["swa"])
        self._resume_payload = None
        log.info("resumed from %s at epoch %d, batch %d", self.out / "last.pt", self.epoch + 1, self.step_in_epoch)

    def save_last(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out / "last.pt", self.model, self.run_config(), train_state=self._train_state())

    # ----------------------------------------------------------------------------- loop
    def _batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of one epoch, each as the indices this rank trains on."""
        n, bs = len(self.train_set), self.cfg.batch_size
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).numpy()
        batches = []
        for start in range(0, n, bs):
            parts = np.array_split(order[start:start + bs], self.dist.world)
            if any(len(p) == 0 for p in parts):
                continue  # a final batch smaller than the number of processes: dropped on every rank
            batches.append(parts[self.dist.rank])
        return batches

    def _batch_iter(self, batches: list[np.ndarray]) -> Any:
        """``(indices, images, masks)`` of each batch; with ``workers`` augmented in worker processes.

        Augmentation depends only on (seed, epoch, index), so workers change the speed, not the
        result. The workers are started once (persistent) and told the epoch with every index.
        """
        if self.cfg.workers == 0:
            for idx in batches:
                items = [self.train_set[int(i)] for i in idx]
                yield idx, torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
            return
        if self._loader is None:
            import cv2

            cv2.setNumThreads(1)  # augmentation runs in the workers; one OpenCV thread each
            self._sampler = _BatchList()
            self._loader = torch.utils.data.DataLoader(
                _EpochKeyed(self.train_set), batch_sampler=self._sampler, num_workers=self.cfg.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=True, worker_init_fn=_ignore_stop_signals)
        self._sampler.batches = [[(self.epoch, int(i)) for i in b] for b in batches]
        for idx, (x, y) in zip(batches, self._loader):
            yield idx, x, y

    def _train_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        y = y.to(self.device, non_blocking=True)
        twins = bool(self.cfg.consistency)
        x = self._net_input(x)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.net(x)
        if twins:
            from train.consistency import twin_loss

            loss, logits = twin_loss(logits, y, self.cfg.consistency, self.loss_fn)
        else:
            loss = self.loss_fn(logits.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            dice = soft_dice(torch.sigmoid(logits.float()), y)
        return float(loss.detach()), float(dice)

    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch as the network takes it (on the device; a twin-view item's two channels as two items)."""
        x = x.to(self.device, non_blocking=True)
        if self.cfg.consistency:  # each item's two views came as two channels (TwinViewDataset)
            x = torch.cat([x[:, :1], x[:, 1:]])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _save_swa(self) -> None:
        """``swa.pt``: the averaged weights, BatchNorm statistics measured again on one pass over the training
        items (augmented as the next epoch would be), validated like every epoch."""
        model = self.swa.averaged(self.model)
        bs, n = self.cfg.batch_size, len(self.train_set)
        seen = 0
        if has_batchnorm(model):
            self.train_set.set_epoch(self.epoch)

            def batches():  # type: ignore[no-untyped-def]
                for start in range(0, n, bs):
                    yield self._net_input(torch.stack([self.train_set[i][0] for i in range(start, min(n, start + bs))]))

            seen = recompute_batchnorm(model, batches(), {"device_type": self.device.type, "dtype": self.amp_dtype,
                                                          "enabled": self.amp})
        metrics = self.validate(model)
        self.swa_metrics = {"from_epoch": self.cfg.swa_from, "snapshots": self.swa.n,
                            "batchnorm_batches": seen, **{k: _finite(v) for k, v in metrics.items()}}
        save_checkpoint(self.out / "swa.pt", model, self.run_config())
        log.info("weights of %d epochs averaged (from epoch %d), BatchNorm measured on %d batches: val_loss %.4f, "
                 "val DSC %.4f -> %s", self.swa.n, self.cfg.swa_from, seen, metrics["val_loss"], metrics["val_dsc"],
                 self.out / "swa.pt")

    @torch.inference_mode()
    def validate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Validation loss and soft Dice over batches (Keras-style, weighted by batch size) and the
        paper's per-image hard DSC (prediction >= 0.5 vs mask > 0) of ``model`` (default: the one training)."""
        n = len(self.val_idx)
        if n == 0:
            return {"val_loss": math.nan, "val_soft_dice": math.nan, "val_dsc": math.nan}
        model = self.model if model is None else model
        model.eval()
        loss_sum = dice_sum = 0.0
        dscs = []
        for start in range(0, n, self.cfg.batch_size):
            x = self.val_images[start:start + self.cfg.batch_size].to(self.device)
            y = self.val_masks[start:start + self.cfg.batch_size].to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                logits = model(x)
            logits = logits.float()
            prob = torch.sigmoid(logits)
            loss_sum += float(self.loss_fn(logits, y)) * len(x)
            dice_sum += float(soft_dice(prob, y)) * len(x)
            p, t = (prob >= 0.5).cpu().numpy(), (y > 0).cpu().numpy()
            dscs.extend(dice_hard(p[i, 0], t[i, 0]) for i in range(len(x)))
        return {"val_loss": loss_sum / n, "val_soft_dice": dice_sum / n, "val_dsc": float(np.mean(dscs))}

    def fit(self) -> dict:
        """Train until ``epochs`` or early stop. Ctrl-C or SIGTERM finish the current batch, save
        ``last.pt`` and raise ``KeyboardInterrupt`` (a second Ctrl-C stops at once)."""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()
        self._stop_signal: int | None = None
        self.stopped_by_budget = False

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning("%s received: stopping after this batch", signal.Signals(signum).name)

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stopped = self._loop()
        finally:
            self._loader = None  # shuts the augmentation workers down
            for s, handler in previous.items():
                signal.signal(s, handler)
        if stopped:
            self.save_last()
            log.warning("stopped at epoch %d, batch %d: saved %s; continue with the same command and --resume",
                        self.epoch + 1, self.step_in_epoch, self.out / "last.pt")
            raise KeyboardInterrupt
        if self.swa is not None and self.swa.n and self.dist.is_main:
            self._save_swa()
        summary = self.run_config()
        if self.dist.is_main:
            self._write_config()
            log.info("done: best epoch %d, monitored loss %.5f, val DSC %s -> %s", self.best_epoch + 1,
                     self.best_val, summary["metrics"].get("val_dsc"), self.out / "best.pt")
        return summary

    def _write_config(self) -> None:
        """config.json: the run's description and its best metrics so far (rewritten every epoch)."""
        tmp = self.out / "config.json.tmp"
        tmp.write_text(json.dumps(self.run_config(), indent=2) + "\n")
        os.replace(tmp, self.out / "config.json")

    def _loop(self) -> bool:
        """Run the remaining epochs; True when a stop was requested."""
        cfg = self.cfg
        last_save = started = time.monotonic()
        while self.epoch < cfg.epochs:
            if self.es_wait >= cfg.early_stop:
                log.info("early stop: no improvement of the monitored loss for %d epochs", self.es_wait)
                break
            if cfg.max_minutes and self._over_budget(time.monotonic() - started > 60 * cfg.max_minutes):
                log.warning("time budget of %g minutes reached after epoch %d of %d: stopping here (best.pt and "
                            "last.pt are current; --resume --epochs N continues)", cfg.max_minutes, self.epoch,
                            cfg.epochs)
                self.stopped_by_budget = True
                break
            t0 = time.perf_counter()
            self.train_set.set_epoch(self.epoch)
            batches = self._batches(self.epoch)
            bar = tqdm(total=len(batches), initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       unit="batch", disable=not self.progress, leave=False, dynamic_ncols=True)
            with bar:
                for idx, x, y in self._batch_iter(batches[self.step_in_epoch:]):
                    loss, dice = self._train_batch(x, y)
                    self.running["loss"] += loss * len(idx)
                    self.running["dice"] += dice * len(idx)
                    self.running["n"] += len(idx)
                    self.step_in_epoch += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.running['loss'] / self.running['n']:.4f}")
                    if self._should_stop():
                        return True
                    if cfg.save_every_min and time.monotonic() - last_save > 60 * cfg.save_every_min:
                        self.save_last()
                        last_save = time.monotonic()
            self._end_epoch(time.perf_counter() - t0)
            last_save = time.monotonic()
            if self._should_stop():
                return True
        return False

    def _over_budget(self, over: bool) -> bool:
        """Rank 0's view of the time budget, shared by every rank (they stop after the same epoch)."""
        if self.dist.world > 1:
            t = torch.tensor([int(over)], device=self.device if self.device.type == "cuda" else "cpu")
            dist.broadcast(t, src=0)
            over = bool(t.item())
        return over

    def _should_stop(self) -> bool:
        """A stop request on any rank stops all of them at the same batch."""
        flag = self._stop_signal is not None
        if self.dist.world > 1:
            t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(t)
            flag = bool(t.item())
        return flag

    def _sync_buffers(self) -> None:
        """Every rank takes rank 0's BatchNorm running statistics (the ones best.pt / last.pt hold).

        DistributedDataParallel broadcasts rank 0's buffers at the start of each forward, so after the
        epoch's last batch every rank holds statistics updated by its own shard: validated as they were,
        the ranks' validation losses differed and so could their scheduler and early-stopping decisions
        (and a rank that stops early leaves the others waiting in the next all-reduce)."""
        if self.dist.world > 1:
            for buf in self.model.buffers():
                dist.broadcast(buf, src=0)

    def _end_epoch(self, seconds: float) -> None:
        n = max(self.running["n"], 1)
        row: dict[str, Any] = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                               "train_loss": self.running["loss"] / n, "train_soft_dice": self.running["dice"] / n}
        self._sync_buffers()
        row.update(self.validate())
        # blind: the validation images are measured, never used (the learning-rate schedule, the best epoch and the
        # early stop watch the training loss, as in a run that holds nothing out: mn-cv --as-final)
        monitored = row["val_loss"] if len(self.val_idx) and not self.cfg.blind else row["train_loss"]
        improved = monitored < self.best_val  # Keras ModelCheckpoint(save_best_only): strictly better
        row["best"] = int(improved)
        row["seconds"] = round(seconds, 2)
        self.history.append(row)
        if improved:
            self.best_val, self.best_epoch = monitored, self.epoch
        # Keras EarlyStopping(patience, min_delta=0)
        if monitored < self.es_best:
            self.es_best, self.es_wait = monitored, 0
        else:
            self.es_wait += 1
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()
        self.epoch += 1
        self.step_in_epoch = 0
        self.running = {"loss": 0.0, "dice": 0.0, "n": 0}
        if self.swa is not None and self.epoch >= self.cfg.swa_from:
            self.swa.update(self.model)
        if self.dist.is_main:
            if improved:
                save_checkpoint(self.out / "best.pt", self.model, self.run_config())
            self.save_last()
            write_history(self.out / "history.csv", self.history)
            plot_curves(self.out / "curves.png", self.history)
            self._write_config()
            log.info("epoch %d/%d  loss %.4f  val_loss %.4f  val DSC %.4f  lr %.1e  %.1fs%s", row["epoch"],
                     self.cfg.epochs, row["train_loss"], row["val_loss"], row["val_dsc"], row["lr"], seconds,
                     "  (best)" if improved else "")


def keras_plateau_scheduler(optimizer: torch.optim.Optimizer, factor: float = 0.1, patience: int = 10,
                            min_delta: float = 1e-4) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Keras ``ReduceLROnPlateau(factor, patience, min_delta)`` in torch terms.

    Keras reduces on the ``patience``-th epoch without an absolute improvement of ``min_delta``;
    torch reduces when ``num_bad_epochs > patience``, hence ``patience - 1`` (paper-code-spec §3.4).
    """
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=factor, patience=max(patience - 1, 0), threshold=min_delta,
        threshold_mode="abs")


class _BatchList:
    """A batch sampler whose batches the trainer sets before each pass (persistent workers)."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def __iter__(self) -> Any:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class _EpochKeyed(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]``: the item of ``index`` augmented as in ``epoch``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers are deaf to Ctrl-C / SIGTERM, which reach the whole process group: the
    training process finishes its batch, saves ``last.pt`` and shuts the workers down itself.
    (Their OpenCV runs one thread: the parent sets that before forking them, since calling
    ``cv2.setNumThreads`` in a forked child can hang on the parent's thread pool.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _spread(samples: list, k: int) -> list:
    """``k`` samples spread evenly over the sorted list (so small runs still see several patients)."""
    if k >= len(samples):
        return samples
    idx = np.linspace(0, len(samples) - 1, k).round().astype(int)
    return [samples[i] for i in sorted(set(idx.tolist()))]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k) for k in HISTORY_FIELDS})
    os.replace(tmp, path)


def plot_curves(path: Path, history: list[dict]) -> None:
    """Loss and Dice curves per epoch (train and validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [r["train_loss"] for r in history], label="train")
    ax1.plot(ep, [r["val_loss"] for r in history], label="validation")
    ax1.set_yscale("log")  # the first validation losses of a fresh BatchNorm network can be 1000x the rest
    ax1.set_xlabel("epoch"), ax1.set_ylabel("BCE + Dice loss (log)"), ax1.legend(), ax1.grid(alpha=0.3)
    ax2.plot(ep, [r["train_soft_dice"] for r in history], label="train soft Dice")
    ax2.plot(ep, [r["val_soft_dice"] for r in history], label="val soft Dice")
    ax2.plot(ep, [r["val_dsc"] for r in history], label="val DSC (per image, hard)")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("Dice"), ax2.set_ylim(0, 1), ax2.legend(), ax2.grid(alpha=0.3)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def load_init_weights(model: nn.Module, path: str, part: str | None = None) -> None:
    """Start ``model`` from the weights of checkpoint ``path`` (``mn-train --init``), e.g. to fine-tune.

    ``part`` picks one network of a composite checkpoint (``localiser`` / ``refiner`` of a cascade, or
    ``refiner.members.K``, member K of an ensemble refiner: the ``PART.`` keys without their prefix).
    Half-precision weights (bundled models) are widened to the model's dtype. Every key must match the network
    being trained.

    Raises:
        UserError: an unreadable file, a missing part, or weights of another network.
    """
    payload = load_checkpoint(path)
    state = payload["state_dict"]
    if part:
        prefix = part + "."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise UserError(f"--init {path} holds no '{part}' network (no '{prefix}*' weights); "
                            "--init-part names a part of a cascade: localiser or refiner, or a member of an "
                            "ensemble part: refiner.members.0, refiner.members.1, ...")
    target = model.state_dict()
    state = {k: v.to(target[k].dtype) if k in target and v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"--init {path}{' --init-part ' + part if part else ''} does not fit the network being "
                        f"trained ({first}); give a checkpoint of the same --model and --width") from None
    log.info("initialised from %s%s", path, f" ({part})" if part else "")

