"""Typed, validated configuration: one object drives the CLI, the DeepSpeed and the Megatron entry points.

Field names are unique across sections, so every field is a flag: ``keep`` is ``--keep``,
``exit_layer`` is ``--exit-layer``. A config file (yaml or json) may be nested by section
(``{"sift": {"keep": 0.5}}``) or flat (``{"keep": 0.5}``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sift_fast.errors import ConfigError

SELECTIONS = ("none", "loss", "entropy", "random")


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value!r}")


@dataclass
class ModelConfig:
    arch: str = "bert"  # bert | roberta
    model_class: str = "mlm"  # mlm (BertForMaskedLM) | pretraining (BertForPreTraining; MLM head only)
    num_layers: int = 12  # encoder layers L
    hidden_size: int = 128  # model width H
    num_heads: int = 2  # attention heads
    intermediate_size: int = 512  # feed-forward width
    dropout: float = 0.0  # hidden and attention dropout (the scoring pass always runs without)
    init_std: float = 0.02  # weight init standard deviation

    def __post_init__(self) -> None:
        _choice("arch", self.arch, ("bert", "roberta"))
        _choice("model_class", self.model_class, ("mlm", "pretraining"))
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            _positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}")


@dataclass
class DataConfig:
    data: str = "bundled"  # bundled | path.txt | path.jsonl | hf:NAME[:CONFIG[:SPLIT]] | PREFIX | "W1 P1 W2 P2" blend
    vocab: str = "train"  # train | bundled | path to vocab.txt / tokenizer.json | hub name
    vocab_size: int = 8192  # for vocab=train
    seq_len: int = 128  # packed sequence length S, [CLS] and [SEP] included
    text_key: str = "text"  # field of a jsonl corpus holding the text
    valid_fraction: float = 0.05  # share of the documents (from the end) held out for validation
    max_valid_sequences: int = 256  # cap on the fixed-masking validation set
    max_train_tokens: int = 0  # 0 = all
    cache_dir: str = ""  # default: ~/.cache/sift_fast
    mask_prob: float = 0.15  # MLM masking rate (80/10/10 mask/random/keep)
    prefetch: int = -1  # candidate batches built ahead in a background thread; -1 = auto (2 on CUDA, else 0)

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
    selection: str = "entropy"  # none | loss | entropy | random
    keep: float = 0.5
    exit_layer: int | str = 1  # 1..L, or "auto"
    candidates: int = 32
    score_tokens: int = 0  # score at most this many masked positions per sequence; 0 = all
    warmup_steps: int = 0  # steps with a uniform sample (no scoring) before selection starts
    anneal_until: int = 0  # linearly anneal keep to 1.0 by this step; 0 = off
    interrupt_every: int = 0  # every n-th step uses a uniform sample; 0 = off
    random_pays_scoring: bool = False  # random selection also runs (and ignores) the scoring pass
    backend: str = "auto"  # scoring op backend: auto | triton | torch
    selection_scope: str = "local"  # data-parallel selection: local | global
    exit_auto_every: int = 200  # --exit-layer auto: re-pick the exit layer every N steps
    exit_auto_overlap: float = 0.7  # ... the shallowest layer whose top-k overlap with full depth stays above this
    selection_rule: str = "topk"  # topk (keep the highest scores) | sample (importance sampling, unbiased reweighting)
    sample_mix: float = 0.1  # selection_rule=sample: uniform share mixed into the score-proportional distribution
    adaptive_keep: str = "off"  # off | noise (keep follows the gradient noise scale; opt-in, see train/noise.py)
    noise_every: int = 4  # adaptive_keep=noise: probe the gradient noise scale every N steps
    noise_decay: float = 0.95  # ... EMA decay of the noise-scale estimates per probe
    noise_scale: float = 2.0  # ... safety factor on the measured noise scale in the keep rule (see train/noise.py)

    def __post_init__(self) -> None:
        _choice("selection", self.selection, SELECTIONS)
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
        for name in ("score_tokens", "warmup_steps", "anneal_until", "interrupt_every"):
            _positive(name, getattr(self, name), allow_zero=True)
        if self.anneal_until and self.anneal_until <= self.warmup_steps:
            raise ConfigError(f"anneal_until ({self.anneal_until}) must be after warmup_steps ({self.warmup_steps})")
        _choice("backend", self.backend, ("auto", "triton", "torch"))
        _choice("selection_scope", self.selection_scope, ("local", "global"))
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
        if self.adaptive_keep == "noise" and self.selection_rule == "sample":
            raise ConfigError("adaptive_keep=noise needs selection_rule=topk (set --adaptive-keep off to sample)")

    @property
    def adaptive(self) -> bool:
        """Whether keep follows the gradient noise scale."""
        return self.adaptive_keep == "noise"

    @property
    def backprop_size(self) -> int:
        """Samples backpropagated per step: round(keep x candidates), at least 1; all for 'none'."""
        if self.selection == "none":
            return self.candidates
        return max(1, min(self.candidates, round(self.keep * self.candidates)))


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | lamb
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.01  # decoupled, not on biases / LayerNorm
    beta1: float = 0.9  # Adam/LAMB beta1
    beta2: float = 0.98  # Adam/LAMB beta2
    eps: float = 1e-6  # Adam/LAMB epsilon
    lr_warmup_steps: int = 100  # linear LR warmup steps
    lr_decay: str = "linear"  # linear | cosine | constant
    min_lr_ratio: float = 0.0  # final LR as a fraction of the peak
    grad_clip: float = 1.0  # 0 = off

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, ("adamw", "lamb"))
        _choice("lr_decay", self.lr_decay, ("linear", "cosine", "constant"))
        _positive("lr", self.lr)
        _positive("lr_warmup_steps", self.lr_warmup_steps, allow_zero=True)
        _positive("grad_clip", self.grad_clip, allow_zero=True)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps (one candidate batch each)
    time_budget_s: float = 0.0  # stop after this much training wall-clock (eval excluded); 0 = off
    eval_every: int = 50  # validation every N steps
    eval_batch_size: int = 64  # validation batch size
    checkpoint_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    log_every: int = 10  # console line / metrics flush every N steps
    seed: int = 0  # seeds init, data order, masking and selection
    out: str = "runs/sift"  # output directory: metrics.jsonl, summary.json, checkpoints/
    resume: bool = False  # continue from the newest checkpoint in --out
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    targets: tuple[float, ...] = (  # val MLM accuracy targets for time-to-accuracy
        0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.64)
    overlap: str = "auto"  # auto | off | on | sequential-stale
    profile_steps: str = ""  # A:B brackets steps A..B with cudaProfilerStart/Stop
    torch_profiler: bool = False  # also write a Chrome trace of the profile window
    telemetry_every: int = 0  # selection telemetry (exit-layer agreement) every N steps; 0 = off
    nvml_every: int = 50  # NVML telemetry record every N steps (CUDA)
    num_threads: int = 0  # torch CPU threads; 0 = torch default
    clock: str = "wall"  # wall | process (CPU time of this process: robust to other load on a shared CPU)

    def __post_init__(self) -> None:
        _positive("max_steps", self.max_steps)
        _positive("eval_every", self.eval_every)
        _positive("eval_batch_size", self.eval_batch_size)
        _positive("log_every", self.log_every)
        _positive("keep_checkpoints", self.keep_checkpoints)
        _positive("nvml_every", self.nvml_every)
        for name in ("checkpoint_every", "time_budget_s", "telemetry_every", "num_threads"):
            _positive(name, getattr(self, name), allow_zero=True)
        _choice("precision", self.precision, ("auto", "fp32", "bf16"))
        _choice("overlap", self.overlap, ("auto", "off", "on", "sequential-stale"))
        _choice("clock", self.clock, ("wall", "process"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        self.targets = tuple(sorted(float(t) for t in self.targets))
        if any(not 0.0 < t <= 1.0 for t in self.targets):
            raise ConfigError(f"targets must be accuracies in (0, 1]; got {self.targets}")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "sift": SiftConfig, "optim": OptimConfig, "train": TrainConfig}


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
    """Map every flat field name to its section; names are unique across sections."""
    owner: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name in owner:
                raise AssertionError(f"field {f.name} appears in {owner[f.name]} and {section}")
            owner[f.name] = section
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
                flat[sub] = v
        elif key == "preset":
            flat["preset"] = value
        elif key in owner:
            flat[key] = value
        else:
            raise ConfigError(f"unknown config key {key!r}")
    return flat


def build_config(*layers: dict[str, Any] | None) -> Config:
    """Merge flat or nested mappings, later layers winning; a ``preset`` key selects the base preset."""
    owner = field_owner()
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update(_flatten(layer, owner))
    preset = merged.pop("preset", None) or "proxy-12"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **merged}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in values.items():
        if key == "targets" and value is not None and not isinstance(value, (list, tuple)):
            raise ConfigError(f"targets must be a list of accuracies; got {value!r}")
        sections[owner[key]][key] = tuple(value) if key == "targets" else value
    try:
        built = {name: SECTIONS[name](**kw) for name, kw in sections.items()}
    except TypeError as exc:  # wrong value types reaching a dataclass
        raise ConfigError(f"invalid config: {exc}") from None
    return Config(**built, preset=preset)


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
