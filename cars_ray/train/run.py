"""One object that owns a training run on a worker, as a LightningModule owns its step logic.

:class:`TrainingRun` holds the model and its DDP/compiled wrapper, the optimizer, the schedule (and
whether it steps per batch or per epoch), the AMP scaler, the EMA, the augmentation and the
:class:`RunState`; the per-worker function in ``loop.py`` only feeds it batches and reports.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

from cars_ray.config import Config, TrainConfig
from cars_ray.data.augment import create_train_augment
from cars_ray.models import create_model
from cars_ray.preprocessing import Preprocessing
from cars_ray.train import STOP_EARLY, STOP_NON_FINITE
from cars_ray.train.optim import amp_dtype, autocast, create_optimizer, create_scheduler, set_early_frozen, unwrap

NAN_CHECK_EVERY = 20  # steps between the (all-rank, host-synchronising) checks that the loss is finite
PROGRESS_EVERY = 5  # steps between progress posts (no host synchronisation: image counts only)
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (uint8 images (B, H, W, 3), labels (B,)) on the device


@dataclass
class RunState:
    """What survives a restart besides the weights: progress, early stopping, selection and history."""

    epoch: int = 0
    step: int = 0
    best_monitor: float | None = None  # early stopping's best value of train.early_stop_metric
    bad_epochs: int = 0
    best_select: float | None = None  # the best train.select_metric so far: a new best writes its weights
    resumed_at: list[int] = field(default_factory=list)  # epochs a restart or --resume continued from
    history: list[dict] = field(default_factory=list)

    def finished(self, epochs: int) -> bool:
        """Whether the run has nothing left to train: all ``epochs`` done, or it stopped early."""
        return self.epoch >= epochs or bool(self.history and self.history[-1]["stop_reason"])

    def early_stop(self, metrics: dict, cfg: TrainConfig) -> str:
        """The early-stopping sentence once train.early_stop_metric failed to improve by min_delta for
        ``patience`` epochs in a row, else ""."""
        if cfg.early_stop_patience <= 0:
            return ""
        value = metrics[cfg.early_stop_metric]
        sign = 1.0 if cfg.early_stop_mode == "min" else -1.0
        if self.best_monitor is None or sign * (self.best_monitor - value) > cfg.early_stop_min_delta:
            self.best_monitor, self.bad_epochs = value, 0
            return ""
        self.bad_epochs += 1
        if self.bad_epochs < cfg.early_stop_patience:
            return ""
        return (f"early stopping: {cfg.early_stop_metric} did not improve by {cfg.early_stop_min_delta} "
                f"for {self.bad_epochs} epochs")

    def new_best(self, metrics: dict, cfg: TrainConfig) -> bool:
        """Whether this epoch is the best so far by train.select_metric (its weights are then kept)."""
        value = metrics[cfg.select_metric]
        sign = 1.0 if cfg.select_mode == "max" else -1.0
        if np.isfinite(value) and (self.best_select is None or sign * (value - self.best_select) > 0):
            self.best_select = value
            return True
        return False


class TrainingRun:
    """Model, optimizer, schedule, scaler, EMA and state of one worker's run, with its epoch logic."""

    def __init__(self, cfg: Config, num_classes: int, preprocessing: Preprocessing, device: torch.device,
                 steps_per_epoch: int, world_size: int = 1):
        self.cfg, self.device, self.world_size = cfg, device, world_size
        self.dtype = amp_dtype(cfg.train, device)
        model = create_model(cfg.model, num_classes, pretrained=True)
        self.model = (model.to(memory_format=torch.channels_last) if cfg.train.channels_last else model).to(device)
        self.frozen: bool | None = None
        self.wrapped: torch.nn.Module = self.model
        self.apply_freeze(1)
        self.optimizer = create_optimizer(self.model, cfg.optim, cfg.model.early_stages)
        self.steps_per_epoch = steps_per_epoch
        self.scheduler, self.schedule_unit = create_scheduler(self.optimizer, cfg.optim, cfg.train.epochs, steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.ema = (ModelEmaV3(self.model, decay=cfg.optim.ema_decay, use_warmup=cfg.optim.ema_warmup)
                    if cfg.optim.ema_decay > 0 else None)
        self.state = RunState()
        self.augment = create_train_augment(cfg.data, preprocessing, cfg.train.channels_last).to(device)
        self.eval_view = preprocessing.eval_view(cfg.train.channels_last).to(device)
        self.mixup = (Mixup(mixup_alpha=cfg.optim.mixup, cutmix_alpha=cfg.optim.cutmix, prob=cfg.optim.mixup_prob,
                            label_smoothing=cfg.optim.label_smoothing, num_classes=num_classes)
                      if cfg.optim.mixup > 0 or cfg.optim.cutmix > 0 else None)
        self.criterion = (SoftTargetCrossEntropy() if self.mixup else
                          torch.nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing))

    # ------------------------------------------------------------------ structure

    def apply_freeze(self, epoch: int) -> None:
        """Freeze the early backbone for epochs 1..optim.freeze_early_epochs (all of them when -1).

        Decided from the epoch number alone, so a restart or --resume after that epoch unfreezes.
        """
        limit = self.cfg.optim.freeze_early_epochs
        frozen = limit < 0 or epoch <= limit
        if frozen == self.frozen:
            return
        set_early_frozen(self.model, self.cfg.model.early_stages, frozen)
        self.frozen = frozen
        self.wrapped = self.wrap()  # DDP must see the parameters that are trainable now

    def wrap(self) -> torch.nn.Module:
        """DDP across workers (through Ray Train) and, when asked, torch.compile."""
        model = (ray.train.torch.prepare_model(self.model, move_to_device=False)
                 if self.world_size > 1 else self.model)
        return torch.compile(model) if self.cfg.train.compile else model

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def ema_decay_at(self, step: int) -> float:
        """The EMA decay timm's ModelEmaV3 uses at ``step`` (0 without EMA)."""
        return float(self.ema.get_decay(step)) if self.ema is not None else 0.0

    # ------------------------------------------------------------------ epochs

    def train_epoch(self, batches: Batches, on_progress: Callable[[int], None] | None = None) -> dict:
        """One pass over ``batches``; ``on_progress(images)`` hears of the images done every few steps."""
        cfg, model = self.cfg, self.wrapped
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = torch.zeros((), device=self.device)
        for step_in_epoch, (images, labels) in enumerate(batches, start=1):
            with torch.no_grad():
                images = self.augment(images)
                targets = labels
                if self.mixup is not None:
                    images, targets = self.mixup(images, labels)
            with autocast(self.device, self.dtype):
                logits = model(images)
                loss = self.criterion(logits, targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.optim.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.schedule_unit == "step":
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model, step=self.state.step)
            self.state.step += 1
            loss_sum += loss.detach() * labels.shape[0]
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            if on_progress is not None and step_in_epoch % PROGRESS_EVERY == 0:
                on_progress(PROGRESS_EVERY * labels.shape[0])
            if step_in_epoch % NAN_CHECK_EVERY == 0 and not self.finite_on_all_ranks(loss_sum):
                break  # every rank leaves here together; the epoch's loss then reads non-finite
        totals = all_reduce(torch.stack([loss_sum, correct.float(), seen]))
        count = max(float(totals[2]), 1.0)
        return {"train_loss": float(totals[0]) / count, "train_top1": float(totals[1]) / count,
                "train_images": int(totals[2])}

    def finite_on_all_ranks(self, value: torch.Tensor) -> bool:
        flag = torch.isfinite(value).float().reshape(1)
        if self.world_size > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    @torch.no_grad()
    def validate(self, batches: Batches) -> dict:
        model = self.eval_model
        model.eval()
        sums = torch.zeros(4, device=self.device)  # loss, top1, top5, count
        for images, labels in batches:
            with autocast(self.device, self.dtype):
                logits = model(self.eval_view(images))
            logits = logits.float()
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            sums += torch.stack([
                F.cross_entropy(logits, labels, reduction="sum"),
                (top5[:, 0] == labels).sum().float(),
                (top5 == labels[:, None]).any(1).sum().float(),
                torch.tensor(float(labels.shape[0]), device=self.device),
            ])
        sums = all_reduce(sums)
        count = max(float(sums[3]), 1.0)
        return {"val_loss": float(sums[0]) / count, "val_top1": float(sums[1]) / count,
                "val_top5": float(sums[2]) / count, "val_images": int(sums[3])}

    def end_epoch(self, train_metrics: dict, val_metrics: dict, started: float, train_seconds: float) -> dict:
        """Close an epoch: the epoch-wise schedule, early stopping, best tracking and the metrics row."""
        state = self.state
        if self.schedule_unit == "epoch":
            self.scheduler.step(val_metrics["val_loss"])
        state.epoch += 1
        metrics = {
            "epoch": state.epoch, **train_metrics, **val_metrics,
            "train_seconds": train_seconds, "epoch_seconds": time.perf_counter() - started,
            "images_per_second": train_metrics["train_images"] / max(train_seconds, 1e-9),
            "resumes": len(state.resumed_at), "ema_decay": self.ema_decay_at(state.step),
            "torch_threads": torch.get_num_threads(),  # the images/s above depend on it (train.torch_threads)
            **{f"lr_{group['name'].split('/')[0]}": group["lr"] for group in self.optimizer.param_groups
               if group["name"].endswith("/decay")},
        }
        metrics["stop_reason"], metrics["stop_message"] = self.stop_reason(metrics)
        metrics["new_best"] = state.new_best(metrics, self.cfg.train)
        state.history.append(dict(metrics))
        return metrics

    def stop_reason(self, metrics: dict) -> tuple[str, str]:
        """(reason, sentence): a non-finite loss, early stopping, or ("", "") to go on."""
        if not np.isfinite(metrics["train_loss"]) or not np.isfinite(metrics["val_loss"]):
            return STOP_NON_FINITE, (f"the training loss became {metrics['train_loss']} in epoch {metrics['epoch']}; "
                                     "lower optim.lr or set optim.grad_clip")
        message = self.state.early_stop(metrics, self.cfg.train)
        return (STOP_EARLY, message) if message else ("", "")

    # ------------------------------------------------------------------ state

    def eval_weights(self) -> dict:
        return unwrap(self.eval_model).state_dict()

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "run_state": asdict(self.state),
        }

    def load_state_dict(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None and saved["ema"] is not None:
            self.ema.load_state_dict(saved["ema"])
        self.state = RunState(**saved["run_state"])


def all_reduce(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
    return values
