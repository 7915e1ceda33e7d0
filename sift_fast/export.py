"""Export a ``sift-pretrain`` checkpoint as a Hugging Face masked-LM directory (``sift-export``, ``--export-hf``).

The directory is what ``AutoModelForMaskedLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load and
what a fine-tuning script takes unchanged: the model's ``save_pretrained`` (safetensors, fp32), the
tokenizer files and a ``README.md`` model card with the SIFT settings of the run. It is written into a temp
directory and renamed into place (:func:`sift_fast.io.atomic_dir`): never half-written. Our model *is* the
Hugging Face model inside the adapter (``MLMEncoder.hf``), so the exported weights are the trained tensors.

Checkpoints: a ``step_XXXXXXXX.pt`` file (single process), or a DeepSpeed tag directory, whose ZeRO 1-3
shards are consolidated to fp32 with DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint`` (its
``torch.load`` calls made code-free, as for resume). A run directory or its ``checkpoints/`` picks the newest.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from sift_fast.errors import ConfigError, UserError
from sift_fast.io import atomic_dir, check_writable_dir
from sift_fast.train.checkpoint import CorruptCheckpoint, load_checkpoint, load_newest, safe_load

_TAG = re.compile(r"^step_\d{8}$")
_TIED = ("hf.cls.predictions.decoder.weight", "hf.cls.predictions.decoder.bias", "hf.lm_head.decoder.weight",
         "hf.lm_head.decoder.bias")


def check_export_target(out: str | Path, flag: str = "--out") -> None:
    """Refuse at start-up a target that is a file or a non-empty directory other than an earlier export."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {out} is a file, not a directory")
    if p.is_dir() and any(p.iterdir()) and not (p / "config.json").is_file():
        raise ConfigError(f"{flag} {out} is a non-empty directory that is not a Hugging Face export; "
                          "choose a new or empty directory")
    check_writable_dir(p.absolute().parent, flag)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """(trainer state, encoder weights keyed like ``MLMEncoder.state_dict()``, checkpoint path) of ``path``."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"--checkpoint {path}: no such file or directory")
    if p.is_dir() and (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if p.is_dir() and (p / "latest").is_file():
        p = p / (p / "latest").read_text().strip()
    if p.is_dir() and _TAG.match(p.name) and (p / "sift_rank00000.pt").is_file():
        return _read_deepspeed(p)
    if p.is_file():
        try:
            state = load_checkpoint(p)
        except CorruptCheckpoint as exc:
            raise UserError(f"--checkpoint: torn or corrupt checkpoint {exc}") from None
    elif p.is_dir():
        found = load_newest(p)
        if found is None:
            raise UserError(f"--checkpoint {path}: no checkpoint in it (step_XXXXXXXX.pt or a DeepSpeed 'latest')")
        state, p = found
    else:
        raise UserError(f"--checkpoint {path}: not a checkpoint file or directory")
    engine = state.get("engine") or {}
    if "model" not in engine:
        raise UserError(f"--checkpoint {p}: holds no model weights")
    return state, engine["model"], p


class _SafeTorch:
    """``torch`` as DeepSpeed's zero_to_fp32 sees it, with a ``load`` that never runs code."""

    def __init__(self, extra: tuple) -> None:
        self._extra = extra

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def load(self, f: Any, map_location: Any = None, **_: Any) -> Any:
        return safe_load(Path(f), map_location=map_location, extra=self._extra)


def _read_deepspeed(tag_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    try:
        state = load_checkpoint(tag_dir / "sift_rank00000.pt")
    except CorruptCheckpoint as exc:
        raise UserError(f"--checkpoint: torn or corrupt checkpoint {exc}") from None
    from deepspeed.utils import zero_to_fp32

    from sift_fast.distributed.engine import deepspeed_safe_types

    extra = deepspeed_safe_types()
    saved, zero_to_fp32.torch = zero_to_fp32.torch, _SafeTorch(extra)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints
            if int((state.get("engine") or {}).get("zero_stage", 0)) == 0:
                weights = safe_load(tag_dir / "mp_rank_00_model_states.pt", extra=extra)["module"]
            else:
                weights = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    except UserError:
        raise
    except Exception as exc:  # a missing or torn shard: DeepSpeed's own error, first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--checkpoint {tag_dir}: cannot consolidate the DeepSpeed shards: {first}") from None
    finally:
        zero_to_fp32.torch = saved
    weights = {k.removeprefix("encoder."): v for k, v in weights.items()}  # LossOutputs wraps the encoder
    return state, weights, tag_dir


def model_from_state(state: dict[str, Any], weights: dict[str, torch.Tensor]) -> Any:
    """The trained :class:`~sift_fast.models.hf.MLMEncoder` (fp32, CPU) of a checkpoint."""
    import transformers

    from sift_fast.config import ModelConfig
    from sift_fast.models.hf import adapter_for, build_model

    if state.get("hf_config"):  # the exact Hugging Face config of the run (init_from dirs keep theirs)
        raw = json.loads(state["hf_config"])
        cls = getattr(transformers, raw["architectures"][0])
        hf_cfg = cls.config_class.from_dict(raw)
        hf_cfg._attn_implementation = "sdpa"
        model = adapter_for(cls(hf_cfg))
    else:  # older checkpoints: rebuilt from the config, sized by the saved embeddings
        cfg = state["config"]
        fields = {k: v for k, v in cfg["model"].items() if k in ModelConfig.__dataclass_fields__}
        vocab = next(v.shape[0] for k, v in weights.items() if k.endswith("word_embeddings.weight"))
        model = build_model(ModelConfig(**fields), vocab, cfg["data"]["seq_len"])
    weights = {k: v.float() for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    bad = [k for k in missing if k not in _TIED] + list(unexpected)
    if bad:
        raise UserError(f"checkpoint weights do not fit the model ({len(bad)} keys, e.g. {bad[0]})")
    model.hf.tie_weights()
    return model.eval()


def model_card(state: dict[str, Any], source: Path, model: Any) -> str:
    """README.md: Hugging Face front matter and the SIFT settings of the run."""
    cfg = state.get("config") or {}
    sift, data, m = cfg.get("sift") or {}, cfg.get("data") or {}, cfg.get("model") or {}
    final = state.get("last_eval") or {}
    rows = [("selection", sift.get("selection")), ("keep", sift.get("keep")),
            ("exit layer", state.get("exit_layer", sift.get("exit_layer"))),
            ("candidates per step (per rank)", sift.get("candidates")), ("steps", state.get("step")),
            ("backprop samples", state.get("backprop_samples")), ("samples scored", state.get("samples")),
            ("corpus", data.get("corpus")), ("tokenizer", data.get("vocab")), ("seq_len", data.get("seq_len")),
            ("initialised from", m.get("init_from") or "random init"),
            ("val_mlm_acc at the last eval", final.get("val_mlm_acc"))]
    table = "\n".join(f"| {k} | {v if v is not None else '-'} |" for k, v in rows)
    return (f"---\nlibrary_name: transformers\npipeline_tag: fill-mask\ntags:\n- sift_fast\n- masked-lm\n---\n\n"
            f"# {type(model.hf).__name__} pretrained with sift_fast (SIFT sample sifting)\n\n"
            f"Exported by sift_fast from `{source}` (step {state.get('step')}). Each step scored a candidate batch at "
            "an early exit and backpropagated the kept share; the weights are a plain Hugging Face model.\n\n"
            f"| SIFT setting | value |\n|---|---|\n{table}\n\n"
            "```python\nfrom transformers import AutoModelForMaskedLM, AutoTokenizer\n"
            "model = AutoModelForMaskedLM.from_pretrained(DIR)\ntokenizer = AutoTokenizer.from_pretrained(DIR)\n```\n")


def resolve_tokenizer(state: dict[str, Any], source: Path, tokenizer: str | None) -> Any:
    """``--tokenizer``, else the run's ``tokenizer.json``, else the run's ``vocab`` setting (a path, bundled,
    or the corpus-trained WordPiece, rebuilt from its cache)."""
    from sift_fast.data import load_tokenizer, read_documents

    if tokenizer:
        return load_tokenizer(tokenizer)
    for run_dir in source.parents[:3]:
        if (run_dir / "tokenizer.json").is_file() and (run_dir / "config.json").is_file():
            return load_tokenizer(str(run_dir / "tokenizer.json"))
    data = (state.get("config") or {}).get("data") or {}
    spec = data.get("vocab", "bundled")
    if spec != "train":
        return load_tokenizer(spec)
    from sift_fast.config import DataConfig
    from sift_fast.train.builder import default_cache_dir

    d = DataConfig(**{k: v for k, v in data.items() if k in DataConfig.__dataclass_fields__})
    cache = default_cache_dir(SimpleNamespace(data=d)) / "tokenizers"
    return load_tokenizer("train", train_texts=read_documents(d.corpus, text_key=d.text_key),
                          vocab_size=d.vocab_size, cache_dir=cache)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, tokenizer: str | None = None,
                      vocab: Any = None) -> Path:
    """Write the Hugging Face directory ``out`` from ``checkpoint``; ``vocab`` (a loaded tokenizer) wins."""
    from sift_fast.data.tokenizer import hf_tokenizer_of

    check_export_target(out)
    state, weights, source = read_checkpoint(checkpoint)
    model = model_from_state(state, weights)
    vocab = vocab or resolve_tokenizer(state, source, tokenizer)
    if vocab.vocab_size > model.hf.config.vocab_size:
        raise UserError(f"--tokenizer: {vocab.vocab_size} tokens, more than the model's {model.hf.config.vocab_size} "
                        "embeddings: not the run's tokenizer")
    model.hf.config.pad_token_id = vocab.pad_id
    with atomic_dir(out) as tmp:
        model.hf.save_pretrained(tmp, safe_serialization=True)
        hf_tokenizer_of(vocab).save_pretrained(tmp)  # tokenizer_config.json: the special tokens by role
        vocab.tokenizer.save(str(tmp / "tokenizer.json"))  # the run's own backend, byte for byte
        (tmp / "README.md").write_text(model_card(state, source, model), encoding="utf-8")
    return Path(out)
