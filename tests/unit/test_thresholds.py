"""GT-free threshold selectors on maps whose answer is known (recam/thresholds)."""

from __future__ import annotations

import numpy as np
import pytest

from recam.thresholds import (
    SELECTORS,
    ScoreMap,
    candidate_grid,
    edge_contrast,
    label_agreement,
    linked_thresholds,
    sample_ids,
    select_consensus,
    select_crf,
    select_edges,
    select_otsu,
    select_stability,
    select_threshold,
)

GRID = candidate_grid(0.05, 0.95, 0.01)


def step_map(low: float, high: float, size: int = 32, box: tuple[int, int] = (8, 24), colour: bool = True) -> ScoreMap:
    """One class: `high` inside a square, `low` outside; the image is white there, black elsewhere."""
    scores = np.full((1, size, size), low, dtype=np.float32)
    scores[0, box[0] : box[1], box[0] : box[1]] = high
    image = np.zeros((size, size, 3), dtype=np.uint8)
    if colour:
        image[box[0] : box[1], box[0] : box[1]] = 255
    return ScoreMap(scores=scores, keys=np.array([3]), image=image)


def disc_map(size: int = 40, radius: float = 10.0, level: float = 0.5) -> ScoreMap:
    """A CAM that falls off linearly from the centre, m = 1 - (1 - level) * r / radius, so that its
    `level` contour is the circle of `radius`: the edge of a white disc on black."""
    ys, xs = np.mgrid[:size, :size]
    r = np.hypot(ys - size / 2 + 0.5, xs - size / 2 + 0.5)
    scores = np.clip(1.0 - (1.0 - level) * r / radius, 0.0, 1.0).astype(np.float32)[None]
    image = np.where((r <= radius)[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    return ScoreMap(scores=scores, keys=np.array([0]), image=image)


def test_candidate_grid_is_inclusive_and_rounded() -> None:
    grid = candidate_grid(0.05, 0.95, 0.01)
    assert grid.size == 91 and grid[0] == 0.05 and grid[-1] == 0.95 and 0.21 in grid
    with pytest.raises(ValueError):
        candidate_grid(0.5, 0.4, 0.01)


@pytest.mark.parametrize("select", [select_otsu, select_stability, select_edges, select_crf, select_consensus])
def test_a_clean_two_level_step_gives_the_middle_of_its_plateau(select) -> None:
    # Every t in [0.2, 0.8) gives the same partition: each selector returns the plateau's middle.
    chosen = select([step_map(0.2, 0.8)], GRID)
    tolerance = 0.01 if select is not select_crf else 0.03  # crf: coarse grid of 0.05 on a plateau
    assert abs(chosen.threshold - 0.495) <= tolerance, chosen
    assert 0.0 <= chosen.score <= 1.0


def test_otsu_of_a_step_is_perfectly_separable_and_matches_a_brute_force() -> None:
    maps = [step_map(0.1, 0.7), step_map(0.3, 0.9, box=(4, 12))]
    chosen = select_otsu(maps, GRID)
    # Brute force: between-class variance of the pooled maxima, each image weighing 1.
    values = [m.scores.reshape(-1).astype(np.float64) for m in maps]

    def between(t: float) -> float:
        w0 = np.mean([np.mean(v <= t) for v in values])
        s0 = np.mean([np.sum(v[v <= t]) / v.size for v in values])
        s = np.mean([v.mean() for v in values])
        return 0.0 if w0 in (0, 1) else w0 * (1 - w0) * (s0 / w0 - (s - s0) / (1 - w0)) ** 2

    brute = np.array([between(float(t)) for t in GRID])
    assert between(chosen.threshold) == pytest.approx(brute.max(), rel=1e-9)
    one = select_otsu([step_map(0.2, 0.8)], GRID)
    assert one.score == pytest.approx(1.0)  # two values only: all the variance is between classes


def test_stability_skips_the_trivial_plateaus() -> None:
    # Below 0.3 everything is foreground, above 0.9 nothing: those flat ends must not win.
    chosen = select_stability([step_map(0.3, 0.9)], GRID)
    assert 0.55 <= chosen.threshold <= 0.65
    # A map with two steps (three levels) has two plateaus; the longer one wins.
    scores = np.full((1, 30, 30), 0.1, dtype=np.float32)
    scores[0, 5:25, 5:25] = 0.3
    scores[0, 10:20, 10:20] = 0.9
    chosen = select_stability([ScoreMap(scores=scores, keys=np.array([1]))], GRID)
    assert abs(chosen.threshold - 0.595) <= 0.01


def test_crf_finds_the_cam_level_that_follows_the_image_edge() -> None:
    # A smooth CAM whose 0.5 contour is the edge of a white disc on black: only there does the
    # seed partition agree with the CRF; Otsu on the same (unimodal) values lands elsewhere.
    chosen = select_crf([disc_map(level=0.5)], GRID)
    assert abs(chosen.threshold - 0.5) <= 0.05, chosen.curve
    assert chosen.score > 0.9
    shifted = select_crf([disc_map(level=0.7)], GRID)
    assert abs(shifted.threshold - 0.7) <= 0.05, shifted.curve


def test_edges_finds_the_cam_level_that_follows_the_image_edge() -> None:
    chosen = select_edges([disc_map(level=0.5)], GRID)
    assert abs(chosen.threshold - 0.5) <= 0.03, chosen.curve
    shifted = select_edges([disc_map(level=0.7)], GRID)
    assert abs(shifted.threshold - 0.7) <= 0.03, shifted.curve
    # The border of the white square in a two-level map crosses a gradient of 255 per pixel.
    square = step_map(0.2, 0.8)
    contrast = edge_contrast(square, 0.5)
    assert contrast > 10 and np.isnan(edge_contrast(square, 0.1))  # t below both levels: no border


def test_consensus_is_the_mean_of_otsu_and_edges() -> None:
    maps = [disc_map(level=0.7)]
    otsu, edges = select_otsu(maps, GRID).threshold, select_edges(maps, GRID).threshold
    chosen = select_consensus(maps, GRID)
    assert abs(chosen.threshold - (otsu + edges) / 2) <= 0.005 + 1e-9
    assert chosen.score == pytest.approx(1 - abs(otsu - edges))


def test_label_agreement_counts_a_known_label_missing_from_both_as_zero() -> None:
    a = np.array([[0, 0], [1, 1]])
    b = np.array([[0, 1], [1, 1]])
    # label 0: IoU 1/2, label 1: IoU 2/3, label 2 (the image holds it, neither map does): 0
    assert label_agreement(a, b, 3) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_images_without_classes_are_skipped_and_an_empty_sample_fails() -> None:
    empty = ScoreMap(
        scores=np.zeros((0, 8, 8), np.float32), keys=np.zeros(0, np.int64), image=np.zeros((8, 8, 3), np.uint8)
    )
    for name in SELECTORS:
        with_empty = select_threshold(name, [step_map(0.2, 0.8), empty], GRID)
        alone = select_threshold(name, [step_map(0.2, 0.8)], GRID)
        assert with_empty.threshold == alone.threshold
        with pytest.raises(ValueError):
            select_threshold(name, [empty], GRID)
    with pytest.raises(ValueError, match="unknown threshold selector"):
        select_threshold("oracle", [step_map(0.2, 0.8)], GRID)


def test_sample_ids_are_a_fixed_subset_in_list_order() -> None:
    ids = [f"img{i:03d}" for i in range(50)]
    first, again, other = sample_ids(ids, 10, 0), sample_ids(ids, 10, 0), sample_ids(ids, 10, 1)
    assert first == again and first != other and len(set(first)) == 10
    assert first == sorted(first, key=ids.index)
    assert sample_ids(ids[:5], 10, 0) == ids[:5]


def test_linked_thresholds_reproduce_recam_defaults() -> None:
    assert linked_thresholds(0.21) == {"fg": 0.35, "bg": 0.1}
    assert linked_thresholds(0.05) == {"fg": 0.19, "bg": 0.01}  # clipped, never <= 0
    assert linked_thresholds(0.95)["fg"] == 0.99
