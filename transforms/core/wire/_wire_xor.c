/*
 * Prometheus' XOR chunks (tsdb/chunkenc/xor.go) for the reader's STREAMED_XOR_CHUNKS answers.
 *
 * A chunk is a 2-byte big-endian sample count, then a bit stream: the first timestamp as a signed varint and
 * its value's 64 bits; the second timestamp as an unsigned varint delta; then delta-of-delta timestamps in
 * 1/16/20/24/68-bit buckets, and each value XORed with the one before (Gorilla), reusing the previous
 * leading/trailing zero window when the new bits fit in it. Timestamp arithmetic wraps in 64 bits, as Go's
 * does. The stream's length follows Prometheus' bstream byte for byte (see bits_length), so the chunks equal
 * the ones Prometheus writes, and the Python encoder in tests/reference/xor.py is the oracle.
 */

#include "_wire.h"

/* The most a chunk of n >= 1 samples takes: count, first timestamp (varint) and value, then per sample at most
 * 4 + 64 bits of delta-of-delta and 2 + 5 + 6 + 64 bits of value (19 bytes), and bstream's trailing byte. */
#define XOR_HEAD_BYTES (2 + MAX_VARINT_BYTES + 8)
#define XOR_BYTES_PER_SAMPLE 19

typedef struct {
    uint8_t *data; /* zeroed; bits are ORed in, most significant first */
    uint64_t count; /* bits written */
    int last_width; /* of the last field: decides bstream's trailing byte */
} bits;

static inline void bits_write(bits *b, uint64_t value, int width) {
    b->last_width = width;
    if (width < 64)
        value &= ((uint64_t)1 << width) - 1;
    while (width > 0) {
        int room = 8 - (int)(b->count & 7);
        int take = width < room ? width : room;
        uint64_t part = (value >> (width - take)) & ((1u << take) - 1);
        b->data[b->count >> 3] |= (uint8_t)(part << (room - take));
        b->count += (uint64_t)take;
        width -= take;
    }
}

/* bstream writes a field of 8 bits or more byte by byte, and each byte write leaves a fresh empty byte after
 * it, while single bits open a byte only when they need one: ceil(bits / 8) bytes, plus one zero byte when
 * the stream ends on a byte boundary after a field whose width is a multiple of 8. */
static inline Py_ssize_t bits_length(const bits *b) {
    Py_ssize_t length = (Py_ssize_t)((b->count + 7) >> 3);
    return length + ((b->count & 7) == 0 && (b->last_width & 7) == 0);
}

static inline void bits_uvarint(bits *b, uint64_t number) {
    while (number >= 0x80) {
        bits_write(b, (number & 0x7F) | 0x80, 8);
        number >>= 7;
    }
    bits_write(b, number, 8);
}

/* Go's bitRange: -(2^(width-1) - 1) <= number <= 2^(width-1). */
static inline int fits(int64_t number, int width) {
    int64_t half = (int64_t)1 << (width - 1);
    return number >= -(half - 1) && number <= half;
}

static inline int leading_zeros(uint64_t x) { return __builtin_clzll(x); }
static inline int trailing_zeros(uint64_t x) { return __builtin_ctzll(x); }

/* One chunk of n >= 1 samples into out (zeroed, at least xor_chunk_bound(n) bytes): its length. */
static Py_ssize_t xor_chunk(const int64_t *stamps, const uint64_t *values, Py_ssize_t n, uint8_t *out) {
    out[0] = (uint8_t)(n >> 8);
    out[1] = (uint8_t)n;
    bits b = {out + 2, 0, 0};
    uint64_t first = (uint64_t)stamps[0];
    bits_uvarint(&b, (first << 1) ^ (uint64_t)(stamps[0] >> 63)); /* zigzag */
    bits_write(&b, values[0], 64);
    int leading = 0xFF, trailing = 0;
    uint64_t previous_delta = 0;
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t delta = (uint64_t)stamps[i] - (uint64_t)stamps[i - 1];
        if (i == 1) {
            bits_uvarint(&b, delta);
        } else {
            int64_t dod = (int64_t)(delta - previous_delta);
            if (dod == 0) {
                bits_write(&b, 0, 1);
            } else if (fits(dod, 14)) {
                bits_write(&b, 0x2, 2);
                bits_write(&b, (uint64_t)dod, 14);
            } else if (fits(dod, 17)) {
                bits_write(&b, 0x6, 3);
                bits_write(&b, (uint64_t)dod, 17);
            } else if (fits(dod, 20)) {
                bits_write(&b, 0xE, 4);
                bits_write(&b, (uint64_t)dod, 20);
            } else {
                bits_write(&b, 0xF, 4);
                bits_write(&b, (uint64_t)dod, 64);
            }
        }
        previous_delta = delta;
        uint64_t x = values[i] ^ values[i - 1];
        if (x == 0) {
            bits_write(&b, 0, 1);
            continue;
        }
        bits_write(&b, 1, 1);
        int new_leading = leading_zeros(x), new_trailing = trailing_zeros(x);
        if (new_leading > 31)
            new_leading = 31; /* the field is 5 bits wide */
        if (leading != 0xFF && new_leading >= leading && new_trailing >= trailing) {
            bits_write(&b, 0, 1);
            bits_write(&b, x >> trailing, 64 - leading - trailing);
            continue;
        }
        leading = new_leading;
        trailing = new_trailing;
        int significant = 64 - leading - trailing;
        bits_write(&b, 1, 1);
        bits_write(&b, (uint64_t)leading, 5);
        bits_write(&b, (uint64_t)significant, 6); /* 64 wraps to 0, as Prometheus writes it */
        bits_write(&b, x >> trailing, significant);
    }
    return 2 + bits_length(&b);
}

static inline Py_ssize_t xor_chunk_bound(Py_ssize_t n) { return XOR_HEAD_BYTES + n * XOR_BYTES_PER_SAMPLE + 1; }

static Py_ssize_t varint_put(uint8_t *out, uint64_t number) {
    Py_ssize_t i = 0;
    while (number >= 0x80) {
        out[i++] = (uint8_t)(number | 0x80);
        number >>= 7;
    }
    out[i++] = (uint8_t)number;
    return i;
}

/* One `Chunk chunks = 2` field of a ChunkedSeries, as protobuf serializes it (zero times left out). */
static int chunk_field(buffer *out, int64_t min_time, int64_t max_time, const uint8_t *data, Py_ssize_t size) {
    uint8_t head[3 * (1 + MAX_VARINT_BYTES) + 2];
    Py_ssize_t used = 0;
    if (min_time) {
        head[used++] = 0x08; /* field 1, varint */
        used += varint_put(head + used, (uint64_t)min_time);
    }
    if (max_time) {
        head[used++] = 0x10; /* field 2, varint */
        used += varint_put(head + used, (uint64_t)max_time);
    }
    head[used++] = 0x18; /* field 3 (type), varint */
    head[used++] = 1;    /* XOR */
    head[used++] = 0x22; /* field 4 (data), length-delimited */
    used += varint_put(head + used, (uint64_t)size);
    uint8_t outer[1 + MAX_VARINT_BYTES];
    outer[0] = 0x12; /* field 2 of ChunkedSeries, length-delimited */
    Py_ssize_t outer_used = 1 + varint_put(outer + 1, (uint64_t)(used + size));
    if (buffer_reserve(out, outer_used + used + size) < 0)
        return -1;
    buffer_add(out, outer, outer_used);
    buffer_add(out, head, used);
    buffer_add(out, data, size);
    return 0;
}

PyObject *wire_xor_chunks(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"timestamps", "values", "per_chunk", "fields", NULL};
    PyObject *stamps_obj, *values_obj;
    Py_ssize_t per_chunk;
    int fields;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOnp:xor_chunks", keywords, &stamps_obj, &values_obj,
                                     &per_chunk, &fields))
        return NULL;
    if (per_chunk < 1 || per_chunk > 0xFFFF) /* the count is 2 bytes */
        return PyErr_Format(PyExc_ValueError, "per_chunk must be 1..65535, not %zd", per_chunk);
    Py_buffer stamps_view = {0}, values_view = {0};
    PyObject *result = NULL;
    uint8_t *scratch = NULL;
    buffer out = {0};
    Py_ssize_t n = column_get(stamps_obj, &stamps_view, COLUMN_INT64, "timestamps");
    if (n < 0)
        goto done;
    Py_ssize_t count = column_get(values_obj, &values_view, COLUMN_BITS64, "values");
    if (count < 0)
        goto done;
    if (count != n) {
        PyErr_Format(PyExc_ValueError, "column values has %zd items, timestamps %zd", count, n);
        goto done;
    }
    const int64_t *stamps = stamps_view.buf;
    const uint64_t *values = values_view.buf;
    Py_ssize_t bound = xor_chunk_bound(n < per_chunk ? n : per_chunk);
    scratch = PyMem_Malloc((size_t)bound);
    result = fields ? NULL : PyList_New(0);
    if (!scratch || (!fields && !result)) {
        if (!scratch)
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t first = 0; first < n; first += per_chunk) {
        Py_ssize_t size = n - first < per_chunk ? n - first : per_chunk;
        memset(scratch, 0, (size_t)bound);
        Py_ssize_t length = xor_chunk(stamps + first, values + first, size, scratch);
        int64_t lo = stamps[first], hi = stamps[first + size - 1];
        if (fields) {
            if (chunk_field(&out, lo, hi, scratch, length) < 0)
                goto fail;
            continue;
        }
        PyObject *item = Py_BuildValue("(LLy#)", (long long)lo, (long long)hi, (const char *)scratch, length);
        if (!item)
            goto fail;
        int appended = PyList_Append(result, item);
        Py_DECREF(item);
        if (appended < 0)
            goto fail;
    }
    if (fields)
        result = PyBytes_FromStringAndSize(out.data ? out.data : "", out.len);
    goto done;
fail:
    Py_CLEAR(result);
done:
    buffer_free(&out);
    PyMem_Free(scratch);
    column_release(&stamps_view);
    column_release(&values_view);
    return result;
}
