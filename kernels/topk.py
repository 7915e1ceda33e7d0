"""Deterministic top-k of per-sequence scores: highest first, ties to the lower index, NaN ranks as -inf.

``topk_indices`` runs one Triton program for ``B <= MAX_SINGLE_PROGRAM``: each score becomes a unique
int64 key ``(order-preserving int32 of the fp32 score) << 32 | (BLOCK - 1 - index)``, the block is
bitonic-sorted descending with ``tl.sort`` and the first ``k`` indices are stored. Beyond that size the
same packed keys go through ``torch.topk`` (unique keys: exact and deterministic). ``-0.0`` ties ``+0.0``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sift_fast.reference import check_topk
from sift_fast.reference import topk_ref as _topk_ref

from ._jit import check_device as _check_device
from ._jit import lazy_jit

__all__ = ["MAX_SINGLE_PROGRAM", "topk_indices", "topk_ref", "topk_torch"]

MAX_SINGLE_PROGRAM = 4096
_INT64_MIN = tl.constexpr(-(2**63))


@lazy_jit
def _topk_kernel(x_ptr, out_ptr, n, k, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    ok = offs < n
    x = tl.load(x_ptr + offs, mask=ok, other=float("-inf")).to(tl.float32)
    x = tl.where(x != x, float("-inf"), x)  # NaN ranks as -inf
    x = tl.where(x == 0.0, 0.0, x)  # -0.0 ties +0.0
    bits = x.to(tl.int32, bitcast=True)
    key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # signed int32 with the float order
    packed = (key.to(tl.int64) << 32) | (BLOCK - 1 - offs).to(tl.int64)
    packed = tl.where(ok, packed, _INT64_MIN)  # padding sorts last
    packed = tl.sort(packed, descending=True)
    idx = (BLOCK - 1) - (packed & 0x7FFFFFFF)
    tl.store(out_ptr + offs, idx, mask=offs < k)


def _check(scores: torch.Tensor, k: int) -> int:
    n = check_topk(scores, k)
    if scores.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"scores must be fp32, fp16 or bf16, got {scores.dtype}")
    return n


def topk_torch(scores: torch.Tensor, k: int) -> torch.LongTensor:
    """``torch.topk`` on the same unique packed int64 keys as the kernel (any device, any size)."""
    n = _check(scores, k)
    s = scores.float()
    s = torch.where(torch.isnan(s), float("-inf"), s)
    s = torch.where(s == 0, 0.0, s)  # -0.0 ties +0.0
    bits = s.view(torch.int32)
    key = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).long()
    packed = (key << 32) | (n - 1 - torch.arange(n, device=s.device))
    return torch.topk(packed, k, sorted=True).indices


def topk_indices(scores: torch.Tensor, k: int) -> torch.LongTensor:
    """Indices of the ``k`` highest of ``scores [B]``, highest first, ties to the lower index (int64 ``[k]``).

    One Triton program for ``B <= MAX_SINGLE_PROGRAM``, :func:`topk_torch` beyond (same result).
    Needs CUDA tensors or ``TRITON_INTERPRET=1``.
    """
    n = _check(scores, k)
    _check_device(scores)
    if n > MAX_SINGLE_PROGRAM:
        return topk_torch(scores, k)
    out = torch.empty((k,), dtype=torch.int64, device=scores.device)
    block = max(16, triton.next_power_of_2(n))
    _topk_kernel.get()[(1,)](scores.contiguous(), out, n, k, BLOCK=block, num_warps=4 if block <= 1024 else 8)
    return out


def topk_ref(scores: torch.Tensor, k: int) -> torch.LongTensor:
    """Reference (``sift_fast.reference.topk_ref``): a stable descending sort (NaN as -inf), first ``k`` indices."""
    _check(scores, k)
    return _topk_ref(scores, k)
