"""Megatron indexed dataset (.bin/.idx): our writer and reader against megatron-core's, byte for byte."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sift_fast.data.indexed import IndexedTokens, is_indexed, write_indexed
from sift_fast.errors import DataError

mcore = pytest.importorskip(
    "megatron.core.datasets.indexed_dataset", reason="megatron-core is a dev dependency (pip install -e .[dev])"
)


def _docs(seed: int, n: int, vocab: int, sentences: bool) -> list:
    g = np.random.default_rng(seed)
    out = []
    for d in range(n):
        if sentences:
            out.append([g.integers(0, vocab, g.integers(0 if d == 1 else 1, 9)) for _ in range(g.integers(1, 4))])
        else:
            out.append(g.integers(0, vocab, g.integers(0 if d == 1 else 1, 40)))
    return out


def _mcore_write(prefix, docs, dtype):
    b = mcore.IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for doc in docs:
        seqs = [doc] if isinstance(doc, np.ndarray) else doc
        b.add_document(torch.from_numpy(np.concatenate(seqs) if seqs else np.zeros(0, np.int64)),
                       [len(s) for s in seqs])
    b.finalize(f"{prefix}.idx")


@pytest.mark.parametrize("dtype,vocab", [(np.uint16, 30522), (np.int32, 70000)])
@pytest.mark.parametrize("sentences", [False, True])
def test_writer_is_byte_identical_to_megatron_core(tmp_path, dtype, vocab, sentences):
    docs = _docs(1, 13, vocab, sentences)
    write_indexed(tmp_path / "ours", docs, dtype=dtype)
    _mcore_write(tmp_path / "ref", docs, dtype)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"ref{ext}").read_bytes(), ext
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("sentences", [False, True])
def test_reader_matches_megatron_core_reader(tmp_path, sentences):
    docs = _docs(2, 17, 30522, sentences)
    _mcore_write(tmp_path / "ref", docs, np.uint16)
    ref = mcore.IndexedDataset(str(tmp_path / "ref"))
    ours = IndexedTokens(tmp_path / "ref")
    assert len(ours) == len(ref) and ours.dtype == np.uint16
    np.testing.assert_array_equal(ours.document_indices, ref.document_indices)
    for i in range(len(ref)):
        np.testing.assert_array_equal(ours[i], ref[i])
    # documents, by brute force from the source lists
    assert ours.num_documents == len(docs)
    for d, doc in enumerate(docs):
        want = np.concatenate([doc] if isinstance(doc, np.ndarray) else doc) if len(doc) else np.zeros(0)
        np.testing.assert_array_equal(ours.document(d), want)
    tokens, offsets = ours.flat()
    assert tokens.dtype == np.int32 and offsets[-1] == tokens.size == ours.num_tokens
    np.testing.assert_array_equal(tokens[offsets[3]:offsets[4]], ours.document(3))


def test_document_forms(tmp_path):
    """A flat list of ids is one sequence; a list of arrays / lists is one sequence per sentence."""
    write_indexed(tmp_path / "f", [[5, 6, 7], [np.array([1, 2]), [3]], np.array([9])], dtype=np.uint16)
    ds = IndexedTokens(tmp_path / "f")
    assert ds.lengths.tolist() == [3, 2, 1, 1] and ds.document_indices.tolist() == [0, 1, 3, 4]
    assert ds.document(1).tolist() == [1, 2, 3]


def test_empty_dataset_round_trip(tmp_path):
    write_indexed(tmp_path / "e", [], dtype=np.uint16)
    ds = IndexedTokens(tmp_path / "e.idx")
    assert len(ds) == 0 and ds.num_documents == 0 and ds.flat()[0].size == 0


def test_corrupt_files_are_one_clear_error(tmp_path):
    write_indexed(tmp_path / "c", [np.arange(10), np.arange(5)], dtype=np.uint16)
    idx, binf = tmp_path / "c.idx", tmp_path / "c.bin"
    good_idx, good_bin = idx.read_bytes(), binf.read_bytes()
    binf.write_bytes(good_bin[:-2])
    with pytest.raises(DataError, match="truncated"):
        IndexedTokens(tmp_path / "c")
    binf.write_bytes(good_bin)
    idx.write_bytes(b"NOTANIDX" + good_idx[8:])
    with pytest.raises(DataError, match="bad header"):
        IndexedTokens(tmp_path / "c")
    idx.write_bytes(good_idx[:9] + (2).to_bytes(8, "little") + good_idx[17:])
    with pytest.raises(DataError, match="version 2"):
        IndexedTokens(tmp_path / "c")
    idx.write_bytes(good_idx[:-8])
    with pytest.raises(DataError, match="does not match"):
        IndexedTokens(tmp_path / "c")
    (tmp_path / "c.idx").unlink()
    with pytest.raises(DataError, match="not found"):
        IndexedTokens(tmp_path / "c")
    with pytest.raises(DataError, match="out of range"):
        write_indexed(tmp_path / "big", [np.array([70000])], dtype=np.uint16)
    assert not (tmp_path / "big.bin").exists() and not list(tmp_path.glob(".tmp-*"))


def test_build_corpus_from_indexed_equals_text(small_corpus, tmp_path):
    """The packed arrays of a preprocessed corpus equal those of the text it came from."""
    from sift_fast.data import build_corpus, load_tokenizer, read_documents

    vocab = load_tokenizer("bundled")
    docs = read_documents(small_corpus["data"])
    ids = [np.asarray(e.ids) for e in vocab.tokenizer.encode_batch(docs, add_special_tokens=False)]
    write_indexed(tmp_path / "wiki", ids, dtype=np.uint16)
    assert is_indexed(tmp_path / "wiki") and is_indexed(f"megatron:{tmp_path / 'nothing'}")
    kw = dict(valid_fraction=0.1, max_valid_sequences=50, cache_dir=tmp_path / "cache")
    text = build_corpus(small_corpus["data"], vocab, 64, **kw)
    packed = build_corpus(f"megatron:{tmp_path / 'wiki'}", vocab, 64, **kw)
    np.testing.assert_array_equal(packed.train, text.train)
    np.testing.assert_array_equal(packed.valid, text.valid)
    # ids beyond the vocabulary: the wrong tokenizer
    small = load_tokenizer("train", train_texts=docs[:20], vocab_size=300, cache_dir=tmp_path / "tok")
    with pytest.raises(DataError, match="outside the vocabulary"):
        build_corpus(str(tmp_path / "wiki"), small, 64, **kw)
    with pytest.raises(DataError, match="already tokenized"):
        read_documents(str(tmp_path / "wiki.bin"))


def test_preprocess_cli_then_pretrain(small_corpus, tmp_path):
    """sift-preprocess writes a dataset that sift-pretrain trains on; bad input is one line, exit 2."""
    env_py = [sys.executable, "-m"]
    pre = tmp_path / "data" / "wiki"
    r = subprocess.run(env_py + ["sift_fast.cli.preprocess", "--input", small_corpus["data"], "--output-prefix",
                                 str(pre), "--vocab", "train", "--vocab-size", "512", "--cache-dir",
                                 small_corpus["cache_dir"]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "documents" in r.stderr and (tmp_path / "data" / "wiki.tokenizer.json").is_file()
    ds = IndexedTokens(pre)
    assert ds.dtype == np.uint16 and ds.num_tokens > 10_000
    r = subprocess.run(env_py + ["sift_fast.cli.pretrain", "--preset", "micro", "--data", str(pre), "--vocab",
                                 str(tmp_path / "data" / "wiki.tokenizer.json"), "--max-steps", "2",
                                 "--eval-every", "1000", "--out", str(tmp_path / "run"), "--cache-dir",
                                 small_corpus["cache_dir"]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "summary.json").is_file()
    r = subprocess.run(env_py + ["sift_fast.cli.preprocess", "--input", str(tmp_path / "missing.txt"),
                                 "--output-prefix", str(pre)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr
    for bad_args, msg in (([small_corpus["data"], str(tmp_path) + "/"], "file name"),
                          ([str(pre), str(tmp_path / "again")], "already a Megatron"),
                          ([small_corpus["data"], "/proc/no/such/dir/x"], "cannot write")):
        r = subprocess.run(env_py + ["sift_fast.cli.preprocess", "--input", bad_args[0], "--output-prefix",
                                     bad_args[1]], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(env_py + ["sift_fast.cli.pretrain", "--preset", "micro", "--data", str(pre),
                                 "--out", str(tmp_path / "run2")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already tokenized" in r.stderr and "Traceback" not in r.stderr
