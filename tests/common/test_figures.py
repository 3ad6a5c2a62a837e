"""common.figures: a figure saved atomically, in the path's format, with no temporary file left behind."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from common.figures import save_figure  # noqa: E402


def test_save_figure_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    fig = plt.figure(figsize=(2, 1))
    try:
        (tmp_path / "p.png").write_bytes(b"old")
        assert save_figure(fig, tmp_path / "p.png") == tmp_path / "p.png"
        assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        save_figure(fig, tmp_path / "p.svg")
        assert b"<svg" in (tmp_path / "p.svg").read_bytes()
        with pytest.raises(ValueError, match="notaformat"):
            save_figure(fig, tmp_path / "p.notaformat")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "p.svg"]
    finally:
        plt.close(fig)
