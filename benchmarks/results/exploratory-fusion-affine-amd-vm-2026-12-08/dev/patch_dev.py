"""``benchmarks.window_bench`` with ``realtime.fusion.AFFINE_PATCH`` set to another share of the width (development).

    python benchmarks/results/exploratory-fusion-affine-amd-vm-2026-12-08/dev/patch_dev.py 0.1667 --phantoms 3 \\
        --images 0 --frames 240 --threads 1 --modes tracked+fusion --fusion 0.25 --fusion-motion shape --json OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

import realtime.fusion as fusion  # noqa: E402
from benchmarks.window_bench import cli  # noqa: E402

if __name__ == "__main__":
    fusion.AFFINE_PATCH = float(sys.argv[1])
    sys.exit(cli(sys.argv[2:]))
