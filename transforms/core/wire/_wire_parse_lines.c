/*
 * Archive lines back into columns: the inverse of format_lines (_wire_lines.c) and metric_to_log, for the
 * restore's reading of NDJSON files. Only the float-sample line shape is taken, exactly as written:
 *
 *   {"name":S,"tags":{S:S,...},"timestamp":"YYYY-MM-DDTHH:MM:SS.mmmZ","kind":"absolute","<counter|gauge>":
 *     {"value":V}[,"start_timestamp":"YYYY-MM-DDTHH:MM:SS.mmmZ"]}
 *
 * with V a JSON number or one of the caller's special strings ("+Inf", "NaN", ...) or "NaN:0x" + 16 hex
 * digits. Any other line (native histograms, exemplars, whitespace, other key orders, escapes in a value,
 * a month out of range, ...) is handed back by position for the caller's json.loads path, so what a line
 * means never depends on this code: it either reads a line exactly as json.loads + records.py would, or
 * declines it.
 *
 * A series' head ('{"name":..,"tags":{..},') is parsed and validated once per distinct byte string (a hash
 * table over the buffer): the name and label pairs become Python strings then (JSON escapes, \uXXXX and
 * surrogate pairs decoded as json does; duplicate tag names declined), and every later line of that series
 * costs a hash, a compare and the fixed-shape tail. Every read is bounded by its line's end.
 */

#include "_wire.h"

#define TAIL_KEY "},\"timestamp\":\"" /* ends a head: cannot occur earlier in a valid one (see find_head_end) */
#define TAIL_KEY_LEN 15
#define STAMP_LEN 24
#define MAX_SPECIALS 8
#define MAX_PROBES 64 /* a head whose probe runs longer is parsed again each time (no quadratic table) */
#define KIND_COUNTER 1
#define KIND_GAUGE 2

typedef struct {
    span text;
    uint64_t bits;
} special_value;

typedef struct {
    uint64_t hash;
    Py_ssize_t offset, len; /* the head's bytes in the input; len 0: an empty slot */
    int32_t run;            /* its index in names/labels, or -1: a head the fast path declines */
} head_slot;

typedef struct {
    head_slot *slots;
    Py_ssize_t cap, used;
} head_table;

typedef struct {
    char prefix[19]; /* the last timestamp's seconds text, and its value */
    int64_t seconds;
    int valid;
} stamp_cache;

typedef struct {
    const uint8_t *data;
    special_value specials[MAX_SPECIALS];
    int n_specials;
    head_table heads;
    PyObject *names, *labels; /* lists by run */
    buffer runs, stamps, values, kinds, starts, fallback;
    int any_start;
    stamp_cache stamp, start_stamp;
} parser;

static uint64_t hash_bytes(const uint8_t *p, Py_ssize_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t chunk;
        memcpy(&chunk, p, 8);
        h = (h ^ chunk) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t last = 0;
    memcpy(&last, p, (size_t)n);
    h = (h ^ last) * 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 29);
}

static int table_grow(head_table *t) {
    Py_ssize_t cap = t->cap ? 2 * t->cap : 1024;
    head_slot *slots = PyMem_Calloc((size_t)cap, sizeof(head_slot));
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < t->cap; i++) {
        head_slot *old = &t->slots[i];
        if (!old->len)
            continue;
        Py_ssize_t j = (Py_ssize_t)(old->hash & (uint64_t)(cap - 1));
        while (slots[j].len)
            j = (j + 1) & (cap - 1);
        slots[j] = *old;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* ---- JSON strings ---- */

static int hex4(const uint8_t *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* The JSON string starting at *pos (its opening quote) as a str, *pos moved past its closing quote.
 * NULL without an exception: not a string json.loads would read the same way (raw control characters,
 * invalid UTF-8, unknown escapes, unterminated): the caller declines the line. NULL with one: memory. */
static PyObject *json_str(const uint8_t *p, Py_ssize_t *pos, Py_ssize_t end) {
    Py_ssize_t i = *pos;
    if (i >= end || p[i] != '"')
        return NULL;
    Py_ssize_t first = ++i;
    int escaped = 0;
    while (i < end && p[i] != '"') {
        if (p[i] < 0x20)
            return NULL; /* json.loads (strict) refuses raw control characters */
        if (p[i] == '\\') {
            escaped = 1;
            if (++i >= end)
                return NULL;
        }
        i++;
    }
    if (i >= end)
        return NULL;
    Py_ssize_t last = i; /* the closing quote */
    if (!utf8_valid(p + first, last - first))
        return NULL; /* the file would not even decode as text on the json path */
    *pos = last + 1;
    if (!escaped)
        return PyUnicode_DecodeUTF8((const char *)p + first, last - first, "strict");
    /* code points: never more than the bytes they come from */
    Py_UCS4 *out = PyMem_Malloc((size_t)(last - first) * sizeof(Py_UCS4));
    if (!out)
        return PyErr_NoMemory();
    Py_ssize_t n = 0;
    for (Py_ssize_t k = first; k < last;) {
        uint8_t c = p[k];
        if (c != '\\') { /* valid UTF-8 (checked above) */
            if (c < 0x80) {
                out[n++] = c;
                k += 1;
            } else if (c < 0xE0) {
                out[n++] = ((Py_UCS4)(c & 0x1F) << 6) | (p[k + 1] & 0x3F);
                k += 2;
            } else if (c < 0xF0) {
                out[n++] = ((Py_UCS4)(c & 0x0F) << 12) | ((Py_UCS4)(p[k + 1] & 0x3F) << 6) | (p[k + 2] & 0x3F);
                k += 3;
            } else {
                out[n++] = ((Py_UCS4)(c & 0x07) << 18) | ((Py_UCS4)(p[k + 1] & 0x3F) << 12) |
                           ((Py_UCS4)(p[k + 2] & 0x3F) << 6) | (p[k + 3] & 0x3F);
                k += 4;
            }
            continue;
        }
        uint8_t e = p[k + 1]; /* an escape's second byte is before the closing quote (scan above) */
        k += 2;
        switch (e) {
        case '"': out[n++] = '"'; continue;
        case '\\': out[n++] = '\\'; continue;
        case '/': out[n++] = '/'; continue;
        case 'b': out[n++] = '\b'; continue;
        case 'f': out[n++] = '\f'; continue;
        case 'n': out[n++] = '\n'; continue;
        case 'r': out[n++] = '\r'; continue;
        case 't': out[n++] = '\t'; continue;
        case 'u': break;
        default:
            PyMem_Free(out);
            return NULL;
        }
        uint32_t unit;
        if (last - k < 4 || hex4(p + k, &unit) < 0) {
            PyMem_Free(out);
            return NULL;
        }
        k += 4;
        /* as json does: a high surrogate followed by an escaped low one is one code point; any other
         * surrogate stays a lone code point of the str */
        uint32_t low;
        if (unit >= 0xD800 && unit <= 0xDBFF && last - k >= 6 && p[k] == '\\' && p[k + 1] == 'u' &&
            hex4(p + k + 2, &low) == 0 && low >= 0xDC00 && low <= 0xDFFF) {
            unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            k += 6;
        }
        out[n++] = unit;
    }
    PyObject *text = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, out, n);
    PyMem_Free(out);
    return text;
}

/* '{"name":S,"tags":{S:S,...}' exactly filling [0, end) of p (end: the tags' closing brace + 1).
 * 1 with *name and *labels set, 0 declined, -1 on a Python error. */
static int parse_head(const uint8_t *p, Py_ssize_t end, PyObject **name, PyObject **labels) {
    static const char open_name[] = "{\"name\":", open_tags[] = ",\"tags\":{";
    *name = *labels = NULL;
    Py_ssize_t pos = (Py_ssize_t)sizeof open_name - 1;
    if (end < pos || memcmp(p, open_name, (size_t)pos) != 0)
        return 0;
    if (!(*name = json_str(p, &pos, end)))
        return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t tags = (Py_ssize_t)sizeof open_tags - 1;
    if (end - pos < tags || memcmp(p + pos, open_tags, (size_t)tags) != 0)
        goto declined;
    pos += tags;
    if (!(*labels = PyList_New(0)))
        goto error;
    if (pos < end && p[pos] == '}')
        pos++;
    else {
        for (;;) {
            PyObject *key = json_str(p, &pos, end), *value = NULL;
            if (!key || pos >= end || p[pos++] != ':' || !(value = json_str(p, &pos, end))) {
                Py_XDECREF(key);
                goto check;
            }
            /* json keeps the last of duplicate names at the first one's place: declined, json says it */
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(*labels); i++) {
                int same = PyUnicode_Compare(PyTuple_GET_ITEM(PyList_GET_ITEM(*labels, i), 0), key);
                if (same == 0 || (same == -1 && PyErr_Occurred())) {
                    Py_DECREF(key);
                    Py_DECREF(value);
                    goto check;
                }
            }
            PyObject *pair = PyTuple_Pack(2, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (!pair || PyList_Append(*labels, pair) < 0) {
                Py_XDECREF(pair);
                goto error;
            }
            Py_DECREF(pair);
            if (pos >= end)
                goto declined;
            uint8_t c = p[pos++];
            if (c == '}')
                break;
            if (c != ',')
                goto declined;
        }
    }
    if (pos == end)
        return 1;
    goto declined;
check:
    if (PyErr_Occurred())
        goto error;
declined:
    Py_CLEAR(*name);
    Py_CLEAR(*labels);
    return 0;
error:
    Py_CLEAR(*name);
    Py_CLEAR(*labels);
    return -1;
}

/* The series run of a head, parsing it when first met: >= 0, -1 declined, -2 on a Python error. */
static int32_t head_run(parser *ps, Py_ssize_t offset, Py_ssize_t len) {
    const uint8_t *head = ps->data + offset;
    uint64_t hash = hash_bytes(head, len);
    head_table *t = &ps->heads;
    if (2 * (t->used + 1) > t->cap && table_grow(t) < 0)
        return -2;
    Py_ssize_t j = (Py_ssize_t)(hash & (uint64_t)(t->cap - 1));
    int probes = 0;
    for (; t->slots[j].len; j = (j + 1) & (t->cap - 1)) {
        head_slot *slot = &t->slots[j];
        if (slot->hash == hash && slot->len == len && memcmp(ps->data + slot->offset, head, (size_t)len) == 0)
            return slot->run;
        if (++probes > MAX_PROBES) {
            j = -1;
            break;
        }
    }
    PyObject *name, *labels;
    int found = parse_head(head, len - 1, &name, &labels); /* the head without its trailing comma */
    if (found < 0)
        return -2;
    int32_t run = -1;
    if (found) {
        if (PyList_GET_SIZE(ps->names) >= INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "more than 2**31 - 1 series heads");
            run = -2;
        } else if (PyList_Append(ps->names, name) < 0 || PyList_Append(ps->labels, labels) < 0) {
            /* both lists keep one entry per run: a failed second append takes the first back */
            if (PyList_GET_SIZE(ps->names) > PyList_GET_SIZE(ps->labels))
                PyList_SetSlice(ps->names, PyList_GET_SIZE(ps->labels), PyList_GET_SIZE(ps->names), NULL);
            run = -2;
        } else
            run = (int32_t)(PyList_GET_SIZE(ps->names) - 1);
        Py_DECREF(name);
        Py_DECREF(labels);
    }
    if (run != -2 && j >= 0) {
        t->slots[j] = (head_slot){hash, offset, len, run};
        t->used++;
    }
    return run;
}

/* ---- the tail: timestamp, kind, value, start ---- */

static int digits(const uint8_t *p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm; the inverse of civil()). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* 'YYYY-MM-DDTHH:MM:SS.mmmZ' -> epoch ms as records.Timestamps reads it (calendar.timegm: the day, hour,
 * minute and second are added as counts, not checked); 0 ok, -1 declined (the year or month datetime
 * would refuse, or not this exact form). */
static int stamp_ms(stamp_cache *cache, const uint8_t *t, int64_t *out) {
    static const int at[] = {4, 7, 10, 13, 16, 19, 23};
    for (int i = 0; i < 7; i++)
        if (t[at[i]] != "--T::.Z"[i])
            return -1;
    int millis;
    if (digits(t + 20, 3, &millis) < 0)
        return -1;
    if (!cache->valid || memcmp(cache->prefix, t, 19) != 0) {
        int year, month, day, hour, minute, second;
        if (digits(t, 4, &year) < 0 || digits(t + 5, 2, &month) < 0 || digits(t + 8, 2, &day) < 0 ||
            digits(t + 11, 2, &hour) < 0 || digits(t + 14, 2, &minute) < 0 || digits(t + 17, 2, &second) < 0)
            return -1;
        if (year < 1 || month < 1 || month > 12)
            return -1;
        int64_t days = days_from_civil(year, month, 1) + day - 1;
        cache->seconds = ((days * 24 + hour) * 60 + minute) * 60 + second;
        memcpy(cache->prefix, t, 19);
        cache->valid = 1;
    }
    *out = cache->seconds * 1000 + millis;
    return 0;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number at p[0, len) as json.loads + float() reads it: an integer literal is an int first (so "-0"
 * is +0.0), anything with a fraction or exponent float(text) (correctly rounded). 0 ok, -1 declined (not
 * JSON's number grammar, or an integer too long to be sure of), -2 on a Python error. */
static int json_number(const uint8_t *p, Py_ssize_t len, double *out) {
    Py_ssize_t i = 0;
    int negative = 0;
    if (i < len && p[i] == '-') {
        negative = 1;
        i++;
    }
    if (i >= len || p[i] < '0' || p[i] > '9')
        return -1;
    uint64_t mantissa = 0;
    int significant = 0, fraction = 0, is_float = 0;
    if (p[i] == '0')
        i++;
    else
        for (; i < len && p[i] >= '0' && p[i] <= '9'; i++)
            if (significant < 19) {
                mantissa = mantissa * 10 + (uint64_t)(p[i] - '0');
                significant++;
            } else
                significant = 99; /* too many digits for the fast path */
    Py_ssize_t integer_digits = i - negative;
    if (i < len && p[i] == '.') {
        is_float = 1;
        Py_ssize_t first = ++i;
        for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
            if (!significant && p[i] == '0') { /* leading zeros of the fraction: only the exponent moves */
                fraction++;
                continue;
            }
            if (significant < 19) {
                mantissa = mantissa * 10 + (uint64_t)(p[i] - '0');
                significant++;
                fraction++;
            } else
                significant = 99;
        }
        if (i == first)
            return -1;
    }
    int64_t exponent = 0;
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        is_float = 1;
        i++;
        int exp_negative = 0;
        if (i < len && (p[i] == '+' || p[i] == '-'))
            exp_negative = p[i++] == '-';
        Py_ssize_t first = i;
        for (; i < len && p[i] >= '0' && p[i] <= '9'; i++)
            if (exponent < 100000)
                exponent = exponent * 10 + (p[i] - '0');
        if (i == first)
            return -1;
        if (exp_negative)
            exponent = -exponent;
    }
    if (i != len)
        return -1;
    if (!is_float) {
        if (integer_digits > 18)
            return -1; /* int(text) then float(): leave big ones to json */
        int64_t v = (int64_t)mantissa;
        *out = (double)(negative ? -v : v); /* round-half-even, as int.__float__ */
        return 0;
    }
    int64_t scale = exponent - fraction;
    if (significant <= 19 && mantissa <= (1ULL << 53) && scale >= -22 && scale <= 22) {
        /* both operands exact: one IEEE operation, correctly rounded (Clinger's fast path) */
        double v = (double)mantissa;
        v = scale >= 0 ? v * POW10[scale] : v / POW10[-scale];
        *out = negative ? -v : v;
        return 0;
    }
    char text[64];
    if (len >= (Py_ssize_t)sizeof text)
        return -1;
    memcpy(text, p, (size_t)len);
    text[len] = 0;
    char *stop;
    double v = PyOS_string_to_double(text, &stop, NULL); /* float()'s own conversion; overflow -> inf */
    if (v == -1.0 && PyErr_Occurred())
        return -2;
    if (stop != text + len)
        return -1;
    *out = v;
    return 0;
}

/* The value between `"value":` and the closing brace: a number or a special string; 0, -1 declined, -2 error. */
static int parse_value(const parser *ps, const uint8_t *p, Py_ssize_t len, uint64_t *bits) {
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
        const uint8_t *text = p + 1;
        Py_ssize_t n = len - 2;
        for (int i = 0; i < ps->n_specials; i++)
            if (ps->specials[i].text.len == n && memcmp(ps->specials[i].text.ptr, text, (size_t)n) == 0) {
                *bits = ps->specials[i].bits;
                return 0;
            }
        if (n == 22 && memcmp(text, "NaN:0x", 6) == 0) { /* any other NaN payload, as records.decode_value */
            uint64_t v = 0;
            for (int i = 6; i < 22; i++) {
                uint32_t nibble;
                uint8_t c = text[i];
                if (c >= '0' && c <= '9')
                    nibble = (uint32_t)(c - '0');
                else if (c >= 'a' && c <= 'f')
                    nibble = (uint32_t)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                    nibble = (uint32_t)(c - 'A' + 10);
                else
                    return -1;
                v = (v << 4) | nibble;
            }
            *bits = v;
            return 0;
        }
        return -1;
    }
    double value;
    int rc = json_number(p, len, &value);
    if (rc < 0)
        return rc;
    memcpy(bits, &value, 8);
    return 0;
}

static int starts_with(const uint8_t *p, const uint8_t *end, const char *text, Py_ssize_t n) {
    return end - p >= n && memcmp(p, text, (size_t)n) == 0;
}

/* Where the head ends (its tags' closing brace + 2, after the comma), or -1. In a valid line the first
 * '},"timestamp":"' is the real one: inside a JSON string its quotes would have to be escaped, and after
 * an unescaped one the rest of the string would not be JSON. parse_head checks the head fills it exactly. */
static Py_ssize_t find_head_end(const uint8_t *line, Py_ssize_t len) {
    const uint8_t *p = line, *end = line + len;
    while (p < end) {
        const uint8_t *brace = memchr(p, '}', (size_t)(end - p));
        if (!brace)
            return -1;
        if (starts_with(brace, end, TAIL_KEY, TAIL_KEY_LEN))
            return brace + 2 - line;
        p = brace + 1;
    }
    return -1;
}

/* One line [offset, offset + len): its sample appended (1), declined (0) or a Python error (-1). */
static int parse_line(parser *ps, Py_ssize_t offset, Py_ssize_t len) {
    static const char kind_text[] = "\",\"kind\":\"absolute\",\"";
    static const char counter[] = "counter\":{\"value\":", gauge[] = "gauge\":{\"value\":";
    static const char start_key[] = ",\"start_timestamp\":\"";
    const uint8_t *line = ps->data + offset, *end = line + len;
    Py_ssize_t head_len = find_head_end(line, len);
    if (head_len < 0)
        return 0;
    const uint8_t *p = line + head_len + TAIL_KEY_LEN - 2; /* past '"timestamp":"' */
    int64_t ms, start = 0;
    if (end - p < STAMP_LEN || stamp_ms(&ps->stamp, p, &ms) < 0)
        return 0;
    p += STAMP_LEN;
    if (!starts_with(p, end, kind_text, sizeof kind_text - 1))
        return 0;
    p += sizeof kind_text - 1;
    int8_t kind;
    if (starts_with(p, end, counter, sizeof counter - 1)) {
        kind = KIND_COUNTER;
        p += sizeof counter - 1;
    } else if (starts_with(p, end, gauge, sizeof gauge - 1)) {
        kind = KIND_GAUGE;
        p += sizeof gauge - 1;
    } else
        return 0;
    /* the value ends at the first '}' (a special string holds none: one with a brace is declined below) */
    const uint8_t *close = memchr(p, '}', (size_t)(end - p));
    if (!close)
        return 0;
    uint64_t bits;
    int rc = parse_value(ps, p, close - p, &bits);
    if (rc < 0)
        return rc == -2 ? -1 : 0;
    p = close + 1;
    if (starts_with(p, end, start_key, sizeof start_key - 1)) {
        p += sizeof start_key - 1;
        if (end - p < STAMP_LEN + 1 || stamp_ms(&ps->start_stamp, p, &start) < 0 || p[STAMP_LEN] != '"')
            return 0;
        p += STAMP_LEN + 1;
    }
    if (end - p != 1 || *p != '}')
        return 0;
    int32_t run = head_run(ps, offset, head_len);
    if (run == -2)
        return -1;
    if (run < 0)
        return 0;
    ps->any_start |= start != 0;
    if (buffer_add(&ps->runs, &run, 4) < 0 || buffer_add(&ps->stamps, &ms, 8) < 0 ||
        buffer_add(&ps->values, &bits, 8) < 0 || buffer_add(&ps->kinds, &kind, 1) < 0 ||
        buffer_add(&ps->starts, &start, 8) < 0)
        return -1;
    return 1;
}

static int read_specials(parser *ps, PyObject *specials) {
    if (!PyTuple_Check(specials) || PyTuple_GET_SIZE(specials) > MAX_SPECIALS) {
        PyErr_Format(PyExc_TypeError, "specials must be a tuple of at most %d (bytes, float) pairs", MAX_SPECIALS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(specials); i++) {
        PyObject *pair = PyTuple_GET_ITEM(specials, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyFloat_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "specials must hold (bytes, float) pairs");
            return -1;
        }
        PyObject *text = PyTuple_GET_ITEM(pair, 0);
        double value = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(pair, 1));
        ps->specials[i].text = (span){(const uint8_t *)PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text)};
        memcpy(&ps->specials[i].bits, &value, 8); /* a copy, not arithmetic: NaN payloads kept */
    }
    ps->n_specials = (int)PyTuple_GET_SIZE(specials);
    return 0;
}

PyObject *wire_parse_lines(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"data", "specials", NULL};
    Py_buffer data = {0};
    PyObject *specials;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O", keywords, &data, &specials))
        return NULL;
    PyObject *result = NULL;
    parser ps = {0};
    ps.data = data.buf;
    if (read_specials(&ps, specials) < 0 || !(ps.names = PyList_New(0)) || !(ps.labels = PyList_New(0)))
        goto done;
    const uint8_t *base = data.buf;
    Py_ssize_t n = data.len, offset = 0;
    while (offset < n) {
        const uint8_t *newline = memchr(base + offset, '\n', (size_t)(n - offset));
        Py_ssize_t end = newline ? newline - base : n;
        if (end > offset) { /* empty lines are skipped, as the json path skips them */
            int rc = parse_line(&ps, offset, end - offset);
            if (rc < 0)
                goto done;
            if (rc == 0) {
                int64_t row = ps.runs.len / 4, entry[3] = {offset, end, row};
                if (buffer_add(&ps.fallback, entry, sizeof entry) < 0)
                    goto done;
            }
        }
        offset = end + 1;
    }
    /* no start timestamp anywhere: None, as SampleColumns has it */
    buffer *columns[] = {&ps.runs, &ps.stamps, &ps.values, &ps.kinds, ps.any_start ? &ps.starts : NULL, &ps.fallback};
    if (!(result = PyTuple_New(8)))
        goto done;
    PyTuple_SET_ITEM(result, 0, Py_NewRef(ps.names));
    PyTuple_SET_ITEM(result, 1, Py_NewRef(ps.labels));
    for (int i = 0; i < 6; i++) {
        buffer *b = columns[i];
        PyObject *item = b ? PyBytes_FromStringAndSize(b->data ? b->data : "", b->len) : Py_NewRef(Py_None);
        if (!item) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, 2 + i, item);
    }
done:
    Py_XDECREF(ps.names);
    Py_XDECREF(ps.labels);
    PyMem_Free(ps.heads.slots);
    buffer_free(&ps.runs);
    buffer_free(&ps.stamps);
    buffer_free(&ps.values);
    buffer_free(&ps.kinds);
    buffer_free(&ps.starts);
    buffer_free(&ps.fallback);
    PyBuffer_Release(&data);
    return result;
}
