"""Tests of the paper's networks (paper-code-spec.md §0, §1, §4), their registry and complexity.

One shared, parametrised test class runs the same checks on every registered architecture
(as segmentation_models_pytorch's ``BaseModelTester`` does): exact Keras-style parameter
counts, forward at two sizes, backward, state-dict round trip, init, stride. Double networks
get ``forward_details`` checks; the VGG19 encoder gets weight-loading checks with a synthetic
torchvision-like state dict.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from train.errors import UserError
from train.models import (
    MODEL_NAMES,
    build_model,
    check_input_size,
    describe_model,
    list_models,
    model_stride,
)
from train.models.complexity import gflops, keras_param_count, model_table, trainable_param_count
from train.models.layers import BN_EPS, BN_MOMENTUM, _SingleValueBatchNorm2d, nearest_valid_size
from train.models.vgg import VGG19_CFG, VGG19Encoder, load_vgg19_weights, make_vgg19_features

# (registry name, kwargs, Keras total, Keras trainable, stride, has VGG encoder) -- spec §1.
CASES: list[tuple[str, dict[str, Any], int, int, int, bool]] = [
    ("unet", {}, 7_858_405, 7_852_517, 16, False),
    ("lunet", {}, 1_952_485, 1_949_669, 8, False),
    ("lunet", {"variant": "head"}, 1_949_669, 1_948_261, 8, False),
    ("dbunet", {}, 29_296_994, 29_289_698, 16, True),
    ("dlunet", {}, 14_774_698, 14_769_450, 8, True),
    ("dlunet-b4c3", {}, 12_411_178, 12_407_786, 8, True),
]
CASE_IDS = [name + "".join(f"-{v}" for v in kw.values()) for name, kw, *_ in CASES]
DOUBLE_NAMES = ["dbunet", "dlunet", "dlunet-b4c3"]

FULL_HW = (288, 384)  # the paper's input, H x W
SMALL_HW = (96, 128)  # a second valid size for every stride (16 divides both)
TINY_HW = (32, 32)  # for backward / round-trip checks
DETAILS_HW = (32, 64)


@pytest.fixture(scope="module")
def model_cache() -> dict[str, nn.Module]:
    """Models built once per module for the read-only checks (eval mode, never trained)."""
    return {}


def _cached(cache: dict[str, nn.Module], name: str, kwargs: dict[str, Any]) -> nn.Module:
    key = name + repr(sorted(kwargs.items()))
    if key not in cache:
        torch.manual_seed(0)
        cache[key] = build_model(name, **kwargs).eval()
    return cache[key]


@pytest.mark.parametrize(("name", "kwargs", "total", "trainable", "stride", "has_vgg"), CASES, ids=CASE_IDS)
class TestArchitecture:
    """The same checks for every registered architecture."""

    def test_param_counts_match_keras(self, model_cache, name, kwargs, total, trainable, stride, has_vgg):
        model = _cached(model_cache, name, kwargs)
        assert keras_param_count(model) == total
        assert trainable_param_count(model) == trainable

    def test_stride_and_flags(self, model_cache, name, kwargs, total, trainable, stride, has_vgg):
        model = _cached(model_cache, name, kwargs)
        assert model.stride == stride == model_stride(name)
        assert model.has_vgg_encoder is has_vgg
        assert hasattr(model, "forward_details") is has_vgg

    def test_forward_full_size(self, model_cache, name, kwargs, total, trainable, stride, has_vgg):
        model = _cached(model_cache, name, kwargs)
        with torch.no_grad():
            y = model(torch.randn(1, 1, *FULL_HW))
        assert y.shape == (1, 1, *FULL_HW)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all()

    def test_forward_small_size(self, model_cache, name, kwargs, total, trainable, stride, has_vgg):
        model = _cached(model_cache, name, kwargs)
        with torch.no_grad():
            y = model(torch.randn(2, 1, *SMALL_HW))
        assert y.shape == (2, 1, *SMALL_HW)
        assert torch.isfinite(y).all()

    def test_output_is_the_heads_raw_logits(self, model_cache, name, kwargs, total, trainable, stride, has_vgg):
        """Logits, not probabilities: the output is the final 1x1 conv's output as it is (no sigmoid, clamp or
        scaling after it), so adding c to that conv's bias adds exactly c to every output value."""
        model = _cached(model_cache, name, kwargs)
        modules = dict(model.named_modules())
        final = modules["head2.out" if "head2.out" in modules else "head.out"]
        x = torch.randn(1, 1, *TINY_HW, generator=torch.Generator().manual_seed(4))
        bias = final.bias.detach().clone()
        with torch.no_grad():
            y0 = model(x)
            final.bias += 3.0
            try:
                y1 = model(x)
            finally:
                final.bias.copy_(bias)  # the cached model is shared with the other checks
        torch.testing.assert_close(y1 - y0, torch.full_like(y0, 3.0), atol=1e-4, rtol=0)

    def test_train_backward(self, name, kwargs, total, trainable, stride, has_vgg):
        torch.manual_seed(1)
        model = build_model(name, **kwargs).train()
        x = torch.randn(2, 1, *TINY_HW)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), torch.rand(2, 1, *TINY_HW))
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads), "every parameter takes part in the loss"
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0

    def test_state_dict_round_trip(self, tmp_path, name, kwargs, total, trainable, stride, has_vgg):
        torch.manual_seed(2)
        src = build_model(name, **kwargs).eval()
        torch.manual_seed(3)
        dst = build_model(name, **kwargs).eval()
        path = tmp_path / "weights.pt"
        torch.save(src.state_dict(), path)
        dst.load_state_dict(torch.load(path, weights_only=True))
        x = torch.randn(1, 1, *TINY_HW)
        with torch.no_grad():
            assert torch.equal(src(x), dst(x))

    def test_keras_init(self, model_cache, name, kwargs, total, trainable, stride, has_vgg):
        model = _cached(model_cache, name, kwargs)
        n_conv = n_bn = 0
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if m.bias is not None:
                    assert torch.count_nonzero(m.bias) == 0
                fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                assert float(m.weight.detach().abs().max()) <= bound + 1e-6  # Glorot uniform
                n_conv += isinstance(m, nn.Conv2d)
            elif isinstance(m, nn.BatchNorm2d):
                assert m.momentum == BN_MOMENTUM == 0.01
                assert m.eps == BN_EPS == 1e-3
                n_bn += 1
        assert n_conv > 0 and n_bn > 0

    def test_wrong_input_size_is_a_user_error(self, model_cache, name, kwargs, total, trainable, stride, has_vgg):
        model = _cached(model_cache, name, kwargs)
        with pytest.raises(UserError, match=f"not divisible by {stride}"):
            model(torch.randn(1, 1, stride * 2, stride * 2 + 4))
        with pytest.raises(UserError, match=r"\[N, 1, H, W\]"):
            model(torch.randn(1, 3, stride, stride))


def test_registry_names_and_descriptions():
    assert list_models() == list(MODEL_NAMES) == ["unet", "lunet", "dbunet", "dlunet", "lunet-coarse", "lunet-coarse2",
                                                   "dlunet-b4c3"]
    for name in MODEL_NAMES:
        assert describe_model(name) and "\n" not in describe_model(name)


def test_unknown_model_lists_valid_names():
    for call in (build_model, model_stride, describe_model):
        with pytest.raises(KeyError) as info:
            call("resnet")  # type: ignore[operator]
        for name in MODEL_NAMES:
            assert name in str(info.value)


def test_lunet_rejects_unknown_variant():
    with pytest.raises(UserError, match="table2"):
        build_model("lunet", variant="paper")


def test_check_input_size_message():
    with pytest.raises(UserError) as info:
        check_input_size("unet", (380, 288))
    assert str(info.value) == (
        "size 380x288 is not divisible by 16 (the stride of unet); the nearest valid size is 384x288"
    )
    with pytest.raises(UserError, match="nearest valid size is 384x296"):
        check_input_size("dlunet", (384, 294))
    with pytest.raises(UserError):
        check_input_size("lunet", (0, 288))
    for name in MODEL_NAMES:
        check_input_size(name, (384, 288))
        if model_stride(name) <= 32 and name != "lunet-coarse":
            check_input_size(name, (128, 96))
    check_input_size("lunet-coarse", (128, 128))
    assert nearest_valid_size((5, 30), 16) == (16, 32)


@pytest.mark.parametrize("name", DOUBLE_NAMES)
def test_forward_details(model_cache, name):
    model = _cached(model_cache, name, {})
    x = torch.randn(2, 1, *DETAILS_HW)
    with torch.no_grad():
        details = model.forward_details(x)
        logits = model(x)
    assert set(details) == {"output1", "multiply", "output2"}
    for value in details.values():
        assert value.shape == (2, 1, *DETAILS_HW)
        assert torch.isfinite(value).all()
    assert ((details["output1"] >= 0) & (details["output1"] <= 1)).all()
    assert torch.allclose(details["multiply"], x * details["output1"])
    assert torch.allclose(details["output2"], torch.sigmoid(logits), atol=1e-6)


def test_train_with_batch_of_one():
    """ASPP's pooled branch is 1x1: a batch of one must still train (Keras does)."""
    torch.manual_seed(4)
    model = build_model("dlunet").train()
    model(torch.randn(1, 1, *TINY_HW)).sum().backward()
    bn = _SingleValueBatchNorm2d(4)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    assert torch.equal(bn(x), bn.bias.view(1, 4, 1, 1))
    assert torch.allclose(bn.running_mean, 0.01 * x.view(4))
    assert torch.allclose(bn.running_var, torch.full((4,), 0.99))


# --- VGG19 encoder --------------------------------------------------------------------------


def _torchvision_like_vgg19_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ``vgg19().state_dict()`` look-alike: random features, classifier keys.

    The classifier tensors have torchvision's shapes but are stride-0 views of one value, so
    the file stays small (they must be ignored anyway).
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    idx, in_ch = 0, 3
    for v in VGG19_CFG:
        if v == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn(int(v), in_ch, 3, 3, generator=gen) * 0.01
        state[f"features.{idx}.bias"] = torch.randn(int(v), generator=gen)
        in_ch, idx = int(v), idx + 2
    for i, (out_f, in_f) in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096))):
        state[f"classifier.{i}.weight"] = torch.zeros(1).expand(out_f, in_f)
        state[f"classifier.{i}.bias"] = torch.zeros(out_f)
    return state


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = _torchvision_like_vgg19_state()
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path, state


def test_vgg_features_indexed_like_torchvision():
    features = make_vgg19_features(37)
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    relus = [i for i, m in enumerate(features) if isinstance(m, nn.ReLU)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert pools == [4, 9, 18, 27, 36]
    assert relus == [c + 1 for c in convs]


@pytest.mark.parametrize(
    ("name", "length", "skip_ends"),
    [("dbunet", 36, [4, 9, 18, 27]), ("dlunet", 27, [4, 9, 18]), ("dlunet-b4c3", 25, [4, 9, 16])],
)
def test_vgg_encoder_cut_and_skips(name, length, skip_ends):
    with torch.device("meta"):
        model = build_model(name)
    encoder = model.encoder
    assert isinstance(encoder, VGG19Encoder) and len(encoder.features) == length
    torch.manual_seed(5)
    small = VGG19Encoder(encoder.skip_names, encoder.out_name).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out, skips = small(x)
        assert torch.equal(out, small.features(x))
        assert len(skips) == len(skip_ends)
        for skip, end in zip(skips, skip_ends):
            assert torch.equal(skip, small.features[:end](x))  # post-ReLU output of the slice


@pytest.mark.parametrize(("name", "n_tensors"), [("dlunet", 24), ("dlunet-b4c3", 22)])
def test_load_vgg19_weights_into_model(vgg19_file, caplog, name, n_tensors):
    path, state = vgg19_file
    torch.manual_seed(6)
    model = build_model(name)
    aspp_before = model.aspp1.project.conv.weight.clone()
    with caplog.at_level(logging.INFO, logger="train.models.vgg"):
        load_vgg19_weights(model, path)
    assert f"loaded {n_tensors} VGG19 tensors" in caplog.text
    encoder_state = model.encoder.state_dict()
    assert len(encoder_state) == n_tensors
    for key, value in encoder_state.items():
        assert torch.equal(value, state[key]), key
    assert torch.equal(model.aspp1.project.conv.weight, aspp_before)


def test_load_vgg19_weights_encoder_only_state(tmp_path):
    torch.manual_seed(7)
    src = VGG19Encoder(["block1_conv2"], "block5_conv4")
    path = tmp_path / "encoder.pt"
    torch.save(src.state_dict(), path)
    torch.manual_seed(8)
    dst = VGG19Encoder(["block1_conv2"], "block5_conv4")
    load_vgg19_weights(dst, path)
    for key, value in dst.state_dict().items():
        assert torch.equal(value, src.state_dict()[key])


def test_load_vgg19_weights_wrong_files(tmp_path, vgg19_file):
    encoder = VGG19Encoder(["block1_conv2"], "block2_conv2")
    with pytest.raises(UserError, match="does not exist"):
        load_vgg19_weights(encoder, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read") as info:
        load_vgg19_weights(encoder, garbage)
    assert str(garbage) in str(info.value)
    as_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], as_list)
    with pytest.raises(UserError, match="not a state dict"):
        load_vgg19_weights(encoder, as_list)
    # Missing keys (e.g. the first layers only).
    _, state = vgg19_file
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("features.0.")}, partial)
    with pytest.raises(UserError, match=r"missing 6 key\(s\): features\.2\.weight"):
        load_vgg19_weights(encoder, partial)
    # Wrong shape (e.g. a 1-channel first conv).
    wrong = dict(state)
    wrong["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    wrong_path = tmp_path / "wrong.pth"
    torch.save({k: v for k, v in wrong.items() if k.startswith("features.")}, wrong_path)
    with pytest.raises(UserError, match=r"features\.0\.weight: shape \(64, 1, 3, 3\), expected \(64, 3, 3, 3\)"):
        load_vgg19_weights(encoder, wrong_path)
    # A model without a VGG encoder.
    with torch.device("meta"):
        unet = build_model("unet")
    with pytest.raises(UserError, match="no VGG19 encoder"):
        load_vgg19_weights(unet, vgg19_file[0])


# --- complexity -----------------------------------------------------------------------------


def test_gflops_convention():
    """FlopCounterMode counts 2 FLOPs per conv MAC; the hand count for U-Net is 23.54 GMAC."""
    with torch.device("meta"):
        unet = build_model("unet")
        lunet = build_model("lunet")
    assert gflops(unet) == pytest.approx(2 * 23_537_737_728 / 1e9, rel=1e-6)
    assert gflops(lunet) == pytest.approx(35.9, abs=0.05)  # DESIGN.md's L-UNet figure
    assert gflops(unet, (128, 96)) == pytest.approx(gflops(unet) / 9, rel=1e-6)


def test_model_table():
    rows = model_table(["lunet", "dlunet"])
    assert [r["name"] for r in rows] == ["lunet", "dlunet"]
    assert rows[0]["keras_total"] == 1_952_485 and rows[1]["trainable"] == 14_769_450
    assert 100 < float(rows[1]["gflops"]) < 200


# --- L-UNet width and the cascade's localiser (lunet-coarse) ---------------------------------


def _lunet_keras_count(filters: tuple[int, ...], bottleneck: int, bn2: bool = True) -> int:
    """Keras "Total params" of an L-UNet from its filter counts (3x3 convs with bias, BN = 4 per channel)."""

    def conv(cin: int, cout: int, k: int = 3) -> int:
        return k * k * cin * cout + cout

    def pair(cin: int, cout: int) -> int:
        return conv(cin, cout) + 4 * cout + conv(cout, cout) + (4 * cout if bn2 else 0)

    total, cin = 0, 1
    for f in filters:
        total += pair(cin, f)
        cin = f
    total += pair(cin, bottleneck)
    cin = bottleneck
    for f in reversed(filters):
        total += pair(cin + f, f)  # upsampled input concatenated with the skip
        cin = f
    return total + conv(cin, 2) + conv(2, 1, k=1)  # the 2-channel head


def test_lunet_count_formula_matches_table_ii():
    assert _lunet_keras_count((32, 64, 128), 256) == 1_952_485
    assert _lunet_keras_count((32, 64, 128), 256, bn2=False) == 1_949_669


@pytest.mark.parametrize(("width", "filters", "bottleneck"),
                         [(1.0, (32, 64, 128), 256), (0.5, (16, 32, 64), 128), (0.25, (8, 16, 32), 64),
                          (0.75, (24, 48, 96), 192), (0.1, (4, 6, 13), 26), (0.01, (4, 4, 4), 4)])
def test_lunet_width_scales_the_filters(width, filters, bottleneck):
    from train.models.lunet import scaled_filters

    assert scaled_filters(width) == (filters, bottleneck)
    model = build_model("lunet", width=width)
    assert keras_param_count(model) == _lunet_keras_count(filters, bottleneck)
    head = build_model("lunet", variant="head", width=width)
    assert keras_param_count(head) == _lunet_keras_count(filters, bottleneck, bn2=False)


def test_lunet_width_parameter_counts():
    assert keras_param_count(build_model("lunet", width=1.0)) == 1_952_485  # the paper's network
    assert keras_param_count(build_model("lunet", width=1)) == keras_param_count(build_model("lunet"))
    half = keras_param_count(build_model("lunet", width=0.5))
    # filters 16/32/64, bottleneck 128: about a quarter of the parameters
    assert half == _lunet_keras_count((16, 32, 64), 128) == 490_101
    assert 0.24 < half / 1_952_485 < 0.26
    assert "width=0.5" in repr(build_model("lunet", width=0.5))
    assert "width" not in repr(build_model("lunet")).split("\n")[0]


@pytest.mark.parametrize("width", [0, 0.0, -0.5, 4.5, float("nan"), float("inf"), "wide", None])
def test_lunet_bad_width_is_a_user_error(width):
    with pytest.raises(UserError, match="lunet width"):
        build_model("lunet", width=width)
    with pytest.raises(UserError, match="lunet width"):
        build_model("lunet-coarse", width=width)


def test_lunet_width_limits_accepted():
    from train.models.lunet import scaled_filters

    assert scaled_filters(4.0) == ((128, 256, 512), 1024)
    assert scaled_filters("0.5") == ((16, 32, 64), 128)


def test_lunet_coarse_keeps_the_input_size():
    torch.manual_seed(0)
    model = build_model("lunet-coarse").eval()
    assert model.stride == model_stride("lunet-coarse") == 32 and model.has_vgg_encoder is False
    assert model.net.width == 0.5  # the default localiser is a half-width L-UNet
    assert keras_param_count(model) == _lunet_keras_count((16, 32, 64), 128)
    seen = []
    model.net.register_forward_hook(lambda m, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    for shape in [(1, 1, 96, 128), (2, 1, 288, 384), (1, 1, 32, 64)]:
        with torch.no_grad():
            y = model(torch.randn(*shape))
        assert y.shape == shape and torch.isfinite(y).all()
        n, _, h, w = shape
        assert seen[-1] == ((n, 1, h // 4, w // 4), (n, 1, h // 4, w // 4)), "the L-UNet runs at a quarter"
    narrow = build_model("lunet-coarse", width=0.25, variant="head")
    assert narrow.net.variant == "head" and keras_param_count(narrow) == _lunet_keras_count((8, 16, 32), 64, False)
    assert "pool=4, width=0.25" in repr(narrow)


def test_lunet_coarse2_runs_at_half_the_resolution():
    torch.manual_seed(0)
    model = build_model("lunet-coarse2").eval()
    assert model.stride == model_stride("lunet-coarse2") == 16 and model.net.width == 0.5
    # the same half-width L-UNet as lunet-coarse's: only the pool differs
    assert keras_param_count(model) == keras_param_count(build_model("lunet-coarse"))
    seen = []
    model.net.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    for shape in [(2, 1, 288, 384), (1, 1, 16, 48)]:
        with torch.no_grad():
            y = model(torch.randn(*shape))
        assert y.shape == shape and torch.isfinite(y).all()
        assert seen[-1] == (shape[0], 1, shape[2] // 2, shape[3] // 2), "the L-UNet runs at half the resolution"
    assert "pool=2, width=0.5" in repr(model)
    check_input_size("lunet-coarse2", (384, 272))
    with pytest.raises(UserError, match=r"not divisible by 16 \(the stride of lunet-coarse2\)"):
        check_input_size("lunet-coarse2", (384, 280))


@pytest.mark.parametrize("hw", [(96, 120), (80, 128), (48, 64), (16, 16)])
def test_lunet_coarse_stride_errors(hw):
    model = build_model("lunet-coarse", width=0.25)
    with pytest.raises(UserError, match=r"not divisible by 32 \(the stride of lunet-coarse\)"):
        model(torch.randn(1, 1, *hw))
    with pytest.raises(UserError, match="not divisible by 32"):
        check_input_size("lunet-coarse", (hw[1], hw[0]))
    with pytest.raises(UserError, match=r"\[N, 1, H, W\]"):
        model(torch.randn(1, 3, 64, 64))
