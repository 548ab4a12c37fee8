"""Typed schemas of every config group, registered in Hydra's ConfigStore.

Each YAML file under `configs/` names its schema first in `defaults` (Hydra's structured-config
pattern), so a misspelt key or a wrong type fails at start. Defaults here are the reference values
of `pipeline-spec.md` (PASCAL VOC, paper settings); the synthetic demo overrides them in
`configs/experiment/demo.yaml`. Convert once at the entry (`OmegaConf.to_object`) and hand each
function the slice it needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class StageSelect:
    """Which stage `python -m recam.train stage=<name>` runs (`all` walks the whole pipeline)."""
    name: str = MISSING
    # stage=all only: run just these steps of the plan, by label (e.g. [recam, seeds/recam,
    # eval_seeds/recam] for a lambda sweep); empty = every step.
    steps: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    name: str = "default"          # experiment name: artifacts go to <root>/<name>/<stage>/
    root: str = "outputs"
    # Per-stage overrides of where an upstream stage's artifacts live, e.g. {cam: outputs/base/cam}
    # to share one classifier across a lambda sweep.
    inputs: dict[str, str] = field(default_factory=dict)
    force: bool = False            # re-run a stage even if its outputs are up to date


@dataclass
class RuntimeConfig:
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    seed: int = 0
    # Autocast (CUDA: bf16 where supported, else fp16 + GradScaler; CPU: bf16) - the default of every
    # stage's own switch (cam.amp, recam.amp, seeds.amp, irn.amp, seg.amp, eval_seg.amp: None = this).
    amp: bool = False
    channels_last: bool = False    # models and batches in NHWC (faster convolutions on CPU and tensor cores)
    num_workers: int = 2           # DataLoader workers
    threads: int = 0               # torch.set_num_threads; 0 keeps torch's default
    deterministic: bool = False    # torch.use_deterministic_algorithms + cudnn.deterministic
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
    n_train: int = 320             # images in the seg-train split (also the train_aug list)
    n_val: int = 80
    n_extra: int = 80              # train_aug-only images (the SBD part of VOC's train_aug)
    min_size: int = 96             # shorter image side range
    max_size: int = 160            # longer image side range


@dataclass
class DatasetConfig:
    name: str = MISSING            # voc12 | synthetic
    root: str = MISSING            # the VOC2012 folder: JPEGImages/ Annotations/ ImageSets/ SegmentationClass/
    sbd_root: Optional[str] = None  # SBD's dataset/ folder (cls/, train.txt, val.txt), for train_aug
    train_list: str = "train_aug"  # classifier training list
    val_list: str = "val"          # classifier validation list
    eval_split: str = "train"      # split whose GT scores seeds and masks
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    max_images: Optional[int] = None  # debug: keep only the first N ids of every list
    check_images: str = "decode"   # prepare reads every image: decode (full) | header | none
    bad_images: str = "fail"       # an unreadable/corrupt image: fail (one line naming it) | skip (left out of every list, reported)
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)


@dataclass
class ModelConfig:
    name: str = "resnet50_cam"
    arch: str = "resnet50"         # any torchvision ResNet: resnet18/34/50/101/152
    pretrained: str = "imagenet"   # imagenet | none | path to a state_dict (.pth)
    output_stride: int = 16        # 16: layer4 stride 1, no dilation (reference); 8: dilated layer3/4
    freeze_upto: str = "conv1"     # conv1 (ReCAM) | layer2 (IRN repo) | none
    fixed_bn: bool = True          # BN always uses its running stats (reference); false trains BN (from scratch)


@dataclass
class PrepareStage:
    overwrite: bool = False        # regenerate the synthetic dataset even if present


@dataclass
class TrainStage:
    """Fields shared by the classifier training stages (spec §2.6 / §3.4)."""
    batch_size: int = 16
    epochs: int = 5
    crop_size: int = 512
    resize_long: list[int] = field(default_factory=lambda: [320, 640])
    lr: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 1e-4         # the reference's *effective* SGD momentum (spec §2.5 quirk); 0.9 = deviation
    poly_power: float = 0.9
    max_steps: Optional[int] = None  # cap on optimizer steps per epoch (smoke runs); None = full epochs
    val_batches: Optional[int] = None  # cap on validation batches; None = the whole val list
    log_every: int = 10
    grad_clip: Optional[float] = None
    keep_epochs: bool = False      # also keep every epoch's weights as checkpoints/epoch_<n>.pt
    amp: Optional[bool] = None     # autocast in this stage; None = runtime.amp


@dataclass
class CamStage(TrainStage):
    head_lr_mult: float = 10.0     # classifier group lr = 10 x backbone lr


@dataclass
class RecamStage(TrainStage):
    epochs: int = 4
    lr: float = 5e-4               # SCE-head lr; backbone and BCE head run at backbone_lr_mult x lr
    backbone_lr_mult: float = 0.1
    loss_weight: float = 1.0       # lambda in L = BCE + lambda * SCE (0.1 on COCO)
    keep_epochs: bool = True       # the reference saves every epoch's weights (spec §3.4)


@dataclass
class SeedsStage:
    method: str = "recam"          # cam | recam | a CAM-family method (recam/cams/methods.py: gradcam, scorecam, ...)
    split: str = "train_aug"       # which list to export (the reference exports all of train_aug)
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    bucket_size: int = 8           # images of equal size per batched forward (1 = one at a time)
    high_res_dtype: str = "float16"  # float16 halves the disk use; float32 for bit-level comparisons
    num_shards: int = 1            # split the export over processes: this one does shard_index::num_shards
    shard_index: int = 0
    use_fused_weight: bool = True  # ReCAM: W (.) V as in the reference; false = W alone (COCO reference)
    checkpoint_epoch: Optional[int] = None  # export from checkpoints/epoch_<n>.pt (keep_epochs); None = final weights
    # CAM-family methods (gradcam, scorecam, ... - recam/cams/methods.py), all on the `cam` classifier:
    target_layer: str = "backbone.layer4"  # the layer whose activations the methods weight
    chunk_size: int = 32           # masked / ablated inputs per forward (scorecam, sscam, ablationcam)
    top_k: Optional[int] = None    # scorecam/sscam/ablationcam: only the k channels of largest variance; None = all
    noise_seed: int = 0            # seed of the noise of smoothgradcampp and sscam
    n_samples: Optional[int] = None  # noisy samples (smoothgradcampp, sscam); None = the method's default (4 / 8)
    noise_std: Optional[float] = None  # noise std (smoothgradcampp: input units, 0.3; sscam: mask units, 2.0)
    amp: Optional[bool] = None     # autocast of the backbone forward (cam/recam; class maps stay float32); None = runtime.amp
    # Memory layout of the export's network: true = channels_last (NHWC), false = NCHW, None = the
    # fastest per device: NHWC on CPU (oneDNN, ~1.7x, docs/performance.md), runtime.channels_last on CUDA.
    # Speed only (float rounding), so it is not part of the stage key.
    channels_last: Optional[bool] = None
    # cam/recam: fold each BatchNorm into its convolution for the export (recam/models/fold.py): fewer
    # passes over the activations (CPU time 0.89-0.93x, docs/performance.md), float rounding only
    # (max abs diff to the reference 2e-6 on maps in [0, 1)). Speed only: not part of the stage key.
    fold_bn: bool = True


@dataclass
class EvalSeedsStage:
    method: str = "recam"
    split: str = "train"
    threshold: Optional[float] = None  # fixed background threshold; None = 0.21 (recam) / 0.15 (cam)
    sweep: list[float] = field(default_factory=lambda: [0.05, 0.60, 0.01])  # start, stop (inclusive), step


@dataclass
class IrLabelsStage:
    """Confident IR labels from seeds by dense CRF (spec §6a)."""
    seeds: str = "recam"           # which seeds/<method> to read
    split: str = "train_aug"       # ids to label (IRN trains on train_aug)
    fg_threshold: float = 0.35     # conf_fg_thres (IRN repo: 0.30)
    bg_threshold: float = 0.10     # conf_bg_thres (IRN repo: 0.05)
    gt_prob: float = 0.7           # CRF unary confidence of the given label
    num_workers: int = 2           # CRF processes (the reference spawns 12); 0 = in this process
    start_method: str = "spawn"    # multiprocessing context of the pool: spawn | forkserver | fork


@dataclass
class IrnStage:
    """Inter-pixel relation network training (spec §6b)."""
    seeds: str = "recam"           # train on ir_labels/<seeds>
    split: str = "train_aug"
    val_split: Optional[str] = "val"  # val loss against affinity labels of the GT masks; null = none
    arch: str = "resnet50"
    pretrained: str = "imagenet"   # imagenet | none | path to a state_dict | cam (the cam stage's backbone)
    batch_size: int = 32
    epochs: int = 3
    crop_size: int = 512
    scale_range: list[float] = field(default_factory=lambda: [0.5, 1.5])
    lr: float = 0.1                # boundary branch; the displacement branch runs at dp_lr_mult x lr
    dp_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    momentum: float = 1e-4         # the reference's effective SGD momentum (spec §2.5 quirk)
    poly_power: float = 0.9
    radius: int = 10               # path-index radius in training (152 directions)
    max_steps: Optional[int] = None
    val_batches: Optional[int] = None
    mean_shift_batches: Optional[int] = None  # batches for the mean displacement; None = the whole list
    log_every: int = 10
    grad_clip: Optional[float] = None
    keep_epochs: bool = False
    amp: Optional[bool] = None     # autocast in training and the mean shift; None = runtime.amp


@dataclass
class MasksStage:
    """Pseudo masks: random walk over IRN boundaries (irn) or dense CRF on the seeds (crf), spec §6c."""
    method: str = "irn"            # irn | crf
    seeds: str = "recam"           # which seeds/<method> to propagate
    split: str = "train_aug"       # DeepLab trains on train_aug
    # method=irn (reference make_sem_seg_labels)
    radius: int = 5                # 34 directions
    beta: float = 10.0
    exp_times: int = 8             # 2^8 = 256 walk steps
    bg_threshold: float = 0.28     # sem_seg_bg_thres (IRN repo: 0.25)
    save_scores: bool = True       # keep the stride-4 walk so eval_masks can sweep bg_threshold
    # method=crf (non-reference ablation: seeds + background plane -> dense CRF)
    seed_threshold: Optional[float] = None  # background plane; None = eval_seeds' fixed default of `seeds`
    crf_kernels: str = "ir_label"  # ir_label (spec §6a kernels) | deeplab (spec §7.1 kernels)
    gt_prob: float = 0.7
    num_workers: int = 2           # CRF processes for method=crf
    start_method: str = "spawn"


@dataclass
class EvalMasksStage:
    method: str = "irn"
    split: str = "train"
    sweep: list[float] = field(default_factory=lambda: [0.05, 0.60, 0.01])  # bg threshold sweep (irn scores)


@dataclass
class SegStage:
    """DeepLab training on pseudo masks or ground truth (spec §7.1, deeplab-pytorch defaults)."""
    labels: str = "pseudo"         # pseudo: masks/<masks> PNGs | gt: ground-truth masks (fully supervised upper bound)
    masks: str = "irn"             # labels=pseudo: which masks/<method> to train on
    split: str = "train_aug"       # labels=pseudo: ids to train on
    gt_split: str = "train"        # labels=gt: ids with a GT mask (VOC train: 1,464 in SegmentationClass)
    gt_folder: str = "SegmentationClass"  # labels=gt: mask folder under dataset.root; SegmentationClassAug + gt_split=train_aug = deeplab-pytorch's setting
    arch: str = "deeplabv2_resnet101"  # deeplabv2_resnet18/34/50/101/152 | deeplabv3_resnet50 | deeplabv3_resnet101
    pretrained: str = "imagenet"   # backbone: imagenet | none | cam (the cam stage's backbone) | a state_dict path
    output_stride: int = 8         # 8 (reference) | 16 (deeplabv2 only)
    msc_scales: list[float] = field(default_factory=lambda: [0.5, 0.75])  # multi-scale inputs; [] = none
    fixed_bn: bool = True          # BN in eval mode, BN parameters never updated (reference); false trains BN
    iterations: int = 20000        # optimizer updates
    batch_size: int = 5            # images per forward
    iter_size: int = 2             # forwards accumulated per update (10 images per update)
    crop_size: int = 321
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])  # discrete train scales
    lr: float = 2.5e-4             # backbone; ASPP weights x head_lr_mult, ASPP biases x head_bias_lr_mult
    momentum: float = 0.9          # a real momentum here (unlike the classifier's 1e-4 quirk)
    weight_decay: float = 5e-4     # backbone and head weights; head biases 0
    head_lr_mult: float = 10.0
    head_bias_lr_mult: float = 20.0
    poly_power: float = 0.9
    lr_decay_every: int = 10       # the poly rate is recomputed every N updates (LR_DECAY)
    checkpoint_every: int = 5000   # checkpoints/last.pt every N updates and at the end
    log_every: int = 10
    grad_clip: Optional[float] = None
    check_labels: bool = True      # read every label file before training (values, sizes); false: existence only
    amp: Optional[bool] = None     # autocast in training; None = runtime.amp


@dataclass
class EvalSegStage:
    """Segmentation mIoU of a `seg` model on a labelled split (spec §7.1 "Test", "Metric", "CRF")."""
    labels: str = "pseudo"         # which seg/<labels> model to evaluate
    split: Optional[str] = None    # None = dataset.val_list (val, 1,449 on VOC)
    scales: list[float] = field(default_factory=lambda: [1.0])  # extra test scales (MSC already fuses 1/0.75/0.5)
    flip: bool = False             # the reference tests without flip
    crf: bool = True               # also score dense-CRF refined predictions (the paper's 68.5 is with CRF)
    amp: Optional[bool] = None     # autocast of the forward (probabilities are taken in float32); None = runtime.amp


@dataclass
class SummaryStage:
    """`stage=summary`: one table over many runs (a sweep)."""
    runs: str = ""                 # folder to scan for runs (summary.json); "" = run.root
    key: str = ""                  # swept config key, e.g. recam.loss_weight; "" = every key that differs


@dataclass
class VisualizeStage:
    """Pictures of CAMs and of the pipeline's outputs for a few images (recam/stages/visualize.py)."""
    ids: list[str] = field(default_factory=list)  # image ids to show; empty = the first num_images of split
    split: str = "val"
    num_images: int = 4
    methods: list[str] = field(default_factory=lambda: [
        "cam", "gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam", "ablationcam", "xgradcam", "layercam"])
    target_layer: str = "backbone.layer4"
    feature_layer: str = "backbone.layer2"  # layer whose feature maps are shown as a grid
    feature_channels: int = 32     # first N channels of feature_layer in the grid
    top_k: Optional[int] = 64      # scorecam/sscam/ablationcam channels (None = all; slow on CPU)
    overlay_alpha: float = 0.5     # heat-map opacity over the image
    display_scale: int = 2         # nearest-neighbour upscaling of every picture (small images)


@dataclass
class CamMethodsStage:
    """`make sweep-cam-methods`: export + evaluate seeds of every CAM method on a small subset, then
    tabulate seed mIoU, time per image and peak memory (recam/stages/cam_methods.py)."""
    methods: list[str] = field(default_factory=lambda: [
        "cam", "gradcam", "gradcampp", "smoothgradcampp", "scorecam", "sscam", "ablationcam", "xgradcam", "layercam"])
    split: str = "train"           # seeds are exported and scored on this split ...
    max_images: Optional[int] = 16  # ... its first N images (None = all; every method costs differently)
    scales: list[float] = field(default_factory=lambda: [1.0])  # fewer scales than seeds.scales, for speed
    top_k: Optional[int] = 32      # channels for scorecam/sscam/ablationcam (None = all)
    n_samples: Optional[int] = 2   # noisy samples for smoothgradcampp/sscam


@dataclass
class Config:
    stage: StageSelect = MISSING
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    prepare: PrepareStage = field(default_factory=PrepareStage)
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
