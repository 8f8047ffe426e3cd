/* transforms.core.wire._wire: the module and its method table (the jobs live in _wire_*.c; see _wire.h). */

#include "_wire.h"

static PyMethodDef methods[] = {
    {"scan_v1", (PyCFunction)(void (*)(void))wire_scan_v1, METH_VARARGS | METH_KEYWORDS,
     "scan_v1(data, *, max_series, max_samples, max_labels, max_symbols, max_buckets) -> dict\n\n"
     "Count what an uncompressed prometheus.WriteRequest carries. Stops early once a count passes its\n"
     "limit (then 'complete' is False). Raises ValueError on malformed wire format."},
    {"scan_v2", (PyCFunction)(void (*)(void))wire_scan_v2, METH_VARARGS | METH_KEYWORDS,
     "scan_v2(data, *, max_series, max_samples, max_labels, max_symbols, max_buckets) -> dict\n\n"
     "Like scan_v1, for io.prometheus.write.v2.Request ('labels' counts label references)."},
    {"decode_v1", (PyCFunction)(void (*)(void))wire_decode_v1, METH_VARARGS | METH_KEYWORDS,
     "decode_v1(data, slots, names, labels, heads, legacy, samples_hint=0) -> dict\n\n"
     "Decode and validate an uncompressed prometheus.WriteRequest into columns; new label sets are added\n"
     "to the series table (slots, names, labels, heads). Malformed bytes raise ValueError; the first\n"
     "broken rule is returned as 'error' (str) and its series' slot is -1."},
    {"decode_v2", (PyCFunction)(void (*)(void))wire_decode_v2, METH_VARARGS | METH_KEYWORDS,
     "decode_v2(data, slots, names, labels, heads, legacy, samples_hint=0) -> dict\n\n"
     "Like decode_v1, for io.prometheus.write.v2.Request (also starts, types and created columns)."},
    {"validate_v1", (PyCFunction)(void (*)(void))wire_validate_v1, METH_VARARGS | METH_KEYWORDS,
     "validate_v1(data, known, legacy, *, max_series, max_samples, max_labels, max_symbols, max_buckets) -> dict\n\n"
     "decode_v1's walk and rules without building anything: counts (with the pre-scan's labels, symbols and\n"
     "buckets), 'complete' (False once a count passed its limit: the walk stopped there) and 'error' (the\n"
     "first broken rule, str, or None). A label-set key in `known` (a set) is not validated again; those\n"
     "that passed and are not in it are returned in 'fresh' (a set). Malformed bytes raise ValueError."},
    {"validate_v2", (PyCFunction)(void (*)(void))wire_validate_v2, METH_VARARGS | METH_KEYWORDS,
     "validate_v2(data, known, legacy, *, max_series, max_samples, max_labels, max_symbols, max_buckets) -> dict\n\n"
     "Like validate_v1, for io.prometheus.write.v2.Request ('labels' counts label references)."},
    {"format_lines", (PyCFunction)(void (*)(void))wire_format_lines, METH_VARARGS | METH_KEYWORDS,
     "format_lines(heads, kinds, head_index, kind_index, sample_series, timestamps, values, starts=None,\n"
     "             created=None) -> [(utc_hour, ndjson bytes, lines), ...]\n\n"
     "metric_to_log's archive lines for float samples, one block per UTC hour. A timestamp outside\n"
     "datetime's range raises OverflowError."},
    {"parse_lines", (PyCFunction)(void (*)(void))wire_parse_lines, METH_VARARGS | METH_KEYWORDS,
     "parse_lines(data, specials) -> (names, labels, runs, timestamps, values, kinds, starts, declined)\n\n"
     "format_lines' float-sample lines (newline-separated, as decompressed) back into columns: per distinct\n"
     "series head its name (str) and [(tag, value), ...]; per sample its run (int32), ms (int64), value bits\n"
     "(uint64), kind (int8: 1 counter, 2 gauge) and start ms (int64, or None when no line has one). specials\n"
     "is ((b'+Inf', float), ...). Lines of any other shape are declined: (start, end, row) int64 triples, row\n"
     "being the number of samples taken before the line."},
    {"plan_requests", (PyCFunction)(void (*)(void))wire_plan_requests, METH_VARARGS | METH_KEYWORDS,
     "plan_requests(keys, series, timestamps, values, starts, max_points, max_bytes) -> [cut, ...]\n\n"
     "Sample positions where a new request starts: each series' run (columns grouped by series, in time\n"
     "order) cut into pieces of max_points, pieces packed up to max_points and max_bytes (1.0 TimeSeries)."},
    {"encode_v1", (PyCFunction)(void (*)(void))wire_encode_v1, METH_VARARGS | METH_KEYWORDS,
     "encode_v1(keys, series, timestamps, values, lo, hi, starts=None) -> bytes\n\n"
     "An uncompressed prometheus.WriteRequest of samples [lo, hi); keys[i] is series i's Label fields.\n"
     "starts (int64 per sample) adds Sample field 3, which 1.0 parsers keep as an unknown field."},
    {"encode_v2", (PyCFunction)(void (*)(void))wire_encode_v2, METH_VARARGS | METH_KEYWORDS,
     "encode_v2(labels, metadata, series, timestamps, values, starts, lo, hi) -> bytes\n\n"
     "An uncompressed io.prometheus.write.v2.Request of samples [lo, hi): labels[i] is ((name, value), ...),\n"
     "metadata {i: (type, help, unit) or None}; starts (int64 per sample, 0 = none) or None."},
    {"xor_chunks", (PyCFunction)(void (*)(void))wire_xor_chunks, METH_VARARGS | METH_KEYWORDS,
     "xor_chunks(timestamps, values, per_chunk, fields) -> [(min ms, max ms, chunk bytes), ...] or bytes\n\n"
     "A series' samples (int64 ms; value bits as int64/float64) as Prometheus XOR chunks of per_chunk samples.\n"
     "With fields true: the `repeated Chunk chunks = 2` fields of a ChunkedSeries, as protobuf serializes them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "transforms.core.wire._wire",
    .m_doc = "Compiled remote-write wire-format routines (typed fronts: transforms/core/wire/prescan.py, transforms/core/wire/batch.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__wire(void) { return PyModule_Create(&module); }
