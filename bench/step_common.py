"""Shared pieces of the step benchmarks: shapes, fixed random candidate batches, the FLOP model, timing
clocks, the card name, atomic writers."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sift_fast.config import PRESETS, ModelConfig
from sift_fast.data import MLMMasker
from sift_fast.data.batch import Batch, make_batch
from sift_fast.io import atomic_write_text

# bert-base-uncased ids (the bundled vocab both shapes use)
VOCAB_SIZE, PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 30522, 0, 100, 101, 102, 103
SPECIAL_IDS = (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)
MASK_PROB = 0.15


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    seq_len: int
    vocab: int = VOCAB_SIZE

    def model_config(self, dropout: float) -> ModelConfig:
        return ModelConfig(num_layers=self.layers, hidden_size=self.hidden, num_heads=self.heads,
                           intermediate_size=self.intermediate, dropout=dropout)


def shape_of(preset: str) -> Shape:
    p = PRESETS[preset]
    return Shape(preset, p["num_layers"], p["hidden_size"], p["num_heads"], p["intermediate_size"], p["seq_len"])


def random_batches(n: int, candidates: int, seq_len: int, seed: int = 0) -> list[Batch]:
    """``n`` fixed candidate batches: random word ids between [CLS] and [SEP], no padding (packed data),
    BERT masking (15%; 80/10/10) by the trainer's masker."""
    rng = np.random.default_rng(seed)
    masker = MLMMasker(VOCAB_SIZE, MASK_ID, SPECIAL_IDS, mask_prob=MASK_PROB, seed=seed)
    out = []
    for i in range(n):
        ids = rng.integers(1000, VOCAB_SIZE, size=(candidates, seq_len), dtype=np.int64)
        ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
        sample_ids = np.arange(i * candidates, (i + 1) * candidates)
        masked, labels = masker(ids, sample_ids, 0)
        out.append(make_batch(masked, labels, sample_ids, PAD_ID))
    return out


def step_flops(shape: Shape, candidates: int, kept: int, masked_per_seq: float, exit_layer: int) -> dict[str, float]:
    """Analytic FLOPs (2 per multiply-add) of a baseline and a SIFT step on the same candidates.

    Per sequence forward: each layer 8·S·H² (Q, K, V, O) + 4·S²·H (QKᵀ, AV) + 4·S·H·I (FFN); the MLM head
    on the m masked rows only, m·(2·H² + 2·H·V). Training = 3× forward (backward ≈ 2× forward).
    Baseline: 3·C·F_L. SIFT: 3·K·F_L (kept samples) + C·F_k (no-grad scoring: k layers + head on every
    candidate's masked rows). Element-wise work, embeddings and the optimizer update are not counted.
    """
    s, h, i, v = shape.seq_len, shape.hidden, shape.intermediate, shape.vocab
    layer = 8 * s * h * h + 4 * s * s * h + 4 * s * h * i
    head = masked_per_seq * (2 * h * h + 2 * h * v)
    full, exit_ = shape.layers * layer + head, exit_layer * layer + head
    base = 3 * candidates * full
    scoring = candidates * exit_
    sift = 3 * kept * full + scoring
    return {"baseline": base, "sift": sift, "scoring": scoring, "ideal_ratio": sift / base,
            "ideal_ratio_no_scoring": kept / candidates, "ideal_scoring_share": scoring / sift}


class Clock:
    """Wall time (with a device sync on CUDA) and process CPU time of a block of work."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self) -> Clock:
        if self.cuda:
            torch.cuda.synchronize()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def card_name(device: torch.device) -> str:
    """``cpu``, or a short card slug (``h100``, ``a100``, ...) from the CUDA device name."""
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    return (m.group(1) if m else re.sub(r"[^A-Za-z0-9]+", "-", name)).lower()


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    env = {"date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
           "python": platform.python_version(), "device": str(device), "threads": threads,
           "cpu_count": os.cpu_count(), "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        env["card"] = torch.cuda.get_device_name(device)
    return env


write_atomic = atomic_write_text  # the benches' name for the project's one atomic writer


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


class CyclingLoader:
    """Loader stand-in: the same fixed candidate batches in a cycle (no data cost inside the step)."""

    def __init__(self, batches: list) -> None:
        self.batches, self.i = batches, 0

    def next_batch(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b

    def state_dict(self) -> dict:
        return {"i": self.i}

    def load_state_dict(self, state: dict) -> None:
        self.i = state["i"]
