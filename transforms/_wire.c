/*
 * transforms._wire: the project's compiled remote-write wire-format module.
 *
 * Today it holds the pre-scan: one pass over an uncompressed remote-write payload that counts
 * what it carries (series, samples, labels, symbols, ...) without allocating anything per
 * element, so a request over the limits is refused before upb builds a message for it.
 * It is the seed of the full columnar decoder: keep the reader (struct reader, read_varint,
 * read_key, skip_field) generic and the protocol knowledge in the named field numbers below.
 *
 * Every read is bounds-checked: a truncated or overlong varint, a length past the end of its
 * message, a field number 0 or a group wire type raises ValueError with the byte offset.
 * The scan descends only into known message fields of the right wire type (as upb does; other
 * fields are skipped as unknown), so its depth is fixed and it never recurses on input.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- wire types (protobuf encoding) ---- */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* ---- remote-write 1.0: prometheus.WriteRequest ---- */
enum { V1_REQUEST_TIMESERIES = 1, V1_REQUEST_METADATA = 3 };
enum { V1_SERIES_LABELS = 1, V1_SERIES_SAMPLES = 2, V1_SERIES_EXEMPLARS = 3, V1_SERIES_HISTOGRAMS = 4 };
enum { V1_EXEMPLAR_LABELS = 1 };

/* ---- remote-write 2.0: io.prometheus.write.v2.Request ---- */
enum { V2_REQUEST_SYMBOLS = 4, V2_REQUEST_TIMESERIES = 5 };
enum { V2_SERIES_LABELS_REFS = 1, V2_SERIES_SAMPLES = 2, V2_SERIES_HISTOGRAMS = 3, V2_SERIES_EXEMPLARS = 4,
       V2_SERIES_METADATA = 5 };
enum { V2_EXEMPLAR_LABELS_REFS = 1 };

/* ---- Histogram (same field numbers in 1.0 and 2.0) ---- */
enum { HIST_NEGATIVE_SPANS = 8, HIST_NEGATIVE_DELTAS = 9, HIST_NEGATIVE_COUNTS = 10, HIST_POSITIVE_SPANS = 11,
       HIST_POSITIVE_DELTAS = 12, HIST_POSITIVE_COUNTS = 13, HIST_CUSTOM_VALUES = 16 };

#define MAX_VARINT_BYTES 10

typedef struct {
    const uint8_t *start; /* of the whole payload, for offsets in error messages */
    const uint8_t *pos;
    const uint8_t *end;
} reader;

/* What a payload carries. `labels` counts 1.0 Label messages or 2.0 label references (both including
 * exemplars'); `buckets` counts histogram spans, deltas, counts and custom values. */
typedef struct {
    Py_ssize_t series, samples, histograms, exemplars, labels, symbols, metadata, buckets;
} counts;

/* The scan stops as soon as one count passes its limit: the caller only needs to know which. */
typedef struct {
    Py_ssize_t series, samples, labels, symbols, buckets;
} limits;

typedef enum { SCAN_OK = 0, SCAN_ERROR = -1, SCAN_OVER = 1 } scan_status;

static scan_status fail(const reader *r, const char *what) {
    PyErr_Format(PyExc_ValueError, "protobuf: %s at byte %zd", what, (Py_ssize_t)(r->pos - r->start));
    return SCAN_ERROR;
}

static scan_status read_varint(reader *r, uint64_t *out) {
    uint64_t value = 0;
    for (int i = 0; i < MAX_VARINT_BYTES; i++) {
        if (r->pos >= r->end)
            return fail(r, "truncated varint");
        uint8_t byte = *r->pos++;
        if (i == MAX_VARINT_BYTES - 1 && byte > 1)
            return fail(r, "varint overflows 64 bits");
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (!(byte & 0x80)) {
            *out = value;
            return SCAN_OK;
        }
    }
    return fail(r, "varint longer than 10 bytes");
}

static scan_status read_key(reader *r, uint32_t *field, int *wire_type) {
    uint64_t key;
    if (read_varint(r, &key) != SCAN_OK)
        return SCAN_ERROR;
    *field = (uint32_t)(key >> 3);
    *wire_type = (int)(key & 7);
    if (key >> 3 == 0 || key >> 3 > 0x1FFFFFFF)
        return fail(r, "invalid field number");
    if (*wire_type == WT_SGROUP || *wire_type == WT_EGROUP || *wire_type > WT_I32)
        return fail(r, "unsupported wire type");
    return SCAN_OK;
}

/* A length-delimited field's contents as a sub-reader; the parent skips past it. */
static scan_status read_len(reader *r, reader *inner) {
    uint64_t length;
    if (read_varint(r, &length) != SCAN_OK)
        return SCAN_ERROR;
    if (length > (uint64_t)(r->end - r->pos))
        return fail(r, "length past the end of the message");
    inner->start = r->start;
    inner->pos = r->pos;
    inner->end = r->pos + length;
    r->pos += length;
    return SCAN_OK;
}

static scan_status skip_field(reader *r, int wire_type) {
    uint64_t ignored;
    reader inner;
    switch (wire_type) {
    case WT_VARINT:
        return read_varint(r, &ignored);
    case WT_I64:
    case WT_I32: {
        Py_ssize_t size = wire_type == WT_I64 ? 8 : 4;
        if (r->end - r->pos < size)
            return fail(r, "truncated fixed-width field");
        r->pos += size;
        return SCAN_OK;
    }
    case WT_LEN:
        return read_len(r, &inner);
    default:
        return fail(r, "unsupported wire type");
    }
}

/* Elements of a repeated scalar field (fixed_size 8 for doubles, 0 for varints): packed (LEN) or one
 * unpacked element. Any other wire type is an unknown field to upb, so it is skipped uncounted.
 * Fixed-width packed data must be a whole number of elements; packed varints are counted by their
 * last bytes. */
static scan_status count_repeated_scalar(reader *r, int wire_type, int fixed_size, Py_ssize_t *count) {
    if (wire_type != WT_LEN) {
        if (wire_type == (fixed_size ? WT_I64 : WT_VARINT))
            *count += 1;
        return skip_field(r, wire_type);
    }
    reader packed;
    if (read_len(r, &packed) != SCAN_OK)
        return SCAN_ERROR;
    Py_ssize_t size = packed.end - packed.pos;
    if (fixed_size) {
        if (size % fixed_size)
            return fail(&packed, "packed fixed-width field of a partial element");
        *count += size / fixed_size;
        return SCAN_OK;
    }
    if (size && (packed.end[-1] & 0x80))
        return fail(&packed, "truncated packed varint");
    for (const uint8_t *p = packed.pos; p < packed.end; p++)
        *count += !(*p & 0x80);
    return SCAN_OK;
}

#define COUNT(field, limit_field)                                                                          \
    do {                                                                                                   \
        c->field += 1;                                                                                     \
        if (c->field > lim->limit_field)                                                                   \
            return SCAN_OVER;                                                                              \
    } while (0)

#define CHECK(call)                                                                                        \
    do {                                                                                                   \
        scan_status status_ = (call);                                                                      \
        if (status_ != SCAN_OK)                                                                            \
            return status_;                                                                                \
    } while (0)

static scan_status scan_histogram(reader r, counts *c, const limits *lim) {
    while (r.pos < r.end) {
        uint32_t field;
        int wt;
        CHECK(read_key(&r, &field, &wt));
        switch (field) {
        case HIST_NEGATIVE_SPANS:
        case HIST_POSITIVE_SPANS:
            if (wt == WT_LEN)
                c->buckets += 1;
            CHECK(skip_field(&r, wt));
            break;
        case HIST_NEGATIVE_DELTAS:
        case HIST_POSITIVE_DELTAS:
            CHECK(count_repeated_scalar(&r, wt, 0, &c->buckets));
            break;
        case HIST_NEGATIVE_COUNTS:
        case HIST_POSITIVE_COUNTS:
        case HIST_CUSTOM_VALUES:
            CHECK(count_repeated_scalar(&r, wt, 8, &c->buckets));
            break;
        default:
            CHECK(skip_field(&r, wt));
        }
        if (c->buckets > lim->buckets)
            return SCAN_OVER;
    }
    return SCAN_OK;
}

/* 1.0 Exemplar: its labels count toward the request's labels. */
static scan_status scan_v1_exemplar(reader r, counts *c, const limits *lim) {
    while (r.pos < r.end) {
        uint32_t field;
        int wt;
        CHECK(read_key(&r, &field, &wt));
        if (field == V1_EXEMPLAR_LABELS && wt == WT_LEN)
            COUNT(labels, labels);
        CHECK(skip_field(&r, wt));
    }
    return SCAN_OK;
}

static scan_status scan_v1_series(reader r, counts *c, const limits *lim) {
    while (r.pos < r.end) {
        uint32_t field;
        int wt;
        CHECK(read_key(&r, &field, &wt));
        if (wt != WT_LEN) {
            CHECK(skip_field(&r, wt));
            continue;
        }
        reader inner;
        CHECK(read_len(&r, &inner));
        switch (field) {
        case V1_SERIES_LABELS:
            COUNT(labels, labels);
            break;
        case V1_SERIES_SAMPLES:
            COUNT(samples, samples);
            break;
        case V1_SERIES_EXEMPLARS:
            c->exemplars += 1;
            CHECK(scan_v1_exemplar(inner, c, lim));
            break;
        case V1_SERIES_HISTOGRAMS:
            c->histograms += 1;
            CHECK(scan_histogram(inner, c, lim));
            break;
        default:
            break;
        }
        if (c->samples + c->histograms + c->exemplars > lim->samples)
            return SCAN_OVER;
    }
    return SCAN_OK;
}

static scan_status scan_v1_request(reader r, counts *c, const limits *lim) {
    while (r.pos < r.end) {
        uint32_t field;
        int wt;
        CHECK(read_key(&r, &field, &wt));
        if (wt != WT_LEN) {
            CHECK(skip_field(&r, wt));
            continue;
        }
        reader inner;
        CHECK(read_len(&r, &inner));
        if (field == V1_REQUEST_TIMESERIES) {
            COUNT(series, series);
            CHECK(scan_v1_series(inner, c, lim));
        } else if (field == V1_REQUEST_METADATA) {
            /* one metadata entry per metric family: bounded like series */
            c->metadata += 1;
            if (c->metadata > lim->series)
                return SCAN_OVER;
        }
    }
    return SCAN_OK;
}

static scan_status scan_v2_exemplar(reader r, counts *c, const limits *lim) {
    while (r.pos < r.end) {
        uint32_t field;
        int wt;
        CHECK(read_key(&r, &field, &wt));
        if (field == V2_EXEMPLAR_LABELS_REFS) {
            CHECK(count_repeated_scalar(&r, wt, 0, &c->labels));
            if (c->labels > lim->labels)
                return SCAN_OVER;
        } else {
            CHECK(skip_field(&r, wt));
        }
    }
    return SCAN_OK;
}

static scan_status scan_v2_series(reader r, counts *c, const limits *lim) {
    int has_metadata = 0; /* a singular message field: repeats merge into one */
    while (r.pos < r.end) {
        uint32_t field;
        int wt;
        CHECK(read_key(&r, &field, &wt));
        if (field == V2_SERIES_LABELS_REFS) {
            CHECK(count_repeated_scalar(&r, wt, 0, &c->labels));
            if (c->labels > lim->labels)
                return SCAN_OVER;
            continue;
        }
        if (wt != WT_LEN) {
            CHECK(skip_field(&r, wt));
            continue;
        }
        reader inner;
        CHECK(read_len(&r, &inner));
        switch (field) {
        case V2_SERIES_SAMPLES:
            c->samples += 1;
            break;
        case V2_SERIES_HISTOGRAMS:
            c->histograms += 1;
            CHECK(scan_histogram(inner, c, lim));
            break;
        case V2_SERIES_EXEMPLARS:
            c->exemplars += 1;
            CHECK(scan_v2_exemplar(inner, c, lim));
            break;
        case V2_SERIES_METADATA:
            has_metadata = 1;
            break;
        default:
            break;
        }
        if (c->samples + c->histograms + c->exemplars > lim->samples)
            return SCAN_OVER;
    }
    c->metadata += has_metadata;
    return SCAN_OK;
}

static scan_status scan_v2_request(reader r, counts *c, const limits *lim) {
    while (r.pos < r.end) {
        uint32_t field;
        int wt;
        CHECK(read_key(&r, &field, &wt));
        if (wt != WT_LEN) {
            CHECK(skip_field(&r, wt));
            continue;
        }
        reader inner;
        CHECK(read_len(&r, &inner));
        if (field == V2_REQUEST_SYMBOLS) {
            COUNT(symbols, symbols);
        } else if (field == V2_REQUEST_TIMESERIES) {
            COUNT(series, series);
            CHECK(scan_v2_series(inner, c, lim));
        }
    }
    return SCAN_OK;
}

typedef scan_status (*request_scanner)(reader, counts *, const limits *);

/* Shared by scan_v1/scan_v2: parse arguments, scan with the GIL released, build the result. */
static PyObject *scan(PyObject *args, PyObject *kwargs, request_scanner scanner) {
    static char *keywords[] = {"data", "max_series", "max_samples", "max_labels", "max_symbols", "max_buckets",
                               NULL};
    Py_buffer view;
    limits lim = {PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|$nnnnn", keywords, &view, &lim.series, &lim.samples,
                                     &lim.labels, &lim.symbols, &lim.buckets))
        return NULL;
    counts c;
    memset(&c, 0, sizeof c);
    reader r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    /* The GIL stays held: fail() raises from inside the scan, and a scan within the limits takes
     * milliseconds. (Releasing it would need errors recorded and raised afterwards.) */
    scan_status status = scanner(r, &c, &lim);
    PyBuffer_Release(&view);
    if (status == SCAN_ERROR)
        return NULL;
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:O}", "series", c.series, "samples", c.samples,
                         "histograms", c.histograms, "exemplars", c.exemplars, "labels", c.labels, "symbols",
                         c.symbols, "metadata", c.metadata, "buckets", c.buckets, "complete",
                         status == SCAN_OK ? Py_True : Py_False);
}

static PyObject *scan_v1(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return scan(args, kwargs, scan_v1_request);
}

static PyObject *scan_v2(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return scan(args, kwargs, scan_v2_request);
}

static PyMethodDef methods[] = {
    {"scan_v1", (PyCFunction)(void (*)(void))scan_v1, METH_VARARGS | METH_KEYWORDS,
     "scan_v1(data, *, max_series, max_samples, max_labels, max_symbols, max_buckets) -> dict\n\n"
     "Count what an uncompressed prometheus.WriteRequest carries. Stops early once a count passes its\n"
     "limit (then 'complete' is False). Raises ValueError on malformed wire format."},
    {"scan_v2", (PyCFunction)(void (*)(void))scan_v2, METH_VARARGS | METH_KEYWORDS,
     "scan_v2(data, *, max_series, max_samples, max_labels, max_symbols, max_buckets) -> dict\n\n"
     "Like scan_v1, for io.prometheus.write.v2.Request ('labels' counts label references)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "transforms._wire",
    .m_doc = "Compiled remote-write wire-format routines (see transforms/wire.py for the typed front).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__wire(void) { return PyModule_Create(&module); }
