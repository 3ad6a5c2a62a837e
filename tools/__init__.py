"""Maintainers' tools that live beside the product, not in it: they may use every package (train's
data and evaluation code included) and are not installed with mn-seg. Run them from a checkout,
e.g. ``python -m tools.bundle``."""
