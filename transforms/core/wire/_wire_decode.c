/*
 * Decode + validate remote-write 1.0 and 2.0 in one pass into a columnar batch.
 *
 * Float samples become columns (series index, int64 timestamp, float64 value bits as sent, and for 2.0
 * the start timestamp); each series gets a slot in the caller's series table (_wire_series.c), so label
 * strings, validation and JSON heads cost something only for label sets never seen before. Histograms,
 * exemplars and metadata are walked (bounds, UTF-8, 2.0 refs) and counted; the series that carry them
 * are listed so a slower path can read them, leaving floats untouched.
 *
 * Errors keep upb + transforms/core/wire/validation.py's precedence: malformed bytes anywhere (ValueError,
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

scan_status nomem(void) { return SCAN_ERROR; } /* buffer_* already set MemoryError */

scan_status read_string(reader *r, span *out) {
    reader inner;
    CHECK(read_len(r, &inner));
    if (!utf8_valid(inner.pos, inner.end - inner.pos))
        return fail(&inner, "invalid UTF-8 in a string field");
    out->ptr = inner.pos;
    out->len = inner.end - inner.pos;
    return SCAN_OK;
}

/* Remember a series that carries histograms or exemplars: the slower path reads it (1.0 and 2.0). */
scan_status note_slow(decoder *d, Py_ssize_t index) {
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
    if (buffer_add(&d->sample_series, &series, 4) < 0 || buffer_add(&d->timestamps, &ts, 8) < 0 ||
        buffer_add(&d->values, &value, 8) < 0 || (d->v2 && buffer_add(&d->starts, &start, 8) < 0))
        return nomem();
    return SCAN_OK;
}

static scan_status read_label(reader r, label_pair *out) {
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

static scan_status walk_varints(reader r) {
    uint64_t ignored;
    while (r.pos < r.end)
        CHECK(read_varint(&r, &ignored));
    return SCAN_OK;
}

/* A native histogram: bounds only (its values are read by the slower path). */
scan_status walk_histogram(reader r) {
    while (r.pos < r.end) {
        uint32_t f;
        reader inner;
        CHECK(next_len_field(&r, &f, &inner));
        if (f == 0)
            break; /* only other wire types were left */
        if (f == HIST_NEGATIVE_SPANS || f == HIST_POSITIVE_SPANS)
            CHECK(walk_fields(inner));
        else if (f == HIST_NEGATIVE_DELTAS || f == HIST_POSITIVE_DELTAS)
            CHECK(walk_varints(inner));
        else if ((f == HIST_NEGATIVE_COUNTS || f == HIST_POSITIVE_COUNTS || f == HIST_CUSTOM_VALUES) &&
                 (inner.end - inner.pos) % 8)
            return fail(&inner, "packed fixed-width field of a partial element");
    }
    return SCAN_OK;
}

/* repeated uint32, packed or not; upb keeps the low 32 bits of each varint */
scan_status read_refs(reader *r, int wt, buffer *refs) {
    uint64_t v;
    if (wt == WT_VARINT) {
        CHECK(read_varint(r, &v));
        uint32_t ref = (uint32_t)v;
        return buffer_add(refs, &ref, 4) < 0 ? nomem() : SCAN_OK;
    }
    if (wt != WT_LEN)
        return skip_field(r, wt);
    reader packed;
    CHECK(read_len(r, &packed));
    while (packed.pos < packed.end) {
        CHECK(read_varint(&packed, &v));
        uint32_t ref = (uint32_t)v;
        if (buffer_add(refs, &ref, 4) < 0)
            return nomem();
    }
    return SCAN_OK;
}

/* 2.0 refs: NULL if they come in pairs and are in range, else the message (new str); NULL + error on failure */
PyObject *check_refs(const uint32_t *refs, Py_ssize_t n, Py_ssize_t symbols, Py_ssize_t index,
                            const char *where) {
    if (n % 2)
        return PyUnicode_FromFormat("series %zd%s: labels_refs has odd length %zd", index, where, n);
    uint32_t top = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        top = refs[i] > top ? refs[i] : top;
    if (n && (Py_ssize_t)top >= symbols)
        return PyUnicode_FromFormat("series %zd%s: symbol reference %lu out of range (symbols has %zd entries)",
                                    index, where, (unsigned long)top, symbols);
    return NULL;
}

/* The series' label set (collected in d->pairs) -> its slot: looked up by key, validated and added if new. */
scan_status resolve_series(decoder *d, Py_ssize_t index, int32_t *slot, reader *v1_series) {
    PyObject *key = PyBytes_FromStringAndSize(d->key.data, d->key.len);
    if (!key)
        return SCAN_ERROR;
    Py_ssize_t found = table_find(&d->table, key);
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
            else if ((found = table_add(&d->table, key, (label_pair *)d->pairs.data, n)) < 0)
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

static scan_status v1_exemplar(reader r) {
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f == V1_EXEMPLAR_LABELS && wt == WT_LEN) {
            reader inner;
            label_pair pair;
            CHECK(read_len(&r, &inner));
            CHECK(read_label(inner, &pair));
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
        } else if (f == V1_SERIES_SAMPLES) {
            CHECK(read_sample(d, inner, (uint32_t)index));
        } else if (f == V1_SERIES_EXEMPLARS) {
            CHECK(v1_exemplar(inner));
            d->exemplars++;
            slow = 1;
        } else if (f == V1_SERIES_HISTOGRAMS) {
            CHECK(walk_histogram(inner));
            d->histograms++;
            slow = 1;
        }
    }
    int32_t slot;
    CHECK(resolve_series(d, index, &slot, &whole));
    if (buffer_add(&d->series_slot, &slot, 4) < 0)
        return nomem();
    if (slow)
        CHECK(note_slow(d, index));
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
    PyObject *entry = Py_BuildValue("(s#i)", (const char *)family.ptr, family.len, (int)(int32_t)type);
    int rc = entry ? PyList_Append(d->families, entry) : -1;
    Py_XDECREF(entry);
    return rc < 0 ? SCAN_ERROR : SCAN_OK;
}

static scan_status v1_request(decoder *d, reader r) {
    while (r.pos < r.end) {
        uint32_t f;
        reader inner;
        CHECK(next_len_field(&r, &f, &inner));
        if (f == 0)
            break; /* only other wire types were left */
        if (f == V1_REQUEST_TIMESERIES)
            CHECK(v1_series(d, inner, d->series++));
        else if (f == V1_REQUEST_METADATA) {
            CHECK(v1_metadata(d, inner));
            d->metadata++;
        }
    }
    return SCAN_OK;
}

static PyObject *column(buffer *b) { return PyBytes_FromStringAndSize(b->data, b->len); }

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
    PyObject *result = NULL;
    hint = hint < 0 ? 0 : (hint > (1 << 24) ? (1 << 24) : hint); /* a hint, not a promise: buffers grow */
    if (buffer_reserve(&d.sample_series, 4 * hint) < 0 || buffer_reserve(&d.timestamps, 8 * hint) < 0 ||
        buffer_reserve(&d.values, 8 * hint) < 0)
        goto done;
    if (!(d.slow = PyList_New(0)) || (!v2 && !(d.families = PyList_New(0))))
        goto done;
    reader r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    if ((v2 ? v2_request(&d, r) : v1_request(&d, r)) != SCAN_OK)
        goto done;
    PyObject *none = Py_None;
    result = Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:O,s:O,s:O}", "series", d.series, "samples",
        d.timestamps.len / 8, "histograms", d.histograms, "exemplars", d.exemplars, "metadata", d.metadata,
        "series_slot", column(&d.series_slot), "sample_series", column(&d.sample_series), "timestamps",
        column(&d.timestamps), "values", column(&d.values), "starts", v2 ? column(&d.starts) : Py_NewRef(none),
        "types", v2 ? column(&d.types) : Py_NewRef(none), "created", v2 ? column(&d.created) : Py_NewRef(none),
        "slow", d.slow, "families", d.families ? d.families : none, "error", d.pending ? d.pending : none);
done:
    PyBuffer_Release(&view);
    buffer_free(&d.series_slot);
    buffer_free(&d.sample_series);
    buffer_free(&d.timestamps);
    buffer_free(&d.values);
    buffer_free(&d.starts);
    buffer_free(&d.types);
    buffer_free(&d.created);
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
