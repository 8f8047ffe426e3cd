/*
 * The series table: one entry per distinct label set, made once and reused across requests.
 *
 * A series is looked up by its label-set key (1.0: the Label fields' bytes as received; 2.0: the resolved
 * pairs encoded as 1.0 Label fields). Equal keys are equal label sets, so only a key never seen before
 * is validated (the rules and messages of tests/reference/validation.py) and turned into Python strings and
 * its archive JSON head. The containers belong to a Python object the caller holds (transforms.core.wire.batch).
 */

#include "_wire.h"

/* Strict UTF-8 (as upb and CPython check it): no overlongs, no surrogates, nothing above U+10FFFF. */
int utf8_valid(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        /* ASCII runs, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t chunk;
            memcpy(&chunk, s + i, 8);
            if (chunk & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return 0;
        if (i + need >= n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (Py_ssize_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

static int span_equals(span s, const char *text) {
    size_t n = strlen(text);
    return (size_t)s.len == n && memcmp(s.ptr, text, n) == 0;
}

/* Byte order, which for valid UTF-8 is code point order (Python's str comparison). */
static int span_compare(span a, span b) {
    Py_ssize_t n = a.len < b.len ? a.len : b.len;
    int c = memcmp(a.ptr, b.ptr, (size_t)n);
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* [a-zA-Z_][a-zA-Z0-9_]* for labels; ':' also allowed for metric names. */
static int legacy_name(span s, int colon) {
    if (!s.len)
        return 0;
    for (Py_ssize_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static PyObject *span_str(span s) { return PyUnicode_DecodeUTF8((const char *)s.ptr, s.len, "strict"); }

static int invalid(PyObject **message, Py_ssize_t index, const char *format, span a, span b) {
    PyObject *first = span_str(a), *second = b.ptr ? span_str(b) : NULL;
    if (!first || (b.ptr && !second)) {
        Py_XDECREF(first);
        return -1;
    }
    if (second)
        *message = PyUnicode_FromFormat(format, index, first, second);
    else
        *message = PyUnicode_FromFormat(format, index, first);
    Py_DECREF(first);
    Py_XDECREF(second);
    return *message ? 1 : -1;
}

int check_label_pairs(const label_pair *pairs, Py_ssize_t n, int legacy, Py_ssize_t index, PyObject **message) {
    static const span none = {NULL, 0};
    if (!n) {
        *message = PyUnicode_FromFormat("series %zd: series has no labels", index);
        return *message ? 1 : -1;
    }
    int has_name = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        span name = pairs[i].name;
        if (i > 0) {
            int order = span_compare(name, pairs[i - 1].name);
            if (order == 0)
                return invalid(message, index, "series %zd: duplicate label name %R", name, none);
            if (order < 0)
                return invalid(message, index, "series %zd: label names not sorted (%R before %R)",
                               pairs[i - 1].name, name);
        }
        if (!name.len || (legacy && !legacy_name(name, 0)))
            return invalid(message, index, "series %zd: invalid label name %R", name, none);
        if (span_equals(name, "__name__")) {
            span value = pairs[i].value;
            if (!value.len || (legacy && !legacy_name(value, 1)))
                return invalid(message, index, "series %zd: invalid metric name %R", value, none);
            has_name = 1;
        }
    }
    if (!has_name) {
        *message = PyUnicode_FromFormat("series %zd: series has no __name__ label", index);
        return *message ? 1 : -1;
    }
    return 0;
}

static int json_string(buffer *b, span s) {
    static const char hex[] = "0123456789abcdef";
    if (buffer_reserve(b, s.len * 6 + 2) < 0)
        return -1;
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

static int put_varint(buffer *b, uint64_t v) {
    uint8_t tmp[MAX_VARINT_BYTES];
    int n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return buffer_add(b, tmp, n);
}

int key_add_label(buffer *key, span name, span value) {
    /* proto3 leaves empty strings out */
    uint8_t sizes[2 * MAX_VARINT_BYTES];
    buffer prefix = {(char *)sizes, 0, sizeof sizes}; /* never grows: two varints of at most 10 bytes */
    Py_ssize_t inner = 0;
    if (name.len) {
        Py_ssize_t before = prefix.len;
        put_varint(&prefix, (uint64_t)name.len);
        inner += 1 + (prefix.len - before) + name.len;
    }
    if (value.len) {
        Py_ssize_t before = prefix.len;
        put_varint(&prefix, (uint64_t)value.len);
        inner += 1 + (prefix.len - before) + value.len;
    }
    if (buffer_add(key, "\x0a", 1) < 0 || put_varint(key, (uint64_t)inner) < 0)
        return -1;
    if (name.len && (buffer_add(key, "\x0a", 1) < 0 || put_varint(key, (uint64_t)name.len) < 0 ||
                     buffer_add(key, name.ptr, name.len) < 0))
        return -1;
    if (value.len && (buffer_add(key, "\x12", 1) < 0 || put_varint(key, (uint64_t)value.len) < 0 ||
                      buffer_add(key, value.ptr, value.len) < 0))
        return -1;
    return 0;
}

Py_ssize_t table_find(series_table *t, PyObject *key) {
    PyObject *slot = PyDict_GetItemWithError(t->slots, key);
    if (!slot)
        return PyErr_Occurred() ? -2 : -1;
    return PyLong_AsSsize_t(slot);
}

/* '{"name":<name>,"tags":{<k>:<v>,...},' (metric_to_log's head: every label but __name__ is a tag) */
static PyObject *json_head(const label_pair *pairs, Py_ssize_t n) {
    buffer b = {NULL, 0, 0};
    span name = {(const uint8_t *)"", 0};
    for (Py_ssize_t i = 0; i < n; i++)
        if (span_equals(pairs[i].name, "__name__"))
            name = pairs[i].value;
    int rc = buffer_add(&b, "{\"name\":", 8) || json_string(&b, name) || buffer_add(&b, ",\"tags\":{", 9);
    int first = 1;
    for (Py_ssize_t i = 0; i < n && !rc; i++) {
        if (span_equals(pairs[i].name, "__name__"))
            continue;
        rc = (!first && buffer_add(&b, ",", 1)) || json_string(&b, pairs[i].name) || buffer_add(&b, ":", 1) ||
             json_string(&b, pairs[i].value);
        first = 0;
    }
    rc = rc || buffer_add(&b, "},", 2);
    PyObject *head = rc ? NULL : PyBytes_FromStringAndSize(b.data, b.len);
    buffer_free(&b);
    return head;
}

/* Drops what a failed table_add appended past `index`, keeping the error it failed with. Shrinking a list by
 * the one item it gained allocates nothing, so this cannot fail in turn. */
static void table_truncate(series_table *t, PyObject *key, Py_ssize_t index) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *lists[] = {t->names, t->labels, t->heads};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        if (PyList_GET_SIZE(lists[i]) > index)
            PyList_SetSlice(lists[i], index, PyList_GET_SIZE(lists[i]), NULL);
    if (PyDict_Contains(t->slots, key) == 1)
        PyDict_DelItem(t->slots, key);
    PyErr_Clear(); /* nothing to report from the rollback itself: the first error is the one raised */
    PyErr_Restore(type, value, traceback);
}

/* Adds an entry at the end of all four containers, or (on any failure) leaves them as they were. */
Py_ssize_t table_add(series_table *t, PyObject *key, const label_pair *pairs, Py_ssize_t n) {
    Py_ssize_t index = PyList_GET_SIZE(t->names);
    if (PyList_GET_SIZE(t->labels) != index || PyList_GET_SIZE(t->heads) != index ||
        PyDict_GET_SIZE(t->slots) != index) {
        PyErr_Format(PyExc_ValueError, "series table out of step: %zd names, %zd labels, %zd heads, %zd slots", index,
                     PyList_GET_SIZE(t->labels), PyList_GET_SIZE(t->heads), PyDict_GET_SIZE(t->slots));
        return -1;
    }
    PyObject *labels = PyTuple_New(n), *name = NULL, *head = NULL, *slot = NULL;
    if (!labels)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = span_str(pairs[i].name), *v = span_str(pairs[i].value);
        PyObject *pair = (k && v) ? PyTuple_Pack(2, k, v) : NULL;
        if (pair && !name && span_equals(pairs[i].name, "__name__")) {
            name = v;
            Py_INCREF(name);
        }
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (!pair)
            goto error;
        PyTuple_SET_ITEM(labels, i, pair);
    }
    if (!name && !(name = PyUnicode_FromString("")))
        goto error;
    if (!(head = json_head(pairs, n)))
        goto error;
    if (!(slot = PyLong_FromSsize_t(index)))
        goto error;
    if (PyList_Append(t->names, name) < 0 || PyList_Append(t->labels, labels) < 0 ||
        PyList_Append(t->heads, head) < 0 || PyDict_SetItem(t->slots, key, slot) < 0) {
        table_truncate(t, key, index);
        goto error;
    }
    Py_DECREF(labels);
    Py_DECREF(name);
    Py_DECREF(head);
    Py_DECREF(slot);
    return index;
error:
    Py_XDECREF(labels);
    Py_XDECREF(name);
    Py_XDECREF(head);
    Py_XDECREF(slot);
    return -1;
}
