/* decode_v1/decode_v2: a decoder set up over the payload and the caller's series table, one walker run
 * (_wire_decode_v1.c or _wire_decode_v2.c), and its columns returned as bytes (see _wire_decode.h).
 * validate_v1/validate_v2: the same walker in validate-only mode, under the request limits: counts only. */

#include "_wire_decode.h"

static PyObject *column(buffer *b) { return PyBytes_FromStringAndSize(b->data, b->len); }

/* 2.0 with slow series: int64 (offset, length) of each symbol in the payload, so the slower path reads the
 * symbols its series refer to without parsing the request; None otherwise. */
static PyObject *symbol_spans(const decoder *d, const uint8_t *payload) {
    if (!d->v2 || !PyList_GET_SIZE(d->slow))
        return Py_NewRef(Py_None);
    PyObject *out = PyBytes_FromStringAndSize(NULL, d->n_symbols * 16);
    if (!out)
        return NULL;
    int64_t *spans = (int64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < d->n_symbols; i++) {
        spans[2 * i] = (int64_t)(d->symbols[i].ptr - payload);
        spans[2 * i + 1] = (int64_t)d->symbols[i].len;
    }
    return out;
}

static PyObject *decode(PyObject *args, PyObject *kwargs, int v2) {
    static char *keywords[] = {"data", "slots", "names", "labels", "heads", "legacy", "samples_hint", NULL};
    Py_buffer view;
    decoder d;
    memset(&d, 0, sizeof d);
    Py_ssize_t hint = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O!O!O!O!p|n", keywords, &view, &PyDict_Type, &d.table.slots,
                                     &PyList_Type, &d.table.names, &PyList_Type, &d.table.labels, &PyList_Type,
                                     &d.table.heads, &d.table.legacy, &hint))
        return NULL;
    d.v2 = v2;
    d.limits = (request_limits){PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX};
    PyObject *result = NULL;
    hint = hint < 0 ? 0 : (hint > (1 << 24) ? (1 << 24) : hint); /* a hint, not a promise: buffers grow */
    if (buffer_reserve(&d.sample_series, 4 * hint) < 0 || buffer_reserve(&d.timestamps, 8 * hint) < 0 ||
        buffer_reserve(&d.values, 8 * hint) < 0)
        goto done;
    if (!(d.slow = PyList_New(0)) || (!v2 && !(d.families = PyList_New(0))))
        goto done;
    reader r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    if ((v2 ? v2_request(&d, r) : v1_request(&d, r)) != SCAN_OK) /* no limits: never SCAN_OVER */
        goto done;
    PyObject *none = Py_None;
    result = Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:O,s:N,s:N,s:O,s:O}", "series", d.series, "samples",
        d.samples, "histograms", d.histograms, "exemplars", d.exemplars, "metadata", d.metadata,
        "series_slot", column(&d.series_slot), "sample_series", column(&d.sample_series), "timestamps",
        column(&d.timestamps), "values", column(&d.values), "starts", v2 ? column(&d.starts) : Py_NewRef(none),
        "types", v2 ? column(&d.types) : Py_NewRef(none), "created", v2 ? column(&d.created) : Py_NewRef(none),
        "slow", d.slow, "slow_spans", column(&d.slow_spans), "symbol_spans",
        symbol_spans(&d, (const uint8_t *)view.buf), "families", d.families ? d.families : none, "error",
        d.pending ? d.pending : none);
done:
    PyBuffer_Release(&view);
    buffer_free(&d.series_slot);
    buffer_free(&d.sample_series);
    buffer_free(&d.timestamps);
    buffer_free(&d.values);
    buffer_free(&d.starts);
    buffer_free(&d.types);
    buffer_free(&d.created);
    buffer_free(&d.slow_spans);
    buffer_free(&d.key);
    buffer_free(&d.pairs);
    buffer_free(&d.refs);
    PyMem_Free(d.symbols);
    Py_XDECREF(d.slow);
    Py_XDECREF(d.families);
    Py_XDECREF(d.pending);
    return result;
}

PyObject *wire_decode_v1(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return decode(args, kwargs, 0);
}

PyObject *wire_decode_v2(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return decode(args, kwargs, 1);
}

/* The receiver's walk: the decode's reads, rules and messages, and the pre-scan's limits as it goes, with nothing
 * built but the keys of the label sets that passed and `known` (a set) does not hold yet: returned as 'fresh',
 * for the caller to add to `known` once the request is within its limits, so a later request skips them. */
static PyObject *validate(PyObject *args, PyObject *kwargs, int v2) {
    static char *keywords[] = {"data", "known", "legacy", "max_series", "max_samples", "max_labels", "max_symbols",
                               "max_buckets", NULL};
    Py_buffer view;
    decoder d;
    memset(&d, 0, sizeof d);
    d.limits = (request_limits){PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O!p|$nnnnn", keywords, &view, &PySet_Type, &d.known,
                                     &d.table.legacy, &d.limits.series, &d.limits.samples, &d.limits.labels,
                                     &d.limits.symbols, &d.limits.buckets))
        return NULL;
    d.v2 = v2;
    d.validate_only = 1;
    PyObject *result = NULL;
    reader r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    scan_status status = SCAN_ERROR;
    if ((d.fresh = PySet_New(NULL)))
        status = v2 ? v2_request(&d, r) : v1_request(&d, r);
    if (status != SCAN_ERROR)
        result = Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:O,s:O,s:O}", "series", d.series, "samples", d.samples,
                               "histograms", d.histograms, "exemplars", d.exemplars, "metadata", d.metadata,
                               "labels", d.labels, "symbols", d.symbol_fields, "buckets", d.buckets, "complete",
                               status == SCAN_OK ? Py_True : Py_False, "error",
                               d.pending && status == SCAN_OK ? d.pending : Py_None, "fresh", d.fresh);
    PyBuffer_Release(&view);
    Py_XDECREF(d.fresh);
    buffer_free(&d.key);
    buffer_free(&d.pairs);
    buffer_free(&d.refs);
    PyMem_Free(d.symbols);
    Py_XDECREF(d.pending);
    return result;
}

PyObject *wire_validate_v1(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return validate(args, kwargs, 0);
}

PyObject *wire_validate_v2(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return validate(args, kwargs, 1);
}
