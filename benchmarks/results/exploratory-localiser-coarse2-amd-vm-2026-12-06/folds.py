"""What the two diagnosis scripts of this folder share: the data, each fold's validation images, Dice."""

import numpy as np

from train.data import scan_dataset
from train.splits import make_split

D = "../shared/data/median-nerve/"


def fold_stems(f: int, data: str = D) -> list[str]:
    """The validation stems of fold f (5 folds, seed 42: mn-cv's)."""
    s = scan_dataset(data)
    pats = [x.patient for x in s]
    _, va = make_split("kfold", pats, folds=5, fold=f, seed=42).indices(pats)
    return [s[i].stem for i in va]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, (a.sum() + b.sum())))
