/*
 * Columns handed in from Python (numpy arrays, array.array, memoryviews, bytes) viewed as int32/int64 arrays.
 *
 * The C code indexes them as `const int32_t *` / `const int64_t *`, so before any cast a column must be
 * C-contiguous, of a whole number of items, aligned to its item size, and of the right width: an untyped
 * byte buffer (bytes, bytearray, format 'B') is taken as raw native items (the decoder's own columns are
 * bytes); a typed one must hold integers of that width (either sign: the bits are what is read) or, for a
 * column of value bits, float64. Anything else is a TypeError or ValueError naming the column, not a read
 * past the end or a misaligned load.
 */

#include "_wire.h"

/* A struct-module format's one item: its size, and whether it is an integer (0 for anything else). */
static Py_ssize_t format_item(const char *format, int *integer) {
    *integer = 0;
    if (!format)
        return 1; /* no format asked or given: unsigned bytes */
    if (*format == '@' || *format == '=' || *format == '<')
        format++; /* native order, or little-endian which is native here (_wire.h's guard) */
    if (!format[0] || format[1])
        return -1; /* big-endian, or a struct of several fields */
    *integer = 1;
    switch (format[0]) {
    case 'b': case 'B': case 'c': return 1;
    case 'h': case 'H': return 2;
    case 'i': case 'I': return 4;
    case 'l': case 'L': return (Py_ssize_t)sizeof(long);
    case 'q': case 'Q': return 8;
    case 'n': case 'N': return (Py_ssize_t)sizeof(Py_ssize_t);
    }
    *integer = 0;
    switch (format[0]) {
    case 'e': return 2;
    case 'f': return 4;
    case 'd': return 8;
    }
    return -1;
}

static const char *column_type_name(column_type type) {
    switch (type) {
    case COLUMN_INT32: return "int32";
    case COLUMN_INT64: return "int64";
    default: return "int64 or float64";
    }
}

Py_ssize_t column_get(PyObject *obj, Py_buffer *view, column_type type, const char *name) {
    Py_ssize_t width = type == COLUMN_INT32 ? 4 : 8;
    if (PyObject_GetBuffer(obj, view, PyBUF_FULL_RO) < 0) {
        view->obj = NULL;
        if (PyErr_ExceptionMatches(PyExc_TypeError)) { /* not a buffer at all: say which argument */
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "column %s must be a buffer of %s, not %.100s", name,
                         column_type_name(type), Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    int integer;
    Py_ssize_t item = format_item(view->format, &integer);
    int raw_bytes = integer && item == 1;
    int fits = raw_bytes || (item == width && (integer || type == COLUMN_BITS64));
    if (!fits || (!raw_bytes && view->itemsize != item)) {
        PyErr_Format(PyExc_TypeError, "column %s must hold %s items (or raw bytes), not format '%s'", name,
                     column_type_name(type), view->format ? view->format : "B");
        goto fail;
    }
    if (view->suboffsets || !PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "column %s is not C-contiguous", name);
        goto fail;
    }
    if (view->len % width) {
        PyErr_Format(PyExc_ValueError, "column %s holds %zd bytes, not a whole number of %zd-byte items", name,
                     view->len, width);
        goto fail;
    }
    if (view->len && (uintptr_t)view->buf % (uintptr_t)width) { /* an empty column reads nothing */
        PyErr_Format(PyExc_ValueError, "column %s is not aligned to %zd bytes (a slice at an odd offset?)", name,
                     width);
        goto fail;
    }
    return view->len / width;
fail:
    PyBuffer_Release(view);
    view->obj = NULL;
    return -1;
}

void column_release(Py_buffer *view) {
    if (view->obj)
        PyBuffer_Release(view); /* also clears view->obj, so a second release does nothing */
}
