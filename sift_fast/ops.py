"""Public scoring ops: per-sequence early-exit scores and deterministic top-k selection.

Two layers:

* ``exit_scores(hidden, weight, bias, labels, ...)`` — the documented API on a ``[B, S, H]``
  head-transformed hidden state with ``labels`` holding ``ignore_index`` at unmasked positions.
* ``exit_scores_rows(rows, weight, bias, targets, seq_ids, num_seqs, ...)`` — the same reduction on
  rows that were already gathered (the trainer gathers masked rows on the host-known index, applies
  the head transform to those rows only, then calls this).

Backends: ``torch`` (``sift_fast.reference``, chunked: peak extra memory is one ``[chunk, V]`` block, never
``[B*S, V]``) and
``triton`` (the fused kernel in ``sift_fast.kernels.exit_scorer``: logits never materialized).
``auto`` picks triton on CUDA when it imports, torch otherwise; ``SIFT_BACKEND`` overrides ``auto``.
All ops are forward-only (scoring needs no gradients).
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from sift_fast.errors import ConfigError
from sift_fast.reference import (
    CRITERIA,
    DEFAULT_CHUNK_ROWS,
    check_criterion,
    check_forward_only,
    check_topk,
    segment_mean,
    topk_ref,
)
from sift_fast.reference import token_stats as token_stats_torch

Criterion = Literal["loss", "entropy"]
Backend = Literal["auto", "triton", "torch"]
BACKENDS = ("auto", "triton", "torch")
__all__ = ["BACKENDS", "CRITERIA", "DEFAULT_CHUNK_ROWS", "exit_scores", "exit_scores_rows", "resolve_backend",
           "segment_mean", "select_topk", "token_stats_torch"]


def resolve_backend(backend: str, device: torch.device) -> str:
    """Resolve ``auto`` (or the ``SIFT_BACKEND`` env override) to ``triton`` or ``torch``."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown scoring backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = os.environ.get("SIFT_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ConfigError(f"SIFT_BACKEND={backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton_available() else "torch"
    return backend


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def exit_scores_rows(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    seq_ids: torch.Tensor,
    num_seqs: int,
    criterion: Criterion = "loss",
    *,
    ignore_index: int = -100,
    backend: Backend = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    seq_ids_sorted: bool = False,
) -> torch.Tensor:
    """Per-sequence mean score over already-gathered rows ``[N, H]`` (fp32 ``[num_seqs]``).

    ``seq_ids[N]`` says which sequence each row belongs to; rows with ``targets == ignore_index`` are
    skipped; sequences without a scored row get ``-inf``. ``seq_ids_sorted=True`` promises non-decreasing
    ids (the trainer's masked rows are), which lets the Triton backend skip a device sort.
    """
    check_criterion(criterion)
    check_forward_only("exit_scores", rows, weight, bias)
    if rows.shape[0] == 0:
        return torch.full((num_seqs,), float("-inf"), dtype=torch.float32, device=rows.device)
    if resolve_backend(backend, rows.device) == "triton":
        from sift_fast.kernels.exit_scorer import exit_scorer_rows

        return exit_scorer_rows(
            rows, weight, bias, targets, seq_ids, num_seqs, criterion, ignore_index, seq_ids_sorted=seq_ids_sorted
        )
    with torch.no_grad():
        loss, ent = token_stats_torch(rows, weight, bias, targets, chunk_rows=chunk_rows, ignore_index=ignore_index)
        values = loss if criterion == "loss" else ent
        return segment_mean(values, seq_ids, targets != ignore_index, num_seqs)


def exit_scores(
    hidden: torch.Tensor,
    decoder_weight: torch.Tensor,
    decoder_bias: torch.Tensor | None,
    labels: torch.Tensor,
    criterion: Criterion = "loss",
    ignore_index: int = -100,
    *,
    backend: Backend = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """Per-sequence early-exit score, fp32 ``[B]``.

    ``hidden``: head-transformed hidden state ``[B, S, H]`` (any float dtype, any strides);
    ``labels``: ``[B, S]`` with ``ignore_index`` at unmasked positions. Score = mean over the
    sequence's masked positions of the token cross-entropy (``loss``) or of the entropy of
    softmax(logits) (``entropy``); ``-inf`` for a sequence with no masked position. Only masked rows
    meet the decoder. Forward-only.
    """
    check_criterion(criterion)
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden [B, S, H] and labels [B, S], got {tuple(hidden.shape)} / {tuple(labels.shape)}"
        )
    check_forward_only("exit_scores", hidden, decoder_weight, decoder_bias)
    bsz, seq = labels.shape
    if resolve_backend(backend, hidden.device) == "triton":
        from sift_fast.kernels.exit_scorer import exit_scorer

        return exit_scorer(hidden, decoder_weight, decoder_bias, labels, criterion, ignore_index)
    flat_labels = labels.reshape(-1)
    idx = (flat_labels != ignore_index).nonzero().squeeze(1)
    rows = hidden.reshape(bsz * seq, hidden.shape[-1]).index_select(0, idx)
    return exit_scores_rows(
        rows, decoder_weight, decoder_bias, flat_labels.index_select(0, idx), idx // seq, bsz, criterion,
        ignore_index=ignore_index, backend="torch", chunk_rows=chunk_rows,
    )


def select_topk(scores: torch.Tensor, k: int, *, backend: Backend = "auto") -> torch.Tensor:
    """Indices of the ``k`` highest scores, highest first, ties broken towards the lower index.

    Deterministic on every device (NaN ranks like -inf): a stable descending sort on the torch backend,
    the single-program Triton sort of ``sift_fast.kernels.topk`` on the triton backend.
    """
    check_topk(scores, k)
    if resolve_backend(backend, scores.device) == "triton":
        from sift_fast.kernels.topk import topk_indices

        return topk_indices(scores, k)
    return topk_ref(scores, k)
