"""Do nerve-free clips' false tracks live on the presence check's hold threshold? And what would a track that must
be refreshed at the entry threshold every R frames keep? Offline, from the per-frame scores of `mn-presence --clips`
(`presence-clips.json`: `reported_frames`, `presence_scores`) and `window_bench --per-frame` (`win-frames/*.csv`),
with the thresholds of the fit they ran under (`appearance.json`).

    python refresh.py FOLD_DIR [FOLD_DIR ...]   (each: the folder of one fold's fit, e.g. runs/lens/fold-1/lens/draws-4)

The simulation keeps the loop's frames as they were and drops a reported frame whose score is below the entry
threshold when no frame of the last R (this one included) scored at or above it; a dropped frame does not refresh
the track, and a track whose frames are dropped for more than the tracker's 12 frames (0.5 s at 24 fps) is lost and
needs the entry threshold on 2 frames in a row (confirmation) to be taken up again. What the window would have done
after a drop is not simulated (it stays where the loop put it).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

LOST_AFTER = 12
CONFIRM = 2
REFRESH = (None, 12, 24, 48)


def simulate(reported: list[bool], scores: list[float | None], entry: float, r: int | None) -> list[bool]:
    if r is None:
        return list(reported)
    out, last_entry, last_kept, lost, run = [], None, None, False, 0
    for t, (rep, s) in enumerate(zip(reported, scores)):
        strong = s is not None and s >= entry
        keep = False
        if rep:
            if lost:
                run = run + 1 if strong else 0
                keep = run >= CONFIRM
            elif strong or (last_entry is not None and t - last_entry < r):
                keep = True
        if strong and keep:
            last_entry = t
        if keep:
            last_kept, lost, run = t, False, 0
        elif last_kept is not None and t - last_kept > LOST_AFTER:
            lost = True
        out.append(keep)
    return out


def win_clips(folder: Path) -> list[tuple[str, list[bool], list[float | None]]]:
    clips = []
    for path in sorted((folder / "win-frames").glob("*.csv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        clips.append((path.stem, [r["status"] in ("ok", "reacquired") for r in rows],
                      [float(r["presence_score"]) if r["presence_score"] else None for r in rows]))
    return clips


def main(folders: list[str]) -> None:
    total: dict = {}
    for name in folders:
        folder = Path(name)
        fit = json.loads((folder / "appearance.json").read_text())
        entry, hold = fit["threshold"], fit["hold_threshold"]
        clips = json.loads((folder / "presence-clips.json").read_text())["clips"]["per_clip"]
        groups = {"nerve-free": [], "validation 48": [], "win 144": []}
        for c in clips:
            if c["confirm"] != 2 or c["kind"] == "phantom":
                continue
            flags = [ch == "1" for ch in c["reported_frames"]]
            groups["validation 48" if c["positive"] else "nerve-free"].append((c["id"], flags, c["presence_scores"]))
        groups["win 144"] = win_clips(folder)
        print(f"{folder}: entry {entry:.3f}, hold {hold:.3f}")
        for g, items in groups.items():
            frames = sum(len(f) for _, f, _ in items)
            rep = sum(sum(f) for _, f, _ in items)
            weak = sum(1 for _, f, s in items for x, y in zip(f, s) if x and (y is None or y < entry))
            line = [f"  {g}: {len(items)} clips, {frames} frames, reported {rep}, of them below entry {weak}"]
            for r in REFRESH:
                kept = sum(sum(simulate(f, s, entry, r)) for _, f, s in items)
                total.setdefault((g, r), [0, 0])
                total[(g, r)][0] += kept
                total[(g, r)][1] += frames
                line.append(f"R={r}: {kept}")
            print("; ".join(line))
    print("pooled:")
    for (g, r), (kept, frames) in sorted(total.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        if frames:
            print(f"  {g} R={r}: {kept} of {frames} ({100 * kept / frames:.2f} %)")


if __name__ == "__main__":
    main(sys.argv[1:])
