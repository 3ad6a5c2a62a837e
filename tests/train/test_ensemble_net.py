"""train.ensemble_net: the mean of several networks' probabilities, and a cascade whose refiner is one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train.cascade import build_cascade_checkpoint, ensemble_payload
from train.cascade import main as cascade_main
from train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from train.ensemble_net import ENSEMBLE_NAME, MeanEnsemble
from train.errors import UserError
from train.models import build_model
from train.preprocess import preprocessing_config

FRAME = (128, 96)
CROP = (64, 32)
NET = {"name": "lunet", "kwargs": {"width": 0.25}}


def _ckpt(path: Path, seed: int, model: str = "lunet", crop: dict | None = None, size=FRAME) -> Path:
    torch.manual_seed(seed)
    kwargs = {"width": 0.25}
    config = {"model": {"name": model, "kwargs": kwargs}, "preprocessing": preprocessing_config(size), "crop": crop}
    save_checkpoint(path, build_model(model, **kwargs), config)
    return path


def _refiner(path: Path, seed: int, **crop: object) -> Path:
    return _ckpt(path, seed, crop={"size": list(CROP), "frame_size": list(FRAME), "jitter": 0.25, **crop})


def test_mean_of_the_members_probabilities() -> None:
    torch.manual_seed(0)
    net = MeanEnsemble([NET, NET, NET]).eval()
    x = torch.randn(2, 1, CROP[1], CROP[0])
    with torch.inference_mode():
        probs = [torch.sigmoid(m(x)) for m in net.members]
        out = torch.sigmoid(net(x))
    assert out.shape == (2, 1, CROP[1], CROP[0])
    assert max(float((a - b).abs().max()) for a in probs for b in probs) > 1e-3  # members differ
    torch.testing.assert_close(out, (probs[0] + probs[1] + probs[2]) / 3, atol=1e-6, rtol=0)
    assert "members=3" in repr(net)


def test_ensemble_needs_two_plain_networks() -> None:
    with pytest.raises(UserError, match="at least two networks, got 1"):
        MeanEnsemble([NET])
    with pytest.raises(UserError, match="cannot be an ensemble"):
        MeanEnsemble([NET, {"name": ENSEMBLE_NAME, "kwargs": {"members": [NET, NET]}}])
    with pytest.raises(UserError, match="must be {'name', 'kwargs'}"):
        MeanEnsemble([NET, {"kwargs": {}}])


def test_cascade_with_two_refiners(tmp_path: Path) -> None:
    """--refiner twice: one cascade whose refiner is the two networks' mean; its record names both."""
    loc = _ckpt(tmp_path / "loc.pt", 0, model="lunet-coarse")
    a, b = _refiner(tmp_path / "a.pt", 1), _refiner(tmp_path / "b.pt", 2, negatives=0.15)
    out = tmp_path / "ens.pt"
    assert cascade_main(["--localiser", str(loc), "--refiner", str(a), "--refiner", str(b), "--out", str(out),
                         "-q"]) == 0
    net, config = model_from_checkpoint(out)
    spec = config["model"]["kwargs"]["refiner"]
    assert spec == {"name": ENSEMBLE_NAME, "kwargs": {"members": [NET, NET]}}
    assert config["parts"]["refiner"]["checkpoint"] == f"{a} + {b}"
    assert [m["crop"].get("negatives") for m in config["parts"]["refiner"]["config"]["members"]] == [None, 0.15]
    x = torch.randn(3, 1, CROP[1], CROP[0])
    with torch.inference_mode():
        singles = [torch.sigmoid(model_from_checkpoint(p)[0](x)) for p in (a, b)]
        torch.testing.assert_close(torch.sigmoid(net.refiner(x)), (singles[0] + singles[1]) / 2, atol=1e-6, rtol=0)
    # the ensemble cascade's refiner is a part like any other: swapped into another cascade, members and all
    again = build_cascade_checkpoint(str(loc), str(out), str(tmp_path / "again.pt"))
    assert again["model"]["kwargs"]["refiner"] == spec
    state = load_checkpoint(tmp_path / "again.pt")["state_dict"]
    assert torch.equal(state["refiner.members.1.head.out.weight"], load_checkpoint(b)["state_dict"]["head.out.weight"])


def test_members_must_take_the_same_input(tmp_path: Path) -> None:
    a = _refiner(tmp_path / "a.pt", 1)
    wide = _ckpt(tmp_path / "wide.pt", 2, crop={"size": [96, 64], "frame_size": list(FRAME)})
    with pytest.raises(UserError, match="wide.pt was trained with another window than .*a.pt"):
        ensemble_payload([str(a), str(wide)])
    payload = load_checkpoint(a)
    payload["config"]["preprocessing"]["id"] = "other"
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(UserError, match="other.pt was trained with another preprocessing"):
        ensemble_payload([str(a), str(tmp_path / "other.pt")])
    assert ensemble_payload([str(a)])["config"]["model"] == NET  # one network: itself


def test_a_mirrored_member_sees_the_mirror_image() -> None:
    """mirrored=[False, True]: the second member's probabilities of the flipped input, flipped back, in the mean;
    two copies of one network so make exactly that network's test-time flip."""
    torch.manual_seed(0)
    net = MeanEnsemble([NET, NET], mirrored=[False, True]).eval()
    x = torch.randn(2, 1, CROP[1], CROP[0])
    with torch.inference_mode():
        a, b = net.members
        expected = (torch.sigmoid(a(x)) + torch.flip(torch.sigmoid(b(torch.flip(x, [3]))), [3])) / 2
        torch.testing.assert_close(torch.sigmoid(net(x)), expected, atol=1e-6, rtol=0)
        b.load_state_dict(a.state_dict())
        flip_tta = (torch.sigmoid(a(x)) + torch.flip(torch.sigmoid(a(torch.flip(x, [3]))), [3])) / 2
        torch.testing.assert_close(torch.sigmoid(net(x)), flip_tta, atol=1e-6, rtol=0)
        assert not torch.allclose(torch.sigmoid(a(x)), flip_tta, atol=1e-4)  # the flip changed something
    assert "mirrored=[False, True]" in repr(net)
    with pytest.raises(UserError, match="one true/false a member"):
        MeanEnsemble([NET, NET], mirrored=[True])
    with pytest.raises(UserError, match="one true/false a member"):
        MeanEnsemble([NET, NET], mirrored=[0, 1])


def test_cascade_mirror_alternate(tmp_path: Path) -> None:
    """--mirror alternate marks every second member; re-joining keeps it unless --mirror none; one refiner refuses."""
    loc = _ckpt(tmp_path / "loc.pt", 0, model="lunet-coarse")
    a, b, c = (_refiner(tmp_path / f"{n}.pt", s) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    out = tmp_path / "mir.pt"
    assert cascade_main(["--localiser", str(loc), "--refiner", str(a), "--refiner", str(b), "--refiner", str(c),
                         "--mirror", "alternate", "--out", str(out), "-q"]) == 0
    net, config = model_from_checkpoint(out)
    assert config["model"]["kwargs"]["refiner"]["kwargs"]["mirrored"] == [False, True, False]
    assert net.refiner.mirrored == [False, True, False]
    kept = build_cascade_checkpoint(str(loc), str(out), str(tmp_path / "kept.pt"))
    assert kept["model"]["kwargs"]["refiner"]["kwargs"]["mirrored"] == [False, True, False]
    plain = build_cascade_checkpoint(str(loc), str(out), str(tmp_path / "plain.pt"), mirror="none")
    assert plain["model"]["kwargs"]["refiner"] == {"name": ENSEMBLE_NAME, "kwargs": {"members": [NET, NET, NET]}}
    with pytest.raises(UserError, match="--mirror alternate needs an ensemble refiner"):
        cascade_main(["--localiser", str(loc), "--refiner", str(a), "--mirror", "alternate",
                      "--out", str(tmp_path / "one.pt"), "-q"])
    assert not (tmp_path / "one.pt").exists()
    assert build_cascade_checkpoint(str(loc), str(a), str(tmp_path / "one.pt"), mirror="none")["model"]["kwargs"][
        "refiner"] == NET  # none: nothing to drop


LOCALISER = {"name": "lunet-coarse", "kwargs": {"width": 0.25}}


def test_cascade_with_two_localisers(tmp_path: Path) -> None:
    """--localiser twice: the two localisers' mean probability places the window; --localiser-mirror alternate shows
    the second the mirrored frame; the ensemble localiser is a part like any other when joined again."""
    la, lb = (_ckpt(tmp_path / f"l{s}.pt", s, model="lunet-coarse") for s in (4, 5))
    ref = _refiner(tmp_path / "ref.pt", 1)
    out = tmp_path / "locens.pt"
    assert cascade_main(["--localiser", str(la), "--localiser", str(lb), "--refiner", str(ref),
                         "--localiser-mirror", "alternate", "--out", str(out), "-q"]) == 0
    net, config = model_from_checkpoint(out)
    spec = config["model"]["kwargs"]["localiser"]
    assert spec == {"name": ENSEMBLE_NAME, "kwargs": {"members": [LOCALISER, LOCALISER], "mirrored": [False, True]}}
    assert config["model"]["kwargs"]["refiner"] == NET
    assert config["parts"]["localiser"]["checkpoint"] == f"{la} + {lb}"
    x = torch.randn(2, 1, FRAME[1], FRAME[0])
    with torch.inference_mode():
        a, b = (model_from_checkpoint(p)[0].eval() for p in (la, lb))
        by_hand = (torch.sigmoid(a(x)) + torch.flip(torch.sigmoid(b(torch.flip(x, [3]))), [3])) / 2
        torch.testing.assert_close(torch.sigmoid(net.eval().localiser(x)), by_hand, atol=1e-6, rtol=0)
        parts = net.forward_parts(x)
    assert len(parts["boxes"]) == 2 and parts["localiser"].shape == (2, 1, FRAME[1], FRAME[0])
    again = build_cascade_checkpoint(str(out), str(ref), str(tmp_path / "again.pt"))
    assert again["model"]["kwargs"]["localiser"] == spec
    plain = build_cascade_checkpoint(str(out), str(ref), str(tmp_path / "plain.pt"), localiser_mirror="none")
    assert plain["model"]["kwargs"]["localiser"]["kwargs"] == {"members": [LOCALISER, LOCALISER]}


def test_localiser_ensemble_refusals(tmp_path: Path) -> None:
    la = _ckpt(tmp_path / "la.pt", 4, model="lunet-coarse")
    big = _ckpt(tmp_path / "big.pt", 5, model="lunet-coarse", size=(160, 128))
    ref = _refiner(tmp_path / "ref.pt", 1)
    with pytest.raises(UserError, match="big.pt was trained with another input size than .*la.pt"):
        build_cascade_checkpoint([str(la), str(big)], str(ref), str(tmp_path / "x.pt"))
    with pytest.raises(UserError, match="--localiser-mirror alternate needs an ensemble localiser: give --localiser "
                                        "twice"):
        cascade_main(["--localiser", str(la), "--refiner", str(ref), "--localiser-mirror", "alternate",
                      "--out", str(tmp_path / "one.pt"), "-q"])
    assert not (tmp_path / "one.pt").exists()
    with pytest.raises(UserError, match="another window than"):  # a refiner among the localisers
        build_cascade_checkpoint([str(la), str(ref)], str(ref), str(tmp_path / "x.pt"))
