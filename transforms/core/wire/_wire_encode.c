/*
 * Remote-write request bodies (uncompressed) from a sink's columns: what the forwarder sends.
 *
 * A sink's samples arrive here already grouped by output series and in time order (numpy did that):
 * per sample its output-series index (uint32), timestamp (int64 ms), value bits (uint64, so NaN payloads
 * and the stale marker survive) and start timestamp (int64, 0 = none). Per output series, its 1.0 label
 * bytes (the Label fields, exactly a TimeSeries' labels) or, for 2.0, its ((name, value), ...) and family
 * metadata (type, help, unit), from a dict by series index (absent or None: no metadata).
 *
 *   plan_requests  where to cut into requests: the same packing the Python path did (a series cut into
 *                  pieces of max_points, pieces packed up to max_points and max_bytes of 1.0 TimeSeries)
 *   encode_v1      prometheus.WriteRequest bytes of samples [lo, hi); start timestamps are not 1.0 and are
 *                  written only when given (as Sample field 3, which upb keeps as an unknown field: the
 *                  forwarder's Python path carries 2.0 start timestamps that way)
 *   encode_v2      io.prometheus.write.v2.Request bytes of samples [lo, hi): a symbols table per request
 *
 * Fields are written in field-number order and zero scalars left out, as upb serializes them.
 */

#include "_wire.h"

static Py_ssize_t varint_size(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static int put_uvarint(buffer *b, uint64_t v) {
    if (buffer_reserve(b, MAX_VARINT_BYTES) < 0)
        return -1;
    while (v >= 0x80) {
        b->data[b->len++] = (char)(v | 0x80);
        v >>= 7;
    }
    b->data[b->len++] = (char)v;
    return 0;
}

typedef struct {
    Py_buffer series, timestamps, values, starts;
    Py_ssize_t n;
    int has_starts;
} columns;

static void columns_release(columns *c) {
    column_release(&c->series);
    column_release(&c->timestamps);
    column_release(&c->values);
    column_release(&c->starts);
}

/* Views the four columns (checked by column_get); they must hold the same number of samples. */
static int columns_get(columns *c, PyObject *series, PyObject *timestamps, PyObject *values, PyObject *starts) {
    Py_ssize_t n_timestamps, n_values, n_starts = 0;
    c->has_starts = starts != Py_None;
    if ((c->n = column_get(series, &c->series, COLUMN_INT32, "series")) < 0 ||
        (n_timestamps = column_get(timestamps, &c->timestamps, COLUMN_INT64, "timestamps")) < 0 ||
        (n_values = column_get(values, &c->values, COLUMN_BITS64, "values")) < 0 ||
        (c->has_starts && (n_starts = column_get(starts, &c->starts, COLUMN_INT64, "starts")) < 0))
        return -1;
    if (n_timestamps != c->n || n_values != c->n || (c->has_starts && n_starts != c->n)) {
        PyErr_SetString(PyExc_ValueError, "columns differ in length");
        return -1;
    }
    return 0;
}

static inline uint32_t col_series(const columns *c, Py_ssize_t i) { return ((const uint32_t *)c->series.buf)[i]; }
static inline int64_t col_ts(const columns *c, Py_ssize_t i) { return ((const int64_t *)c->timestamps.buf)[i]; }
static inline uint64_t col_bits(const columns *c, Py_ssize_t i) { return ((const uint64_t *)c->values.buf)[i]; }
static inline int64_t col_start(const columns *c, Py_ssize_t i) {
    return c->has_starts ? ((const int64_t *)c->starts.buf)[i] : 0;
}

/* A Sample message's size; start timestamps count (the Python path's 1.0 shape kept them as unknown fields). */
static Py_ssize_t sample_size(const columns *c, Py_ssize_t i, int with_start) {
    Py_ssize_t size = col_bits(c, i) ? 9 : 0;
    int64_t ts = col_ts(c, i), start = with_start ? col_start(c, i) : 0;
    if (ts)
        size += 1 + varint_size((uint64_t)ts);
    if (start)
        size += 1 + varint_size((uint64_t)start);
    return size;
}

static int put_sample(buffer *b, const columns *c, Py_ssize_t i, int with_start) {
    Py_ssize_t size = sample_size(c, i, with_start);
    uint64_t bits = col_bits(c, i);
    int64_t ts = col_ts(c, i), start = with_start ? col_start(c, i) : 0;
    if (buffer_add(b, "\x12", 1) < 0 || put_uvarint(b, (uint64_t)size) < 0)
        return -1;
    if (bits && (buffer_add(b, "\x09", 1) < 0 || buffer_add(b, &bits, 8) < 0))
        return -1;
    if (ts && (buffer_add(b, "\x10", 1) < 0 || put_uvarint(b, (uint64_t)ts) < 0))
        return -1;
    if (start && (buffer_add(b, "\x18", 1) < 0 || put_uvarint(b, (uint64_t)start) < 0))
        return -1;
    return 0;
}

static Py_ssize_t key_length(PyObject *keys, uint32_t index) {
    if (index >= (uint32_t)PyList_GET_SIZE(keys)) {
        PyErr_SetString(PyExc_IndexError, "series index past the end of the series list");
        return -1;
    }
    PyObject *key = PyList_GET_ITEM(keys, index);
    if (!PyBytes_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "label keys must be bytes");
        return -1;
    }
    return PyBytes_GET_SIZE(key);
}

/* plan_requests(keys, series, timestamps, values, starts, max_points, max_bytes) -> list of cut positions */
PyObject *wire_plan_requests(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"keys", "series", "timestamps", "values", "starts", "max_points", "max_bytes", NULL};
    PyObject *keys, *series, *timestamps, *values, *starts;
    Py_ssize_t max_points, max_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOOOnn", kwlist, &PyList_Type, &keys, &series, &timestamps,
                                     &values, &starts, &max_points, &max_bytes))
        return NULL;
    if (max_points < 1) {
        PyErr_SetString(PyExc_ValueError, "max_points must be at least 1");
        return NULL;
    }
    columns c = {0};
    PyObject *cuts = NULL;
    if (columns_get(&c, series, timestamps, values, starts) < 0)
        goto done;
    cuts = PyList_New(0);
    if (!cuts)
        goto done;
    Py_ssize_t batch_points = 0, batch_bytes = 0, i = 0;
    while (i < c.n) {
        /* one series' run [i, end), cut into pieces of at most max_points, earliest first */
        uint32_t s = col_series(&c, i);
        Py_ssize_t end = i;
        while (end < c.n && col_series(&c, end) == s)
            end++;
        Py_ssize_t labels = key_length(keys, s);
        if (labels < 0)
            goto fail;
        for (Py_ssize_t lo = i; lo < end; lo += max_points) {
            Py_ssize_t hi = end - lo > max_points ? lo + max_points : end;
            Py_ssize_t size = labels;
            for (Py_ssize_t k = lo; k < hi; k++) {
                Py_ssize_t one = sample_size(&c, k, 1);
                size += 1 + varint_size((uint64_t)one) + one;
            }
            Py_ssize_t points = hi - lo;
            if (batch_points && (batch_points + points > max_points || batch_bytes + size > max_bytes)) {
                PyObject *at = PyLong_FromSsize_t(lo);
                if (!at || PyList_Append(cuts, at) < 0) {
                    Py_XDECREF(at);
                    goto fail;
                }
                Py_DECREF(at);
                batch_points = batch_bytes = 0;
            }
            batch_points += points;
            batch_bytes += size;
        }
        i = end;
    }
    goto done;
fail:
    Py_CLEAR(cuts);
done:
    columns_release(&c);
    return cuts;
}

static int check_range(const columns *c, Py_ssize_t lo, Py_ssize_t hi) {
    if (lo < 0 || hi > c->n || lo > hi) {
        PyErr_SetString(PyExc_IndexError, "sample range outside the columns");
        return -1;
    }
    return 0;
}

/* encode_v1(keys, series, timestamps, values, lo, hi, starts=None) -> WriteRequest bytes */
PyObject *wire_encode_v1(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"keys", "series", "timestamps", "values", "lo", "hi", "starts", NULL};
    PyObject *keys, *series, *timestamps, *values, *starts = Py_None;
    Py_ssize_t lo, hi;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOOnn|O", kwlist, &PyList_Type, &keys, &series, &timestamps,
                                     &values, &lo, &hi, &starts))
        return NULL;
    columns c = {0};
    buffer out = {0}, one = {0};
    PyObject *result = NULL;
    if (columns_get(&c, series, timestamps, values, starts) < 0 || check_range(&c, lo, hi) < 0)
        goto done;
    for (Py_ssize_t i = lo; i < hi;) {
        uint32_t s = col_series(&c, i);
        if (key_length(keys, s) < 0)
            goto done;
        PyObject *key = PyList_GET_ITEM(keys, s);
        one.len = 0;
        if (buffer_add(&one, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)) < 0)
            goto done;
        for (; i < hi && col_series(&c, i) == s; i++)
            if (put_sample(&one, &c, i, 1) < 0)
                goto done;
        if (buffer_add(&out, "\x0a", 1) < 0 || put_uvarint(&out, (uint64_t)one.len) < 0 ||
            buffer_add(&out, one.data, one.len) < 0)
            goto done;
    }
    result = PyBytes_FromStringAndSize(out.data ? out.data : "", out.len);
done:
    columns_release(&c);
    buffer_free(&out);
    buffer_free(&one);
    return result;
}

/* The symbol's index in this request's table (added on first use); -1 on error. */
static Py_ssize_t symbol_ref(PyObject *symbols, PyObject *order, PyObject *text) {
    PyObject *found = PyDict_GetItemWithError(symbols, text);
    if (found)
        return PyLong_AsSsize_t(found);
    if (PyErr_Occurred())
        return -1;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "labels and metadata texts must be str");
        return -1;
    }
    Py_ssize_t ref = PyList_GET_SIZE(order);
    PyObject *number = PyLong_FromSsize_t(ref);
    if (!number)
        return -1;
    int failed = PyDict_SetItem(symbols, text, number) < 0 || PyList_Append(order, text) < 0;
    Py_DECREF(number);
    return failed ? -1 : ref;
}

static int put_string_field(buffer *b, uint8_t tag, PyObject *text) {
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (!utf8 || buffer_add(b, &tag, 1) < 0 || put_uvarint(b, (uint64_t)size) < 0)
        return -1;
    return buffer_add(b, utf8, size);
}

/* One 2.0 TimeSeries (labels refs, samples, metadata) of samples [*i, run end) into `one`. */
static int put_v2_series(buffer *one, buffer *refs, const columns *c, Py_ssize_t *i, Py_ssize_t hi,
                         PyObject *labels, PyObject *metadata, PyObject *symbols, PyObject *order) {
    uint32_t s = col_series(c, *i);
    if (s >= (uint32_t)PyList_GET_SIZE(labels)) {
        PyErr_SetString(PyExc_IndexError, "series index past the end of the series list");
        return -1;
    }
    PyObject *pairs = PyList_GET_ITEM(labels, s), *number = PyLong_FromUnsignedLong(s);
    if (!number)
        return -1;
    PyObject *meta = PyDict_GetItemWithError(metadata, number); /* borrowed */
    Py_DECREF(number);
    if (!meta) {
        if (PyErr_Occurred())
            return -1;
        meta = Py_None;
    }
    if (!PyTuple_Check(pairs) || (meta != Py_None && (!PyTuple_Check(meta) || PyTuple_GET_SIZE(meta) != 3))) {
        PyErr_SetString(PyExc_TypeError, "labels must be tuples of (name, value); metadata (type, help, unit) or None");
        return -1;
    }
    one->len = refs->len = 0;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(pairs); k++) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a label must be a (name, value) tuple");
            return -1;
        }
        for (int side = 0; side < 2; side++) {
            Py_ssize_t ref = symbol_ref(symbols, order, PyTuple_GET_ITEM(pair, side));
            if (ref < 0 || put_uvarint(refs, (uint64_t)ref) < 0)
                return -1;
        }
    }
    if (refs->len && (buffer_add(one, "\x0a", 1) < 0 || put_uvarint(one, (uint64_t)refs->len) < 0 ||
                      buffer_add(one, refs->data, refs->len) < 0))
        return -1;
    for (; *i < hi && col_series(c, *i) == s; (*i)++)
        if (put_sample(one, c, *i, 1) < 0)
            return -1;
    if (meta != Py_None) {
        long type = PyLong_AsLong(PyTuple_GET_ITEM(meta, 0));
        if (type == -1 && PyErr_Occurred())
            return -1;
        Py_ssize_t help = symbol_ref(symbols, order, PyTuple_GET_ITEM(meta, 1));
        Py_ssize_t unit = help < 0 ? -1 : symbol_ref(symbols, order, PyTuple_GET_ITEM(meta, 2));
        if (unit < 0)
            return -1;
        uint8_t inner[3 * (1 + MAX_VARINT_BYTES)];
        buffer m = {(char *)inner, 0, sizeof inner}; /* never grows: three small fields */
        if ((type && (buffer_add(&m, "\x08", 1) < 0 || put_uvarint(&m, (uint64_t)type) < 0)) ||
            (help && (buffer_add(&m, "\x18", 1) < 0 || put_uvarint(&m, (uint64_t)help) < 0)) ||
            (unit && (buffer_add(&m, "\x20", 1) < 0 || put_uvarint(&m, (uint64_t)unit) < 0)))
            return -1;
        if (buffer_add(one, "\x2a", 1) < 0 || put_uvarint(one, (uint64_t)m.len) < 0 || buffer_add(one, m.data, m.len) < 0)
            return -1;
    }
    return 0;
}

/* encode_v2(labels, metadata, series, timestamps, values, starts, lo, hi) -> Request bytes */
PyObject *wire_encode_v2(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"labels", "metadata", "series", "timestamps", "values", "starts", "lo", "hi", NULL};
    PyObject *labels, *metadata, *series, *timestamps, *values, *starts;
    Py_ssize_t lo, hi;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OOOOnn", kwlist, &PyList_Type, &labels, &PyDict_Type,
                                     &metadata, &series, &timestamps, &values, &starts, &lo, &hi))
        return NULL;
    columns c = {0};
    buffer body = {0}, one = {0}, refs = {0}, out = {0};
    PyObject *result = NULL, *symbols = PyDict_New(), *order = PyList_New(0), *empty = PyUnicode_FromString("");
    if (!symbols || !order || !empty || symbol_ref(symbols, order, empty) < 0) /* index 0 is always "" */
        goto done;
    if (columns_get(&c, series, timestamps, values, starts) < 0 || check_range(&c, lo, hi) < 0)
        goto done;
    for (Py_ssize_t i = lo; i < hi;) {
        if (put_v2_series(&one, &refs, &c, &i, hi, labels, metadata, symbols, order) < 0 ||
            buffer_add(&body, "\x2a", 1) < 0 || put_uvarint(&body, (uint64_t)one.len) < 0 ||
            buffer_add(&body, one.data, one.len) < 0)
            goto done;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(order); k++)
        if (put_string_field(&out, 0x22, PyList_GET_ITEM(order, k)) < 0)
            goto done;
    if (buffer_add(&out, body.data ? body.data : "", body.len) < 0)
        goto done;
    result = PyBytes_FromStringAndSize(out.data ? out.data : "", out.len);
done:
    columns_release(&c);
    buffer_free(&body);
    buffer_free(&one);
    buffer_free(&refs);
    buffer_free(&out);
    Py_XDECREF(symbols);
    Py_XDECREF(order);
    Py_XDECREF(empty);
    return result;
}
