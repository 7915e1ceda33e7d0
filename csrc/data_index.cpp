// sift_fast._C: the data path's index builders (like Megatron's helpers.cpp). Plain CPython API + the
// buffer protocol (no numpy/torch headers); sift_fast/data/samples.py and blend.py hold the numpy /
// Python fallbacks that produce the same arrays (tests/test_samples.py checks both ways).
//
// build_sample_index(stream_start, chunk, out) -> None
//   stream_start : contiguous int64 [D + 1], first stream position of each document, then the stream length
//   out          : writable contiguous int64 [N + 1, 2]; row i = (document, offset) of stream position
//                  min(i * chunk, stream length), the document clamped to D - 1
// build_blend_index(weights, out_dataset, out_sample) -> None
//   weights      : contiguous float64 [K], normalized blend weights
//   out_dataset  : writable contiguous int16 [N]; out_sample: writable contiguous int64 [N]
//   Sample i goes to the dataset d maximizing weights[d] * max(i, 1) - taken[d] (lowest d on ties);
//   out_sample[i] = taken[d] before the increment (the d-th dataset's running count).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <vector>

namespace {

struct Buffer {
    Py_buffer view{};
    bool held = false;
    ~Buffer() {
        if (held) PyBuffer_Release(&view);
    }
};

char format_kind(const char* fmt) {
    if (fmt == nullptr) return 0;
    if (*fmt == '@' || *fmt == '=' || *fmt == '<' || *fmt == '>' || *fmt == '!') ++fmt;
    return fmt[1] == '\0' ? fmt[0] : 0;
}

// kinds: "i" signed integer, "f" floating point
bool get_buffer(PyObject* obj, Buffer& buf, Py_ssize_t itemsize, char kind, bool writable, const char* name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &buf.view, flags) != 0) return false;
    buf.held = true;
    const char k = format_kind(buf.view.format);
    const bool is_int = k == 'b' || k == 'h' || k == 'i' || k == 'l' || k == 'q';
    const bool is_float = k == 'd' || k == 'f';
    if (buf.view.itemsize != itemsize || (kind == 'i' ? !is_int : !is_float)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous buffer of %zd-byte %s", name, itemsize,
                     kind == 'i' ? "signed integers" : "floats");
        return false;
    }
    return true;
}

PyObject* build_sample_index(PyObject*, PyObject* args) {
    PyObject *starts_obj, *out_obj;
    long long chunk;
    if (!PyArg_ParseTuple(args, "OLO:build_sample_index", &starts_obj, &chunk, &out_obj)) return nullptr;
    if (chunk < 1) {
        PyErr_SetString(PyExc_ValueError, "chunk must be >= 1");
        return nullptr;
    }
    Buffer starts, out;
    if (!get_buffer(starts_obj, starts, 8, 'i', false, "stream_start") ||
        !get_buffer(out_obj, out, 8, 'i', true, "out"))
        return nullptr;
    const auto* st = static_cast<const int64_t*>(starts.view.buf);
    auto* dst = static_cast<int64_t*>(out.view.buf);
    const int64_t n_starts = starts.view.len / 8, n_out = out.view.len / 8;
    if (n_starts < 1 || n_out < 2 || n_out % 2) {
        PyErr_SetString(PyExc_ValueError, "stream_start needs >= 1 entry and out an [N + 1, 2] shape");
        return nullptr;
    }
    for (int64_t d = 0; d + 1 < n_starts; ++d) {
        if (st[d + 1] <= st[d] || st[0] != 0) {
            PyErr_SetString(PyExc_ValueError, "stream_start must rise strictly from 0");
            return nullptr;
        }
    }
    const int64_t rows = n_out / 2, total = st[n_starts - 1], last_doc = n_starts > 1 ? n_starts - 2 : 0;
    Py_BEGIN_ALLOW_THREADS;
    int64_t doc = 0;
    for (int64_t i = 0; i < rows; ++i) {
        const int64_t pos = i * chunk < total ? i * chunk : total;
        while (doc < last_doc && st[doc + 1] <= pos) ++doc;
        dst[2 * i] = doc;
        dst[2 * i + 1] = pos - st[doc];
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

PyObject* build_blend_index(PyObject*, PyObject* args) {
    PyObject *weights_obj, *ds_obj, *sample_obj;
    if (!PyArg_ParseTuple(args, "OOO:build_blend_index", &weights_obj, &ds_obj, &sample_obj)) return nullptr;
    Buffer weights, ds, sample;
    if (!get_buffer(weights_obj, weights, 8, 'f', false, "weights") ||
        !get_buffer(ds_obj, ds, 2, 'i', true, "out_dataset") || !get_buffer(sample_obj, sample, 8, 'i', true, "out_sample"))
        return nullptr;
    const int64_t k = weights.view.len / 8, n = ds.view.len / 2;
    if (k < 1 || k > 32767 || sample.view.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "need 1..32767 weights and out arrays of the same length");
        return nullptr;
    }
    const auto* w = static_cast<const double*>(weights.view.buf);
    auto* out_ds = static_cast<int16_t*>(ds.view.buf);
    auto* out_s = static_cast<int64_t*>(sample.view.buf);
    std::vector<int64_t> taken(static_cast<size_t>(k), 0);
    Py_BEGIN_ALLOW_THREADS;
    for (int64_t i = 0; i < n; ++i) {
        const double t = i > 1 ? static_cast<double>(i) : 1.0;
        int64_t best = 0;
        double best_err = w[0] * t - static_cast<double>(taken[0]);
        for (int64_t d = 1; d < k; ++d) {
            const double err = w[d] * t - static_cast<double>(taken[static_cast<size_t>(d)]);
            if (err > best_err) {
                best = d;
                best_err = err;
            }
        }
        out_ds[i] = static_cast<int16_t>(best);
        out_s[i] = taken[static_cast<size_t>(best)]++;
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"build_sample_index", build_sample_index, METH_VARARGS,
     "build_sample_index(stream_start, chunk, out): (document, offset) of every packed sample's start."},
    {"build_blend_index", build_blend_index, METH_VARARGS,
     "build_blend_index(weights, out_dataset, out_sample): greedy weighted interleaving of datasets."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "sift_fast._C", "Optional native helpers for sift_fast's data path.",
                      -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
