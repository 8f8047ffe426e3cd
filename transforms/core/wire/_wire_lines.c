/*
 * Archive lines from a batch's float columns: byte for byte what transforms/core/archive/metric_to_log.py writes,
 *
 *   {"name":..,"tags":{..},"timestamp":"YYYY-MM-DDTHH:MM:SS.mmmZ","kind":"absolute","<kind>":{"value":V}}
 *
 * (2.0 adds ,"start_timestamp":"..." before the last brace), grouped into one newline-terminated block per
 * UTC hour of the sample's own timestamp. Finite values are Python's repr (PyOS_double_to_string 'r',
 * the same call float.__repr__ makes); non-finite ones the documented strings. The per-series JSON head
 * and kind prefix come from the caller's series table, built once per series.
 */

#include "_wire.h"
#include <math.h>

#define MIN_SECOND (-62135596800LL) /* 0001-01-01T00:00:00Z: datetime's range */
#define MAX_SECOND 253402300799LL   /* 9999-12-31T23:59:59Z */
#define STALE_NAN_BITS 0x7FF0000000000002ULL
#define PROMETHEUS_NAN_BITS 0x7FF8000000000001ULL

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

/* Days since 1970-01-01 -> civil date (proleptic Gregorian), H. Hinnant's algorithm. */
static void civil(int64_t days, int64_t *y, unsigned *m, unsigned *d) {
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    unsigned doe = (unsigned)(days - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

typedef struct {
    int64_t second;
    char text[64]; /* YYYY-MM-DDTHH:MM:SS (room for snprintf's worst case) */
} second_cache;

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes) for ms; -1 with ValueError outside datetime's range. */
static int stamp(second_cache *cache, int64_t ms, char *out) {
    int64_t second = floor_div(ms, 1000);
    int millis = (int)(ms - second * 1000);
    if (second != cache->second) {
        if (second < MIN_SECOND || second > MAX_SECOND) {
            /* second * 1000, as metric_to_log prints it (may not fit in int64: appended zeros) */
            PyErr_Format(PyExc_OverflowError, "timestamp %lld000 ms is outside the representable range",
                         (long long)second);
            return -1;
        }
        int64_t y;
        unsigned m, d;
        civil(floor_div(second, 86400), &y, &m, &d);
        int64_t in_day = second - floor_div(second, 86400) * 86400;
        snprintf(cache->text, sizeof cache->text, "%04d-%02u-%02uT%02d:%02d:%02d", (int)y, m, d,
                 (int)(in_day / 3600), (int)(in_day / 60 % 60), (int)(in_day % 60));
        cache->second = second;
    }
    memcpy(out, cache->text, 19);
    out[19] = '.';
    out[20] = (char)('0' + millis / 100);
    out[21] = (char)('0' + millis / 10 % 10);
    out[22] = (char)('0' + millis % 10);
    out[23] = 'Z';
    return 0;
}

static int add_value(buffer *b, uint64_t bits) {
    double value;
    memcpy(&value, &bits, 8);
    if (isfinite(value)) {
        char *text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (!text)
            return -1;
        int rc = buffer_add(b, text, (Py_ssize_t)strlen(text));
        PyMem_Free(text);
        return rc;
    }
    if (isinf(value))
        return value > 0 ? buffer_add(b, "\"+Inf\"", 6) : buffer_add(b, "\"-Inf\"", 6);
    if (bits == STALE_NAN_BITS)
        return buffer_add(b, "\"StaleNaN\"", 10);
    if (bits == PROMETHEUS_NAN_BITS)
        return buffer_add(b, "\"NaN\"", 5);
    char text[64];
    int n = snprintf(text, sizeof text, "\"NaN:0x%016llx\"", (unsigned long long)bits);
    return buffer_add(b, text, n);
}

/* One block per UTC hour: open addressing on the hour number (adversarial spreads stay O(n)). */
typedef struct {
    int64_t hour;
    buffer lines;
    Py_ssize_t count;
    int used;
} hour_block;

typedef struct {
    hour_block *slots;
    Py_ssize_t cap, used;
    Py_ssize_t *order; /* slot indices in first-seen order */
} hour_table;

static hour_block *hour_get(hour_table *t, int64_t hour) {
    if (2 * (t->used + 1) > t->cap) {
        Py_ssize_t cap = t->cap ? 2 * t->cap : 16;
        hour_block *slots = PyMem_Calloc((size_t)cap, sizeof(hour_block));
        Py_ssize_t *order = PyMem_Malloc((size_t)cap * sizeof(Py_ssize_t));
        if (!slots || !order) {
            PyMem_Free(slots);
            PyMem_Free(order);
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t i = 0; i < t->used; i++) {
            hour_block *old = &t->slots[t->order[i]];
            Py_ssize_t j = (Py_ssize_t)((uint64_t)old->hour * 0x9E3779B97F4A7C15ULL % (uint64_t)cap);
            while (slots[j].used)
                j = (j + 1) % cap;
            slots[j] = *old;
            order[i] = j;
        }
        PyMem_Free(t->slots);
        PyMem_Free(t->order);
        t->slots = slots;
        t->order = order;
        t->cap = cap;
    }
    Py_ssize_t j = (Py_ssize_t)((uint64_t)hour * 0x9E3779B97F4A7C15ULL % (uint64_t)t->cap);
    while (t->slots[j].used && t->slots[j].hour != hour)
        j = (j + 1) % t->cap;
    if (!t->slots[j].used) {
        t->slots[j].used = 1;
        t->slots[j].hour = hour;
        t->order[t->used++] = j;
    }
    return &t->slots[j];
}

static void hour_table_free(hour_table *t) {
    for (Py_ssize_t i = 0; i < t->used; i++)
        buffer_free(&t->slots[t->order[i]].lines);
    PyMem_Free(t->slots);
    PyMem_Free(t->order);
}

static int same_length(Py_ssize_t got, Py_ssize_t expected, const char *name) {
    if (got != expected) {
        PyErr_Format(PyExc_ValueError, "column %s holds %zd items, expected %zd", name, got, expected);
        return -1;
    }
    return 0;
}

PyObject *wire_format_lines(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"heads", "kinds", "head_index", "kind_index", "sample_series", "timestamps",
                               "values", "starts", "created", NULL};
    PyObject *heads, *kinds, *head_obj, *kind_obj, *series_obj, *timestamps_obj, *values_obj;
    PyObject *starts_obj = Py_None, *created_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OOOOO|OO", keywords, &PyList_Type, &heads, &PyList_Type,
                                     &kinds, &head_obj, &kind_obj, &series_obj, &timestamps_obj, &values_obj,
                                     &starts_obj, &created_obj))
        return NULL;
    PyObject *result = NULL;
    hour_table hours = {0};
    Py_buffer head_index = {0}, kind_index = {0}, series = {0}, timestamps = {0}, values = {0}, starts = {0},
              created = {0};
    Py_ssize_t n_series, n, count;
    if ((n_series = column_get(head_obj, &head_index, COLUMN_INT32, "head_index")) < 0 ||
        (count = column_get(kind_obj, &kind_index, COLUMN_INT32, "kind_index")) < 0 ||
        same_length(count, n_series, "kind_index") < 0 ||
        (n = column_get(timestamps_obj, &timestamps, COLUMN_INT64, "timestamps")) < 0 ||
        (count = column_get(series_obj, &series, COLUMN_INT32, "sample_series")) < 0 ||
        same_length(count, n, "sample_series") < 0 ||
        (count = column_get(values_obj, &values, COLUMN_BITS64, "values")) < 0 || same_length(count, n, "values") < 0)
        goto done;
    if (starts_obj != Py_None && ((count = column_get(starts_obj, &starts, COLUMN_INT64, "starts")) < 0 ||
                                  same_length(count, n, "starts") < 0))
        goto done;
    if (created_obj != Py_None && ((count = column_get(created_obj, &created, COLUMN_INT64, "created")) < 0 ||
                                   same_length(count, n_series, "created") < 0))
        goto done;
    const int32_t *heads_of = head_index.buf, *kinds_of = kind_index.buf;
    const uint32_t *series_of = series.buf;
    second_cache cache = {INT64_MIN, {0}}, start_cache = {INT64_MIN, {0}};
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t ms, start = 0;
        uint64_t bits;
        memcpy(&ms, (const char *)timestamps.buf + 8 * i, 8);
        memcpy(&bits, (const char *)values.buf + 8 * i, 8);
        uint32_t s = series_of[i];
        if (s >= (uint32_t)n_series || heads_of[s] < 0 || heads_of[s] >= PyList_GET_SIZE(heads) || kinds_of[s] < 0 ||
            kinds_of[s] >= PyList_GET_SIZE(kinds)) {
            PyErr_Format(PyExc_ValueError, "sample %zd: series index out of the batch's tables", i);
            goto done;
        }
        PyObject *head = PyList_GET_ITEM(heads, heads_of[s]), *kind = PyList_GET_ITEM(kinds, kinds_of[s]);
        if (!PyBytes_Check(head) || !PyBytes_Check(kind)) {
            PyErr_SetString(PyExc_TypeError, "heads and kinds must hold bytes");
            goto done;
        }
        char text[24], start_text[24];
        if (starts.obj) { /* formatted first, as metric_to_log does: its range error wins */
            memcpy(&start, (const char *)starts.buf + 8 * i, 8);
            if (!start && created.obj)
                memcpy(&start, (const char *)created.buf + 8 * s, 8);
            if (start && stamp(&start_cache, start, start_text) < 0)
                goto done;
        }
        if (stamp(&cache, ms, text) < 0)
            goto done;
        hour_block *block = hour_get(&hours, floor_div(ms, 3600000));
        if (!block)
            goto done;
        buffer *b = &block->lines;
        if (buffer_add(b, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head)) < 0 ||
            buffer_add(b, "\"timestamp\":\"", 13) < 0 || buffer_add(b, text, 24) < 0 || buffer_add(b, "\",", 2) < 0 ||
            buffer_add(b, PyBytes_AS_STRING(kind), PyBytes_GET_SIZE(kind)) < 0 || add_value(b, bits) < 0 ||
            buffer_add(b, "}", 1) < 0 ||
            (start && (buffer_add(b, ",\"start_timestamp\":\"", 20) < 0 || buffer_add(b, start_text, 24) < 0 ||
                       buffer_add(b, "\"", 1) < 0)) ||
            buffer_add(b, "}\n", 2) < 0)
            goto done;
        block->count++;
    }
    if (!(result = PyList_New(hours.used)))
        goto done;
    for (Py_ssize_t i = 0; i < hours.used; i++) {
        hour_block *block = &hours.slots[hours.order[i]];
        PyObject *item = Py_BuildValue("(Ly#n)", (long long)block->hour, block->lines.data, block->lines.len,
                                       block->count);
        if (!item) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    hour_table_free(&hours);
    column_release(&head_index);
    column_release(&kind_index);
    column_release(&series);
    column_release(&timestamps);
    column_release(&values);
    column_release(&starts);
    column_release(&created);
    return result;
}
