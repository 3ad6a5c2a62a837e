"""Localise-then-refine: the DL-UNet idea (a second network looks again where the first one
found the nerve) made cheap enough for a 2-core CPU.

A cascade takes the usual preprocessed frame (``[N,1,H,W]`` at the frame size, 384x288 by
default) and

1. runs a *localiser* (``lunet-coarse``: the frame pooled 4x4, a narrow L-UNet, upsampled
   back) on the whole frame;
2. takes the centre of the largest component of its mask (:func:`find_centre`);
3. cuts a fixed window (``crop``, e.g. 128x96 of the 384x288 frame, i.e. 202x156 pixels of a
   606x468 ultrasound image) around that centre, clamped inside the frame (:func:`crop_box`);
4. runs a *refiner* (an L-UNet) on the window at the frame's full resolution and pastes its
   logits back; outside the window the output is background.

So a cascade is an ordinary model to the rest of mn-seg: frame in, full-size logits out, and
mn-eval's paper protocol scores it at the frame size, like the paper's networks at 384x288.
The refiner is trained by ``mn-train --crop WxH`` on windows around the true nerve, shifted at
random by up to ``crop_jitter`` of the window (the localiser's error); the localiser is trained
as any network. :func:`build_cascade_checkpoint` (``python -m train.cascade``) joins the two
checkpoints into one.

The pieces live in their own modules, and this one re-exports them (``from train.cascade import
...`` keeps working):

- :mod:`train.window`: the window geometry in numpy (torch-free), shared with ``engines.cascade``;
- :mod:`train.crops`: the refiner's training and validation windows;
- :mod:`train.cascade_net`: :class:`CascadeNet`, the PyTorch module (a registered composite);
- here: joining two trained checkpoints into one cascade checkpoint, and its command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from train.cascade_net import CASCADE_NAME, CascadeNet, check_crop
from train.crops import NEGATIVE_MAX, NEGATIVE_TRIES, CropDataset, crop_around_truth, negative_box
from train.errors import UserError
from train.window import (
    BACKGROUND_LOGIT,
    CANDIDATE_OVERLAP,
    CENTRE_STEP,
    TTA_MODES,
    candidate_boxes,
    candidate_masses,
    choose_candidates,
    crop_box,
    find_centre,
    find_centres,
    mask_centre,
    paste,
    window_boxes,
    window_mass,
)

log = logging.getLogger(__name__)

__all__ = [
    "BACKGROUND_LOGIT", "CANDIDATE_OVERLAP", "CASCADE_NAME", "CENTRE_STEP", "NEGATIVE_MAX", "NEGATIVE_TRIES",
    "TTA_MODES", "CascadeNet", "CropDataset", "build_cascade_checkpoint", "candidate_boxes", "candidate_masses",
    "check_crop", "choose_candidates", "crop_around_truth", "crop_box", "find_centre", "find_centres", "main",
    "MIRROR_MODES", "ensemble_payload", "mask_centre", "negative_box", "part_payload", "paste", "set_mirror",
    "window_boxes", "window_mass",
]


def part_payload(path: str, part: str) -> dict:
    """The checkpoint ``path`` (``{"config", "state_dict"}``), or, when it is a cascade, its ``part``
    (``"localiser"`` or ``"refiner"``): that network's weights (float32) and the config it was trained with,
    as recorded in the cascade's ``parts`` when it was built. So one part of a cascade can be swapped.

    Raises:
        UserError: a cascade without that record (one built before it was kept).
    """
    from train.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    if payload["config"]["model"]["name"] != CASCADE_NAME:
        return payload
    record = (payload["config"].get("parts") or {}).get(part) or {}
    if not isinstance(record.get("config"), dict):
        raise UserError(f"{path} is a cascade without the training config of its {part}; give the {part}'s own "
                        "checkpoint (mn-train's best.pt)")
    prefix = part + "."
    weights = {k[len(prefix):]: (v.float() if v.is_floating_point() else v)
               for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    return {"config": record["config"], "state_dict": weights,
            "source": f"the {part} of {path}" + (f" ({record['checkpoint']})" if record.get("checkpoint") else "")}


def ensemble_payload(paths: Sequence[str], part: str = "refiner") -> dict:
    """The checkpoints ``paths`` (or those cascades' ``part``, :func:`part_payload`) as one
    :class:`train.ensemble_net.MeanEnsemble` payload (``{"config", "state_dict", "source"}``); one path: its payload.
    A refiner ensemble averages windows, a localiser ensemble whole frames: the same mean of probabilities.

    The config is the first member's with the ensemble as its model and every member's own config under
    ``members``.

    Raises:
        UserError: members trained on different windows, frames, input sizes or preprocessing.
    """
    from train.ensemble_net import ENSEMBLE_NAME

    payloads = [part_payload(p, part) for p in paths]
    if len(payloads) == 1:
        return payloads[0]
    first = payloads[0]["config"]
    for path, payload in zip(paths[1:], payloads[1:]):
        c = payload["config"]
        for name, get in (("window", lambda cfg: (cfg.get("crop") or {}).get("size")),
                          ("frame", lambda cfg: (cfg.get("crop") or {}).get("frame_size")),
                          ("input size", lambda cfg: list((cfg.get("preprocessing") or {}).get("size") or [])),
                          ("preprocessing", lambda cfg: (cfg.get("preprocessing") or {}).get("id"))):
            if get(c) != get(first):
                raise UserError(f"{path} was trained with another {name} than {paths[0]} ({get(c)} against "
                                f"{get(first)}); an ensemble's networks must take the same input")
    state = {f"members.{i}.{k}": v for i, p in enumerate(payloads) for k, v in p["state_dict"].items()}
    members = [p["config"]["model"] for p in payloads]
    config = {**first, "model": {"name": ENSEMBLE_NAME, "kwargs": {"members": members}},
              "members": [p["config"] for p in payloads]}
    return {"config": config, "state_dict": state,
            "source": " + ".join(p.get("source", str(path)) for p, path in zip(payloads, paths))}


MIRROR_MODES = ("none", "alternate")
"""``--mirror`` (``--localiser-mirror``): an ensemble refiner's (localiser's) members all see the window (frame)
(``none``), or every second one its mirror image (``alternate``: :class:`train.ensemble_net.MeanEnsemble`'s
``mirrored``)."""


def set_mirror(model: dict, mirror: str, part: str = "refiner") -> dict:
    """The ``part``'s (refiner's or localiser's) model record with its ensemble members' ``mirrored`` flags set by
    ``mirror`` (:data:`MIRROR_MODES`; ``none`` drops them).

    Raises:
        UserError: an unknown mode, or ``alternate`` for a part that is not an ensemble.
    """
    from train.ensemble_net import ENSEMBLE_NAME

    flag = "--mirror" if part == "refiner" else f"--{part}-mirror"
    if mirror not in MIRROR_MODES:
        raise UserError(f"unknown {flag} {mirror!r}; use one of {', '.join(MIRROR_MODES)}")
    if model.get("name") != ENSEMBLE_NAME:
        if mirror == "none":
            return model
        raise UserError(f"{flag} alternate needs an ensemble {part}: give --{part} twice or more, or a cascade "
                        f"whose {part} is one")
    kwargs = {k: v for k, v in (model.get("kwargs") or {}).items() if k != "mirrored"}
    if mirror == "alternate":
        kwargs["mirrored"] = [i % 2 == 1 for i in range(len(kwargs.get("members") or []))]
    return {**model, "kwargs": kwargs}


def build_cascade_checkpoint(localiser_ckpt: str | Sequence[str], refiner_ckpt: str | Sequence[str], out: str,
                             candidates: int = 1, tta: str = "none", mirror: str | None = None,
                             localiser_mirror: str | None = None) -> dict:
    """Write one checkpoint holding a trained localiser and refiner; returns its config.

    ``refiner_ckpt``: one checkpoint, or several trained alike (same window and preprocessing), which
    become one :class:`train.ensemble_net.MeanEnsemble` refiner (the mean of their probabilities).
    ``localiser_ckpt`` likewise: several localisers (same frame size and preprocessing) become one ensemble
    localiser, whose mean probability places the window (each member's time).

    ``candidates`` and ``tta`` (the refiner's test-time augmentation, :data:`train.window.TTA_MODES`) are
    recorded in the config's model kwargs when not the defaults, so every loader of the file runs it so.
    ``mirror`` (:data:`MIRROR_MODES`) sets an ensemble refiner's mirrored members (:func:`set_mirror`); ``None`` keeps
    what the refiner's source had; ``localiser_mirror`` the same for an ensemble localiser.

    The localiser must be a full-frame network and the refiner a ``mn-train --crop`` run at
    the same frame size and preprocessing. Either may be a cascade checkpoint, whose part of that
    name is taken (:func:`part_payload`): a cascade with one part replaced.
    """
    from train.checkpoint import code_version, save_checkpoint

    refiners = [refiner_ckpt] if isinstance(refiner_ckpt, str) else list(refiner_ckpt)
    localisers = [localiser_ckpt] if isinstance(localiser_ckpt, str) else list(localiser_ckpt)
    loc, ref = ensemble_payload(localisers, "localiser"), ensemble_payload(refiners, "refiner")
    lc, rc = loc["config"], ref["config"]
    if mirror is not None:
        rc = {**rc, "model": set_mirror(rc["model"], mirror)}
    if localiser_mirror is not None:
        lc = {**lc, "model": set_mirror(lc["model"], localiser_mirror, "localiser")}
    if lc.get("crop"):
        raise UserError(f"{localisers[0]} is a --crop (refiner) run; the localiser must see whole frames")
    if not rc.get("crop"):
        raise UserError(f"{refiners[0]} was not trained with --crop WxH; train the refiner with mn-train --crop")
    frame = rc["crop"]["frame_size"]
    if list(lc["preprocessing"]["size"]) != list(frame):
        raise UserError(f"frame sizes differ: localiser {lc['preprocessing']['size']}, refiner windows of "
                        f"{frame} frames; train both with the same --size")
    if lc["preprocessing"].get("id") != rc["preprocessing"].get("id"):
        raise UserError("the two checkpoints use different preprocessing; train both with this mn-seg")
    net = CascadeNet(localiser=lc["model"], refiner=rc["model"], crop=rc["crop"]["size"], candidates=candidates,
                     tta=tta)
    net.localiser.load_state_dict(loc["state_dict"])
    net.refiner.load_state_dict(ref["state_dict"])
    config = {
        "model": {"name": "cascade", "kwargs": {"localiser": lc["model"], "refiner": rc["model"],
                                                "crop": list(rc["crop"]["size"]),
                                                **({"candidates": int(candidates)} if candidates != 1 else {}),
                                                **({"tta": tta} if tta != "none" else {})}},
        "preprocessing": lc["preprocessing"],
        "parts": {"localiser": {"checkpoint": loc.get("source", " + ".join(localisers)), "config": lc},
                  "refiner": {"checkpoint": ref.get("source", " + ".join(refiners)), "config": rc}},
        "code_version": code_version(),
        "metrics": {},
    }
    save_checkpoint(out, net, config)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    from train.cli_util import add_logging_args, setup_logging

    p = argparse.ArgumentParser(prog="python -m train.cascade",
                                description="Join a localiser checkpoint (whole frames) and a refiner checkpoint "
                                            "(mn-train --crop) into one cascade checkpoint.")
    p.add_argument("--localiser", required=True, action="append",
                   help="best.pt of the localiser (e.g. mn-train --model lunet-coarse), or a cascade whose localiser "
                        "to take; given more than once, the localisers' mean probability places the window (an "
                        "ensemble, each member's time)")
    p.add_argument("--refiner", required=True, action="append",
                   help="best.pt of the refiner (mn-train --crop WxH), or a cascade whose refiner to take; given more "
                        "than once, the refiners' mean probability (an ensemble, each member's time)")
    p.add_argument("--out", required=True, help="cascade checkpoint to write (.pt)")
    p.add_argument("--candidates", type=int, default=1,
                   help="windows refined per frame: the K largest localiser components; the one with the largest "
                        "refined probability mass wins (1: the largest component only)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="the refiner's test-time augmentation: hflip refines each window and its left-right mirror "
                        "and averages the two probability maps (twice the refiner's work)")
    p.add_argument("--mirror", choices=MIRROR_MODES, default=None,
                   help="an ensemble refiner: alternate = every second member sees the window mirrored left to right "
                        "(its probabilities flipped back before the mean), a test-time flip at no extra cost; none = "
                        "every member the window (default: as the refiner's source)")
    p.add_argument("--localiser-mirror", choices=MIRROR_MODES, default=None,
                   help="an ensemble localiser: alternate = every second member sees the frame mirrored left to right "
                        "(the same localiser given twice so is its test-time flip); none = every member the frame "
                        "(default: as the localiser's source)")
    add_logging_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    config = build_cascade_checkpoint(args.localiser, args.refiner, args.out, candidates=args.candidates,
                                      tta=args.tta, mirror=args.mirror, localiser_mirror=args.localiser_mirror)
    kw = config["model"]["kwargs"]
    log.info("wrote %s: %s -> %s on %dx%d windows", args.out, kw["localiser"]["name"], kw["refiner"]["name"],
             *kw["crop"])
    return 0


if __name__ == "__main__":
    from train.errors import run_cli

    sys.exit(run_cli("train.cascade", main))
