#!/usr/bin/env python3
"""Benchmark of the fused Triton exit scorer (GPU), or its interpreter correctness check (CPU).

GPU: N masked rows in {1024, 4096, 16384, 65536} x H in {768, 1024}, V = 30522, bf16. One harness, one run:
median of many repetitions timed with CUDA events over rotating inputs (several copies of rows and weight,
more than L2 together). Methods: this kernel (rows API with sorted sequence ids; rows API with the stable
sort of unsorted ids; the ``[B, S, H]`` API that finds the masked rows itself), PyTorch eager (materialized
logits, log_softmax, entropy, per-sequence means), ``torch.compile`` of the same, Liger-Kernel's fused linear
cross entropy forward (reduction none) and cut-cross-entropy's forward where installed (loss only: they do
not give entropy), and a bf16 matmul of the same size (the rate the kernel is measured against). Also:
top-k selection (Triton single program vs ``torch.topk`` vs stable sort) and the head transform's cost
(dense + GELU + LayerNorm), which decides whether fusing it would pay.

CPU: runs the kernels through the Triton interpreter on small shapes and reports accuracy against an fp64
brute force next to the torch backend's; GPU numbers are still to be measured.

Writes ``<out>/exit_scorer_<card>.json`` and ``.md`` (``<card>`` e.g. ``h100``; ``cpu-interpreter`` on CPU).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
from sift_fast.kernels.exit_scorer import (  # noqa: E402
    DEFAULT_CONFIG,
    _stats_kernel_tuned,
    exit_scorer,
    exit_scorer_rows,
    interpreting,
)
from sift_fast.kernels.topk import topk_indices, topk_torch  # noqa: E402

from sift_fast import ops  # noqa: E402
from sift_fast.io import atomic_write_text  # noqa: E402
from sift_fast.reference import segment_mean, token_stats  # noqa: E402

IGN = -100
V_BERT = 30522
MASKED_PER_SEQ = 77  # 15% of 512 positions


# ------------------------------------------------------------------------------------------------ utils


def card_slug(name: str) -> str:
    m = re.search(r"(gh200|h200|h100|h800|h20|b200|b100|a100|a800|a10g|l40s|l40|l4|v100|t4|rtx\s*\d{4})",
                  name.lower())
    return re.sub(r"[^a-z0-9]+", "", m.group(1)) if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def pkg_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "not installed"


def ref64_rows(rows, weight, bias, tgt, sid, nseq, criterion, chunk=512):
    """fp64 brute force on the (hidden-dtype) inputs: ``sift_fast.reference`` at fp64, chunk by chunk."""
    loss, ent = token_stats(rows, weight, bias, tgt, chunk_rows=chunk, ignore_index=IGN, compute_dtype=torch.float64)
    return segment_mean(loss if criterion == "loss" else ent, sid, tgt != IGN, nseq)


def max_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    if not torch.equal(torch.isneginf(out), torch.isneginf(ref)):
        return float("inf")
    fin = torch.isfinite(ref)
    return (out[fin] - ref[fin]).abs().max().item() if fin.any() else 0.0


# ------------------------------------------------------------------------------------------------ CPU


def cpu_report(args: argparse.Namespace) -> dict[str, Any]:
    """Interpreter correctness on small shapes: kernel vs torch backend error against fp64."""
    cases = [  # name, B, S, H, V, masked fraction, logit scale
        ("basic V=1000 H=96 S=37", 5, 37, 96, 1000, 0.3, 1.0),
        ("BERT vocab tail V=30522", 3, 9, 40, V_BERT, 0.5, 1.0),
        ("all masked, 259 rows", 7, 37, 64, 1000, 1.0, 1.0),
        ("large logits (max abs z > 2e3)", 3, 11, 64, 800, 0.6, 30.0),
    ]
    if args.quick:
        cases = cases[:2]
    rows_out = []
    for name, B, S, H, V, frac, scale in cases:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            g = torch.Generator().manual_seed(0)
            hidden = (torch.randn(B, S, H, generator=g) * scale).to(dtype)
            weight = (torch.randn(V, H, generator=g) * 0.15 * scale).to(dtype)
            bias = torch.randn(V, generator=g) * 0.1
            labels = torch.randint(0, V, (B, S), generator=g)
            labels[torch.rand(B, S, generator=g) >= frac] = IGN
            if frac < 1.0 and B > 2:
                labels[2] = IGN
            flat = labels.reshape(-1)
            idx = (flat != IGN).nonzero().squeeze(1)
            rows = hidden.reshape(-1, H)[idx]
            for criterion in ("loss", "entropy"):
                t0 = time.perf_counter()
                out = exit_scorer(hidden, weight, bias, labels, criterion)
                wall = time.perf_counter() - t0
                again = exit_scorer(hidden, weight, bias, labels, criterion)
                base = ops.exit_scores(hidden, weight, bias, labels, criterion, backend="torch")
                ref = ref64_rows(rows, weight, bias, flat[idx], idx // S, B, criterion)
                ek, et = max_err(out, ref), max_err(base, ref)
                rows_out.append({
                    "case": name, "dtype": str(dtype).replace("torch.", ""), "criterion": criterion,
                    "N": int(idx.numel()), "H": H, "V": V, "kernel_err": ek, "torch_err": et,
                    "within_2x_torch_plus_atol": ek <= 2 * et + 2e-6 * (1 + ref.nan_to_num(0, 0, 0).abs().max().item()),
                    "bitwise_deterministic": bool(torch.equal(out, again)), "interpreter_s": round(wall, 3),
                })
                print(f"{name:28s} {dtype!s:15s} {criterion:8s} kernel {ek:.2e}  torch {et:.2e}  {wall:.2f}s",
                      flush=True)
    topk = []
    for n in (1, 100, 300, 5000):
        g = torch.Generator().manual_seed(n)
        s = torch.randint(-4, 5, (n,), generator=g).float()
        s[::7] = float("nan")
        vals = [float("-inf") if v != v else v for v in s.tolist()]
        for k in sorted({1, max(1, n // 3), n}):
            expect = sorted(range(n), key=lambda i: (-vals[i], i))[:k]
            topk.append({"B": n, "k": k, "equal_to_python_sort": topk_indices(s, k).tolist() == expect})
    return {"exit_scorer": rows_out, "topk": topk}


def cpu_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Exit scorer — CPU interpreter run (correctness only)",
        "",
        f"{res['meta']['date']}, torch {res['meta']['torch']}, triton {res['meta']['triton']}, "
        "`TRITON_INTERPRET=1`.",
        "",
        "**GPU numbers are still to be measured** (no GPU was lent to this session): run "
        "`bash bench/gpu_suite.sh` in one device call; it writes `exit_scorer_<card>.json/.md`.",
        "",
        "Max abs error of per-sequence scores vs an fp64 brute force (full float64 logits from the same "
        "hidden-dtype inputs). `torch` = `sift_fast.ops.exit_scores(backend='torch')` in the same dtype "
        "(bf16/fp16 logits are rounded to the input dtype by the matmul; the kernel keeps them in fp32).",
        "",
        "| case | dtype | criterion | N | kernel err | torch err | ≤ 2×torch+atol | bitwise det. | interp. s |",
        "|---|---|---|---:|---:|---:|:-:|:-:|---:|",
    ]
    for r in res["exit_scorer"]:
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['criterion']} | {r['N']} | {r['kernel_err']:.2e} | "
            f"{r['torch_err']:.2e} | {'yes' if r['within_2x_torch_plus_atol'] else 'NO'} | "
            f"{'yes' if r['bitwise_deterministic'] else 'NO'} | {r['interpreter_s']} |"
        )
    ok = all(t["equal_to_python_sort"] for t in res["topk"])
    lines += ["", f"top-k vs Python sort (ties to the lower index, NaN as -inf), B ∈ {{1, 100, 300, 5000}}, "
              f"k ∈ {{1, B/3, B}}: {'all equal' if ok else 'MISMATCH'}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ GPU


class Timer:
    """Median of per-call CUDA-event times over rotating inputs."""

    def __init__(self, min_reps: int, max_reps: int, target_s: float):
        self.min_reps, self.max_reps, self.target_s = min_reps, max_reps, target_s

    def __call__(self, fn: Callable[[Any], Any], inputs: list[Any]) -> float:
        for x in inputs:  # warm-up (compiles, autotunes)
            fn(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(inputs[0])
        torch.cuda.synchronize()
        est = max(time.perf_counter() - t0, 1e-6)
        reps = int(min(self.max_reps, max(self.min_reps, self.target_s / est)))
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for i, (a, b) in enumerate(ev):
            x = inputs[i % len(inputs)]
            a.record()
            fn(x)
            b.record()
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) for a, b in ev)


def peak_extra_mb(fn: Callable[[Any], Any], x: Any) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn(x)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def eager_scores(rows, w, b, tgt, sid, nseq: int):
    """PyTorch eager: materialize logits, log_softmax, entropy + loss, per-sequence means."""
    logits = torch.nn.functional.linear(rows, w, b).float()
    logp = torch.log_softmax(logits, -1)
    ent = -(logp.exp() * logp).sum(-1)
    loss = -logp.gather(1, tgt.clamp(min=0).unsqueeze(1)).squeeze(1)
    valid = (tgt != IGN).float()
    cnt = torch.zeros(nseq, device=rows.device).index_add_(0, sid, valid)
    means = [torch.zeros(nseq, device=rows.device).index_add_(0, sid, v * valid) / cnt.clamp(min=1)
             for v in (loss, ent)]
    return tuple(torch.where(cnt > 0, m, float("-inf")) for m in means)


def make_inputs(n: int, h: int, v: int, copies: int, dev: torch.device, seed: int = 0):
    g = torch.Generator(device=dev).manual_seed(seed)
    nseq = math.ceil(n / MASKED_PER_SEQ)
    sets = []
    for _ in range(copies):
        rows = torch.randn(n, h, device=dev, generator=g, dtype=torch.bfloat16)
        w = (torch.randn(v, h, device=dev, generator=g) * h**-0.5 * 2).to(torch.bfloat16)
        b = (torch.randn(v, device=dev, generator=g) * 0.1).to(torch.bfloat16)
        tgt = torch.randint(0, v, (n,), device=dev, generator=g)
        sid = torch.arange(n, device=dev) // MASKED_PER_SEQ
        sets.append({"rows": rows, "w": w, "b": b, "tgt": tgt, "sid": sid, "nseq": nseq})
    return sets


def bsh_inputs(sets: list[dict[str, Any]], seq: int = 512) -> list[dict[str, Any]]:
    """Scatter each set's rows into a [B, 512, H] hidden with 77 masked positions per sequence."""
    out = []
    for s in sets:
        n, h = s["rows"].shape
        B = s["nseq"]
        hidden = torch.randn(B, seq, h, device=s["rows"].device, dtype=torch.bfloat16)
        labels = torch.full((B, seq), IGN, device=hidden.device, dtype=torch.long)
        pos = (torch.arange(n, device=hidden.device) % MASKED_PER_SEQ) * (seq // MASKED_PER_SEQ)
        hidden[s["sid"], pos] = s["rows"]
        labels[s["sid"], pos] = s["tgt"]
        out.append({**s, "hidden": hidden, "labels": labels})
    return out


def gpu_report(args: argparse.Namespace) -> dict[str, Any]:
    dev = torch.device(args.device)
    timer = Timer(args.min_reps, args.max_reps, args.target_s)
    ns = [4096, 16384] if args.quick else [1024, 4096, 16384, 65536]
    hs = [768] if args.quick else [768, 1024]
    ns = [int(v) for v in args.ns.split(",")] if args.ns else ns
    hs = [int(v) for v in args.hs.split(",")] if args.hs else hs
    vocab = args.vocab
    import torch._dynamo as dynamo

    for knob in ("recompile_limit", "cache_size_limit"):  # one static compile per shape: 8+ shapes
        if hasattr(dynamo.config, knob):
            setattr(dynamo.config, knob, 64)
    compiled = torch.compile(eager_scores, dynamic=False)
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy as liger_flce
    except Exception:
        liger_flce = None
    try:
        from cut_cross_entropy import linear_cross_entropy as cce
    except Exception:
        cce = None

    def liger_fn(x):
        return liger_flce(x["rows"], x["w"], x["tgt"], bias=x["b"], ignore_index=IGN, reduction="none")

    def cce_fn(x):
        try:
            return cce(x["rows"], x["w"], x["tgt"], bias=x["b"], ignore_index=IGN, reduction="none")
        except TypeError:  # versions without bias
            return cce(x["rows"], x["w"], x["tgt"], ignore_index=IGN, reduction="none")

    def tuned_fn(x):
        os.environ["SIFT_EXIT_AUTOTUNE"] = "1"
        try:
            return exit_scorer_rows(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"], "entropy",
                                    seq_ids_sorted=True)
        finally:
            os.environ.pop("SIFT_EXIT_AUTOTUNE", None)

    methods: dict[str, Callable[[Any], Any] | None] = {
        "triton_rows_sorted": lambda x: exit_scorer_rows(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"],
                                                         "entropy", seq_ids_sorted=True),
        "triton_rows_sort": lambda x: exit_scorer_rows(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"],
                                                       "entropy"),
        "triton_rows_autotuned": tuned_fn,
        "triton_bsh": lambda x: exit_scorer(x["hidden"], x["w"], x["b"], x["labels"], "entropy"),
        "eager": lambda x: eager_scores(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"]),
        "compile": lambda x: compiled(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"]),
        "liger_flce_loss_only": liger_fn if liger_flce is not None else None,
        "cce_loss_only": cce_fn if cce is not None else None,
        "matmul_bf16": lambda x: torch.mm(x["rows"], x["w"].t()),
    }
    results = []
    for h in hs:
        for n in ns:
            sets = bsh_inputs(make_inputs(n, h, vocab, args.copies, dev))
            flops = 2.0 * n * h * vocab
            row: dict[str, Any] = {"N": n, "H": h, "V": vocab, "gflop": flops / 1e9, "methods": {}}
            for name, fn in methods.items():
                if fn is None:
                    row["methods"][name] = {"status": "not installed"}
                    continue
                try:
                    with torch.no_grad():
                        ms = timer(fn, sets)
                        mem = peak_extra_mb(fn, sets[0])
                    row["methods"][name] = {"status": "ok", "ms": ms, "tflops": flops / ms / 1e9, "peak_extra_mb": mem}
                except torch.cuda.OutOfMemoryError:
                    row["methods"][name] = {"status": "OOM"}
                except Exception as e:  # a competitor failing must not sink the run
                    row["methods"][name] = {"status": f"failed: {type(e).__name__}: {str(e)[:160]}"}
                torch.cuda.empty_cache()
            mm = row["methods"]["matmul_bf16"].get("ms")
            for r in row["methods"].values():
                if r.get("status") == "ok" and mm:
                    r["pct_of_matmul"] = 100.0 * mm / r["ms"]
            k = row["methods"]["triton_rows_sorted"]
            if k.get("status") == "ok":
                for other in ("eager", "compile", "liger_flce_loss_only", "cce_loss_only"):
                    o = row["methods"][other]
                    if o.get("status") == "ok":
                        k[f"speedup_vs_{other}"] = o["ms"] / k["ms"]
                k["extra_bytes_per_row"] = k["peak_extra_mb"] * 2**20 / n
            # head transform (dense HxH + GELU + LayerNorm) on the same rows: what fusing it could save
            dense = torch.nn.Linear(h, h, device=dev, dtype=torch.bfloat16)
            ln = torch.nn.LayerNorm(h, device=dev, dtype=torch.bfloat16)
            with torch.no_grad():
                ht = timer(lambda x, ln=ln, dense=dense: ln(torch.nn.functional.gelu(dense(x["rows"]))), sets)
            row["head_transform_ms"] = ht
            tuner = _stats_kernel_tuned.get()
            row["autotuned_config"] = str(getattr(tuner, "best_config", None))
            # accuracy vs fp64 (small N only: fp64 logits are chunked but slow)
            if n <= 4096:
                x = sets[0]
                with torch.no_grad():
                    for crit in ("loss", "entropy"):
                        ref = ref64_rows(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"], crit)
                        kern = exit_scorer_rows(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"], crit)
                        bsh = exit_scorer(x["hidden"], x["w"], x["b"], x["labels"], crit)
                        base = ops.exit_scores_rows(x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"], crit,
                                                    backend="torch")
                        row[f"err_{crit}"] = {"kernel_rows": max_err(kern, ref), "kernel_bsh": max_err(bsh, ref),
                                              "torch": max_err(base, ref),
                                              "bitwise_deterministic": bool(torch.equal(kern, exit_scorer_rows(
                                                  x["rows"], x["w"], x["b"], x["tgt"], x["sid"], x["nseq"], crit)))}
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "methods"}), flush=True)
            for name, r in row["methods"].items():
                print(f"  {name:22s} {r}", flush=True)
            del sets
            torch.cuda.empty_cache()
    topk = []
    for bsz in (256, 1024, 4096):
        xs = [torch.randn(bsz, device=dev) for _ in range(4)]
        k = bsz // 4
        entry = {"B": bsz, "k": k}
        entry["triton_ms"] = timer(lambda s, k=k: topk_indices(s, k), xs)
        entry["torch_topk_packed_ms"] = timer(lambda s, k=k: topk_torch(s, k), xs)
        entry["torch_topk_plain_ms"] = timer(lambda s, k=k: torch.topk(s, k), xs)
        entry["stable_sort_ms"] = timer(lambda s, k=k: ops.select_topk(s, k), xs)
        entry["equal"] = all(torch.equal(topk_indices(s, k), ops.select_topk(s, k)) for s in xs)
        topk.append(entry)
        print(entry, flush=True)
    return {"exit_scorer": results, "topk": topk}


def _fmt(r: dict[str, Any], key: str, spec: str) -> str:
    return format(r[key], spec) if r.get("status") == "ok" and key in r else r.get("status", "—")


def gpu_markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    lines = [
        f"# Exit scorer benchmark — {meta['device']}",
        "",
        f"{meta['date']}; torch {meta['torch']}, triton {meta['triton']}, liger-kernel {meta['liger_kernel']}, "
        f"cut-cross-entropy {meta['cut_cross_entropy']}. bf16, V = {meta['vocab']}, median of CUDA-event timings over "
        f"{meta['copies']} rotating input copies. TFLOP/s counts 2·N·H·V; % mm = bf16 `torch.mm` of the same "
        "size in the same run. Peak extra = max allocated above the inputs during one call. Kernel = rows API "
        f"with sorted sequence ids (`exit_scorer_rows(..., seq_ids_sorted=True)`), fixed config {DEFAULT_CONFIG} "
        "(BLOCK_N, BLOCK_V, BLOCK_K, warps, stages); `_autotuned` = SIFT_EXIT_AUTOTUNE=1 (winner in the JSON); "
        "`_sort` = unsorted-id path (stable device sort); `_bsh` = `[B, 512, H]` input, 77 masked per row. "
        "Liger / CCE give per-token "
        "loss only (no entropy): compared on loss, our kernel computes loss and entropy statistics either way.",
        "",
        "| N | H | method | ms | TFLOP/s | % mm | peak extra MiB |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in res["exit_scorer"]:
        for name, r in row["methods"].items():
            lines.append(f"| {row['N']} | {row['H']} | {name} | {_fmt(r, 'ms', '.3f')} | {_fmt(r, 'tflops', '.1f')} | "
                         f"{_fmt(r, 'pct_of_matmul', '.0f')} | {_fmt(r, 'peak_extra_mb', '.1f')} |")
    lines += ["", "## Goals", "",
              "| N | H | % of mm (≥65 at N≥8192) | × eager (≥3) | × compile (≥1.5) | × Liger | × CCE "
              "| extra B/row | head transform / kernel |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res["exit_scorer"]:
        k = row["methods"]["triton_rows_sorted"]
        if k.get("status") != "ok":
            lines.append(f"| {row['N']} | {row['H']} | {k.get('status')} | | | | | | |")
            continue

        def sp(name: str, k=k, row=row) -> str:
            v = k.get(f"speedup_vs_{name}")
            return f"{v:.2f}" if v is not None else row["methods"][name].get("status", "—")

        lines.append(f"| {row['N']} | {row['H']} | {k.get('pct_of_matmul', float('nan')):.0f} | {sp('eager')} | "
                     f"{sp('compile')} | {sp('liger_flce_loss_only')} | {sp('cce_loss_only')} | "
                     f"{k['extra_bytes_per_row']:.0f} | {100 * row['head_transform_ms'] / k['ms']:.1f}% |")
    acc = [r for r in res["exit_scorer"] if "err_loss" in r]
    if acc:
        lines += ["", "## Accuracy vs fp64 (max abs error of per-sequence scores)", "",
                  "| N | H | criterion | kernel (rows) | kernel ([B,S,H]) | torch backend | bitwise det. |",
                  "|---:|---:|---|---:|---:|---:|:-:|"]
        for r in acc:
            for crit in ("loss", "entropy"):
                e = r[f"err_{crit}"]
                lines.append(f"| {r['N']} | {r['H']} | {crit} | {e['kernel_rows']:.2e} | {e['kernel_bsh']:.2e} | "
                             f"{e['torch']:.2e} | {'yes' if e['bitwise_deterministic'] else 'NO'} |")
    lines += ["", "## Top-k (k = B/4)", "", "| B | triton 1-program ms | torch.topk packed keys ms | "
              "torch.topk (ties unspecified) ms | stable sort ms | equal |", "|---:|---:|---:|---:|---:|:-:|"]
    for t in res["topk"]:
        lines.append(f"| {t['B']} | {t['triton_ms']:.4f} | {t['torch_topk_packed_ms']:.4f} | "
                     f"{t['torch_topk_plain_ms']:.4f} | {t['stable_sort_ms']:.4f} | {t['equal']} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--out", default="bench/results", help="output folder")
    ap.add_argument("--copies", type=int, default=3, help="rotating input copies (GPU)")
    ap.add_argument("--min-reps", type=int, default=10)
    ap.add_argument("--max-reps", type=int, default=200)
    ap.add_argument("--target-s", type=float, default=0.3, help="timed seconds per method and shape (GPU)")
    ap.add_argument("--ns", default="", help="comma-separated N list (GPU; overrides the default grid)")
    ap.add_argument("--hs", default="", help="comma-separated H list (GPU)")
    ap.add_argument("--vocab", type=int, default=V_BERT, help="vocabulary size (GPU)")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and not interpreting()
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "liger_kernel": pkg_version("liger-kernel"), "cut_cross_entropy": pkg_version("cut-cross-entropy"),
        "quick": args.quick, "argv": sys.argv[1:],
    }
    if gpu:
        meta.update(device=torch.cuda.get_device_name(), copies=args.copies, mode="gpu", vocab=args.vocab)
        slug = card_slug(meta["device"])
        res = {"meta": meta, **gpu_report(args)}
        md = gpu_markdown(res)
    else:
        meta.update(device="cpu (Triton interpreter)", mode="cpu-interpreter",
                    note="correctness only; GPU numbers are still to be measured")
        slug = "cpu-interpreter"
        res = {"meta": meta, **cpu_report(args)}
        md = cpu_markdown(res)
    base = os.path.join(args.out, f"exit_scorer_{slug}")
    atomic_write_text(base + ".json", json.dumps(res, indent=1, default=float) + "\n")
    atomic_write_text(base + ".md", md)
    print(f"wrote {base}.json and {base}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
