/*
 * Remote-write 1.0 (prometheus.WriteRequest) into the columnar batch: each series' Label fields, as
 * received, are its label-set key; they are parsed into pairs (and validated) only for a key the series
 * table has not seen. Rules and messages: tests/reference/validation.py's validate_v1, in its order.
 */

#include "_wire_decode.h"

static scan_status v1_exemplar(decoder *d, reader r) {
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f == V1_EXEMPLAR_LABELS && wt == WT_LEN) {
            reader inner;
            label_pair pair;
            CHECK(read_len(&r, &inner));
            CHECK(read_label(inner, &pair));
            d->labels++;
            CHECK(within(d->labels, d->limits.labels));
        } else
            CHECK(skip_field(&r, wt));
    }
    return SCAN_OK;
}

static scan_status v1_series(decoder *d, reader r, Py_ssize_t index) {
    reader whole = r;
    int slow = 0;
    d->key.len = 0;
    while (r.pos < r.end) {
        const uint8_t *field_start = r.pos;
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (wt != WT_LEN) {
            CHECK(skip_field(&r, wt));
            continue;
        }
        reader inner;
        CHECK(read_len(&r, &inner));
        if (f == V1_SERIES_LABELS) {
            if (buffer_add(&d->key, field_start, r.pos - field_start) < 0)
                return nomem();
            d->labels++;
            CHECK(within(d->labels, d->limits.labels));
        } else if (f == V1_SERIES_SAMPLES) {
            CHECK(read_sample(d, inner, (uint32_t)index));
        } else if (f == V1_SERIES_EXEMPLARS) {
            d->exemplars++;
            CHECK(v1_exemplar(d, inner));
            CHECK(samples_within(d));
            slow = 1;
        } else if (f == V1_SERIES_HISTOGRAMS) {
            d->histograms++;
            CHECK(walk_histogram(d, inner));
            CHECK(samples_within(d));
            slow = 1;
        }
    }
    int32_t slot;
    CHECK(resolve_series(d, index, &slot, &whole));
    if (!d->validate_only && buffer_add(&d->series_slot, &slot, 4) < 0)
        return nomem();
    if (slow)
        CHECK(note_slow(d, index, whole));
    return SCAN_OK;
}

static scan_status v1_metadata(decoder *d, reader r) {
    uint64_t type = 0;
    span family = {EMPTY, 0}, ignored;
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f == V1_METADATA_TYPE && wt == WT_VARINT)
            CHECK(read_varint(&r, &type));
        else if (f == V1_METADATA_FAMILY && wt == WT_LEN)
            CHECK(read_string(&r, &family));
        else if ((f == V1_METADATA_HELP || f == V1_METADATA_UNIT) && wt == WT_LEN)
            CHECK(read_string(&r, &ignored));
        else
            CHECK(skip_field(&r, wt));
    }
    if (d->validate_only)
        return SCAN_OK;
    PyObject *entry = Py_BuildValue("(s#i)", (const char *)family.ptr, family.len, (int)(int32_t)type);
    int rc = entry ? PyList_Append(d->families, entry) : -1;
    Py_XDECREF(entry);
    return rc < 0 ? SCAN_ERROR : SCAN_OK;
}

scan_status v1_request(decoder *d, reader r) {
    while (r.pos < r.end) {
        uint32_t f;
        reader inner;
        CHECK(next_len_field(&r, &f, &inner));
        if (f == 0)
            break; /* only other wire types were left */
        if (f == V1_REQUEST_TIMESERIES) {
            Py_ssize_t index = d->series++;
            CHECK(within(d->series, d->limits.series));
            CHECK(v1_series(d, inner, index));
        } else if (f == V1_REQUEST_METADATA) {
            d->metadata++;
            CHECK(within(d->metadata, d->limits.series)); /* one entry per metric family: bounded like series */
            CHECK(v1_metadata(d, inner));
        }
    }
    return SCAN_OK;
}
