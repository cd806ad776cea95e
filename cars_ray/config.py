"""One typed configuration, read from YAML with ``key=value`` overrides (``optim.lr=3e-4``).

Sections mirror the code: ``data`` (cars_ray/data), ``model`` (cars_ray/models), ``optim`` and
``train`` (cars_ray/train), ``tune`` (cars_ray/tune). An unknown key or a value of the wrong
type fails with one sentence naming the file and key.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from cars_ray.errors import ConfigError

DEMO_ROOT = "demo"  # data.root_dir value that means the sample shipped in the package


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
    box_margin: float = 0.0  # when the layout has boxes, crop to them (grown by this fraction)
    batch_size: int = 32  # per worker
    eval_batch_size: int = 64
    augment: str = "standard"  # none | light | standard | strong
    rrc_scale_min: float = 0.25
    hflip: float = 0.5
    color_jitter: float = 0.2
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    shuffle_buffer: int = 1024
    decode_batch_size: int = 32
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


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    num_workers: int = 1
    use_gpu: str = "auto"  # auto | true | false
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False
    early_stop_metric: str = "val_loss"
    early_stop_mode: str = "min"
    early_stop_patience: int = 0  # 0 = off
    early_stop_min_delta: float = 0.0
    select_metric: str = "val_top1"  # which checkpoint is "best"
    select_mode: str = "max"
    max_failures: int = 2  # worker failures restored from the last checkpoint
    storage_path: str | None = None  # Ray Train storage; default <output_dir>/ray_results (shared FS on clusters)
    run_name: str = "train"
    eval_tta: bool = False  # horizontal-flip test-time augmentation in the final evaluation
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
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # a fraction lets several trials share one GPU


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or the defaults when path is None) and apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path} does not exist")
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else path
            raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data, model, optim, train, tune)")
    config = config_from_dict(raw, source=path or "defaults")
    for item in overrides:
        apply_override(config, item)
    validate(config)
    return config


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    config = Config()
    for section, values in raw.items():
        if section not in _sections():
            raise ConfigError(f"{source}: unknown section {section!r}; expected one of {', '.join(_sections())}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        for key, value in values.items():
            _set(config, f"{section}.{key}", value, source)
    return config


def apply_override(config: Config, item: str) -> None:
    """Apply one ``section.key=value`` override; the value is parsed as YAML (1e-3, true, [1, 2])."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=3e-4)")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        value = text
    _set(config, key.strip(), value, "command line")


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _set(config: Config, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in _sections():
        raise ConfigError(f"{source}: unknown key {dotted!r}; keys look like section.key with section one of "
                          f"{', '.join(_sections())}")
    section = getattr(config, parts[0])
    hints = typing.get_type_hints(type(section))
    if parts[1] not in hints:
        raise ConfigError(f"{source}: unknown key {dotted!r}; {parts[0]} has keys {', '.join(sorted(hints))}")
    setattr(section, parts[1], _coerce(value, hints[parts[1]], dotted, source))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{source}: {key} must not be empty")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    target = origin or hint
    if target is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if target is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
        except ValueError:
            pass
    if target is float and isinstance(value, (int, float)) and not isinstance(value, bool):
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
    "data.augment": ("none", "light", "standard", "strong"),
    "model.head": ("linear", "bilinear_attention"),
    "optim.schedule": ("cosine", "plateau", "none"),
    "train.use_gpu": ("auto", "true", "false"),
    "train.amp": ("auto", "bf16", "fp16", "off"),
    "train.early_stop_mode": ("min", "max"),
    "train.select_mode": ("min", "max"),
    "tune.search_alg": ("random", "optuna", "hyperopt"),
    "tune.scheduler": ("asha", "fifo"),
    "tune.mode": ("min", "max"),
}


def validate(config: Config) -> None:
    """Value checks that types alone cannot express."""
    for dotted, allowed in CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise ConfigError(f"{dotted} is {value!r}; expected one of {', '.join(allowed)}")
    positive = {"data.image_size": config.data.image_size, "data.batch_size": config.data.batch_size,
                "train.epochs": config.train.epochs, "train.num_workers": config.train.num_workers,
                "optim.lr": config.optim.lr}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if not 0 < config.data.crop_pct <= 1:
        raise ConfigError(f"data.crop_pct must be in (0, 1], got {config.data.crop_pct}")
    if not 0 < config.data.rrc_scale_min <= 1:
        raise ConfigError(f"data.rrc_scale_min must be in (0, 1], got {config.data.rrc_scale_min}")
