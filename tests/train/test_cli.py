"""mn-train / mn-eval end to end: outputs, JSON contract, and bad input -> one line, exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from train.checkpoint import save_checkpoint
from train.evaluate import cli as eval_cli
from train.models import build_model
from train.train_cli import cli as train_cli

EVAL_KEYS = {"n", "protocol", "dsc", "iou", "precision", "recall", "csa_rel_error", "checkpoint", "per_image"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset_shared: Path) -> Path:
    out = tmp_path_factory.mktemp("run")
    code = train_cli(["--data", str(synthetic_dataset_shared), "--out", str(out), "--model", "lunet",
                      "--size", "64x48", "--epochs", "2", "--batch-size", "4", "--split", "random", "-q"])
    assert code == 0
    return out


def test_list_models(capsys: pytest.CaptureFixture) -> None:
    assert train_cli(["--list-models"]) == 0
    out = capsys.readouterr().out
    for name, total in [("unet", "7,858,405"), ("lunet", "1,952,485"), ("dbunet", "29,296,994"),
                        ("dlunet", "14,774,698"), ("dlunet-b4c3", "12,411,178")]:
        line = next(l for l in out.splitlines() if l.split()[0] == name)
        assert total in line


@pytest.mark.parametrize("protocol", ["paper", "native"])
def test_eval_json_per_image_and_overlays(trained_run: Path, synthetic_dataset_shared: Path, tmp_path: Path,
                                          protocol: str, capsys: pytest.CaptureFixture) -> None:
    js, per, ov = tmp_path / "r.json", tmp_path / "per.csv", tmp_path / "ov"
    code = eval_cli(["--checkpoint", str(trained_run / "best.pt"), "--data", str(synthetic_dataset_shared),
                     "--protocol", protocol, "--json", str(js), "--per-image", str(per), "--save-overlays", str(ov),
                     "-q"])
    assert code == 0
    result = json.loads(js.read_text())
    assert EVAL_KEYS <= result.keys()
    assert result["protocol"] == protocol and result["n"] == 16
    assert {"mean", "std"} <= result["dsc"].keys() and {"median", "mean"} <= result["csa_rel_error"].keys()
    rows = list(csv.DictReader(open(per)))
    assert len(rows) == 16 and rows[0]["stem"] == "Pz001-001"
    assert len(list(ov.glob("*.png"))) == 16
    assert "DSC" in capsys.readouterr().out


def test_eval_split_subset_and_json_stdout(trained_run: Path, synthetic_dataset_shared: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    code = eval_cli(["--checkpoint", str(trained_run / "best.pt"), "--data", str(synthetic_dataset_shared),
                     "--split", "paper", "--json", "-", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and all(r["stem"].startswith("Pz004") for r in result["per_image"])


def test_eval_double_network_reports_output1(tmp_path: Path, synthetic_dataset: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "dl.pt"
    save_checkpoint(ckpt, build_model("dlunet"), {"model": {"name": "dlunet", "kwargs": {}},
                                                   "preprocessing": {"size": [64, 48]}})
    ov = tmp_path / "ov"
    assert eval_cli(["--checkpoint", str(ckpt), "--data", str(synthetic_dataset), "--json", "-",
                     "--save-overlays", str(ov), "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"mean", "std"} <= result["output1_dsc"].keys()
    import cv2

    panel = cv2.imread(str(next(ov.glob("*.png"))))
    assert panel.shape == (2 * 96, 3 * 128, 3)  # two rows of three native-size panels


def _run_error(cli, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_bad_input_one_line_exit_2(tmp_path: Path, synthetic_dataset: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "o")
    err = _run_error(train_cli, ["--data", str(synthetic_dataset), "--out", out, "--model", "vgg99"], capsys)
    assert "unknown model" in err and "dlunet" in err
    err = _run_error(train_cli, ["--data", str(synthetic_dataset), "--out", out, "--model", "unet",
                                 "--size", "380x288"], capsys)
    assert "384x288" in err
    if not torch.cuda.is_available():
        err = _run_error(train_cli, ["--data", str(synthetic_dataset), "--out", out, "--device", "cuda"], capsys)
        assert "CUDA" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    err = _run_error(eval_cli, ["--checkpoint", str(bad), "--data", str(synthetic_dataset)], capsys)
    assert "bad.pt" in err
    err = _run_error(train_cli, ["--data", str(synthetic_dataset), "--out", out, "--resume"], capsys)
    assert "last.pt" in err


def test_missing_data_folder_names_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _run_error(train_cli, ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert "nope" in err


def test_cascade_flags_bad_input_one_line_exit_2(tmp_path: Path, synthetic_dataset: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    base = ["--data", str(synthetic_dataset), "--out", str(tmp_path / "o"), "--size", "64x48"]
    err = _run_error(train_cli, [*base, "--model", "unet", "--width", "0.5"], capsys)
    assert "--width applies to --model lunet / lunet-coarse / lunet-coarse2 only" in err
    err = _run_error(train_cli, [*base, "--model", "lunet", "--width", "0"], capsys)
    assert "lunet width must be in (0, 4]" in err
    err = _run_error(train_cli, [*base, "--crop", "128x24"], capsys)
    assert "--crop 128x24 must fit inside --size 64x48" in err
    err = _run_error(train_cli, [*base, "--crop", "30x20"], capsys)
    assert "30x20 is not divisible by 8 (the stride of lunet); the nearest valid size is 32x24" in err
    err = _run_error(train_cli, [*base, "--crop", "32x24", "--crop-jitter", "1.5"], capsys)
    assert "--crop-jitter must be in [0, 1]" in err
    err = _run_error(train_cli, [*base, "--workers", "-1"], capsys)
    assert "--workers" in err
    err = _run_error(train_cli, [*base, "--loss", "focal"], capsys)
    assert "unknown loss 'focal'; choose one of: bce_dice, bce_dice_area" in err
    err = _run_error(train_cli, [*base, "--model", "cascade"], capsys)
    assert "unknown model 'cascade'" in err  # assembled by python -m train.cascade, never trained as a whole
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [["--amp-dtype", "fp8"], ["--crop", "64by48"], ["--workers", "two"]])
def test_cascade_flags_rejected_by_argparse(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        train_cli(["--data", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[0]}" in err
    if argv[0] == "--amp-dtype":
        assert "invalid choice: 'fp8'" in err and "bf16" in err


def test_amp_dtype_parsed() -> None:
    from train.train_cli import build_parser

    assert build_parser().parse_args([]).amp_dtype == "auto"
    assert build_parser().parse_args(["--amp-dtype", "bf16"]).amp_dtype == "bf16"
    args = build_parser().parse_args(["--crop", "128x96", "--crop-jitter", "0.1", "--workers", "3"])
    assert tuple(args.crop) == (128, 96) and args.crop_jitter == 0.1 and args.workers == 3
