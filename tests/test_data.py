"""sift_fast.data: corpus reading, packing, MLM masking, Batch, loaders and the cached packed corpus."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sift_fast.data import (
    BUNDLED_CORPUS,
    BUNDLED_VOCAB,
    Batch,
    CandidateLoader,
    MLMMasker,
    build_corpus,
    corpus_texts,
    detokenize_wikitext,
    load_tokenizer,
    make_batch,
    pack_sequences,
    read_documents,
    validation_batches,
)
from sift_fast.data import dataset as dataset_mod
from sift_fast.data.corpus import heading_level
from sift_fast.data.packing import concat_documents, pack_flat
from sift_fast.errors import DataError

SHARED_WIKITEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer(str(BUNDLED_VOCAB))


# ---------------------------------------------------------------- corpus


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("The M @-@ 82 highway , built in 1 @,@ 500 days .", "The M-82 highway, built in 1,500 days."),
        ("It weighs 0 @.@ 7 kg ( 1 @.@ 5 lb ) ; really !", "It weighs 0.7 kg (1.5 lb); really!"),
        ('He called it " lobster red " , and left .', 'He called it "lobster red", and left.'),
        ("the city 's port , which they don 't use", "the city's port, which they don't use"),
        ("a <unk> species of <unk> 's lobster : rare ?", "a [UNK] species of [UNK]'s lobster: rare?"),
        ("cost $ 20 [ sic ] or 50 %", "cost $20 [sic] or 50%"),
    ],
)
def test_detokenize_wikitext(raw, clean):
    assert detokenize_wikitext(raw) == clean


def test_heading_level():
    assert heading_level(" = Homarus gammarus = ") == 1
    assert heading_level(" = = Description = = ") == 2
    assert heading_level(" = = = Early life = = = ") == 3
    assert heading_level("a = b = c") == 0
    assert heading_level(" = = ") == 0


def test_wikitext_documents(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(
        " \n = First Article = \n \n Intro , with <unk> . \n \n = = Section = = \n \n Body 1 @,@ 000 . \n"
        " \n = Second = \n \n Only paragraph . \n"
    )
    assert read_documents(str(path)) == ["Intro, with [UNK].\nBody 1,000.", "Only paragraph."]


def test_blank_line_and_line_documents(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("doc one line a\ndoc one line b\n\n\n  \ndoc two\n\n")
    assert read_documents(str(blank)) == ["doc one line a\ndoc one line b", "doc two"]
    lines = tmp_path / "lines.txt"
    lines.write_text("para one\npara two\npara three\n")
    assert read_documents(str(lines)) == ["para one", "para two", "para three"]
    # no WikiText markers: text is kept verbatim (no detokenization)
    plain = tmp_path / "plain.txt"
    plain.write_text('keep " spaced " quotes , as is\n')
    assert read_documents(str(plain)) == ['keep " spaced " quotes , as is']


def test_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"body": "first doc", "id": 1}) + "\n\n" + json.dumps({"body": "second"}) + "\n"
    )
    assert read_documents(str(path), text_key="body") == ["first doc", "second"]
    assert corpus_texts(str(path), text_key="body") == ["first doc", "second"]
    with pytest.raises(DataError, match="'text'"):
        read_documents(str(path))
    path.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(DataError, match=":2: invalid JSON"):
        read_documents(str(path))
    path.write_text('{"text": 3}\n')
    with pytest.raises(DataError, match="expected a string"):
        read_documents(str(path))


def test_bad_corpus(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not found"):
        read_documents(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n  \n")
    with pytest.raises(DataError, match="empty"):
        read_documents(str(empty))
    (tmp_path / "empty.jsonl").write_text('{"text": "  "}\n')
    with pytest.raises(DataError, match="empty"):
        read_documents(str(tmp_path / "empty.jsonl"))
    with pytest.raises(DataError, match="directory"):
        read_documents(str(tmp_path))
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02")
    with pytest.raises(DataError, match="binary"):
        read_documents(str(tmp_path / "bin.txt"))
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match="datasets"):
        read_documents("hf:wikitext:wikitext-2-raw-v1:train")


def test_bundled_corpus_is_detokenized_wikitext():
    docs = read_documents("bundled")
    assert len(docs) == 121
    text = BUNDLED_CORPUS.read_text(encoding="utf-8")
    assert not any(m in text for m in (" @-@ ", " @,@ ", " @.@ ", "<unk>"))
    assert docs[0].startswith("Homarus gammarus, known as the European lobster")
    if SHARED_WIKITEXT.is_dir():  # the bundled file is exactly the detokenized shared copy
        raw = read_documents(str(SHARED_WIKITEXT / "valid.txt")) + read_documents(
            str(SHARED_WIKITEXT / "test.txt")
        )
        assert docs == raw


# ---------------------------------------------------------------- packing


def reference_pack(docs, seq_len, cls_id, sep_id, pad_id):
    stream = []
    for d in docs:
        if len(d):
            stream += [int(t) for t in d] + [sep_id]
    rows, chunk = [], seq_len - 2
    for i in range(0, len(stream), chunk):
        row = [cls_id] + stream[i : i + chunk] + [sep_id]
        rows.append(row + [pad_id] * (seq_len - len(row)))
    return np.array(rows, dtype=np.int32).reshape(-1, seq_len)


def random_docs(rng, n, max_len):
    lengths = rng.integers(0, max_len + 1, size=n)
    tiny = rng.random(n) < 0.4
    lengths[tiny] = rng.integers(0, 3, size=int(tiny.sum()))  # many empty and 1-2 token documents
    return [rng.integers(10, 1000, size=int(k)).astype(np.int32) for k in lengths]


@pytest.mark.parametrize("seq_len", [3, 4, 5, 9, 32])
def test_pack_numpy_matches_reference(seq_len):
    rng = np.random.default_rng(seq_len)
    for _ in range(20):
        docs = random_docs(rng, int(rng.integers(0, 12)), 3 * seq_len)
        got = pack_flat(*concat_documents(docs), seq_len, 1, 2, 0)
        np.testing.assert_array_equal(got, reference_pack(docs, seq_len, 1, 2, 0))
        np.testing.assert_array_equal(pack_sequences(docs, seq_len, 1, 2, 0), got)
        assert got.dtype == np.int32 and got.shape[1] == seq_len


def test_pack_layout():
    out = pack_sequences([np.array([5, 6, 7]), np.array([], dtype=np.int32), np.array([8])], 5, 101, 102, 0)
    np.testing.assert_array_equal(out, [[101, 5, 6, 7, 102], [101, 102, 8, 102, 102]])
    out = pack_sequences([np.array([5, 6])], 6, 101, 102, 0)
    np.testing.assert_array_equal(out, [[101, 5, 6, 102, 102, 0]])
    assert pack_sequences([], 8, 1, 2, 0).shape == (0, 8)


# ---------------------------------------------------------------- masking

SPECIALS = (0, 1, 2, 3, 4)  # pad, unk, cls, sep, mask
VOCAB = 1000


def random_rows(rng, b, s):
    ids = rng.integers(5, VOCAB, size=(b, s))
    ids[:, 0] = 2
    lengths = rng.integers(s // 2, s + 1, size=b)
    for i, n in enumerate(lengths):
        ids[i, n - 1] = 3
        ids[i, n:] = 0
    return ids


def test_masking_statistics():
    rng = np.random.default_rng(0)
    ids = random_rows(rng, 512, 128)
    masker = MLMMasker(VOCAB, 4, SPECIALS, seed=3)
    out, labels = masker(ids, np.arange(512), epoch=0)
    assert out.dtype == labels.dtype == np.int64 and out.shape == labels.shape == ids.shape
    special = np.isin(ids, SPECIALS)
    chosen = labels != -100
    assert not chosen[special].any()
    np.testing.assert_array_equal(out[special], ids[special])  # specials and pad untouched
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(out[~chosen], ids[~chosen])
    frac = chosen.sum() / (~special).sum()
    assert abs(frac - 0.15) < 0.01
    n = chosen.sum()
    masked = (out == 4) & chosen
    replaced = chosen & (out != 4) & (out != ids)
    kept = chosen & (out == ids)
    assert abs(masked.sum() / n - 0.8) < 0.02
    assert abs(replaced.sum() / n - 0.1) < 0.015
    assert abs(kept.sum() / n - 0.1) < 0.015
    assert not np.isin(out[replaced], SPECIALS).any()
    assert len(np.unique(out[replaced])) > 200  # spread over the vocabulary


def test_masking_is_per_sample_deterministic():
    rng = np.random.default_rng(1)
    ids = random_rows(rng, 16, 64)
    sids = rng.permutation(1000)[:16]
    masker = MLMMasker(VOCAB, 4, SPECIALS, seed=7)
    out, labels = masker(ids, sids, epoch=2)
    rows = [11, 3, 3, 0]
    out2, labels2 = MLMMasker(VOCAB, 4, SPECIALS, seed=7)(ids[rows], sids[rows], epoch=2)
    np.testing.assert_array_equal(out2, out[rows])
    np.testing.assert_array_equal(labels2, labels[rows])
    other_epoch = masker(ids, sids, epoch=3)[1]
    other_seed = MLMMasker(VOCAB, 4, SPECIALS, seed=8)(ids, sids, epoch=2)[1]
    for other in (other_epoch, other_seed):
        assert (other != labels).any(axis=1).all()  # every row masked differently


# ---------------------------------------------------------------- Batch


def masked_batch(b=12, s=16, seed=0, pad_id=0):
    rng = np.random.default_rng(seed)
    ids = random_rows(rng, b, s)
    out, labels = MLMMasker(VOCAB, 4, SPECIALS, mask_prob=0.3)(ids, np.arange(b), 0)
    return make_batch(out, labels, np.arange(100, 100 + b), pad_id, epoch=5)


def check_indices(batch):
    flat = batch.labels.reshape(-1)
    expected = torch.nonzero(flat != -100).reshape(-1)
    assert torch.equal(batch.masked_index, expected)
    assert torch.equal(batch.masked_seq, expected // batch.labels.shape[1])
    assert torch.equal(batch.masked_targets, flat[expected])
    counts = torch.bincount(batch.masked_seq, minlength=batch.size)
    assert torch.equal(batch.masked_row_ptr, torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]))


def test_make_batch():
    batch = masked_batch()
    assert batch.size == 12 and batch.epoch == 5
    for t in (batch.input_ids, batch.attention_mask, batch.labels, batch.sample_ids, batch.masked_index):
        assert t.dtype == torch.int64
    assert torch.equal(batch.attention_mask, (batch.input_ids != 0).long())
    assert batch.num_masked == len(batch.masked_index) > 0
    check_indices(batch)


@pytest.mark.parametrize(
    "rows",
    [
        [3, 1, 4, 1, 5],
        [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        [],
        [7],
        np.array([2, 2]),
        torch.tensor([0, 9]),
    ],
)
def test_select(rows):
    batch = masked_batch()
    sub = batch.select(rows)
    idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    assert sub.size == len(idx) and sub.epoch == batch.epoch
    for name in ("input_ids", "attention_mask", "labels", "sample_ids"):
        assert torch.equal(getattr(sub, name), getattr(batch, name)[idx])
    check_indices(sub)
    if len(idx) > 1:
        check_indices(sub.select([len(idx) - 1, 0]))


def test_select_out_of_range_and_to():
    batch = masked_batch()
    with pytest.raises(IndexError):
        batch.select([12])
    moved = batch.to("cpu")
    check_indices(moved)
    fields = ("input_ids", "attention_mask", "labels", "sample_ids", "masked_index", "masked_seq")
    manual = Batch(**{k: getattr(batch, k) for k in fields})  # row pointers rebuilt from masked_seq
    check_indices(manual)
    check_indices(manual.select([5, 2]))
    assert batch.pin_memory() is batch or torch.equal(batch.pin_memory().input_ids, batch.input_ids)


# ---------------------------------------------------------------- loaders


def toy_train(n, s=12, seed=0):
    return random_rows(np.random.default_rng(seed), n, s).astype(np.int32)


def same_batch(a, b):
    return all(
        torch.equal(getattr(a, k), getattr(b, k))
        for k in ("input_ids", "labels", "sample_ids", "masked_index", "masked_seq")
    ) and (a.epoch == b.epoch)


def test_epoch_covers_each_sample_once():
    train = toy_train(48)
    loader = CandidateLoader(train, 8, MLMMasker(VOCAB, 4, SPECIALS), 0, seed=1)
    assert loader.batches_per_epoch == 6
    epochs = []
    for _ in range(2):
        ids = [loader.next_batch() for _ in range(6)]
        assert all(b.epoch == len(epochs) for b in ids)
        seen = torch.cat([b.sample_ids for b in ids]).numpy()
        assert sorted(seen) == list(range(48))
        epochs.append(seen)
        assert loader.epoch == len(epochs) and loader.state_dict() == {"epoch": len(epochs), "position": 0}
    assert (epochs[0] != epochs[1]).any()
    b = loader.next_batch()
    np.testing.assert_array_equal(
        b.input_ids[b.labels == -100].numpy(), train[b.sample_ids.numpy()][b.labels == -100]
    )
    # tail dropped: 50 samples, batches of 7 -> 7 batches, 49 distinct samples per epoch
    loader = CandidateLoader(toy_train(50), 7, MLMMasker(VOCAB, 4, SPECIALS), 0)
    seen = torch.cat([loader.next_batch().sample_ids for _ in range(7)])
    assert len(set(seen.tolist())) == 49 and loader.epoch == 1


def test_resume_reproduces_stream():
    train = toy_train(30)
    make = lambda: CandidateLoader(train, 4, MLMMasker(VOCAB, 4, SPECIALS, seed=2), 0, seed=9)
    reference = make()
    stream = [reference.next_batch() for _ in range(20)]  # 7 batches per epoch: crosses two epochs
    for cut in (0, 3, 6, 7, 13):
        first = make()
        for _ in range(cut):
            first.next_batch()
        state = first.state_dict()
        assert all(type(v) is int for v in state.values())
        resumed = make()
        resumed.load_state_dict(dict(state))
        assert all(same_batch(resumed.next_batch(), stream[i]) for i in range(cut, 20))


def test_loader_errors():
    masker = MLMMasker(VOCAB, 4, SPECIALS)
    with pytest.raises(DataError, match="larger than the 5 train sequences"):
        CandidateLoader(toy_train(5), 6, masker, 0)
    loader = CandidateLoader(toy_train(5), 2, masker, 0)
    with pytest.raises(DataError):
        loader.load_state_dict({"epoch": 0, "position": 2})


def test_validation_batches():
    valid = toy_train(10)
    masker = MLMMasker(VOCAB, 4, SPECIALS, seed=4)
    batches = validation_batches(valid, 4, masker, 0)
    assert [b.size for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b.sample_ids for b in batches]), torch.arange(10))
    out, labels = masker(valid, np.arange(10), 0)
    assert torch.equal(torch.cat([b.labels for b in batches]), torch.from_numpy(labels))
    assert torch.equal(torch.cat([b.input_ids for b in batches]), torch.from_numpy(out))
    again = validation_batches(valid, 4, masker, 0)
    assert all(same_batch(a, b) for a, b in zip(batches, again, strict=True))


# ---------------------------------------------------------------- build_corpus


def write_corpus(path, n_docs=12):
    rng = np.random.default_rng(0)
    words = "the lobster is a species of crustacean found in eastern atlantic ocean waters".split()
    docs = [" ".join(rng.choice(words, size=int(rng.integers(20, 60)))) for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n")
    return docs


def test_build_corpus_split_pack_and_cache(tmp_path, bert, monkeypatch):
    docs = write_corpus(tmp_path / "c.txt")
    cache = tmp_path / "cache"
    pc = build_corpus(str(tmp_path / "c.txt"), bert, 16, valid_fraction=0.2, cache_dir=cache)
    tokens = [np.array(bert.tokenizer.encode(d, add_special_tokens=False).ids) for d in docs]
    total = sum(len(t) + 1 for t in tokens)
    cut = len(docs)
    while sum(len(t) + 1 for t in tokens[cut:]) < 0.2 * total:
        cut -= 1
    np.testing.assert_array_equal(
        pc.train, reference_pack(tokens[:cut], 16, bert.cls_id, bert.sep_id, bert.pad_id)
    )
    np.testing.assert_array_equal(
        pc.valid, reference_pack(tokens[cut:], 16, bert.cls_id, bert.sep_id, bert.pad_id)
    )
    assert pc.train.dtype == np.int32 and pc.valid.dtype == np.int32
    # the cache: the tokenized corpus (.bin/.idx) and the train and valid sample indices (docs + index each)
    assert len(list(cache.glob("tokens-*.bin"))) == 1 and len(list(cache.glob("samples-*.npy"))) == 4

    def no_tokenizing(*a, **k):
        raise AssertionError("rebuilt instead of loading the cache")

    monkeypatch.setattr(dataset_mod, "write_indexed", no_tokenizing)
    monkeypatch.setattr(dataset_mod, "doc_table", no_tokenizing, raising=False)
    import sift_fast.data.samples as samples_mod

    monkeypatch.setattr(samples_mod, "build_sample_index", no_tokenizing)
    again = build_corpus(str(tmp_path / "c.txt"), bert, 16, valid_fraction=0.2, cache_dir=cache)
    np.testing.assert_array_equal(again.train, pc.train)
    np.testing.assert_array_equal(again.valid, pc.valid)
    monkeypatch.undo()

    cased = load_tokenizer(str(BUNDLED_VOCAB), lowercase=False)
    build_corpus(str(tmp_path / "c.txt"), cased, 16, valid_fraction=0.2, cache_dir=cache)
    assert len(list(cache.glob("tokens-*.bin"))) == 2  # new vocab -> new key
    small = build_corpus(
        str(tmp_path / "c.txt"),
        bert,
        16,
        valid_fraction=0.2,
        cache_dir=cache,
        max_train_tokens=40,
        max_valid_sequences=1,
    )
    np.testing.assert_array_equal(small.train, pc.train[:2])
    np.testing.assert_array_equal(small.valid, pc.valid[:1])


def test_build_corpus_too_small(tmp_path, bert):
    (tmp_path / "one.txt").write_text("just one document here\n")
    with pytest.raises(DataError, match="corpus too small"):
        build_corpus(str(tmp_path / "one.txt"), bert, 16, cache_dir=tmp_path / "cache")
    (tmp_path / "two.txt").write_text("first\n\nsecond\n")
    pc = build_corpus(str(tmp_path / "two.txt"), bert, 16, valid_fraction=0.01, cache_dir=tmp_path / "cache")
    assert len(pc.train) == 1 and len(pc.valid) == 1


def test_build_bundled_corpus(tmp_path, bert):
    pc = build_corpus("bundled", bert, 128, cache_dir=tmp_path)
    assert pc.train.shape[1] == pc.valid.shape[1] == 128
    assert len(pc.train) > 3000 and len(pc.valid) == 184  # last documents, ~5% of the tokens
    assert (pc.train[:, 0] == bert.cls_id).all() and (pc.train[:-1, -1] == bert.sep_id).all()
