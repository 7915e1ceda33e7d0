"""Local Hugging Face masked-LM directories into ``sift-pretrain`` (``--init-from DIR``).

:func:`fields_from_dir` reads the directory's ``config.json`` (no model load, no hub access): the model
fields it fixes (family, depth, width, heads, feed-forward width, vocabulary size) and those it only
defaults (model class, dropout, init std, the tokenizer when the directory has one). ``build_config``
layers them between the preset and the user's flags; a flag that contradicts a fixed field is one line.
:func:`load_pretrained` loads the weights (``from_pretrained``, local files only, fp32, SDPA) and wraps
them in the adapter of :mod:`sift_fast.models.hf`. Export back out: :mod:`sift_fast.export`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sift_fast.errors import ConfigError

# architectures with the MLM head the adapter drives -> (arch, model_class)
SUPPORTED = {"BertForMaskedLM": ("bert", "mlm"), "BertForPreTraining": ("bert", "pretraining"),
             "RobertaForMaskedLM": ("roberta", "mlm")}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# positions a sequence may use: RoBERTa offsets its position ids by padding_idx + 1
_POSITION_OFFSET = {"bert": 0, "roberta": 2}


def read_hf_config(path: str | Path, flag: str = "--init-from") -> dict[str, Any]:
    """The ``config.json`` of a local model directory as a mapping; a ``ConfigError`` line naming ``flag``."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{flag} {path}: no such directory (a local Hugging Face model directory; the hub is "
                          "not used)")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{flag} {path}: no config.json (not a Hugging Face model directory)")
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag} {path}: unreadable config.json: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{flag} {path}: config.json does not hold a mapping")
    return raw


def _masked_lm_arch(raw: dict[str, Any], path: str | Path) -> tuple[str, str]:
    archs = raw.get("architectures") or []
    for name in archs:
        if name in SUPPORTED:
            return SUPPORTED[name]
    if archs:
        raise ConfigError(f"--init-from {path}: a {archs[0]} has no masked-LM head (supported: "
                          f"{', '.join(SUPPORTED)})")
    if raw.get("model_type") in ("bert", "roberta"):  # no architectures recorded: the family's masked LM
        return raw["model_type"], "mlm"
    raise ConfigError(f"--init-from {path}: model_type {raw.get('model_type')!r} is not a supported masked LM "
                      f"(supported: {', '.join(SUPPORTED)})")


def fields_from_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(fields the directory fixes, fields it defaults, the longest sequence its positions allow)."""
    raw = read_hf_config(path)
    arch, model_class = _masked_lm_arch(raw, path)
    try:
        fixed = {"arch": arch, "num_layers": int(raw["num_hidden_layers"]), "hidden_size": int(raw["hidden_size"]),
                 "num_heads": int(raw["num_attention_heads"]), "intermediate_size": int(raw["intermediate_size"]),
                 "vocab_size": int(raw["vocab_size"])}
        max_len = int(raw.get("max_position_embeddings", 512)) - _POSITION_OFFSET[arch]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"--init-from {path}: config.json lacks a usable {exc}") from None
    soft: dict[str, Any] = {"model_class": model_class,
                            "dropout": float(raw.get("hidden_dropout_prob", 0.0)),
                            "init_std": float(raw.get("initializer_range", 0.02))}
    if any((Path(path).expanduser() / f).is_file() for f in TOKENIZER_FILES):
        soft["vocab"] = str(path)
    if not any((Path(path).expanduser() / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"--init-from {path}: no weights ({' / '.join(WEIGHT_FILES[::2])})")
    return fixed, soft, max_len


def check_init_fields(path: str, soft: dict[str, Any], max_len: int, values: dict[str, Any]) -> None:
    """The checks ``build_config`` runs once the layers are merged: a freshly trained tokenizer cannot index
    pretrained embeddings, and ``seq_len`` must fit the directory's position embeddings."""
    if values.get("vocab") == "train":
        raise ConfigError(f"--init-from {path}: the directory has no tokenizer (tokenizer.json / vocab.txt) and "
                          "--vocab train would train a new one that its embeddings do not index; pass --vocab PATH"
                          if "vocab" not in soft else
                          f"--vocab train contradicts --init-from {path}: its embeddings index its own tokenizer")
    if values["seq_len"] > max_len:
        raise ConfigError(f"--seq-len {values['seq_len']} is past the {max_len} positions of --init-from {path}")


def load_pretrained(path: str, model_cfg: Any, vocab_size: int) -> Any:
    """The adapter over ``from_pretrained(path)`` (local files, fp32, SDPA, the config's dropout), in train mode.

    ``vocab_size``: the tokenizer's size, which must fit the embeddings. A missing weight (no MLM head, a
    backbone-only checkpoint) or an unreadable weights file is one ``ConfigError`` line.
    """
    import transformers

    from sift_fast.models.hf import adapter_for

    cls = transformers.BertForPreTraining if model_cfg.model_class == "pretraining" else \
        transformers.AutoModelForMaskedLM
    try:
        model, info = cls.from_pretrained(
            path, local_files_only=True, output_loading_info=True, dtype=torch.float32, attn_implementation="sdpa",
            hidden_dropout_prob=model_cfg.dropout, attention_probs_dropout_prob=model_cfg.dropout)
    except Exception as exc:  # a torn or foreign weights file: the loader's own error, first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--init-from {path}: cannot load its weights: {first}") from None
    missing = list(info.get("missing_keys") or [])
    if missing:
        head = [k for k in missing if k.startswith(("cls.", "lm_head."))]
        what = "no MLM head" if head else "incomplete weights"
        raise ConfigError(f"--init-from {path}: {what} ({len(missing)} missing, e.g. {(head or missing)[0]}); "
                          "a masked-LM checkpoint is needed (BertForMaskedLM, BertForPreTraining, RobertaForMaskedLM)")
    adapter = adapter_for(model)
    if vocab_size > model.config.vocab_size:
        raise ConfigError(f"--vocab: the tokenizer has {vocab_size} tokens, the embeddings of --init-from {path} "
                          f"only {model.config.vocab_size}; use the directory's own tokenizer")
    model.train()  # from_pretrained returns eval mode; a built model trains with its dropout
    return adapter
