/* Shared by the 1.0 and 2.0 decoders (_wire_decode.c, _wire_decode_v2.c). */
#ifndef TRANSFORMS_WIRE_DECODE_H
#define TRANSFORMS_WIRE_DECODE_H

#include "_wire.h"

typedef struct {
    series_table table;
    int v2;
    buffer series_slot;   /* int32 per series: its slot in the table (-1 once a rule is broken) */
    buffer sample_series; /* uint32 per float sample: its series index in the request */
    buffer timestamps;    /* int64 per float sample, ms */
    buffer values;        /* float64 per float sample, bits as sent */
    buffer starts;        /* 2.0: int64 per float sample, Sample.start_timestamp */
    buffer types;         /* 2.0: int32 per series, Metadata.type (0 without metadata) */
    buffer created;       /* 2.0: int64 per series, TimeSeries.created_timestamp (before rc.4) */
    Py_ssize_t series, histograms, exemplars, metadata;
    PyObject *slow;     /* series indices carrying histograms or exemplars */
    PyObject *families; /* 1.0: (metric_family_name, type) per metadata entry */
    PyObject *pending;  /* the first broken rule's message (str) */
    buffer key, pairs, refs;
    span *symbols;
    Py_ssize_t n_symbols;
} decoder;

extern const uint8_t EMPTY[1];

void pend(decoder *d, PyObject *message);
scan_status nomem(void);
scan_status note_slow(decoder *d, Py_ssize_t index);
scan_status read_string(reader *r, span *out);
scan_status read_sample(decoder *d, reader r, uint32_t series);
scan_status walk_histogram(reader r);
scan_status read_refs(reader *r, int wt, buffer *refs);
PyObject *check_refs(const uint32_t *refs, Py_ssize_t n, Py_ssize_t symbols, Py_ssize_t index, const char *where);
scan_status resolve_series(decoder *d, Py_ssize_t index, int32_t *slot, reader *v1_series);
scan_status v2_request(decoder *d, reader r);

#endif
