/*
 * The pre-scan: one pass over an uncompressed remote-write payload that counts what it carries
 * (series, samples, labels, symbols, ...) without allocating anything per element, so a request over
 * the limits is refused (413) before anything is built for it. Reader helpers: _wire.h.
 */

#include "_wire.h"

/* What a payload carries. `labels` counts 1.0 Label messages or 2.0 label references (both including
 * exemplars'); `buckets` counts histogram spans, deltas, counts and custom values. */
typedef struct {
    Py_ssize_t series, samples, histograms, exemplars, labels, symbols, metadata, buckets;
} counts;

/* The scan stops as soon as one count passes its limit: the caller only needs to know which. */
typedef struct {
    Py_ssize_t series, samples, labels, symbols, buckets;
} limits;

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
        reader inner;
        CHECK(next_len_field(&r, &field, &inner));
        if (field == 0)
            break; /* only other wire types were left */
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
        reader inner;
        CHECK(next_len_field(&r, &field, &inner));
        if (field == 0)
            break; /* only other wire types were left */
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
        reader inner;
        CHECK(next_len_field(&r, &field, &inner));
        if (field == 0)
            break; /* only other wire types were left */
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

PyObject *wire_scan_v1(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return scan(args, kwargs, scan_v1_request);
}

PyObject *wire_scan_v2(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return scan(args, kwargs, scan_v2_request);
}
