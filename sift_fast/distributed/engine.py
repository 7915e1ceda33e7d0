"""``DeepSpeedEngine``: the :class:`sift_fast.train.engine.Engine` interface over a DeepSpeed engine (ZeRO 0-3).

Loss scaling. Ranks backprop different numbers of masked tokens. The single-process loss is the mean
cross-entropy over all masked tokens of the kept batch, so each rank all-reduces
``[sum of its token losses, correct, its token count n_r]`` and backprops
``mean_r x n_r x W / N`` (N = global token count). DeepSpeed averages gradients over the W ranks,
giving ``sum_r n_r grad(mean_r) / N``: the gradient of the global token mean, equal to a single
process over the union of the kept samples. The returned loss *value* is the global token mean
(identical on every rank); its gradient is the rank's scaled term.

ZeRO-3 scoring. The scoring pass (embeddings, layers[:k], head transform, decoder) runs outside
DeepSpeed's forward: :meth:`scoring_context` all-gathers exactly those parameters that are
partitioned (``GatheredParameters``, read-only) and switches off the ZeRO-3 module hooks of the
modules it runs, so the partial forward never enters the prefetch coordinator's trace: the trace of
the full forward/backward stays complete and valid, and the gathered parameters are released on exit.

Checkpoints. ``save_checkpoint`` is collective: ``engine.save_checkpoint`` (``save_latest=False``)
writes ``DIR/step_XXXXXXXX/`` (model, ZeRO shards, the client LR scheduler); every rank also writes its
trainer state (selector, data position, RNG, counters) as ``sift_rankNNNNN.pt``; after DeepSpeed's
closing barrier rank 0 writes ``DIR/latest`` atomically and prunes old tags. Resume needs the same
world size (checked with a clear error).
"""

from __future__ import annotations

import contextlib
import shutil
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sift_fast.config import Config
from sift_fast.errors import ConfigError
from sift_fast.io import atomic_torch_save, atomic_write_text
from sift_fast.models.hf import MLMEncoder, MLMOutput
from sift_fast.train.checkpoint import load_checkpoint, safe_load
from sift_fast.train.engine import zero_stage
from sift_fast.train.optim import LrProgress, build_optimizer, build_scheduler, param_groups

_TAG_PREFIX = "step_"


def deepspeed_safe_types() -> tuple:
    """The plain DeepSpeed types its checkpoint files pickle (loss scaler, ZeRO stage enum, fragment address)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return (LossScaler, ZeroStageEnum, fragment_address)


def guard_deepspeed_loads(ds: Any) -> None:
    """Make DeepSpeed's own checkpoint reads code-free: its ``TorchCheckpointEngine.load`` (model states, ZeRO
    optimizer shards, via ``SDLoaderFactory`` too) calls ``torch.load(weights_only=False)``; on this engine it
    becomes :func:`safe_load` with the three plain DeepSpeed types its files hold (loss scaler, ZeRO stage
    enum, tensor fragment address). A shard with any other pickled global is refused with one line."""
    extra = deepspeed_safe_types()

    def load(path: str, map_location: Any = None) -> Any:
        return safe_load(Path(path), map_location=map_location, extra=extra)

    ds.checkpoint_engine.load = load


class LossOutputs(nn.Module):
    """What DeepSpeed wraps: the encoder, returning ``(loss, num_correct)``.

    A tuple, so that DeepSpeed's output hooks (the backward prologue of the ZeRO optimizers) attach
    to the loss.
    """

    def __init__(self, encoder: MLMEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, masked_index, masked_targets):
        out = self.encoder(input_ids, attention_mask, masked_index, masked_targets)
        return out.loss, out.num_correct


def scoring_modules(model: MLMEncoder, exit_layer: int) -> list[nn.Module]:
    """The modules the scoring pass runs (their parameters include the tied decoder weight)."""
    return [model.embeddings, *model.layers[:exit_layer], model.head_transform, model.decoder]


@contextlib.contextmanager
def hooks_off(modules: list[nn.Module]) -> Iterator[None]:
    """Run ``modules`` (and their children) without forward hooks: ZeRO-3's fetch/release/trace hooks stay out."""
    saved = []
    seen: set[int] = set()
    for root in modules:
        for m in root.modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            saved.append((m, m._forward_pre_hooks, m._forward_hooks))
            m._forward_pre_hooks, m._forward_hooks = OrderedDict(), OrderedDict()
    try:
        yield
    finally:
        for m, pre, post in saved:
            m._forward_pre_hooks, m._forward_hooks = pre, post


@contextlib.contextmanager
def gathered_for_scoring(model: MLMEncoder, exit_layer: int) -> Iterator[None]:
    """Make the scoring pass's partitioned (ZeRO-3) parameters whole, hooks off; release them on exit."""
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    modules = scoring_modules(model, exit_layer)
    params = {id(p): p for m in modules for p in m.parameters()}
    params.update({id(p): p for p in model.decoder_params() if p is not None})
    inflight = [p for p in params.values() if getattr(p, "ds_status", None) == ZeroParamStatus.INFLIGHT]
    if inflight:
        raise RuntimeError(f"ZeRO-3 scoring pass: {len(inflight)} parameters are still being prefetched")
    # only what is partitioned now: persistent (small) parameters and ones held by a module stay as they are
    todo = [p for p in params.values() if getattr(p, "ds_status", None) == ZeroParamStatus.NOT_AVAILABLE]
    with deepspeed.zero.GatheredParameters(todo, modifier_rank=None, enabled=bool(todo)), hooks_off(modules):
        yield


class DeepSpeedEngine:
    """A DeepSpeed engine behind the Engine interface; ``module`` is the unwrapped :class:`MLMEncoder`."""

    def __init__(self, model: MLMEncoder, cfg: Config, device: torch.device, *, ds_config: dict[str, Any]) -> None:
        if cfg.sift.selection_rule != "topk":
            raise ConfigError("selection_rule 'sample' is not supported under DeepSpeed yet (its loss needs "
                              "per-sample weights); use --selection-rule topk")
        import deepspeed
        import torch.distributed as dist

        self.cfg, self.device, self.ds_config = cfg, device, ds_config
        self.zero_stage = zero_stage(ds_config)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        client_opt = build_optimizer(model, cfg.optim, device) if cfg.optim.optimizer == "lamb" else None
        self.lr_progress = LrProgress()
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=LossOutputs(model),
            optimizer=client_opt,
            model_parameters=None if client_opt is not None else param_groups(model, cfg.optim.weight_decay),
            lr_scheduler=lambda opt: build_scheduler(opt, cfg.optim, cfg.train.max_steps, self.lr_progress),
            config=ds_config,
        )
        self.module: MLMEncoder = self.ds.module.encoder
        self.backprop_samples = 0  # global samples backpropagated (DeepSpeed's global_samples follows it)
        self._last_rows = 0

    # --- Engine interface -------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # bf16 is DeepSpeed's (bf16 weights, fp32 master copy)

    def scoring_context(self, exit_layer: int) -> contextlib.AbstractContextManager:
        """Around the scoring pass: ZeRO-3 gathers exactly the exit's parameters; a no-op below stage 3."""
        if self.zero_stage < 3:
            return contextlib.nullcontext()
        return gathered_for_scoring(self.module, exit_layer)

    def forward(self, batch) -> MLMOutput:
        import torch.distributed as dist

        # model_attention_mask: None for an unpadded batch, as the TorchEngine passes (no HF mask.all() sync)
        loss, correct = self.ds(batch.input_ids, batch.model_attention_mask, batch.masked_index,
                                batch.masked_targets)
        n = int(batch.masked_index.numel())
        stats = torch.stack([loss.detach().double() * n, correct.double(),
                             torch.tensor(float(n), dtype=torch.float64, device=loss.device)])
        dist.all_reduce(stats)
        total = stats[2].clamp_min(1.0)
        local = loss * (n * self.world_size / total).to(loss.dtype)
        value = (stats[0] / total).to(loss.dtype)
        self._last_rows = batch.size
        return MLMOutput(loss=local + (value - local).detach(), num_correct=stats[1].round().long(), num_rows=n)

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)

    def step(self) -> None:
        self.ds.step()
        self.backprop_samples += self._last_rows * self.world_size  # every rank backprops the same count
        self.ds.global_samples = self.backprop_samples

    def lr(self) -> float:
        return float(self.ds.get_lr()[0])

    @property
    def last_grad_norm(self) -> float | None:
        return self.ds.get_global_grad_norm()

    def state_dict(self) -> dict[str, Any]:
        """Metadata only: weights, optimizer and scheduler live in DeepSpeed's checkpoint files."""
        return {"deepspeed": True, "zero_stage": self.zero_stage, "world_size": self.world_size,
                "backprop_samples": self.backprop_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_resumable(state)
        self.backprop_samples = int(state.get("backprop_samples", 0))
        self.ds.global_samples = self.backprop_samples

    def check_resumable(self, state: dict[str, Any]) -> None:
        if not state.get("deepspeed"):
            raise ConfigError("this checkpoint was written without DeepSpeed; resume it without --deepspeed")
        if state["world_size"] != self.world_size:
            raise ConfigError(
                f"checkpoint written by {state['world_size']} ranks cannot resume on {self.world_size}: "
                "resume needs the same world size (see docs/distributed.md)"
            )
        if state["zero_stage"] != self.zero_stage:
            raise ConfigError(f"checkpoint written with ZeRO stage {state['zero_stage']}, this run uses "
                              f"stage {self.zero_stage}: resume with the same stage")

    # --- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
        """Collective: DeepSpeed's files plus every rank's trainer state; ``DIR/latest`` names the tag."""
        import torch.distributed as dist

        directory = Path(directory)
        tag = f"{_TAG_PREFIX}{step:08d}"
        atomic_torch_save(state, directory / tag / f"sift_rank{self.rank:05d}.pt")
        dist.barrier()
        self.ds.save_checkpoint(str(directory), tag=tag, save_latest=False)  # ends with a barrier
        if self.rank == 0:
            atomic_write_text(directory / "latest", tag)
            tags = sorted(p for p in directory.glob(f"{_TAG_PREFIX}*") if p.is_dir())
            for old in tags[:-keep]:
                if old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return directory / tag

    def load_checkpoint(self, directory: Path) -> tuple[dict[str, Any], Path] | None:
        """The trainer state of the latest checkpoint, after DeepSpeed loaded its part; None when there is none."""
        directory = Path(directory)
        latest = directory / "latest"
        if not latest.is_file():
            return None
        tag = latest.read_text().strip()
        mine = directory / tag / f"sift_rank{self.rank:05d}.pt"
        if not mine.is_file():
            saved = len(list((directory / tag).glob("sift_rank*.pt")))
            raise ConfigError(f"checkpoint {directory / tag} was written by {saved} ranks and has no state for rank "
                              f"{self.rank} of {self.world_size}: resume needs the same world size")
        state = load_checkpoint(mine)
        self.check_resumable(state["engine"])
        guard_deepspeed_loads(self.ds)
        path, _ = self.ds.load_checkpoint(str(directory), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
        if path is None:
            raise ConfigError(f"DeepSpeed could not load the checkpoint {directory / tag}")
        return state, directory / tag
