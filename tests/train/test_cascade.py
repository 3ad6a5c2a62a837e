"""train.cascade: joining two real mn-train runs into one cascade checkpoint, python -m train.cascade, mn-eval on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_dataset
from train.cascade import build_cascade_checkpoint, crop_box, find_centre, paste  # the old names, re-exported
from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.errors import UserError
from train.evaluate import cli as eval_cli
from train.models import build_model
from train.preprocess import preprocessing_config
from train.train_cli import cli as train_cli

REPO = Path(__file__).resolve().parents[2]
FRAME = (128, 96)  # W x H: the synthetic dataset's native size, valid for lunet-coarse (stride 32)
CROP = (64, 48)


def _fake_ckpt(path: Path, model: str, kwargs: dict, size=FRAME, crop=None) -> Path:
    config = {"model": {"name": model, "kwargs": kwargs}, "preprocessing": preprocessing_config(size),
              "crop": crop}
    save_checkpoint(path, build_model(model, **kwargs), config)
    return path


def test_build_cascade_checkpoint_errors(tmp_path: Path) -> None:
    crop = {"size": list(CROP), "frame_size": list(FRAME), "jitter": 0.25}
    loc = _fake_ckpt(tmp_path / "loc.pt", "lunet-coarse", {"width": 0.25})
    ref = _fake_ckpt(tmp_path / "ref.pt", "lunet", {"width": 0.25}, crop=crop)
    out = tmp_path / "c.pt"
    with pytest.raises(UserError, match="ref.pt is a --crop .*localiser must see whole frames"):
        build_cascade_checkpoint(str(ref), str(ref), str(out))
    with pytest.raises(UserError, match="loc.pt was not trained with --crop WxH"):
        build_cascade_checkpoint(str(loc), str(loc), str(out))
    other = _fake_ckpt(tmp_path / "ref2.pt", "lunet", {"width": 0.25},
                       crop={**crop, "frame_size": [256, 192]})
    with pytest.raises(UserError, match="frame sizes differ.*same --size"):
        build_cascade_checkpoint(str(loc), str(other), str(out))
    payload = load_checkpoint(ref)
    payload["config"]["preprocessing"]["id"] = "something-else"
    torch.save(payload, tmp_path / "ref3.pt")
    with pytest.raises(UserError, match="different preprocessing"):
        build_cascade_checkpoint(str(loc), str(tmp_path / "ref3.pt"), str(out))
    with pytest.raises(UserError, match="nope.pt does not exist"):
        build_cascade_checkpoint(str(tmp_path / "nope.pt"), str(ref), str(out))
    assert not out.exists()
    build_cascade_checkpoint(str(loc), str(ref), str(out))
    assert model_from_checkpoint(out)[1]["model"]["kwargs"]["crop"] == list(CROP)


def test_one_part_of_a_cascade_swapped(tmp_path: Path) -> None:
    """A cascade checkpoint given as --localiser or --refiner gives that part (its weights, as float32, and the
    config it was trained with): a cascade with a new localiser and the old refiner, and the other way round."""
    crop = {"size": list(CROP), "frame_size": list(FRAME), "jitter": 0.25}
    loc_a = _fake_ckpt(tmp_path / "loc_a.pt", "lunet-coarse", {"width": 0.25})
    loc_b = _fake_ckpt(tmp_path / "loc_b.pt", "lunet-coarse", {"width": 0.25})
    ref = _fake_ckpt(tmp_path / "ref.pt", "lunet", {"width": 0.25}, crop=crop)
    first = tmp_path / "first.pt"
    build_cascade_checkpoint(str(loc_a), str(ref), str(first))
    payload = load_checkpoint(first)  # as a bundled model ships: fp16 weights
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "half.pt")
    swapped = tmp_path / "swapped.pt"
    config = build_cascade_checkpoint(str(loc_b), str(tmp_path / "half.pt"), str(swapped))
    assert config["parts"]["refiner"]["checkpoint"] == f"the refiner of {tmp_path / 'half.pt'} ({ref})"
    assert config["parts"]["refiner"]["config"]["crop"] == crop
    assert config["parts"]["localiser"]["checkpoint"] == str(loc_b)
    state = load_checkpoint(swapped)["state_dict"]
    for k, v in load_checkpoint(ref)["state_dict"].items():
        if v.is_floating_point():
            assert state["refiner." + k].dtype == torch.float32
            assert torch.equal(state["refiner." + k], v.half().float()), k
        else:  # counters (BatchNorm's num_batches_tracked) unchanged
            assert torch.equal(state["refiner." + k], v), k
    for k, v in load_checkpoint(loc_b)["state_dict"].items():
        assert torch.equal(state["localiser." + k], v), k
    # the cascade's localiser with another refiner
    back = build_cascade_checkpoint(str(first), str(ref), str(tmp_path / "back.pt"))
    assert back["parts"]["localiser"]["checkpoint"] == f"the localiser of {first} ({loc_a})"
    # a cascade that kept no record of its parts' configs
    del payload["config"]["parts"]
    torch.save(payload, tmp_path / "bare.pt")
    with pytest.raises(UserError, match="bare.pt is a cascade without the training config of its refiner"):
        build_cascade_checkpoint(str(loc_b), str(tmp_path / "bare.pt"), str(tmp_path / "no.pt"))
    assert not (tmp_path / "no.pt").exists()


@pytest.fixture(scope="module")
def trained_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic dataset, a lunet-coarse localiser and a lunet --crop refiner, each one short mn-train run."""
    root = tmp_path_factory.mktemp("cascade")
    data = make_dataset(root / "data", n_patients=4, per_patient=2)
    common = ["--data", str(data), "--size", "128x96", "--epochs", "1", "--batch-size", "4", "--folds", "4",
              "--fold", "0", "--save-every-min", "0", "-q"]
    assert train_cli(["--model", "lunet-coarse", "--width", "0.25", "--out", str(root / "loc"), *common]) == 0
    assert train_cli(["--model", "lunet", "--width", "0.25", "--crop", "64x48", "--crop-jitter", "0.2",
                      "--out", str(root / "ref"), *common]) == 0
    return {"root": root, "data": data, "loc": root / "loc" / "best.pt", "ref": root / "ref" / "best.pt"}


@pytest.mark.slow
def test_trained_parts_join_into_a_cascade(trained_parts: dict[str, Path]) -> None:
    out = trained_parts["root"] / "joined.pt"
    config = build_cascade_checkpoint(str(trained_parts["loc"]), str(trained_parts["ref"]), str(out))
    loc_model, loc_cfg = model_from_checkpoint(trained_parts["loc"])
    ref_model, ref_cfg = model_from_checkpoint(trained_parts["ref"])
    assert ref_cfg["crop"]["size"] == [64, 48] and ref_cfg["crop"]["frame_size"] == [128, 96]
    assert ref_cfg["crop"]["jitter"] == 0.2 and loc_cfg["crop"] is None
    assert config["model"] == {"name": "cascade", "kwargs": {
        "localiser": {"name": "lunet-coarse", "kwargs": {"width": 0.25}},
        "refiner": {"name": "lunet", "kwargs": {"width": 0.25}}, "crop": [64, 48]}}
    assert config["preprocessing"] == loc_cfg["preprocessing"]
    assert config["parts"]["localiser"]["checkpoint"] == str(trained_parts["loc"])
    assert config["parts"]["refiner"]["config"]["crop"] == ref_cfg["crop"]

    cascade, saved = model_from_checkpoint(out)
    assert saved == json.loads(json.dumps(config))
    # the cascade is exactly localiser -> find_centre -> crop_box -> refiner -> paste with the parts' weights
    x = torch.randn(3, 1, 96, 128)
    with torch.no_grad():
        got = cascade.forward_parts(x)
        loc = loc_model(x)
        boxes = [crop_box(find_centre(p[0]), CROP, FRAME) for p in torch.sigmoid(loc).numpy()]
        windows = torch.stack([x[i, :, y0:y0 + 48, x0:x0 + 64] for i, (x0, y0) in enumerate(boxes)])
        expected = paste(ref_model(windows), boxes, (96, 128))
    assert got["boxes"] == boxes
    assert torch.equal(got["localiser"], loc)
    assert torch.allclose(got["logits"], expected, atol=1e-6)


@pytest.mark.slow
def test_cascade_cli_and_eval(trained_parts: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = trained_parts["root"] / "cli.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "train.cascade", "--localiser", str(trained_parts["loc"]),
                         "--refiner", str(trained_parts["ref"]), "--out", str(out)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "lunet-coarse -> lunet on 64x48 windows" in ok.stderr
    assert load_checkpoint(out)["config"]["model"]["name"] == "cascade"
    bad = subprocess.run([sys.executable, "-m", "train.cascade", "--localiser", str(trained_parts["root"] / "no.pt"),
                          "--refiner", str(trained_parts["ref"]), "--out", str(trained_parts["root"] / "x.pt")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("train.cascade: error:") and "no.pt" in bad.stderr
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert not (trained_parts["root"] / "x.pt").exists()

    capsys.readouterr()
    for protocol in ("paper", "native"):
        assert eval_cli(["--checkpoint", str(out), "--data", str(trained_parts["data"]), "--protocol", protocol,
                         "--json", "-", "-q"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["model"] == "cascade" and result["n"] == 8 and result["protocol"] == protocol
        dscs = [r["dsc"] for r in result["per_image"]]
        assert len(dscs) == 8 and result["dsc"]["mean"] == pytest.approx(sum(dscs) / 8)  # the mean of its images
