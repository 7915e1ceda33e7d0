"""The optional C++ extension sift_fast._C: the index builders equal their numpy / Python fallbacks."""

import array

import numpy as np
import pytest

from sift_fast.data.blend import build_blend_index
from sift_fast.data.samples import build_sample_index, doc_table, num_samples

_C = pytest.importorskip("sift_fast._C", reason="C++ extension not built (SIFT_FAST_NO_EXT or no compiler)")


def brute_sample_index(lengths, seq_len):
    """(document, offset) of every sample start, walking the stream one position at a time."""
    spans = [(d, n + 1) for d, n in enumerate(x for x in lengths if x > 0)]
    where = [(d, o) for d, span in spans for o in range(span)]
    chunk, total = seq_len - 2, len(where)
    n = -(-total // chunk)
    out = [where[i * chunk] for i in range(n)]
    out.append((spans[-1][0], spans[-1][1]) if spans else (0, 0))
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("seq_len", [3, 4, 7, 16, 64])
def test_sample_index_matches_numpy_and_brute_force(seq_len):
    rng = np.random.default_rng(100 + seq_len)
    for _ in range(25):
        n = int(rng.integers(0, 15))
        lengths = rng.integers(0, 4 * seq_len, size=n)
        lengths[rng.random(n) < 0.3] = 0  # empty documents are skipped
        table = doc_table(np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else [], lengths)
        count = num_samples(table[1, -1], seq_len)
        ext = build_sample_index(table[1], seq_len, count, use_ext=True)
        np.testing.assert_array_equal(ext, build_sample_index(table[1], seq_len, count, use_ext=False))
        np.testing.assert_array_equal(ext, brute_sample_index(lengths.tolist(), seq_len))


def test_blend_index_matches_python():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 7):
        w = rng.random(k) + 0.05
        w /= w.sum()
        ext = build_blend_index(w, 3000, use_ext=True)
        py = build_blend_index(w, 3000, use_ext=False)
        np.testing.assert_array_equal(ext[0], py[0])
        np.testing.assert_array_equal(ext[1], py[1])
        counts = np.bincount(ext[0], minlength=k)
        assert np.abs(counts - w * 3000).max() <= 1.0 + 1e-9  # the greedy rule tracks the weights
        for d in range(k):  # each source's samples are taken in order 0, 1, 2, ...
            np.testing.assert_array_equal(ext[1][ext[0] == d], np.arange(counts[d]))


def test_buffer_protocol_checks():
    starts = np.array([0, 5, 9], dtype=np.int64)
    out = np.empty((4, 2), dtype=np.int64)
    _C.build_sample_index(array.array("q", starts.tolist()), 3, out)  # any int64 buffer works
    np.testing.assert_array_equal(out, build_sample_index(starts, 5, 3, use_ext=False))
    with pytest.raises(TypeError, match="stream_start"):
        _C.build_sample_index(starts.astype(np.int32), 3, out)
    with pytest.raises(TypeError, match="stream_start"):
        _C.build_sample_index(starts.astype(np.float64), 3, out)
    with pytest.raises(ValueError, match="rise"):
        _C.build_sample_index(np.array([0, 5, 5], dtype=np.int64), 3, out)
    with pytest.raises(ValueError, match="chunk"):
        _C.build_sample_index(starts, 0, out)
    with pytest.raises(TypeError, match="out"):
        _C.build_sample_index(starts, 3, out.astype(np.int32))
    with pytest.raises(TypeError, match="weights"):
        _C.build_blend_index(np.ones(2, np.float32), np.empty(3, np.int16), np.empty(3, np.int64))
    with pytest.raises(ValueError, match="same length"):
        _C.build_blend_index(np.ones(2), np.empty(3, np.int16), np.empty(4, np.int64))
