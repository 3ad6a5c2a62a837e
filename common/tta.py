"""The names of the cascade refiner's test-time augmentations (``--tta``), here so that a command can offer them
without loading numpy; :mod:`train.window` implements them (:func:`train.window.flip_average`)."""

TTA_MODES: tuple[str, ...] = ("none", "hflip")
"""``none``, or ``hflip``: every window is refined as it is and mirrored left-right, and the two probability maps
(the mirror's mirrored back) are averaged. The refiners are trained with left-right flips (``--augment paper`` and
above), so both views are ones they know."""
