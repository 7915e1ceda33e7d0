"""Build what a run needs from the config: device, vocab, packed corpus, model, engine."""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sift_fast.config import Config
from sift_fast.errors import ConfigError


def default_cache_dir(cfg: Config) -> Path:
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir)
    return Path(os.environ.get("SIFT_CACHE_DIR", Path.home() / ".cache" / "sift_fast"))


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of ``device`` (CUDA: the GPU's; CPU: physical RAM); 0 when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_fits_memory(cfg: Config, device: torch.device) -> None:
    """Refuse a ``seq_len`` whose attention alone cannot fit: one layer's [B, heads, S, S] fp32 attention
    matrix of a candidate batch (a lower bound of the step's memory) larger than the device's memory."""
    need = cfg.sift.candidates * cfg.model.num_heads * cfg.data.seq_len ** 2 * 4
    have = device_memory_bytes(device)
    if have and need > have:
        raise ConfigError(f"--seq-len {cfg.data.seq_len}: one attention matrix of a {cfg.sift.candidates}-candidate "
                          f"batch needs {need / 2**30:.0f} GiB, more than the {have / 2**30:.0f} GiB of {device}; "
                          "lower --seq-len or --candidates")


@dataclass
class DataBundle:
    vocab: object  # sift_fast.data.Vocab
    train: np.ndarray  # int32 [N, S] rows: an array, or lazy samples (sift_fast.data.samples / blend)
    valid: np.ndarray  # int32 [Nv, S]


def build_data(cfg: Config) -> DataBundle:
    """Tokenizer (loaded or trained on the corpus, cached), lazy packed train rows and validation rows (cached)."""
    from sift_fast.data import build_corpus, load_tokenizer, read_documents

    d = cfg.data
    cache = default_cache_dir(cfg)
    texts = read_documents(d.corpus, text_key=d.text_key) if d.vocab == "train" else None
    vocab = load_tokenizer(d.vocab, train_texts=texts, vocab_size=d.vocab_size, cache_dir=cache / "tokenizers")
    vocab = dataclasses.replace(vocab, source=str(d.vocab))
    corpus = build_corpus(
        d.corpus, vocab, d.seq_len, valid_fraction=d.valid_fraction, max_valid_sequences=d.max_valid_sequences,
        cache_dir=cache / "corpora", text_key=d.text_key, max_train_tokens=d.max_train_tokens or None,
    )
    return DataBundle(vocab=vocab, train=corpus.train, valid=corpus.valid)


def build_model_for(cfg: Config, vocab) -> object:
    """The run's model (an :class:`~sift_fast.models.hf.MLMEncoder`): ``from_pretrained(model.init_from)``, or
    a random init from the config, sized to the tokenizer ``vocab``."""
    if cfg.model.init_from:
        from sift_fast.models.pretrained import load_pretrained

        return load_pretrained(cfg.model.init_from, cfg.model, vocab.vocab_size)
    from sift_fast.models.hf import build_model

    return build_model(cfg.model, vocab.vocab_size, cfg.data.seq_len, pad_id=vocab.pad_id)
