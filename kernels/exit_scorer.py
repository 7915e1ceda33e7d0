"""Fused early-exit scorer: per-sequence mean MLM loss / predictive entropy without materializing logits.

Forward only: the SIFT scoring pass needs no gradients; the entry points raise if one is requested.

Pipeline (all on device, no host sync, no atomics, bitwise reproducible run to run):

1. ``compact_masked_rows`` (``[B, S]`` entry only, in ``masked_compaction``): compacts the positions with
   ``labels != ignore_index`` into a row list ``idx``, their targets, per-sequence offsets and a device
   count. Buffers are sized ``B * S`` (the worst case); later kernels read the count and skip work past it.
2. ``_stats_kernel`` (persistent): a tile is (row block, vocab split). It gathers the rows through
   ``idx`` (any strides), tiles ``x @ W^T`` with ``tl.dot`` over ``BLOCK_V x BLOCK_K`` blocks, adds the bias,
   masks the vocab tail to ``-inf`` and keeps online fp32 row statistics over its vocab range: max ``m``,
   ``d = sum 2^t``, ``s = sum 2^t * t`` with ``t = (z - m) * log2(e)``, plus the target logit. The split count
   is derived on device from the masked count (enough tiles to fill the GPU) and written for the epilogue.
3. ``_finalize_kernel`` (one program per sequence): merges the split partials in a fixed order, forms
   loss ``= ln d + m - z_y`` and entropy ``= ln d - ln2 * s / d`` (no cancellation on peaked rows) and
   averages over the sequence's contiguous row range; ``-inf`` for a sequence with no scored row.

Rows of the ``[B, S, H]`` entry are compacted in (b, s) order, so each sequence owns a contiguous range;
``exit_scorer_rows`` gets the same layout from a stable device sort of ``seq_ids`` (or trusts the caller).

Tiles: one fixed config per input dtype by default (the config fixes the summation order, so scores are
bitwise reproducible across processes on one GPU model); ``SIFT_EXIT_AUTOTUNE=1`` autotunes 16-bit
inputs over ``HOPPER_CONFIGS``. Under ``TRITON_INTERPRET=1`` (CPU) one fixed small config is used and
``tl.dot`` operands are upcast to fp32 (the interpreter mis-computes bf16 dots). Kernels are jitted on
first launch (``_jit.LazyKernel``), so the interpret flag is read at call time, not import time.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl

from sift_fast.reference import check_criterion as _criterion_flag
from sift_fast.reference import check_forward_only
from sift_fast.reference import exit_scores_ref as exit_scorer_ref  # the pure-PyTorch reference (fp32, chunked)

from ._jit import LazyKernel, autotune_enabled, interpreting, lazy_jit, triton_configs
from ._jit import check_device as _check_device
from .masked_compaction import compact_masked_rows

__all__ = [
    "DEFAULT_CONFIG",
    "FP32_CONFIG",
    "HOPPER_CONFIGS",
    "LazyKernel",
    "exit_scorer",
    "exit_scorer_ref",
    "exit_scorer_rows",
    "exit_token_stats",
    "interpreting",
]

# (BLOCK_N, BLOCK_V, BLOCK_K, num_warps, num_stages). The config fixes the summation order, so the default
# is one fixed config (bitwise-reproducible across processes on a given GPU model); SIFT_EXIT_AUTOTUNE=1
# autotunes 16-bit inputs over HOPPER_CONFIGS instead (the benchmark reports the winner).
DEFAULT_CONFIG: tuple[int, int, int, int, int] = (128, 128, 64, 8, 3)
# fp32 inputs use an exact (IEEE, non-tensor-core) dot: smaller tiles keep it free of register spills.
FP32_CONFIG: tuple[int, int, int, int, int] = (64, 128, 32, 8, 2)
HOPPER_CONFIGS: tuple[tuple[int, int, int, int, int], ...] = (
    (128, 128, 64, 8, 3),
    (128, 256, 64, 8, 3),
    (128, 128, 64, 4, 4),
    (64, 256, 64, 8, 3),
    (128, 64, 64, 4, 4),
)
# The one config under the interpreter (small so that tests exercise several row blocks and splits).
INTERPRET_CONFIG: dict[str, int] = {"BLOCK_N": 32, "BLOCK_V": 128}
INTERPRET_PROGRAMS = 8  # persistent programs (and split target) under the interpreter
MAX_SPLITS = 32  # vocab splits per row block at most
PROGRAMS_PER_SM = 2
FINAL_BLOCK = 64  # rows per step in the epilogue
STATS_SEGMENT = 512  # rows per program when exit_token_stats runs the epilogue


# --------------------------------------------------------------------------------------------- kernels

_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)


def _stats_kernel_fn(
    x_ptr, w_ptr, b_ptr, idx_ptr, tgt_ptr, count_ptr, part_ptr, splits_ptr,
    S, stride_xb, stride_xs, stride_xh, stride_wv, stride_wh,
    V, H, part_stride, target_programs, n_bucket,
    HAS_BIAS: tl.constexpr, GATHER: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    MAX_SPLITS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    count = tl.load(count_ptr).to(tl.int32)
    nblk = tl.cdiv(count, BLOCK_N)
    nvb = tl.cdiv(V, BLOCK_V)
    # Vocab splits chosen on device from the masked count: enough tiles to fill the machine.
    splits = tl.cdiv(target_programs, tl.maximum(nblk, 1))
    splits = tl.minimum(tl.minimum(tl.maximum(splits, 1), MAX_SPLITS), nvb)
    vps = tl.cdiv(nvb, splits)  # vocab blocks per split
    splits = tl.cdiv(nvb, vps)  # no empty split
    if pid == 0:
        tl.store(splits_ptr, splits)
    ks = tl.arange(0, BLOCK_K)
    for tile in range(pid, nblk * splits, nprog):
        pid_n = tile % nblk  # row block varies fastest: concurrent tiles share weight tiles in L2
        pid_s = tile // nblk
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < count
        if GATHER:
            p = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.int64)
        else:
            p = tl.where(row_ok, rows, 0).to(tl.int64)
        bi = p // S
        x_row = x_ptr + bi * stride_xb + (p - bi * S) * stride_xs
        tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=-1).to(tl.int32)
        m = tl.full([BLOCK_N], float("-inf"), tl.float32)
        d = tl.zeros([BLOCK_N], dtype=tl.float32)
        s = tl.zeros([BLOCK_N], dtype=tl.float32)
        zy = tl.zeros([BLOCK_N], dtype=tl.float32)
        vb_end = tl.minimum((pid_s + 1) * vps, nvb)
        for vb in range(pid_s * vps, vb_end):
            cols = vb * BLOCK_V + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            w_col = w_ptr + tl.minimum(cols, V - 1).to(tl.int64) * stride_wv  # tail reads a valid row
            acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
            for k0 in range(0, H, BLOCK_K):
                kk = k0 + ks
                k_ok = kk < H
                a = tl.load(x_row[:, None] + kk[None, :] * stride_xh, mask=k_ok[None, :], other=0.0)
                w = tl.load(w_col[None, :] + kk[:, None] * stride_wh, mask=k_ok[:, None], other=0.0)
                if UPCAST:
                    acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc)
                elif IEEE:
                    acc = tl.dot(a, w, acc, input_precision="ieee")
                else:
                    acc = tl.dot(a, w, acc)
            z = acc
            if HAS_BIAS:
                z = z + tl.load(b_ptr + tl.minimum(cols, V - 1)).to(tl.float32)[None, :]
            z = tl.where(col_ok[None, :], z, float("-inf"))
            m_new = tl.maximum(m, tl.max(z, 1))
            # z - m is exact near the max; the tail's -inf is clamped so that p * t = 0 * finite there.
            t = tl.maximum((z - m_new[:, None]) * _LOG2E, -3.0e38)
            pexp = tl.exp2(t)
            delta = tl.where(d > 0, (m - m_new) * _LOG2E, 0.0)
            alpha = tl.exp2(delta)
            s = alpha * (s + d * delta) + tl.sum(pexp * t, 1)
            d = alpha * d + tl.sum(pexp, 1)
            zy += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), 1)
            m = m_new
        off = rows.to(tl.int64) * splits + pid_s
        tl.store(part_ptr + off, m, mask=row_ok)
        tl.store(part_ptr + part_stride + off, d, mask=row_ok)
        tl.store(part_ptr + 2 * part_stride + off, s, mask=row_ok)
        tl.store(part_ptr + 3 * part_stride + off, zy, mask=row_ok)


_stats_kernel = LazyKernel(_stats_kernel_fn, configs=None)
_stats_kernel_tuned = LazyKernel(
    _stats_kernel_fn, configs=triton_configs(HOPPER_CONFIGS), key=["H", "V", "n_bucket"]
)


@lazy_jit
def _finalize_kernel(part_ptr, splits_ptr, tgt_ptr, offs_ptr, out_ptr, row_loss_ptr, row_ent_ptr,
                     part_stride, ignore_index,
                     ENTROPY: tl.constexpr, STORE_ROWS: tl.constexpr, BLOCK_R: tl.constexpr):
    seg = tl.program_id(0)
    start = tl.load(offs_ptr + seg).to(tl.int32)
    end = tl.load(offs_ptr + seg + 1).to(tl.int32)
    splits = tl.load(splits_ptr)
    tot = tl.zeros([BLOCK_R], dtype=tl.float32)
    cnt = tl.zeros([BLOCK_R], dtype=tl.int32)
    for r0 in range(start, end, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        ok = r < end
        base = r.to(tl.int64) * splits
        mx = tl.full([BLOCK_R], float("-inf"), tl.float32)
        for j in range(0, splits):
            mx = tl.maximum(mx, tl.load(part_ptr + base + j, mask=ok, other=0.0))
        dd = tl.zeros([BLOCK_R], dtype=tl.float32)
        ss = tl.zeros([BLOCK_R], dtype=tl.float32)
        zy = tl.zeros([BLOCK_R], dtype=tl.float32)
        for j in range(0, splits):
            mj = tl.load(part_ptr + base + j, mask=ok, other=0.0)
            dj = tl.load(part_ptr + part_stride + base + j, mask=ok, other=1.0)
            sj = tl.load(part_ptr + 2 * part_stride + base + j, mask=ok, other=0.0)
            zy += tl.load(part_ptr + 3 * part_stride + base + j, mask=ok, other=0.0)
            delta = (mj - mx) * _LOG2E
            wj = tl.exp2(delta)
            dd += dj * wj
            ss += wj * (sj + dj * delta)
        logd = tl.log(dd)
        tgt = tl.load(tgt_ptr + r, mask=ok, other=ignore_index)
        valid = ok & (tgt != ignore_index)
        loss = tl.where(valid, logd + mx - zy, 0.0)
        ent = logd - _LN2 * ss / dd
        if STORE_ROWS:
            tl.store(row_loss_ptr + r, loss, mask=ok)
            tl.store(row_ent_ptr + r, ent, mask=ok)
        if ENTROPY:
            val = ent
        else:
            val = loss
        tot += tl.where(valid, val, 0.0)
        cnt += valid.to(tl.int32)
    total = tl.sum(tot, 0)
    n = tl.sum(cnt, 0)
    res = tl.where(n > 0, total / tl.maximum(n, 1).to(tl.float32), float("-inf"))
    tl.store(out_ptr + seg, res)


# --------------------------------------------------------------------------------------------- launchers


def _prep_weights(
    dtype: torch.dtype, weight: torch.Tensor, bias: torch.Tensor | None, hidden_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"hidden must be fp32, fp16 or bf16, got {dtype}")
    if weight.dim() != 2 or weight.shape[1] != hidden_size:
        raise ValueError(f"weight must be [V, {hidden_size}], got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    # Same input quantization as the torch backend: decoder weight and bias in the hidden dtype.
    return weight.to(dtype), (None if bias is None else bias.to(dtype))


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _target_programs(device: torch.device) -> int:
    if interpreting() or device.type != "cuda":
        return INTERPRET_PROGRAMS
    index = device.index if device.index is not None else torch.cuda.current_device()
    return PROGRAMS_PER_SM * _sm_count(index)


def _launch_stats(
    x: torch.Tensor, strides: tuple[int, int, int], S: int, w: torch.Tensor, b: torch.Tensor | None,
    idx: torch.Tensor | None, tgt: torch.Tensor, count: torch.Tensor, n_max: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run the split-vocab statistics kernel over at most ``n_max`` rows (device count in ``count``)."""
    dev = x.device
    V, H = w.shape
    interp = interpreting()
    target = _target_programs(dev)
    fixed = FP32_CONFIG if x.dtype == torch.float32 else DEFAULT_CONFIG
    tuned = not interp and autotune_enabled() and x.dtype != torch.float32
    if interp:
        bn_max = INTERPRET_CONFIG["BLOCK_N"]
    else:
        bn_max = max(c[0] for c in HOPPER_CONFIGS) if tuned else fixed[0]
    n_pad = triton.cdiv(max(n_max, 1), bn_max) * bn_max
    # When a row block is split, (row blocks x splits) <= 2 * target, so the partials stay O(N).
    part_stride = max(n_pad, 2 * target * bn_max)
    part = torch.empty((4, part_stride), dtype=torch.float32, device=dev)
    splits = torch.empty((1,), dtype=torch.int32, device=dev)
    args = dict(
        S=S, stride_xb=strides[0], stride_xs=strides[1], stride_xh=strides[2],
        stride_wv=w.stride(0), stride_wh=w.stride(1), V=V, H=H, part_stride=part_stride,
        target_programs=target, n_bucket=triton.next_power_of_2(max(n_max, 1)),
        HAS_BIAS=b is not None, GATHER=idx is not None, UPCAST=interp,
        IEEE=x.dtype == torch.float32, MAX_SPLITS=MAX_SPLITS,
    )
    ptrs = (x, w, b if b is not None else w, idx if idx is not None else tgt, tgt, count, part, splits)
    if interp:
        bk = min(128, max(16, triton.next_power_of_2(H)))
        grid = (min(target, triton.cdiv(max(n_max, 1), INTERPRET_CONFIG["BLOCK_N"]) * MAX_SPLITS),)
        _stats_kernel.get()[grid](*ptrs, **args, **INTERPRET_CONFIG, BLOCK_K=bk)
    elif not tuned:
        bn, bv, bk, nw, ns = fixed
        grid = (min(target, triton.cdiv(max(n_max, 1), bn) * MAX_SPLITS),)
        _stats_kernel.get()[grid](*ptrs, **args, BLOCK_N=bn, BLOCK_V=bv, BLOCK_K=bk, num_warps=nw, num_stages=ns)
    else:

        def grid(meta: dict[str, Any]) -> tuple[int]:
            return (min(target, triton.cdiv(max(n_max, 1), meta["BLOCK_N"]) * MAX_SPLITS),)

        _stats_kernel_tuned.get()[grid](*ptrs, **args)
    return part, splits, part_stride


def _launch_finalize(
    part: torch.Tensor, splits: torch.Tensor, part_stride: int, tgt: torch.Tensor, offs: torch.Tensor,
    num_segments: int, entropy: bool, ignore_index: int, row_out: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    out = torch.empty((num_segments,), dtype=torch.float32, device=part.device)
    rl, re = row_out if row_out is not None else (out, out)
    _finalize_kernel.get()[(num_segments,)](
        part, splits, tgt, offs, out, rl, re, part_stride, ignore_index,
        ENTROPY=entropy, STORE_ROWS=row_out is not None, BLOCK_R=FINAL_BLOCK,
    )
    return out


def exit_scorer(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    criterion: str,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Per-sequence mean loss/entropy over masked positions, fp32 ``[B]`` (``-inf`` if none is masked).

    ``hidden [B, S, H]`` (fp32/fp16/bf16, any strides), ``weight [V, H]``, ``bias [V]`` or None,
    ``labels [B, S]`` with ``ignore_index`` at unscored positions. The masked rows are found on device
    (no host sync). Forward only.
    """
    entropy = _criterion_flag(criterion)
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(f"expected hidden [B, S, H] and labels [B, S], got {tuple(hidden.shape)} / "
                         f"{tuple(labels.shape)}")
    check_forward_only("exit_scorer", hidden, weight, bias)
    _check_device(hidden, weight, bias, labels)
    B, S, H = hidden.shape
    w, b = _prep_weights(hidden.dtype, weight, bias, H)
    dev = hidden.device
    total = B * S
    if total == 0:
        return torch.full((B,), float("-inf"), dtype=torch.float32, device=dev)
    with torch.no_grad():
        idx, tgt, offs, count = compact_masked_rows(labels, ignore_index)
        part, splits, pstride = _launch_stats(
            hidden, (hidden.stride(0), hidden.stride(1), hidden.stride(2)), S, w, b, idx, tgt, count, total
        )
        return _launch_finalize(part, splits, pstride, tgt, offs, B, entropy, ignore_index, None)


def _check_rows(rows: torch.Tensor, targets: torch.Tensor) -> None:
    if rows.dim() != 2 or targets.shape != (rows.shape[0],):
        raise ValueError(
            f"expected rows [N, H] and targets [N], got {tuple(rows.shape)} / {tuple(targets.shape)}"
        )
    if rows.shape[0] >= 2**31:
        raise ValueError("too many rows for the int32 row index")


def exit_scorer_rows(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    seq_ids: torch.Tensor,
    num_seqs: int,
    criterion: str,
    ignore_index: int = -100,
    *,
    seq_ids_sorted: bool = False,
) -> torch.Tensor:
    """Per-sequence mean score over gathered rows ``[N, H]``, fp32 ``[num_seqs]``.

    ``targets [N]`` (``ignore_index`` rows are skipped), ``seq_ids [N]`` in ``[0, num_seqs)`` (others are
    dropped); ``-inf`` for a sequence without a scored row. ``seq_ids`` may be in any order: a stable
    device sort groups them; pass ``seq_ids_sorted=True`` when they are known to be non-decreasing to skip
    it (the result is undefined otherwise). Forward only.
    """
    entropy = _criterion_flag(criterion)
    _check_rows(rows, targets)
    if seq_ids.shape != targets.shape:
        raise ValueError(f"seq_ids must be [N], got {tuple(seq_ids.shape)}")
    check_forward_only("exit_scorer", rows, weight, bias)
    _check_device(rows, weight, bias, targets, seq_ids)
    n, H = rows.shape
    w, b = _prep_weights(rows.dtype, weight, bias, H)
    dev = rows.device
    if n == 0 or num_seqs == 0:
        return torch.full((num_seqs,), float("-inf"), dtype=torch.float32, device=dev)
    with torch.no_grad():
        if seq_ids_sorted:
            sorted_ids, perm, tgt = seq_ids, None, targets
        else:
            sorted_ids, perm = torch.sort(seq_ids, stable=True)
            tgt = targets.index_select(0, perm)
        bounds = torch.arange(num_seqs + 1, device=dev, dtype=sorted_ids.dtype)
        offs = torch.searchsorted(sorted_ids.contiguous(), bounds).to(torch.int32)
        count = torch.full((1,), n, dtype=torch.int32, device=dev)
        tgt = tgt.contiguous()
        part, splits, pstride = _launch_stats(
            rows, (rows.stride(0), 0, rows.stride(1)), 1, w, b, perm, tgt, count, n
        )
        return _launch_finalize(part, splits, pstride, tgt, offs, num_seqs, entropy, ignore_index, None)


def exit_token_stats(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (cross-entropy, entropy), fp32 ``[N]`` each: the fused kernel's first stage.

    Rows whose target is ``ignore_index`` get loss 0 (their entropy is still computed). Forward only.
    """
    _check_rows(rows, targets)
    check_forward_only("exit_scorer", rows, weight, bias)
    _check_device(rows, weight, bias, targets)
    n, H = rows.shape
    w, b = _prep_weights(rows.dtype, weight, bias, H)
    dev = rows.device
    loss = torch.zeros((n,), dtype=torch.float32, device=dev)
    ent = torch.zeros((n,), dtype=torch.float32, device=dev)
    if n == 0:
        return loss, ent
    with torch.no_grad():
        tgt = targets.contiguous()
        count = torch.full((1,), n, dtype=torch.int32, device=dev)
        part, splits, pstride = _launch_stats(rows, (rows.stride(0), 0, rows.stride(1)), 1, w, b, None, tgt,
                                              count, n)
        nseg = triton.cdiv(n, STATS_SEGMENT)
        offs = torch.arange(nseg + 1, device=dev, dtype=torch.int32).mul_(STATS_SEGMENT).clamp_(max=n)
        _launch_finalize(part, splits, pstride, tgt, offs, nseg, False, ignore_index, (loss, ent))
    return loss, ent
