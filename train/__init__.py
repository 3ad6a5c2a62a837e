"""Training side of mn-seg: data -> trained checkpoint.

Dataset reading, the single preprocessing function, patient splits, augmentation,
the paper's networks, losses, metrics, the trainer (``mn-train``) and the
evaluation (``mn-eval``). Nothing here imports ``engines`` or ``realtime``.
"""
