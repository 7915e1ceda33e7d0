"""The optional C++ extension sift_fast._C: same packing as the numpy path and a brute-force loop."""

import array

import numpy as np
import pytest

from sift_fast.data.packing import concat_documents, pack_flat, packed_rows

_C = pytest.importorskip("sift_fast._C", reason="C++ extension not built (SIFT_FAST_NO_EXT or no compiler)")


def reference_pack(docs, seq_len, cls_id, sep_id, pad_id):
    stream = [t for d in docs if len(d) for t in [*map(int, d), sep_id]]
    rows, chunk = [], seq_len - 2
    for i in range(0, len(stream), chunk):
        row = [cls_id, *stream[i : i + chunk], sep_id]
        rows.append(row + [pad_id] * (seq_len - len(row)))
    return np.array(rows, dtype=np.int32).reshape(-1, seq_len)


@pytest.mark.parametrize("seq_len", [3, 4, 7, 16, 64])
def test_ext_matches_numpy_and_reference(seq_len):
    rng = np.random.default_rng(100 + seq_len)
    for _ in range(25):
        n = int(rng.integers(0, 15))
        lengths = rng.integers(0, 4 * seq_len, size=n)
        lengths[rng.random(n) < 0.3] = 0  # empty documents
        docs = [rng.integers(0, 30000, size=int(k)).astype(np.int32) for k in lengths]
        tokens, offsets = concat_documents(docs)
        ext = pack_flat(tokens, offsets, seq_len, 101, 102, 0, use_ext=True)
        ref = reference_pack(docs, seq_len, 101, 102, 0)
        np.testing.assert_array_equal(ext, ref)
        np.testing.assert_array_equal(pack_flat(tokens, offsets, seq_len, 101, 102, 0, use_ext=False), ext)


def test_offsets_not_starting_at_zero():
    tokens = np.arange(20, dtype=np.int32)
    offsets = np.array([3, 5, 5, 12], dtype=np.int64)  # documents tokens[3:5], [], tokens[5:12]
    docs = [tokens[3:5], tokens[5:5], tokens[5:12]]
    for use_ext in (True, False):
        np.testing.assert_array_equal(
            pack_flat(tokens, offsets, 5, 1, 2, 0, use_ext=use_ext), reference_pack(docs, 5, 1, 2, 0)
        )


def test_buffer_protocol_checks():
    tokens = np.arange(10, dtype=np.int32)
    offsets = np.array([0, 10], dtype=np.int64)
    out = np.empty((packed_rows(offsets, 6), 6), dtype=np.int32)
    _C.pack_into(array.array("i", tokens.tolist()), offsets, out, 6, 1, 2, 0)  # any int32 buffer works
    np.testing.assert_array_equal(out, reference_pack([tokens], 6, 1, 2, 0))
    with pytest.raises(TypeError, match="tokens"):
        _C.pack_into(tokens.astype(np.int64), offsets, out, 6, 1, 2, 0)
    with pytest.raises(TypeError, match="tokens"):
        _C.pack_into(tokens.astype(np.float32), offsets, out, 6, 1, 2, 0)
    with pytest.raises(ValueError, match="expected"):
        _C.pack_into(tokens, offsets, out[:1], 6, 1, 2, 0)
    with pytest.raises(ValueError, match="offsets"):
        _C.pack_into(tokens, np.array([0, 11], dtype=np.int64), out, 6, 1, 2, 0)
    with pytest.raises(ValueError, match="seq_len"):
        _C.pack_into(tokens, offsets, out, 2, 1, 2, 0)
    with pytest.raises(TypeError):
        _C.pack_into(tokens, offsets, out.copy().view(np.float32), 6, 1, 2, 0)
    frozen = out.copy()
    frozen.flags.writeable = False
    with pytest.raises((TypeError, BufferError, ValueError)):
        _C.pack_into(tokens, offsets, frozen, 6, 1, 2, 0)
