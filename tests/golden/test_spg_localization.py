"""SPG golden vectors: the inference read-out, the `simple` box protocol and its metrics, dt_box."""

from __future__ import annotations

import numpy as np

from recam.eval.localization import (
    LocSweep,
    all_foreground_box,
    best_iou,
    classification_accuracy,
    dt_box,
    dt_box_rects,
    foreground,
    largest_component_box,
    loc_maps,
    localization_flags,
    resize_bilinear,
    saved_heatmap,
    top_k_classes,
)


def close(got, ref, rtol, atol=0.0):
    return np.allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)


def test_localization_readout(golden_spg):
    z = golden_spg("localization_readout")
    maps = loc_maps(z["class_maps"])
    assert close(maps, z["loc_maps"], 1e-5, 1e-5)
    assert np.isnan(maps).any()  # the constant map of the set gives NaN, as in the reference
    for b, (height, width) in enumerate(z["orig_sizes"].tolist()):
        label = int(z["label"][b])
        resized = resize_bilinear(maps[b, label], (height, width))
        assert close(resized, z[f"resized_map_{b}"], 1e-5, 1e-5)
        np.testing.assert_array_equal(saved_heatmap(z[f"resized_map_{b}"]), z[f"saved_png_{b}"])
        own = saved_heatmap(resized).astype(int)
        ref = z[f"saved_png_{b}"].astype(int)
        scaled = 255 * (z[f"resized_map_{b}"] - z[f"resized_map_{b}"].min()) / np.ptp(z[f"resized_map_{b}"])
        near_integer = np.abs(scaled - np.round(scaled)) < 1e-4
        assert (np.abs(own - ref) <= 1).all() and ((own == ref) | near_integer).all()
    # with the read-out epsilon, a constant map reads as 0, not NaN
    assert not np.isnan(loc_maps(z["class_maps"], eps=1e-12)).any()


def test_wsol_boxes_and_metrics(golden_spg):
    z = golden_spg("wsol_boxes_metrics")
    maps, thresholds = z["maps"], z["thresholds"]
    n_images, n_classes = maps.shape[:2]
    gt_boxes = [z["gt_boxes"][n, : z["n_gt_boxes"][n]] for n in range(n_images)]
    top5 = top_k_classes(z["logits"], 5)
    np.testing.assert_array_equal(top5, z["top5_pred"])
    acc = classification_accuracy(z["logits"], z["gt_class"])
    assert close(acc[1], z["cls_top1_percent"], 1e-12) and close(acc[5], z["cls_top5_percent"], 1e-12)
    for t, tau in enumerate(thresholds):
        for n in range(n_images):
            for k in range(n_classes):
                fg = foreground(maps[n, k], tau)
                box, count = largest_component_box(fg)
                np.testing.assert_array_equal(box, z["boxes"][t, n, k], err_msg=f"t={t} n={n} k={k}")
                assert count == z["n_components"][t, n, k]
                np.testing.assert_array_equal(all_foreground_box(fg), z["boxes_all_fg"][t, n, k])
                assert close(best_iou(box, gt_boxes[n]), z["best_iou"][t, n, k], 1e-12)
        gt_iou = z["best_iou"][t, np.arange(n_images), z["gt_class"]]
        flags = localization_flags(gt_iou, z["gt_class"], top5)
        np.testing.assert_array_equal(flags["gt_known"], z["gt_known_correct"][t])
        np.testing.assert_array_equal(flags["top1"], z["top1_loc_correct"][t])
        np.testing.assert_array_equal(flags["top5"], z["top5_loc_correct"][t])
        for name, key in (("gt_known", "gt_known_acc"), ("top1", "top1_loc_acc"), ("top5", "top5_loc_acc")):
            assert close(flags[name].mean(), z[key][t], 1e-12)
    # the accumulator gives the same accuracies per threshold
    sweep = LocSweep(thresholds)
    for n in range(n_images):
        gt = int(z["gt_class"][n])
        sweep.update(
            maps[n, gt], gt_boxes[n], rank=int(np.flatnonzero(np.argsort(-z["logits"][n], kind="stable") == gt)[0])
        )
    res = sweep.results()
    assert close(res["gt_known_loc_curve"], z["gt_known_acc"], 1e-12)
    assert close(res["top1_loc_curve"], z["top1_loc_acc"], 1e-12)
    assert close(res["gt_known_loc"], z["gt_known_acc"].max(), 1e-12)


def test_cam_dt_box(golden_spg):
    z = golden_spg("cam_dt_box")
    heatmap = z["heatmap_u8"]
    j = 0
    while f"ths_{j}" in z:
        ths = z[f"ths_{j}"].tolist()
        rects, eroded = dt_box_rects(heatmap, ths)
        for i in range(len(ths)):
            np.testing.assert_array_equal(eroded[i], z[f"eroded_{j}_{i}"], err_msg=f"triple {j} threshold {i}")
        np.testing.assert_array_equal(rects[0], z[f"first_rect_{j}"])
        np.testing.assert_array_equal(dt_box(heatmap, ths), z[f"eval_box_{j}"])
        j += 1
    assert j >= 2
