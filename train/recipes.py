"""Training recipes by name: what ``mn-cv`` trains in every fold (and ``mn-cv --final`` on all images).

A recipe is one network (one ``mn-train`` run) or a cascade (a localiser run and a refiner run,
joined by :func:`train.cascade.build_cascade_checkpoint`). Each part is a list of ``mn-train``
arguments; ``{extra}`` stands for the ``--extra-train`` folders given to ``mn-cv`` (phantom
frames), and a part that uses it refuses to run without them. The shipped models' recipes are
here, so cross-validation measures exactly what ships.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from train.errors import UserError

EXTRA = "{extra}"
"""Placeholder for the ``--extra-train`` folders in a part's arguments."""


def _is_part(part: str, kind: str) -> bool:
    """Whether ``part`` is ``kind`` or ``kind-N`` (N >= 2), the N-th member of an ensemble of that kind."""
    if part == kind:
        return True
    head, _, number = part.partition("-")
    return head == kind and number.isdigit() and int(number) >= 2


def is_refiner_part(part: str) -> bool:
    """Whether ``part`` is one of a cascade's refiners: ``refiner``, or ``refiner-N`` (N >= 2) of an ensemble."""
    return _is_part(part, "refiner")


def is_localiser_part(part: str) -> bool:
    """Whether ``part`` is one of a cascade's localisers: ``localiser``, or ``localiser-N`` (N >= 2) of an ensemble
    localiser (their mean probability places the window)."""
    return _is_part(part, "localiser")


def shared_part_name(part: str) -> str:
    """The part name under which another recipe's ``mn-cv`` folder holds the same training: an ensemble's
    ``refiner-N`` is the ``refiner`` of the single-refiner recipe it comes from, ``localiser-N`` likewise the
    ``localiser`` of another recipe (``mn-cv --share``)."""
    if is_refiner_part(part):
        return "refiner"
    return "localiser" if is_localiser_part(part) else part


@dataclass(frozen=True)
class Recipe:
    """One trainable variant.

    Attributes:
        name: the recipe's name (``mn-cv --recipe``).
        description: one line for ``--list-recipes`` and the reports.
        parts: ``{part name: mn-train arguments}``; ``"model"`` for a single network, or
            ``"localiser"`` and ``"refiner"`` for a cascade, with ``"refiner-2"``, ``"refiner-3"``, ... for a
            cascade whose refiner is the mean of several networks (:func:`is_refiner_part`), and ``"localiser-2"``,
            ... for one whose localiser is (:func:`is_localiser_part`).
        epochs: ``{part: epochs}`` of a from-scratch run (also in the arguments; kept here so
            ``--epochs`` can override them and ``--final`` can replace them by the folds' median
            best epoch).
        made_by: for a recipe whose models are made from another recipe's by a further step that ``mn-cv`` does
            not run (e.g. a fine-tune by a script), that step's command: ``mn-cv`` aggregates and reports the
            folds it made (``--aggregate``) and refuses to train it (:func:`check_trainable`).
        mirror: an ensemble's join (``python -m train.cascade --mirror``): ``"alternate"`` shows every second refiner
            the window's mirror image; ``"none"`` (default) every refiner the window.
        localiser_mirror: the same for an ensemble localiser (``--localiser-mirror``): the frame's mirror image.
    """

    name: str
    description: str
    parts: Mapping[str, tuple[str, ...]]
    epochs: Mapping[str, int] = field(default_factory=dict)
    made_by: str | None = None
    mirror: str = "none"
    localiser_mirror: str = "none"

    @property
    def is_cascade(self) -> bool:
        return "localiser" in self.parts and "refiner" in self.parts and all(
            is_localiser_part(p) or is_refiner_part(p) for p in self.parts)

    @property
    def localiser_parts(self) -> list[str]:
        """The localiser parts in order (``["localiser"]``, or ``["localiser", "localiser-2", ...]``)."""
        return [p for p in self.parts if is_localiser_part(p)]

    @property
    def refiner_parts(self) -> list[str]:
        """The refiner parts in order (``["refiner"]``, or ``["refiner", "refiner-2", ...]`` for an ensemble)."""
        return [p for p in self.parts if is_refiner_part(p)]

    @property
    def needs_extra(self) -> bool:
        return any(EXTRA in args for args in self.parts.values())


def _cascade(name: str, description: str, augment: str, *, negatives: float = 0.0, removed: float = 0.0,
             refiner_lr: str = "1e-3", phantom: bool = True, epochs: int = 150) -> Recipe:
    extra = ("--extra-train", EXTRA) if phantom else ()
    loc = ("--model", "lunet-coarse", "--lr", "1e-2", "--augment", augment, *extra)
    ref = ("--model", "lunet", "--crop", "128x96", "--lr", refiner_lr, "--augment", augment, *extra)
    if negatives:
        ref = (*ref, "--crop-negatives", str(negatives))
    if removed:
        loc = (*loc, "--nerve-removed", str(removed))
        ref = (*ref, "--nerve-removed", str(removed))
    return Recipe(name, description, {"localiser": loc, "refiner": ref}, {"localiser": epochs, "refiner": epochs})


_STRONG = _cascade("cascade-strong-ph", "mn-realtime's recipe: lunet-coarse + L-UNet 128x96 refiner (lr 1e-3), "
                   "strong augmentation, phantom frames, 150 epochs", "strong")
_ACQ = _cascade("cascade-acq", "the cascade with acquisition augmentation (zoom, field of view, aspect, gain, codec), "
                "15 % frames / windows with the nerve painted over and 15 % refiner windows away from the nerve "
                "(empty targets), phantom frames, 150 epochs", "acquisition", negatives=0.15, removed=0.15)

# the compression step's range (the nerve down to 0.75 of its height) is the animate: clips' peak, fixed before
# any image was measured with it; nothing here was tuned on validation images
_CMP = Recipe("cascade-strong-ph-cmp", "mn-realtime's recipe with a refiner that has seen the nerve compressed "
              "(--augment compress: strong plus, in half the windows, the nerve flattened to 0.75-1 of its height "
              "about its centroid); the localiser is cascade-strong-ph's, so mn-cv --share CV-STRONG-PH copies it",
              {"localiser": _STRONG.parts["localiser"],
               "refiner": tuple("compress" if a == "strong" else a for a in _STRONG.parts["refiner"])},
              dict(_STRONG.epochs))

# the two refiner changes above together; chosen after an exploratory fine-tune of mn-realtime's refiner on the
# paper split (README, "Compression and temporal consistency together"), which only cross-validation can confirm
_CMP_TC = Recipe("cascade-strong-ph-cmp-tc", "cascade-strong-ph-cmp's refiner also trained for temporal consistency "
                 "(--augment compress --consistency 10: twice a refiner's compute); the localiser is "
                 "cascade-strong-ph's, so mn-cv --share CV-STRONG-PH copies it",
                 {"localiser": _STRONG.parts["localiser"], "refiner": (*_CMP.parts["refiner"], "--consistency", "10")},
                 dict(_STRONG.epochs))

# speckle strength drawn from 0-0.6 (the fixed 0.15 is the range's quarter): the robustness report's speckle
# 0.15 / 0.3 (std 0.15 / 0.3 of the native image) shrank the outlines by 5 / 23 points of area, the animated
# clips' (fresh speckle every frame) by 2 points against each image's still
_SPK = Recipe("cascade-acqloc-cmp-spk", "cascade-acqloc-cmp with its refiner trained on speckle of every strength "
              "from none to four times the fixed one (--speckle 0 0.6): the localiser is cascade-acqloc-cmp's, so "
              "mn-cv --share CV-ACQLOC-CMP copies it",
              {"localiser": _ACQ.parts["localiser"], "refiner": (*_CMP.parts["refiner"], "--speckle", "0", "0.6")},
              {"localiser": _ACQ.epochs["localiser"], "refiner": _CMP.epochs["refiner"]})

# the mean of the two refiners of cascade-acqloc-cmp and -spk (python -m train.cascade --refiner A --refiner B): each
# fold's members were trained the final's way for their own recipes, so with --share CV-ACQLOC-CMP CV-SPK it trains
# nothing
_ENS = Recipe("cascade-acqloc-cmp-ens", "cascade-acqloc-cmp's localiser and the mean of two refiners' probabilities: "
              "cascade-acqloc-cmp's (compress) and cascade-acqloc-cmp-spk's (speckle range), twice a refiner's time; "
              "mn-cv --share CV-ACQLOC-CMP CV-SPK copies all three parts",
              {"localiser": _ACQ.parts["localiser"], "refiner": _CMP.parts["refiner"],
               "refiner-2": _SPK.parts["refiner"]},
              {"localiser": _ACQ.epochs["localiser"], "refiner": _CMP.epochs["refiner"],
               "refiner-2": _SPK.epochs["refiner"]})

# the script that makes the stronger-compression refiners of cascade-acqloc-cmp-ens (fine-tuned, or from the start)
_COMPRESS_SCRIPT = ("benchmarks/compress_finetune.sh DATA PHANTOM CV-ACQLOC-CMP-ENS OUT [FOLD ... | final] (it also "
                    "joins each fold's model and evaluates it on the fold's patients, as mn-cv does)")

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    _STRONG,
    _ACQ,
    Recipe("cascade-acqloc", "mn-realtime's recipe with cascade-acq's localiser (acquisition augmentation, 15 % "
           "frames with the nerve painted over): the refiner is trained exactly as cascade-strong-ph's, so "
           "mn-cv --share CV-STRONG-PH copies it instead of training it again",
           {"localiser": _ACQ.parts["localiser"], "refiner": _STRONG.parts["refiner"]},
           {"localiser": _ACQ.epochs["localiser"], "refiner": _STRONG.epochs["refiner"]}),
    # weight 10: the disagreement of fold 0's strong-ph refiner under two speckle patterns (0.0023 on its validation
    # windows) then weighs about a tenth of its supervised loss (0.17); a scale, not a tuned value
    Recipe("cascade-strong-ph-tc", "mn-realtime's recipe with a temporally consistent refiner (issue 18): each window "
           "also under a new speckle pattern, their outlines' disagreement in the loss (--consistency 10); the "
           "localiser is cascade-strong-ph's, so mn-cv --share CV-STRONG-PH copies it instead of training it again",
           {"localiser": _STRONG.parts["localiser"], "refiner": (*_STRONG.parts["refiner"], "--consistency", "10")},
           dict(_STRONG.epochs)),
    _CMP,
    _CMP_TC,
    # ... with its windows placed up to twice as far off the nerve (32 px across instead of 16 at 384x288): the
    # exploratory fine-tune (README, same section) outlined the wide nerve the tracked window swung on steadily
    Recipe("cascade-strong-ph-cmp-tcw", "cascade-strong-ph-cmp-tc's refiner with its training windows up to 32 px "
           "off the nerve (--crop-jitter 0.5); the localiser is cascade-strong-ph's, so mn-cv --share CV-STRONG-PH "
           "copies it",
           {"localiser": _STRONG.parts["localiser"], "refiner": (*_CMP_TC.parts["refiner"], "--crop-jitter", "0.5")},
           dict(_STRONG.epochs)),
    # both changes the single-part recipes test, each part trained exactly as there: with --share CV-ACQLOC CV-CMP
    # it trains nothing, only joins and evaluates (its folds cost minutes where the others cost an hour)
    Recipe("cascade-acqloc-cmp", "cascade-acq's localiser and cascade-strong-ph-cmp's refiner: mn-cv --share "
           "CV-ACQLOC CV-CMP copies both parts (nothing trained again)",
           {"localiser": _ACQ.parts["localiser"], "refiner": _CMP.parts["refiner"]},
           {"localiser": _ACQ.epochs["localiser"], "refiner": _CMP.epochs["refiner"]}),
    _SPK,
    # ... and 15 % of its windows away from the nerve with empty targets (cascade-acq's --crop-negatives): the
    # speckle-range refiner outlined something beside the nerve on nerve-free clip frames three times as often
    Recipe("cascade-acqloc-cmp-spk-neg", "cascade-acqloc-cmp-spk with 15 % of its refiner's windows away from the "
           "nerve, empty targets (--crop-negatives 0.15): the localiser is cascade-acqloc-cmp's, so mn-cv --share "
           "CV-ACQLOC-CMP copies it",
           {"localiser": _ACQ.parts["localiser"],
            "refiner": (*_SPK.parts["refiner"], "--crop-negatives", "0.15")},
           {"localiser": _ACQ.epochs["localiser"], "refiner": _CMP.epochs["refiner"]}),
    _ENS,
    # both refiners of the shipped ensemble trained on for 24 epochs with a stronger compression (the animate:
    # clips' peak, 0.75, inside the range instead of at its edge; 70 % of the windows): the fine-tune runs outside
    # mn-cv, from each fold's (and the final's) parts of cascade-acqloc-cmp-ens
    Recipe("cascade-acqloc-cmp-ens-cft", "cascade-acqloc-cmp-ens with both refiners fine-tuned 24 epochs (lr 1e-4, "
           "1e-5 after 18) on stronger compression (mn-train --compress 0.65 0.7: 70 % of the windows, the nerve down "
           "to 0.65 of its height), from that recipe's parts", dict(_ENS.parts), dict(_ENS.epochs),
           made_by=_COMPRESS_SCRIPT),
    # ... and trained so from the start (the fine-tune lost stills' Dice on two folds, and so did a control fine-tune
    # without the stronger compression): each fold's two refiners trained again with the schedule its as-final parts
    # of cascade-acqloc-cmp-ens had (104 epochs, drops after 84 and 94), the localiser kept
    Recipe("cascade-acqloc-cmp-ens-c65", "cascade-acqloc-cmp-ens with both refiners trained from the start on "
           "stronger compression (mn-train --compress 0.65 0.7), each with its as-final part's schedule; the "
           "localiser is that recipe's",
           {"localiser": _ENS.parts["localiser"],
            **{p: (*_ENS.parts[p], "--compress", "0.65", "0.7") for p in _ENS.refiner_parts}},
           dict(_ENS.epochs), made_by="FROM=scratch " + _COMPRESS_SCRIPT),
    # the same networks, the second refiner shown the window's mirror image (a test-time flip at no extra cost):
    # nothing to train, mn-cv --share CV-ACQLOC-CMP-ENS joins the parts so
    Recipe("cascade-acqloc-cmp-ens-mir", "cascade-acqloc-cmp-ens with its second refiner shown the window's mirror "
           "image (python -m train.cascade --mirror alternate): the same networks and time; mn-cv --share "
           "CV-ACQLOC-CMP-ENS copies its parts", dict(_ENS.parts), dict(_ENS.epochs), mirror="alternate"),
    # ... with its localiser trained again with the nerve compressed too (as the compress refiner saw it): under
    # mn-robustness's compress 0.75 the shipped localiser put 50 of 202 windows off the nerve (11 clean), 11 of them
    # on another structure, where a window centred on the nerve scores DSC 0.907 against 0.823
    Recipe("cascade-acqcmploc-ens-mir", "cascade-acqloc-cmp-ens-mir with its localiser trained again from the start "
           "with the nerve compressed too (mn-train --augment acquisition --compress 0.75 0.5), its as-final "
           "schedule; the refiners are that recipe's",
           {"localiser": (*_ENS.parts["localiser"], "--compress", "0.75", "0.5"),
            **{p: _ENS.parts[p] for p in _ENS.refiner_parts}},
           dict(_ENS.epochs), mirror="alternate",
           made_by="PARTS=localiser FROM=scratch COMPRESS='0.75 0.5' MIRROR=alternate " + _COMPRESS_SCRIPT),
    # the two localisers above averaged (python -m train.cascade --localiser A --localiser B): on two folds trained
    # again on an AMD VM it kept the compress localiser's windows on compressed nerves and the acquisition
    # localiser's clean stills (benchmarks/results/exploratory-localiser-ensemble-vm-2026-12-06/)
    Recipe("cascade-2loc-cmp-ens-mir", "cascade-acqloc-cmp-ens-mir with a second localiser, cascade-acqcmploc-ens-"
           "mir's (trained with the nerve compressed too): the mean of the two localisers' probabilities places the "
           "window (one localiser's time more when the window is not tracked); mn-cv --share "
           "CV-ACQLOC-CMP-ENS-MIR CV-ACQCMPLOC-ENS-MIR copies every part",
           {"localiser": _ENS.parts["localiser"],
            "localiser-2": (*_ENS.parts["localiser"], "--compress", "0.75", "0.5"),
            **{p: _ENS.parts[p] for p in _ENS.refiner_parts}},
           {**_ENS.epochs, "localiser-2": _ENS.epochs["localiser"]}, mirror="alternate"),
    Recipe("dlunet-paper", "mn-dlunet's recipe (shipped as mn-accurate until 2026-12-01): DL-UNet (random VGG19), "
           "the paper's augmentation, 100 epochs",
           {"model": ("--model", "dlunet", "--augment", "paper")}, {"model": 100}),
    Recipe("dlunet-acq", "DL-UNet with acquisition augmentation, 100 epochs",
           {"model": ("--model", "dlunet", "--augment", "acquisition")}, {"model": 100}),
)}
"""Every recipe by name."""


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        UserError: an unknown name; the message lists the known ones.
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)} "
                        "(mn-cv --list-recipes describes them)") from None


def check_trainable(recipe: Recipe) -> None:
    """Refuse to train a recipe whose models another step makes (:attr:`Recipe.made_by`), saying which.

    Raises:
        UserError: ``recipe.made_by`` is set.
    """
    if recipe.made_by:
        raise UserError(f"recipe {recipe.name}'s models are made by a step mn-cv does not run: {recipe.made_by}; "
                        f"mn-cv --recipe {recipe.name} --out OUT --aggregate [--as-final] summarises its folds")


def part_args(recipe: Recipe, part: str, *, extra: list[str], epochs: int) -> list[str]:
    """The ``mn-train`` arguments of ``part`` with ``{extra}`` expanded and ``--epochs``.

    Raises:
        UserError: the part needs ``--extra-train`` folders and none were given.
    """
    args: list[str] = []
    for arg in recipe.parts[part]:
        if arg == EXTRA:
            if not extra:
                raise UserError(f"recipe {recipe.name} trains with extra frames: give --extra-train DIR (e.g. phantom "
                                "frames from mn-synth --phantom --dataset DIR --frames 40 --every 12 --seed 1)")
            args.extend(extra)
        else:
            args.append(arg)
    return [*args, "--epochs", str(int(epochs))]
