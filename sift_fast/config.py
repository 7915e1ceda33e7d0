"""Typed, validated configuration: one object drives the CLI, the DeepSpeed and the Megatron entry points.

Every field carries its type (``Literal[...]`` for a choice), its default and a one-line meaning
(``opt(default, help)``): ``--help`` and the README table (``scripts/config_reference.py``) are generated
from them. Field names are unique across sections, so every field is a flag: ``keep`` is ``--keep``,
``exit_layer`` is ``--exit-layer``. A config file (yaml or json) may be nested by section
(``{"sift": {"keep": 0.5}}``) or flat (``{"keep": 0.5}``). Renamed fields (:data:`DEPRECATED`) keep
their old names for one release, with a one-line warning.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import typing
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from sift_fast.errors import ConfigError


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value!r}")


def opt(default: Any, help: str) -> Any:
    """A config field: its default and its one-line meaning (shown by ``--help`` and in the README table)."""
    return field(default=default, metadata={"help": help})


def literal_choices(tp: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` type hint (None for any other type)."""
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def _check_choices(obj: Any) -> None:
    """Every ``Literal`` field of a config section holds one of its values."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        choices = literal_choices(hints[f.name])
        if choices is not None:
            _choice(f.name, getattr(obj, f.name), choices)


@dataclass
class ModelConfig:
    arch: Literal["bert", "roberta"] = opt("bert", "encoder family (Hugging Face BERT or RoBERTa)")
    model_class: Literal["mlm", "pretraining"] = opt(
        "mlm", "mlm (BertForMaskedLM) / pretraining (BertForPreTraining; MLM head only)")
    num_layers: int = opt(12, "encoder layers L")
    hidden_size: int = opt(128, "model width H")
    num_heads: int = opt(2, "attention heads")
    intermediate_size: int = opt(512, "feed-forward width")
    dropout: float = opt(0.0, "hidden and attention dropout (the scoring pass always runs without)")
    init_std: float = opt(0.02, "weight init standard deviation")
    init_from: str = opt("", "local Hugging Face masked-LM directory to continue pretraining from; its config.json "
                         "sets the model (and the tokenizer when it has one); empty = random init")

    def __post_init__(self) -> None:
        _check_choices(self)
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            _positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}")


@dataclass
class DataConfig:
    corpus: str = opt("bundled", "training text: bundled / path.txt / path.jsonl / hf:NAME[:CONFIG[:SPLIT]] / "
                      "megatron:PREFIX (.bin/.idx) / a Megatron blend \"W1 PREFIX1 W2 PREFIX2\"")
    vocab: str = opt("train", "train / bundled / path to vocab.txt or tokenizer.json / hub name")
    vocab_size: int = opt(8192, "WordPiece vocabulary size for vocab=train")
    seq_len: int = opt(128, "packed sequence length S, [CLS] and [SEP] included")
    text_key: str = opt("text", "field of a jsonl corpus holding the text")
    valid_fraction: float = opt(0.05, "share of the documents (from the end) held out for validation")
    max_valid_sequences: int = opt(256, "cap on the fixed-masking validation set")
    max_train_tokens: int = opt(0, "cap on the training tokens; 0 = all")
    cache_dir: str = opt("", "tokenizer and corpus cache; empty = $SIFT_CACHE_DIR or ~/.cache/sift_fast")
    mask_prob: float = opt(0.15, "MLM masking rate (80/10/10 mask/random/keep)")
    prefetch: int = opt(-1, "candidate batches built ahead in a background thread; -1 = auto (2 on CUDA, else 0)")

    def __post_init__(self) -> None:
        if self.seq_len < 8:
            raise ConfigError(f"seq_len must be >= 8; got {self.seq_len}")
        _positive("vocab_size", self.vocab_size)
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in (0, 1); got {self.valid_fraction}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1); got {self.mask_prob}")
        _positive("max_valid_sequences", self.max_valid_sequences)
        _positive("max_train_tokens", self.max_train_tokens, allow_zero=True)
        if self.prefetch < -1:
            raise ConfigError(f"prefetch must be -1 (auto), 0 (off) or a queue depth >= 1; got {self.prefetch}")


@dataclass
class SiftConfig:
    selection: Literal["none", "loss", "entropy", "random"] = opt(
        "entropy", "what decides the kept samples: none (baseline) / loss / entropy / random (uniform)")
    keep: float = opt(0.5, "fraction of the candidates backpropagated per step")
    exit_layer: int | Literal["auto"] = opt(1, "scoring exit: 1..L, or auto (re-picked from selection telemetry)")
    candidates: int = opt(32, "candidate sequences scored per step (per rank)")
    score_tokens: int = opt(0, "score at most this many masked positions per sequence; 0 = all")
    selection_warmup_steps: int = opt(0, "steps with a uniform sample (no scoring) before selection starts")
    anneal_until: int = opt(0, "linearly anneal keep to 1.0 by this step; 0 = off")
    anneal_horizon: float = opt(0.0, "linearly anneal keep to 1.0 by this fraction of the run's horizon (the "
                                "progress the LR decay follows, --lr-horizon: steps and/or time budget); 0 = off")
    select_until: float = opt(0.1, "select while this fraction of the run's horizon (the progress the LR decay "
                              "follows, --lr-horizon) is unspent, then plain full-batch steps with no scoring "
                              "pass; 1 = select to the end (the paper's fixed SIFT)")
    interrupt_every: int = opt(0, "every n-th step uses a uniform sample; 0 = off")
    random_pays_scoring: bool = opt(False, "selection random also runs (and ignores) the scoring pass")
    backend: Literal["auto", "triton", "torch"] = opt("auto", "scoring op backend (auto: triton on CUDA)")
    selection_scope: Literal["local", "global"] = opt("local", "data-parallel selection: per rank / across ranks")
    exit_auto_every: int = opt(200, "--exit-layer auto: re-pick the exit layer every N steps")
    exit_auto_overlap: float = opt(0.7, "--exit-layer auto: the shallowest layer whose top-k overlap with full "
                                   "depth stays above this")
    selection_rule: Literal["topk", "sample"] = opt(
        "topk", "topk (keep the highest scores) / sample (importance sampling with unbiased loss reweighting)")
    sample_mix: float = opt(0.1, "selection_rule=sample: uniform share mixed into the score-proportional distribution")
    adaptive_keep: Literal["off", "noise"] = opt(
        "off", "off / noise (keep follows the gradient noise scale; opt-in, see sift_fast/train/noise.py)")
    noise_every: int = opt(4, "adaptive_keep=noise: probe the gradient noise scale every N steps")
    noise_decay: float = opt(0.95, "adaptive_keep=noise: EMA decay of the noise-scale estimates per probe")
    noise_scale: float = opt(2.0, "adaptive_keep=noise: safety factor on the measured noise scale in the keep rule")

    def __post_init__(self) -> None:
        _check_choices(self)
        if not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"keep must be in (0, 1]; got {self.keep}")
        if isinstance(self.exit_layer, str):
            if self.exit_layer.isdigit():
                self.exit_layer = int(self.exit_layer)
            elif self.exit_layer != "auto":
                raise ConfigError(
                    f"exit_layer must be an integer in [1, num_layers] or 'auto'; got {self.exit_layer!r}"
                )
        if isinstance(self.exit_layer, int) and self.exit_layer < 1:
            raise ConfigError(f"exit_layer must be >= 1; got {self.exit_layer}")
        if self.candidates < 1:
            raise ConfigError(f"candidates must be >= 1; got {self.candidates}")
        for name in ("score_tokens", "selection_warmup_steps", "anneal_until", "interrupt_every"):
            _positive(name, getattr(self, name), allow_zero=True)
        if self.anneal_until and self.anneal_until <= self.selection_warmup_steps:
            raise ConfigError(f"anneal_until ({self.anneal_until}) must be after selection_warmup_steps "
                              f"({self.selection_warmup_steps})")
        _positive("exit_auto_every", self.exit_auto_every)
        if not 0.0 < self.exit_auto_overlap <= 1.0:
            raise ConfigError(f"exit_auto_overlap must be in (0, 1]; got {self.exit_auto_overlap}")
        _choice("selection_rule", self.selection_rule, ("topk", "sample"))
        if not 0.0 <= self.sample_mix <= 1.0:
            raise ConfigError(f"sample_mix must be in [0, 1]; got {self.sample_mix}")
        _choice("adaptive_keep", self.adaptive_keep, ("off", "noise"))
        _positive("noise_every", self.noise_every)
        if not 0.0 <= self.noise_decay < 1.0:
            raise ConfigError(f"noise_decay must be in [0, 1); got {self.noise_decay}")
        _positive("noise_scale", self.noise_scale)
        if self.adaptive_keep == "noise" and self.anneal_until:
            raise ConfigError("adaptive_keep and anneal_until are two keep schedules; set one "
                              "(--adaptive-keep off or --anneal-until 0)")
        if not 0.0 <= self.anneal_horizon <= 1.0:
            raise ConfigError(f"anneal_horizon must be a fraction of the run in [0, 1]; got {self.anneal_horizon}")
        if self.anneal_horizon and (self.anneal_until or self.adaptive_keep != "off"):
            raise ConfigError("anneal_horizon is a third keep schedule beside anneal_until / adaptive_keep; set one "
                              "(--anneal-until 0 and --adaptive-keep off, or --anneal-horizon 0)")
        if not 0.0 < self.select_until <= 1.0:
            raise ConfigError(f"select_until must be a fraction of the run in (0, 1] (1 = select to the end); "
                              f"got {self.select_until}")
        if self.adaptive_keep == "noise" and self.selection_rule == "sample":
            raise ConfigError("adaptive_keep=noise needs selection_rule=topk (set --adaptive-keep off to sample)")

    @property
    def adaptive(self) -> bool:
        """Whether keep follows the gradient noise scale."""
        return self.adaptive_keep == "noise"

    @property
    def keep_size(self) -> int:
        """round(keep x candidates), at least 1: the kept count of a selecting step (for every selection)."""
        return max(1, min(self.candidates, round(self.keep * self.candidates)))

    @property
    def backprop_size(self) -> int:
        """Samples backpropagated per step: :attr:`keep_size`; all candidates for 'none'."""
        return self.candidates if self.selection == "none" else self.keep_size

    def require_drop_in(self, where: str) -> None:
        """Refuse, in one line, what a drop-in whose host script owns the loss, backward and horizon cannot
        do: global selection, the reweighted ``sample`` rule, the adaptive keep, the horizon anneal."""
        if self.selection_scope != "local":
            raise ConfigError(f"selection_scope 'global' is not supported by {where} (per-rank selection); use local")
        if self.selection_rule != "topk":
            raise ConfigError(f"selection_rule 'sample' is not supported by {where} (the script's loss takes no "
                              "per-sample weights); use topk")
        if self.adaptive_keep != "off":
            raise ConfigError(f"adaptive_keep is not supported by {where} (the script owns the backward); "
                              "use --adaptive-keep off and a fixed keep")
        if self.anneal_horizon:
            raise ConfigError(f"anneal_horizon is not supported by {where} (the script owns the run's horizon); "
                              "use anneal_until (steps)")


BATCH_SCALE_POWER = {"none": 0.0, "fourth-root": 0.25, "three-eighths": 0.375, "sqrt": 0.5, "linear": 1.0}


def batch_scale_power(rule: str | float) -> float:
    """The power p of ``lr_batch_scale``: a name of :data:`BATCH_SCALE_POWER` or a number in [0, 1]."""
    if isinstance(rule, str) and rule in BATCH_SCALE_POWER:
        return BATCH_SCALE_POWER[rule]
    try:
        p = math.nan if isinstance(rule, bool) else float(rule)
    except (TypeError, ValueError):
        p = math.nan
    if not 0.0 <= p <= 1.0:  # NaN fails too
        raise ConfigError(f"lr_batch_scale must be one of {', '.join(BATCH_SCALE_POWER)} or a power in [0, 1]; "
                          f"got {rule!r}")
    return p


@dataclass
class OptimConfig:
    optimizer: Literal["adamw", "lamb"] = opt("adamw", "adamw / lamb")
    lr: float = opt(1e-3, "peak learning rate")
    weight_decay: float = opt(0.01, "decoupled weight decay, not on biases / LayerNorm")
    beta1: float = opt(0.9, "Adam/LAMB beta1")
    beta2: float = opt(0.98, "Adam/LAMB beta2")
    eps: float = opt(1e-6, "Adam/LAMB epsilon")
    lr_warmup_steps: int = opt(100, "linear LR warmup steps")
    lr_decay: Literal["linear", "cosine", "constant"] = opt("linear", "LR decay after the warmup")
    lr_horizon: Literal["auto", "steps", "budget"] = opt(
        "auto", "what the LR decay spans: auto = whichever of max_steps and the time budget ends the run first; "
        "steps = max_steps only; budget = the time budget only (time_budget_s on --clock)")
    min_lr_ratio: float = opt(0.0, "final LR as a fraction of the peak")
    lr_batch_scale: float | Literal["none", "fourth-root", "three-eighths", "sqrt", "linear"] = opt(
        "sqrt", "scale the LR of a step by (backprop size / candidates)^p: none (p = 0), fourth-root (p = 1/4, "
        "half the square-root rule's cut in log terms), three-eighths (p = 3/8, between the two), sqrt (p = 1/2, "
        "Adam's square-root rule for the smaller batch), linear (p = 1), or the power p itself (a number in "
        "[0, 1], e.g. 0.3125); plain full-batch steps keep the schedule's LR")
    lr_batch_scale_params: Literal["all", "embeddings"] = opt(
        "all", "which parameters lr_batch_scale scales: all, or only the word embeddings (tied to the MLM "
        "decoder: the weights that grew most under full-LR selection), the rest at the schedule's LR")
    grad_clip: float = opt(1.0, "gradient-norm clipping; 0 = off")

    def __post_init__(self) -> None:
        _check_choices(self)
        _positive("lr", self.lr)
        _positive("lr_warmup_steps", self.lr_warmup_steps, allow_zero=True)
        _positive("grad_clip", self.grad_clip, allow_zero=True)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        # one form per power: its name where it has one (0.5 -> sqrt), else a float ("0.3125" from a flag ->
        # 0.3125), so a resume compares powers, not spellings
        power = batch_scale_power(self.lr_batch_scale)
        self.lr_batch_scale = next((n for n, v in BATCH_SCALE_POWER.items() if v == power), power)
        if self.lr_batch_scale_params != "all" and self.lr_batch_scale == "none":
            raise ConfigError(f"lr_batch_scale_params {self.lr_batch_scale_params} does nothing with lr_batch_scale "
                              "none; set --lr-batch-scale sqrt (or fourth-root, three-eighths, linear), or drop "
                              "--lr-batch-scale-params")


@dataclass
class TrainConfig:
    max_steps: int = opt(1000, "optimizer steps (one candidate batch each)")
    time_budget_s: float = opt(0.0, "stop after this much training time on --clock (eval excluded); 0 = off")
    stop_after_s: float = opt(0.0, "pause after this much training time (checkpoint, exit 0) without moving the LR "
                                   "horizon (--time-budget-s); --resume continues; 0 = off (or at/past the budget)")
    eval_every: int = opt(50, "validation every N steps")
    eval_batch_size: int = opt(64, "validation batch size")
    checkpoint_every: int = opt(0, "checkpoint every N steps; 0 = only at the end")
    max_checkpoints: int = opt(2, "newest checkpoints kept on disk")
    log_every: int = opt(10, "console line / metrics flush every N steps")
    seed: int = opt(0, "seeds init, data order, masking and selection")
    out: str = opt("runs/sift", "output directory: metrics.jsonl, summary.json, checkpoints/")
    resume: bool = opt(False, "continue from the newest checkpoint in --out")
    device: str = opt("auto", "auto / cpu / cuda / cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU) / fp32 / bf16")
    targets: tuple[float, ...] = opt((0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.64),
                                     "val MLM accuracy targets for time-to-accuracy (comma-separated)")
    overlap: Literal["auto", "off", "on", "sequential-stale"] = opt(
        "auto", "score step t+1 with step t's weights: auto (on for CUDA) / off / on (side stream) / sequential-stale")
    profile_steps: str = opt("", "A:B brackets steps A..B with cudaProfilerStart/Stop")
    torch_profiler: bool = opt(False, "also write a Chrome trace of the profile window")
    telemetry_every: int = opt(0, "selection telemetry (exit-layer agreement) every N steps; 0 = off")
    nvml_every: int = opt(50, "NVML telemetry record every N steps (CUDA)")
    num_threads: int = opt(0, "torch CPU threads; 0 = torch default")
    clock: Literal["wall", "process"] = opt(
        "wall", "wall / process (CPU time of this process: robust to other load on a shared CPU)")
    nan_policy: Literal["skip", "halt"] = opt(
        "halt", "a non-finite loss or gradient norm: the update is never applied; skip (count, log, go on) / "
        "halt (checkpoint the last good state, exit 3); checked at the log flush")
    max_bad_steps: int = opt(10, "this many consecutive non-finite steps halt even under nan_policy=skip")
    export_hf: str = opt("", "at the end, export the final state as a Hugging Face directory here (save_pretrained "
                         "model, tokenizer, model card; sift-export does it for any checkpoint); empty = off")
    tensorboard: str = opt("", "also write the metrics.jsonl fields as TensorBoard scalars into this directory "
                           "(needs the tensorboard package); empty = off")

    def __post_init__(self) -> None:
        _check_choices(self)
        _positive("max_steps", self.max_steps)
        _positive("eval_every", self.eval_every)
        _positive("eval_batch_size", self.eval_batch_size)
        _positive("log_every", self.log_every)
        _positive("max_checkpoints", self.max_checkpoints)
        _positive("nvml_every", self.nvml_every)
        _positive("max_bad_steps", self.max_bad_steps)
        for name in ("checkpoint_every", "time_budget_s", "stop_after_s", "telemetry_every", "num_threads"):
            _positive(name, getattr(self, name), allow_zero=True)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        self.targets = tuple(sorted(float(t) for t in self.targets))
        if any(not 0.0 < t <= 1.0 for t in self.targets):
            raise ConfigError(f"targets must be accuracies in (0, 1]; got {self.targets}")


# Renamed fields: old name -> (section, new name). The old names work for one release, with a warning.
DEPRECATED: dict[str, tuple[str, str]] = {
    "data": ("data", "corpus"),
    "warmup_steps": ("sift", "selection_warmup_steps"),
    "keep_checkpoints": ("train", "max_checkpoints"),
}


def warn_deprecated(old: str) -> str:
    """Warn (one line) that config field ``old`` is renamed; returns its new name."""
    new = DEPRECATED[old][1]
    warnings.warn(f"config field {old!r} is deprecated; use {new!r} (flag --{new.replace('_', '-')})",
                  FutureWarning, stacklevel=3)
    return new


def _accept_old_names(cls: type) -> type:
    """Let ``cls(old=...)`` and ``obj.old`` keep working for the renamed fields of ``cls``, with a warning."""
    renamed = {old: new for old, (section, new) in DEPRECATED.items() if SECTION_OF.get(cls) == section}
    init = cls.__init__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for old in renamed.keys() & kwargs.keys():
            kwargs[warn_deprecated(old)] = kwargs.pop(old)
        init(self, *args, **kwargs)

    cls.__init__ = functools.wraps(init)(__init__)
    for old, new in renamed.items():

        def get(self: Any, _old: str = old) -> Any:
            return getattr(self, warn_deprecated(_old))

        def put(self: Any, value: Any, _old: str = old) -> None:
            setattr(self, warn_deprecated(_old), value)

        setattr(cls, old, property(get, put, doc=f"deprecated alias of {new}"))
    return cls


SECTIONS = {"model": ModelConfig, "data": DataConfig, "sift": SiftConfig, "optim": OptimConfig, "train": TrainConfig}
SECTION_OF = {cls: name for name, cls in SECTIONS.items()}
for _cls in SECTIONS.values():
    _accept_old_names(_cls)
SELECTIONS = literal_choices(typing.get_type_hints(SiftConfig)["selection"])


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sift: SiftConfig = field(default_factory=SiftConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "proxy-12"

    def __post_init__(self) -> None:
        layers = self.model.num_layers
        if isinstance(self.sift.exit_layer, int) and not 1 <= self.sift.exit_layer <= layers:
            raise ConfigError(f"exit_layer must be in [1, {layers}] (num_layers); got {self.sift.exit_layer}")
        if self.optim.lr_horizon == "budget" and not self.train.time_budget_s:
            raise ConfigError("lr_horizon=budget decays the LR over the time budget; set --time-budget-s "
                              "or use --lr-horizon steps")
        steps, sift = self.train.max_steps, self.sift
        if sift.selection != "none" and sift.selection_warmup_steps >= steps:
            raise ConfigError(f"selection_warmup_steps ({sift.selection_warmup_steps}) >= max_steps ({steps}): the "
                              "run would never select; lower --selection-warmup-steps or raise --max-steps")
        if sift.anneal_until > steps:
            warnings.warn(f"anneal_until ({sift.anneal_until}) is past max_steps ({steps}): keep never reaches 1.0",
                          UserWarning, stacklevel=2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Config:
        """A validated copy with flat field overrides (``keep=0.25``)."""
        return build_config(self.to_dict(), overrides)


PRESETS: dict[str, dict[str, Any]] = {
    # Tests only: 2 layers, width 32, a 512-entry vocab trained on the corpus.
    "micro": dict(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, seq_len=32,
                  vocab="train", vocab_size=512, candidates=8, lr=3e-3, lr_warmup_steps=5,
                  eval_every=10, eval_batch_size=32, max_valid_sequences=32, log_every=5),
    "tiny-cpu": dict(num_layers=4, hidden_size=256, num_heads=4, intermediate_size=1024, seq_len=128,
                     vocab="bundled", candidates=32, lr=1e-3),
    # Like BERT-base, a layer-1 scoring pass is ~8% of a SIFT step; SIFT/baseline step FLOPs ~0.54.
    "proxy-12": dict(num_layers=12, hidden_size=128, num_heads=2, intermediate_size=512, seq_len=128,
                     vocab="train", vocab_size=8192, candidates=32, lr=1e-3),
    # proxy-12 at twice the width (the model-size arm of the long-horizon suite)
    "proxy-12-wide": dict(num_layers=12, hidden_size=256, num_heads=4, intermediate_size=1024, seq_len=128,
                          vocab="train", vocab_size=8192, candidates=32, lr=1e-3),
    "bert-base": dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072, seq_len=128,
                      vocab="bundled", candidates=64, lr=1e-4, dropout=0.1, lr_warmup_steps=1000,
                      max_steps=100000, eval_every=1000),
}


def field_owner() -> dict[str, str]:
    """Map every flat field name (and deprecated old name) to its section; names are unique across sections."""
    owner: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name in owner:
                raise AssertionError(f"field {f.name} appears in {owner[f.name]} and {section}")
            owner[f.name] = section
    for old, (section, new) in DEPRECATED.items():
        if old in owner or owner.get(new) != section:
            raise AssertionError(f"deprecated name {old} clashes or names no field {section}.{new}")
        owner[old] = section
    return owner


def _flatten(raw: dict[str, Any], owner: dict[str, str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and (isinstance(value, dict) or key not in owner):
            if not isinstance(value, dict):
                raise ConfigError(f"config section {key!r} must be a mapping")
            for sub, v in value.items():
                if owner.get(sub) != key:
                    raise ConfigError(f"unknown config key {key}.{sub}")
                flat[warn_deprecated(sub) if sub in DEPRECATED else sub] = v
        elif key == "preset":
            flat["preset"] = value
        elif key in owner:
            flat[warn_deprecated(key) if key in DEPRECATED else key] = value
        else:
            raise ConfigError(f"unknown config key {key!r}")
    return flat


@functools.cache
def _field_types() -> dict[str, Any]:
    return {name: tp for cls in SECTIONS.values() for name, tp in typing.get_type_hints(cls).items()}


def _check_type(key: str, value: Any, tp: Any) -> None:
    """A config value of the wrong type (a string for a number …) is one line naming the key."""
    if tp is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif tp is int:
        ok, want = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    elif tp is float:
        ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
    elif tp is str or literal_choices(tp) is not None:
        ok, want = isinstance(value, (str, os.PathLike)), "a string"
    else:  # int | Literal["auto"], tuple of floats: checked by their sections
        return
    if not ok:
        raise ConfigError(f"config key {key!r} must be {want}; got {value!r}")


def build_config(*layers: dict[str, Any] | None) -> Config:
    """Merge flat or nested mappings, later layers winning; a ``preset`` key selects the base preset."""
    preset, built = build_sections(*layers)
    return Config(**built, preset=preset)


def build_sections(*layers: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """:func:`build_config`'s preset name and validated sections, without the checks across sections
    (the Megatron drop-in checks its exit layer against the model it wraps, not against a preset)."""
    owner = field_owner()
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update(_flatten(layer, owner))
    preset = merged.pop("preset", None) or "proxy-12"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **merged}
    if merged.get("init_from"):  # preset < the directory's model fields < flags (which may not contradict them)
        from sift_fast.models.pretrained import check_init_fields, fields_from_dir

        init = str(merged["init_from"])
        fixed, soft, max_len = fields_from_dir(init)
        for key, value in fixed.items():
            if key in merged and merged[key] != value:
                raise ConfigError(f"--{key.replace('_', '-')} {merged[key]} contradicts --init-from {init} "
                                  f"({key} {value}); drop the flag")
        values = {**PRESETS[preset], **soft, **fixed, **merged}
        check_init_fields(init, soft, max_len, values)
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in values.items():
        _check_type(key, value, _field_types()[key])
        if key == "targets" and value is not None and not isinstance(value, (list, tuple)):
            raise ConfigError(f"targets must be a list of accuracies; got {value!r}")
        sections[owner[key]][key] = tuple(value) if key == "targets" else value
    try:
        built = {name: SECTIONS[name](**kw) for name, kw in sections.items()}
    except TypeError as exc:  # wrong value types reaching a dataclass
        raise ConfigError(f"invalid config: {exc}") from None
    return preset, built


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a yaml or json config file into a mapping (validated later by build_config)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file must end in .yaml, .yml or .json: {p}")
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"cannot parse config file {p}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"cannot parse config file {p}: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data
