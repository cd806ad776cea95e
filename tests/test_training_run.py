"""The training-run object on its own (no Ray): freezing by epoch, the strong recipe's options together,
compile, checkpoint policy, EMA decay. The strong recipe end to end through Ray: tests/test_gpu_suite.py."""

from __future__ import annotations

import pytest
import torch

from cars_ray.config import load_config
from cars_ray.preprocessing import Preprocessing
from cars_ray.train import EPOCH_METRICS
from cars_ray.train.loop import FULL, WEIGHTS, checkpoint_kind
from cars_ray.train.run import TrainingRun

CPU = torch.device("cpu")


def tiny_run(*overrides: str, steps_per_epoch: int = 2) -> TrainingRun:
    cfg = load_config("configs/demo.yaml", ["model.backbone=test_efficientnet", "model.weights=none",
                                            "data.image_size=32", "data.batch_size=4", "train.channels_last=false",
                                            "model.early_stages=2", *overrides])
    torch.manual_seed(0)
    return TrainingRun(cfg, 4, Preprocessing.from_config(cfg), CPU, steps_per_epoch)


def batches(count: int = 2, size: int = 4):
    generator = torch.Generator().manual_seed(0)
    for _ in range(count):
        yield (torch.randint(0, 256, (size, 32, 32, 3), dtype=torch.uint8, generator=generator),
               torch.randint(0, 4, (size,), generator=generator))


def early_trainable(run: TrainingRun) -> bool:
    params = run.model.parameter_stages(run.cfg.model.early_stages)["early"]
    assert params
    return all(p.requires_grad for p in params)


def test_a_resume_after_the_frozen_epochs_unfreezes():
    """optim.freeze_early_epochs=1: epoch 1 frozen, epoch 2 on trainable, also in a run resumed after epoch 2
    (the old rule unfroze only when the epoch counter hit 1 exactly, so a resume kept it frozen)."""
    run = tiny_run("optim.freeze_early_epochs=1")
    assert not early_trainable(run)
    run.apply_freeze(2)
    assert early_trainable(run)
    saved = run.state_dict()
    saved["run_state"]["epoch"] = 2
    resumed = tiny_run("optim.freeze_early_epochs=1")
    resumed.load_state_dict(saved)
    resumed.apply_freeze(resumed.state.epoch + 1)
    assert early_trainable(resumed)
    always = tiny_run("optim.freeze_early_epochs=-1")
    always.apply_freeze(30)
    assert not early_trainable(always)


def test_strong_options_train_together_and_a_frozen_early_backbone_keeps_its_weights():
    """mixup/cutmix, EMA, gradient clipping, RandAugment and the plateau schedule over two epochs; with
    optim.freeze_early_epochs=-1 the early stages keep their starting weights and the late ones move."""
    run = tiny_run("optim.mixup=0.2", "optim.cutmix=1.0", "optim.mixup_prob=1.0", "optim.ema_decay=0.9",
                   "optim.grad_clip=1.0", "data.augment=strong", "optim.schedule=plateau", "optim.freeze_early_epochs=-1")
    assert run.mixup is not None and run.ema is not None
    stages = run.model.parameter_stages(run.cfg.model.early_stages)
    early = [p.detach().clone() for p in stages["early"]]
    late = [p.detach().clone() for p in stages["late"]]
    for epoch in (1, 2):
        run.apply_freeze(epoch)
        metrics = run.end_epoch(run.train_epoch(batches()), run.validate(batches(1)), 0.0, 1.0)
        assert torch.isfinite(torch.tensor([metrics["train_loss"], metrics["val_loss"]])).all(), metrics
    assert all(torch.equal(before, p) for before, p in zip(early, stages["early"]))
    assert any(not torch.equal(before, p) for before, p in zip(late, stages["late"]))
    assert any(not torch.equal(e, m) for e, m in zip(run.ema.module.parameters(), run.model.parameters())), \
        "the EMA weights are their own"


def test_an_epoch_reports_every_epoch_metric_and_a_structured_stop():
    run = tiny_run("optim.schedule=none")
    started = 0.0
    metrics = run.end_epoch(run.train_epoch(batches()), run.validate(batches(1)), started, 1.0)
    assert set(EPOCH_METRICS) <= set(metrics)
    assert metrics["train_images"] == 8 and metrics["val_images"] == 4
    assert metrics["stop_reason"] == "" and metrics["new_best"] is True
    diverged = tiny_run("optim.lr=1e30", "optim.late_lr=1e30", "optim.early_lr=1e30", "optim.optimizer=sgd",
                        "optim.schedule=none")
    for _ in range(3):
        metrics = diverged.end_epoch(diverged.train_epoch(batches()), diverged.validate(batches(1)), started, 1.0)
    assert metrics["stop_reason"] == "non_finite_loss" and "loss became nan" in metrics["stop_message"]


def test_a_run_is_finished_after_its_epochs_or_a_stop_so_a_resume_trains_nothing_more():
    from cars_ray.train.run import RunState

    going = {"stop_reason": ""}
    assert RunState(epoch=3, history=[going] * 3).finished(3)
    assert RunState(epoch=1, history=[{"stop_reason": "early_stopping"}]).finished(3)
    assert not RunState(epoch=1, history=[going]).finished(3) and not RunState().finished(3)


def test_checkpoint_policy_weights_on_new_best_full_every_n_and_at_the_end():
    cfg = tiny_run("train.checkpoint_every=3", "train.epochs=7").cfg

    def kind(epoch, new_best=False, stop=""):
        return checkpoint_kind({"epoch": epoch, "new_best": new_best, "stop_reason": stop}, cfg)

    assert [kind(1, True), kind(2), kind(3), kind(4, True), kind(6), kind(7)] == [WEIGHTS, "", FULL, WEIGHTS, FULL, FULL]
    assert kind(5, stop="early_stopping") == FULL


def test_ema_decay_reported_is_the_one_used():
    """timm's warm-up: the decay at step t is min(ema_decay, 1 - (1 + t) ** -2/3); metrics carry it."""
    run = tiny_run("optim.ema_decay=0.999")
    metrics = run.end_epoch(run.train_epoch(batches(3)), run.validate(batches(1)), 0.0, 1.0)
    assert metrics["ema_decay"] == pytest.approx(1 - (1 + 3 - 1) ** (-2 / 3))
    assert run.ema_decay_at(2670) == pytest.approx(0.9948, abs=1e-4), "30 epochs x 89 steps never reach 0.999"
    assert tiny_run("optim.ema_decay=0.999", "optim.ema_warmup=false").ema_decay_at(10) == 0.999


@pytest.mark.slow
def test_compile_trains_two_steps_on_cpu():
    """train.compile=true goes through torch.compile (inductor) and still learns: two steps on CPU."""
    run = tiny_run("train.compile=true", "optim.schedule=none")
    assert run.wrapped is not run.model, "the model is wrapped by torch.compile"
    before = [p.detach().clone() for p in run.model.parameters()]
    metrics = run.train_epoch(batches(2))
    assert metrics["train_images"] == 8 and metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    assert any(not torch.equal(b, p) for b, p in zip(before, run.model.parameters()))
