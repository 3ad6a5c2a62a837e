"""mn-eval's CSA agreement end to end: the ``csa_agreement`` JSON, ``--mm-per-px``, the Bland-Altman
``--plots`` (atomic PNGs) and bad flags -> one line, exit 2 before the slow part."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch

from train.checkpoint import save_checkpoint
from train.evaluate import (
    BLAND_ALTMAN_PNG,
    BLAND_ALTMAN_REL_PNG,
    parse_mm_per_px,
    save_bland_altman,
)
from train.evaluate import cli as eval_cli
from train.metrics import AGREEMENT_KEYS, MISSED_DSC, csa_agreement
from train.models import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained L-UNet at 64x48: enough to run the whole command quickly."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "lunet.pt"
    save_checkpoint(path, build_model("lunet"), {"model": {"name": "lunet", "kwargs": {}},
                                                 "preprocessing": {"size": [64, 48]}})
    return path


def _eval(checkpoint: Path, data: Path, *extra: str) -> int:
    return eval_cli(["--checkpoint", str(checkpoint), "--data", str(data), "--batch-size", "16", "-q", *extra])


def _check_agreement_matches_rows(result: dict, mm2_per_px: float | None) -> dict:
    """The JSON's ``csa_agreement`` is exactly that of its own per-image rows."""
    agr = result["csa_agreement"]
    assert set(agr) == AGREEMENT_KEYS
    assert agr["mm2_per_px"] == pytest.approx(mm2_per_px)
    rows = result["per_image"]
    expected = csa_agreement([r["area_true_px"] for r in rows], [r["area_pred_px"] for r in rows],
                             agr["mm2_per_px"], dsc=[r["dsc"] for r in rows], stems=[r["stem"] for r in rows])
    assert agr == expected
    assert agr["n"] == result["n"] == len(rows)
    assert agr["missed"] == sum(r["dsc"] < MISSED_DSC for r in rows)
    assert agr["missed_stems"] == [r["stem"] for r in rows if r["dsc"] < MISSED_DSC]
    return agr


def test_json_csa_agreement_in_mm2_and_plots(checkpoint: Path, synthetic_dataset_shared: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    js, plots = tmp_path / "r.json", tmp_path / "new" / "plots"
    assert _eval(checkpoint, synthetic_dataset_shared, "--json", str(js), "--mm-per-px", "0.1,0.2",
                 "--plots", str(plots)) == 0
    result = json.loads(js.read_text())
    assert {"csa_rel_error", "per_image"} <= result.keys()  # the existing keys stay
    agr = _check_agreement_matches_rows(result, 0.02)
    for key in ("bias", "sd", "mae"):
        assert agr[f"{key}_mm2"] == pytest.approx(agr[f"{key}_px"] * 0.02)
    assert agr["loa_mm2"] == pytest.approx([v * 0.02 for v in agr["loa_px"]])
    assert agr["abs_rel_mean"] == pytest.approx(result["csa_rel_error"]["mean"])
    out = capsys.readouterr().out
    assert "CSA bias" in out and "mm²]" in out and f"of {result['n']}" in out
    assert sorted(p.name for p in plots.iterdir()) == sorted([BLAND_ALTMAN_PNG, BLAND_ALTMAN_REL_PNG])
    for name in (BLAND_ALTMAN_PNG, BLAND_ALTMAN_REL_PNG):
        img = cv2.imread(str(plots / name))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_native_protocol_uncalibrated(checkpoint: Path, synthetic_dataset_shared: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    plots = tmp_path / "plots"
    assert _eval(checkpoint, synthetic_dataset_shared, "--protocol", "native", "--json", "-",
                 "--plots", str(plots)) == 0
    result = json.loads(capsys.readouterr().out)
    agr = _check_agreement_matches_rows(result, None)
    assert all(agr[k] is None for k in ("mm2_per_px", "bias_mm2", "sd_mm2", "loa_mm2", "mae_mm2"))
    assert all(cv2.imread(str(plots / n)) is not None for n in (BLAND_ALTMAN_PNG, BLAND_ALTMAN_REL_PNG))


def _result_for_plots() -> dict:
    true, pred, dsc = [100, 200, 400, 300], [110, 180, 400, 0], [0.9, 0.8, 0.95, 0.0]
    rows = [{"stem": f"s{i}", "dsc": d, "area_true_px": t, "area_pred_px": p}
            for i, (t, p, d) in enumerate(zip(true, pred, dsc))]
    return {"protocol": "native", "per_image": rows,
            "csa_agreement": csa_agreement(true, pred, 0.01, dsc=dsc, stems=[r["stem"] for r in rows])}


def test_plots_are_atomic_and_leave_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = save_bland_altman(tmp_path, _result_for_plots())
    assert [p.name for p in written] == [BLAND_ALTMAN_PNG, BLAND_ALTMAN_REL_PNG]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    old = (tmp_path / BLAND_ALTMAN_PNG).read_bytes()

    from matplotlib.figure import Figure

    def failing_savefig(self, fname, *args, **kwargs) -> None:
        Path(fname).write_bytes(b"half a png")
        raise OSError(28, "No space left on device", str(fname))

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(OSError):
        save_bland_altman(tmp_path, _result_for_plots())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temp file
    assert (tmp_path / BLAND_ALTMAN_PNG).read_bytes() == old  # the previous plot is intact


def test_parse_mm_per_px() -> None:
    assert parse_mm_per_px(None) is None
    assert parse_mm_per_px("0.1") == pytest.approx(0.01)
    assert parse_mm_per_px("0.1, 0.2") == pytest.approx(0.02)


def _run_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = eval_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("value", ["abc", "0", "-0.1", "0.1,0.2,0.3", "nan", "inf", "0.1,", ""])
def test_bad_mm_per_px_exits_2_before_loading(tmp_path: Path, value: str, capsys: pytest.CaptureFixture) -> None:
    # the checkpoint does not exist: the flag must be refused first
    err = _run_error(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path),
                      f"--mm-per-px={value}"], capsys)
    assert "--mm-per-px" in err and "0.08" in err


def test_plots_on_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = _run_error(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path), "--plots", str(afile)],
                     capsys)
    assert "--plots" in err and "folder" in err


def test_threshold_the_model_carries_and_the_sweep(checkpoint: Path, synthetic_dataset_shared: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The native protocol cuts at the model's ``postprocess.threshold`` (``--threshold`` overrides it), and
    ``--sweep`` holds, at that threshold, exactly the areas the protocol reports."""
    from train.checkpoint import load_checkpoint
    from train.threshold import read_sweep

    payload = load_checkpoint(checkpoint)
    payload["config"]["postprocess"] = {"threshold": 0.45}
    calibrated = tmp_path / "calibrated.pt"
    torch.save(payload, calibrated)
    results = {}
    for name, ckpt, extra in (("default", checkpoint, []), ("model", calibrated, []),
                              ("flag", checkpoint, ["--threshold", "0.45"])):
        js = tmp_path / f"{name}.json"
        assert _eval(ckpt, synthetic_dataset_shared, "--protocol", "native", "--json", str(js), *extra,
                     *(["--sweep", str(tmp_path / "sweep.csv")] if name == "default" else [])) == 0
        results[name] = json.loads(js.read_text())
    assert results["default"]["threshold"] == 0.5 and results["model"]["threshold"] == 0.45
    assert results["model"]["per_image"] == results["flag"]["per_image"]
    sweep = read_sweep(tmp_path / "sweep.csv")
    for t in (0.45, 0.5):
        at_t = {r["stem"]: r["area_pred_px"] for r in sweep if r["threshold"] == t}
        run = results["default" if t == 0.5 else "model"]["per_image"]
        assert at_t == {r["stem"]: r["area_pred_px"] for r in run}
    capsys.readouterr()
    assert _eval(checkpoint, synthetic_dataset_shared, "--threshold", "0.4") == 2  # the paper protocol's is 0.5
    assert "--protocol native" in capsys.readouterr().err
    assert _eval(checkpoint, synthetic_dataset_shared, "--protocol", "native", "--threshold", "1.2") == 2
    assert "between 0 and 1" in capsys.readouterr().err
