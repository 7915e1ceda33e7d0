"""The reference math of the scoring pass, in PyTorch: the torch backend, and what kernels and tests compare to.

One implementation of each rule, at three precisions:

* :func:`token_stats` — per-row cross-entropy and predictive entropy of ``rows @ W^T + b``. The decoder
  weight and bias are first rounded to the rows' dtype (what the kernels read); ``compute_dtype`` then
  says where the math runs: ``None`` (the torch backend: matmul in the rows' dtype, softmax in fp32),
  ``torch.float32`` (the kernels' reference: fp32 matmul of the rounded inputs) or ``torch.float64``
  (the brute force tests and benches measure errors against).
* :func:`segment_mean` — per-sequence mean over valid rows, ``-inf`` for a sequence without one.
* :func:`exit_scores_ref` — the two above on a ``[B, S, H]`` state with ``labels`` (``ignore_index`` off).
* :func:`topk_ref` — deterministic top-k: a stable descending sort, NaN ranked as ``-inf``, ties to the
  lower index.

Input checks shared by the ops and the kernels live here too (``ValueError`` for bad arguments).
Forward-only: nothing here needs gradients.
"""

from __future__ import annotations

import torch

CRITERIA = ("loss", "entropy")
DEFAULT_CHUNK_ROWS = 4096


def check_criterion(criterion: str) -> bool:
    """Raise ``ValueError`` for an unknown criterion; True for ``entropy``."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected 'loss' or 'entropy'")
    return criterion == "entropy"


def check_forward_only(op: str, *tensors: torch.Tensor | None) -> None:
    """Raise ``RuntimeError`` when ``op`` would run with autograd recording (the scoring pass needs no gradients)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"{op} is forward-only (the scoring pass needs no gradients); "
            "call it under torch.no_grad() or pass detached tensors"
        )


def check_topk(scores: torch.Tensor, k: int) -> int:
    """Raise ``ValueError`` unless ``scores`` is 1-D and ``1 <= k <= len(scores)``; returns the length."""
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    n = scores.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    return n


def token_stats(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ignore_index: int = -100,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (cross-entropy, entropy) of ``rows [N, H] @ weight.T + bias``; fp32 (fp64 when computing in fp64).

    Logits are formed one ``[chunk_rows, V]`` block at a time. Rows whose target is ``ignore_index``
    get loss 0 (their entropy is still computed).
    """
    mm = rows.dtype if compute_dtype is None else compute_dtype
    out = torch.float64 if mm == torch.float64 else torch.float32
    n = rows.shape[0]
    loss = torch.empty(n, dtype=out, device=rows.device)
    ent = torch.empty(n, dtype=out, device=rows.device)
    w = weight.to(rows.dtype).to(mm)
    b = None if bias is None else bias.to(rows.dtype).to(mm)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        logits = torch.nn.functional.linear(rows[start:stop].to(mm), w, b).to(out)
        logp = torch.log_softmax(logits, dim=-1)
        ent[start:stop] = -(logp.exp() * logp).sum(-1)
        tgt = targets[start:stop]
        picked = logp.gather(1, tgt.clamp(min=0).unsqueeze(1)).squeeze(1)
        loss[start:stop] = torch.where(tgt != ignore_index, -picked, torch.zeros_like(picked))
    return loss, ent


def segment_mean(values: torch.Tensor, seq_ids: torch.Tensor, valid: torch.Tensor, num_seqs: int) -> torch.Tensor:
    """Mean of ``values[valid]`` per segment id; ``-inf`` for segments with no valid value (fp32, or fp64 in)."""
    dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    v = torch.where(valid, values.to(dtype), torch.zeros_like(values, dtype=dtype))
    sums = torch.zeros(num_seqs, dtype=dtype, device=values.device).index_add_(0, seq_ids, v)
    counts = torch.zeros(num_seqs, dtype=dtype, device=values.device).index_add_(0, seq_ids, valid.to(dtype))
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("-inf")))


def exit_scores_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    criterion: str,
    ignore_index: int = -100,
    *,
    compute_dtype: torch.dtype | None = torch.float32,
    chunk_rows: int = 1024,
) -> torch.Tensor:
    """Per-sequence mean loss / entropy over the positions of ``labels [B, S]`` that are not ``ignore_index``.

    ``hidden [B, S, H]`` is the head-transformed state; ``-inf`` for a sequence with no scored position.
    fp32 by default (the kernels' reference), fp64 with ``compute_dtype=torch.float64``.
    """
    entropy = check_criterion(criterion)
    bsz, seq, width = hidden.shape
    with torch.no_grad():
        flat = labels.reshape(-1)
        idx = (flat != ignore_index).nonzero().squeeze(1)
        rows = hidden.reshape(bsz * seq, width).index_select(0, idx)
        tgt = flat.index_select(0, idx)
        loss, ent = token_stats(rows, weight, bias, tgt, chunk_rows=chunk_rows, ignore_index=ignore_index,
                                compute_dtype=compute_dtype)
        return segment_mean(ent if entropy else loss, idx // seq, tgt != ignore_index, bsz)


def topk_ref(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest ``scores``, highest first, ties to the lower index, NaN as ``-inf``."""
    check_topk(scores, k)
    s = scores.float()
    s = torch.where(torch.isnan(s), torch.full_like(s, float("-inf")), s)
    return torch.sort(s, descending=True, stable=True).indices[:k]
