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
    # the heap holds the growth after the first minute, code pages stay put
    monkeypatch.setattr(soak, "rss_parts_mb", lambda: {"rss_anon_mb": rss["mb"] - 100.0, "rss_file_mb": 100.0})
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
    assert v["rss_anon_growth_after_first_minute_mb"] == pytest.approx(3.0)
    assert v["rss_file_growth_after_first_minute_mb"] == pytest.approx(0.0)
    assert w.rss[-2]["rss_anon_mb"] == pytest.approx(313.0) and w.rss[-2]["rss_file_mb"] == 100.0
    assert v["p95_5min_windows_ms"] == [20.0, 30.0] and v["p95_max_change_vs_first"] == pytest.approx(0.5)
    assert v["p95_max_rise_vs_first"] == pytest.approx(0.5)
    assert v["p95_within_target"] is False and v["frames_dropped"] == 1 and v["no_drops"] is False


def test_a_later_window_that_is_faster_is_told_from_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target is on the absolute change (a faster later window fails it too); the signed rise says which."""
    clock = {"t": 0.0}
    monkeypatch.setattr(soak, "rss_mb", lambda: 400.0)
    monkeypatch.setattr(soak, "rss_parts_mb", lambda: {"rss_anon_mb": 300.0, "rss_file_mb": 100.0})
    w = soak.SoakWatcher(window_s=60.0, rss_every_s=10.0, clock=lambda: clock["t"])
    w.open(None)
    for i in range(24 * 600):  # 10 minutes: 20 ms, then 15 ms from minute 5
        clock["t"] = i / 24
        w.write(record(i, latency=20.0 if clock["t"] < 300 else 15.0))
    clock["t"] = 600.0
    w.close()
    v = w.verdict()
    assert v["p95_5min_windows_ms"] == [20.0, 15.0]
    assert v["p95_max_change_vs_first"] == pytest.approx(0.25) and v["p95_within_target"] is False
    assert v["p95_max_rise_vs_first"] == pytest.approx(-0.25)
    result = {"settings": {"minutes": 10}, "ended_because": "duration", "windows": w.windows, "checks": v}
    assert "p95 NOT met (largest change 25.0 %, largest rise -25.0 %)" in soak.report(result)


def test_a_short_soak_through_mn_bench(tmp_path: Path, engine_cache: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "soak.json"
    code = bench_cli.cli(["--soak", "0.1", "--window-s", "2", "--models", "lunet", "--sizes", "64x48",
                          "--cache-dir", str(engine_cache), "--json", str(out), "--soak-out",
                          str(tmp_path / "run"), "-q"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "soak" and result["windows"] and result["rss"][0]["rss_mb"] > 0
    first = result["rss"][0]  # the split is of the same resident memory (read a moment apart)
    assert first["rss_anon_mb"] > 0 and first["rss_file_mb"] > 0
    assert first["rss_anon_mb"] + first["rss_file_mb"] == pytest.approx(first["rss_mb"], rel=0.05)
    assert result["checks"]["frames_processed"] == sum(w["frames"] for w in result["windows"]) > 0
    assert result["checks"]["rss_within_target"] is None  # shorter than a minute: too short to tell
    assert out.with_suffix(".png").stat().st_size > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["frames_processed"] == result["checks"]["frames_processed"]
    assert "targets" in capsys.readouterr().out


def test_the_soak_places_windows_as_mn_live_does(tmp_path: Path, engine_cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """mn-live's --window default (tracked) reaches the soak's pipeline: it skipped the localiser on no
    frame before, so it timed more work per frame than mn-live does."""
    import realtime.pipeline as pipeline
    from realtime.live_cli import build_parser
    from realtime.window_policy import WindowPolicy

    seen = []
    real = pipeline.PipelineConfig

    def config(**kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("window"))
        return real(**kwargs)

    monkeypatch.setattr(pipeline, "PipelineConfig", config)
    soak.run_soak(0.02, "lunet", size=(64, 48), window_s=1.0, cache_dir=str(engine_cache),
                  out=str(tmp_path / "run"))
    assert build_parser().parse_args(["--source", "synthetic"]).window == "tracked"
    assert len(seen) == 1 and isinstance(seen[0], WindowPolicy)
