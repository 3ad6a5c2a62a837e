"""Tests for train.metrics on hand-drawn masks with known values (paper-code-spec.md §3.5, §4 item 7)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from train.metrics import (
    AGREEMENT_KEYS,
    MISSED_DSC,
    RESULT_KEYS,
    ROW_KEYS,
    csa_agreement,
    csa_rel_error,
    dice_hard,
    evaluate_native,
    evaluate_paper,
    format_summary,
    iou_hard,
    keras_batch_mean,
    median,
    native_areas,
    summary,
)

H, W = 32, 40  # a small "model resolution" for hand-drawn cases


def rect(shape: tuple[int, int], r0: int, r1: int, c0: int, c1: int, value: float = 1.0) -> np.ndarray:
    a = np.zeros(shape, dtype=np.float64)
    a[r0:r1, c0:c1] = value
    return a


def std2(a: float, b: float) -> float:
    """Sample std (ddof 1) of two values."""
    return abs(a - b) / math.sqrt(2)


# --- scalar metrics ---------------------------------------------------------------------


def test_dice_and_iou_of_two_squares_overlapping_by_50px() -> None:
    a = rect((20, 20), 0, 10, 0, 10) > 0
    b = rect((20, 20), 0, 10, 5, 15) > 0
    assert np.logical_and(a, b).sum() == 50
    assert dice_hard(a, b) == pytest.approx(0.5)
    assert iou_hard(a, b, smooth=0.0) == pytest.approx(1 / 3)
    assert iou_hard(a, b) == pytest.approx((50 + 1e-5) / (150 + 1e-5), rel=1e-12)


def test_empty_cases() -> None:
    e = np.zeros((5, 5), bool)
    f = np.ones((5, 5), bool)
    assert dice_hard(e, e) == 1.0
    assert iou_hard(e, e, smooth=0.0) == 1.0
    assert iou_hard(e, e) == pytest.approx(1.0)
    assert dice_hard(e, f) == 0.0
    assert iou_hard(e, f, smooth=0.0) == 0.0


def test_scalar_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_hard(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_summary_median_and_csa_error() -> None:
    s = summary([1.0, 2.0, 3.0, 4.0])
    assert s == {"mean": 2.5, "std": pytest.approx(math.sqrt(5 / 3))}  # pandas ddof 1
    assert summary([0.7]) == {"mean": 0.7, "std": 0.0}
    assert median([3.0, 1.0, 2.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        summary([])
    assert csa_rel_error(110, 100) == pytest.approx(0.1)
    assert csa_rel_error(90, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="> 0"):
        csa_rel_error(5, 0)


def test_keras_batch_mean() -> None:
    assert keras_batch_mean([1.0] * 32 + [0.0]) == pytest.approx(0.5)
    assert keras_batch_mean([1.0] * 32 + [0.0], batch_size=33) == pytest.approx(32 / 33)
    with pytest.raises(ValueError):
        keras_batch_mean([1.0], batch_size=0)


# --- paper protocol ---------------------------------------------------------------------


def test_paper_threshold_exactly_half_counts_for_dsc_only() -> None:
    prob = rect((H, W), 5, 15, 5, 15, 0.5)  # exactly 0.5
    gt = rect((H, W), 5, 15, 5, 15, 1.0)
    r = evaluate_paper(prob[None], gt[None])
    row = r["per_image"][0]
    assert row["dsc"] == 1.0  # >= 0.5
    assert row["iou"] == pytest.approx(1e-5 / (100 + 1e-5))  # > 0.5: empty prediction
    assert row["precision"] == 0.0 and row["recall"] == 0.0
    assert r["precision"]["mean"] == 0.0  # Keras divide_no_nan on TP+FP = 0
    assert r["recall"]["mean"] == 0.0


def test_paper_soft_rim_dilates_dsc_ground_truth_only() -> None:
    prob = rect((H, W), 5, 15, 5, 15, 1.0)  # 100 px
    gt = rect((H, W), 4, 16, 4, 16, 0.3)  # 144 px > 0 ...
    gt[5:15, 5:15] = 1.0  # ... of which 100 px > 0.5
    r = evaluate_paper(prob[None], gt[None])
    assert r["dsc"]["mean"] == pytest.approx(200 / 244)
    assert r["iou"]["mean"] == pytest.approx(1.0)
    assert r["recall"]["mean"] == pytest.approx(100 / 144)  # GT != 0 for recall
    assert r["precision"]["mean"] == pytest.approx(1.0)


def test_paper_iou_is_unweighted_mean_of_keras_batches() -> None:
    gt = rect((H, W), 5, 15, 5, 15)
    probs = np.stack([gt] * 32 + [np.zeros((H, W))])  # 32 perfect, the 33rd predicts nothing
    masks = np.stack([gt] * 33)
    r = evaluate_paper(probs, masks)
    x = 1e-5 / (100 + 1e-5)
    assert r["iou"]["mean"] == pytest.approx((1.0 + x) / 2)  # batch means 1 and x
    per_image_mean = float(np.mean([row["iou"] for row in r["per_image"]]))
    assert per_image_mean == pytest.approx((32 + x) / 33)
    assert r["iou"]["std"] == pytest.approx(np.std([1.0] * 32 + [x], ddof=1))
    # one batch of 33 gives the per-image mean
    assert evaluate_paper(probs, masks, keras_batch=33)["iou"]["mean"] == pytest.approx(per_image_mean)


def test_paper_precision_recall_use_global_pixel_counts() -> None:
    gt = rect((H, W), 5, 15, 5, 15)  # 100 px
    pred_a = gt.copy()  # precision 1
    pred_b = rect((H, W), 5, 15, 5, 35)  # 300 px, 100 of them on the nerve: precision 1/3
    r = evaluate_paper(np.stack([pred_a, pred_b]), np.stack([gt, gt]))
    assert [row["precision"] for row in r["per_image"]] == pytest.approx([1.0, 1 / 3])
    assert r["precision"]["mean"] == pytest.approx(200 / 400)  # global, not (1 + 1/3) / 2
    assert r["precision"]["std"] == pytest.approx(std2(1.0, 1 / 3))
    assert r["recall"]["mean"] == pytest.approx(1.0)


def test_paper_filtered_dsc() -> None:
    gt = rect((H, W), 5, 15, 5, 15)
    preds = [gt, rect((H, W), 5, 15, 7, 17), rect((H, W), 5, 15, 11, 21)]  # overlaps 100, 80, 40 px
    r = evaluate_paper(np.stack(preds), np.stack([gt] * 3))
    assert [row["dsc"] for row in r["per_image"]] == pytest.approx([1.0, 0.8, 0.4])
    assert r["dsc"]["mean"] == pytest.approx(2.2 / 3)
    assert r["dsc"]["std"] == pytest.approx(np.std([1.0, 0.8, 0.4], ddof=1))
    f = r["dsc_paper_filtered"]
    assert f["n"] == 2
    assert f["mean"] == pytest.approx(0.9)
    assert f["std"] == pytest.approx(std2(1.0, 0.8))


def test_paper_accepts_channel_axis() -> None:
    gt = rect((H, W), 5, 15, 5, 15)
    p = np.stack([rect((H, W), 5, 15, 7, 17), gt])
    m = np.stack([gt, gt])
    a = evaluate_paper(p, m)
    b = evaluate_paper(p[:, None].astype(np.float32), m[:, None].astype(np.float32))
    assert a == b


def test_paper_rejects_bad_input() -> None:
    gt = rect((H, W), 5, 15, 5, 15)[None]
    with pytest.raises(ValueError, match="255"):
        evaluate_paper(gt, gt * 255)  # mask not divided by 255
    with pytest.raises(ValueError, match="sigmoid"):
        evaluate_paper(gt * 4 - 2, gt)  # logits
    with pytest.raises(ValueError, match="shape"):
        evaluate_paper(gt, gt[:, :-1])
    with pytest.raises(ValueError, match="not both"):
        evaluate_paper(gt, gt, areas=[(1, 1)], native_masks=[np.zeros((H, W), np.uint8)])
    with pytest.raises(ValueError, match="stems"):
        evaluate_paper(gt, gt, stems=["a", "b"])


# --- native areas -----------------------------------------------------------------------


def test_native_areas_exact_factor_two() -> None:
    prob = rect((10, 12), 2, 5, 3, 8)  # 3 x 5 = 15 model px
    mask = rect((20, 24), 0, 6, 0, 10, 255).astype(np.uint8)  # 60 native px; (H, W) = (20, 24), not square
    # INTER_LINEAR x2: a step edge gives 0.25 / 0.75 at the two new pixels, so exactly 4x the area
    # (with dsize given as (H, W) by mistake the count would be 56)
    assert native_areas(prob[None], [mask]) == [(60, 60)]


def test_native_areas_606x468_with_width_height_order() -> None:
    prob = rect((288, 384), 48, 96, 96, 192)  # 48 rows x 96 cols
    mask = np.zeros((468, 606), np.uint8)
    mask[100:150, 200:260] = 255  # 3000 px
    ((a_true, a_pred),) = native_areas(prob[None, None], [mask])
    assert a_true == 3000
    # rows scale by 468/288 = 1.625, cols by 606/384 = 1.578125 -> 78 x 151.5 px
    assert a_pred == pytest.approx(78 * 151.5, rel=0.01)
    # A (W, H) swap keeps the area almost unchanged (it scales by sx * sy either way), so check the
    # extent; test_native_areas_exact_factor_two catches a swap through the count (56 px, not 60).
    import cv2

    up = cv2.resize(prob.astype(np.float32), (606, 468), interpolation=cv2.INTER_LINEAR) >= 0.5
    rows, cols = np.nonzero(up)
    assert rows.min() == 78 and rows.max() == 155  # 48*1.625 .. 96*1.625 - 1
    assert a_pred == int(up.sum())


def test_paper_csa_from_native_masks_and_from_areas() -> None:
    prob = rect((10, 12), 2, 5, 3, 8)
    soft = rect((10, 12), 2, 5, 3, 8)
    mask = rect((20, 24), 0, 8, 0, 10, 255).astype(np.uint8)  # 80 px true, 60 px predicted
    r = evaluate_paper(prob[None], soft[None], native_masks=[mask])
    row = r["per_image"][0]
    assert (row["area_true_px"], row["area_pred_px"]) == (80, 60)
    assert row["csa_rel_error"] == pytest.approx(0.25)
    assert r["csa_rel_error"] == {"median": pytest.approx(0.25), "mean": pytest.approx(0.25)}
    r2 = evaluate_paper(prob[None], soft[None], areas=[(80, 60)])
    assert r2 == r


def test_paper_without_native_info_has_no_csa(caplog: pytest.LogCaptureFixture) -> None:
    gt = rect((H, W), 5, 15, 5, 15)[None]
    with caplog.at_level(logging.WARNING, logger="train.metrics"):
        r = evaluate_paper(gt, gt)
    assert "CSA" in caplog.text
    assert r["csa_rel_error"] == {"median": None, "mean": None}
    assert r["per_image"][0]["area_true_px"] is None


# --- native protocol --------------------------------------------------------------------


def test_native_protocol_606x468() -> None:
    shape = (468, 606)
    mask0 = rect(shape, 50, 90, 100, 150, 255).astype(np.uint8)  # 40 x 50 = 2000 px
    prob0 = rect(shape, 60, 110, 100, 150, 0.5)  # 50 x 50 = 2500 px at exactly 0.5 (counts), 1500 on the nerve
    prob0[300, 300] = 0.49  # below threshold
    mask1 = rect(shape, 30, 70, 200, 260) > 0  # bool mask, predicted perfectly
    prob1 = mask1 * 0.9
    r = evaluate_native([prob0, prob1], [mask0, mask1], stems=["Pz001-001", "Pz001-002"])
    assert r["protocol"] == "native" and r["n"] == 2
    r0, r1 = r["per_image"]
    assert r0["dsc"] == pytest.approx(3000 / 4500)
    assert r0["iou"] == pytest.approx(1500 / 3000)
    assert r0["precision"] == pytest.approx(0.6)
    assert r0["recall"] == pytest.approx(0.75)
    assert (r0["area_true_px"], r0["area_pred_px"]) == (2000, 2500)
    assert r0["csa_rel_error"] == pytest.approx(0.25)
    assert (r1["dsc"], r1["iou"], r1["precision"], r1["recall"], r1["csa_rel_error"]) == (1.0, 1.0, 1.0, 1.0, 0.0)
    assert r1["stem"] == "Pz001-002"
    assert r["dsc"] == {"mean": pytest.approx((2 / 3 + 1) / 2), "std": pytest.approx(std2(2 / 3, 1))}
    assert r["iou"] == {"mean": pytest.approx(0.75), "std": pytest.approx(std2(0.5, 1))}
    assert r["precision"] == {"mean": pytest.approx(0.8), "std": pytest.approx(std2(0.6, 1))}
    assert r["recall"] == {"mean": pytest.approx(0.875), "std": pytest.approx(std2(0.75, 1))}
    assert r["csa_rel_error"] == {"median": pytest.approx(0.125), "mean": pytest.approx(0.125)}


def test_native_empty_denominator_conventions() -> None:
    shape = (20, 24)
    empty = np.zeros(shape, np.uint8)
    full = rect(shape, 2, 6, 2, 6, 255).astype(np.uint8)
    both_empty, pred_only, truth_only = evaluate_native(
        [np.zeros(shape), full / 255.0, np.zeros(shape)], [empty, empty, full]
    )["per_image"]
    assert (both_empty["dsc"], both_empty["iou"], both_empty["precision"], both_empty["recall"]) == (1, 1, 1, 1)
    assert both_empty["csa_rel_error"] is None  # empty ground truth: undefined
    assert (pred_only["dsc"], pred_only["iou"], pred_only["precision"], pred_only["recall"]) == (0, 0, 0, 0)
    assert (truth_only["dsc"], truth_only["iou"], truth_only["precision"], truth_only["recall"]) == (0, 0, 0, 0)
    assert truth_only["csa_rel_error"] == 1.0


def test_native_rejects_mismatched_sizes() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_native([np.zeros((20, 24))], [np.zeros((24, 20), np.uint8)])


# --- the result contract ----------------------------------------------------------------


def test_result_contract_is_json_and_exact() -> None:
    gt = rect((H, W), 5, 15, 5, 15)
    probs = np.stack([gt * 0.9, rect((H, W), 5, 15, 7, 17, 0.7)]).astype(np.float32)
    native = [np.kron(m, np.ones((2, 2))).astype(np.uint8) * 255 for m in (gt, gt)]
    paper = evaluate_paper(probs, np.stack([gt, gt]), native_masks=native, stems=["a", "b"])
    nat = evaluate_native([np.kron(p, np.ones((2, 2))) for p in probs], native)
    for r, extra in ((paper, {"dsc_paper_filtered"}), (nat, {"threshold"})):
        json.dumps(r, allow_nan=False)
        assert set(r) == RESULT_KEYS | extra
        for key in ("dsc", "iou", "precision", "recall"):
            assert set(r[key]) == {"mean", "std"}
            assert all(type(v) is float for v in r[key].values())
        assert set(r["csa_rel_error"]) == {"median", "mean"}
        assert set(r["csa_agreement"]) == AGREEMENT_KEYS
        assert r["csa_agreement"]["abs_rel_mean"] == pytest.approx(r["csa_rel_error"]["mean"])
        assert type(r["n"]) is int
    assert set(paper["dsc_paper_filtered"]) == {"mean", "std", "n"}
    assert all(set(row) == ROW_KEYS | {"stem"} for row in paper["per_image"])
    assert all(set(row) == ROW_KEYS for row in nat["per_image"])
    for row in paper["per_image"] + nat["per_image"]:
        assert type(row["index"]) is int and type(row["area_true_px"]) is int
        assert all(type(row[k]) is float for k in ("dsc", "iou", "precision", "recall", "csa_rel_error"))


def test_format_summary() -> None:
    gt = rect((H, W), 5, 15, 5, 15)
    r = evaluate_paper(gt[None], gt[None], areas=[(1000, 1061)])
    text = format_summary(r)
    assert text.splitlines()[0] == "n=1 protocol=paper"
    assert "DSC 1.0000 ± 0.0000" in text
    assert "precision 1.0000" in text and "recall 1.0000" in text
    assert "(n=1)" in text
    assert "CSA error median 6.1 %" in text
    assert text.splitlines()[-1] == "  CSA bias +6.1 % (SD n/a, 95 % LoA n/a), MAE 61.0 px, missed 0 of 1"
    native = format_summary(evaluate_native([gt], [gt > 0]))
    assert "protocol=native" in native and "paper filter" not in native


# --- CSA agreement (Bland-Altman) -------------------------------------------------------

AGREE_TRUE = [100, 200, 400]
AGREE_PRED = [110, 180, 400]


def test_csa_agreement_known_answer() -> None:
    a = csa_agreement(AGREE_TRUE, AGREE_PRED)
    assert set(a) == AGREEMENT_KEYS
    json.dumps(a, allow_nan=False)
    assert a["n"] == 3 and a["n_rel"] == 3
    # relative differences +0.1, -0.1, 0: bias 0, SD sqrt((0.01 + 0.01 + 0) / (3 - 1)) = 0.1
    assert a["bias_rel"] == pytest.approx(0.0, abs=1e-15)
    assert a["sd_rel"] == pytest.approx(0.1)
    assert a["loa_rel"] == pytest.approx([-0.196, 0.196])
    assert a["abs_rel_median"] == pytest.approx(0.1)
    assert a["abs_rel_mean"] == pytest.approx(0.2 / 3)
    # differences +10, -20, 0 px: bias -10/3, SD^2 = (500 - 3 * (10/3)^2) / 2 = 700/3, MAE 30/3 = 10
    sd_px = math.sqrt(700 / 3)
    assert a["bias_px"] == pytest.approx(-10 / 3)
    assert a["sd_px"] == pytest.approx(sd_px)
    assert a["loa_px"] == pytest.approx([-10 / 3 - 1.96 * sd_px, -10 / 3 + 1.96 * sd_px])
    assert a["mae_px"] == pytest.approx(10.0)
    for key in ("mm2_per_px", "bias_mm2", "sd_mm2", "loa_mm2", "mae_mm2", "missed", "missed_stems"):
        assert key in a and a[key] is None


def test_csa_agreement_in_mm2() -> None:
    a = csa_agreement(AGREE_TRUE, AGREE_PRED, mm2_per_px=0.01)
    sd_mm2 = 0.01 * math.sqrt(700 / 3)
    assert a["mm2_per_px"] == 0.01
    assert a["bias_mm2"] == pytest.approx(-0.1 / 3)
    assert a["sd_mm2"] == pytest.approx(sd_mm2)
    assert a["loa_mm2"] == pytest.approx([-0.1 / 3 - 1.96 * sd_mm2, -0.1 / 3 + 1.96 * sd_mm2])
    assert a["mae_mm2"] == pytest.approx(0.1)
    assert a["bias_rel"] == pytest.approx(0.0, abs=1e-15)  # relative terms do not depend on the unit
    assert a["mae_px"] == pytest.approx(10.0)


def test_csa_agreement_leaves_empty_truth_out_of_relative_terms(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="train.metrics"):
        a = csa_agreement(AGREE_TRUE + [0], AGREE_PRED + [30])
    assert "empty ground truth" in caplog.text
    assert a["n"] == 4 and a["n_rel"] == 3
    assert a["sd_rel"] == pytest.approx(0.1) and a["abs_rel_median"] == pytest.approx(0.1)
    assert a["mae_px"] == pytest.approx(60 / 4)  # absolute terms keep the image: |10| + |-20| + 0 + |30|
    assert a["bias_px"] == pytest.approx(20 / 4)


def test_csa_agreement_one_image_has_no_sd() -> None:
    a = csa_agreement([100], [90], mm2_per_px=0.5)
    assert a["n"] == 1
    assert a["bias_rel"] == pytest.approx(-0.1) and a["bias_px"] == -10.0 and a["bias_mm2"] == -5.0
    for key in ("sd_rel", "loa_rel", "sd_px", "loa_px", "sd_mm2", "loa_mm2"):
        assert a[key] is None
    assert a["mae_px"] == 10.0 and a["mae_mm2"] == 5.0


def test_csa_agreement_no_areas() -> None:
    a = csa_agreement([None, None], [None, None], dsc=[0.9, 0.2])
    assert a["n"] == 0 and a["n_rel"] == 0 and a["missed"] == 1
    assert all(a[k] is None for k in ("bias_rel", "sd_rel", "abs_rel_median", "bias_px", "mae_px"))
    json.dumps(a, allow_nan=False)


def test_csa_agreement_counts_missed_from_dsc() -> None:
    assert MISSED_DSC == 0.5
    dsc = [0.9, 0.49, 0.5]  # 0.5 itself is not missed
    a = csa_agreement(AGREE_TRUE, AGREE_PRED, dsc=dsc)
    assert a["missed"] == 1 and a["missed_stems"] is None
    a = csa_agreement(AGREE_TRUE, AGREE_PRED, dsc=dsc, stems=["a", "b", "c"])
    assert a["missed"] == 1 and a["missed_stems"] == ["b"]
    assert csa_agreement(AGREE_TRUE, AGREE_PRED, dsc=[0.9] * 3, stems=["a", "b", "c"])["missed_stems"] == []


@pytest.mark.parametrize("kwargs, match", [
    ({"area_true": [1, 2], "area_pred": [1]}, "predicted areas"),
    ({"area_true": [1], "area_pred": [1], "dsc": [0.5, 0.5]}, "dsc"),
    ({"area_true": [1], "area_pred": [1], "mm2_per_px": 0.0}, "mm2_per_px"),
    ({"area_true": [1], "area_pred": [1], "mm2_per_px": float("nan")}, "mm2_per_px"),
    ({"area_true": [-1], "area_pred": [1]}, ">= 0"),
    ({"area_true": [1], "area_pred": [None]}, "only one"),
])
def test_csa_agreement_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        csa_agreement(**kwargs)


def test_results_carry_csa_agreement_from_their_rows() -> None:
    gt = rect((H, W), 5, 15, 5, 15)
    probs = np.stack([gt * 0.9, rect((H, W), 5, 15, 7, 17, 0.7), np.zeros((H, W))])
    native = [np.kron(m, np.ones((2, 2))).astype(np.uint8) * 255 for m in (gt, gt, gt)]
    r = evaluate_paper(probs, np.stack([gt] * 3), native_masks=native, stems=["a", "b", "c"], mm2_per_px=0.25)
    rows = r["per_image"]
    expected = csa_agreement([x["area_true_px"] for x in rows], [x["area_pred_px"] for x in rows], 0.25,
                             dsc=[x["dsc"] for x in rows], stems=["a", "b", "c"])
    assert r["csa_agreement"] == expected
    assert r["csa_agreement"]["missed"] == 1 and r["csa_agreement"]["missed_stems"] == ["c"]
    line = format_summary(r).splitlines()[-1]
    assert line.startswith("  CSA bias ") and "mm²]" in line and line.endswith("missed 1 of 3")
    nat = evaluate_native([np.kron(p, np.ones((2, 2))) for p in probs], native)
    assert nat["csa_agreement"]["mm2_per_px"] is None and nat["csa_agreement"]["missed_stems"] is None
    assert nat["csa_agreement"]["missed"] == 1
