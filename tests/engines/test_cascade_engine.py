"""Cascade checkpoints on every backend (engines/cascade.py): parity with CascadeNet, the part cache,
options, refusals and mn-export's answer.

The cascades here are small (128x96 frames, a 64x32 window, width-0.25 networks) with random
weights, except that the localiser is wired to light up where the frame is bright: channel 0
of its first encoder block, last decoder block and head passes the (pooled) input through, and
the head's last conv turns it into ``GAIN * x - OFFSET``. A frame with a bright disc on faint
noise then gives a clear blob (logits about +-10) at the disc, so the window is well-defined and
the same in every backend, and each image of a batch can put its nerve somewhere else.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import engines.export
from engines import Engine, EngineError, load_engine
from engines.backends import torch_backend
from engines.backends.tensorrt_backend import tensorrt_available
from engines.cascade import CascadeEngine, is_cascade, part_paths
from engines.cache import file_sha256
from engines.export_cli import cli as export_cli
from engines.registry import BACKENDS, LoadOptions, ModelSource, Probes
from train.cascade import CascadeNet, crop_box
from train.checkpoint import model_from_checkpoint, save_checkpoint
from tests.engines._helpers import make_checkpoint

FRAME = (128, 96)
CROP = (64, 32)
LOCALISER = {"name": "lunet-coarse", "kwargs": {"width": 0.25}}
REFINER = {"name": "lunet", "kwargs": {"width": 0.25}}
GAIN, OFFSET = 5.0, 10.0
NERVES = [(60, 50), (6, 88), (121, 5)]
"""Disc centres (x, y) of the batch: inside, clamped at the bottom-left, clamped at the top-right."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _pass_channel0(conv: torch.nn.Conv2d, src: int) -> None:
    """Output channel 0 of ``conv`` = input channel ``src`` (centre tap 1, no bias)."""
    k = conv.kernel_size[0] // 2
    conv.weight[0].zero_()
    conv.weight[0, src, k, k] = 1.0
    conv.bias[0] = 0.0


@torch.no_grad()
def wire_bright_blob(localiser: torch.nn.Module) -> None:
    """Make a ``lunet-coarse`` output ``GAIN * relu(avgpool(x)) - OFFSET`` (upsampled) on channel 0."""
    net = localiser.net
    for block in (net.encoder[0], net.decoder[-1].block):
        for conv_bn_relu in (block.conv1, block.conv2):
            if hasattr(conv_bn_relu, "bn"):  # identity on channel 0 (eval mode)
                bn = conv_bn_relu.bn
                bn.weight[0], bn.bias[0], bn.running_mean[0], bn.running_var[0] = 1.0, 0.0, 0.0, 1.0 - bn.eps
    _pass_channel0(net.encoder[0].conv1.conv, 0)
    _pass_channel0(net.encoder[0].conv2.conv, 0)
    last = net.decoder[-1].block
    skip_ch0 = last.conv1.conv.in_channels - net.encoder[0].conv2.conv.out_channels  # concat is [up, skip]
    _pass_channel0(last.conv1.conv, skip_ch0)
    _pass_channel0(last.conv2.conv, 0)
    _pass_channel0(net.head.conv, 0)
    net.head.conv.weight[1].zero_()
    net.head.conv.bias[1] = 0.0
    net.head.out.weight.zero_()
    net.head.out.weight[0, 0] = GAIN
    net.head.out.bias[0] = -OFFSET


def make_cascade(path: Path, seed: int = 0, crop: tuple[int, int] = CROP, frame: tuple[int, int] = FRAME,
                 config_crop: list[int] | None = None, **kwargs: object) -> Path:
    """A cascade checkpoint whose localiser finds bright discs and whose refiner is random (seeded); ``kwargs``
    join the config's model kwargs (e.g. ``tta``)."""
    torch.manual_seed(seed)
    net = CascadeNet(localiser=LOCALISER, refiner=REFINER, crop=crop)
    wire_bright_blob(net.localiser)
    config = {"model": {"name": "cascade", "kwargs": {"localiser": LOCALISER, "refiner": REFINER,
                                                      "crop": config_crop or list(crop), **kwargs}},
              "preprocessing": {"size": list(frame), "id": "test"}}
    save_checkpoint(path, net, config)
    return path


def frames_with_nerves(centres: list[tuple[int, int]], seed: int = 0) -> np.ndarray:
    """float32 ``[N, 1, H, W]``: faint noise with a bright disc (radius 8, value 4) at each centre."""
    rng = np.random.default_rng(seed)
    w, h = FRAME
    out = (0.3 * rng.standard_normal((len(centres), 1, h, w))).astype(np.float32)
    for image, (cx, cy) in zip(out, centres):
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, (cx, cy), 8, 1, -1)
        image[0][disc > 0] = 4.0
    return out


def cascadenet(path: Path, batch: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The torch reference: CascadeNet's probabilities and boxes."""
    net, _ = model_from_checkpoint(path, "cpu")
    with torch.inference_mode():
        parts = net.forward_parts(torch.from_numpy(batch))
    return torch.sigmoid(parts["logits"]).numpy(), parts["boxes"]


def expected_box(centre: tuple[int, int]) -> tuple[int, int]:
    return crop_box(centre, CROP, FRAME)


def inside(boxes: list[tuple[int, int]]) -> np.ndarray:
    """Boolean ``[N, 1, H, W]``: the windows."""
    mask = np.zeros((len(boxes), 1, FRAME[1], FRAME[0]), bool)
    for i, (x0, y0) in enumerate(boxes):
        mask[i, :, y0:y0 + CROP[1], x0:x0 + CROP[0]] = True
    return mask


# ---------------------------------------------------------------------------------------------
# fixtures: one cascade, its onnxruntime engine (exported once for the module)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cascade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cascade(tmp_path_factory.mktemp("cascade") / "cascade.pt")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def ort_engine(cascade: Path, cache: Path) -> CascadeEngine:
    engine = load_engine(cascade, "onnxruntime", cache_dir=cache, dynamic_batch=True, threads=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return frames_with_nerves(NERVES)


# ---------------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------------

def test_the_wired_localiser_finds_the_discs(cascade: Path, batch: np.ndarray) -> None:
    _, boxes = cascadenet(cascade, batch)
    assert boxes[1] == (0, FRAME[1] - CROP[1]) and boxes[2] == (FRAME[0] - CROP[0], 0)  # clamped at the border
    x0, y0 = expected_box(NERVES[0])
    assert abs(boxes[0][0] - x0) <= 3 and abs(boxes[0][1] - y0) <= 3


def test_onnxruntime_matches_cascadenet(ort_engine: CascadeEngine, cascade: Path, batch: np.ndarray) -> None:
    assert isinstance(ort_engine, CascadeEngine)
    assert ort_engine.input_shape == (-1, 1, FRAME[1], FRAME[0]) and ort_engine.size == FRAME
    expected, expected_boxes = cascadenet(cascade, batch)
    parts = ort_engine.infer_parts(batch)
    assert parts["boxes"] == expected_boxes and len(set(expected_boxes)) == 3
    prob = ort_engine.infer(batch)
    assert prob.dtype == np.float32 and prob.shape == batch.shape
    np.testing.assert_allclose(prob, expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(prob, parts["prob"])
    window = inside(expected_boxes)
    assert np.all(prob[~window] == 0.0)  # exactly background outside the window
    assert parts["localiser"].shape == batch.shape and parts["localiser"][~window].max() < 0.01
    # one image at a time gives the same as the batch of 3
    for i in range(len(batch)):
        np.testing.assert_allclose(ort_engine.infer(batch[i:i + 1]), prob[i:i + 1], atol=1e-5, rtol=0)


def test_window_hints_place_the_window_and_skip_the_localiser(ort_engine: CascadeEngine, batch: np.ndarray,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    plain = ort_engine.infer_parts(batch)
    assert plain["window_source"] == ["localiser"] * 3
    # no hint at all: exactly infer()
    prob, sources = ort_engine.infer_hinted(batch, [None, None, None])
    np.testing.assert_array_equal(prob, plain["prob"])
    assert sources == ["localiser"] * 3
    # a hint on every frame: the localiser does not run, each window is centred on its hint (clamped)
    calls = []
    real = ort_engine.localiser.infer
    monkeypatch.setattr(ort_engine.localiser, "infer", lambda x: calls.append(len(x)) or real(x))
    hints = [(60.0, 50.0), (100.0, 20.0), (0.0, 0.0)]
    parts = ort_engine.infer_parts(batch, hints)
    assert calls == [] and parts["localiser"] is None and parts["window_source"] == ["tracked"] * 3
    assert parts["boxes"] == [expected_box((60, 50)), expected_box((100, 20)), (0, 0)]
    assert np.all(parts["prob"][~inside(parts["boxes"])] == 0.0)
    # the hint at the localiser's own window gives the localiser's result
    own = [(x0 + CROP[0] / 2, y0 + CROP[1] / 2) for x0, y0 in plain["boxes"]]
    np.testing.assert_allclose(ort_engine.infer_hinted(batch, own)[0], plain["prob"], atol=1e-6, rtol=0)
    # mixed: the localiser places the frames without a hint, as it would alone
    mixed = ort_engine.infer_parts(batch, [None, (100.0, 20.0), None])
    assert calls == [3] and mixed["window_source"] == ["localiser", "tracked", "localiser"]
    assert mixed["boxes"] == [plain["boxes"][0], expected_box((100, 20)), plain["boxes"][2]]
    np.testing.assert_allclose(mixed["prob"][[0, 2]], plain["prob"][[0, 2]], atol=1e-6, rtol=0)
    with pytest.raises(EngineError, match="2 window centres for a batch of 3"):
        ort_engine.infer_hinted(batch, [None, None])


def bright_refiner(windows: np.ndarray) -> np.ndarray:
    """A stand-in refiner whose outline is exactly the window's bright pixels (the disc)."""
    return (windows > 2.0).astype(np.float32)


def test_a_verified_hint_is_kept_on_the_same_nerve_and_dropped_off_it(ort_engine: CascadeEngine, batch: np.ndarray,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    refined: list[int] = []
    monkeypatch.setattr(ort_engine.refiner, "infer", lambda w: refined.append(len(w)) or bright_refiner(w))
    plain = ort_engine.infer_parts(batch)
    # hints within the refiner's training jitter of the localiser's windows: kept without a second refiner pass
    refined.clear()
    near = ort_engine.infer_parts(batch, [(56.0, 48.0), (10.0, 85.0), (118.0, 8.0)], [True] * 3)
    assert near["window_source"] == ["confirmed"] * 3 and near["compared"] == [False] * 3
    assert refined == [3] and near["localiser"] is not None
    # frame 0: a hint 18 px off (beyond the jitter) whose window still holds the disc: outlines compared, the same
    # nerve, kept; frame 1: no hint, the localiser's; frame 2: a hint whose window misses its disc (a drifted
    # track): the localiser's window replaces it
    hints = [(78.0, 50.0), None, (30.0, 20.0)]
    refined.clear()
    parts = ort_engine.infer_parts(batch, hints, [True, False, True])
    assert parts["window_source"] == ["confirmed", "localiser", "localiser"]
    assert parts["compared"] == [True, False, True] and refined == [2, 3]  # the 2 hinted windows, then all 3 own
    assert parts["boxes"] == [expected_box((78, 50)), plain["boxes"][1], plain["boxes"][2]]
    np.testing.assert_array_equal(parts["prob"][1:], plain["prob"][1:])
    assert np.all(parts["prob"][0][~inside(parts["boxes"][:1])[0]] == 0.0)  # pasted at the hinted window
    # without the check the same hints are taken as they are (and the localiser runs only for frame 1)
    unchecked = ort_engine.infer_parts(batch, hints)
    assert unchecked["window_source"] == ["tracked", "localiser", "tracked"]
    assert unchecked["boxes"][2] == expected_box((30, 20)) and unchecked["prob"][2].max() == 0.0
    # the hinted engine's answer is the same
    prob, sources = ort_engine.infer_hinted(batch, hints, [True, False, True])
    np.testing.assert_array_equal(prob, parts["prob"])
    assert sources == parts["window_source"]
    with pytest.raises(EngineError, match="2 verify flags for a batch of 3"):
        ort_engine.infer_parts(batch, hints, [True, False])


def test_a_static_batch_refiner_verifies_a_partly_hinted_batch(cascade: Path, cache: Path, batch: np.ndarray,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with load_engine(cascade, "torch", device="cpu", cache_dir=cache, batch=3) as engine:
        monkeypatch.setattr(engine.refiner, "infer", lambda w: bright_refiner(w) if len(w) == 3 else 1 / 0)
        plain = engine.infer_parts(batch)
        parts = engine.infer_parts(batch, [None, None, (40.0, 5.0)], [False, False, True])  # off the disc
        assert parts["window_source"] == ["localiser"] * 3 and parts["compared"] == [False, False, True]
        np.testing.assert_array_equal(parts["prob"], plain["prob"])  # the localiser's windows replaced the hint


def test_outlines_agree_on_overlap_of_the_smaller_outline() -> None:
    from engines.cascade import outlines_agree

    a = np.zeros((40, 40), np.float32)
    a[10:20, 10:20] = 0.9  # 100 px
    b = np.zeros_like(a)
    b[10:30, 15:35] = 0.9  # 400 px, sharing 50 px of a's 100: exactly half
    assert outlines_agree(a, b) and outlines_agree(b, a)
    b[10, 15:20] = 0.4  # now 45 of a's 100 (below the mask threshold of 0.5)
    assert not outlines_agree(a, b) and not outlines_agree(b, a)
    assert not outlines_agree(a, np.zeros_like(a)) and not outlines_agree(np.zeros_like(a), np.zeros_like(a))
    assert outlines_agree(a, a)


def test_an_engine_without_a_window_ignores_hints(cascade: Path, cache: Path, batch: np.ndarray) -> None:
    refiner = load_engine(cascade, "onnxruntime", cache_dir=cache, dynamic_batch=True).refiner
    try:
        assert not refiner.window_hints
        x = batch[:, :, :CROP[1], :CROP[0]].copy()
        prob, sources = refiner.infer_hinted(x, [(1.0, 1.0)] * 3)
        np.testing.assert_array_equal(prob, refiner.infer(x))
        assert sources == [None] * 3
    finally:
        refiner.close()


def test_torch_backend_equals_cascadenet(cascade: Path, cache: Path, batch: np.ndarray) -> None:
    expected, expected_boxes = cascadenet(cascade, batch)
    with load_engine(cascade, "torch", device="cpu", cache_dir=cache, dynamic_batch=True) as engine:
        assert isinstance(engine, CascadeEngine) and engine.backend == "torch"
        parts = engine.infer_parts(batch)
        assert parts["boxes"] == expected_boxes
        np.testing.assert_allclose(parts["prob"], expected, atol=1e-5, rtol=0)


def test_static_batch_reaches_both_parts(cascade: Path, cache: Path, batch: np.ndarray) -> None:
    with load_engine(cascade, "torch", device="cpu", cache_dir=cache, batch=3) as engine:
        assert engine.input_shape == (3, 1, FRAME[1], FRAME[0])
        assert engine.localiser.input_shape == (3, 1, FRAME[1], FRAME[0])
        assert engine.refiner.input_shape == (3, 1, CROP[1], CROP[0])
        assert engine.infer(batch).shape == batch.shape
        with pytest.raises(EngineError, match=r"expected float32 \[3, 1, 96, 128\]"):
            engine.infer(batch[:1])


def test_auto_on_a_cpu_runs_onnxruntime(ort_engine: CascadeEngine, cascade: Path, cache: Path,
                                        batch: np.ndarray) -> None:
    no_cuda = Probes(tensorrt=lambda: (False, "stub"), cuda=lambda: (False, "stub: no GPU"))
    with load_engine(cascade, "auto", cache_dir=cache, dynamic_batch=True, probes=no_cuda) as engine:
        assert isinstance(engine, CascadeEngine) and (engine.backend, engine.precision) == ("onnxruntime", "fp32")
        assert any(n.startswith("auto fell back to onnxruntime") for n in engine.info.notes)
        assert not any(n.startswith("auto") for n in engine.localiser.info.notes)  # said once, on the cascade
        np.testing.assert_array_equal(engine.infer(batch), ort_engine.infer(batch))


# ---------------------------------------------------------------------------------------------
# the part cache
# ---------------------------------------------------------------------------------------------

def test_parts_are_cached(ort_engine: CascadeEngine, cascade: Path, cache: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    parts = part_paths(file_sha256(cascade), cache)
    files = [*parts.values(), *cache.glob("*.onnx")]
    assert all(p.is_file() for p in parts.values()) and len(list(cache.glob("*.onnx"))) == 2
    before = {p: p.stat().st_mtime_ns for p in files}

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cascade's parts were exported again")

    monkeypatch.setattr(engines.export, "export_onnx", no_export)
    with load_engine(cascade, "onnxruntime", cache_dir=cache, dynamic_batch=True) as engine:
        assert engine.localiser.path.parent == cache and engine.refiner.path.parent == cache
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(cache.glob("*.onnx")) == sorted(p for p in files if p.suffix == ".onnx")


def test_part_checkpoints_are_ordinary_checkpoints(ort_engine: CascadeEngine, cascade: Path, cache: Path) -> None:
    parts = part_paths(file_sha256(cascade), cache)
    full, _ = model_from_checkpoint(cascade)
    for part, size in (("localiser", FRAME), ("refiner", CROP)):
        model, config = model_from_checkpoint(parts[part])
        assert config["model"] == (LOCALISER if part == "localiser" else REFINER)
        assert config["preprocessing"] == {"size": list(size), "id": "test"}
        assert config["cascade_part"]["cascade_sha256"] == file_sha256(cascade)
        reference = getattr(full, part).state_dict()
        assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    assert not is_cascade(parts["localiser"])


def test_a_changed_cascade_gets_new_parts(tmp_path: Path, batch: np.ndarray) -> None:
    path, cache = make_cascade(tmp_path / "cascade.pt", seed=0), tmp_path / "cache"
    with load_engine(path, "torch", device="cpu", cache_dir=cache, dynamic_batch=True) as engine:
        first = engine.infer(batch)
        old = {engine.localiser.info.source, engine.refiner.info.source}
    make_cascade(path, seed=1)  # retrained in place: same name, other weights
    expected, _ = cascadenet(path, batch)
    with load_engine(path, "torch", device="cpu", cache_dir=cache, dynamic_batch=True) as engine:
        new = {engine.localiser.info.source, engine.refiner.info.source}
        second = engine.infer(batch)
    assert not old & new and all(Path(p).is_file() for p in old | new)
    assert new == {os.fspath(p) for p in part_paths(file_sha256(path), cache).values()}
    assert np.abs(second - first).max() > 1e-3
    np.testing.assert_allclose(second, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# options and refusals
# ---------------------------------------------------------------------------------------------

def test_other_size_is_refused_and_the_frame_size_accepted(cascade: Path, cache: Path) -> None:
    with pytest.raises(EngineError, match=r"cascade made for 128x96 frames .* not 256x192; drop --size or pass "
                                          r"--size 128x96"):
        load_engine(cascade, "torch", device="cpu", cache_dir=cache, size=(256, 192))
    with load_engine(cascade, "torch", device="cpu", cache_dir=cache, size=FRAME) as engine:
        assert engine.size == FRAME


def test_options_reach_both_parts(cascade: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                  batch: np.ndarray) -> None:
    """Any backend (here a stand-in 'tensorrt' that runs torch) gets the same options for both parts."""
    seen = []

    def loader(source: ModelSource, options: LoadOptions) -> Engine:
        seen.append((source.path.name, options))
        return torch_backend.load(source, dataclasses.replace(options, device="cpu", precision="fp32"))

    monkeypatch.setitem(BACKENDS, "tensorrt", dataclasses.replace(
        BACKENDS["tensorrt"], probe=lambda: (True, "stub"), loader=loader))
    with load_engine(cascade, "tensorrt", precision="fp16", cache_dir=cache, batch=2, dynamic_batch=True,
                     max_batch=4, workspace_mb=64) as engine:
        assert engine.infer(batch).shape == batch.shape
    (loc_name, loc), (ref_name, ref) = seen
    assert loc_name.endswith("-localiser.pt") and ref_name.endswith("-refiner.pt")
    assert (loc.size, ref.size) == (FRAME, CROP)
    for options in (loc, ref):
        assert (options.precision, options.batch, options.dynamic_batch, options.max_batch,
                options.workspace_mb, Path(options.cache_dir)) == ("fp16", 2, True, 4, 64, cache)
        assert options.notes == []


def test_hflip_matches_cascadenet_on_every_batch_shape(cascade: Path, tmp_path: Path, cache: Path,
                                                       batch: np.ndarray) -> None:
    flipped = make_cascade(tmp_path / "hflip.pt", tta="hflip")  # the same weights as ``cascade`` (seed 0)
    expected, boxes = cascadenet(flipped, batch)
    plain, _ = cascadenet(cascade, batch)
    window = inside(boxes)
    assert np.abs(expected - plain)[window].max() > 1e-3  # the random refiner is not mirror-symmetric
    assert expected[~window].max() < 1e-12  # sigmoid(BACKGROUND_LOGIT)
    with load_engine(flipped, "onnxruntime", cache_dir=cache, dynamic_batch=True, threads=2) as engine:
        assert engine.tta == "hflip" and engine.describe()["cascade"]["tta"] == "hflip"
        calls = []
        infer = engine.refiner.infer
        engine.refiner.infer = lambda w: calls.append(len(w)) or infer(w)  # type: ignore[method-assign]
        parts = engine.infer_parts(batch)
        assert parts["boxes"] == boxes and calls == [2 * len(batch)]  # both views in one call
        np.testing.assert_allclose(parts["prob"], expected, atol=1e-4, rtol=0)
        hinted, sources = engine.infer_hinted(batch, [(40.0, 40.0)] * len(batch))  # the tracked path flips too
        assert sources == ["tracked"] * len(batch)
        ref_windows = np.stack([b[:, 24:56, 8:72] for b in batch])  # crop_box((40, 40), 64x32) = (8, 24)
        by_hand = 0.5 * (infer(ref_windows) + infer(np.ascontiguousarray(ref_windows[..., ::-1]))[..., ::-1])
        np.testing.assert_allclose(hinted[:, :, 24:56, 8:72], by_hand, atol=1e-5, rtol=0)
    with load_engine(flipped, "torch", device="cpu", cache_dir=cache, batch=1) as engine:  # static: two calls
        for i in range(len(batch)):
            np.testing.assert_allclose(engine.infer(batch[i:i + 1]), expected[i:i + 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mirrored", [None, [False, True]], ids=["plain", "mirrored"])
def test_an_ensemble_refiner_runs_as_one_session(tmp_path: Path, cache: Path, batch: np.ndarray,
                                                 mirrored: list[bool] | None) -> None:
    """A cascade whose refiner is an ensemble (python -m train.cascade --refiner A --refiner B [--mirror alternate]):
    the engines export the ensemble as one graph, and its probabilities are CascadeNet's (the members' mean, the
    mirrored member's of the mirror image flipped back)."""
    ensemble = {"name": "ensemble", "kwargs": {"members": [REFINER, REFINER],
                                               **({"mirrored": mirrored} if mirrored else {})}}
    torch.manual_seed(3)
    net = CascadeNet(localiser=LOCALISER, refiner=ensemble, crop=CROP)
    wire_bright_blob(net.localiser)
    path = tmp_path / "ensemble.pt"
    save_checkpoint(path, net, {"model": {"name": "cascade", "kwargs": {"localiser": LOCALISER, "refiner": ensemble,
                                                                         "crop": list(CROP)}},
                                "preprocessing": {"size": list(FRAME), "id": "test"}})
    expected, boxes = cascadenet(path, batch)
    net.eval()
    with torch.inference_mode():  # the members' mean, by hand, in the first window
        x0, y0 = boxes[0]
        window = torch.from_numpy(batch[:1, :, y0:y0 + CROP[1], x0:x0 + CROP[0]])
        a, b = net.refiner.members
        second = torch.flip(torch.sigmoid(b(torch.flip(window, [3]))), [3]) if mirrored else torch.sigmoid(b(window))
        by_hand = (torch.sigmoid(a(window)) + second) / 2
    np.testing.assert_allclose(expected[:1, :, y0:y0 + CROP[1], x0:x0 + CROP[0]], by_hand.numpy(), atol=1e-5, rtol=0)
    with load_engine(path, "onnxruntime", cache_dir=cache, dynamic_batch=True, threads=2) as engine:
        parts = engine.infer_parts(batch)
        assert parts["boxes"] == boxes
        assert engine.describe()["cascade"]["refiner"]["model"]["name"] == "ensemble"
        np.testing.assert_allclose(parts["prob"], expected, atol=1e-4, rtol=0)


def test_an_ensemble_localiser_runs_as_one_session(cascade: Path, ort_engine: CascadeEngine, tmp_path: Path,
                                                   cache: Path, batch: np.ndarray) -> None:
    """A cascade whose localiser is an ensemble (python -m train.cascade --localiser A --localiser B
    --localiser-mirror alternate): one localiser session whose probabilities are the members' mean, the mirrored
    member's flipped back; two copies of the wired localiser so place every window where the single one does."""
    ensemble = {"name": "ensemble", "kwargs": {"members": [LOCALISER, LOCALISER], "mirrored": [False, True]}}
    torch.manual_seed(3)
    net = CascadeNet(localiser=ensemble, refiner=REFINER, crop=CROP)
    for member in net.localiser.members:
        wire_bright_blob(member)
    path = tmp_path / "locens.pt"
    save_checkpoint(path, net, {"model": {"name": "cascade", "kwargs": {"localiser": ensemble, "refiner": REFINER,
                                                                         "crop": list(CROP)}},
                                "preprocessing": {"size": list(FRAME), "id": "test"}})
    expected, boxes = cascadenet(path, batch)
    _, single_boxes = cascadenet(cascade, batch)
    assert boxes == single_boxes and len(set(boxes)) == 3  # the mirrored member's map was flipped back
    with load_engine(path, "onnxruntime", cache_dir=cache, dynamic_batch=True, threads=2) as engine:
        parts = engine.infer_parts(batch)
        assert parts["boxes"] == boxes
        assert engine.describe()["cascade"]["localiser"]["model"]["name"] == "ensemble"
        np.testing.assert_allclose(parts["localiser"], ort_engine.infer_parts(batch)["localiser"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(parts["prob"], expected, atol=1e-4, rtol=0)


def test_load_engine_tta_overrides_the_cascades_own(cascade: Path, tmp_path: Path, cache: Path,
                                                    batch: np.ndarray) -> None:
    flipped = make_cascade(tmp_path / "hflip.pt", tta="hflip")
    expected, _ = cascadenet(flipped, batch)
    plain, _ = cascadenet(cascade, batch)
    with load_engine(cascade, "onnxruntime", cache_dir=cache, dynamic_batch=True, threads=2, tta="hflip") as engine:
        assert engine.tta == "hflip"
        assert any("test-time augmentation hflip (asked for" in n for n in engine.info.notes)
        np.testing.assert_allclose(engine.infer(batch), expected, atol=1e-4, rtol=0)
    with load_engine(flipped, "onnxruntime", cache_dir=cache, dynamic_batch=True, threads=2) as engine:
        assert any("hflip (the model's own" in n for n in engine.info.notes)
    with load_engine(flipped, "onnxruntime", cache_dir=cache, dynamic_batch=True, threads=2, tta="none") as engine:
        assert engine.tta == "none" and not any("test-time" in n for n in engine.info.notes)
        np.testing.assert_allclose(engine.infer(batch), plain, atol=1e-4, rtol=0)
    with pytest.raises(EngineError, match="unknown test-time augmentation 'rot90'.*none, hflip"):
        load_engine(cascade, "torch", device="cpu", cache_dir=cache, tta="rot90")
    single = make_checkpoint(tmp_path / "lunet.pt", "lunet", (64, 48))
    with pytest.raises(EngineError, match="is the cascade's refiner's.*leave out --tta"):
        load_engine(single, "torch", device="cpu", cache_dir=cache, tta="hflip")
    load_engine(single, "torch", device="cpu", cache_dir=cache, tta="none").close()  # none is every model's


def test_malformed_cascades_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"tta must be one of none, hflip, got 'vflip'; rebuild it"):
        load_engine(make_cascade(tmp_path / "vflip.pt", tta="vflip"), "torch", device="cpu", cache_dir=tmp_path)
    too_big = make_cascade(tmp_path / "big.pt", config_crop=[256, 32])
    with pytest.raises(EngineError, match=r"window \[256, 32\] does not fit its frame \[128, 96\]"):
        load_engine(too_big, "torch", device="cpu", cache_dir=tmp_path)
    payload = torch.load(make_cascade(tmp_path / "noref.pt"), weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if k.startswith("localiser.")}
    torch.save(payload, tmp_path / "noref.pt")
    with pytest.raises(EngineError, match=r"holds no refiner weights \('refiner\.\*' keys\); rebuild it with "
                                          r"python -m train.cascade"):
        load_engine(tmp_path / "noref.pt", "torch", device="cpu", cache_dir=tmp_path)


def test_is_cascade(cascade: Path, tmp_path: Path) -> None:
    assert is_cascade(cascade)
    assert not is_cascade(make_checkpoint(tmp_path / "lunet.pt", "lunet", (64, 48)))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert not is_cascade(tmp_path / "junk.pt")
    assert not is_cascade(tmp_path / "missing.pt")


def test_close_closes_both_parts(cascade: Path, cache: Path, batch: np.ndarray) -> None:
    engine = load_engine(cascade, "torch", device="cpu", cache_dir=cache, dynamic_batch=True)
    localiser, refiner = engine.localiser, engine.refiner
    engine.close()
    assert localiser._closed and refiner._closed
    with pytest.raises(EngineError, match="is closed"):
        engine.infer(batch)
    with pytest.raises(EngineError, match="is closed"):
        engine.infer_parts(batch)
    engine.close()  # twice is fine


def test_describe(ort_engine: CascadeEngine, cascade: Path) -> None:
    d = ort_engine.describe()
    assert (d["name"], d["backend"], d["precision"], d["device"]) == ("cascade", "onnxruntime", "fp32", "cpu")
    assert d["input_shape"] == [-1, 1, FRAME[1], FRAME[0]] and d["source"] == os.fspath(cascade)
    assert d["model"]["name"] == "cascade" and d["preprocessing"]["size"] == list(FRAME)
    assert d["cascade"]["crop"] == list(CROP)
    loc, ref = d["cascade"]["localiser"], d["cascade"]["refiner"]
    assert (loc["model"]["name"], loc["input_shape"]) == ("lunet-coarse", [-1, 1, FRAME[1], FRAME[0]])
    assert (ref["model"]["name"], ref["input_shape"]) == ("lunet", [-1, 1, CROP[1], CROP[0]])
    assert loc["backend"] == ref["backend"] == "onnxruntime"
    notes = " | ".join(d["notes"])
    assert "cascade: localiser lunet-coarse on 128x96" in notes and "cascade: refiner lunet on 64x32" in notes
    assert "CascadeEngine cascade backend=onnxruntime" in repr(ort_engine)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["onnx", "engine"])
def test_mn_export_refuses_a_cascade(cascade: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                     fmt: str) -> None:
    out = tmp_path / "cascade.onnx"
    assert export_cli(["--checkpoint", str(cascade), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mn-export: error:") and "Traceback" not in err
    assert "is a localise-then-refine cascade" in err and "Run it from its checkpoint" in err
    assert "engine cache" in err and not out.exists()


def test_export_onnx_refuses_a_cascade(cascade: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot be exported as one ONNX graph"):
        engines.export.export_onnx(cascade, tmp_path / "c.onnx")
    with pytest.raises(EngineError, match="cannot be exported as one ONNX graph"):
        engines.export.cached_onnx(cascade, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


# ---------------------------------------------------------------------------------------------
# real TensorRT (skipped without it, like tests/engines/test_tensorrt_backend.py)
# ---------------------------------------------------------------------------------------------

TRT_OK, TRT_REASON = tensorrt_available()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)
@pytest.mark.parametrize("precision, tol", [("fp32", 5e-3), ("fp16", 3e-2)])  # fp32 plans may use TF32
def test_tensorrt_matches_cascadenet(cascade: Path, tmp_path: Path, batch: np.ndarray, precision: str,
                                     tol: float) -> None:
    expected, expected_boxes = cascadenet(cascade, batch)
    with load_engine(cascade, "tensorrt", precision, cache_dir=tmp_path, dynamic_batch=True) as engine:
        assert isinstance(engine, CascadeEngine) and engine.backend == "tensorrt"
        parts = engine.infer_parts(batch)
        assert parts["boxes"] == expected_boxes
        np.testing.assert_allclose(parts["prob"], expected, atol=tol, rtol=0)
        assert engine.info.max_batch == engine.refiner.info.max_batch
