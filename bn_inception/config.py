"""The one config schema of ``train.py`` and ``evaluate.py``: Hydra structured configs. Every key is declared
once: its type, default, choices or range (the field's metadata) and a comment with its unit and source.
Hydra checks types and unknown keys as it composes, :func:`validate` choices and ranges; ``bn_inception.cli``
runs both for every job of a command line before anything is created. ``configs/`` holds the experiments as
small deltas. No torch here: ``--help`` and a typo's error come back at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

TOKEN = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.\-]+")  # a directory name: never . or ..
INDEX_RANGE = re.compile(r"(?P<n>\d+)|(?P<a>\d*):(?P<b>\d*)")
DATASETS = ("imagenet", "imagenet_subset", "fashion_mnist", "synthetic")
SWITCH = ("auto", "true", "false")  # a bool that can be left to the device ("auto")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEVICES = ("auto", "cpu", "cuda")
AMP = ("auto", "bf16", "fp16", "none")


def one_of(*choices: Any, default: Any = None) -> Any:
    """A key whose value is one of ``choices``; the default is the first unless given."""
    return field(default=choices[0] if default is None else default, metadata={"choices": choices})


def number(default: Any, **bounds: float) -> Any:
    """A numeric key with bounds: ``gt`` (>), ``ge`` (>=), ``le`` (<=), ``lt`` (<)."""
    return field(default=default, metadata=bounds)


def pair(low: float, high: float) -> Any:
    """``[low, high]`` with 0 < low <= high: a range to draw from."""
    return field(default_factory=lambda: [low, high], metadata={"pair": True})


def _index_bounds(spec: Any) -> tuple[int, int | None] | None:
    """``(start, stop)`` of an index range (stop None: to the end), or None when it is not a valid one."""
    m = INDEX_RANGE.fullmatch(str(spec).strip())
    if not m:
        return None
    start, stop = (0, int(m["n"])) if m["n"] else (int(m["a"] or 0), int(m["b"]) if m["b"] else None)
    return (start, stop) if stop is None or stop > start else None


def index_range_of(spec: str | int | None, length: int) -> range:
    """The indices ``spec`` (``EvalConfig.images``) selects among ``length`` items (all when null);
    ValueError (one line) for a malformed or empty range."""
    if spec is None:
        return range(length)
    if (bounds := _index_bounds(spec)) is None:
        raise ValueError(f"images={spec} is not a range; use N > 0 (the first N), A:B with A < B, A: or :B")
    chosen = range(bounds[0], length if bounds[1] is None else min(bounds[1], length))
    if not chosen:
        raise ValueError(f"images={spec} selects no image of the {length}; use indices below {length}")
    return chosen


@dataclass
class InceptionModelConfig:
    """The BN-Inception family (paper appendix, Figure 5); keys are ``timm.create_model`` arguments."""

    # auto: bn_inception for inputs >= 96 px (the 224 px network), else bn_inception_small (28-64 px)
    name: str = one_of("auto", "bn_inception", "bn_inception_small")
    # batch (torch BN) | paper (Algorithm 1) | ghost (per ghost_batch_size group) | none (Inception: biases)
    norm: str = one_of("batch", "paper", "ghost", "none")
    # images per BN statistics group with norm=ghost (the paper's 32-image mini-batch, Sec. 4.2)
    ghost_batch_size: int = number(32, gt=0)
    # the nonlinearity: relu | sigmoid (BN-x5-Sigmoid, Sec. 4.2.2)
    act: str = one_of("relu", "sigmoid")
    # Local Response Normalization after pool1 and conv2, as GoogLeNet (Inception, BN-Baseline)
    lrn: bool = False
    # fraction dropped before the classifier (GoogLeNet: 0.4; removed in BN-x5 and up, Sec. 4.2.1 mod 2)
    drop_rate: float = number(0.0, ge=0.0, lt=1.0)
    # null: the model's own (224 px: separable, Fig. 5's 7x7 depthwise x8 + 1x1) | separable | plain (Caffe's)
    stem: str | None = one_of(None, "separable", "plain")
    # Figure 5's widths: tf (576/576/1024, its output column, TF-slim) | caffe (the literal 608/608/1056)
    table: str = one_of("tf", "caffe")
    # pooling: tf (stride-2 max pools padded by 1, averages exclude padding) | caffe (ceil_mode, pad counted)
    pool: str = one_of("tf", "caffe")
    # multiplies the initial conv weights (the ensemble members' "larger initial weights", Sec. 4.2.3)
    init_scale: float = number(1.0, gt=0.0)
    # per-activation (non-convolutional) BN in the last hidden layer (ensemble members, Sec. 4.2.3)
    last_bn: bool = False
    # BN epsilon (paper silent); null: the model's 1e-5
    bn_eps: float | None = number(None, gt=0.0)
    # weight of the NEW batch in BN's running averages (PyTorch convention = 1 - Caffe's decay); null: 0.1
    bn_momentum: float | None = number(None, gt=0.0, le=1.0)
    # channel multiplier of bn_inception_small; null: its 0.125 (ignored by the 224 px network)
    width_mult: float | None = number(None, gt=0.0)


@dataclass
class MLPModelConfig:
    """The Sec. 4.1 network: 3 fully-connected hidden layers of 100 sigmoid units, then a 10-way softmax."""

    # the network (one choice: configs/model/bn_mlp.yaml)
    name: str = one_of("bn_mlp")
    # none (Figure 1 "without BN") | batch | paper (BN before each hidden sigmoid)
    norm: str = one_of("none", "batch", "paper")


@dataclass
class DataConfig:
    """Keys every dataset has; ``configs/data/<name>.yaml`` gives the dataset's own values and says why."""

    # which dataset: configs/data/<name>.yaml
    name: str = one_of(*DATASETS, default=MISSING)
    # the dataset's folder; null: its default place (see configs/data/<name>.yaml)
    root: str | None = None
    # px, side of the square network input; evaluation: shorter side round(input_size*256/224), centre crop
    input_size: int = number(MISSING, gt=0)
    # training crop area as a fraction of the image (GoogLeNet: 8%-100%)
    crop_scale: list[float] = pair(0.08, 1.0)
    # training crop aspect-ratio range (w/h), GoogLeNet's [3/4, 4/3]
    crop_ratio: list[float] = pair(3 / 4, 4 / 3)
    # TF-slim Inception's colour ops: full (Inception, BN-Baseline) | reduced (BN-x5 up, mod 7) | none
    distortion: str = one_of("full", "reduced", "none")
    # "reduced" = this fraction of full's ranges (the paper gives no value)
    reduced_strength: float = number(0.5, gt=0.0, le=1.0)
    # false: train on the evaluation crop, no flip or distortion (Sec. 4.1)
    augment: bool = True
    # global: a new permutation each epoch (BN-x5 and up, mod 6) | shard: the baseline's weaker shuffling
    shuffle: str = one_of("global", "shard")
    # examples per shard with shuffle=shard (TF Inception's examples_per_shard)
    shard_size: int = number(1024, gt=0)
    # examples in the shuffle buffer with shuffle=shard (4 batches of 32; the paper gives none)
    shuffle_buffer: int = number(128, gt=0)
    # loader processes per training process; 0: none; null: min(8, CPU cores per training process - 1)
    workers: int | None = number(None, ge=0)
    # auto (= cpu) | cpu (loader workers) | gpu (experimental batched nvJPEG; unmeasured, benchmarks.md)
    decode: str = one_of("auto", "cpu", "gpu")
    # stop the run if more than this fraction of the distinct image files read so far is unreadable
    max_bad_fraction: float = number(0.001, ge=0.0, le=1.0)


@dataclass
class ImageNetConfig(DataConfig):
    """ILSVRC-2012 classification (1000 classes, 1.28M train, 50k val), decoded from JPEG files."""

    # flat val: LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt; null: searched near root
    val_labels: str | None = None
    # devkit ground truth: meta.mat or a text map (wnid ILSVRC2012_ID per line); null: searched near it
    synset_map: str | None = None
    # the tree's listing, read instead of listing 1.33M files at each start (data/index.py, rebuilt when the
    # tree changes); null: $XDG_CACHE_HOME/bn_inception/index/<root>-<hash>.idx
    index: str | None = None


@dataclass
class ImageNetSubsetConfig(ImageNetConfig):
    """N classes x K images per class of ILSVRC-2012, read from the ImageNet tree in place."""

    # imagenet100 (CMC's list, Tian et al. 2019), a file of wnids, or null: num_classes drawn (subset_seed)
    classes: str | None = "imagenet100"
    # classes to draw when classes is null (with a list: null, or the list's length)
    num_classes: int | None = number(None, gt=0)
    # training images kept per class, drawn with subset_seed; null: all
    images_per_class: int | None = number(None, gt=0)
    # validation images kept per class (ILSVRC-2012 has 50); null: all
    val_images_per_class: int | None = number(None, gt=0)
    # seeds the class and image draws; not the run's seed, so every run sees the same subset
    subset_seed: int = number(0, ge=0)
    # a text file listing the chosen files: written once, then checked on every start; null: none
    manifest: str | None = None


@dataclass
class FashionMNISTConfig(DataConfig):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test greyscale 28x28 images, in memory."""

    # let torchvision download into root (or ~/.cache/bn_inception/fashion_mnist) when no copy is found
    download: bool = True


@dataclass
class SyntheticConfig(DataConfig):
    """A generated ImageNet-layout JPEG tree (bn_inception.data.synthetic), for smoke runs and benchmarks."""

    # classes (made-up wnids)
    num_classes: int = number(10, gt=0)
    # training images per class
    train_per_class: int = number(64, gt=0)
    # validation images per class
    val_per_class: int = number(16, gt=0)
    # px, smallest image side (sides drawn independently between min_size and max_size)
    min_size: int = number(48, gt=0)
    # px, largest image side
    max_size: int = number(96, gt=0)
    # sorted (val/<wnid>/) | flat (val/ with devkit and Kaggle label files)
    val_layout: str = one_of("sorted", "flat")
    # ImageNet file quirks planted in train/: cmyk, png_as_jpeg, greyscale, exif, truncated, empty, not_image
    quirks: list[str] = field(default_factory=list)
    # seeds the generated images (not the run's seed: every run sees the same tree)
    generator_seed: int = number(0, ge=0)
    # the tree's index file, as for imagenet; null: in the cache folder
    index: str | None = None


DATA_SCHEMAS: dict[str, type[DataConfig]] = dict(
    zip(DATASETS, (ImageNetConfig, ImageNetSubsetConfig, FashionMNISTConfig, SyntheticConfig), strict=True)
)


@dataclass
class OptimConfig:
    """SGD with momentum (Sec. 4.2): the paper gives Inception's lr and the multipliers, not the rest."""

    # Inception's initial learning rate (Sec. 4.2.2), at the reference batch of 32 images
    base_lr: float = number(0.0015, gt=0.0)
    # the paper's "x5" / "x30" (Sec. 4.2.1 mod 1)
    lr_mult: float = number(1.0, gt=0.0)
    # the initial lr; null: base_lr x lr_mult (set it to override the multiplier)
    lr: float | None = number(None, gt=0.0)
    # paper silent; GoogLeNet's 0.9
    momentum: float = number(0.9, ge=0.0, lt=1.0)
    # the paper's L2 weight w (silent); Caffe's public GoogLeNet recipe uses 2e-4
    base_weight_decay: float = number(2.0e-4, ge=0.0)
    # 0.2 in BN-x5 and up: "reduce the L2 weight regularization by a factor of 5" (mod 3)
    weight_decay_factor: float = number(1.0, ge=0.0)
    # 2015 practice: L2 on every parameter (timm's trainer would exclude BN and biases)
    decay_bn_and_bias: bool = True
    # images per step the rates are stated for (the paper's 32); see scale_lr
    reference_batch: int = number(32, gt=0)
    # linear: lr x global batch / reference_batch (Goyal et al. 2017) | none: the rate as configured
    scale_lr: str = one_of("linear", "none")


@dataclass
class ScheduleConfig:
    """Step-wise exponential decay, a pure function of the step: lr * decay_rate ** floor(step / interval)."""

    # GoogLeNet: x0.96 ("4%") per interval; 1: a constant rate
    decay_rate: float = number(0.96, gt=0.0, le=1.0)
    # GoogLeNet: every 8 epochs of the training set (converted to steps at start)
    decay_epochs: float = number(8.0, gt=0.0)
    # the baseline interval in steps directly (overrides decay_epochs); null: from decay_epochs
    decay_steps: float | None = number(None, gt=0.0)
    # 6 in BN-x5 and up: "accelerate the learning rate decay by 6x" (Sec. 4.2.1 mod 4)
    speedup: float = number(1.0, gt=0.0)


@dataclass
class TrainerConfig:
    """Run length, evaluation, precision, logging. Steps (optimizer updates) are the unit everywhere."""

    # total training steps (the paper: up to 31e6 steps of 32 images)
    max_steps: int = number(3000, gt=0)
    # images per step per process (the paper's mini-batch, Sec. 4.2)
    batch_size: int = number(32, gt=0)
    # validate (single crop) and write checkpoints/last.pt every N steps
    eval_every: int = number(500, gt=0)
    # evaluate on the first N val images only (quick runs); null: all
    eval_limit: int | None = number(None, gt=0)
    # images per evaluation batch
    eval_batch_size: int = number(256, gt=0)
    # val top-1 in percent (a number, no % sign): record the first step reaching it (Table 2); null: none
    target_top1: float | None = number(None, ge=0.0, le=100.0)
    # train/* and perf/* scalars (and, off a terminal, a log line) every N steps
    log_every: int = number(50, gt=0)
    # val images whose nonlinearity inputs give the act/*/p15|p50|p85 scalars (Figure 1); 0: none
    probe_images: int = number(512, ge=0)
    # auto: cuda if a GPU is visible, else cpu
    device: str = one_of(*DEVICES)
    # autocast precision; auto: bf16 on cuda, none on cpu
    amp: str = one_of(*AMP)
    # channels-last tensors; auto: on (measured faster on CPU and GPU, docs/benchmarks.md)
    channels_last: str = one_of(*SWITCH)
    # torch.compile, or a mode; auto: on for cuda. Logged: "compiled" or "eager (why)" (engine/step.py)
    compile: str = one_of(*SWITCH, *COMPILE_MODES)
    # torch.use_deterministic_algorithms (exact resume on CPU; slower on a GPU)
    deterministic: bool = False
    # SyncBatchNorm across processes; false: BN statistics per replica (the paper's 32-image batches)
    sync_bn: bool = False
    # finite_check=sync: check the loss for NaN/Inf every N steps (a host sync on a GPU)
    finite_check_every: int = number(1, gt=0)
    # auto: device on cuda, else sync (loss.item() before the update); device: skipped on the device (step.py)
    finite_check: str = one_of("auto", "sync", "device")
    # a progress bar on a terminal (off a terminal: a plain log line every log_every steps)
    progress: bool = True


@dataclass
class TrainConfig:
    """``python train.py``: configs/train.yaml picks the groups; the experiments are deltas on top."""

    # the run's name, set by the experiment (the paper's variant name); names the run directory
    name: str = field(default=MISSING, metadata={"token": True})
    # seeds data order, augmentation, initialisation and dropout
    seed: int = number(0, ge=0)
    # auto: continue the run in its directory (checkpoints/last.pt); never: refuse; or a checkpoint's path
    resume: str = "auto"
    # configs/model/<name>.yaml: an InceptionModelConfig or an MLPModelConfig
    model: Any = MISSING
    # configs/data/<name>.yaml
    data: DataConfig = MISSING
    # where the scalars go besides TensorBoard (always written): wandb mirrors them, with the HParams and
    # the config, to Weights & Biases (pip install 'bn-inception[tracking]'; bn_inception/engine/wandb_log.py)
    logger: str = one_of("tensorboard", "wandb")
    # the sections below are declared by their own classes above
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class EvalConfig:
    """``python evaluate.py``: checkpoints alone and as an ensemble, 1/10/144 crops (Sec. 4.2.3)."""

    # .pt files, a list [a.pt,b.pt], a glob, or run/sweep directories (searched for */checkpoints/best.pt)
    checkpoints: Any = MISSING
    # data=<name>: configs/data/<name>.yaml; else the first checkpoint's, with data.<key>=value on top
    data: Any = field(default_factory=lambda: {"root": None})
    # 1 (side 256, centre 224) | 10 (corners + centre, mirrored) | 144 (GoogLeNet's), sizes x input_size/224
    crops: int = one_of(1, 10, 144)
    # val images by index: N (the first N), A:B (A to B-1), A: or :B; null: all (0:5000 choose, 5000: report)
    images: str | None = field(default=None, metadata={"index_range": True})
    # images per batch (each carries `crops` crops); null: max(1, 256 // crops)
    batch_size: int | None = number(None, gt=0)
    # crops per forward pass (bounds GPU memory with 144 crops)
    forward_batch: int = number(256, gt=0)
    # data-loading processes; null: the data config's
    workers: int | None = number(None, ge=0)
    # auto: cuda if a GPU is visible, else cpu
    device: str = one_of(*DEVICES)
    # autocast precision; auto: bf16 on cuda, none on cpu
    amp: str = one_of(*AMP)
    # channels-last tensors; auto: on, as in training
    channels_last: str = one_of(*SWITCH)
    # N > 0: also report every model with BN statistics recomputed from N training batches (Algorithm 2)
    population_stats: int = number(0, ge=0)
    # images per such batch (Algorithm 2's m); null: the first checkpoint's trainer.batch_size
    population_batch_size: int | None = number(None, ge=2)
    # resamples for the 95% bootstrap intervals of the errors; 0: no intervals
    bootstrap: int = number(1000, ge=0)
    # seeds the bootstrap and the choice of population-statistics batches
    seed: int = number(0, ge=0)
    # also report the error of every class (JSON; Markdown table)
    per_class: bool = False
    # also write each image's label and each row's top-1/5 hits (JSON per_image): paired comparisons later
    per_image: bool = False
    # write the table as JSON here (and Markdown next to it, .md); null: console only
    output: str | None = None
    # the Markdown table's path; null: <output without .json>.md when output is set
    markdown: str | None = None
    # write the errors and the table to TensorBoard here; null: no TensorBoard
    tb_dir: str | None = None
    # a progress bar with images/s on a terminal
    progress: bool = True


SCHEMAS = {"train": TrainConfig, "evaluate": EvalConfig}
#: The schemas each section of train.py's config may follow, by the section's ``name`` (None: any other).
SECTIONS: dict[str, dict[str | None, type]] = {
    "model": {"bn_mlp": MLPModelConfig, None: InceptionModelConfig},
    "data": {**DATA_SCHEMAS, None: DataConfig},
    "optim": {None: OptimConfig},
    "schedule": {None: ScheduleConfig},
    "trainer": {None: TrainerConfig},
}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; ``configs/*.yaml`` build on them through their defaults."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for app, schema in SCHEMAS.items():
        cs.store(name=f"{app}_schema", node=schema)
    cs.store(group="schema/model", name="bn_inception", node=InceptionModelConfig, package="model")
    cs.store(group="schema/model", name="bn_mlp", node=MLPModelConfig, package="model")
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="schema/data", name=name, node=node, package="data")


def effective_lr(optim: OptimConfig, global_batch: int | None = None) -> float:
    """The initial learning rate: ``optim.lr`` when set, else ``base_lr x lr_mult`` (the paper's x5, x30);
    with ``scale_lr=linear``, times ``global_batch / reference_batch`` (the paper's rates are for 32-image
    steps; Goyal et al. 2017, the usual rule for data-parallel SGD)."""
    lr = float(optim.lr) if optim.lr is not None else optim.base_lr * optim.lr_mult
    return lr * global_batch / optim.reference_batch if global_batch and optim.scale_lr == "linear" else lr


def effective_weight_decay(optim: OptimConfig) -> float:
    """L2 weight: ``base_weight_decay x weight_decay_factor`` (BN-x5 and up: w/5, Sec. 4.2.1 mod 3)."""
    return optim.base_weight_decay * optim.weight_decay_factor


def train_config(cfg: Mapping[str, Any]) -> TrainConfig:
    """A composed ``train.py`` config (plain containers, resolved) checked (:func:`validate`) and typed: what
    ``bn_inception.engine.trainer.train`` takes."""
    validate(cfg, TrainConfig)
    return TrainConfig(**{**cfg, **{name: section_schema(name, cfg[name])(**cfg[name]) for name in SECTIONS}})


#: Keys that change where a run is, how long, verbosely or fast it goes, not what it computes: a run resumed
#: with other values of these is the same run (engine/checkpoint.py), and they do not name its directory.
SAME_RUN_KEYS = frozenset(
    {"resume", "data.root", "data.workers", "data.index", "data.decode", "trainer.max_steps",
     "trainer.eval_every", "trainer.eval_limit", "trainer.eval_batch_size", "trainer.log_every",
     "trainer.progress", "trainer.probe_images", "trainer.target_top1", "trainer.device", "trainer.compile",
     "trainer.finite_check", "logger"}
)  # fmt: skip


class ConfigError(ValueError):
    """A value the schema does not allow; one line naming the key, the value and what is valid."""


def section_schema(name: str, section: Mapping[str, Any]) -> type | None:
    """The dataclass describing a config section (``model``/``data``: the one its ``name`` picks)."""
    choices = SECTIONS.get(name, {})
    return choices.get(section.get("name"), choices.get(None))


def field_of(schema: type, dotted_key: str) -> dataclasses.Field | None:
    """The schema field of ``key`` or ``section.key`` (any model/data schema that has it), or None."""
    section, _, leaf = dotted_key.rpartition(".")
    candidates = SECTIONS.get(section, {}).values() if section else [schema]
    return next((f for s in candidates for f in dataclasses.fields(s) if f.name == leaf), None)


def did_you_mean(key: str, schema: type) -> str:
    """`` (did you mean trainer.max_steps?)`` for ``max_steps`` or ``trainer.max_step``; or nothing."""
    keys = [f.name for f in dataclasses.fields(schema) if f.name not in SECTIONS]
    keys += [f"{f.name}.{g.name}" for f in dataclasses.fields(schema) if f.name in SECTIONS
             for s in SECTIONS[f.name].values() for g in dataclasses.fields(s)]  # fmt: skip
    section, _, leaf = key.rpartition(".")
    elsewhere = [k for k in keys if k.rpartition(".")[2] == leaf and k != key]  # the key in another section
    here = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == section}
    close = elsewhere or [here[m] for m in difflib.get_close_matches(leaf, list(here), n=1)]
    return f" (did you mean {close[0]}?)" if close else ""


def validate(cfg: Mapping[str, Any], schema: type, prefix: str = "", root: type | None = None) -> None:
    """Check ``cfg`` (composed, plain containers, no ``hydra``) against ``schema``: only its keys (``+key=``
    can add any), none removed (``~optim``) or unset, every value within its choices and range (Hydra checked
    the types); :class:`ConfigError` at the first problem."""
    root = root or schema
    fields = {f.name: f for f in dataclasses.fields(schema)}
    allowed = set(fields)
    if prefix == "data." and "name" not in cfg:  # evaluate.py: keys put on top of a checkpoint's data config
        allowed |= {f.name for s in DATA_SCHEMAS.values() for f in dataclasses.fields(s)}
    unknown = [prefix + name for name in cfg if name not in allowed]
    if unknown:
        raise ConfigError(
            f"{unknown[0]} is not a config key{did_you_mean(unknown[0], root)}; --cfg job lists every key"
        )
    for f in fields.values():
        key, value = f"{prefix}{f.name}", cfg.get(f.name, MISSING)
        nested = section_schema(f.name, value) if schema is root and isinstance(value, Mapping) else None
        if f.name not in cfg and schema is root:
            raise ConfigError(f"{key} is missing (removed with ~{key}?); set it instead")
        if f.name in cfg and value == MISSING:
            raise ConfigError(f"{key} is not set; give it a value ({key}=...)")
        if nested is not None:
            validate(value, nested, f"{key}.", root)
        elif f.name in cfg and (problem := _problem(value, f.metadata)):
            shown = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list | tuple) else value
            raise ConfigError(f"{key}={'null' if value is None else shown} is not valid; {problem}")


_SIGNS = {"gt": (">", float.__gt__), "ge": (">=", float.__ge__), "le": ("<=", float.__le__),
          "lt": ("<", float.__lt__)}  # fmt: skip


def _problem(value: Any, rules: Mapping[str, Any]) -> str | None:
    text = str(value)
    # choices are spelled exactly (the code compares them so); only a YAML boolean (True) may stand for "true"
    allowed = [str(c) for c in rules.get("choices", ()) if c is not None]
    if value is None:
        return None
    if allowed and (text.lower() if text in ("True", "False") else text) not in allowed:
        return "use one of: " + ", ".join(allowed)
    if rules.get("index_range") and _index_bounds(text) is None:
        return "use N > 0 (the first N), A:B with A < B, A: or :B (indices from 0)"
    if rules.get("token") and not TOKEN.fullmatch(text):
        return "use letters, digits, '_', '.' and '-' only (it names a directory)"
    if rules.get("pair") and not (len(value) == 2 and 0 < value[0] <= value[1]):
        return "give [low, high] with 0 < low <= high"
    if isinstance(value, float) and not math.isfinite(value):
        return "it must be a finite number"
    bounds = {k: v for k, v in rules.items() if k in _SIGNS and v is not None}
    if not all(_SIGNS[k][1](float(value), float(v)) for k, v in bounds.items()):
        return "it must be " + " and ".join(f"{_SIGNS[k][0]} {v}" for k, v in bounds.items())
    return None
