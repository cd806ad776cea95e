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
