/*
 * The decoder's state and what the decode files share. They form layers; each calls only downwards:
 *
 *   _wire_decode.c         the entry points decode_v1/decode_v2 (columns) and validate_v1/validate_v2 (counts):
 *                          set up a decoder, run one walker, return its result
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

/* What one request may carry (the receiver's request limits). A walk stops with SCAN_OVER as soon as a count
 * passes its limit; the full decode runs with no limits (PY_SSIZE_T_MAX), so it never stops that way. */
typedef struct {
    Py_ssize_t series, samples, labels, symbols, buckets;
} request_limits;

typedef struct {
    series_table table;
    int v2;
    /* validate only (the receiver): the same walk, rules and messages, but no columns, no series-table entries
     * (names, labels, heads) and no side data; a label set that passed is remembered by its key in `known` */
    int validate_only;
    PyObject *known;      /* validate_only: set of label-set keys (bytes) validated by earlier requests */
    PyObject *fresh;      /* validate_only: set of this request's label-set keys that passed (its caller adds them
                           * to `known` only once the request is within its limits) */
    request_limits limits;
    Py_ssize_t samples;   /* float samples */
    Py_ssize_t labels;    /* 1.0 Label messages, 2.0 label references; exemplars' included (as the pre-scan) */
    Py_ssize_t buckets;   /* histogram spans, deltas, counts and custom values (as the pre-scan) */
    Py_ssize_t symbol_fields; /* 2.0 symbols seen (n_symbols: those kept, one fewer once past the limit) */
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

/* The pre-scan's limits as the walk goes (transforms/core/wire/_wire_scan.c counts the same things). */
static inline scan_status within(Py_ssize_t count, Py_ssize_t limit) { return count > limit ? SCAN_OVER : SCAN_OK; }
static inline scan_status samples_within(const decoder *d) {
    return within(d->samples + d->histograms + d->exemplars, d->limits.samples);
}

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
/* A native histogram: bounds, and its buckets counted. */
scan_status walk_histogram(decoder *d, reader r);
/* The label set in d->key (and, for 2.0, d->pairs) -> its table slot; 1.0 passes the series to parse
 * its Label fields only when the key is new. */
scan_status resolve_series(decoder *d, Py_ssize_t index, int32_t *slot, reader *v1_series);

/* ---- the walkers: _wire_decode_v1.c, _wire_decode_v2.c ---- */
scan_status v1_request(decoder *d, reader r);
scan_status v2_request(decoder *d, reader r);

#endif
