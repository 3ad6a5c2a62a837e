"""benchmarks.soak (mn-bench --soak): windows and the targets' verdict on known numbers (a fake clock
and RSS), and a tiny real soak through mn-bench writing its JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_cli, soak
from tests.realtime.sinks._helpers import record


def test_windows_and_verdict_on_known_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"t": 0.0}
    rss = {"mb": 400.0}
    monkeypatch.setattr(soak, "rss_mb", lambda: rss["mb"])
    w = soak.SoakWatcher(window_s=60.0, rss_every_s=10.0, clock=lambda: clock["t"])
    w.open(None)
    for i in range(24 * 660):  # 11 minutes at 24 fps; latency 20 ms, 30 ms from minute 5; one drop at 2:00
        clock["t"] = i / 24
        rss["mb"] = 400.0 + min(clock["t"], 60.0) / 6 + (3.0 if clock["t"] > 400 else 0.0)  # +10 MB, then +3 MB
        r = record(i, latency=20.0 if clock["t"] < 300 else 30.0)
        r.dropped_before = 1 if i == 24 * 120 else 0
        w.write(r)
    clock["t"] = 660.0
    w.close()
    assert [x["frames"] for x in w.windows] == [1440] * 11 and w.windows[2]["dropped"] == 1
    assert w.windows[0]["e2e_p95_ms"] == 20.0 and w.windows[5]["e2e_p95_ms"] == 30.0
    v = w.verdict()
    assert v["rss_after_first_minute_mb"] == pytest.approx(410.0)
    assert v["rss_growth_after_first_minute_mb"] == pytest.approx(3.0) and v["rss_within_target"] is True
    assert v["p95_5min_windows_ms"] == [20.0, 30.0] and v["p95_max_change_vs_first"] == pytest.approx(0.5)
    assert v["p95_within_target"] is False and v["frames_dropped"] == 1 and v["no_drops"] is False


def test_a_short_soak_through_mn_bench(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "soak.json"
    code = bench_cli.cli(["--soak", "0.1", "--window-s", "2", "--models", "lunet", "--sizes", "64x48",
                          "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--soak-out",
                          str(tmp_path / "run"), "-q"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "soak" and result["windows"] and result["rss"][0]["rss_mb"] > 0
    assert result["checks"]["frames_processed"] == sum(w["frames"] for w in result["windows"]) > 0
    assert result["checks"]["rss_within_target"] is None  # shorter than a minute: too short to tell
    assert out.with_suffix(".png").stat().st_size > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["frames_processed"] == result["checks"]["frames_processed"]
    assert "targets" in capsys.readouterr().out
