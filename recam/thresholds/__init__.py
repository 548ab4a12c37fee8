"""GT-free threshold selection (`threshold=auto`): pure functions in `selectors.py`."""

from recam.thresholds.selectors import (
    SELECTORS,
    ScoreMap,
    Selection,
    candidate_grid,
    crf_agreement,
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

__all__ = [
    "SELECTORS",
    "ScoreMap",
    "Selection",
    "candidate_grid",
    "crf_agreement",
    "edge_contrast",
    "label_agreement",
    "linked_thresholds",
    "sample_ids",
    "select_consensus",
    "select_crf",
    "select_edges",
    "select_otsu",
    "select_stability",
    "select_threshold",
]
