"""The DeepSpeed JSON, derived from our config: one source for batch sizes, precision, clipping, optimizer, schedule.

A user JSON (``--deepspeed_config ds.json``) supplies what only DeepSpeed knows (ZeRO stage and its
knobs, communication settings, offload). Every key that our config also determines must agree with
it, or be absent or ``"auto"``; a contradiction is a :class:`ConfigError` naming both values.

Derived keys:

* ``train_micro_batch_size_per_gpu`` = backprop samples per rank = ``round(keep x candidates)``
  (``candidates`` for selection ``none``); the candidate batch per rank is ``micro / keep``.
* ``gradient_accumulation_steps`` = 1 (one SIFT step is one optimizer step);
  ``train_batch_size`` = micro x 1 x world size.
* ``bf16.enabled`` from ``--precision`` (``auto`` = bf16 on CUDA, fp32 on CPU); fp16 is refused.
* ``gradient_clipping`` = ``--grad-clip``.
* ``optimizer``: AdamW (DeepSpeed's FusedAdam on GPU, ``torch.optim.AdamW`` on CPU) from
  ``--lr/--beta1/--beta2/--eps/--weight-decay``. LAMB is built by sift_fast (identical to the
  single-process run) and allowed only at ZeRO stage 0: LAMB's per-tensor trust ratio needs whole
  tensors, which ZeRO's flat partitions do not provide.
* the LR schedule is sift_fast's (``--lr-warmup-steps/--lr-decay/--min-lr-ratio``), handed to
  DeepSpeed as a client scheduler; a ``scheduler`` section in the JSON is refused.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from sift_fast.config import Config
from sift_fast.errors import ConfigError
from sift_fast.train.engine import zero_stage

ZERO_STAGES = (0, 1, 2, 3)
_ADAM_TYPES = {"adam": "adamw", "adamw": "adamw", "lamb": "lamb"}
_UNSET = object()


def load_ds_json(path: str | Path) -> dict[str, Any]:
    """Read a DeepSpeed JSON file into a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"DeepSpeed config not found: {p}")
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ConfigError(f"cannot parse DeepSpeed config {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"DeepSpeed config {p} must hold a JSON object")
    return data


def resolve_precision(precision: str, device_type: str) -> str:
    """fp32 or bf16, as the single-process engine resolves ``--precision``."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


def _given(section: dict[str, Any], key: str) -> Any:
    value = section.get(key, _UNSET)
    return _UNSET if value == "auto" else value


def _agree(name: str, given: Any, derived: Any, fix: str) -> None:
    if given is _UNSET:
        return
    same = (math.isclose(float(given), float(derived), rel_tol=1e-9, abs_tol=0.0)
            if isinstance(derived, float) else given == derived)
    if not same:
        raise ConfigError(f"DeepSpeed config {name} = {given!r} contradicts sift_fast's {derived!r} ({fix})")


def _check_batch(ds: dict[str, Any], cfg: Config, world_size: int) -> int:
    micro = cfg.sift.backprop_size
    keep_note = "all candidates (selection none)" if cfg.sift.selection == "none" else \
        f"round(keep x candidates) = round({cfg.sift.keep} x {cfg.sift.candidates})"
    given = _given(ds, "train_micro_batch_size_per_gpu")
    if given is not _UNSET and given != micro:
        hint = "" if cfg.sift.selection == "none" else \
            f"; for {given} per rank set --candidates {math.ceil(given / cfg.sift.keep)} (= micro / keep)"
        raise ConfigError(
            f"DeepSpeed config train_micro_batch_size_per_gpu = {given} but each rank backpropagates "
            f"{keep_note} = {micro} samples per step{hint}, or drop the key from the JSON"
        )
    _agree("gradient_accumulation_steps", _given(ds, "gradient_accumulation_steps"), 1,
           "one SIFT step is one optimizer step; grow --candidates instead of accumulating")
    _agree("train_batch_size", _given(ds, "train_batch_size"), micro * world_size,
           f"= {micro} backprop samples per rank x {world_size} ranks")
    return micro


def _check_precision(ds: dict[str, Any], cfg: Config, device_type: str) -> bool:
    bf16 = resolve_precision(cfg.train.precision, device_type) == "bf16"
    for key in ("fp16", "torch_autocast"):
        if (ds.get(key) or {}).get("enabled", False) not in (False, "auto"):
            raise ConfigError(f"DeepSpeed config {key}.enabled is not supported: use --precision bf16 or fp32")
    section = ds.get("bf16") or ds.get("bfloat16") or {}
    _agree("bf16.enabled", _given(section, "enabled"), bf16,
           f"--precision {cfg.train.precision} on {device_type} is {'bf16' if bf16 else 'fp32'}")
    return bf16


def _optimizer_section(ds: dict[str, Any], cfg: Config, stage: int, device_type: str) -> dict[str, Any] | None:
    """The JSON optimizer section for AdamW; None when sift_fast builds the optimizer itself (LAMB)."""
    oc = cfg.optim
    given = ds.get("optimizer")
    if oc.optimizer == "lamb" and stage > 0:
        raise ConfigError(
            f"LAMB with ZeRO stage {stage} is not supported: ZeRO partitions flattened parameters across ranks, "
            "so LAMB's per-tensor trust ratio would be computed on fragments (DeepSpeed's maintainers advise "
            "against combining them). Use --optimizer adamw, or ZeRO stage 0"
        )
    derived_params = {"lr": oc.lr, "betas": [oc.beta1, oc.beta2], "eps": oc.eps, "weight_decay": oc.weight_decay}
    if given is not None:
        kind = str(given.get("type", "")).lower()
        if kind not in _ADAM_TYPES:
            raise ConfigError(f"DeepSpeed config optimizer.type {given.get('type')!r} is not supported; "
                              "sift_fast supports AdamW (default) and Lamb (ZeRO stage 0)")
        _agree("optimizer.type", _ADAM_TYPES[kind], oc.optimizer, f"--optimizer {oc.optimizer}")
        params = given.get("params") or {}
        if kind == "adam" and params.get("adam_w_mode") is False:
            raise ConfigError("DeepSpeed config optimizer Adam with adam_w_mode false (L2 Adam) is not supported; "
                              "sift_fast uses decoupled weight decay (AdamW)")
        for key, flag in (("lr", "--lr"), ("eps", "--eps"), ("weight_decay", "--weight-decay")):
            _agree(f"optimizer.params.{key}", _given(params, key), float(derived_params[key]), flag)
        betas = _given(params, "betas")
        if betas is not _UNSET and [float(b) for b in betas] != derived_params["betas"]:
            raise ConfigError(f"DeepSpeed config optimizer.params.betas = {betas} contradicts sift_fast's "
                              f"{derived_params['betas']} (--beta1/--beta2)")
    if oc.optimizer == "lamb":
        return None  # built by sift_fast.train.optim (identical to the single-process run)
    params = {**((given or {}).get("params") or {}), **derived_params}
    params.pop("adam_w_mode", None)
    if device_type != "cuda":
        params.setdefault("torch_adam", True)  # torch.optim.AdamW on CPU: no JIT-built op
        params.setdefault("foreach", True)  # the single-process engine's CPU implementation
    return {"type": "AdamW", "params": params}


def derive_ds_config(cfg: Config, world_size: int, user: dict[str, Any] | None = None,
                     device_type: str = "cpu") -> dict[str, Any]:
    """The DeepSpeed config dict for ``cfg`` on ``world_size`` ranks, merged with (and checked against) ``user``."""
    ds = copy.deepcopy(user or {})
    stage = zero_stage(ds)
    if stage not in ZERO_STAGES:
        raise ConfigError(f"DeepSpeed config zero_optimization.stage must be one of 0, 1, 2, 3; got {stage}")
    micro = _check_batch(ds, cfg, world_size)
    bf16 = _check_precision(ds, cfg, device_type)
    _agree("gradient_clipping", _given(ds, "gradient_clipping"), float(cfg.optim.grad_clip), "--grad-clip")
    if "scheduler" in ds:
        raise ConfigError(
            "DeepSpeed config has a 'scheduler' section: the LR schedule comes from --lr-warmup-steps, --lr-decay "
            "and --min-lr-ratio (run inside DeepSpeed as a client scheduler); remove 'scheduler' from the JSON"
        )
    optimizer = _optimizer_section(ds, cfg, stage, device_type)
    ds.pop("optimizer", None)
    if optimizer is not None:
        ds["optimizer"] = optimizer
    ds.pop("bfloat16", None)
    ds.update(
        train_micro_batch_size_per_gpu=micro,
        gradient_accumulation_steps=1,
        train_batch_size=micro * world_size,
        gradient_clipping=float(cfg.optim.grad_clip),
    )
    ds["bf16"] = {**(ds.get("bf16") or {}), "enabled": bf16}
    ds["fp16"] = {"enabled": False}
    ds["zero_optimization"] = {**(ds.get("zero_optimization") or {}), "stage": stage}
    ds.setdefault("steps_per_print", 2**31 - 1)  # sift_fast's console reports progress (rank 0)
    return ds
