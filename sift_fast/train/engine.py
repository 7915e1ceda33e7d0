"""The engine interface the loop and the step function drive, and its plain-PyTorch implementation.

A DeepSpeed engine (``sift_fast.distributed.engine``) implements the same interface, so the loop and the
step function are one piece of code for both: every hook they call is declared here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from sift_fast.config import Config
from sift_fast.models.hf import MLMEncoder, MLMOutput
from sift_fast.train.checkpoint import load_newest, save_checkpoint
from sift_fast.train.optim import LrProgress, build_optimizer, build_scheduler, scale_step_lr


class Engine(Protocol):
    module: MLMEncoder  # the unwrapped model (scoring pass, eval)
    device: torch.device
    rank: int
    world_size: int
    zero_stage: int  # DeepSpeed ZeRO stage; 0 for plain PyTorch
    last_grad_norm: Any  # total gradient norm of the last update (before clipping), None when not measured
    lr_progress: LrProgress  # time-budget fraction (lr_horizon=budget) and kept fraction (lr_batch_scale)

    def autocast(self) -> contextlib.AbstractContextManager: ...
    def scoring_context(self, exit_layer: int) -> contextlib.AbstractContextManager:
        """Around the scoring pass (ZeRO-3: gathers exactly the exit's parameters)."""
        ...
    def forward(self, batch, row_weight: torch.Tensor | None = None) -> MLMOutput: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> None: ...
    def lr(self) -> float: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def save_checkpoint(self, directory: Path, step: int, state: dict[str, Any], keep: int) -> Path | None:
        """Write the trainer ``state`` (which holds ``state_dict()``) for ``step``; keep the newest ``keep``."""
        ...
    def load_checkpoint(self, directory: Path) -> tuple[dict[str, Any], Path] | None:
        """The trainer state of the newest checkpoint in ``directory`` and its path; None when there is none."""
        ...


def zero_stage(source: Any) -> int:
    """The ZeRO stage of an engine (its ``zero_stage``; 0 without one) or of a DeepSpeed config mapping."""
    if isinstance(source, Mapping):
        return int((source.get("zero_optimization") or {}).get("stage", 0) or 0)
    stage = getattr(source, "zero_stage", 0)
    return int(stage() if callable(stage) else stage or 0)


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (precision auto/bf16), bf16 on CPU only when asked; fp32 otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class TorchEngine:
    """Single-process training: optimizer, LR schedule, gradient clipping, autocast."""

    rank = 0
    world_size = 1
    zero_stage = 0

    def __init__(self, model: MLMEncoder, cfg: Config, device: torch.device) -> None:
        self.module = model.to(device)
        self.device = device
        self.cfg = cfg
        self.optimizer = build_optimizer(model, cfg.optim, device)
        self.lr_progress = LrProgress()
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.max_steps, self.lr_progress)
        self.last_grad_norm: torch.Tensor | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.device, self.cfg.train.precision)

    def scoring_context(self, exit_layer: int) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def forward(self, batch, row_weight: torch.Tensor | None = None) -> MLMOutput:
        with self.autocast():
            args = (batch.input_ids, batch.model_attention_mask, batch.masked_index, batch.masked_targets)
            return self.module(*args) if row_weight is None else self.module(*args, row_weight=row_weight)

    def grad_sq_norm(self) -> torch.Tensor:
        """Squared norm of the accumulated gradient (device scalar, no sync): the noise-scale probe."""
        from sift_fast.train.noise import grad_sq_norm

        return grad_sq_norm(list(self.module.parameters()))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    guards_updates = True  # a non-finite gradient norm never reaches the weights (see :meth:`step`)

    def step(self) -> None:
        """Clip, then update unless the gradient norm is non-finite (``last_update_ok``), then the LR schedule.

        The guard adds no host sync on CUDA: fused AdamW takes it as ``found_inf`` on the device; on the CPU
        the check is a plain read. (LAMB on CUDA reads it on the host: one sync per step.)
        """
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip if clip > 0 else float("inf"))
        if clip > 0:
            self.last_grad_norm = norm
        ok = torch.isfinite(norm)
        self.last_update_ok = ok
        scale_step_lr(self.optimizer, self.lr_progress.kept_fraction, self.cfg.optim.lr_batch_scale)
        fused = self.device.type == "cuda" and isinstance(self.optimizer, torch.optim.AdamW)
        if fused:
            self.optimizer.found_inf = (~ok).to(torch.float32)
            self.optimizer.step()
            del self.optimizer.found_inf
        elif bool(ok):
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save_checkpoint(self, directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
        return save_checkpoint(Path(directory), step, state, keep)

    def load_checkpoint(self, directory: Path) -> tuple[dict[str, Any], Path] | None:
        return load_newest(Path(directory))
