"""The pictures' pure functions (recam/viz): shared heat-map scale, CAM vs ReCAM grid, legend, captions."""

from __future__ import annotations

import numpy as np

from recam.viz.grids import compare_maps, grid, same_scale, tile
from recam.viz.overlays import (
    FONT_SIZE,
    caption,
    colour_bar,
    jet,
    legend_picture,
    legend_rows,
    outline,
    text_band_height,
    text_picture,
    text_width,
)


def ramp_maps(classes: int, height: int, width: int) -> np.ndarray:
    """(K, H, W) positive maps, a different ramp per class."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([(x + (k + 1) * y) / 7.0 for k in range(classes)])


def test_same_scale_divides_each_map_by_its_own_max() -> None:
    cam = ramp_maps(2, 6, 5)
    scaled = same_scale({"CAM": cam, "ReCAM": 3.0 * cam})
    # Maps that differ by a factor are the same picture on the shared scale (up to the epsilon) ...
    np.testing.assert_allclose(scaled["CAM"], scaled["ReCAM"], rtol=0, atol=2e-5)
    # ... each class map peaking at 1 (less the seeds' 1e-5) and keeping its shape.
    peaks = cam.max(axis=(1, 2))
    np.testing.assert_allclose(scaled["CAM"], cam / (peaks[:, None, None] + 1e-5), rtol=1e-6)
    assert np.all(scaled["ReCAM"].max(axis=(1, 2)) > 1 - 1e-5) and scaled["ReCAM"].min() >= 0


def test_compare_maps_has_one_row_per_class_and_a_heat_column_per_method() -> None:
    height, width, gap, band = 40, 90, 4, text_band_height(FONT_SIZE)
    assert text_width("ReCAM: b") < width  # so every column is as wide as its panel
    image = np.full((height, width, 3), 100, dtype=np.uint8)
    cam = ramp_maps(2, height, width)
    masks = np.zeros((2, height, width), dtype=bool)
    masks[0, 10:20, 10:30] = True
    picture = compare_maps(image, {"CAM": cam, "ReCAM": 5.0 * cam}, ["a", "b"], masks)
    scaled = same_scale({"CAM": cam})["CAM"]
    for k in range(2):
        top = k * (band + height + gap) + band
        panels = [picture[top : top + height, c * (width + gap) : c * (width + gap) + width] for c in range(3)]
        np.testing.assert_array_equal(panels[0], image)
        expected = jet(scaled[k])
        expected[outline(masks[k])] = 255
        np.testing.assert_array_equal(panels[1], expected)  # JET of the shared scale, GT outline white
        # The 5x map: the same colours, but for the odd rounding step (the epsilon of max + 1e-5).
        assert np.abs(panels[2].astype(int) - expected).max() <= 1 and (panels[2] != expected).mean() < 0.05
    # Nothing right of the third column in the panel rows; the colour bar below them.
    assert np.all(picture[: 2 * (band + height) + gap, 3 * width + 2 * gap :] == 255)
    assert picture.shape[0] > 2 * (band + height) + gap + band + FONT_SIZE


def test_colour_bar_runs_from_jet_0_to_jet_1() -> None:
    bar = colour_bar(100)
    strip = bar[0]
    coloured = np.flatnonzero(np.any(strip != 255, axis=-1))
    assert len(coloured) == 100
    np.testing.assert_array_equal(strip[coloured[0]], jet(np.float32(0.0)))
    np.testing.assert_array_equal(strip[coloured[-1]], jet(np.float32(1.0)))


def test_legend_rows_list_background_every_class_and_ignore() -> None:
    rows = legend_rows(["disc", "block", "star"], ignore=True)
    assert [(value, name) for value, name, _ in rows] == [
        (0, "background"),
        (1, "disc"),
        (2, "block"),
        (3, "star"),
        (255, "ignore"),
    ]
    assert [colour for _, _, colour in rows] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (224, 224, 192)]
    assert [name for _, name, _ in legend_rows(["disc"])] == ["background", "disc"]
    one_column = legend_picture(rows, per_column=8)
    two_columns = legend_picture(rows, per_column=3)
    assert one_column.shape[0] == 5 * text_band_height() and two_columns.shape[0] == 3 * text_band_height()
    assert two_columns.shape[1] > one_column.shape[1]
    # The swatch of entry r is its palette colour.
    for r, (_, _, colour) in enumerate(rows):
        y = r * text_band_height() + text_band_height() // 2
        assert tuple(one_column[y, 6]) == colour


def test_captions_are_legible_and_never_cut() -> None:
    ink = np.flatnonzero(np.any(text_picture("ground truth") < 128, axis=(1, 2)))
    assert ink[-1] - ink[0] + 1 >= 12  # ascender to descender, in the final picture's pixels
    text = "eval_seg/pseudo/pred_crf_reference"
    picture = caption(np.zeros((10, 20, 3), dtype=np.uint8), text)
    assert picture.shape == (text_band_height() + 10, text_width(text), 3) and picture.shape[1] > 20
    band = picture[: text_band_height()]
    inked = np.flatnonzero(np.any(band < 128, axis=(0, 2)))
    assert inked[-1] < band.shape[1] - 1 and inked[-1] > 0.9 * band.shape[1]  # the text ends inside the band
    assert np.all(picture[text_band_height() :, :20] == 0) and np.all(picture[text_band_height() :, 20:] == 255)


def test_grid_sizes_columns_and_rows_by_their_largest_picture() -> None:
    a, b, c = (np.zeros((5, 10, 3), np.uint8), np.zeros((5, 30, 3), np.uint8), np.zeros((8, 20, 3), np.uint8))
    canvas = grid([[a, b], [c]], gap=4)
    assert canvas.shape == (5 + 4 + 8, 20 + 4 + 30, 3)
    assert np.all(canvas[:5, 10:20] == 255) and np.all(canvas[9:, :20] == 0) and np.all(canvas[9:, 24:] == 255)
    assert tile([a, b, c], ["x", "y", "z"], columns=2).shape[0] == 2 * text_band_height() + 5 + 4 + 8


def test_outline_is_the_boundary_of_a_mask() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:5, 1:5] = True
    edge = outline(mask)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any() and edge[1, 1:5].all()
