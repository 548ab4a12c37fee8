"""Every value of every config group checked before anything runs (no folder is touched first).

`validate(cfg)` raises one `RecamInputError` line naming the key, the value and what is allowed;
it returns the warnings (settings that run but are probably not meant, e.g. a crop larger than the
largest resized image). The schema in `config.py` already fixes the types; these are the ranges,
the known names, the non-empty lists and the paths. `paths=False` skips the checks of files on disk
(the config tests compose every experiment on machines without VOC or weights).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from recam.config import Config
from recam.errors import RecamInputError

Rule = Callable[[Any], str | None]  # None = allowed, else what is allowed

DATASETS = ("voc12", "synthetic", "coco14", "folder", "cub")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SEG_ARCHS = tuple(f"deeplabv2_{r}" for r in RESNETS) + ("deeplabv3_resnet50", "deeplabv3_resnet101")
START_METHODS = ("spawn", "forkserver", "fork")
MASK_METHODS = ("irn", "crf")


def _int_at_least(low: int) -> Rule:
    return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= low else f"an integer >= {low}"


def _number(low: float, high: float | None = None, *, open_low: bool = False) -> Rule:
    def rule(v: Any) -> str | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # v == v: not NaN
        ok = ok and (v > low if open_low else v >= low) and (high is None or v <= high)
        bound = f"> {low}" if open_low else f">= {low}"
        return None if ok else (f"a number {bound}" + (f" and <= {high}" if high is not None else ""))

    return rule


POSITIVE_INT, NONNEG_INT = _int_at_least(1), _int_at_least(0)
POSITIVE, NONNEG, FRACTION = _number(0, open_low=True), _number(0), _number(0, 1)
AUTO_OR_FRACTION = lambda v: None if v == "auto" or FRACTION(v) is None else "a number in [0, 1] or auto"  # noqa: E731
MOMENTUM = lambda v: None if isinstance(v, (int, float)) and 0 <= v < 1 else "a number in [0, 1)"  # noqa: E731


def _choice(*names: str) -> Rule:
    return lambda v: None if v in names else f"one of {', '.join(names)}"


def _optional(rule: Rule) -> Rule:
    return lambda v: None if v is None else (None if (why := rule(v)) is None else f"null or {why}")


def _list_of(rule: Rule, *, length: int | None = None, nonempty: bool = True, unique: bool = False) -> Rule:
    def check(v: Any) -> str | None:
        if not isinstance(v, (list, tuple)) or (nonempty and not v) or (length is not None and len(v) != length):
            size = f"{length} values" if length is not None else ("a non-empty list" if nonempty else "a list")
            return f"{size}"
        for item in v:
            if (why := rule(item)) is not None:
                return f"a list whose values are each {why}"
        if unique and len(set(map(str, v))) != len(v):
            return "a list without repeated values"
        return None

    return check


def _sweep(v: Any) -> str | None:
    """[start, stop, step]: 0 <= start <= stop <= 1, step > 0."""
    if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
        return "[start, stop, step]"
    start, stop, step = v
    return (
        None
        if 0 <= start <= stop <= 1 and step > 0
        else "[start, stop, step] with 0 <= start <= stop <= 1 and step > 0"
    )


def _range_pair(low_open: float = 0) -> Rule:
    def rule(v: Any) -> str | None:
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
        return None if ok and low_open < v[0] <= v[1] else f"[low, high] with {low_open} < low <= high"

    return rule


def _device(v: Any) -> str | None:
    return None if isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v) else "auto, cpu, cuda or cuda:N"


def _run_name(v: Any) -> str | None:
    """run.name: a folder under run.root; sweeps nest it (`sweep_lambda/recam.loss_weight=0.5`)."""
    ok = isinstance(v, str) and v.strip() and not v.startswith("/") and ".." not in v.split("/")
    return None if ok else "a non-empty relative folder name without '..'"


def _name(v: Any) -> str | None:
    ok = isinstance(v, str) and v.strip() and "/" not in v and v not in (".", "..")
    return None if ok else "a non-empty folder name without '/'"


def _pretrained(*names: str, paths: bool) -> Rule:
    """One of `names`, or a path to a state_dict file (checked on disk when `paths`)."""

    def rule(v: Any) -> str | None:
        if v in names:
            return None
        if not isinstance(v, str) or not v:
            return f"one of {', '.join(names)} or a state_dict path"
        if paths and not Path(v).is_file():
            return f"one of {', '.join(names)} or the path of an existing state_dict file (no such file)"
        return None

    return rule


def _existing_file(paths: bool) -> Rule:
    return lambda v: None if not paths or Path(v).is_file() else "the path of an existing file (no such file)"


def _seg_pretrained(paths: bool) -> Rule:
    """seg.pretrained: imagenet | none | cam | a state_dict path | advcam:<path> (the caffe-layout file)."""
    plain = _pretrained("imagenet", "none", "cam", "synthetic", paths=paths)

    def rule(v: Any) -> str | None:
        if isinstance(v, str) and v.startswith("advcam:"):
            if paths and not Path(v[len("advcam:") :]).is_file():
                return (
                    "advcam:<path> of an existing file - download AdvCAM's ImageNet ResNet-101 DeepLab-v1 "
                    "init (deeplabv1_resnet101-imagenet.pth) and give its path"
                )
            return None
        return plain(v)

    return rule


def _selectors() -> tuple[str, ...]:
    from recam.thresholds import SELECTORS  # the GT-free selectors' table

    return tuple(SELECTORS)


def _seed_methods() -> tuple[str, ...]:
    from recam.cams.methods import CAM_METHODS  # the CAM family's table, in plain sight there

    return ("cam", "recam", "spg", *(m for m in CAM_METHODS if m != "cam"))


def _train_rules() -> dict[str, Rule]:
    return {
        "batch_size": POSITIVE_INT,
        "epochs": POSITIVE_INT,
        "crop_size": POSITIVE_INT,
        "resize_long": _range_pair(),
        "lr": POSITIVE,
        "weight_decay": NONNEG,
        "momentum": MOMENTUM,
        "poly_power": NONNEG,
        "max_steps": _optional(POSITIVE_INT),
        "val_batches": _optional(POSITIVE_INT),
        "log_every": POSITIVE_INT,
        "grad_clip": _optional(POSITIVE),
    }


def group_rules(paths: bool) -> dict[str, dict[str, Rule]]:
    """{config group: {key: rule}}; every key of every group that has a range or a set of names."""
    seed_methods = _seed_methods()
    return {
        "run": {
            "name": _run_name,
            "root": lambda v: None if v else "a folder path",
            "lock_wait_s": NONNEG,
            "lock_stale_s": POSITIVE,
        },
        "runtime": {"device": _device, "seed": NONNEG_INT, "num_workers": NONNEG_INT, "threads": NONNEG_INT},
        "dataset": {
            "name": _choice(*DATASETS),
            "root": lambda v: None if v else "the dataset folder",
            "train_list": _name,
            "val_list": _name,
            "mean": _list_of(_number(0, 1), length=3),
            "std": _list_of(_number(0, open_low=True), length=3),
            "max_images": _optional(POSITIVE_INT),
            "check_images": _choice("decode", "header", "none"),
            "bad_images": _choice("fail", "skip"),
            "unknown_classes": _choice("fail", "ignore"),
            "protocol": _choice("recam", "coco2voc"),
        },
        "dataset.coco": {
            "root": lambda v: None if v else "the COCO 2014 folder",
            "splits": _list_of(_choice("train2014", "val2014"), unique=True),
            "workers": NONNEG_INT,
            "reference_labels": _optional(_existing_file(paths)),
        },
        "dataset.folder": {
            "root": lambda v: None if v else "your dataset folder",
            "images": _name,
            "labels": _name,
            "class_names": _name,
            "masks": _optional(_name),
            "splits": _optional(_name),
            "val_fraction": lambda v: None if isinstance(v, (int, float)) and 0 < v < 1 else "a number in (0, 1)",
            "split_seed": NONNEG_INT,
        },
        "dataset.synthetic": {
            "seed": NONNEG_INT,
            "n_train": POSITIVE_INT,
            "n_val": POSITIVE_INT,
            "n_extra": NONNEG_INT,
            "min_size": _int_at_least(32),
            "max_size": _int_at_least(32),
        },
        "model": {
            "arch": _choice(*RESNETS),
            "pretrained": _pretrained("imagenet", "none", "synthetic", paths=paths),
            "output_stride": _choice(8, 16),
            "freeze_upto": _choice("none", "conv1", "layer2"),
        },
        "pretrain": {
            "arch": _choice(*RESNETS),
            "seed": NONNEG_INT,
            "num_classes": _int_at_least(2),
            "images_per_class": POSITIVE_INT,
            "val_per_class": POSITIVE_INT,
            "image_size": _int_at_least(32),
            "epochs": POSITIVE_INT,
            "batch_size": POSITIVE_INT,
            "lr": POSITIVE,
            "momentum": MOMENTUM,
            "weight_decay": NONNEG,
            "label_smoothing": _number(0, 1),
            "poly_power": NONNEG,
            "pad": NONNEG_INT,
            "cache_dir": lambda v: None if v else "a folder path",
            "workers": NONNEG_INT,
            "log_every": POSITIVE_INT,
        },
        "cam": {**_train_rules(), "head_lr_mult": POSITIVE},
        "recam": {**_train_rules(), "backbone_lr_mult": NONNEG, "loss_weight": NONNEG},
        "seeds": {
            "method": _choice(*seed_methods),
            "split": _name,
            "scales": _list_of(POSITIVE, unique=True),
            "bucket_size": POSITIVE_INT,
            "high_res_dtype": _choice("float16", "float32"),
            "num_shards": POSITIVE_INT,
            "shard_index": NONNEG_INT,
            "checkpoint_epoch": _optional(POSITIVE_INT),
            "chunk_size": POSITIVE_INT,
            "top_k": _optional(POSITIVE_INT),
            "noise_seed": NONNEG_INT,
            "n_samples": _optional(POSITIVE_INT),
            "noise_std": _optional(POSITIVE),
        },
        "eval_seeds": {
            "method": _choice(*seed_methods),
            "split": _name,
            "threshold": _optional(AUTO_OR_FRACTION),
            "sweep": _sweep,
        },
        "ir_labels": {
            "seeds": _choice(*seed_methods),
            "split": _name,
            "fg_threshold": AUTO_OR_FRACTION,
            "bg_threshold": AUTO_OR_FRACTION,
            "fg_offset": _number(-1, 1),
            "bg_offset": _number(-1, 1),
            "gt_prob": _number(0, 1, open_low=True),
            "num_workers": NONNEG_INT,
            "start_method": _choice(*START_METHODS),
        },
        "irn": {
            "split": _name,
            "val_split": _optional(_name),
            "arch": _choice(*RESNETS),
            "pretrained": _pretrained("imagenet", "none", "cam", "synthetic", paths=paths),
            "batch_size": POSITIVE_INT,
            "epochs": POSITIVE_INT,
            "crop_size": POSITIVE_INT,
            "scale_range": _range_pair(),
            "lr": POSITIVE,
            "dp_lr_mult": POSITIVE,
            "weight_decay": NONNEG,
            "momentum": MOMENTUM,
            "poly_power": NONNEG,
            "radius": POSITIVE_INT,
            "max_steps": _optional(POSITIVE_INT),
            "val_batches": _optional(POSITIVE_INT),
            "mean_shift_batches": _optional(POSITIVE_INT),
            "log_every": POSITIVE_INT,
            "grad_clip": _optional(POSITIVE),
        },
        "masks": {
            "method": _choice(*MASK_METHODS),
            "seeds": _choice(*seed_methods),
            "split": _name,
            "radius": POSITIVE_INT,
            "beta": POSITIVE,
            "exp_times": NONNEG_INT,
            "bg_threshold": AUTO_OR_FRACTION,
            "seed_threshold": _optional(AUTO_OR_FRACTION),
            "crf_kernels": _choice("ir_label", "deeplab"),
            "gt_prob": _number(0, 1, open_low=True),
            "num_workers": NONNEG_INT,
            "start_method": _choice(*START_METHODS),
        },
        "thresholds": {
            "selector": _choice(*_selectors()),
            "sample_size": _int_at_least(1),
            "seed": NONNEG_INT,
            "split": _name,
            "grid": _sweep,
        },
        "eval_masks": {"method": _choice(*MASK_METHODS), "split": _name, "sweep": _sweep},
        "seg": {
            "labels": _choice("pseudo", "gt"),
            "masks": _choice(*MASK_METHODS),
            "split": _name,
            "gt_split": _name,
            "gt_folder": _name,
            "arch": _choice(*SEG_ARCHS),
            "pretrained": _seg_pretrained(paths),
            "output_stride": _choice(8, 16),
            "loss": _choice("ce", "balanced"),
            "msc_scales": _list_of(POSITIVE, nonempty=False, unique=True),
            "iterations": POSITIVE_INT,
            "batch_size": POSITIVE_INT,
            "iter_size": POSITIVE_INT,
            "crop_size": POSITIVE_INT,
            "scales": _list_of(POSITIVE),
            "lr": POSITIVE,
            "momentum": MOMENTUM,
            "weight_decay": NONNEG,
            "head_lr_mult": POSITIVE,
            "head_bias_lr_mult": POSITIVE,
            "poly_power": NONNEG,
            "lr_decay_every": POSITIVE_INT,
            "checkpoint_every": POSITIVE_INT,
            "log_every": POSITIVE_INT,
            "grad_clip": _optional(POSITIVE),
        },
        "eval_seg": {
            "labels": _choice("pseudo", "gt"),
            "split": _optional(_name),
            "scales": _list_of(POSITIVE, unique=True),
            "crf_image": _choice("clean", "reference"),
        },
        "visualize": {
            "split": _name,
            "num_images": POSITIVE_INT,
            "methods": _list_of(_choice(*seed_methods), unique=True),
            "feature_channels": POSITIVE_INT,
            "top_k": _optional(POSITIVE_INT),
            "overlay_alpha": FRACTION,
            "display_scale": POSITIVE_INT,
            "font_size": _int_at_least(8),
        },
        "spg": {
            "arch": _choice("inception_v3", *RESNETS),
            "pretrained": _pretrained("imagenet", "none", "synthetic", paths=paths),
            "head_channels": POSITIVE_INT,
            "side_channels": POSITIVE_INT,
            "output_stride": _choice(8, 16),
            "dropout": lambda v: None if isinstance(v, (int, float)) and 0 <= v < 1 else "a number in [0, 1)",
            "mask_size": POSITIVE_INT,
            "batch_size": POSITIVE_INT,
            "epochs": POSITIVE_INT,
            "resize_short": POSITIVE_INT,
            "crop_size": _int_at_least(32),
            "lr": POSITIVE,
            "new_layer_lr_mult": POSITIVE,
            "momentum": MOMENTUM,
            "weight_decay": NONNEG,
            "decay_points": _list_of(POSITIVE_INT, nonempty=False),
            "max_steps": _optional(POSITIVE_INT),
            "val_batches": _optional(POSITIVE_INT),
            "log_every": POSITIVE_INT,
            "grad_clip": _optional(POSITIVE),
        },
        "eval_loc": {
            "method": _choice(*seed_methods),
            "split": _name,
            "protocol": _choice("simple", "cam_dt_box"),
            "sweep": _sweep,
            "dt_box_thresholds": _list_of(_number(0, 255), length=3),
            "iou_threshold": _number(0, 1, open_low=True),
        },
        "wsol": {
            "family": _list_of(
                _choice(*(m for m in seed_methods if m not in ("cam", "recam", "spg"))), nonempty=False, unique=True
            ),
            "split": _name,
            "max_images": _optional(POSITIVE_INT),
            "scales": _list_of(POSITIVE, unique=True),
            "top_k": _optional(POSITIVE_INT),
            "n_samples": _optional(POSITIVE_INT),
        },
        "cam_methods": {
            "methods": _list_of(_choice(*(m for m in seed_methods if m not in ("recam", "spg"))), unique=True),
            "split": _name,
            "max_images": _optional(POSITIVE_INT),
            "scales": _list_of(POSITIVE, unique=True),
            "top_k": _optional(POSITIVE_INT),
            "n_samples": _optional(POSITIVE_INT),
        },
    }


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check(cfg: Config, rules: dict[str, dict[str, Rule]]) -> None:
    """Raise one line for the first value that breaks its rule."""
    for group, keys in rules.items():
        section = _get(cfg, group)
        for key, rule in keys.items():
            value = getattr(section, key)
            if (allowed := rule(value)) is not None:
                raise RecamInputError(f"recam: {group}.{key}={_show(value)} is not allowed - use {allowed}")


def _show(value: Any) -> str:
    return "null" if value is None else (f"{value!r}" if isinstance(value, str) else str(value))


def validate(cfg: Config, *, paths: bool = True) -> list[str]:
    """Check the whole config; one RecamInputError line for the first bad value; returns warnings."""
    from recam.plan import plan_steps  # the plan's labels, for stage.steps

    check(cfg, group_rules(paths))
    synthetic, seeds, ir = cfg.dataset.synthetic, cfg.seeds, cfg.ir_labels
    if synthetic.min_size > synthetic.max_size:
        raise RecamInputError(
            f"recam: dataset.synthetic.min_size={synthetic.min_size} is larger than "
            f"dataset.synthetic.max_size={synthetic.max_size} - give min_size <= max_size"
        )
    if seeds.shard_index >= seeds.num_shards:
        raise RecamInputError(
            f"recam: seeds.shard_index={seeds.shard_index} is outside 0..{seeds.num_shards - 1} (seeds.num_shards)"
        )
    if cfg.irn.crop_size % 4:
        raise RecamInputError(
            f"recam: irn.crop_size={cfg.irn.crop_size} is not allowed - use a multiple of 4 "
            "(the affinity labels' stride)"
        )
    if "auto" not in (ir.bg_threshold, ir.fg_threshold) and ir.bg_threshold >= ir.fg_threshold:
        raise RecamInputError(
            f"recam: ir_labels.bg_threshold={ir.bg_threshold} is not below ir_labels.fg_threshold="
            f"{ir.fg_threshold} - the unsure band needs bg_threshold < fg_threshold"
        )
    if paths and cfg.dataset.name == "coco14" and not Path(cfg.dataset.coco.root).is_dir():
        raise RecamInputError(
            f"recam: dataset.coco.root={cfg.dataset.coco.root} does not exist - download MS COCO 2014 "
            "(train2014/, val2014/, annotations/instances_{train,val}2014.json) and give its folder"
        )
    if paths and cfg.dataset.name == "folder" and not Path(cfg.dataset.folder.root).is_dir():
        raise RecamInputError(
            f"recam: dataset.folder.root={cfg.dataset.folder.root} does not exist - give the folder "
            "holding your images/, labels.csv and class_names.txt"
        )
    if paths and cfg.dataset.sbd_root is not None and not Path(cfg.dataset.sbd_root).is_dir():
        raise RecamInputError(
            f"recam: dataset.sbd_root={cfg.dataset.sbd_root} does not exist - give SBD's dataset/ "
            "folder (benchmark_RELEASE/dataset) or leave it null to read SegmentationClassAug/"
        )
    if paths and cfg.dataset.name == "voc12" and not Path(cfg.dataset.root).is_dir():
        raise RecamInputError(
            f"recam: dataset.root={cfg.dataset.root} does not exist - download VOC 2012 "
            "(VOCtrainval_11-May-2012.tar) and give its VOC2012 folder, or run with dataset=synthetic"
        )
    for key, arch in synthetic_consumers(cfg):
        if arch != cfg.pretrain.arch:
            raise RecamInputError(
                f"recam: {key}=synthetic loads the pretrain stage's {cfg.pretrain.arch} backbone into a {arch} "
                f"- set pretrain.arch={arch} (one cache file per arch) or another {key}"
            )
    plan_steps(cfg.stage.steps)
    return list(_warnings(cfg))


def synthetic_consumers(cfg: Config) -> list[tuple[str, str]]:
    """(key, ResNet arch) of every `*.pretrained=synthetic` setting: they load the pretrain stage's backbone."""
    seg_arch = cfg.seg.arch.split("_", 1)[-1]
    candidates = [
        ("model.pretrained", cfg.model.pretrained, cfg.model.arch),
        ("irn.pretrained", cfg.irn.pretrained, cfg.irn.arch),
        ("seg.pretrained", cfg.seg.pretrained, seg_arch),
        ("spg.pretrained", cfg.spg.pretrained, cfg.spg.arch),
    ]
    return [(key, arch) for key, value, arch in candidates if value == "synthetic"]


def _warnings(cfg: Config) -> Iterable[str]:
    for name in ("cam", "recam"):
        stage = getattr(cfg, name)
        if stage.crop_size > max(stage.resize_long):
            yield (
                f"{name}.crop_size={stage.crop_size} is larger than the largest resized side "
                f"{name}.resize_long[1]={max(stage.resize_long)}: every crop is mostly padding"
            )
    if cfg.dataset.name == "synthetic" and cfg.cam.crop_size > 2 * cfg.dataset.synthetic.max_size:
        yield (
            f"cam.crop_size={cfg.cam.crop_size} is over twice the synthetic images' largest side "
            f"({cfg.dataset.synthetic.max_size})"
        )
    if cfg.seg.crop_size > 4 * max(cfg.dataset.synthetic.max_size, 1) and cfg.dataset.name == "synthetic":
        yield f"seg.crop_size={cfg.seg.crop_size} is far larger than the synthetic images"
