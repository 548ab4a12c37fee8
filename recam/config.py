"""Typed schemas of every config group, registered in Hydra's ConfigStore.

Each YAML file under `configs/` names its schema first in `defaults` (Hydra's structured-config
pattern), so a misspelt key or a wrong type fails at start. Defaults here are the reference values
of `pipeline-spec.md` (PASCAL VOC, paper settings); the synthetic demo overrides them in
`configs/experiment/demo.yaml`. Convert once at the entry (`OmegaConf.to_object`) and hand each
function the slice it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from recam.errors import RecamInputError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# A threshold field set to this is chosen without ground truth (`thresholds`, recam/thresholds).
AUTO = "auto"


def threshold_setting(value: float | str | None, key: str) -> float | str | None:
    """The one check of a threshold field that accepts a number or "auto" (YAML gives a float or
    a str; OmegaConf's Union keeps both typed): None, "auto", or a float in (0, 1)."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, str) or not 0.0 < float(value) < 1.0:
        raise RecamInputError(
            f"recam: {key}={value!r} is not a threshold - give a number in (0, 1) or "
            f"{AUTO} (chosen without ground truth by thresholds.selector)"
        )
    return float(value)


@dataclass
class StageSelect:
    """Which stage `python -m recam.train stage=<name>` runs (`all` walks the whole pipeline)."""

    name: str = MISSING
    # stage=all only: run just these steps of the plan, by label (e.g. [recam, seeds/recam,
    # eval_seeds/recam] for a lambda sweep); empty = every step.
    steps: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    name: str = "default"  # experiment name: artifacts go to <root>/<name>/<stage>/
    root: str = "outputs"
    # Per-stage overrides of where an upstream stage's artifacts live, e.g. {cam: outputs/base/cam}
    # to share one classifier across a lambda sweep.
    inputs: dict[str, str] = field(default_factory=dict)
    force: bool = False  # re-run a stage even if its outputs are up to date
    keep_previous: bool = True  # keep the outputs a re-run replaced as <stage>.prev/ (until the next success)
    lock_wait_s: float = 0.0  # >= 0: how long to wait for another config's run on the same stage folder
    lock_stale_s: float = 86400.0  # > 0: a lock of another host older than this is stale (a dead node)


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    # Autocast (CUDA: bf16 where supported, else fp16 + GradScaler; CPU: bf16) - the default of every
    # stage's own switch (cam.amp, recam.amp, seeds.amp, irn.amp, seg.amp, eval_seg.amp: None = this).
    amp: bool = False
    channels_last: bool = False  # models and batches in NHWC (faster convolutions on CPU and tensor cores)
    num_workers: int = 2  # DataLoader workers
    threads: int = 0  # torch.set_num_threads; 0 keeps torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms + cudnn.deterministic
    cudnn_benchmark: bool = True
    # TF32 matmuls and convolutions on Ampere+ GPUs: off = plain FP32, numbers independent of the GPU
    # generation (torch's default: matmul off, cuDNN on); on in `runtime=fast` (configs/runtime/fast.yaml).
    tf32: bool = False
    # torch.compile the model of the training stages (cam, recam, irn, seg); outputs of the other
    # stages are unchanged. Off = eager, the reference's numbers.
    compile: bool = False


@dataclass
class SyntheticParams:
    """Generation parameters of the synthetic VOC-layout dataset (`recam/data/synthetic.py`)."""

    seed: int = 0
    n_train: int = 320  # images in the seg-train split (also the train_aug list)
    n_val: int = 80
    n_extra: int = 80  # train_aug-only images (the SBD part of VOC's train_aug)
    min_size: int = 96  # shorter image side range
    max_size: int = 160  # longer image side range


@dataclass
class CocoParams:
    """`dataset=coco14` (spec §11, recam/data/coco.py): where the COCO 2014 download is, what prepare renders."""

    root: str = "data/MSCOCO"  # train2014/ val2014/ annotations/instances_{train,val}2014.json (spec §11.1)
    splits: list[str] = field(default_factory=lambda: ["train2014", "val2014"])  # subset of these two
    workers: int = 0  # mask-rendering processes, >= 0; 0 = one per core (<= 8) from 200 masks on
    reference_labels: Optional[str] = (
        None  # the author's train_labels.npy: prepare compares it row by row (§11.3); None = no check
    )


@dataclass
class FolderParams:
    """`dataset=folder` (your own images, recam/data/folder.py)."""

    root: str = "data/folder"  # the folder holding everything below
    images: str = "images"  # sub-folder of <id>.jpg / .jpeg / .png files
    labels: str = "labels.csv"  # CSV rows "id,name;name" (header id,labels) or JSON {id: [names]}
    class_names: str = "class_names.txt"  # one foreground class name per line; label k+1 = line k
    masks: Optional[str] = None  # sub-folder of GT masks <id>.png (palette or index, 0 bg, 255 ignore); None = no GT
    splits: Optional[str] = None  # sub-folder with train.txt and val.txt (one id a line); None = seeded split
    val_fraction: float = 0.2  # seeded split: share of ids in val, in (0, 1)
    split_seed: int = 0  # seeded split: RNG seed, >= 0


@dataclass
class DatasetConfig:
    name: str = MISSING  # voc12 | synthetic | coco14 | folder | cub
    root: str = MISSING  # the VOC2012 folder: JPEGImages/ Annotations/ ImageSets/ SegmentationClass/
    #                                (coco14 / folder: the VOC-layout view of symlinks that prepare builds)
    protocol: str = "recam"  # coco14 only: recam (spec §11.4/§11.7) | coco2voc (later work, spec §11.9)
    coco: CocoParams = field(default_factory=CocoParams)
    folder: FolderParams = field(default_factory=FolderParams)
    sbd_root: Optional[str] = None  # SBD's dataset/ folder (cls/, train.txt, val.txt), for train_aug
    train_list: str = "train_aug"  # classifier training list
    val_list: str = "val"  # classifier validation list
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    max_images: Optional[int] = None  # debug: keep only the first N ids of every list
    check_images: str = "decode"  # prepare reads every image: decode (full) | header | none
    bad_images: str = (
        "fail"  # an unreadable/corrupt image: fail (one line naming it) | skip (left out of every list, reported)
    )
    unknown_classes: str = (
        "fail"  # an XML object name that is not a class: fail (one line naming it) | ignore (the reference)
    )
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)
    # dataset=cub: the CUB_200_2011 folder (images/, images.txt, ...); `prepare` builds a VOC-layout view at root
    cub_root: Optional[str] = None
    spg_list_dir: Optional[str] = (
        None  # dataset=cub: SPG's datalist/CUB (train_list.txt, test_list.txt); None = CUB's own split
    )


@dataclass
class ModelConfig:
    name: str = "resnet50_cam"
    arch: str = "resnet50"  # any torchvision ResNet: resnet18/34/50/101/152
    pretrained: str = (
        "imagenet"  # imagenet | none | synthetic (stage=pretrain's cached backbone) | path to a state_dict (.pth)
    )
    output_stride: int = 16  # 16: layer4 stride 1, no dilation (reference); 8: dilated layer3/4
    freeze_upto: str = "conv1"  # conv1 (ReCAM) | layer2 (IRN repo) | none
    fixed_bn: bool = True  # BN always uses its running stats (reference); false trains BN (from scratch)


@dataclass
class PrepareStage:
    overwrite: bool = False  # regenerate the synthetic dataset even if present


@dataclass
class PretrainStage:
    """`stage=pretrain`: the miniature world's ImageNet (recam/data/pretrain_world.py). The trained
    backbone is cached at <cache_dir>/<arch>-<key>/backbone.pth, the key a hash of every field below
    but cache_dir / workers / log_every, and `model.pretrained=synthetic` (irn., seg., spg. too)
    loads it where `imagenet` loads torchvision's file."""

    arch: str = "resnet18"  # the consumers' arch (model.arch, irn.arch, seg.arch's ResNet) must match
    seed: int = 0  # the world (class signatures, images) and the training run: deterministic from it
    num_classes: int = 64  # >= 50 (an ImageNet stand-in)
    images_per_class: int = 200  # train images per class
    val_per_class: int = 10  # held-out images per class (top-1 accuracy in results.json)
    image_size: int = 64
    epochs: int = 6
    batch_size: int = 64
    lr: float = 0.2  # SGD, Nesterov momentum 0.9, poly decay to 0, trainable BN (a standard recipe)
    momentum: float = 0.9
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    poly_power: float = 0.9
    pad: int = 6  # augmentation: random crop of the reflect-padded image + horizontal flip
    cache_dir: str = "data/pretrain"
    workers: int = 0  # rendering processes; 0 = one per core (<= 8)
    channels_last: bool = True  # NHWC model and batches (CPU, 64 px: 1.4x the NCHW speed); not in the key
    log_every: int = 20
    amp: Optional[bool] = None  # autocast; None = runtime.amp


@dataclass
class TrainStage:
    """Fields shared by the classifier training stages (spec §2.6 / §3.4)."""

    batch_size: int = 16
    epochs: int = 5
    crop_size: int = 512
    resize_long: list[int] = field(default_factory=lambda: [320, 640])
    lr: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 1e-4  # the reference's *effective* SGD momentum (spec §2.5 quirk); 0.9 = deviation
    poly_power: float = 0.9
    max_steps: Optional[int] = None  # cap on optimizer steps per epoch (smoke runs); None = full epochs
    val_batches: Optional[int] = None  # cap on validation batches; None = the whole val list
    log_every: int = 10
    grad_clip: Optional[float] = None
    keep_epochs: bool = False  # also keep every epoch's weights as checkpoints/epoch_<n>.pt
    amp: Optional[bool] = None  # autocast in this stage; None = runtime.amp


@dataclass
class CamStage(TrainStage):
    head_lr_mult: float = 10.0  # classifier group lr = 10 x backbone lr


@dataclass
class RecamStage(TrainStage):
    epochs: int = 4
    lr: float = 5e-4  # SCE-head lr; backbone and BCE head run at backbone_lr_mult x lr
    backbone_lr_mult: float = 0.1
    loss_weight: float = 1.0  # lambda in L = BCE + lambda * SCE (0.1 on COCO)
    keep_epochs: bool = True  # the reference saves every epoch's weights (spec §3.4)


@dataclass
class SeedsStage:
    method: str = "recam"  # cam | recam | a CAM-family method (recam/cams/methods.py: gradcam, scorecam, ...)
    split: str = "train_aug"  # which list to export (the reference exports all of train_aug)
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True  # add the mirror image at every scale (reference); false = an ablation
    bucket_size: int = 8  # images of equal size per batched forward (1 = one at a time)
    high_res_dtype: str = "float16"  # float16 halves the disk use; float32 for bit-level comparisons
    num_shards: int = 1  # split the export over processes: this one does shard_index::num_shards
    shard_index: int = 0
    use_fused_weight: bool = True  # ReCAM: W (.) V as in the reference; false = W alone (COCO reference)
    checkpoint_epoch: Optional[int] = None  # export from checkpoints/epoch_<n>.pt (keep_epochs); None = final weights
    # CAM-family methods (gradcam, scorecam, ... - recam/cams/methods.py), all on the `cam` classifier:
    target_layer: str = "backbone.layer4"  # the layer whose activations the methods weight
    chunk_size: int = 32  # masked / ablated inputs per forward (scorecam, sscam, ablationcam)
    top_k: Optional[int] = None  # scorecam/sscam/ablationcam: only the k channels of largest variance; None = all
    noise_seed: int = 0  # seed of the noise of smoothgradcampp and sscam
    n_samples: Optional[int] = None  # noisy samples (smoothgradcampp, sscam); None = the method's default (4 / 8)
    noise_std: Optional[float] = None  # noise std (smoothgradcampp: input units, 0.3; sscam: mask units, 2.0)
    amp: Optional[bool] = (
        None  # autocast of the backbone forward (cam/recam; class maps stay float32); None = runtime.amp
    )
    # Memory layout of the export's network: true = channels_last (NHWC), false = NCHW, None = the
    # fastest per device: NHWC on CPU (oneDNN, ~1.7x, docs/performance.md), runtime.channels_last on CUDA.
    # Speed only (float rounding), so it is not part of the stage key.
    channels_last: Optional[bool] = None
    # cam/recam: fold each BatchNorm into its convolution for the export (recam/models/fold.py): fewer
    # passes over the activations (CPU time 0.89-0.93x, docs/performance.md), float rounding only
    # (max abs diff to the reference 2e-6 on maps in [0, 1)). Speed only: not part of the stage key.
    fold_bn: bool = True
    # Decode once on the host, then rescale every scale on the export's device (torch bicubic with
    # antialias, rounded to grey levels, normalised in float32) instead of PIL's bicubic on the host:
    # one uint8 copy per image reaches the device instead of a float32 tensor per scale. Not the
    # reference's pixels (torch and PIL round differently: 1 grey level on ~16 % of the values of
    # a rescaled image, docs/performance.md), so true enters the stage key; false = the reference path.
    resize_on_device: bool = False


@dataclass
class EvalSeedsStage:
    method: str = "recam"
    split: str = "train"
    # background threshold: a number in (0, 1), auto (GT-free, `thresholds`), None = 0.21 (recam) / 0.15 (cam)
    threshold: Optional[Union[float, str]] = None
    # start, stop (inclusive), step in (0, 1): the protocol's range (AdvCAM / ReCAM, spec §5.2); the wide
    # [0.05, 0.60, 0.01] stays available (and the demo sweeps [0.05, 0.95, 0.01], its CAMs are broad)
    sweep: list[float] = field(default_factory=lambda: [0.15, 0.34, 0.01])


@dataclass
class IrLabelsStage:
    """Confident IR labels from seeds by dense CRF (spec §6a)."""

    seeds: str = "recam"  # which seeds/<method> to read
    split: str = "train_aug"  # ids to label (IRN trains on train_aug)
    # conf_fg_thres / conf_bg_thres, each a number in (0, 1) (IRN repo: 0.30 / 0.05) or auto: the
    # linked rule of spec 5.3 on the GT-free seed threshold t of `seeds`: t + fg_offset, t - bg_offset
    fg_threshold: Union[float, str] = 0.35
    bg_threshold: Union[float, str] = 0.10
    fg_offset: float = 0.14  # auto only, in [-1, 1]: 0.21 + 0.14 = ReCAM's 0.35
    bg_offset: float = 0.11  # auto only, in [-1, 1]: 0.21 - 0.11 = ReCAM's 0.10
    gt_prob: float = 0.7  # CRF unary confidence of the given label
    num_workers: int = 2  # CRF processes (the reference spawns 12); 0 = in this process
    start_method: str = "spawn"  # multiprocessing context of the pool: spawn | forkserver | fork


@dataclass
class IrnStage:
    """Inter-pixel relation network training (spec §6b); it trains on the ir_labels/ stage's labels."""

    split: str = "train_aug"
    val_split: Optional[str] = "val"  # val loss against affinity labels of the GT masks; null = none
    arch: str = "resnet50"
    pretrained: str = "imagenet"  # imagenet | none | synthetic | path to a state_dict | cam (the cam stage's backbone)
    batch_size: int = 32
    epochs: int = 3
    crop_size: int = 512
    scale_range: list[float] = field(default_factory=lambda: [0.5, 1.5])
    lr: float = 0.1  # boundary branch; the displacement branch runs at dp_lr_mult x lr
    dp_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 1e-4  # the reference's effective SGD momentum (spec §2.5 quirk)
    poly_power: float = 0.9
    radius: int = 10  # path-index radius in training (152 directions)
    max_steps: Optional[int] = None
    val_batches: Optional[int] = None
    mean_shift_batches: Optional[int] = None  # batches for the mean displacement; None = the whole list
    log_every: int = 10
    grad_clip: Optional[float] = None
    keep_epochs: bool = False
    amp: Optional[bool] = None  # autocast in training and the mean shift; None = runtime.amp


@dataclass
class MasksStage:
    """Pseudo masks: random walk over IRN boundaries (irn) or dense CRF on the seeds (crf), spec §6c."""

    method: str = "irn"  # irn | crf
    seeds: str = "recam"  # which seeds/<method> to propagate
    split: str = "train_aug"  # DeepLab trains on train_aug
    # method=irn (reference make_sem_seg_labels)
    radius: int = 5  # 34 directions
    beta: float = 10.0
    exp_times: int = 8  # 2^8 = 256 walk steps
    bg_threshold: Union[float, str] = (
        0.28  # sem_seg_bg_thres in (0, 1) (IRN repo: 0.25), or auto (GT-free, on the walk)
    )
    save_scores: bool = True  # keep the stride-4 walk so eval_masks can sweep bg_threshold
    # method=crf (non-reference ablation: seeds + background plane -> dense CRF)
    seed_threshold: Optional[Union[float, str]] = (
        None  # background plane in (0, 1); auto (GT-free); None = eval_seeds' default of `seeds`
    )
    crf_kernels: str = "ir_label"  # ir_label (spec §6a kernels) | deeplab (spec §7.1 kernels)
    gt_prob: float = 0.7
    num_workers: int = 2  # CRF processes for method=crf
    start_method: str = "spawn"


@dataclass
class EvalMasksStage:
    method: str = "irn"
    split: str = "train"
    # bg threshold sweep (irn scores): start, stop (inclusive), step in (0, 1); the protocol's range, as
    # eval_seeds; [0.05, 0.60, 0.01] is the wide one
    sweep: list[float] = field(default_factory=lambda: [0.15, 0.34, 0.01])


@dataclass
class SegStage:
    """DeepLab training on pseudo masks or ground truth (spec §7.1, deeplab-pytorch defaults)."""

    labels: str = "pseudo"  # pseudo: masks/<masks> PNGs | gt: ground-truth masks (fully supervised upper bound)
    masks: str = "irn"  # labels=pseudo: which masks/<method> to train on
    split: str = "train_aug"  # labels=pseudo: ids to train on
    gt_split: str = "train"  # labels=gt: ids with a GT mask (VOC train: 1,464 in SegmentationClass)
    gt_folder: str = "SegmentationClass"  # labels=gt: mask folder under dataset.root; SegmentationClassAug + gt_split=train_aug = deeplab-pytorch's setting
    arch: str = "deeplabv2_resnet101"  # deeplabv2_resnet18/34/50/101/152 | deeplabv3_resnet50 | deeplabv3_resnet101
    pretrained: str = (
        "imagenet"  # backbone: imagenet | none | synthetic | cam (the cam stage's backbone) | a state_dict path
    )
    #                                | advcam:<path> (the published caffe-layout ResNet-101 DeepLab init, recam/models/advcam.py)
    loss: str = "ce"  # ce (reference) | balanced (mean of the bg and fg pixel CEs, CLIMS / CLIP-ES)
    output_stride: int = 8  # 8 (reference) | 16 (deeplabv2 only)
    msc_scales: list[float] = field(default_factory=lambda: [0.5, 0.75])  # multi-scale inputs; [] = none
    fixed_bn: bool = True  # BN in eval mode, BN parameters never updated (reference); false trains BN
    iterations: int = 20000  # optimizer updates
    batch_size: int = 5  # images per forward
    iter_size: int = 2  # forwards accumulated per update (10 images per update)
    crop_size: int = 321
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])  # discrete train scales
    lr: float = 2.5e-4  # backbone; ASPP weights x head_lr_mult, ASPP biases x head_bias_lr_mult
    momentum: float = 0.9  # a real momentum here (unlike the classifier's 1e-4 quirk)
    weight_decay: float = 5e-4  # backbone and head weights; head biases 0
    head_lr_mult: float = 10.0
    head_bias_lr_mult: float = 20.0
    poly_power: float = 0.9
    lr_decay_every: int = 10  # the poly rate is recomputed every N updates (LR_DECAY)
    checkpoint_every: int = 5000  # checkpoints/last.pt every N updates and at the end
    log_every: int = 10
    grad_clip: Optional[float] = None
    check_labels: bool = True  # read every label file before training (values, sizes); false: existence only
    amp: Optional[bool] = None  # autocast in training; None = runtime.amp


@dataclass
class EvalSegStage:
    """Segmentation mIoU of a `seg` model on a labelled split (spec §7.1 "Test", "Metric", "CRF")."""

    labels: str = "pseudo"  # which seg/<labels> model to evaluate
    split: Optional[str] = None  # None = dataset.val_list (val, 1,449 on VOC)
    scales: list[float] = field(default_factory=lambda: [1.0])  # extra test scales (MSC already fuses 1/0.75/0.5)
    flip: bool = False  # the reference tests without flip
    crf: bool = True  # also score dense-CRF refined predictions (the paper's 68.5 is with CRF)
    # the image the CRF's bilateral kernel sees, for miou_crf: clean (the RGB image) | reference (deeplab-pytorch's
    # mean-subtracted BGR image cast to uint8, spec §7.3); both are scored and reported
    crf_image: str = "clean"
    amp: Optional[bool] = None  # autocast of the forward (probabilities are taken in float32); None = runtime.amp


@dataclass
class SummaryStage:
    """`stage=summary`: one table over many runs (a sweep)."""

    runs: str = ""  # folder to scan for runs (summary.json); "" = run.root
    key: str = ""  # swept config key, e.g. recam.loss_weight; "" = every key that differs


@dataclass
class VisualizeStage:
    """Pictures of CAMs and of the pipeline's outputs for a few images (recam/stages/visualize.py)."""

    ids: list[str] = field(default_factory=list)  # image ids to show; empty = the first num_images of split
    split: str = "val"
    num_images: int = 4
    methods: list[str] = field(
        default_factory=lambda: [
            "cam",
            "gradcam",
            "gradcampp",
            "smoothgradcampp",
            "scorecam",
            "sscam",
            "ablationcam",
            "xgradcam",
            "layercam",
        ]
    )
    target_layer: str = "backbone.layer4"
    feature_layer: str = "backbone.layer2"  # layer whose feature maps are shown as a grid
    feature_channels: int = 32  # first N channels of feature_layer in the grid
    top_k: Optional[int] = 64  # scorecam/sscam/ablationcam channels (None = all; slow on CPU)
    overlay_alpha: float = 0.5  # heat-map opacity over the image
    display_scale: int = 2  # nearest-neighbour upscaling of every picture (small images)
    font_size: int = 16  # pixels of captions, titles and legend text in the final (upscaled) picture, >= 8


@dataclass
class CamMethodsStage:
    """`make sweep-cam-methods`: export + evaluate seeds of every CAM method on a small subset, then
    tabulate seed mIoU, time per image and peak memory (recam/stages/cam_methods.py)."""

    methods: list[str] = field(
        default_factory=lambda: [
            "cam",
            "gradcam",
            "gradcampp",
            "smoothgradcampp",
            "scorecam",
            "sscam",
            "ablationcam",
            "xgradcam",
            "layercam",
        ]
    )
    split: str = "train"  # seeds are exported and scored on this split ...
    max_images: Optional[int] = 16  # ... its first N images (None = all; every method costs differently)
    scales: list[float] = field(default_factory=lambda: [1.0])  # fewer scales than seeds.scales, for speed
    top_k: Optional[int] = 32  # channels for scorecam/sscam/ablationcam (None = all)
    n_samples: Optional[int] = 2  # noisy samples for smoothgradcampp/sscam


@dataclass
class SpgStage:
    """SPG training (spg-spec.md §6 recipe; the network of recam/models/spg.py)."""

    arch: str = "inception_v3"  # inception_v3 (the reference) | resnet18/34/50/101/152 (same heads on our backbone)
    pretrained: str = (
        "imagenet"  # imagenet (torchvision file in the torch hub cache) | none | synthetic (ResNet) | a state_dict path
    )
    head_channels: int = 1024  # ResNet variant: fc6/fc7 width, >= 1 (Inception: fixed 1024)
    side_channels: int = 512  # ResNet variant: SPG-B/C width, >= 1 (Inception: fixed 512)
    output_stride: int = 16  # ResNet variant: 8 | 16
    fixed_bn: bool = False  # ResNet variant; the reference trains BN (batch statistics)
    dropout: float = 0.0  # in [0, 1): 0 = PyTorch 0.3's no-op F.dropout (reference); > 0 drops in training only
    align_corners: bool = (
        True  # the 224 up-sampling: true = PyTorch 0.3 (reference), false = the source on torch >= 0.4
    )
    carry_threshold: bool = True  # reference quirk: the fallback threshold carries over to later images of the batch
    mask_size: int = 224  # >= 1: the guidance masks' side, whatever the input size (reference)
    batch_size: int = 20  # >= 1 (reference: 2 GPUs x 10)
    epochs: int = 5  # >= 1
    resize_short: int = 356  # >= crop_size: shorter side before the crop
    crop_size: int = 321  # >= 32: train random crop, validation centre crop
    lr: float = 1e-3  # > 0: weights; biases 2x
    new_layer_lr_mult: float = 1.0  # > 0: 1 = the code (no new-layer boost, the released model); 10 = the paper
    momentum: float = 0.9  # in [0, 1), Nesterov
    weight_decay: float = 5e-4  # >= 0, on every parameter (BN and biases included), as the reference
    decay_points: list[int] = field(
        default_factory=list
    )  # epochs (1-based, each >= 1) at whose start every lr x 0.1; [] = constant (reference)
    max_steps: Optional[int] = None  # >= 1: cap on steps per epoch (smoke runs); None = full epochs
    val_batches: Optional[int] = None  # >= 1: cap on validation batches; None = the whole val list
    log_every: int = 10  # >= 1
    grad_clip: Optional[float] = None  # > 0
    keep_epochs: bool = False


@dataclass
class EvalLocStage:
    """Box localization of any seed method (recam/stages/eval_loc.py, spg-spec.md §7.4 `simple`)."""

    method: str = "spg"  # which seeds/<method> to read
    split: str = (
        "train"  # ids to evaluate (their XML boxes); seeds exist for seeds.split (train_aug), as for eval_seeds
    )
    protocol: str = "simple"  # simple (largest 8-connected component) | cam_dt_box (the CAM repo's tool)
    sweep: list[float] = field(
        default_factory=lambda: [0.05, 0.95, 0.05]
    )  # map thresholds tau: start, stop (inclusive), step, in (0, 1)
    dt_box_thresholds: list[int] = field(
        default_factory=lambda: [20, 100, 110]
    )  # cam_dt_box: 3 increasing values in [0, 255]
    iou_threshold: float = 0.5  # in (0, 1]: a box is correct at this devkit IoU


@dataclass
class WsolStage:
    """`make wsol`: CAM, ReCAM, SPG and the CAM family as localizers, one table (recam/stages/wsol.py)."""

    family: list[str] = field(
        default_factory=lambda: ["gradcam", "gradcampp", "xgradcam", "layercam"]
    )  # CAM-family methods (seeds.METHODS)
    split: str = "train"  # the family's seeds, mIoU and boxes on this split ...
    max_images: Optional[int] = 32  # ... its first N images (>= 1; None = all)
    scales: list[float] = field(default_factory=lambda: [1.0])  # family export scales (each > 0)
    top_k: Optional[int] = 32  # scorecam/sscam/ablationcam channels (>= 1; None = all)
    n_samples: Optional[int] = 2  # smoothgradcampp/sscam noisy samples (>= 1)


@dataclass
class ThresholdsConfig:
    """GT-free choice of every threshold set to `auto` (recam/thresholds, docs/thresholds.md):
    the selector reads a fixed random sample of images, their image-level labels and the score
    maps the stage thresholds (seeds, or the random walk), never a mask."""

    selector: str = "consensus"  # otsu | stability | edges | crf | consensus (recam/thresholds/selectors.py SELECTORS)
    sample_size: int = 24  # images in the sample, 1..100000 (crf: ~37 dense CRFs per image)
    seed: int = 0  # which sample, >= 0
    split: str = "train_aug"  # list the sample is drawn from (no ground truth is read)
    grid: list[float] = field(
        default_factory=lambda: [0.05, 0.95, 0.01]
    )  # candidates: start, stop (inclusive), step; 0 < start <= stop < 1, 0 < step


@dataclass
class Config:
    stage: StageSelect = MISSING
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    prepare: PrepareStage = field(default_factory=PrepareStage)
    pretrain: PretrainStage = field(default_factory=PretrainStage)
    cam: CamStage = field(default_factory=CamStage)
    recam: RecamStage = field(default_factory=RecamStage)
    seeds: SeedsStage = field(default_factory=SeedsStage)
    eval_seeds: EvalSeedsStage = field(default_factory=EvalSeedsStage)
    ir_labels: IrLabelsStage = field(default_factory=IrLabelsStage)
    irn: IrnStage = field(default_factory=IrnStage)
    masks: MasksStage = field(default_factory=MasksStage)
    eval_masks: EvalMasksStage = field(default_factory=EvalMasksStage)
    summary: SummaryStage = field(default_factory=SummaryStage)
    seg: SegStage = field(default_factory=SegStage)
    eval_seg: EvalSegStage = field(default_factory=EvalSegStage)
    visualize: VisualizeStage = field(default_factory=VisualizeStage)
    cam_methods: CamMethodsStage = field(default_factory=CamMethodsStage)
    spg: SpgStage = field(default_factory=SpgStage)
    eval_loc: EvalLocStage = field(default_factory=EvalLocStage)
    wsol: WsolStage = field(default_factory=WsolStage)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)

    def amp_for(self, stage: str) -> bool:
        """Whether `stage` runs under autocast: its own `amp` switch, or runtime.amp where that is None."""
        own = getattr(getattr(self, stage), "amp", None)
        return self.runtime.amp if own is None else own


def register_configs() -> None:
    """Store every schema (called by the entry point, never at import)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="stage", name="base_stage", node=StageSelect)
    cs.store(group="dataset", name="base_dataset", node=DatasetConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="runtime", name="base_runtime", node=RuntimeConfig)
