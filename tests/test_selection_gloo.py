"""Scores-only global selection on real gloo process groups (2 and 4 ranks) against one process.

Each rank builds only its own C candidates from lazy samples, scores them with a tiny fixed model
(one row at a time, so a row's loss does not depend on its batch), and runs ``GlobalSelection``
(all-gather of (sample id, score) pairs). The reference is one process over the union (``W x C``
candidates), its kept set a brute-force sort by (-score, global index). Kept ids, the rows each
rank backprops and their losses must be bitwise the reference's; scores are quantized so ties occur.
"""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sift_fast.data import CandidateLoader, MLMMasker
from sift_fast.data.packing import concat_documents
from sift_fast.data.samples import PackedSamples, build_sample_index, doc_table, num_samples
from sift_fast.distributed.selection import MESSAGE_BYTES_PER_CANDIDATE, GlobalSelection, uniform_generator
from sift_fast.selection import Plan

VOCAB, SPECIALS, SEQ, C, K, STEPS, SEED = 300, [0, 1, 2, 3, 4], 12, 6, 3, 6, 5
NAMES = ("input_ids", "attention_mask", "labels", "sample_ids", "masked_index")


def lazy_train() -> PackedSamples:
    rng = np.random.default_rng(11)
    docs = [rng.integers(10, VOCAB, size=int(n)).astype(np.int32) for n in rng.integers(1, 40, size=40)]
    tokens, offsets = concat_documents(docs)
    table = doc_table(offsets[:-1], np.diff(offsets))
    index = build_sample_index(table[1], SEQ, num_samples(table[1, -1], SEQ))
    return PackedSamples(tokens.astype(np.uint16), table, index, SEQ, 1, 2, 0)


def row_losses(batch) -> torch.Tensor:
    """Per-row mean masked-token cross-entropy of a fixed tiny model, one row at a time."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 16), torch.nn.Linear(16, VOCAB))
    out = []
    with torch.no_grad():
        for i in range(batch.size):
            logits = model(batch.input_ids[i : i + 1])
            total = torch.nn.functional.cross_entropy(logits[0], batch.labels[i], ignore_index=-100, reduction="sum")
            out.append(total / max(1, int((batch.labels[i] != -100).sum())))  # a row without masks: 0
    return torch.stack(out)


def plan_of(step: int) -> Plan:
    return Plan("uniform", K) if step % 3 == 2 else Plan("score", K)


def scores_of(batch) -> torch.Tensor:
    return torch.round(row_losses(batch) * 2) / 2  # coarse: ties across ranks


def worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    masker = MLMMasker(VOCAB, 4, SPECIALS, seed=3)
    loader = CandidateLoader(lazy_train(), C, masker, 0, seed=SEED, rank=rank, world_size=world)
    step = [0]
    sel = GlobalSelection(rank, world, torch.device("cpu"), 0, SEED, step_fn=lambda: step[0], build=loader.build)
    records = []
    for s in range(STEPS):
        step[0] = s
        batch = loader.next_batch()
        kept, source, _ = sel(plan_of(s), batch, scores_of(batch))
        sub = source.select(kept)
        records.append({**{n: getattr(sub, n).clone() for n in NAMES}, "loss": row_losses(sub),
                        "bytes": sel.last_bytes, "own": int((kept < C).sum())})
    torch.save(records, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def reference(world: int) -> list[dict]:
    """One process over the union: per step the kept rows (by sample id) and the top-k rule by brute force."""
    torch.set_num_threads(1)
    masker = MLMMasker(VOCAB, 4, SPECIALS, seed=3)
    loader = CandidateLoader(lazy_train(), C * world, masker, 0, seed=SEED)
    steps = []
    for s in range(STEPS):
        batch = loader.next_batch()
        if plan_of(s).mode == "score":
            sc = scores_of(batch).tolist()
            top = sorted(range(len(sc)), key=lambda i: (-sc[i], i))[: K * world]
        else:
            top = torch.randperm(C * world, generator=uniform_generator(SEED, s))[: K * world].tolist()
        steps.append({"batch": batch, "top": sorted(top), "loss": row_losses(batch)})
    return steps


@pytest.mark.parametrize("world", [2, 4])
def test_global_selection_on_gloo_equals_one_process_over_the_union(world, tmp_path):
    mp.spawn(worker, args=(world, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for s, ref in enumerate(reference(world)):
        got = [ranks[r][s] for r in range(world)]
        assert all(len(g["sample_ids"]) == K for g in got)  # every rank backprops exactly k
        assert all(g["bytes"] == C * MESSAGE_BYTES_PER_CANDIDATE for g in got)  # ids + scores, no tokens
        ids = torch.cat([g["sample_ids"] for g in got])
        want_ids = ref["batch"].sample_ids[ref["top"]]
        assert sorted(ids.tolist()) == sorted(want_ids.tolist()), f"step {s}: kept ids differ"
        for r, g in enumerate(got):  # rows, masks and losses bitwise those of the union's same samples
            pos = [int((ref["batch"].sample_ids == i).nonzero()) for i in g["sample_ids"].tolist()]
            want = ref["batch"].select(pos)
            for name in NAMES:
                assert torch.equal(g[name], getattr(want, name)), f"step {s} rank {r}: {name}"
            assert torch.equal(g["loss"], ref["loss"][pos]), f"step {s} rank {r}: losses"
            own = sum(1 for t in ref["top"] if t // C == r)  # a rank keeps its own kept candidates first
            assert g["own"] == min(K, own)
        mean = torch.cat([g["loss"] for g in got]).double().sort().values.sum() / (K * world)
        assert mean == ref["loss"][ref["top"]].double().sort().values.sum() / (K * world)
