"""Device compaction of the scored positions ``labels != ignore_index`` of a ``[B, S]`` label tensor.

No host sync, no atomics, bitwise reproducible run to run: ``_count_kernel`` + ``_compact_kernel`` are a
two-pass chunked scan that writes the compacted row list ``idx`` (``b * S + s``), the compacted targets,
the per-sequence offsets into that list and the masked count into a device scalar. Buffers are sized
``B * S`` (the worst case); consumers read the count and skip work past it. Rows are compacted in (b, s)
order, so each sequence owns the contiguous range ``offs[b] : offs[b + 1]``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._jit import lazy_jit

__all__ = ["SCAN_CHUNK", "compact_masked_rows"]

SCAN_CHUNK = 2048  # positions per program in the label compaction


@lazy_jit
def _count_kernel(labels_ptr, chunk_cnt_ptr, total, S, stride_lb, stride_ls, ignore_index,
                  CHUNK: tl.constexpr):
    c = tl.program_id(0)
    p = c * CHUNK + tl.arange(0, CHUNK)
    ok = p < total
    b = p // S
    s = p - b * S
    lab = tl.load(labels_ptr + b.to(tl.int64) * stride_lb + s.to(tl.int64) * stride_ls, mask=ok,
                  other=ignore_index)
    keep = ok & (lab != ignore_index)
    tl.store(chunk_cnt_ptr + c, tl.sum(keep.to(tl.int32), 0))


@lazy_jit
def _compact_kernel(labels_ptr, chunk_cnt_ptr, idx_ptr, tgt_ptr, count_ptr, offs_ptr,
                    total, S, B, stride_lb, stride_ls, ignore_index, n_chunks,
                    CHUNK: tl.constexpr, BLOCK_C: tl.constexpr):
    c = tl.program_id(0)
    # Exclusive prefix of the per-chunk counts (fixed order: deterministic, no atomics).
    acc = tl.zeros([BLOCK_C], dtype=tl.int32)
    for c0 in range(0, c, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        acc += tl.load(chunk_cnt_ptr + cc, mask=cc < c, other=0)
    base = tl.sum(acc, 0)
    p = c * CHUNK + tl.arange(0, CHUNK)
    ok = p < total
    b = p // S
    s = p - b * S
    lab = tl.load(labels_ptr + b.to(tl.int64) * stride_lb + s.to(tl.int64) * stride_ls, mask=ok,
                  other=ignore_index)
    keep = ok & (lab != ignore_index)
    ki = keep.to(tl.int32)
    pos = base + tl.cumsum(ki, 0) - ki
    tl.store(idx_ptr + pos, p, mask=keep)
    tl.store(tgt_ptr + pos, lab, mask=keep)
    tl.store(offs_ptr + b, pos, mask=ok & (s == 0))  # first row of sequence b in the compacted list
    if c == n_chunks - 1:
        n = base + tl.sum(ki, 0)
        tl.store(count_ptr, n)
        tl.store(offs_ptr + B, n)


def compact_masked_rows(
    labels: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compact the positions of ``labels [B, S]`` (any strides) that are not ``ignore_index``.

    Returns ``(idx, targets, offs, count)``: ``idx`` int32 ``[B * S]`` holds ``b * S + s`` of the kept
    positions in (b, s) order, ``targets [B * S]`` (``labels.dtype``) their labels, ``offs`` int32
    ``[B + 1]`` the start of each sequence's range (``offs[B]`` = the count) and ``count`` int32 ``[1]``
    the number kept; entries of ``idx`` / ``targets`` past the count are uninitialized. Needs ``B * S > 0``;
    runs on device without a host sync.
    """
    B, S = labels.shape
    total = B * S
    if total >= 2**31:
        raise ValueError(f"B * S = {total} positions exceed the int32 row index")
    dev = labels.device
    n_chunks = triton.cdiv(total, SCAN_CHUNK)
    chunk_cnt = torch.empty((n_chunks,), dtype=torch.int32, device=dev)
    idx = torch.empty((total,), dtype=torch.int32, device=dev)
    tgt = torch.empty((total,), dtype=labels.dtype, device=dev)
    count = torch.empty((1,), dtype=torch.int32, device=dev)
    offs = torch.empty((B + 1,), dtype=torch.int32, device=dev)
    lstrides = (labels.stride(0), labels.stride(1))
    _count_kernel.get()[(n_chunks,)](
        labels, chunk_cnt, total, S, *lstrides, ignore_index, CHUNK=SCAN_CHUNK
    )
    _compact_kernel.get()[(n_chunks,)](
        labels, chunk_cnt, idx, tgt, count, offs, total, S, B, *lstrides, ignore_index, n_chunks,
        CHUNK=SCAN_CHUNK, BLOCK_C=128,
    )
    return idx, tgt, offs, count
