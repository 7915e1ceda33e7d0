"""Data path at scale: memory vs corpus size, batch-build cost, index builds, selection bytes.

Sections (all on this host's CPU, one torch thread, CPU time from ``time.process_time``):

* ``scale``: synthetic uint16 ``.bin``/``.idx`` corpora (random ids, documents of 200-3800 tokens)
  of 10 M, 100 M (and with ``--big`` 1 B) tokens under ``--tmp``, deleted afterwards. Per corpus a
  fresh process opens it (``build_corpus``: vocabulary check, split, sample index; cold, then warm
  with the index cached), builds its first batch and then 100 candidate batches (C = 128, S = 128);
  it reports RSS (anonymous = heap, file = mapped pages of the page cache) after start-up and after
  the 100 batches, and the CPU time to the first batch.
* ``batch``: CPU time to build one candidate batch (C = 128, S = 128: rows + masking + index
  tensors) from the lazy rows and from an in-memory ``[N, S]`` array of the same rows, side by side;
  the ceiling in samples/s per host core = C / time.
* ``index``: the sample index for 25 M samples (C++ ``sift_fast._C`` vs numpy), the blend index
  (C++ for 25 M, the Python fallback on 1 M) and the epoch permutation over 25 M samples.
* ``bytes``: what a rank sends and receives per step for global selection, measured on 2 and 4 gloo
  ranks (``GlobalSelection.last_bytes`` and the gathered tensor), main's token message for
  comparison, modelled for W = 8 .. 4096, and the 64 x 8 GPU table against the gradient all-reduce.

``python bench/bench_data.py [--big] [--tmp /tmp/sift_bench_data]`` writes
``bench/results/data_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

C, S, STEPS = 128, 128, 100
BERT = {"bert-base": 110_000_000, "bert-large": 335_000_000}
LINK_GBPS, HOP_US = 25.0, 5.0  # as bench/bench_distributed.py:paper_estimate
SCALE_NOTE = """Anonymous RSS is the heap (~148 MiB of it the torch import); what grows with the corpus
is the epoch permutation (int32, 4 bytes a sample: 30 MiB at 1 B tokens); nothing grows over 100
batches. File RSS is mapped pages of the .bin/.idx and the sample index: page cache the kernel can
drop (a cold start reads the whole .bin once for the vocabulary range check; batches touch only what
they read). Cold = sample index built (first start), warm = cached. The in-memory packer would hold
N x S x 4 bytes in every rank."""
BATCH_NOTE = """Goal: ~5,000 seq/s per GPU (a BERT-base step on one H100). The lazy path's ceiling on one core of
this shared CPU is far above it; `--prefetch` builds the batches beside the device's work."""


def rss() -> dict[str, float]:
    """Resident set of this process in MiB: anonymous (heap) and file-backed (mapped page cache)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(val.split()[0]) / 1024
    return out


def make_corpus(prefix: Path, tokens: int, seed: int = 0) -> None:
    """A uint16 Megatron dataset of ``tokens`` random ids in [1000, 30000), written chunk by chunk."""
    from sift_fast.data.indexed import write_indexed

    rng = np.random.default_rng(seed)

    def docs():
        left = tokens
        while left:
            chunk = rng.integers(1000, 30000, size=min(left, 1 << 24), dtype=np.uint16)
            left -= len(chunk)
            cuts = np.cumsum(rng.integers(200, 3800, size=len(chunk) // 200 + 1))
            cuts = cuts[cuts < len(chunk)]
            yield from np.split(chunk, cuts)

    write_indexed(prefix, docs(), dtype=np.uint16)


def child(prefix: str, cache: str) -> None:
    """One rank's start-up on ``prefix``: corpus, first batch, 100 batches; prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    from sift_fast.data import BUNDLED_VOCAB, CandidateLoader, MLMMasker, build_corpus, load_tokenizer

    base = rss()
    t0 = time.process_time()
    vocab = load_tokenizer(str(BUNDLED_VOCAB))
    pc = build_corpus(prefix, vocab, S, valid_fraction=0.001, max_valid_sequences=256, cache_dir=cache)
    t_corpus = time.process_time() - t0
    loader = CandidateLoader(pc.train, C, MLMMasker(vocab.vocab_size, vocab.mask_id, vocab.special_ids), vocab.pad_id)
    loader.next_batch()
    t_first = time.process_time() - t0
    start = rss()
    for _ in range(STEPS):
        loader.next_batch()
    print(json.dumps({"samples": len(pc.train), "cpu_s_corpus": t_corpus, "cpu_s_first_batch": t_first,
                      "rss_import": base, "rss_start": start, "rss_after": rss(),
                      "in_memory_packed_MiB": len(pc.train) * S * 4 / 2**20}))


def scale(sizes: list[int], tmp: Path) -> list[dict]:
    rows = []
    for n in sizes:
        d = tmp / f"c{n}"
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.process_time()
        make_corpus(d / "corpus", n)
        gen = time.process_time() - t0
        row = {"tokens": n, "bin_MiB": (d / "corpus.bin").stat().st_size / 2**20, "cpu_s_generate": gen}
        for start in ("cold", "warm"):  # warm: the sample index is cached
            out = subprocess.run([sys.executable, __file__, "--child", str(d / "corpus"), str(d / "cache")],
                                 capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            row[start] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        shutil.rmtree(d)
        cold, warm = row["cold"], row["warm"]
        print(f"{n:>13,} tokens: {cold['samples']:,} samples, "
              f"anon RSS {warm['rss_start']['RssAnon']:.0f} -> {warm['rss_after']['RssAnon']:.0f} MiB, "
              f"first batch {cold['cpu_s_first_batch']:.2f} s cold / {warm['cpu_s_first_batch']:.2f} s warm")
    return rows


def batch(tmp: Path, reps: int = 30) -> dict:
    import torch

    torch.set_num_threads(1)
    from sift_fast.data import BUNDLED_VOCAB, CandidateLoader, MLMMasker, build_corpus, load_tokenizer

    d = tmp / "batch"
    make_corpus(d / "corpus", 10_000_000, seed=1)
    vocab = load_tokenizer(str(BUNDLED_VOCAB))
    pc = build_corpus(str(d / "corpus"), vocab, S, valid_fraction=0.001, cache_dir=d / "cache")
    masker = MLMMasker(vocab.vocab_size, vocab.mask_id, vocab.special_ids)
    arrays = np.asarray(pc.train)
    out = {}
    for name, train in (("lazy", pc.train), ("in_memory", arrays)):
        loader = CandidateLoader(train, C, masker, vocab.pad_id)
        loader.next_batch()
        ids = [loader.next_sample_ids() for _ in range(reps)]
        t0 = time.process_time()
        for i, e in ids:
            rows = train.rows(i, e) if hasattr(train, "rows") else train[i]
        t_rows = (time.process_time() - t0) / reps
        t0 = time.process_time()
        for i, e in ids:
            loader.build(i, e)
        t_batch = (time.process_time() - t0) / reps
        out[name] = {"ms_rows": 1e3 * t_rows, "ms_batch": 1e3 * t_batch, "samples_per_s": C / t_batch}
    assert np.array_equal(rows, arrays[ids[-1][0]])
    shutil.rmtree(d)
    return out


def index() -> dict:
    from sift_fast.data.blend import build_blend_index
    from sift_fast.data.loader import epoch_permutation
    from sift_fast.data.samples import HAVE_EXT, build_sample_index, num_samples

    n_target = 25_000_000
    rng = np.random.default_rng(0)
    lengths = rng.integers(200, 800, size=int(n_target * (S - 2) / 500) + 1)  # ~3.15 B tokens
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=starts[1:])
    n = num_samples(starts[-1], S)
    out = {"samples": n, "documents": len(lengths), "have_ext": HAVE_EXT}
    ways = (True, False) if HAVE_EXT else (False,)
    built = {}
    for ext in ways:
        t0 = time.process_time()
        built[ext] = build_sample_index(starts, S, n, use_ext=ext)
        out[f"sample_index_s_{'cpp' if ext else 'numpy'}"] = time.process_time() - t0
    if len(built) == 2:
        assert np.array_equal(built[True], built[False])
    out["sample_index_MiB"] = built[ways[0]].nbytes / 2**20
    del built
    w = np.array([0.3, 0.7])
    if HAVE_EXT:
        t0 = time.process_time()
        build_blend_index(w, n, use_ext=True)
        out["blend_index_s_cpp_25M"] = time.process_time() - t0
    t0 = time.process_time()
    build_blend_index(w, 1_000_000, use_ext=False)
    out["blend_index_s_python_1M"] = time.process_time() - t0
    t0 = time.process_time()
    perm = epoch_permutation(n, 0, 0)
    out["permutation_s"], out["permutation_MiB"] = time.process_time() - t0, perm.nbytes / 2**20
    return out


def _bytes_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from sift_fast.data import CandidateLoader, MLMMasker
    from sift_fast.distributed.selection import GlobalSelection
    from sift_fast.selection import Plan

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    train = np.random.default_rng(0).integers(5, 1000, size=(4 * world * C, S)).astype(np.int32)
    loader = CandidateLoader(train, C, MLMMasker(1000, 4, [0, 1, 2, 3, 4]), 0, rank=rank, world_size=world)
    sel = GlobalSelection(rank, world, torch.device("cpu"), 0, 0, step_fn=lambda: 0, build=loader.build)
    gathered = []
    real = sel._all_gather
    sel._all_gather = lambda t: gathered.append(real(t)) or gathered[-1]
    b = loader.next_batch()
    sel(Plan("score", C // 2), b, torch.rand(C))
    g = gathered[-1]
    Path(out, f"bytes{rank}.json").write_text(json.dumps({
        "sent": sel.last_bytes, "gathered": g.numel() * g.element_size(), "received_rows": sel.last_received}))
    dist.destroy_process_group()


def selection_bytes(tmp: Path) -> dict:
    import torch.multiprocessing as mp

    measured = {}
    for world in (2, 4):
        d = tmp / f"bytes{world}"
        d.mkdir(parents=True, exist_ok=True)
        mp.spawn(_bytes_worker, args=(world, f"file://{d}/rdzv", str(d)), nprocs=world, join=True)
        recs = [json.loads((d / f"bytes{r}.json").read_text()) for r in range(world)]
        measured[world] = {"sent_per_rank": recs[0]["sent"], "gathered_per_rank": recs[0]["gathered"],
                           "rebuilt_rows": [r["received_rows"] for r in recs],
                           "main_token_message_per_rank": C * (2 * S + 2) * 4}
        shutil.rmtree(d)
    per = measured[2]["sent_per_rank"] // C
    model = {}
    for w in (8, 16, 64, 256, 512, 1024, 4096):
        ring = (w - 1) / w
        grad = 2 * ring * BERT["bert-base"] * 4
        model[w] = {"scores_only_bytes": ring * w * C * per, "tokens_bytes_main": ring * w * C * (2 * S + 2) * 4,
                    "bert_base_grad_bytes": grad, "scores_only_over_grad": ring * w * C * per / grad}
    w = 512
    ring = (w - 1) / w
    table = {}
    for name, params in BERT.items():
        grad = 2 * ring * params * 4
        sel_new, sel_old = ring * w * C * per, ring * w * C * (2 * S + 2) * 4
        table[name] = {
            "grad_MiB": grad / 2**20, "selection_KiB": sel_new / 2**10, "selection_main_MiB": sel_old / 2**20,
            "ratio": sel_new / grad, "ratio_main": sel_old / grad,
            "grad_ms": 1e3 * (grad / (LINK_GBPS * 1e9) + 2 * (w - 1) * HOP_US * 1e-6),
            "selection_ms": 1e3 * (sel_new / (LINK_GBPS * 1e9) + (w - 1) * HOP_US * 1e-6),
        }
    return {"bytes_per_candidate": per, "measured": measured, "modelled": model, "table_64x8": table}


def write_md(res: dict, path: Path) -> None:
    lines = ["# Data path at scale (CPU host, one torch thread, process CPU time)", ""]
    if res.get("scale"):
        lines += ["## Memory vs corpus size (uint16 .bin/.idx, C = 128, S = 128; RSS in MiB)", "",
                  "| tokens | samples | in-memory packer would hold | anon RSS start / after 100 batches | "
                  "file RSS after | CPU s to first batch cold / warm |", "|---|---|---|---|---|---|"]
        for r in res["scale"]:
            w, c = r["warm"], r["cold"]
            lines.append(f"| {r['tokens']:,} | {c['samples']:,} | {c['in_memory_packed_MiB']:,.0f} MiB | "
                         f"{w['rss_start']['RssAnon']:.0f} / {w['rss_after']['RssAnon']:.0f} | "
                         f"{w['rss_after']['RssFile']:.0f} | "
                         f"{c['cpu_s_first_batch']:.2f} / {w['cpu_s_first_batch']:.2f} |")
        lines += ["", SCALE_NOTE, ""]
    if res.get("batch"):
        lines += ["## One candidate batch (C = 128, S = 128), side by side", "",
                  "| rows from | rows ms | batch ms (rows + masking + indices) | ceiling samples/s per core |",
                  "|---|---|---|---|"]
        for k, v in res["batch"].items():
            lines.append(f"| {k} | {v['ms_rows']:.2f} | {v['ms_batch']:.2f} | {v['samples_per_s']:,.0f} |")
        lines += ["", BATCH_NOTE, ""]
    if res.get("index"):
        i = res["index"]
        lines += [f"## Index builds ({i['samples']:,} samples, {i['documents']:,} documents)", "",
                  "| what | CPU s |", "|---|---|"]
        for k in ("sample_index_s_cpp", "sample_index_s_numpy", "blend_index_s_cpp_25M", "blend_index_s_python_1M",
                  "permutation_s"):
            if k in i:
                lines.append(f"| {k} | {i[k]:.2f} |")
        lines += ["", f"Sample index {i['sample_index_MiB']:.0f} MiB (int64 [N+1, 2], memory-mapped when cached); "
                  f"epoch permutation {i['permutation_MiB']:.0f} MiB (int32).", ""]
    if res.get("bytes"):
        b = res["bytes"]
        lines += ["## Global selection: bytes per rank per step (C = 128, S = 128)", "",
                  "| W | sent | gathered (received) | main's token message sent | source |", "|---|---|---|---|---|"]
        for w, m in b["measured"].items():
            lines.append(f"| {w} | {m['sent_per_rank']:,} B | {m['gathered_per_rank']:,} B | "
                         f"{m['main_token_message_per_rank']:,} B | measured (gloo) |")
        for w, m in b["modelled"].items():
            lines.append(f"| {w} | {C * b['bytes_per_candidate']:,} B | "
                         f"{m['scores_only_bytes'] / 2**10:,.0f} KiB ring | "
                         f"{m['tokens_bytes_main'] / 2**20:,.1f} MiB ring | "
                         f"model: {100 * m['scores_only_over_grad']:.3f}% of BERT-base grad |")
        lines += ["", "### 64 x 8 GPUs (W = 512), fp32 gradient ring all-reduce, 25 GB/s, 5 us per hop", "",
                  "| model | gradient / GPU / step | selection (ids + scores) | ratio | main's token message | "
                  "main's ratio | est. gradient | est. selection |", "|---|---|---|---|---|---|---|---|"]
        for k, t in b["table_64x8"].items():
            lines.append(f"| {k} | {t['grad_MiB']:,.0f} MiB | {t['selection_KiB']:,.0f} KiB | "
                         f"{100 * t['ratio']:.3f}% | {t['selection_main_MiB']:.1f} MiB | "
                         f"{100 * t['ratio_main']:.1f}% | {t['grad_ms']:.0f} ms | "
                         f"{t['selection_ms']:.1f} ms |")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also the 1 B-token corpus (2 GiB on --tmp)")
    ap.add_argument("--tmp", default="/tmp/sift_bench_data")
    ap.add_argument("--only", nargs="*", default=["scale", "batch", "index", "bytes"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    tmp = Path(args.tmp)
    path = Path(args.out) / "data_scale.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    sizes = [10_000_000, 100_000_000] + ([1_000_000_000] if args.big else [])
    steps = {"scale": lambda: scale(sizes, tmp), "batch": lambda: batch(tmp), "index": index,
             "bytes": lambda: selection_bytes(tmp)}
    for name in args.only:
        res[name] = steps[name]()
        print(name, json.dumps(res[name], indent=1)[:1500])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1))  # after every section: a partial run keeps what it measured
        write_md(res, path.with_suffix(".md"))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
