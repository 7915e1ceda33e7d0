"""Lazy packed samples, blends, the prefetch thread and per-rank candidate building.

References: the in-memory packer (:func:`pack_sequences`, itself checked against a Python loop in
test_data.py) and the in-memory loader over its arrays.
"""

import threading

import numpy as np
import pytest
import torch

from sift_fast.data import BUNDLED_VOCAB, CandidateLoader, MLMMasker, build_corpus, load_tokenizer, pack_sequences
from sift_fast.data.blend import BlendedSamples, parse_blend
from sift_fast.data.indexed import write_indexed
from sift_fast.data.packing import concat_documents
from sift_fast.data.prefetch import Prefetcher, maybe_prefetch
from sift_fast.data.samples import PackedSamples, build_sample_index, doc_table, num_samples
from sift_fast.errors import ConfigError, DataError

VOCAB, SPECIALS = 1000, [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer(str(BUNDLED_VOCAB))


def lazy_of(docs, seq_len, dtype=np.uint16, use_ext=False):
    tokens, offsets = concat_documents(docs)
    table = doc_table(offsets[:-1], np.diff(offsets))
    index = build_sample_index(table[1], seq_len, num_samples(table[1, -1], seq_len), use_ext=use_ext)
    return PackedSamples(tokens.astype(dtype), table, index, seq_len, 1, 2, 0)


def same_batch(a, b):
    names = ("input_ids", "attention_mask", "labels", "sample_ids", "masked_index", "masked_seq", "masked_row_ptr")
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in names) and a.epoch == b.epoch


@pytest.mark.parametrize("seq_len", [3, 4, 5, 9, 32])
@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_lazy_rows_equal_the_in_memory_packer(seq_len, dtype):
    rng = np.random.default_rng(seq_len)
    for _ in range(30):
        n = int(rng.integers(1, 14))
        lengths = rng.integers(0, 3 * seq_len + 1, size=n)
        lengths[rng.random(n) < 0.3] = 0  # empty documents are skipped
        lengths[rng.random(n) < 0.3] = 1  # one-token documents: several in one row
        docs = [rng.integers(10, 1000, size=int(k)).astype(np.int32) for k in lengths]
        want = pack_sequences(docs, seq_len, 1, 2, 0)
        lazy = lazy_of(docs, seq_len, dtype)
        assert len(lazy) == len(want) and lazy.shape == want.shape
        if not len(want):
            continue
        order = rng.permutation(len(want))
        np.testing.assert_array_equal(lazy[order], want[order])  # any order, any subset
        np.testing.assert_array_equal(np.asarray(lazy), want)
        np.testing.assert_array_equal(lazy[len(want) - 1], want[-1])
        np.testing.assert_array_equal(lazy[1::2, 0], want[1::2, 0])


def test_bundled_corpus_is_bitwise_the_in_memory_packing(bert, tmp_path):
    """Today's packer on the bundled corpus (tokenize, drop empty, split, pack): same train and valid rows."""
    from sift_fast.data import read_documents
    from sift_fast.data.dataset import split_documents

    pc = build_corpus("bundled", bert, 128, cache_dir=tmp_path)
    tokens = [np.asarray(e.ids, dtype=np.int32)
              for e in bert.tokenizer.encode_batch(read_documents("bundled"), add_special_tokens=False)]
    tokens = [t for t in tokens if len(t)]
    cut = split_documents([len(t) for t in tokens], 0.05)
    train = pack_sequences(tokens[:cut], 128, bert.cls_id, bert.sep_id, bert.pad_id)
    valid = pack_sequences(tokens[cut:], 128, bert.cls_id, bert.sep_id, bert.pad_id)[:256]
    assert isinstance(pc.train, PackedSamples) and isinstance(pc.train.index, np.memmap)
    np.testing.assert_array_equal(np.asarray(pc.train), train)
    np.testing.assert_array_equal(pc.valid, valid)


def test_split_documents_matches_the_loop():
    def loop(lengths, frac):  # the original rule, one document at a time
        total = sum(n + 1 for n in lengths)
        cut, held = len(lengths), 0
        while cut > 1 and (held < frac * total or cut == len(lengths)):
            cut -= 1
            held += lengths[cut] + 1
        return cut

    from sift_fast.data.dataset import split_documents

    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 50, size=int(rng.integers(2, 30))).tolist()
        frac = float(rng.choice([0.01, 0.05, 0.2, 0.5, 0.9, 0.99]))
        assert split_documents(lengths, frac) == loop(lengths, frac)


def test_training_is_bitwise_the_in_memory_path(micro_cfg, tmp_path):
    """Same losses, step by step, from the lazy rows and from the in-memory packer's arrays."""
    from sift_fast.train.builder import DataBundle, build_data
    from sift_fast.train.loop import Trainer

    cfg = micro_cfg(max_steps=4, selection="loss")
    data = build_data(cfg)
    arrays = DataBundle(vocab=data.vocab, train=np.asarray(data.train), valid=data.valid)
    runs = []
    for i, bundle in enumerate((data, arrays)):
        trainer = Trainer(cfg.replace(out=str(tmp_path / f"r{i}")), data=bundle)
        losses = []
        trainer.step_hooks.append(lambda tr, res, acc=losses: acc.append(res.loss.item()))
        trainer.run()
        runs.append(losses)
    assert isinstance(data.train, PackedSamples) and runs[0] == runs[1]


def test_cache_reads_no_document_table_and_follows_the_files(bert, tmp_path, monkeypatch):
    import sift_fast.data.samples as samples_mod

    docs = [np.arange(5 + d, 30 + 3 * d) % 900 + 5 for d in range(12)]
    write_indexed(tmp_path / "c", docs, dtype=np.uint16)
    first = build_corpus(str(tmp_path / "c"), bert, 16, valid_fraction=0.2, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(samples_mod, "doc_table", lambda *a: pytest.fail("rebuilt the index"))
    again = build_corpus(str(tmp_path / "c"), bert, 16, valid_fraction=0.2, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(again.train), np.asarray(first.train))
    monkeypatch.undo()
    write_indexed(tmp_path / "c", docs[::-1], dtype=np.uint16)  # new files: new key, fresh index
    changed = build_corpus(str(tmp_path / "c"), bert, 16, valid_fraction=0.2, cache_dir=tmp_path / "cache")
    tokens = [d.astype(np.int32) for d in docs[::-1]]
    from sift_fast.data.dataset import split_documents

    cut = split_documents([len(t) for t in tokens], 0.2)
    np.testing.assert_array_equal(np.asarray(changed.train), pack_sequences(tokens[:cut], 16, 101, 102, 0))


# --- per-rank candidates ----------------------------------------------------------------------------
class CountingRows:
    """An in-memory [N, S] array that counts the rows materialized through it."""

    def __init__(self, array):
        self.array, self.ndim, self.shape, self.count = array, 2, array.shape, 0

    def __len__(self):
        return len(self.array)

    def rows(self, ids, epoch=0):
        self.count += len(ids)
        return self.array[ids]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_rank_builds_only_its_own_candidates(world):
    rng = np.random.default_rng(world)
    train = rng.integers(5, VOCAB, size=(96, 12)).astype(np.int32)
    masker = MLMMasker(VOCAB, 4, SPECIALS, seed=3)
    whole = CandidateLoader(train, 4 * world, masker, 0, seed=5)
    ranks = [CandidateLoader(CountingRows(train), 4, masker, 0, seed=5, rank=r, world_size=world)
             for r in range(world)]
    for _ in range(9):  # crosses epoch boundaries
        ref = whole.next_batch()
        for r, loader in enumerate(ranks):
            got = loader.next_batch()
            assert same_batch(got, ref.select(np.arange(4 * r, 4 * r + 4)))
            assert loader.state_dict() == whole.state_dict()
    assert all(loader.train.count == 9 * 4 for loader in ranks)  # O(C) rows per rank and step
    b = ranks[-1].build(np.array([7, 3]), 2)  # any rank rebuilds any sample from its id
    assert same_batch(b, CandidateLoader(train, 1, masker, 0).build(np.array([7, 3]), 2))
    with pytest.raises(ConfigError, match="outside a world"):
        CandidateLoader(train, 4, masker, 0, rank=2, world_size=2)


# --- blends --------------------------------------------------------------------------------------------
def test_parse_blend():
    assert parse_blend("corpus.txt") is None and parse_blend("bundled") is None
    assert parse_blend("0.3 A 0.7 B") == [(0.3, "A"), (0.7, "B")]
    assert parse_blend("1 A 3 B") == [(0.25, "A"), (0.75, "B")]
    for bad, msg in (("0.3 A 0.7", "odd"), ("0.3 A x B", "not a weight"), ("0 A 1 B", "positive")):
        with pytest.raises(ConfigError, match=msg):
            parse_blend(bad)


def test_blend_rows_follow_the_weights_and_rotate(tmp_path):
    rng = np.random.default_rng(0)
    a = lazy_of([rng.integers(10, 500, size=40).astype(np.int32) for _ in range(10)], 9)
    b = lazy_of([rng.integers(500, 999, size=40).astype(np.int32) for _ in range(3)], 9)
    blend = BlendedSamples([a, b], [0.25, 0.75], cache_dir=tmp_path, key="t")
    n = len(a) + len(b)
    assert len(blend) == n and blend.quota.sum() == n and abs(blend.quota[0] - 0.25 * n) <= 1
    src = np.asarray(blend.source)
    for epoch in (0, 1, 5):
        rows = blend.rows(np.arange(n), epoch)
        from_b = rows[:, 1] >= 500  # the sources have disjoint token ranges
        np.testing.assert_array_equal(from_b, src == 1)
        for d, part in enumerate((a, b)):
            j = (np.asarray(blend.within)[src == d] + epoch * blend.quota[d]) % len(part)
            np.testing.assert_array_equal(rows[src == d], part.rows(j))
    # the down-weighted source rotates through all its samples over epochs
    seen = {int(j) for e in range(4) for j in (np.asarray(blend.within)[src == 0] + e * blend.quota[0]) % len(a)}
    assert seen == set(range(len(a)))
    again = BlendedSamples([a, b], [0.25, 0.75], cache_dir=tmp_path, key="t")  # cached index
    assert isinstance(again.source, np.memmap)
    np.testing.assert_array_equal(again.rows(np.arange(n), 3), blend.rows(np.arange(n), 3))


def test_blend_corpus_trains_and_resumes(bert, tmp_path):
    rng = np.random.default_rng(1)
    for name, lo in (("a", 1000), ("b", 5000)):
        write_indexed(tmp_path / name, [rng.integers(lo, lo + 999, size=60) for _ in range(20)], dtype=np.uint16)
    spec = f"0.3 {tmp_path / 'a'} 0.7 {tmp_path / 'b'}"
    pc = build_corpus(spec, bert, 32, cache_dir=tmp_path / "cache", max_valid_sequences=10, valid_fraction=0.3)
    assert isinstance(pc.train, BlendedSamples) and pc.valid.shape == (10, 32)
    assert (pc.valid[:3].max(1) < 5000).all() and (pc.valid[3:].max(1) >= 5000).all()  # round(0.3 x 10) from a
    masker = MLMMasker(bert.vocab_size, bert.mask_id, bert.special_ids, seed=0)
    make = lambda: CandidateLoader(pc.train, 8, masker, bert.pad_id, seed=4)
    ref = make()
    stream = [ref.next_batch() for _ in range(2 * ref.batches_per_epoch + 2)]
    # the unmasked rows (masking draws random tokens from the whole vocabulary): the sources' token ranges
    share = np.mean([(pc.train.rows(b.sample_ids.numpy(), b.epoch)[:, 1] >= 5000).mean() for b in stream])
    assert abs(share - 0.7) < 0.1
    resumed = make()
    for _ in range(5):
        resumed.next_batch()
    state = resumed.state_dict()
    fresh = make()
    fresh.load_state_dict(state)
    assert all(same_batch(fresh.next_batch(), stream[i]) for i in range(5, len(stream)))
    with pytest.raises(DataError, match="blend"):
        from sift_fast.data import read_documents

        read_documents(spec)


# --- prefetch ----------------------------------------------------------------------------------------
def test_prefetch_is_the_same_stream_and_resumes_exactly():
    rng = np.random.default_rng(2)
    train = rng.integers(5, VOCAB, size=(40, 12)).astype(np.int32)
    masker = MLMMasker(VOCAB, 4, SPECIALS, seed=1)
    make = lambda: CandidateLoader(train, 4, masker, 0, seed=3)
    ref = make()
    stream = [ref.next_batch() for _ in range(25)]
    pre = Prefetcher(make(), depth=3)
    for i in range(7):
        assert same_batch(pre.next_batch(), stream[i])
    state = pre.state_dict()  # the thread is ahead; the state is what was handed out
    assert state == {"epoch": 0, "position": 7}
    assert pre._thread.name == "sift-prefetch" and pre._thread in threading.enumerate()
    other = Prefetcher(make(), depth=2)
    other.load_state_dict(state)
    assert all(same_batch(other.next_batch(), stream[i]) for i in range(7, 25))
    pre.load_state_dict({"epoch": 1, "position": 2})  # rewind while running
    assert same_batch(pre.next_batch(), stream[12]) and pre.epoch == 1 and pre.position == 3
    assert same_batch(pre.build(np.array([5]), 0), ref.build(np.array([5]), 0))
    pre.close()
    other.close()
    assert maybe_prefetch(ref, -1, "cpu") is ref and maybe_prefetch(ref, 0, "cuda") is ref
    assert isinstance(maybe_prefetch(ref, -1, "cuda"), Prefetcher)


def test_prefetch_raises_the_loader_error():
    class Broken:
        def state_dict(self):
            return {"epoch": 0, "position": 0}

        def next_batch(self):
            raise DataError("disk gone")

    with pytest.raises(DataError, match="disk gone"):
        Prefetcher(Broken()).next_batch()


def test_trainer_with_prefetch_equals_without(micro_cfg, tmp_path):
    from sift_fast.train.loop import Trainer

    runs = []
    for depth in (0, 2):
        cfg = micro_cfg(max_steps=5, selection="loss", prefetch=depth, out=str(tmp_path / f"p{depth}"),
                        checkpoint_every=3)
        trainer = Trainer(cfg)
        assert isinstance(trainer.loader, Prefetcher) == (depth > 0)
        losses = []
        trainer.step_hooks.append(lambda tr, res, acc=losses: acc.append(res.loss.item()))
        trainer.run()
        runs.append(losses)
    assert runs[0] == runs[1]
    # resume the prefetching run from its step-3 checkpoint: steps 4-5 again, bitwise
    ck = tmp_path / "p2" / "checkpoints"
    assert (ck / "step_00000003.pt").is_file()
    for p in ck.glob("step_*.pt"):  # keep only the step-3 checkpoint: the resume starts there
        if p.name != "step_00000003.pt":
            p.unlink()
    trainer = Trainer(micro_cfg(max_steps=5, selection="loss", prefetch=2, out=str(tmp_path / "p2"), resume=True))
    resumed = []
    trainer.step_hooks.append(lambda tr, res: resumed.append(res.loss.item()))
    trainer.run()
    assert resumed == runs[1][3:]
