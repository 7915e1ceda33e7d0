"""SIFT as a one-line drop-in for Megatron-style training scripts.

A Megatron script (``pretrain_bert.py`` shape) has ``forward_step(data_iterator, model)`` that pulls one
micro-batch dict (``text``, ``types``, ``labels``, ``loss_mask``, ``padding_mask``, ...) and returns
``(output_tensor, loss_func)``. Wrap it::

    from sift_fast.megatron import sift_forward_step
    forward_step = sift_forward_step(forward_step, {"keep": 0.5, "exit_layer": 1, "selection": "entropy"})
    pretrain(train_valid_test_datasets_provider, model_provider, ModelType.encoder_or_decoder, forward_step)

and run with ``--micro-batch-size C`` (the candidate pool). Each call pulls the C-sample candidate
batch, scores it with a no-grad forward through the first ``exit_layer`` layers + the MLM head (fused
scorer: the ``[tokens, vocab]`` logits are never built), keeps the top ``keep * C`` samples and hands
your unchanged ``forward_step`` an iterator over that sub-batch. Megatron's sample counters then
count candidate samples; the kept count is ``wrapper.stats["kept"]``.

The default exit adapter reads a ``megatron.core`` ``BertModel`` (embedding, ``encoder.layers``,
``encoder.final_layernorm``, ``lm_head``, ``output_layer``); pass ``adapter=`` for another model:
a callable ``(model, batch, exit_layer, criterion, backend) -> float32 scores [C]``. Supported:
tensor-, pipeline- and context-parallel size 1, learned absolute positions; selection is per
data-parallel rank. In eval mode (Megatron's ``evaluate()``) the wrapper passes every sample through
untouched. Schedule fields (``selection_warmup_steps``, ``anneal_until``, ``interrupt_every``) count wrapper
calls, i.e. micro-batches. Megatron does not save the wrapper's state: store ``wrapper.state_dict()``
with your checkpoint and ``load_state_dict()`` it on resume for the same selection RNG stream.
Not tested: data-parallel runs, ``--overlap-param-gather`` (scoring reads the output weight directly,
before that module's all-gather hook), GPUs. This module imports nothing from Megatron until the
adapter runs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from sift_fast.config import Config, SiftConfig, batch_scale_power, build_sections, load_config_file
from sift_fast.errors import ConfigError
from sift_fast.models.hf import eval_mode
from sift_fast.ops import exit_scores_rows
from sift_fast.scoring import criterion_for, wants_scores
from sift_fast.selection import Selector

Adapter = Callable[[Any, Mapping[str, torch.Tensor], int, str, str], torch.Tensor]
BATCH_KEYS = ("text", "types", "labels", "loss_mask", "padding_mask")


def unwrap(model: Any) -> Any:
    """Strip DDP / Float16Module / list wrappers (``.module`` chains, one-element lists)."""
    if isinstance(model, (list, tuple)):
        if len(model) != 1:
            raise ConfigError("SIFT supports one model chunk (no virtual pipeline parallelism)")
        model = model[0]
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def model_depth(model: Any) -> int | None:
    """Layers of a wrapped ``megatron.core`` model (``encoder.layers``, or ``decoder.layers``); None if unknown."""
    m = unwrap(model)
    for stack in ("encoder", "decoder"):
        layers = getattr(getattr(m, stack, None), "layers", None)
        if layers is not None:
            return len(layers)
    return None


def _check_parallel_sizes() -> None:
    try:
        from megatron.core import parallel_state as ps
    except ImportError:
        return
    if not ps.model_parallel_is_initialized():
        return
    tp, pp = ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
    cp = ps.get_context_parallel_world_size() if hasattr(ps, "get_context_parallel_world_size") else 1
    if tp != 1 or pp != 1 or cp != 1:
        raise ConfigError(f"SIFT scoring supports tensor/pipeline/context parallel size 1; got TP={tp}, PP={pp}, "
                          f"CP={cp}")


@torch.no_grad()
def mcore_bert_exit_scores(
    model: Any, batch: Mapping[str, torch.Tensor], exit_layer: int, criterion: str, backend: str = "auto"
) -> torch.Tensor:
    """Per-sample early-exit score of a ``megatron.core`` BertModel: mean over ``loss_mask`` positions.

    Embedding -> ``encoder.layers[:exit_layer]`` -> ``encoder.final_layernorm`` (when the model has one:
    the head was trained on normalized states) -> ``lm_head`` on the masked rows only -> fused
    loss / entropy against the (shared) output weight. Dropout is off during scoring. The batch may sit
    on another device (Megatron's loader yields host tensors; ``get_batch`` moves them later); positions
    with ``loss_mask`` 0 or a negative label (Megatron's "no label" -1) are not scored.
    """
    m = unwrap(model)
    layers = m.encoder.layers
    if not 1 <= exit_layer <= len(layers):
        raise ConfigError(f"exit layer must be in [1, {len(layers)}]; got {exit_layer}")
    pe = getattr(m, "position_embedding_type", "learned_absolute")
    if pe != "learned_absolute":
        raise ConfigError(f"SIFT scoring supports learned absolute position embeddings; the model uses {pe!r}")
    dev = next(m.parameters()).device
    tokens = batch["text"].to(dev, torch.long, non_blocking=True)
    types = batch.get("types")
    use_types = types is not None and getattr(m.embedding, "tokentype_embeddings", None) is not None
    labels = batch["labels"].to(dev, torch.long, non_blocking=True)
    valid = batch["loss_mask"].to(dev, non_blocking=True).bool() & (labels >= 0)
    with eval_mode([m]):
        ext = m.bert_extended_attention_mask(batch["padding_mask"].to(dev, non_blocking=True))
        h = m.embedding(input_ids=tokens, position_ids=m.bert_position_ids(tokens),
                        tokentype_ids=types.to(dev, torch.long, non_blocking=True) if use_types else None)
        for layer in layers[:exit_layer]:
            out = layer(hidden_states=h, attention_mask=ext)
            h = out[0] if isinstance(out, tuple) else out
        norm = getattr(m.encoder, "final_layernorm", None)
        seq, pos = torch.nonzero(valid, as_tuple=True)  # sample-major: seq non-decreasing
        rows = h[pos, seq]  # h is [s, b, h]
        if norm is not None:
            rows = norm(rows)
        rows = m.lm_head(hidden_states=rows)
        weight = m.shared_embedding_or_output_weight() if m.share_embeddings_and_output_weights else None
        if weight is None:
            weight = m.output_layer.weight
        bias = getattr(m.output_layer, "bias", None)
    return exit_scores_rows(rows, weight, bias, labels[seq, pos], seq, tokens.shape[0], criterion,
                            backend=backend, seq_ids_sorted=True)


def _megatron_owns_the_lr(rule: str | float) -> None:
    if batch_scale_power(rule) != 0.0:
        warnings.warn(f"lr_batch_scale {rule} is not applied by the Megatron drop-in: Megatron owns the optimizer and "
                      "its LR schedule (scale its LR for the selection steps yourself); lr_batch_scale none silences "
                      "this", stacklevel=3)


def _as_sift_config(cfg: Config | SiftConfig | Mapping[str, Any] | str | Path | None) -> tuple[SiftConfig, int]:
    """The SIFT section and seed of ``cfg``. A mapping or file is validated section by section: its exit
    layer is checked against the wrapped model's depth at the first call, not against a preset's."""
    if isinstance(cfg, (str, Path)):
        cfg = load_config_file(cfg)
    if cfg is None or isinstance(cfg, Mapping):
        _, sections = build_sections(dict(cfg or {}))
        _megatron_owns_the_lr(sections["optim"].lr_batch_scale)
        return sections["sift"], sections["train"].seed
    if isinstance(cfg, Config):
        _megatron_owns_the_lr(cfg.optim.lr_batch_scale)
        return cfg.sift, cfg.train.seed
    if isinstance(cfg, SiftConfig):
        return cfg, 0
    raise ConfigError(f"expected a sift_fast Config, SiftConfig or mapping; got {type(cfg).__name__}")


class SiftForwardStep:
    """The wrapped ``forward_step``; ``stats`` holds the last step's selection (for logging)."""

    def __init__(self, forward_step: Callable[..., Any], cfg: SiftConfig, seed: int = 0,
                 adapter: Adapter | None = None, horizon: int | None = None) -> None:
        if cfg.exit_layer == "auto":
            raise ConfigError("exit_layer 'auto' is not supported by the Megatron drop-in; give a layer number")
        if cfg.score_tokens:
            raise ConfigError("score_tokens is not supported by the Megatron drop-in (every masked token is scored)")
        cfg.require_drop_in("the Megatron drop-in")
        self.forward_step, self.cfg = forward_step, cfg
        self.selector = Selector(cfg, seed)
        self.adapter = adapter or mcore_bert_exit_scores
        self.criterion = criterion_for(cfg.selection)
        self.step = 0
        self.stats: dict[str, Any] = {}
        self._checked = False
        if horizon is not None and horizon < 1:
            raise ConfigError(f"horizon must be the run's number of training micro-batches (>= 1); got {horizon}")
        self.horizon = horizon  # training micro-batches of the run (select_until's denominator)

    def _resolve_horizon(self) -> int | None:
        """The run's training micro-batches from Megatron's args (train_iters × micro-batches per iteration)."""
        if self.horizon is None and self.cfg.select_until < 1.0:
            try:
                from megatron.core.num_microbatches_calculator import get_num_microbatches
                from megatron.training import get_args

                self.horizon = int(get_args().train_iters) * int(get_num_microbatches())
            except Exception as e:  # not under Megatron, or its args are not parsed yet
                raise ConfigError(f"select_until {self.cfg.select_until} needs the run's length and Megatron's "
                                  f"args could not give it ({type(e).__name__}): pass horizon=<training "
                                  "micro-batches> to sift_forward_step, or select_until 1") from None
        return self.horizon

    def candidate_scores(self, batch: Mapping[str, torch.Tensor], model: Any) -> torch.Tensor:
        return self.adapter(model, batch, int(self.cfg.exit_layer), self.criterion, self.cfg.backend)

    def __call__(self, data_iterator: Iterator[Mapping[str, Any]] | None, model: Any, *args: Any, **kwargs: Any):
        if not self._checked:
            _check_parallel_sizes()
            depth = model_depth(model)
            if depth is not None and not 1 <= int(self.cfg.exit_layer) <= depth:
                raise ConfigError(f"exit_layer {self.cfg.exit_layer} is outside the wrapped model's {depth} layers: "
                                  f"give a layer in [1, {depth}]")
            self._checked = True
        if not unwrap(model).training:  # Megatron's evaluate(): every sample, no selection, no RNG use
            return self.forward_step(data_iterator, model, *args, **kwargs)
        batch = next(data_iterator)
        missing = [k for k in ("text", "loss_mask", "labels", "padding_mask") if k not in batch]
        if missing:
            raise ConfigError(f"Megatron batch lacks {', '.join(missing)} (keys: {', '.join(batch)})")
        n = batch["text"].shape[0]
        if n != self.cfg.candidates:
            raise ConfigError(f"micro-batch has {n} samples but the SIFT config has candidates={self.cfg.candidates}:"
                              " set --micro-batch-size to the candidate pool")
        horizon = self._resolve_horizon()
        if horizon:  # the same spent fraction Megatron's LR schedule follows (train_iters)
            self.selector.progress = min(1.0, self.step / horizon)
        plan = self.selector.plan(self.step)
        t0 = time.perf_counter()
        scores = None
        if wants_scores(plan, self.cfg):
            scores = self.candidate_scores(batch, model)
        score_s = time.perf_counter() - t0
        kept = self.selector.select(plan, n, scores if plan.mode == "score" else None)
        dev_kept = kept.to(batch["text"].device)
        sub = {k: (v.index_select(0, dev_kept) if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v)
               for k, v in batch.items()}
        self.stats = {"step": self.step, "mode": plan.mode, "candidates": n, "kept": int(kept.numel()),
                      "kept_index": kept, "scores": scores, "score_s": score_s}
        self.step += 1
        return self.forward_step(iter([sub]), model, *args, **kwargs)

    # checkpoint the selection RNG and step alongside Megatron's own state
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "selector": self.selector.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.selector.load_state_dict(state["selector"])


def sift_forward_step(
    forward_step: Callable[..., Any],
    config: Config | SiftConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    adapter: Adapter | None = None,
    seed: int | None = None,
    horizon: int | None = None,
) -> SiftForwardStep:
    """Wrap a Megatron ``forward_step`` so it trains on the SIFT-selected part of each micro-batch.

    ``config``: a sift_fast ``Config`` (the same one the CLI and DeepSpeed entry points use), its
    ``SiftConfig``, a mapping of config fields (``{"keep": 0.5, "candidates": 32, ...}``) or the path
    of a config file (the ``--config`` YAML/JSON of ``sift-pretrain``). ``horizon``: the run's training
    micro-batches, for ``select_until`` (selection stops once that fraction is spent); default: Megatron's
    ``train_iters`` × micro-batches per iteration, read at the first step.
    """
    sift, cfg_seed = _as_sift_config(config)
    return SiftForwardStep(forward_step, sift, cfg_seed if seed is None else seed, adapter, horizon)
