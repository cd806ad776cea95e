"""Configs: every shipped YAML loads; overrides are typed; mistakes name the key."""

from pathlib import Path

import pytest

from cars_ray.config import load_config
from cars_ray.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(str(path))


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=3e-4", "train.epochs=5", "train.use_gpu=true", "data.split_file=s.csv"])
    assert cfg.optim.lr == 3e-4 and cfg.train.epochs == 5 and cfg.train.use_gpu == "true"
    assert cfg.data.split_file == "s.csv"


@pytest.mark.parametrize("override, message", [
    ("optim.learning_rate=1", "unknown key 'optim.learning_rate'"),
    ("train.epochs=many", "train.epochs must be of type int"),
    ("model.head=mlp", "model.head is 'mlp'"),
    ("noequals", "must look like section.key=value"),
])
def test_mistakes_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_notebook_recipe_is_the_notebook():
    cfg = load_config("configs/notebook.yaml")
    assert (cfg.optim.early_lr, cfg.optim.late_lr, cfg.optim.lr) == (1e-5, 1e-4, 1e-3)
    assert cfg.optim.optimizer == "adam" and cfg.optim.weight_decay == 1e-3 and cfg.optim.label_smoothing == 0.1
    assert cfg.optim.schedule == "plateau" and (cfg.optim.plateau_factor, cfg.optim.plateau_patience) == (0.1, 2)
    assert (cfg.train.early_stop_patience, cfg.train.early_stop_min_delta) == (5, 0.01)
    assert cfg.optim.freeze_early_epochs == -1 and cfg.data.image_size == 224 and cfg.model.head == "bilinear_attention"


@pytest.mark.parametrize("override, message", [
    ("optim.lr=nan", "optim.lr must be a finite number, got nan"),
    ("data.box_margin=inf", "data.box_margin must be a finite number, got inf"),
    ("optim.mixup_prob=1.5", r"optim.mixup_prob is 1.5; it must be in \[0, 1\]"),
    ("train.torch_threads=-1", r"train.torch_threads is -1; it must be"),
    ("train.torch_threads=100000", r"train.torch_threads is 100000; it must be in \[0, 256\]"),
    ("train.early_stop_metric=val_f1", "train.early_stop_metric is 'val_f1', which training does not report"),
    ("train.select_metric=top1", "train.select_metric is 'top1', which training does not report"),
    ("tune.metric=val_acc", "tune.metric is 'val_acc', which training does not report"),
    ("data.randaugment=rand-m9-q3", "data.randaugment: 'rand-m9-q3': unknown section 'q3'"),
])
def test_values_are_checked_before_anything_starts(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_config_composes_over_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text("data:\n  image_size: 96\n  batch_size: 8\noptim:\n  lr: 0.01\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ndata:\n  batch_size: 16\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.optim.lr) == (96, 16, 0.01)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="base configs form a cycle"):
        load_config(str(tmp_path / "loop.yaml"))
    demo, tune_demo = load_config("configs/demo.yaml"), load_config("configs/tune_demo.yaml")
    assert tune_demo.model == demo.model and tune_demo.data.root_dir == demo.data.root_dir
    assert tune_demo.data.image_size == 112 and tune_demo.train.epochs == 4


def test_public_setter_names_the_source():
    from cars_ray.config import Config

    cfg = Config()
    cfg.set("optim.lr", "3e-4", "a test")
    assert cfg.optim.lr == 3e-4
    with pytest.raises(ConfigError, match="a test: unknown key 'optim.nope'"):
        cfg.set("optim.nope", 1, "a test")
