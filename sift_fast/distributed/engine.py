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
trainer state (selector, data position, RNG, counters) as ``sift_rankNNNNN.pt`` and, after DeepSpeed's
closing barrier, ``manifest_rankNNNNN.json`` (size and sha256 of every file it wrote); then rank 0 writes
``DIR/latest`` atomically and prunes old tags. Resume takes the newest tag whose manifests verify on every
rank (the ranks agree through an all-gather, so a tag torn or damaged on one rank is skipped on all).
Resume needs the same world size (checked with a clear error).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sift_fast.config import Config
from sift_fast.errors import ConfigError
from sift_fast.faults import fault_point
from sift_fast.io import atomic_torch_save, atomic_write_json, atomic_write_text
from sift_fast.models.hf import MLMEncoder, MLMOutput
from sift_fast.train.checkpoint import CheckpointError, load_checkpoint, safe_load, sha256_file
from sift_fast.train.engine import zero_stage
from sift_fast.train.optim import LrProgress, build_optimizer, build_scheduler, param_groups, scale_step_lr

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
            model_parameters=None if client_opt is not None else param_groups(model, cfg.optim.weight_decay,
                                                                            cfg.optim.lr_batch_scale_params),
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
        scale_step_lr(self.ds.optimizer, self.lr_progress.kept_fraction, self.cfg.optim.lr_batch_scale)
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
    def _owned(self, tag_dir: Path) -> list[Path]:
        """The files of ``tag_dir`` this rank wrote: its trainer state and ZeRO shards (rank 0: also the rest)."""
        own = re.compile(rf"(^sift_rank{self.rank:05d}\.pt$|(^|_)pp_rank_{self.rank}_)")
        anyone = re.compile(r"(^sift_rank\d+\.pt$|(^|_)pp_rank_\d+_|^manifest_rank)")
        return sorted(p for p in tag_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                      and (own.search(p.name) or (self.rank == 0 and not anyone.search(p.name))))

    def _manifest(self, tag_dir: Path) -> Path:
        return tag_dir / f"manifest_rank{self.rank:05d}.json"

    def save_checkpoint(self, directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
        """Collective: DeepSpeed's files, every rank's trainer state and its manifest; then ``DIR/latest``.

        A tag is complete when every rank's manifest (size and sha256 of the files that rank wrote) is there
        and matches; :meth:`load_checkpoint` takes the newest tag complete on all ranks.
        """
        import torch.distributed as dist

        directory = Path(directory)
        tag = f"{_TAG_PREFIX}{step:08d}"
        tag_dir = directory / tag
        self._manifest(tag_dir).unlink(missing_ok=True)  # a tag written again (after a resume) is incomplete first
        atomic_torch_save(state, tag_dir / f"sift_rank{self.rank:05d}.pt")
        fault_point("checkpoint-write")
        dist.barrier()
        self.ds.save_checkpoint(str(directory), tag=tag, save_latest=False)  # ends with a barrier
        fault_point("checkpoint-manifest")
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in self._owned(tag_dir)}
        atomic_write_json(self._manifest(tag_dir), {"tag": tag, "rank": self.rank, "world_size": self.world_size,
                                                    "files": files})
        dist.barrier()
        if self.rank == 0:
            atomic_write_text(directory / "latest", tag)
            tags = sorted(p for p in directory.glob(f"{_TAG_PREFIX}*") if p.is_dir())
            for old in tags[:-keep]:
                if old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return tag_dir

    def _verify_tag(self, tag_dir: Path, latest: str | None) -> str | None:
        """Why this rank's part of ``tag_dir`` is incomplete or corrupt (None when it verifies)."""
        man = self._manifest(tag_dir)
        if not (tag_dir / f"sift_rank{self.rank:05d}.pt").is_file():
            saved = len(list(tag_dir.glob("sift_rank*.pt")))
            return f"no state for rank {self.rank} (written by {saved} ranks)"
        if not man.is_file():  # a checkpoint of an earlier version (no manifests) counts when `latest` names it
            legacy = tag_dir.name == latest and not list(tag_dir.glob("manifest_rank*.json"))
            return None if legacy else f"rank {self.rank}'s manifest is missing (killed while writing?)"
        try:
            files = json.loads(man.read_text())["files"]
            for name, want in files.items():
                p = tag_dir / name
                if not p.is_file():
                    return f"{name} is missing"
                if p.stat().st_size != int(want["size"]):
                    return f"{name} has {p.stat().st_size} bytes, its manifest says {want['size']}"
                if sha256_file(p) != want["sha256"]:
                    return f"{name} does not match its sha256"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{man.name} is unreadable ({type(exc).__name__})"
        return None

    def load_checkpoint(self, directory: Path) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint complete on every rank (agreed with one all-gather per tag tried), after
        DeepSpeed loaded its part; None when there is none. A tag torn on any rank is skipped on all of them."""
        import torch.distributed as dist

        directory = Path(directory)
        tags = sorted((p for p in directory.glob(f"{_TAG_PREFIX}*") if p.is_dir()), reverse=True)
        latest = (directory / "latest").read_text().strip() if (directory / "latest").is_file() else None
        found: list[Any] = [None] * self.world_size
        dist.all_gather_object(found, [t.name for t in tags])
        names = sorted(set.intersection(*(set(f) for f in found)), reverse=True)  # tags every rank sees
        if not names:
            return None
        reasons: dict[str, list] = {}
        chosen = None
        for name in names:
            why: list[Any] = [None] * self.world_size
            dist.all_gather_object(why, self._verify_tag(directory / name, latest))
            if all(w is None for w in why):
                chosen = name
                break
            reasons[name] = why
            if self.rank == 0:
                bad = "; ".join(f"rank {r}: {w}" for r, w in enumerate(why) if w is not None)
                print(f"warning: skipping incomplete or corrupt checkpoint {directory / name} ({bad}); trying the "
                      "previous one", file=sys.stderr, flush=True)
        if chosen is None:
            if all(w is None or "manifest is missing" in w for ws in reasons.values() for w in ws):
                return None  # only tags never finished (killed in the first save): like no checkpoint at all
            if any("no state for rank" in str(w) for ws in reasons.values() for w in ws):
                raise ConfigError(f"checkpoints in {directory} were written by another number of ranks (no state "
                                  f"for some of the {self.world_size}): resume needs the same world size")
            raise CheckpointError(f"no checkpoint in {directory} is complete on all {self.world_size} ranks "
                                  f"({len(names)} tried)")
        mine = directory / chosen / f"sift_rank{self.rank:05d}.pt"
        state = load_checkpoint(mine)
        self.check_resumable(state["engine"])
        guard_deepspeed_loads(self.ds)
        path, _ = self.ds.load_checkpoint(str(directory), tag=chosen, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
        if path is None:
            raise ConfigError(f"DeepSpeed could not load the checkpoint {directory / chosen}")
        return state, directory / chosen

    def any_rank(self, values: list[int]) -> list[int]:
        """The largest of each of ``values`` over the ranks (one tiny all-reduce; the trainer calls it at log
        flushes only)."""
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [int(v) for v in t.tolist()]
