// sift_fast._C: optional native helpers. Plain CPython API + buffer protocol (no numpy/torch headers).
//
// pack_into(tokens, offsets, out, seq_len, cls_id, sep_id, pad_id) -> None
//   tokens  : contiguous int32 buffer, the documents concatenated
//   offsets : contiguous int64 buffer [n_docs + 1], document d is tokens[offsets[d]:offsets[d+1]]
//   out     : writable contiguous int32 buffer of n_rows * seq_len, where
//             n_rows = ceil(L / (seq_len - 2)), L = sum over non-empty docs of (len + 1)
// Token stream = doc1 [SEP] doc2 [SEP] ... (empty documents are skipped), cut into chunks of
// seq_len - 2; row = [CLS] chunk [SEP], the last row right-padded with pad_id.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

struct Buffer {
    Py_buffer view{};
    bool held = false;
    ~Buffer() {
        if (held) PyBuffer_Release(&view);
    }
};

bool is_signed_int_format(const char* fmt) {
    if (fmt == nullptr) return false;
    if (*fmt == '@' || *fmt == '=' || *fmt == '<' || *fmt == '>' || *fmt == '!') ++fmt;
    return (fmt[0] == 'b' || fmt[0] == 'h' || fmt[0] == 'i' || fmt[0] == 'l' || fmt[0] == 'q') && fmt[1] == '\0';
}

bool get_buffer(PyObject* obj, Buffer& buf, Py_ssize_t itemsize, bool writable, const char* name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &buf.view, flags) != 0) return false;
    buf.held = true;
    if (buf.view.itemsize != itemsize || !is_signed_int_format(buf.view.format)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous buffer of %zd-byte signed integers", name,
                     itemsize);
        return false;
    }
    return true;
}

PyObject* pack_into(PyObject*, PyObject* args) {
    PyObject *tokens_obj, *offsets_obj, *out_obj;
    Py_ssize_t seq_len;
    int cls_id, sep_id, pad_id;
    if (!PyArg_ParseTuple(args, "OOOniii:pack_into", &tokens_obj, &offsets_obj, &out_obj, &seq_len, &cls_id,
                          &sep_id, &pad_id))
        return nullptr;
    if (seq_len < 3) {
        PyErr_SetString(PyExc_ValueError, "seq_len must be >= 3");
        return nullptr;
    }
    Buffer tokens, offsets, out;
    if (!get_buffer(tokens_obj, tokens, 4, false, "tokens") || !get_buffer(offsets_obj, offsets, 8, false, "offsets") ||
        !get_buffer(out_obj, out, 4, true, "out"))
        return nullptr;

    const auto* tok = static_cast<const int32_t*>(tokens.view.buf);
    const auto* off = static_cast<const int64_t*>(offsets.view.buf);
    auto* dst = static_cast<int32_t*>(out.view.buf);
    const int64_t n_tokens = tokens.view.len / 4;
    const int64_t n_off = offsets.view.len / 8;
    const int64_t n_out = out.view.len / 4;
    const int64_t S = seq_len, C = seq_len - 2;

    if (n_off < 1) {
        PyErr_SetString(PyExc_ValueError, "offsets must have n_docs + 1 entries");
        return nullptr;
    }
    int64_t stream_len = 0;
    if (off[0] < 0) {
        PyErr_SetString(PyExc_ValueError, "offsets must start at >= 0");
        return nullptr;
    }
    for (int64_t d = 0; d + 1 < n_off; ++d) {
        if (off[d + 1] < off[d] || off[d + 1] > n_tokens) {
            PyErr_SetString(PyExc_ValueError, "offsets must be non-decreasing and within tokens");
            return nullptr;
        }
        if (off[d + 1] > off[d]) stream_len += off[d + 1] - off[d] + 1;
    }
    const int64_t n_rows = (stream_len + C - 1) / C;
    if (n_out != n_rows * S) {
        PyErr_Format(PyExc_ValueError, "out has %lld elements, expected %lld rows x %lld", (long long)n_out,
                     (long long)n_rows, (long long)S);
        return nullptr;
    }

    Py_BEGIN_ALLOW_THREADS;
    int64_t p = 0;  // position in the (virtual) token stream
    for (int64_t d = 0; d + 1 < n_off; ++d) {
        const int32_t* src = tok + off[d];
        int64_t n = off[d + 1] - off[d];
        if (n == 0) continue;
        while (n > 0) {
            const int64_t r = p / C, c = p % C, k = std::min(n, C - c);
            std::memcpy(dst + r * S + 1 + c, src, static_cast<size_t>(k) * sizeof(int32_t));
            p += k;
            src += k;
            n -= k;
        }
        dst[(p / C) * S + 1 + p % C] = sep_id;
        ++p;
    }
    for (int64_t r = 0; r < n_rows; ++r) {
        int32_t* row = dst + r * S;
        const int64_t used = std::min(C, stream_len - r * C);
        row[0] = cls_id;
        row[1 + used] = sep_id;
        std::fill(row + 2 + used, row + S, pad_id);
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"pack_into", pack_into, METH_VARARGS,
     "pack_into(tokens, offsets, out, seq_len, cls_id, sep_id, pad_id): BERT full-sentences packing into out."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "sift_fast._C", "Optional native helpers for sift_fast.", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
