"""The per-worker training function: plain PyTorch plus a few ``ray.train`` calls.

Each epoch: stream the worker's shard of the decoded training set, augment on the device, step
with AMP; validate on the worker's shard of the validation set (sums all-reduced); report
metrics and a checkpoint (rank 0 writes it). A restarted worker resumes from the last one.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

from cars_ray.config import Config, config_from_dict
from cars_ray.data.augment import EvalTransform, create_train_augment
from cars_ray.models import create_model
from cars_ray.train.checkpoint import read_train_state, write_checkpoint
from cars_ray.train.optim import (
    amp_dtype, autocast, create_optimizer, create_scheduler, set_early_frozen, unwrap,
)

NAN_CHECK_EVERY = 20  # steps between host syncs that check the loss is finite


@dataclass
class RunState:
    """What survives a restart besides the weights: progress, early stopping and history."""

    epoch: int = 0
    step: int = 0
    best_monitor: float | None = None
    bad_epochs: int = 0
    resumed_at: list[int] = field(default_factory=list)  # epochs a restart or --resume continued from
    history: list[dict] = field(default_factory=list)


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = config_from_dict(loop_config["config"], source="train loop config")
    class_names, preprocessing = loop_config["class_names"], loop_config["preprocessing"]
    seed_everything(cfg.train.seed + ray.train.get_context().get_world_rank())
    device = ray.train.torch.get_device()
    dtype = amp_dtype(cfg.train, device)

    model = create_model(cfg.model, len(class_names), pretrained=True)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    freeze_always = cfg.optim.freeze_early_epochs < 0
    set_early_frozen(model, cfg.model.early_stages, freeze_always or cfg.optim.freeze_early_epochs > 0)
    model.to(device)
    optimizer = create_optimizer(model, cfg.optim, cfg.model.early_stages, fused=device.type == "cuda")
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    steps_per_epoch = loop_config["train_size"] // (cfg.data.batch_size * ray.train.get_context().get_world_size())
    scheduler, schedule_unit = create_scheduler(optimizer, cfg.optim, cfg.train.epochs, max(1, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = ModelEmaV3(model, decay=cfg.optim.ema_decay, use_warmup=True) if cfg.optim.ema_decay > 0 else None
    state = RunState()

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            restore(directory, model, optimizer, scheduler, scaler, ema, state)
        state.resumed_at.append(state.epoch)
        print(f"[cars_ray] resumed from the checkpoint of epoch {state.epoch}")

    ddp_model = wrap(model, cfg)
    augment = create_train_augment(cfg.data, preprocessing).to(device)
    eval_view = EvalTransform(preprocessing).to(device)
    mixup = make_mixup(cfg, len(class_names))
    criterion = SoftTargetCrossEntropy() if mixup else torch.nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)

    while state.epoch < cfg.train.epochs:
        epoch = state.epoch + 1
        if 0 < cfg.optim.freeze_early_epochs == state.epoch:
            set_early_frozen(model, cfg.model.early_stages, False)
            ddp_model = wrap(model, cfg)  # DDP must see the newly trainable parameters
        started = time.perf_counter()
        train_metrics = train_one_epoch(ddp_model, train_shard, augment, mixup, criterion, optimizer, scheduler,
                                        schedule_unit, scaler, ema, cfg, device, dtype, state)
        train_seconds = time.perf_counter() - started
        eval_model = ema.module if ema is not None else model
        val_metrics = validate(eval_model, val_shard, eval_view, cfg, device, dtype)
        if schedule_unit == "epoch":
            scheduler.step(val_metrics["val_loss"])
        state.epoch = epoch
        metrics = {
            "epoch": epoch, **train_metrics, **val_metrics,
            "train_seconds": train_seconds, "epoch_seconds": time.perf_counter() - started,
            "images_per_second": train_metrics["train_images"] / max(train_seconds, 1e-9),
            "resumes": len(state.resumed_at),
            **{f"lr_{group['name'].split('/')[0]}": group["lr"] for group in optimizer.param_groups
               if group["name"].endswith("/decay")},
        }
        stop_reason = early_stop_check(state, metrics, cfg)
        if not np.isfinite(metrics["train_loss"]):
            stop_reason = (f"the training loss became {metrics['train_loss']} in epoch {epoch}; "
                           "lower optim.lr or set optim.grad_clip")
        metrics["stop_reason"] = stop_reason or ""
        state.history.append({k: v for k, v in metrics.items()})
        report(metrics, model, eval_model, optimizer, scheduler, scaler, ema, state, loop_config, cfg)
        if ray.train.get_context().get_world_rank() == 0:
            print(format_epoch(metrics, cfg.train.epochs))
        if stop_reason:
            break


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def wrap(model: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """DDP across workers (via Ray Train) and, optionally, torch.compile."""
    prepared = ray.train.torch.prepare_model(model, move_to_device=False) \
        if ray.train.get_context().get_world_size() > 1 else model
    return torch.compile(prepared) if cfg.train.compile else prepared


def make_mixup(cfg: Config, num_classes: int) -> Mixup | None:
    if cfg.optim.mixup <= 0 and cfg.optim.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=cfg.optim.mixup, cutmix_alpha=cfg.optim.cutmix, prob=cfg.optim.mixup_prob,
                 label_smoothing=cfg.optim.label_smoothing, num_classes=num_classes)


def train_one_epoch(model, shard, augment, mixup, criterion, optimizer, scheduler, schedule_unit, scaler, ema,
                    cfg: Config, device, dtype, state: RunState) -> dict:
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    batches = shard.iter_torch_batches(
        batch_size=cfg.data.batch_size, drop_last=True, device=device,
        local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
        local_shuffle_seed=cfg.train.seed * 1000 + state.epoch,
    )
    for step_in_epoch, batch in enumerate(batches, start=1):
        with torch.no_grad():
            images = augment(batch["image"])
            labels = batch["label"]
            targets = labels
            if mixup is not None:
                images, targets = mixup(images, labels)
            if cfg.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = model(images)
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if schedule_unit == "step":
            scheduler.step()
        if ema is not None:
            ema.update(unwrap(model), step=state.step)
        state.step += 1
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += labels.shape[0]
        if step_in_epoch % NAN_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            break  # reported as a non-finite loss, which stops the run
    totals = all_reduce(torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)]))
    return {"train_loss": float(totals[0] / max(totals[2], 1)), "train_top1": float(totals[1] / max(totals[2], 1)),
            "train_images": int(totals[2])}


@torch.no_grad()
def validate(model, shard, eval_view, cfg: Config, device, dtype) -> dict:
    model.eval()
    sums = torch.zeros(4, device=device)  # loss, top1, top5, count
    for batch in shard.iter_torch_batches(batch_size=cfg.data.eval_batch_size, device=device):
        images = eval_view(batch["image"])
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch["label"]
        with autocast(device, dtype):
            logits = model(images)
        logits = logits.float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        sums += torch.stack([
            F.cross_entropy(logits, labels, reduction="sum"),
            (top5[:, 0] == labels).sum().float(),
            (top5 == labels[:, None]).any(1).sum().float(),
            torch.tensor(float(labels.shape[0]), device=device),
        ])
    sums = all_reduce(sums)
    count = max(float(sums[3]), 1.0)
    return {"val_loss": float(sums[0]) / count, "val_top1": float(sums[1]) / count,
            "val_top5": float(sums[2]) / count, "val_images": int(sums[3])}


def all_reduce(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
    return values


def early_stop_check(state: RunState, metrics: dict, cfg: Config) -> str | None:
    """Track the monitored metric; a reason to stop once it failed to improve for `patience` epochs."""
    if cfg.train.early_stop_patience <= 0:
        return None
    value = metrics[cfg.train.early_stop_metric]
    sign = 1.0 if cfg.train.early_stop_mode == "min" else -1.0
    if state.best_monitor is None or sign * (state.best_monitor - value) > cfg.train.early_stop_min_delta:
        state.best_monitor, state.bad_epochs = value, 0
        return None
    state.bad_epochs += 1
    if state.bad_epochs >= cfg.train.early_stop_patience:
        return (f"early stopping: {cfg.train.early_stop_metric} did not improve by "
                f"{cfg.train.early_stop_min_delta} for {state.bad_epochs} epochs")
    return None


def report(metrics, model, eval_model, optimizer, scheduler, scaler, ema, state: RunState, loop_config, cfg) -> None:
    """Report metrics with a checkpoint written by rank 0 (the others report metrics only)."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        meta = {
            "class_names": loop_config["class_names"],
            "preprocessing": loop_config["preprocessing"],
            "model": loop_config["config"]["model"],
            "config": loop_config["config"],
            "epoch": state.epoch,
            "metrics": metrics,
            "ema": ema is not None,
        }
        train_state = {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "run_state": state.__dict__,
        }
        write_checkpoint(directory, unwrap(eval_model).state_dict(), meta, train_state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def restore(directory: str, model, optimizer, scheduler, scaler, ema, state: RunState) -> None:
    saved = read_train_state(directory)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    if ema is not None and saved["ema"] is not None:
        ema.load_state_dict(saved["ema"])
    for key, value in saved["run_state"].items():
        setattr(state, key, value)


def format_epoch(metrics: dict, epochs: int) -> str:
    line = (f"[cars_ray] epoch {metrics['epoch']}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
            f"train_top1 {metrics['train_top1']:.3f}  val_loss {metrics['val_loss']:.4f}  "
            f"val_top1 {metrics['val_top1']:.3f}  val_top5 {metrics['val_top5']:.3f}  "
            f"{metrics['images_per_second']:.0f} img/s  {metrics['epoch_seconds']:.1f}s")
    return line + (f"  ({metrics['stop_reason']})" if metrics["stop_reason"] else "")

