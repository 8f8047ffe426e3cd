/*
 * Remote-write 2.0 (io.prometheus.write.v2.Request) into the columnar batch: the symbols table is
 * collected first (it may follow the series on the wire), then each series' refs are checked and
 * resolved into the same label-set key and table slot a 1.0 series with those labels would get.
 * Rules and messages: tests/reference/validation.py's validate_v2, in its order.
 */

#include "_wire_decode.h"

/* repeated uint32, packed or not, onto d->refs; upb keeps the low 32 bits of each varint. Each counts towards
 * the labels limit (which the caller gives in references: two per label pair). */
static scan_status read_refs(decoder *d, reader *r, int wt) {
    uint64_t v;
    if (wt == WT_VARINT) {
        CHECK(read_varint(r, &v));
        uint32_t ref = (uint32_t)v;
        if (buffer_add(&d->refs, &ref, 4) < 0)
            return nomem();
        d->labels++;
        return within(d->labels, d->limits.labels);
    }
    if (wt != WT_LEN)
        return skip_field(r, wt);
    reader packed;
    CHECK(read_len(r, &packed));
    while (packed.pos < packed.end) {
        CHECK(read_varint(&packed, &v));
        uint32_t ref = (uint32_t)v;
        if (buffer_add(&d->refs, &ref, 4) < 0)
            return nomem();
        d->labels++;
        CHECK(within(d->labels, d->limits.labels));
    }
    return SCAN_OK;
}

/* 2.0 refs: NULL if they come in pairs and are in range, else the message (new str); NULL + error on failure */
static PyObject *check_refs(const uint32_t *refs, Py_ssize_t n, Py_ssize_t symbols, Py_ssize_t index,
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

static scan_status v2_exemplar(decoder *d, reader r, Py_ssize_t index, PyObject **error) {
    Py_ssize_t mark = d->refs.len; /* the series' own refs sit below; the exemplar's go above, then leave */
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f == V2_EXEMPLAR_LABELS_REFS)
            CHECK(read_refs(d, &r, wt));
        else
            CHECK(skip_field(&r, wt));
    }
    if (!*error) {
        const uint32_t *refs = (const uint32_t *)(d->refs.data + mark);
        *error = check_refs(refs, (d->refs.len - mark) / 4, d->n_symbols, index, " exemplar");
        if (!*error && PyErr_Occurred())
            return SCAN_ERROR;
    }
    d->refs.len = mark;
    return SCAN_OK;
}

/* Metadata is a singular message field: repeats merge, each scalar's last occurrence wins. */
static scan_status v2_metadata(reader r, uint64_t *type, uint64_t *help, uint64_t *unit) {
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f == V2_METADATA_TYPE && wt == WT_VARINT)
            CHECK(read_varint(&r, type));
        else if (f == V2_METADATA_HELP_REF && wt == WT_VARINT)
            CHECK(read_varint(&r, help));
        else if (f == V2_METADATA_UNIT_REF && wt == WT_VARINT)
            CHECK(read_varint(&r, unit));
        else
            CHECK(skip_field(&r, wt));
    }
    return SCAN_OK;
}

static scan_status v2_labels(decoder *d, Py_ssize_t index, int32_t *slot) {
    const uint32_t *refs = (const uint32_t *)d->refs.data;
    Py_ssize_t n = d->refs.len / 4;
    PyObject *message = check_refs(refs, n, d->n_symbols, index, "");
    if (message) {
        pend(d, message);
        return SCAN_OK;
    }
    if (PyErr_Occurred())
        return SCAN_ERROR;
    d->key.len = d->pairs.len = 0;
    for (Py_ssize_t i = 0; i < n; i += 2) {
        label_pair pair = {d->symbols[refs[i]], d->symbols[refs[i + 1]]};
        if (buffer_add(&d->pairs, &pair, sizeof pair) < 0 || key_add_label(&d->key, pair.name, pair.value) < 0)
            return nomem();
    }
    return resolve_series(d, index, slot, NULL);
}

static scan_status v2_series(decoder *d, reader r, Py_ssize_t index) {
    reader whole = r;
    Py_ssize_t samples = 0, histograms = 0, exemplars = 0;
    int has_metadata = 0;
    uint64_t type = 0, help = 0, unit = 0, created = 0;
    PyObject *exemplar_error = NULL;
    scan_status status = SCAN_OK;
    d->refs.len = 0;
    while (r.pos < r.end && status == SCAN_OK) {
        uint32_t f;
        int wt;
        if ((status = read_key(&r, &f, &wt)) != SCAN_OK)
            break;
        if (f == V2_SERIES_LABELS_REFS) {
            status = read_refs(d, &r, wt);
            continue;
        }
        if (f == V2_SERIES_CREATED_TIMESTAMP && wt == WT_VARINT) {
            status = read_varint(&r, &created);
            continue;
        }
        if (wt != WT_LEN) {
            status = skip_field(&r, wt);
            continue;
        }
        reader inner;
        if ((status = read_len(&r, &inner)) != SCAN_OK)
            break;
        if (f == V2_SERIES_SAMPLES) {
            status = read_sample(d, inner, (uint32_t)index);
            samples++;
        } else if (f == V2_SERIES_HISTOGRAMS) {
            d->histograms++;
            histograms++;
            if ((status = walk_histogram(d, inner)) == SCAN_OK)
                status = samples_within(d);
        } else if (f == V2_SERIES_EXEMPLARS) {
            d->exemplars++;
            exemplars++;
            if ((status = v2_exemplar(d, inner, index, &exemplar_error)) == SCAN_OK)
                status = samples_within(d);
        } else if (f == V2_SERIES_METADATA) {
            status = v2_metadata(inner, &type, &help, &unit);
            has_metadata = 1;
        }
    }
    int32_t slot = -1;
    if (status == SCAN_OK && !d->pending) {
        status = v2_labels(d, index, &slot);
        PyObject *message = NULL;
        if (status != SCAN_OK || d->pending)
            ;
        else if (samples && histograms)
            message = PyUnicode_FromFormat("series %zd: a series must not carry both samples and histograms", index);
        else if (!samples && !histograms && !exemplars)
            message = PyUnicode_FromFormat(
                "series %zd: a series must carry at least one sample, histogram or exemplar", index);
        else if (exemplar_error) {
            message = exemplar_error;
            exemplar_error = NULL;
        } else if (has_metadata) {
            uint32_t top = (uint32_t)help > (uint32_t)unit ? (uint32_t)help : (uint32_t)unit;
            if ((Py_ssize_t)top >= (d->n_symbols > 1 ? d->n_symbols : 1))
                message = PyUnicode_FromFormat("series %zd: metadata symbol reference out of range", index);
        }
        if (message)
            pend(d, message);
        else if (PyErr_Occurred())
            status = SCAN_ERROR;
    }
    Py_XDECREF(exemplar_error);
    if (status != SCAN_OK)
        return status;
    d->metadata += has_metadata;
    if (d->validate_only)
        return SCAN_OK;
    int32_t type32 = (int32_t)type;
    int64_t created64 = (int64_t)created;
    if (buffer_add(&d->series_slot, &slot, 4) < 0 || buffer_add(&d->types, &type32, 4) < 0 ||
        buffer_add(&d->created, &created64, 8) < 0)
        return nomem();
    if (histograms || exemplars)
        CHECK(note_slow(d, index, whole));
    return SCAN_OK;
}

static scan_status collect_symbols(decoder *d, reader r) {
    Py_ssize_t cap = 0;
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f != V2_REQUEST_SYMBOLS || wt != WT_LEN) {
            CHECK(skip_field(&r, wt));
            continue;
        }
        span symbol;
        d->symbol_fields++;
        CHECK(within(d->symbol_fields, d->limits.symbols)); /* stop before a span past the limit is kept */
        CHECK(read_string(&r, &symbol));
        if (d->n_symbols == cap) {
            cap = cap ? 2 * cap : 64;
            span *grown = PyMem_Realloc(d->symbols, (size_t)cap * sizeof(span));
            if (!grown) {
                PyErr_NoMemory();
                return SCAN_ERROR;
            }
            d->symbols = grown;
        }
        d->symbols[d->n_symbols++] = symbol;
    }
    return SCAN_OK;
}

scan_status v2_request(decoder *d, reader r) {
    CHECK(collect_symbols(d, r));
    if (d->n_symbols && d->symbols[0].len)
        pend(d, PyUnicode_FromString("symbols[0] must be the empty string \"\""));
    if (PyErr_Occurred())
        return SCAN_ERROR;
    while (r.pos < r.end) {
        uint32_t f;
        int wt;
        CHECK(read_key(&r, &f, &wt));
        if (f != V2_REQUEST_TIMESERIES || wt != WT_LEN) {
            CHECK(skip_field(&r, wt));
            continue;
        }
        reader inner;
        CHECK(read_len(&r, &inner));
        Py_ssize_t index = d->series++;
        CHECK(within(d->series, d->limits.series));
        CHECK(v2_series(d, inner, index));
    }
    return SCAN_OK;
}
