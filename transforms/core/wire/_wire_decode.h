/*
 * The decoder's state and what the decode files share. They form layers; each calls only downwards:
 *
 *   _wire_decode.c         the entry points decode_v1/decode_v2: set up a decoder, run one walker, return columns
 *   _wire_decode_v1.c      v1_request: the 1.0 walker          } neither calls the other
 *   _wire_decode_v2.c      v2_request: the 2.0 walker          }
 *   _wire_decode_common.c  samples, strings, labels, histograms and the series-table lookup, for both walkers
 *   _wire_series.c, _wire.h
 *
 * tests/unit/test_wire_linkage.py checks this graph from the object files' symbols.
 */
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
    buffer slow_spans;  /* int64 (start, end) per slow series: its TimeSeries message's bytes in the payload */
    PyObject *families; /* 1.0: (metric_family_name, type) per metadata entry */
    PyObject *pending;  /* the first broken rule's message (str) */
    buffer key, pairs, refs;
    span *symbols;
    Py_ssize_t n_symbols;
} decoder;

static inline scan_status nomem(void) { return SCAN_ERROR; } /* buffer_* already set MemoryError */

/* ---- _wire_decode_common.c ---- */
extern const uint8_t EMPTY[1];

/* Keeps the first broken rule's message (takes the reference; a later one is dropped). */
void pend(decoder *d, PyObject *message);
/* A series carrying histograms or exemplars, and its TimeSeries message's bytes (the slower path parses only
 * those). */
scan_status note_slow(decoder *d, Py_ssize_t index, reader series);
scan_status read_string(reader *r, span *out);
scan_status read_label(reader r, label_pair *out);
scan_status read_sample(decoder *d, reader r, uint32_t series);
scan_status walk_histogram(reader r);
/* The label set in d->key (and, for 2.0, d->pairs) -> its table slot; 1.0 passes the series to parse
 * its Label fields only when the key is new. */
scan_status resolve_series(decoder *d, Py_ssize_t index, int32_t *slot, reader *v1_series);

/* ---- the walkers: _wire_decode_v1.c, _wire_decode_v2.c ---- */
scan_status v1_request(decoder *d, reader r);
scan_status v2_request(decoder *d, reader r);

#endif
