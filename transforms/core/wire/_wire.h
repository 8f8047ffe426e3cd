/*
 * transforms.core.wire._wire: the project's compiled remote-write wire-format module (C, CPython API only).
 *
 * One extension, split by job:
 *   _wire.c         the module and its method table
 *   _wire_scan.c    the pre-scan: counts what a payload carries (request limits, 413) allocating nothing
 *   _wire_decode*.c decode + validate 1.0/2.0 in one pass into a columnar batch (layers: _wire_decode.h), or
 *                   validate only under the request limits (the receiver: counts, nothing built)
 *   _wire_series.c  the series table: label-set keys, label validation, names and JSON heads made once
 *   _wire_columns.c typed views of the columns Python hands in (type, length and alignment checked)
 *   _wire_lines.c   archive lines (metric_to_log's ndjson) from a batch's columns, by UTC hour
 *   _wire_parse_lines.c  those lines read back into columns (the restore), declining any other shape
 *   _wire_encode.c  a sink's request bodies (1.0/2.0) from its columns, and where to cut them into requests
 *   _wire_xor.c     Prometheus' XOR chunks of a series (the reader's STREAMED_XOR_CHUNKS answers)
 *
 * Every read is bounds-checked: a truncated or overlong varint, a length past the end of its message,
 * a field number 0 or a group wire type raises ValueError ("protobuf: ... at byte N"). Walks descend only
 * into known message fields of the right wire type (as upb does; other fields are skipped as unknown),
 * so their depth is fixed and nothing recurses on input.
 *
 * Linkage: built with -fvisibility=hidden, so the shared object exports PyInit__wire alone; a function used
 * by one file is static, the others are declared here or in _wire_decode.h. Columns Python hands in are
 * checked before any cast to int32_t* / int64_t* (column_get).
 */
#ifndef TRANSFORMS_WIRE_H
#define TRANSFORMS_WIRE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Fixed-width fields are memcpy'd as they are on the wire, and columns handed to Python as bytes are read
 * as int32/int64/float64 by numpy and struct in native order: both are little-endian only. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "transforms.core.wire._wire reads protobuf fixed-width fields and its columns as little-endian"
#endif

/* ---- wire types (protobuf encoding) ---- */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* ---- remote-write 1.0: prometheus.WriteRequest ---- */
enum { V1_REQUEST_TIMESERIES = 1, V1_REQUEST_METADATA = 3 };
enum { V1_SERIES_LABELS = 1, V1_SERIES_SAMPLES = 2, V1_SERIES_EXEMPLARS = 3, V1_SERIES_HISTOGRAMS = 4 };
enum { V1_EXEMPLAR_LABELS = 1, V1_EXEMPLAR_VALUE = 2, V1_EXEMPLAR_TIMESTAMP = 3 };
enum { V1_LABEL_NAME = 1, V1_LABEL_VALUE = 2 };
enum { V1_METADATA_TYPE = 1, V1_METADATA_FAMILY = 2, V1_METADATA_HELP = 4, V1_METADATA_UNIT = 5 };

/* ---- samples (1.0 and 2.0; start_timestamp is 2.0 only) ---- */
enum { SAMPLE_VALUE = 1, SAMPLE_TIMESTAMP = 2, SAMPLE_START_TIMESTAMP = 3 };

/* ---- remote-write 2.0: io.prometheus.write.v2.Request ---- */
enum { V2_REQUEST_SYMBOLS = 4, V2_REQUEST_TIMESERIES = 5 };
enum { V2_SERIES_LABELS_REFS = 1, V2_SERIES_SAMPLES = 2, V2_SERIES_HISTOGRAMS = 3, V2_SERIES_EXEMPLARS = 4,
       V2_SERIES_METADATA = 5, V2_SERIES_CREATED_TIMESTAMP = 6 };
enum { V2_EXEMPLAR_LABELS_REFS = 1 };
enum { V2_METADATA_TYPE = 1, V2_METADATA_HELP_REF = 3, V2_METADATA_UNIT_REF = 4 };

/* ---- Histogram (same field numbers in 1.0 and 2.0) ---- */
enum { HIST_NEGATIVE_SPANS = 8, HIST_NEGATIVE_DELTAS = 9, HIST_NEGATIVE_COUNTS = 10, HIST_POSITIVE_SPANS = 11,
       HIST_POSITIVE_DELTAS = 12, HIST_POSITIVE_COUNTS = 13, HIST_CUSTOM_VALUES = 16 };

#define MAX_VARINT_BYTES 10

typedef struct {
    const uint8_t *start; /* of the whole payload, for offsets in error messages */
    const uint8_t *pos;
    const uint8_t *end;
} reader;

typedef enum { SCAN_OK = 0, SCAN_ERROR = -1, SCAN_OVER = 1 } scan_status;

static inline scan_status fail(const reader *r, const char *what) {
    PyErr_Format(PyExc_ValueError, "protobuf: %s at byte %zd", what, (Py_ssize_t)(r->pos - r->start));
    return SCAN_ERROR;
}

static inline scan_status read_varint(reader *r, uint64_t *out) {
    /* the common one-byte case first: most keys, lengths and small values */
    if (r->pos < r->end && !(*r->pos & 0x80)) {
        *out = *r->pos++;
        return SCAN_OK;
    }
    uint64_t value = 0;
    for (int i = 0; i < MAX_VARINT_BYTES; i++) {
        if (r->pos >= r->end)
            return fail(r, "truncated varint");
        uint8_t byte = *r->pos++;
        /* a tenth byte's bits past 64 are dropped, not refused: upb (the oracle) and protobuf's C++
         * parser accept such varints, so refusing them here would turn a request Prometheus'
         * own decoder takes into a 400 */
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (!(byte & 0x80)) {
            *out = value;
            return SCAN_OK;
        }
    }
    return fail(r, "varint longer than 10 bytes");
}

static inline scan_status read_key(reader *r, uint32_t *field, int *wire_type) {
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
static inline scan_status read_len(reader *r, reader *inner) {
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

static inline scan_status read_fixed64(reader *r, uint64_t *out) {
    if (r->end - r->pos < 8)
        return fail(r, "truncated fixed-width field");
    memcpy(out, r->pos, 8); /* little-endian hosts only (x86-64, arm64), as the bits are kept as read */
    r->pos += 8;
    return SCAN_OK;
}

static inline scan_status skip_field(reader *r, int wire_type) {
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

/* The next length-delimited field of r, skipping fields of other wire types (the messages walked this way
 * keep what they read in length-delimited fields): its number and contents, or *field = 0 once r has no
 * more (field numbers start at 1). */
static inline scan_status next_len_field(reader *r, uint32_t *field, reader *inner) {
    *field = 0;
    while (r->pos < r->end) {
        int wire_type;
        if (read_key(r, field, &wire_type) != SCAN_OK)
            return SCAN_ERROR;
        if (wire_type == WT_LEN)
            return read_len(r, inner);
        if (skip_field(r, wire_type) != SCAN_OK)
            return SCAN_ERROR;
        *field = 0;
    }
    return SCAN_OK;
}

#define CHECK(call)                                                                                        \
    do {                                                                                                   \
        scan_status status_ = (call);                                                                      \
        if (status_ != SCAN_OK)                                                                            \
            return status_;                                                                                \
    } while (0)

/* ---- a growable byte buffer (PyMem) ---- */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
} buffer;

static inline int buffer_reserve(buffer *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *grown = PyMem_Realloc(b->data, (size_t)cap);
    if (!grown) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = grown;
    b->cap = cap;
    return 0;
}

static inline int buffer_add(buffer *b, const void *data, Py_ssize_t size) {
    if (buffer_reserve(b, size) < 0)
        return -1;
    memcpy(b->data + b->len, data, (size_t)size);
    b->len += size;
    return 0;
}

static inline void buffer_free(buffer *b) {
    PyMem_Free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- the series table (owned by a Python object the caller holds; see transforms/core/wire/batch.py) ---- */
typedef struct {
    const uint8_t *ptr;
    Py_ssize_t len;
} span;

typedef struct {
    span name, value;
} label_pair;

typedef struct {
    PyObject *slots;            /* dict: label-set key (bytes) -> slot (int) */
    PyObject *names, *labels;   /* lists by slot: the metric name (str), ((name, value), ...) (tuple of str pairs) */
    PyObject *heads;            /* list by slot: the archive line's JSON head, '{"name":..,"tags":{..},' (bytes) */
    int legacy;                 /* legacy (Prometheus 2.x) name rules instead of any non-empty UTF-8 */
} series_table;

int utf8_valid(const uint8_t *s, Py_ssize_t n);
/* 0: valid; 1: invalid, *message set to the receiver's error text (new str); -1: Python error. */
int check_label_pairs(const label_pair *pairs, Py_ssize_t n, int legacy, Py_ssize_t index, PyObject **message);
/* Adds a validated label set under `key`; returns its slot, or -1 with a Python error set. */
Py_ssize_t table_add(series_table *t, PyObject *key, const label_pair *pairs, Py_ssize_t n);
/* The slot of `key`, -1 if absent, -2 on a Python error. */
Py_ssize_t table_find(series_table *t, PyObject *key);
/* A label pair as a 1.0 Label field (the 2.0 decoder's canonical label-set key). */
int key_add_label(buffer *key, span name, span value);

/* ---- columns from Python (_wire_columns.c) ---- */
typedef enum { COLUMN_INT32, COLUMN_INT64, COLUMN_BITS64 /* int64 or float64: a value's bits */ } column_type;

/* Views `obj` (a zeroed Py_buffer) as a column of `type`: its item count, or -1 with TypeError/ValueError
 * set (wrong type or width, not contiguous, a partial item, misaligned) and nothing to release. */
Py_ssize_t column_get(PyObject *obj, Py_buffer *view, column_type type, const char *name);
/* Releases a view column_get filled; a zeroed or already released one is left alone. */
void column_release(Py_buffer *view);

/* ---- entry points (one per job file) ---- */
PyObject *wire_scan_v1(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_scan_v2(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_decode_v1(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_decode_v2(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_validate_v1(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_validate_v2(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_format_lines(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_parse_lines(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_plan_requests(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_encode_v1(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_encode_v2(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *wire_xor_chunks(PyObject *self, PyObject *args, PyObject *kwargs);

#endif
