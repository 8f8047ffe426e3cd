/*
 * What the 1.0 and 2.0 walkers share (see _wire_decode.h for the layers), and the decode's overview:
 * decode + validate remote-write 1.0 and 2.0 in one pass into a columnar batch.
 *
 * Float samples become columns (series index, int64 timestamp, float64 value bits as sent, and for 2.0
 * the start timestamp); each series gets a slot in the caller's series table (_wire_series.c), so label
 * strings, validation and JSON heads cost something only for label sets never seen before. Histograms,
 * exemplars and metadata are walked (bounds, UTF-8, 2.0 refs) and counted; the series that carry them
 * are listed with the bytes of their TimeSeries (and, for 2.0, of each symbol), so a slower path can parse
 * those series alone; their float samples are in the columns like any other.
 *
 * Errors keep upb + tests/reference/validation.py's precedence: malformed bytes anywhere (ValueError,
 * "protobuf: ...") win over a rule broken by a series (InvalidPayload's message, raised as
 * transforms.core.errors' text through a ValueError subclass-free path: the first broken rule is kept in
 * `pending` while the walk goes on, and returned as the result's `error`).
 */

#include "_wire_decode.h"

const uint8_t EMPTY[1] = {0};

void pend(decoder *d, PyObject *message) {
    if (!d->pending)
        d->pending = message;
    else
        Py_XDECREF(message);
}

scan_status read_string(reader *r, span *out) {
    reader inner;
    CHECK(read_len(r, &inner));
    if (!utf8_valid(inner.pos, inner.end - inner.pos))
        return fail(&inner, "invalid UTF-8 in a string field");
    out->ptr = inner.pos;
    out->len = inner.end - inner.pos;
    return SCAN_OK;
}

/* Remember a series that carries histograms or exemplars: the slower path reads it (1.0 and 2.0), and only it. */
scan_status note_slow(decoder *d, Py_ssize_t index, reader series) {
    if (d->validate_only)
        return SCAN_OK;
    int64_t span[2] = {(int64_t)(series.pos - series.start), (int64_t)(series.end - series.start)};
    if (buffer_add(&d->slow_spans, span, sizeof span) < 0)
        return nomem();
    PyObject *i = PyLong_FromSsize_t(index);
    int rc = i ? PyList_Append(d->slow, i) : -1;
    Py_XDECREF(i);
    return rc < 0 ? SCAN_ERROR : SCAN_OK;
}

scan_status read_sample(decoder *d, reader r, uint32_t series) {
    uint64_t value = 0, ts = 0, start = 0;
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f == SAMPLE_VALUE && wt == WT_I64)
            CHECK(read_fixed64(&r, &value));
        else if (f == SAMPLE_TIMESTAMP && wt == WT_VARINT)
            CHECK(read_varint(&r, &ts));
        else if (d->v2 && f == SAMPLE_START_TIMESTAMP && wt == WT_VARINT)
            CHECK(read_varint(&r, &start));
        else
            CHECK(skip_field(&r, wt));
    }
    d->samples++;
    if (d->validate_only)
        return samples_within(d);
    if (buffer_add(&d->sample_series, &series, 4) < 0 || buffer_add(&d->timestamps, &ts, 8) < 0 ||
        buffer_add(&d->values, &value, 8) < 0 || (d->v2 && buffer_add(&d->starts, &start, 8) < 0))
        return nomem();
    return SCAN_OK;
}

scan_status read_label(reader r, label_pair *out) {
    out->name.ptr = out->value.ptr = EMPTY;
    out->name.len = out->value.len = 0;
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f == V1_LABEL_NAME && wt == WT_LEN)
            CHECK(read_string(&r, &out->name));
        else if (f == V1_LABEL_VALUE && wt == WT_LEN)
            CHECK(read_string(&r, &out->value));
        else
            CHECK(skip_field(&r, wt));
    }
    return SCAN_OK;
}

static scan_status walk_fields(reader r) {
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        CHECK(skip_field(&r, wt));
    }
    return SCAN_OK;
}

/* Packed varints: bounds, and their number added to *count. */
static scan_status walk_varints(reader r, Py_ssize_t *count) {
    uint64_t ignored;
    while (r.pos < r.end) {
        CHECK(read_varint(&r, &ignored));
        *count += 1;
    }
    return SCAN_OK;
}

/* A native histogram: bounds only (its values are read by the slower path), and its buckets counted as the
 * pre-scan counts them: a span per LEN field, deltas and fixed-width values packed or one by one (an element
 * of another wire type is an unknown field to upb, skipped uncounted). */
scan_status walk_histogram(decoder *d, reader r) {
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        int spans = f == HIST_NEGATIVE_SPANS || f == HIST_POSITIVE_SPANS;
        int deltas = f == HIST_NEGATIVE_DELTAS || f == HIST_POSITIVE_DELTAS;
        int fixed = f == HIST_NEGATIVE_COUNTS || f == HIST_POSITIVE_COUNTS || f == HIST_CUSTOM_VALUES;
        if (wt != WT_LEN) {
            d->buckets += (deltas && wt == WT_VARINT) || (fixed && wt == WT_I64);
            CHECK(skip_field(&r, wt));
        } else {
            reader inner;
            CHECK(read_len(&r, &inner));
            if (spans) {
                CHECK(walk_fields(inner));
                d->buckets++;
            } else if (deltas)
                CHECK(walk_varints(inner, &d->buckets));
            else if (fixed) {
                if ((inner.end - inner.pos) % 8)
                    return fail(&inner, "packed fixed-width field of a partial element");
                d->buckets += (inner.end - inner.pos) / 8;
            }
        }
        CHECK(within(d->buckets, d->limits.buckets));
    }
    return SCAN_OK;
}

/* The series' label set (collected in d->pairs) -> its slot: looked up by key, validated and added if new. */
scan_status resolve_series(decoder *d, Py_ssize_t index, int32_t *slot, reader *v1_series) {
    PyObject *key = PyBytes_FromStringAndSize(d->key.data, d->key.len);
    if (!key)
        return SCAN_ERROR;
    Py_ssize_t found;
    if (d->validate_only) {
        int known = PySet_Contains(d->known, key); /* 1, 0 or -1 (an error) */
        if (known == 0)
            known = PySet_Contains(d->fresh, key);
        found = known < 0 ? -2 : known - 1; /* validate_only has no slots: 0 stands for "valid" */
    } else
        found = table_find(&d->table, key);
    if (found == -1) {
        if (v1_series) { /* 1.0: parse the Label fields of a key never seen (bounds and UTF-8 first) */
            d->pairs.len = 0;
            reader r = *v1_series;
            while (r.pos < r.end) {
                uint32_t f;
                int wt;
                label_pair pair;
                reader inner;
                if (read_key(&r, &f, &wt) != SCAN_OK)
                    goto error;
                if (f != V1_SERIES_LABELS || wt != WT_LEN) {
                    if (skip_field(&r, wt) != SCAN_OK)
                        goto error;
                    continue;
                }
                if (read_len(&r, &inner) != SCAN_OK || read_label(inner, &pair) != SCAN_OK ||
                    buffer_add(&d->pairs, &pair, sizeof pair) < 0)
                    goto error;
            }
        }
        if (!d->pending) {
            PyObject *message = NULL;
            Py_ssize_t n = d->pairs.len / (Py_ssize_t)sizeof(label_pair);
            int rc = check_label_pairs((label_pair *)d->pairs.data, n, d->table.legacy, index, &message);
            if (rc < 0)
                goto error;
            if (rc)
                pend(d, message);
            else if (d->validate_only) {
                if (PySet_Add(d->fresh, key) < 0)
                    goto error;
                found = 0;
            } else if ((found = table_add(&d->table, key, (label_pair *)d->pairs.data, n)) < 0)
                goto error;
        }
    } else if (found < -1)
        goto error;
    Py_DECREF(key);
    *slot = (int32_t)found;
    return SCAN_OK;
error:
    Py_DECREF(key);
    return SCAN_ERROR;
}

