"""SPG network, loss switches, box metrics, WSOL data readers: known answers on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recam.data.cub import prepare_cub
from recam.data.wsol import boxes_from_xml, cub_box, ilsvrc_val_boxes, read_cub, read_map_clsloc, voc_boxes
from recam.errors import RecamInputError
from recam.eval.localization import LocSweep, devkit_iou, dt_box
from recam.masks.guidance import guidance_mask, spg_loss
from recam.models.spg import SPGInception, build_spg, inception_state_dict
from recam.stages.eval_loc import absent_rank
from recam.stages.spg import decay_factor


def test_inception_parameter_count_and_stride():
    # spec §3.2: 38.45 M parameters for K = 1000, 37.63 M for K = 200; feature side 40 for 321, 28 for 224
    with torch.device("meta"):
        for classes, millions in ((1000, 38.45), (200, 37.63)):
            model = SPGInception(num_classes=classes)
            assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions
        for side, feat in ((321, 40), (224, 28), (96, 12)):
            out = model(torch.empty(1, 3, side, side))
            assert out["class_maps"].shape[-2:] == (feat, feat) and out["side3"].shape[-2:] == (feat, feat)


def test_resnet_variant_shapes_and_dropout_switch():
    torch.manual_seed(0)
    model = build_spg(arch="resnet18", num_classes=5, head_channels=16, side_channels=8)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out["logits"].shape == (2, 5) and out["class_maps"].shape == (2, 5, 4, 4)
    assert (
        out["side3"].shape == (2, 1, 8, 8)
        and out["side4"].shape == (2, 1, 4, 4)
        and out["out_seg"].shape == (2, 1, 4, 4)
    )
    assert torch.allclose(out["logits"], out["class_maps"].mean(dim=(2, 3)))
    # dropout 0 (PyTorch 0.3's no-op) is deterministic in train mode; a real dropout is not, and is off in eval
    assert torch.equal(model(x)["logits"], out["logits"])
    model.dropout = 0.5
    assert not torch.equal(model(x)["logits"], out["logits"])
    model.eval()
    assert torch.equal(model(x)["logits"], model(x)["logits"])


def test_missing_inception_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RecamInputError, match="inception_v3_google-0cc3c7bd.pth.*checkpoints"):
        inception_state_dict("imagenet")
    with pytest.raises(RecamInputError, match="not a file"):
        inception_state_dict(str(tmp_path / "nope.pth"))


def test_multi_hot_label_equals_reference_on_one_hot():
    torch.manual_seed(1)
    outputs = {
        "logits": torch.randn(3, 4),
        "class_maps": torch.randn(3, 4, 6, 6),
        "side3": torch.randn(3, 1, 6, 6),
        "side4": torch.randn(3, 1, 6, 6),
        "out_seg": torch.randn(3, 1, 6, 6),
    }
    label = torch.tensor([2, 0, 3])
    ref = spg_loss(outputs, label, size=32)
    multi = spg_loss(outputs, torch.nn.functional.one_hot(label, 4).float(), size=32)
    for key in ("loss", "cls", "side4", "side3", "back"):
        assert torch.allclose(ref[key], multi[key], rtol=1e-6, atol=1e-7)
    # two classes: CE against (1/2, 1/2), attention = max of the two normalised maps
    two = torch.tensor([[1.0, 1, 0, 0]] * 3)
    out = spg_loss(outputs, two, size=32)
    expect = -(torch.log_softmax(outputs["logits"], 1)[:, :2].mean(1)).mean()
    assert torch.allclose(out["cls"], expect, atol=1e-6)


def test_carry_threshold_switch():
    maps = torch.zeros(2, 10, 10)
    maps[0, :2, :2] = 0.4  # 4 pixels, none above 0.5: fallback t = 0.7 * 0.4 = 0.28, carried on
    maps[1].view(-1)[:40] = 0.3  # 40 pixels above the carried 0.28 (>= 30: no new fallback)
    maps[1].view(-1)[40:90] = 0.25  # 50 pixels between image 1's own fallback 0.21 and the carried 0.28
    carried = guidance_mask(maps, 0.5, 0.05)
    reset = guidance_mask(maps, 0.5, 0.05, carry_threshold=False)
    assert (carried[0] == 1).sum() == 4 and (reset[0] == 1).sum() == 4
    assert (carried[1] == 1).sum() == 40 and (carried[1] == 255).sum() == 50 and (carried[1] == 0).sum() == 10
    assert (reset[1] == 1).sum() == 90 and (reset[1] == 0).sum() == 10


def test_decay_points_and_absent_rank():
    f = decay_factor([2, 3], steps=10)
    assert [f(0), f(9), f(10), f(19), f(20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert decay_factor([], 10)(1000) == 1
    scores = np.array([0.1, 0.9, 0.8, 0.5])
    assert absent_rank(scores, np.array([1, 2]), 2) == 0  # only present class 1 is above it
    assert absent_rank(scores, np.array([0]), 0) == 3


def test_maxboxacc_counts_any_component():
    score = np.zeros((20, 20), dtype=np.float32)
    score[0:10, 0:10] = 1.0  # large blob, far from the box
    score[15:18, 15:18] = 0.9  # small blob on the GT box
    gt = np.array([[15, 15, 17, 17]])
    sweep = LocSweep([0.5])
    sweep.update(score, gt, rank=0)
    res = sweep.results()
    assert res["gt_known_loc"] == 0 and res["top1_loc"] == 0
    assert res["maxboxacc_v2"] == 1.0
    assert devkit_iou(np.array([0, 0, 9, 9]), np.array([[5, 5, 14, 14], [20, 20, 30, 30]])).tolist() == pytest.approx(
        [25 / 175, 0.0]
    )
    assert dt_box(np.zeros((30, 30), dtype=np.uint8)).tolist() == [0, 0, 0, 0]


XML = """<annotation><object><name>{a}</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox>
</object><object><name>{a}</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>6</xmax><ymax>7</ymax></bndbox></object>
<object><name>{b}</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>
<object><name>unknown</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object></annotation>"""


def test_xml_boxes_voc_and_ilsvrc(tmp_path):
    (tmp_path / "ILSVRC2012_val_00000001.xml").write_text(XML.format(a="n01751748", b="n02119789"))
    (tmp_path / "map_clsloc.txt").write_text("n02119789 1 kit_fox\nn01751748 490 sea_snake\n")
    wnids = read_map_clsloc(tmp_path / "map_clsloc.txt")
    boxes = ilsvrc_val_boxes(tmp_path, "ILSVRC2012_val_00000001.JPEG", wnids)
    assert boxes[1].tolist() == [[0, 1, 9, 19], [4, 4, 5, 6]] and boxes[0].tolist() == [[2, 2, 3, 3]]
    with pytest.raises(RecamInputError, match="does not exist"):
        boxes_from_xml(tmp_path / "missing.xml", wnids)
    with pytest.raises(RecamInputError, match="map_clsloc"):
        read_map_clsloc(tmp_path / "nope.txt")


def fake_cub(root, n_per_class=2):
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    lines, labels, split, boxes = [], [], [], []
    k = 0
    for c, folder in enumerate(classes):
        (root / "images" / folder).mkdir(parents=True)
        for j in range(n_per_class):
            k += 1
            name = f"{folder}/{folder.split('.')[1]}_{j:04d}_{k}.jpg"
            Image.fromarray(np.full((30, 40, 3), 40 * k, dtype=np.uint8)).save(root / "images" / name)
            lines.append(f"{k} {name}")
            labels.append(f"{k} {c + 1}")
            split.append(f"{k} {int(j == 0)}")
            boxes.append(f"{k} 2.4 3.0 10.2 12.0")
    for name, rows in (
        ("images.txt", lines),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
        ("classes.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)]),
    ):
        (root / name).write_text("\n".join(rows) + "\n")
    return classes


def test_cub_reader_and_voc_layout(tmp_path):
    cub_root = tmp_path / "CUB_200_2011"
    classes = fake_cub(cub_root)
    cub = read_cub(cub_root)
    assert cub["class_names"] == classes and len(cub["train"]) == 2 and len(cub["test"]) == 2
    assert cub["boxes"]["1"].tolist() == [cub_box(2.4, 3.0, 10.2, 12.0).tolist()] == [[2, 3, 12, 14]]
    stats = prepare_cub(cub_root, tmp_path / "layout", tmp_path / "prepared")
    assert stats["splits"]["train"]["images"] == 2 and stats["splits"]["val"]["images"] == 2
    ids = (tmp_path / "prepared" / "train.txt").read_text().split()
    assert voc_boxes(str(tmp_path / "layout"), ids[0], classes)[0].tolist() == [[2, 3, 12, 14]]
    assert (tmp_path / "layout" / "JPEGImages" / f"{ids[0]}.jpg").is_symlink()
    # the SPG list format gives the same split; a wrong label is refused
    lists = tmp_path / "lists"
    lists.mkdir()
    by_id = {v: k for k, v in cub["images"].items()}
    for split, name in (("train", "train_list.txt"), ("test", "test_list.txt")):
        (lists / name).write_text("".join(f"{cub['images'][i]};{cub['labels'][i]}\n" for i in cub[split]))
    prepare_cub(cub_root, tmp_path / "layout2", tmp_path / "prepared2", list_dir=lists)
    assert (tmp_path / "prepared2" / "train.txt").read_text() == (tmp_path / "prepared" / "train.txt").read_text()
    (lists / "train_list.txt").write_text(f"{cub['images'][cub['train'][0]]};1\n")
    with pytest.raises(RecamInputError, match="label 1"):
        prepare_cub(cub_root, tmp_path / "layout3", tmp_path / "prepared3", list_dir=lists)
    assert by_id
    (cub_root / "bounding_boxes.txt").unlink()
    with pytest.raises(RecamInputError, match="bounding_boxes.txt"):
        read_cub(cub_root)


def test_draw_box_outline():
    from recam.viz.overlays import draw_box

    image = np.zeros((6, 8, 3), dtype=np.uint8)
    drawn = draw_box(image, np.array([1, 2, 5, 4]), (255, 0, 0))
    red = drawn[..., 0] == 255
    assert red[2, 1:6].all() and red[4, 1:6].all() and red[2:5, 1].all() and red[2:5, 5].all()
    assert not red[3, 2:5].any() and red.sum() == 12 and not image.any()
    assert draw_box(image, np.array([-3, -3, 20, 20]), (0, 255, 0))[..., 1].sum() == 255 * 24
