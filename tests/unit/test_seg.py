"""Segmentation math and loop: loss with ignore, label resizing, stepped poly schedule, gradient
accumulation, resume, NaN guard, data order, training crops, label checks, inference."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from recam.data.seg_dataset import SegTrainDataset, check_label_files, check_label_values, pad_and_crop
from recam.engine.iter_loop import StepBatchSampler, train_iterations
from recam.engine.loop import NonFiniteLossError
from recam.errors import RecamInputError
from recam.io import save_jpeg, save_label_png
from recam.seg.inference import crf_labels, predict_probs
from recam.seg.losses import cross_entropy_ignore, msc_loss, resize_labels
from recam.seg.optim import make_seg_sgd, stepped_poly_factor


# ---------------------------------------------------------------- loss


def test_cross_entropy_ignores_255_and_matches_a_hand_computation() -> None:
    logits = torch.tensor([[[[2.0, 0.0], [1.0, 5.0]], [[0.0, 1.0], [1.0, -5.0]]]], requires_grad=True)  # (1, 2, 2, 2)
    labels = torch.tensor([[[0, 1], [255, 1]]])
    loss = cross_entropy_ignore(logits, labels)
    # valid pixels: (0,0) label 0 logits (2, 0); (0,1) label 1 logits (0, 1); (1,1) label 1 logits (5, -5)
    hand = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(10))) / 3
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0, :, 1, 0] == 0)  # the ignored pixel gets no gradient


def test_all_ignored_gives_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = cross_entropy_ignore(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_rank_losses_with_the_mean_count_average_to_the_whole_batch_gradient() -> None:
    """DDP averages the ranks' gradients; dividing each rank's pixel sum by the mean valid count
    over the ranks makes that average the one-process gradient, though the ranks' crops hold
    different numbers of ignored pixels (a per-rank mean would weight them wrongly)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 4), generator=generator)
    labels[0, :3] = 255  # rank 0: 4 valid pixels, rank 1: 16
    whole = logits.clone().requires_grad_(True)
    cross_entropy_ignore(whole, labels).backward()
    counts = (labels != 255).flatten(1).sum(1).float()
    shards = [logits[r : r + 1].clone().requires_grad_(True) for r in range(2)]
    for r, shard in enumerate(shards):
        loss = cross_entropy_ignore(shard, labels[r : r + 1], count_over_ranks=lambda count: counts.mean())
        (loss / 2).backward()  # DDP's mean over 2 ranks
    torch.testing.assert_close(torch.cat([s.grad for s in shards]), whole.grad)
    naive = [logits[r : r + 1].clone().requires_grad_(True) for r in range(2)]
    for r, shard in enumerate(naive):
        (cross_entropy_ignore(shard, labels[r : r + 1]) / 2).backward()
    assert not torch.allclose(torch.cat([s.grad for s in naive]), whole.grad)


def test_resize_labels_is_pil_nearest() -> None:
    rng = np.random.default_rng(0)
    for size_in, size_out in ((321, 41), (321, 21), (96, 12), (50, 31)):
        label = rng.integers(0, 21, (size_in, size_in)).astype(np.uint8)
        label[rng.random(label.shape) < 0.1] = 255
        pil = np.asarray(Image.fromarray(label).resize((size_out, size_out), resample=Image.NEAREST))
        ours = resize_labels(torch.from_numpy(label.astype(np.int64))[None], (size_out, size_out))[0].numpy()
        np.testing.assert_array_equal(ours, pil)


def test_msc_loss_sums_each_map_against_its_resized_label() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[:, :2] = 255
    maps = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)]
    expected = sum(nn.functional.cross_entropy(m, resize_labels(labels, m.shape[-2:]), ignore_index=255) for m in maps)
    torch.testing.assert_close(msc_loss(maps, labels), expected)
    torch.testing.assert_close(
        msc_loss(maps[0], labels), nn.functional.cross_entropy(maps[0], labels, ignore_index=255)
    )


# ---------------------------------------------------------------- schedule


def deeplab_pytorch_lrs(base: float, iterations: int, max_step: int, power: float, every: int) -> list[float]:
    """The rate of each update under deeplab-pytorch's PolynomialLR, simulated as written there:
    after update `it` (1-based) the scheduler sees last_epoch = it and changes the rate only
    when it is a nonzero multiple of `every` and not past max_step."""
    lr, rates = base, []
    for iteration in range(1, iterations + 1):
        rates.append(lr)
        if iteration % every == 0 and iteration <= max_step:
            lr = base * (1 - iteration / max_step) ** power
    return rates


def test_poly_rate_is_recomputed_every_ten_iterations() -> None:
    factors = [stepped_poly_factor(t, max_step=100, power=0.9, every=10) for t in range(25)]
    assert factors[:10] == [1.0] * 10
    assert factors[10:20] == [pytest.approx(0.9**0.9)] * 10 and factors[20] == pytest.approx(0.8**0.9)
    params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    optimizer, scheduler = make_seg_sgd(
        [
            {"params": [params[0]], "lr": 0.1, "weight_decay": 0.0},
            {"params": [params[1]], "lr": 2.0, "weight_decay": 0.0},
        ],
        momentum=0.9,
        max_step=100,
        power=0.9,
        every=10,
    )
    seen = []
    for _ in range(100):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for index, base in enumerate((0.1, 2.0)):
        np.testing.assert_allclose([s[index] for s in seen], deeplab_pytorch_lrs(base, 100, 100, 0.9, 10), rtol=1e-12)


# ---------------------------------------------------------------- loop


class Pixels(torch.utils.data.Dataset):
    """Random images whose label is 1 where channel 0 is positive (255 on a border when `ignore`)."""

    def __init__(self, n: int = 8, size: int = 8, ignore: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = (self.images[:, 0] > 0).long()
        if ignore:
            self.labels[:, 0] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        return {"image": self.images[index], "label": self.labels[index], "id": f"img{index}"}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))


def loss_step(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    return {"loss": msc_loss(model(batch["image"]), batch["label"])}


def run_loop(
    tmp_path,
    *,
    iterations: int = 6,
    batch_size: int = 2,
    iter_size: int = 2,
    stop_after: int | None = None,
    dataset: Pixels | None = None,
    step_fn=loss_step,
    checkpoint_every: int = 2,
    config: dict | None = None,
    lr: float = 0.05,
):
    dataset = dataset or Pixels()
    model = tiny_net()
    optimizer, scheduler = make_seg_sgd(
        [{"params": list(model.parameters()), "lr": lr, "weight_decay": 5e-4}],
        momentum=0.9,
        max_step=iterations,
        power=0.9,
        every=2,
    )
    total = iterations * iter_size

    def batches(start: int):
        sampler = StepBatchSampler(len(dataset), batch_size, seed=0, start=start, total=total)
        for count, batch in enumerate(torch.utils.data.DataLoader(dataset, batch_sampler=sampler)):
            if stop_after is not None and start + count >= stop_after:
                raise KeyboardInterrupt  # the process is killed mid-run
            yield batch

    result = train_iterations(
        model=model,
        batches=batches,
        step_fn=step_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        iterations=iterations,
        iter_size=iter_size,
        device=torch.device("cpu"),
        checkpoint_dir=tmp_path,
        checkpoint_extra={"config": config or {"run": 1}},
        checkpoint_every=checkpoint_every,
        desc="test",
        log_every=1,
    )
    return model, result


def test_loss_falls(tmp_path) -> None:
    _, result = run_loop(tmp_path, iterations=30, iter_size=1, lr=0.3)
    losses = [h["loss"] for h in result["history"]]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


def test_accumulation_equals_one_big_batch(tmp_path) -> None:
    """Two micro-batches of 2 with the loss halved = one batch of 4 (equal valid-pixel counts)."""
    dataset = Pixels(ignore=False)
    accumulated, _ = run_loop(tmp_path / "a", batch_size=2, iter_size=2, dataset=dataset)
    big, _ = run_loop(tmp_path / "b", batch_size=4, iter_size=1, dataset=dataset)
    for a, b in zip(accumulated.parameters(), big.parameters()):
        torch.testing.assert_close(a, b)


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path) -> None:
    straight, result = run_loop(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run_loop(tmp_path / "resumed", stop_after=9)  # killed in update 5; last.pt holds update 4
    resumed, again = run_loop(tmp_path / "resumed")
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [h["iteration"] for h in again["history"]] == list(range(1, 7))
    assert again["history"][-1]["loss"] == result["history"][-1]["loss"]


def test_checkpoint_of_another_config_is_not_resumed(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_loop(tmp_path, stop_after=9, config={"run": 1})
    _, result = run_loop(tmp_path, config={"run": 2})
    assert [h["iteration"] for h in result["history"]] == list(range(1, 7))


def test_nan_loss_names_iteration_and_images(tmp_path) -> None:
    def nan_step(model, batch):
        return {"loss": model(batch["image"]).sum() * float("nan")}

    with pytest.raises(NonFiniteLossError, match=r"iteration 1 .*images \['img"):
        run_loop(tmp_path, step_fn=nan_step)


def test_step_sampler_ranks_split_each_global_batch() -> None:
    full = list(StepBatchSampler(10, 4, seed=4, start=0, total=6))
    ranks = [list(StepBatchSampler(10, 4, seed=4, start=2, total=6, num_replicas=2, rank=r)) for r in range(2)]
    for batch, zero, one in zip(full[2:], *ranks):
        assert len(zero) == len(one) == 2
        assert sorted(zero + one) == sorted(batch)
    with pytest.raises(ValueError, match="does not split"):
        StepBatchSampler(10, 3, seed=0, start=0, total=1, num_replicas=2, rank=0)


def test_step_sampler_resumes_mid_run_and_covers_epochs() -> None:
    full = list(StepBatchSampler(10, 3, seed=4, start=0, total=7))
    assert list(StepBatchSampler(10, 3, seed=4, start=4, total=7)) == full[4:]
    first_epoch = [index for batch in full[:3] for index, epoch in batch]
    assert len(set(first_epoch)) == 9 and {epoch for batch in full[:3] for _, epoch in batch} == {0}
    assert {epoch for _, epoch in full[3]} == {1}


# ---------------------------------------------------------------- data


@pytest.fixture
def voc_like(tmp_path):
    """Two 20x30 images with labels (values 0..2) in a VOC-like folder."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        save_jpeg(tmp_path / "JPEGImages" / f"{name}.jpg", rng.integers(0, 255, (20, 30, 3)))
        label = np.zeros((20, 30), np.uint8)
        label[5:15, 10:20] = 2
        save_label_png(tmp_path / "labels" / f"{name}.png", label)
    return tmp_path


def label_path(folder, image_id):
    return folder / "labels" / f"{image_id}.png"


def test_training_crop_pads_with_mean_and_ignore(voc_like) -> None:
    dataset = SegTrainDataset(
        str(voc_like),
        ["a", "b"],
        functools.partial(label_path, voc_like),
        num_labels=3,
        crop_size=40,
        scales=[1.0],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        seed=0,
    )
    item = dataset[(0, 0)]
    assert item["image"].shape == (3, 40, 40) and item["label"].shape == (40, 40) and item["label"].dtype == torch.int64
    assert torch.all(item["label"][20:] == 255) and torch.all(item["image"][:, 20:] == 0)  # bottom padding
    assert (item["label"] == 2).sum() == 100 and (item["label"] == 0).sum() == 500
    torch.testing.assert_close(dataset[(0, 0)]["image"], item["image"])  # same key, same crop
    scaled = SegTrainDataset(
        str(voc_like),
        ["a"],
        functools.partial(label_path, voc_like),
        num_labels=3,
        crop_size=8,
        scales=[0.5],
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )[0]
    assert scaled["image"].shape == (3, 8, 8)


def test_pad_and_crop_windows_large_images_and_pads_small_ones_bottom_right() -> None:
    label = np.arange(1500).reshape(30, 50)
    image, cropped = pad_and_crop(np.ones((30, 50, 3), np.float32), label, 20, np.random.default_rng(1))
    assert image.shape == (20, 20, 3) and np.all(image == 1)
    top, left = divmod(int(cropped[0, 0]), 50)
    np.testing.assert_array_equal(cropped, label[top : top + 20, left : left + 20])
    small = np.arange(120).reshape(10, 12).astype(np.uint8)
    image, padded = pad_and_crop(np.ones((10, 12, 3), np.float32), small, 16, np.random.default_rng(1))
    np.testing.assert_array_equal(padded[:10, :12], small)
    assert np.all(padded[10:] == 255) and np.all(padded[:, 12:] == 255)
    assert np.all(image[10:] == 0) and np.all(image[:, 12:] == 0) and np.all(image[:10, :12] == 1)


def test_bad_label_values_name_the_file(voc_like) -> None:
    bad = np.full((20, 30), 7, np.uint8)
    save_label_png(voc_like / "labels" / "b.png", bad)
    with pytest.raises(RecamInputError, match=r"labels/b\.png has values \[7\]"):
        check_label_files(str(voc_like), ["a", "b"], functools.partial(label_path, voc_like), 3)
    dataset = SegTrainDataset(
        str(voc_like),
        ["a", "b"],
        functools.partial(label_path, voc_like),
        num_labels=3,
        crop_size=16,
        scales=[1.0],
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    with pytest.raises(RecamInputError, match="b.png"):
        dataset[1]
    check_label_values(np.array([[0, 2, 255]]), 3, "ok.png")


def test_missing_and_mis_sized_label_files_are_named(voc_like) -> None:
    with pytest.raises(RecamInputError, match="no label file for c"):
        check_label_files(str(voc_like), ["a", "c"], functools.partial(label_path, voc_like), 3, read=False)
    save_label_png(voc_like / "labels" / "a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(RecamInputError, match="a.png is 10x10 but its image is 30x20"):
        check_label_files(str(voc_like), ["a"], functools.partial(label_path, voc_like), 3)


# ---------------------------------------------------------------- inference


def test_predict_probs_is_a_distribution_and_flip_invariant_for_an_equivariant_model() -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1).eval()  # pointwise: commutes with a mirror
    image = torch.randn(1, 3, 12, 17)
    plain = predict_probs(model, image)
    assert plain.shape == (4, 12, 17)
    torch.testing.assert_close(plain.sum(0), torch.ones(12, 17))
    torch.testing.assert_close(predict_probs(model, image, flip=True), plain)
    torch.testing.assert_close(plain, model(image).softmax(1)[0])
    multi = predict_probs(model, image, scales=[1.0, 0.5], flip=True)
    assert multi.shape == (4, 12, 17) and torch.allclose(multi.sum(0), torch.ones(12, 17))


def test_crf_labels_keep_a_confident_prediction() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    image[:, 6:] = 255
    probs = np.full((2, 10, 12), 0.1, np.float32)
    probs[0, :, :6] = probs[1, :, 6:] = 0.9
    labels = crf_labels(image, probs)
    assert labels.dtype == np.uint8 and labels.shape == (10, 12)
    np.testing.assert_array_equal(labels, (np.arange(12) >= 6).astype(np.uint8)[None].repeat(10, 0))
