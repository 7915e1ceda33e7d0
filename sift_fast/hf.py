"""SIFT as a one-line drop-in for ``transformers.Trainer`` (``run_mlm.py``-style scripts).

::

    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments, SiftArguments))
    ...
    trainer = SiftTrainer(model=model, args=training_args, train_dataset=..., data_collator=collator,
                          sift_args=sift_args)          # was: Trainer(...)

The candidate pool is ``per_device_train_batch_size``; each training micro-batch the Trainer prefetches
(``get_batch_samples``) is scored at the early exit (``sift_fast.scoring``, the CLI's scoring pass: no grad,
dropout off, the MLM head on the masked rows only) and replaced by its ``round(keep × pool)`` kept rows, so
``num_items_in_batch`` counts only the kept masked tokens. The training loss is the token sum over the
micro-batch divided by ``num_items_in_batch``: one optimizer step's gradient is that of the mean loss over
every kept token of the accumulation window (across ranks with ``average_tokens_across_devices``).
Evaluation and prediction run the stock Trainer code. Schedule fields (warmup, anneal, interrupt) count
optimizer steps (``state.global_step``). The selector state (RNG, automatic exit layer) is saved in each
checkpoint folder (``sift_state_rankNNNNN.pt``) and restored by ``train(resume_from_checkpoint=...)``.
The SIFT fields appear in the log history under ``sift/``. ``lr_batch_scale`` (default sqrt, as the CLI):
the optimizer step of a window whose plan keeps the fraction f of its candidates runs at LR × f^p (a
step hook on the Trainer's optimizer; the schedule's LR is restored after the update).

Not supported here (one clear error at start-up): ``selection_rule=sample``, ``adaptive_keep``, selection
scope ``global``; the BertForPreTraining next-sentence loss (MLM head only, as in ``sift-pretrain``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch
import transformers
from torch.nn import functional as F

from sift_fast.config import OptimConfig, SiftConfig, batch_scale_power
from sift_fast.data.batch import Batch
from sift_fast.errors import ConfigError
from sift_fast.faults import fault_point
from sift_fast.io import atomic_torch_save
from sift_fast.models.hf import MLMEncoder, adapter_for
from sift_fast.scoring import compute_scores, criterion_for, wants_scores
from sift_fast.selection import Plan, Selector
from sift_fast.telemetry.timer import StepTimer
from sift_fast.train.checkpoint import safe_load
from sift_fast.train.optim import scale_step_lr

logger = logging.getLogger(__name__)
_SIFT_FIELDS = {f.name: f for f in fields(SiftConfig)}
_LR_SCALE = next(f for f in fields(OptimConfig) if f.name == "lr_batch_scale")
STATE_FILE = "sift_state_rank{:05d}.pt"


def _arg(name: str) -> Any:
    """A SiftArguments field with SiftConfig's default and help (one source for both)."""
    f = _SIFT_FIELDS[name]
    return field(default=f.default, metadata={"help": f.metadata["help"]})


@dataclass
class SiftArguments:
    """SIFT flags for ``HfArgumentParser`` (beside ``TrainingArguments``); validated as a ``SiftConfig``."""

    selection: Literal["none", "loss", "entropy", "random"] = _arg("selection")
    keep: float = _arg("keep")
    exit_layer: str = field(default="1", metadata={"help": _SIFT_FIELDS["exit_layer"].metadata["help"]})
    score_tokens: int = _arg("score_tokens")
    selection_warmup_steps: int = _arg("selection_warmup_steps")
    anneal_until: int = _arg("anneal_until")
    select_until: float = _arg("select_until")
    interrupt_every: int = _arg("interrupt_every")
    random_pays_scoring: bool = _arg("random_pays_scoring")
    selection_scope: Literal["local", "global"] = _arg("selection_scope")
    backend: Literal["auto", "triton", "torch"] = _arg("backend")
    exit_auto_every: int = _arg("exit_auto_every")
    exit_auto_overlap: float = _arg("exit_auto_overlap")
    selection_rule: Literal["topk", "sample"] = _arg("selection_rule")  # parsed so that 'sample' is refused
    adaptive_keep: Literal["off", "noise"] = _arg("adaptive_keep")  # in one line, not as an unknown flag
    lr_batch_scale: str = field(  # a name or a power in [0, 1] (HfArgumentParser reads it as text)
        default=_LR_SCALE.default, metadata={"help": _LR_SCALE.metadata["help"] + " (the CLI's --lr-batch-scale)"})

    def __post_init__(self) -> None:
        self.exit_layer = str(self.exit_layer)
        batch_scale_power(self.lr_batch_scale)  # one line for a bad name or power
        # validate at parse time: keep in (0, 1], exit layer form, schedule order, what the drop-in cannot do
        _check_supported(self.sift_config(1))

    def sift_config(self, candidates: int) -> SiftConfig:
        """The validated ``SiftConfig`` for a candidate pool of ``candidates`` sequences."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in _SIFT_FIELDS}
        return SiftConfig(**values, candidates=candidates)


def _check_supported(cfg: SiftConfig) -> None:
    cfg.require_drop_in("SiftTrainer")


def _is_mlm_collator(collator: Any) -> bool:
    return isinstance(collator, transformers.DataCollatorForLanguageModeling) and bool(collator.mlm)


def as_sift_batch(inputs: dict[str, Any]) -> Batch:
    """The host :class:`Batch` of a collator dict (``input_ids``, ``labels`` with -100 off the targets,
    optional ``attention_mask`` / ``token_type_ids``)."""
    ids = inputs["input_ids"].detach().cpu().long()
    labels = inputs["labels"].detach().cpu().long()
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask.detach().cpu().long()
    types = inputs.get("token_type_ids")
    flat = torch.nonzero(labels.reshape(-1) != -100).squeeze(1)
    return Batch(input_ids=ids, attention_mask=mask, labels=labels, sample_ids=torch.arange(ids.shape[0]),
                 masked_index=flat, masked_seq=flat // ids.shape[1],
                 token_type_ids=None if types is None else types.detach().cpu().long())


class _ScoringEngine:
    """What ``sift_fast.scoring.compute_scores`` needs of an engine, over the Trainer's model."""

    def __init__(self, trainer: SiftTrainer) -> None:
        self.trainer = trainer

    @property
    def module(self) -> MLMEncoder:
        return self.trainer.sift_adapter

    @property
    def device(self) -> torch.device:
        return self.trainer.args.device

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.trainer.accelerator.autocast()

    def scoring_context(self, exit_layer: int) -> contextlib.AbstractContextManager:
        """ZeRO-3: gather exactly the exit's parameters, module hooks off (the CLI's DeepSpeed path)."""
        plugin = getattr(self.trainer.accelerator.state, "deepspeed_plugin", None)
        if not self.trainer.is_deepspeed_enabled or plugin is None or plugin.zero_stage < 3:
            return contextlib.nullcontext()
        from sift_fast.distributed.engine import gathered_for_scoring

        return gathered_for_scoring(self.module, exit_layer)


def complete_checkpoints(output_dir: str | Path, process_index: int = 0) -> tuple[list[Path], list[Path]]:
    """``checkpoint-N`` folders of ``output_dir``, newest first: (complete, torn). The Trainer writes a
    checkpoint in place and its ``trainer_state.json`` last, after the SIFT state: a folder without both was
    cut short (killed while saving) and cannot be resumed from."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()]
    found.sort(key=lambda p: int(p.name[11:]), reverse=True)
    ok = [p for p in found if (p / "trainer_state.json").is_file() and (p / STATE_FILE.format(process_index)).is_file()]
    return ok, [p for p in found if p not in ok]


class SiftTrainer(transformers.Trainer):
    """``transformers.Trainer`` that backpropagates the SIFT-selected part of every training micro-batch."""

    loss_is_scaled_for_ga = True  # compute_loss divides by num_items_in_batch (the window's kept tokens)

    def __init__(self, *args: Any, sift_args: SiftArguments | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sift_args = sift_args if sift_args is not None else SiftArguments()
        pool = self.args.per_device_train_batch_size
        self.sift_cfg = self.sift_args.sift_config(pool)
        _check_supported(self.sift_cfg)
        self.sift_adapter = adapter_for(self.accelerator.unwrap_model(self.model))
        depth = self.sift_adapter.num_layers
        if isinstance(self.sift_cfg.exit_layer, int) and self.sift_cfg.exit_layer > depth:
            raise ConfigError(f"--exit_layer {self.sift_cfg.exit_layer} is past the model's {depth} layers: "
                              f"give a layer in [1, {depth}] or auto")
        self._sift_check_data()
        self.sift_selector = Selector(self.sift_cfg, seed=self.args.seed + 1000 * self.args.process_index)
        self.sift_exit_layer = self.sift_cfg.exit_layer if isinstance(self.sift_cfg.exit_layer, int) else 1
        self.sift_auto = None
        if self.sift_cfg.exit_layer == "auto":
            from sift_fast.train.auto_exit import AutoExit

            self.sift_auto = AutoExit(self.sift_cfg.exit_auto_overlap, self.sift_cfg.exit_auto_every)
        self.sift_timer = StepTimer(self.args.device)
        self.sift_engine = _ScoringEngine(self)
        self.sift_totals = {"candidates": 0, "backprop_samples": 0}
        self._sift_window: dict[str, float] = {}
        self._sift_last_log = time.perf_counter()
        self.sift_step_kept_fraction = 1.0  # the coming optimizer step's planned kept fraction (lr_batch_scale)
        self._sift_saved_lr: list[float] | None = None

    # --- lr_batch_scale: the optimizer step of a selection window runs at LR × kept_fraction^p ---------------
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with ``lr_batch_scale`` hooked onto its step. An optimizer that is not a torch
        optimizer (DeepSpeed's own, named in its config: the Trainer holds a placeholder) runs unscaled, with
        one warning."""
        opt = super().create_optimizer(model)
        inner = getattr(opt, "optimizer", opt)  # accelerate / DeepSpeed wrappers keep the torch optimizer here
        if batch_scale_power(self.sift_args.lr_batch_scale) == 0.0 or getattr(inner, "_sift_lr_hooked", False):
            return opt  # hooked once per optimizer, also when trainers share it (optimizers=...)
        if not isinstance(inner, torch.optim.Optimizer):
            logger.warning("lr_batch_scale %s is not applied: the optimizer (%s) is not a torch optimizer (e.g. "
                           "one from the DeepSpeed config); set lr_batch_scale none to silence this",
                           self.sift_args.lr_batch_scale, type(inner).__name__)
            return opt
        inner.register_step_pre_hook(self._sift_scale_lr)
        inner.register_step_post_hook(self._sift_restore_lr)
        inner._sift_lr_hooked = True
        return opt

    def _sift_scale_lr(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        # the schedule's LR is put back after the update (any scheduler, also chained ones)
        self._sift_saved_lr = scale_step_lr(opt, self.sift_step_kept_fraction, self.sift_args.lr_batch_scale)

    def _sift_restore_lr(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        if self._sift_saved_lr is not None:
            for g, lr in zip(opt.param_groups, self._sift_saved_lr, strict=True):
                g["lr"] = lr
            self._sift_saved_lr = None

    # --- start-up checks -------------------------------------------------------------------------
    def _sift_check_data(self) -> None:
        """One line at start-up for a collator or dataset that cannot give scoring its labels."""
        collator = self.data_collator
        if isinstance(collator, transformers.DataCollatorForLanguageModeling) and not collator.mlm:
            raise ConfigError("SiftTrainer needs masked-LM labels: the data collator has mlm=False (causal labels)")
        columns = getattr(self.train_dataset, "column_names", None)
        if columns is None:
            return
        need = ["input_ids"] + ([] if _is_mlm_collator(collator) else ["labels"])
        kept = set(columns)
        if self.args.remove_unused_columns:
            self._set_signature_columns_if_needed()
            kept &= set(self._signature_columns) | set(self.label_names or [])
        for col in need:
            if col not in columns:
                raise ConfigError(f"SiftTrainer needs a '{col}' column in the training dataset (or a "
                                  f"DataCollatorForLanguageModeling to make labels); columns: {', '.join(columns)}")
            if col not in kept:
                raise ConfigError(f"remove_unused_columns drops the '{col}' column SIFT scoring needs (the model's "
                                  "forward does not take it): set --remove_unused_columns False")

    # --- selection where the Trainer forms its micro-batches ----------------------------------------
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device
                          ) -> tuple[list, torch.Tensor | int | None]:
        """The window's candidate micro-batches, each replaced by its kept rows; kept-token count."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if self.sift_auto is not None and batches:
            self._sift_auto_exit(batches[0])
        kept = [self.sift_select(b) for b in batches]
        num_items = super()._get_num_items_in_batch(kept, device)
        if num_items is None and kept:  # the model takes no loss kwargs: count the kept targets here
            num_items = self._sift_count(kept, device)
        return kept, num_items

    def _sift_count(self, batches: list, device: torch.device) -> torch.Tensor:
        n = sum(b["labels"].ne(-100).sum() for b in batches).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            n = self.accelerator.gather(n).sum()
        return n

    def sift_select(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Score one candidate micro-batch at the exit and return its kept rows (same keys)."""
        if "labels" not in inputs or "input_ids" not in inputs:
            raise ConfigError(f"SiftTrainer needs 'input_ids' and 'labels' in each training batch (got: "
                              f"{', '.join(inputs)}): use DataCollatorForLanguageModeling or a labels column")
        cfg, n = self.sift_cfg, int(inputs["input_ids"].shape[0])
        if self.state.max_steps:  # select_until follows the Trainer's horizon, as its LR schedule does
            self.sift_selector.progress = min(1.0, self.state.global_step / self.state.max_steps)
        plan = self.sift_selector.plan(self.state.global_step)
        # lr_batch_scale: the plan's kept fraction, the same on every rank whatever its batch sizes (a rank-local
        # count could give DDP replicas different LRs for a short last batch and let them drift apart)
        self.sift_step_kept_fraction = 1.0 if plan.mode == "all" else plan.keep_count / cfg.candidates
        if n != cfg.candidates:  # a short last batch: the same keep fraction of what it has
            k = max(1, min(n, round(plan.keep_count * n / cfg.candidates)))
            plan = Plan("all", n) if k >= n else Plan(plan.mode, k)
        stats = self._sift_window
        stats["candidates"] = stats.get("candidates", 0) + n
        self.sift_totals["candidates"] += n
        if plan.mode == "all":
            self._sift_kept(n)
            self.sift_last_kept, self.sift_last_scores = torch.arange(n), None
            return inputs
        batch = as_sift_batch(inputs)
        scores = None
        if wants_scores(plan, cfg):
            scores = compute_scores(self.sift_engine, self.sift_selector, cfg, batch, self.sift_exit_layer,
                                    self.sift_timer)
        kept = self.sift_selector.selection(plan, batch, scores).kept
        if scores is not None and plan.mode == "score":
            finite = torch.isfinite(scores)
            ks = scores[kept][torch.isfinite(scores[kept])]
            if finite.any() and ks.numel():
                cand = scores[finite].mean().item()
                if cand:
                    stats["ratio_sum"] = stats.get("ratio_sum", 0.0) + ks.mean().item() / cand
                    stats["ratio_n"] = stats.get("ratio_n", 0) + 1
        self._sift_kept(int(kept.numel()))
        self.sift_last_kept, self.sift_last_scores = kept, scores  # the last selection (tests, debugging)
        return {key: (v.index_select(0, kept.to(v.device)) if torch.is_tensor(v) and v.dim() and v.shape[0] == n
                      else v) for key, v in inputs.items()}

    def _sift_kept(self, k: int) -> None:
        self._sift_window["kept"] = self._sift_window.get("kept", 0) + k
        self.sift_totals["backprop_samples"] += k

    def _sift_auto_exit(self, inputs: dict[str, Any]) -> None:
        """``--exit_layer auto``: every few steps, per-layer agreement on a candidate batch → AutoExit."""
        from sift_fast.train.auto_exit import telemetry_interval
        from sift_fast.train.telemetry_hook import telemetry_record

        step, cfg = self.state.global_step, self.sift_cfg
        if step == 0 or step % telemetry_interval(0, cfg.exit_auto_every) or "labels" not in inputs:
            return
        t0 = time.perf_counter()
        batch = as_sift_batch(inputs).to(self.args.device)
        with self.sift_engine.scoring_context(self.sift_adapter.num_layers):
            rec = telemetry_record(self.sift_adapter, batch, criterion_for(cfg.selection), cfg.keep_size,
                                   self.sift_exit_layer, autocast=self.sift_engine.autocast())
        events: list[dict[str, Any]] = []
        host = SimpleNamespace(step=step, exit_layer=self.sift_exit_layer,
                               metrics=SimpleNamespace(write=events.append),
                               console=SimpleNamespace(log=logger.info))
        self.sift_auto(host, rec)
        self.sift_exit_layer = host.exit_layer
        self._sift_window["score_s"] = self._sift_window.get("score_s", 0.0) + time.perf_counter() - t0

    # --- the training loss: token sum / the window's kept tokens ----------------------------------------
    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        if not model.training:  # evaluation / prediction: the stock Trainer
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        labels = inputs["labels"]
        fwd = {k: v for k, v in inputs.items() if k not in ("labels", "next_sentence_label")}
        outputs = model(**fwd)
        logits = outputs["logits"] if "logits" in outputs else outputs["prediction_logits"]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).to(logits.device),
                             ignore_index=-100, reduction="sum")
        denom = labels.ne(-100).sum() if num_items_in_batch is None else num_items_in_batch
        loss = ce / torch.as_tensor(denom, device=ce.device).clamp_min(1)
        if self.args.average_tokens_across_devices and self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages: the global token mean
        return (loss, outputs) if return_outputs else loss

    # --- logging --------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs get the SIFT fields (``sift/...``) of the steps since the last log."""
        if "loss" in logs and not any(k.startswith(("eval_", "test_")) for k in logs):
            w, now = self._sift_window, time.perf_counter()
            score_s = w.get("score_s", 0.0) + self.sift_timer.results().get("score", 0.0)
            world = max(1, self.args.world_size)
            logs["sift/candidates"] = float(w.get("candidates", 0) * world)
            logs["sift/backprop_samples"] = float(self.sift_totals["backprop_samples"] * world)
            logs["sift/kept_fraction"] = w.get("kept", 0) / max(1, w.get("candidates", 0))
            logs["sift/exit_layer"] = float(self.sift_exit_layer)
            logs["sift/score_share"] = score_s / max(now - self._sift_last_log, 1e-9)
            if w.get("ratio_n"):
                logs["sift/kept_score_ratio"] = w["ratio_sum"] / w["ratio_n"]
            self._sift_window, self._sift_last_log = {}, now
        super().log(logs, start_time)

    # --- checkpoint: the selector's state beside the Trainer's -----------------------------------------
    def sift_state_dict(self) -> dict[str, Any]:
        return {"selector": self.sift_selector.state_dict(), "exit_layer": self.sift_exit_layer,
                "auto": None if self.sift_auto is None else self.sift_auto.state_dict(),
                "totals": dict(self.sift_totals)}

    def sift_load_state_dict(self, state: dict[str, Any]) -> None:
        self.sift_selector.load_state_dict(state["selector"])
        self.sift_exit_layer = int(state["exit_layer"])
        if self.sift_auto is not None and state.get("auto") is not None:
            self.sift_auto.load_state_dict(state["auto"])
        self.sift_totals = dict(state["totals"])

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        fault_point("checkpoint-write")  # model, optimizer and RNG written; SIFT state and trainer_state.json not
        atomic_torch_save(self.sift_state_dict(), Path(output_dir) / STATE_FILE.format(self.args.process_index))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; a resumed run also restores the selector state saved in the checkpoint."""
        ckpt = resume_from_checkpoint
        if isinstance(ckpt, bool) and ckpt:  # the newest complete checkpoint (the stock Trainer takes the newest)
            ok, torn = complete_checkpoints(self.args.output_dir, self.args.process_index)
            for p in torn:
                if not ok or int(p.name[11:]) > int(ok[0].name[11:]):
                    print(f"warning: skipping {p}: cut short while saving (no trainer_state.json or SIFT state); "
                          "resuming from the previous one", file=sys.stderr)
            if not ok:
                raise ConfigError(f"resume_from_checkpoint: no complete checkpoint in {self.args.output_dir}")
            ckpt = resume_from_checkpoint = str(ok[0])
        if isinstance(ckpt, (str, os.PathLike)):
            path = Path(ckpt) / STATE_FILE.format(self.args.process_index)
            if not path.is_file():
                raise ConfigError(f"checkpoint {ckpt} has no SIFT selector state ({path.name}); it was not written "
                                  "by SiftTrainer")
            self.sift_load_state_dict(safe_load(path))
        return super().train(resume_from_checkpoint, *args, **kwargs)
