"""One typed configuration, read from YAML with ``key=value`` overrides (``optim.lr=3e-4``).

Sections mirror the code: ``data`` (cars_ray/data), ``model`` (cars_ray/models), ``optim`` and
``train`` (cars_ray/train), ``tune`` (cars_ray/tune). An unknown key or a value of the wrong
type fails with one sentence naming the file and key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from cars_ray.errors import ConfigError

DEMO_ROOT = "demo"  # data.root_dir value that means the sample shipped in the package

# Choice lists, one home each (no torch here): CHOICES checks a config against them, and the modules that act on
# a choice (augment, preprocessing, images, heads, sizing, inference) import them from here.
AUGMENT_LEVELS = ("none", "light", "standard", "strong")
RESIZE_MODES = ("squash", "shorter")  # squash: the whole crop to a square; shorter: short side, centre square
# stored: box pixels as the file stores them (before EXIF orientation; Stanford Cars'); upright: as shown
BOX_FRAMES = ("stored", "upright")
DATA_PIPELINES = ("auto", "cached", "streaming")
STREAM_SOURCES = ("decode", "disk")  # the streaming path's images: JPEGs decoded every epoch, or records on disk
HEAD_NAMES = ("linear", "bilinear_attention")
BackendName = Literal["auto", "torch", "onnx", "onnx-int8"]  # what runs a model (Serve's backend=, inference)
BACKENDS: tuple[str, ...] = typing.get_args(BackendName)


@dataclass
class DataConfig:
    root_dir: str = DEMO_ROOT  # dataset folder or CSV manifest; "demo" = the packaged sample
    layout: str = "auto"
    split_file: str | None = None  # path,class_id,split; None = a stratified split made on the fly
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    image_size: int = 224
    crop_pct: float = 1.0  # evaluation centre crop; the cache holds image_size / crop_pct pixels
    resize_mode: str = "squash"  # squash (whole crop to a square) | shorter (short side, centre square)
    box_margin: float = 0.0  # when the layout has boxes, crop to them (grown by this fraction)
    box_frame: str = "stored"  # stored (pixels as the file stores them: Stanford Cars') | upright (after EXIF orientation)
    # true: crop every image to its box when the layout has boxes (devkit, kaggle, car_ims, csv with x1..y2); false:
    # train and evaluate on whole images, the literature's "without bounding box" protocol (the checkpoint records it)
    use_boxes: bool = True
    batch_size: int = 32  # per worker
    eval_batch_size: int = 64
    augment: str = "standard"  # none | light | standard | strong
    rrc_scale_min: float = 0.25
    hflip: float = 0.5
    color_jitter: float = 0.2
    randaugment: str = "rand-m9-mstd0.5"  # timm's RandAugment string; used by augment=strong
    decode_batch_size: int = 32
    cache_on_device: str = "auto"  # auto | true | false: the decoded images on the GPU (when training on one)
    # auto | cached | streaming: decode once and hold the split (cached), or decode, crop and flip every epoch in
    # Ray Data tasks streamed into the workers (streaming); auto picks cached only when the decoded train + val
    # splits fit the budget in cars_ray.data.sizing (a share of the object store and of each worker's memory).
    pipeline: str = "auto"
    # The streaming path's source: decode (every epoch's tasks decode the JPEGs, as timm does) | disk (decode once
    # into fixed-size records under the run's --output-dir/decoded, as FFCV does; every epoch's tasks read them).
    stream_source: str = "decode"
    max_images_per_class: int | None = None  # cap per class and split (quick experiments)


@dataclass
class ModelConfig:
    backbone: str = "tf_efficientnet_lite2"
    weights: str = "offline"  # offline | hub | none | path to a .pth file
    head: str = "linear"  # linear | bilinear_attention
    dropout: float = 0.2
    drop_path: float = 0.0
    bilinear_channels: int = 512
    early_stages: int = 4  # leading timm parameter groups that count as "early backbone"


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # any timm optimizer name (adam, adamw, sgd, lamb, ...)
    lr: float = 1e-3  # classifier
    late_lr: float = 1e-4  # late backbone and the head's own layers (attention, reduction)
    early_lr: float = 1e-5  # early backbone (when not frozen)
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | plateau | none
    warmup_epochs: int = 1
    min_lr_ratio: float = 0.01
    plateau_factor: float = 0.1
    plateau_patience: int = 2
    freeze_early_epochs: int = 0  # -1 freezes the early backbone for the whole run
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha (0 = off)
    cutmix: float = 0.0  # cutmix alpha (0 = off)
    mixup_prob: float = 1.0
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    ema_decay: float = 0.0  # model EMA (0 = off); evaluation then uses the EMA weights
    # timm's EMA warm-up: the decay used at step t is min(ema_decay, 1 - (1 + t) ** -2/3), so it reaches
    # 0.99 at step 1,000 and 0.995 at step 2,828; each run logs the decay it reached (ema_decay in metrics.csv).
    ema_warmup: bool = True


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    num_workers: int = 1
    use_gpu: str = "auto"  # auto | true | false
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    # Intra-op threads of each training worker's PyTorch; 0 = its train.cpus_per_worker (Ray sets OMP_NUM_THREADS
    # so). More than it reserves lets a CPU worker use what the streaming path's decode tasks leave idle.
    torch_threads: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False
    early_stop_metric: str = "val_loss"
    early_stop_mode: str = "min"
    early_stop_patience: int = 0  # 0 = off
    early_stop_min_delta: float = 0.0
    select_metric: str = "val_top1"  # which checkpoint is "best"
    select_mode: str = "max"
    max_failures: int = 2  # worker failures restored from the last full checkpoint
    checkpoint_every: int = 5  # epochs between full training-state checkpoints (and always the last epoch)
    max_steps_per_epoch: int | None = None  # cap on each epoch's steps (benchmarks at a fixed step count); None = all
    storage_path: str | None = None  # Ray Train storage; default <output_dir>/ray_results (shared FS on clusters)
    run_name: str = "train"
    eval_tta: bool = False  # horizontal-flip test-time augmentation in the final evaluation
    tracking: str = "tensorboard"  # none | tensorboard (O/tensorboard) | mlflow (O/mlruns or MLFLOW_TRACKING_URI)
    output_dir: str = "runs/train"


@dataclass
class TuneConfig:
    search_space: dict[str, Any] = field(default_factory=dict)  # key -> {loguniform|uniform|choice|randint|grid: [...]}
    search_alg: str = "random"  # random | optuna | hyperopt
    scheduler: str = "asha"  # asha | fifo
    grace_period: int = 1
    reduction_factor: int = 2
    metric: str = "val_top1"
    mode: str = "max"
    num_samples: int = 8
    max_concurrent_trials: int = 0  # 0 = as many as resources allow
    # Per training worker of a trial; unset (null) keeps train.cpus_per_worker / train.use_gpu + gpus_per_worker.
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None  # a fraction lets several trials share one GPU; 0 trains trials on CPU


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "Config":
        """A config from ``{section: {key: value}}`` (what :meth:`to_dict` writes); unknown keys fail."""
        config = cls()
        for section, values in raw.items():
            if section not in SECTIONS:
                raise ConfigError(f"{source}: unknown section {section!r}; expected one of {', '.join(SECTIONS)}")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {section!r} must be a mapping")
            for key, value in values.items():
                config.set(f"{section}.{key}", value, source)
        return config

    def set(self, dotted: str, value: Any, source: str = "config") -> None:
        """Set ``section.key`` to ``value``, coerced to the key's type; fails naming ``source`` and the key."""
        parts = dotted.split(".")
        if len(parts) != 2 or parts[0] not in SECTIONS:
            raise ConfigError(f"{source}: unknown key {dotted!r}; keys look like section.key with section one of "
                              f"{', '.join(SECTIONS)}")
        section = getattr(self, parts[0])
        hints = typing.get_type_hints(type(section))
        if parts[1] not in hints:
            raise ConfigError(f"{source}: unknown key {dotted!r}; {parts[0]} has keys {', '.join(sorted(hints))}")
        setattr(section, parts[1], _coerce(value, hints[parts[1]], dotted, source))


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))
BASE_KEY = "base"  # a config file may name another (relative to itself) and override it


def load_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or the defaults when path is None) and apply ``key=value`` overrides."""
    raw = read_config_file(path) if path is not None else {}
    config = Config.from_dict(raw, source=path or "defaults")
    for item in overrides:
        apply_override(config, item)
    validate(config)
    return config


def read_config_file(path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The file's sections, merged key by key over those of the file its ``base:`` names (recursively)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist" + (f" (named as base by {seen[-1]})" if seen else ""))
    if os.path.abspath(path) in seen:
        raise ConfigError(f"{path}: base configs form a cycle ({' -> '.join(seen + (os.path.abspath(path),))})")
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, optim, train, tune)")
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must name one config file, got {base!r}")
    merged = read_config_file(os.path.join(os.path.dirname(path), base), seen + (os.path.abspath(path),))
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def apply_override(config: Config, item: str) -> None:
    """Apply one ``section.key=value`` override; the value is parsed as YAML (1e-3, true, [1, 2])."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=3e-4)")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        value = text
    config.set(key.strip(), value, "command line")


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{source}: {key} must not be empty")
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    target = origin or hint
    if target is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if target is float and isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
        except ValueError:
            pass
    if target is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
        return float(value)
    if target is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if target is str and isinstance(value, bool):
        return str(value).lower()  # use_gpu: true reads as a YAML bool
    if target is str and isinstance(value, (str, int, float)):
        return str(value)
    if target is dict and isinstance(value, dict):
        return value
    raise ConfigError(f"{source}: {key} must be of type {getattr(target, '__name__', target)}, got {value!r}")


CHOICES = {
    "data.augment": AUGMENT_LEVELS,
    "data.resize_mode": RESIZE_MODES,
    "data.box_frame": BOX_FRAMES,
    "data.cache_on_device": ("auto", "true", "false"),
    "data.pipeline": DATA_PIPELINES,
    "data.stream_source": STREAM_SOURCES,
    "model.head": HEAD_NAMES,
    "optim.schedule": ("cosine", "plateau", "none"),
    "train.use_gpu": ("auto", "true", "false"),
    "train.amp": ("auto", "bf16", "fp16", "off"),
    "train.early_stop_mode": ("min", "max"),
    "train.tracking": ("none", "tensorboard", "mlflow"),
    "train.select_mode": ("min", "max"),
    "tune.search_alg": ("random", "optuna", "hyperopt"),
    "tune.scheduler": ("asha", "fifo"),
    "tune.mode": ("min", "max"),
}
# Numbers that must lie in a range: (low, high, low inclusive, high inclusive); None = unbounded.
RANGES = {
    "data.val_fraction": (0, 1, True, False), "data.test_fraction": (0, 1, True, False),
    "data.image_size": (1, None, True, True), "data.batch_size": (1, None, True, True),
    "data.eval_batch_size": (1, None, True, True), "data.decode_batch_size": (1, None, True, True),
    "data.crop_pct": (0, 1, False, True), "data.rrc_scale_min": (0, 1, False, True),
    "data.box_margin": (0, None, True, True), "data.hflip": (0, 1, True, True), "data.color_jitter": (0, 1, True, True),
    "model.dropout": (0, 1, True, False), "model.drop_path": (0, 1, True, False), "model.bilinear_channels": (1, None, True, True),
    "model.early_stages": (0, None, True, True),
    "optim.lr": (0, None, False, True), "optim.late_lr": (0, None, True, True), "optim.early_lr": (0, None, True, True),
    "optim.weight_decay": (0, None, True, True), "optim.momentum": (0, 1, True, False),
    "optim.warmup_epochs": (0, None, True, True), "optim.min_lr_ratio": (0, 1, True, True),
    "optim.plateau_factor": (0, 1, False, False), "optim.plateau_patience": (0, None, True, True),
    "optim.label_smoothing": (0, 1, True, False), "optim.mixup": (0, None, True, True), "optim.cutmix": (0, None, True, True),
    "optim.mixup_prob": (0, 1, True, True), "optim.grad_clip": (0, None, True, True), "optim.ema_decay": (0, 1, True, False),
    "train.epochs": (1, None, True, True), "train.num_workers": (1, None, True, True),
    "train.cpus_per_worker": (0, None, False, True), "train.gpus_per_worker": (0, None, False, True),
    "train.torch_threads": (0, 256, True, True),  # far past any core count: 100000 crashed a worker
    "train.early_stop_patience": (0, None, True, True), "train.early_stop_min_delta": (0, None, True, True),
    "train.max_failures": (-1, None, True, True), "train.checkpoint_every": (1, None, True, True),
    "train.max_steps_per_epoch": (1, None, True, True),
    "tune.grace_period": (1, None, True, True), "tune.reduction_factor": (2, None, True, True),
    "tune.num_samples": (1, None, True, True), "tune.max_concurrent_trials": (0, None, True, True),
    "tune.cpus_per_trial": (0, None, True, True), "tune.gpus_per_trial": (0, None, True, True),
}


def validate(config: Config) -> None:
    """Value checks that types alone cannot express; each failure names the key."""
    for dotted, allowed in CHOICES.items():
        value = _get(config, dotted)
        if value not in allowed:
            raise ConfigError(f"{dotted} is {value!r}; expected one of {', '.join(allowed)}")
    for dotted, (low, high, low_inclusive, high_inclusive) in RANGES.items():
        value = _get(config, dotted)
        if value is None:
            continue
        too_low = low is not None and (value < low if low_inclusive else value <= low)
        too_high = high is not None and (value > high if high_inclusive else value >= high)
        if too_low or too_high:
            raise ConfigError(f"{dotted} is {value}; it must be in {'[' if low_inclusive else '('}{low}, "
                              f"{'inf' if high is None else high}{']' if high_inclusive and high is not None else ')'}")
    if config.data.val_fraction + config.data.test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction is "
                          f"{config.data.val_fraction + config.data.test_fraction:g}; it must be below 1")
    from cars_ray.data.augment_spec import RandAugmentSpec

    try:
        RandAugmentSpec.parse(config.data.randaugment)
    except ValueError as err:
        raise ConfigError(f"data.randaugment: {err}") from None
    from cars_ray.train import EPOCH_METRICS

    for dotted in ("train.early_stop_metric", "train.select_metric", "tune.metric"):
        if _get(config, dotted) not in EPOCH_METRICS:
            raise ConfigError(f"{dotted} is {_get(config, dotted)!r}, which training does not report; "
                              f"use one of {', '.join(EPOCH_METRICS)}")


def _get(config: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)
