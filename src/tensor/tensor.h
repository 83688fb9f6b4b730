/* tensor: datatypes, shapes, tensors, and the KServe v2 request/response codecs (JSON tensors
 * and Triton's binary tensor extension).
 *
 * The decoder turns an HTTP body into a bd_infer_req_t whose small pieces live in a caller's
 * arena and whose binary tensor data points into the body (which the caller keeps alive: the
 * body is owned by the same request). It checks everything a client controls: JSON syntax
 * and nesting, datatype names, shapes (product overflow, negative dims), element counts,
 * binary sizes against the header length. It does not know the model: checking a request
 * against a model's inputs is the scheduler's job.
 *
 * Threads: pure functions over caller-owned memory; any thread. */
#ifndef BD_TENSOR_H
#define BD_TENSOR_H

#include "core/core.h"

/* ---- datatypes ------------------------------------------------------------------------- */

typedef enum {
    BD_DT_INVALID = 0,
    BD_DT_BOOL,
    BD_DT_UINT8,
    BD_DT_UINT16,
    BD_DT_UINT32,
    BD_DT_UINT64,
    BD_DT_INT8,
    BD_DT_INT16,
    BD_DT_INT32,
    BD_DT_INT64,
    BD_DT_FP16, /* named so it can be reported; not supported for tensors yet */
    BD_DT_FP32,
    BD_DT_FP64,
    BD_DT_BYTES, /* variable-size elements; layout below (BD_BYTES_PREFIX) */
    BD_DT_COUNT_
} bd_dtype_t;

/* "FP32" -> BD_DT_FP32; BD_DT_INVALID for an unknown name. */
bd_dtype_t bd_dtype_from_name(const char *name);
/* The same for the n bytes at s (not terminated, e.g. inside a JSON text). */
bd_dtype_t bd_dtype_from_chars(const char *s, size_t n);
/* BD_DT_FP32 -> "FP32"; "INVALID" for out-of-range values. */
const char *bd_dtype_name(bd_dtype_t dt);
/* Bytes per element (BOOL is 1 byte); 0 for INVALID and BYTES (whose elements vary). */
size_t bd_dtype_size(bd_dtype_t dt);
/* True for the datatypes tensors may carry: BOOL, INT*, UINT*, FP32, FP64, BYTES. */
bool bd_dtype_supported(bd_dtype_t dt);

/* ---- BYTES ------------------------------------------------------------------------------
 * One layout everywhere (codecs, scheduler, backends): Triton's serialized form. Each element
 * is a 4-byte little-endian length L followed by its L bytes, elements back to back in
 * row-major order, no padding; a tensor's byte_size is the total (prefixes + bytes). So a
 * request's rows are still one contiguous run of its data, and binary requests and replies
 * carry the buffer as it is. */
#define BD_BYTES_PREFIX 4

/* Offset just past the first `n` elements of the BYTES buffer data[0..size). Returns false
 * when an element does not fit; then *bad is its index, *need its length (or 4 for a cut
 * length prefix) and *left the bytes that remained for it. Pure; any thread. */
bool bd_bytes_skip(const void *data, size_t size, size_t n, size_t *off, size_t *bad, size_t *need,
                   size_t *left);
/* Check that data[0..size) is exactly `count` BYTES elements. BD_EINVAL with one sentence
 * naming input `name`, e.g. "input 'text': binary BYTES element 3 says 500 bytes but only 12
 * remain". */
int bd_bytes_check(const char *name, const void *data, size_t size, size_t count, bd_err_t *err);

/* ---- shapes ---------------------------------------------------------------------------- */

#define BD_MAX_DIMS 8

typedef struct {
    int ndim;
    int64_t dims[BD_MAX_DIMS]; /* -1 means variable (model metadata only) */
} bd_shape_t;

/* Number of elements. Fails (BD_EINVAL, message names the shape) on a negative dim or when
 * the product overflows or exceeds `max_elems`. */
int bd_shape_count(const bd_shape_t *s, size_t max_elems, size_t *count, bd_err_t *err);
/* Write "[1,16]" into buf (always NUL-terminated). Returns buf. */
const char *bd_shape_str(const bd_shape_t *s, char *buf, size_t cap);
bool bd_shape_equal(const bd_shape_t *a, const bd_shape_t *b);

/* ---- tensors --------------------------------------------------------------------------- */

typedef struct {
    const char *name; /* borrowed (arena or model config) */
    bd_dtype_t dtype;
    bd_shape_t shape;
    void *data;       /* borrowed: body, arena or backend buffer; element layout row-major,
                       * little-endian, BOOL as one byte 0/1 */
    size_t byte_size; /* == count(shape) * dtype_size; BYTES: the whole serialized size */
} bd_tensor_t;

/* Check that t->byte_size agrees with its shape and dtype (for BYTES: the data holds exactly
 * count(shape) elements). BD_EINVAL with a sentence naming the tensor. Any thread. */
int bd_tensor_check_size(const bd_tensor_t *t, bd_err_t *err);

/* ---- request parameters ---------------------------------------------------------------- */

/* A request-level `parameters` entry that the codec does not interpret itself (it reads
 * binary_data_output, priority and timeout). The rest are kept as they came, for whoever
 * gives them a meaning: the scheduler hands them to the backend with the batch (the sim
 * backend's "sim_fail", say). KServe v2 allows booleans, numbers and strings there; an entry
 * of another type is kept as BD_PARAM_OTHER (its name only), so that a consumer that knows
 * the name can refuse it rather than take it for absent. */
typedef enum {
    BD_PARAM_BOOL = 1,
    BD_PARAM_INT,    /* a JSON integer that fits int64 */
    BD_PARAM_DOUBLE, /* any other JSON number (a fraction, an exponent, beyond int64) */
    BD_PARAM_STRING,
    BD_PARAM_OTHER, /* null, an array or an object: no value kept */
} bd_param_kind_t;

/* Entries a request's "parameters" object may have (interpreted ones included). */
#define BD_MAX_PARAMS 64

typedef struct {
    const char *name; /* arena */
    bd_param_kind_t kind;
    union {
        bool b;
        int64_t i;
        double d;
        const char *s; /* arena, NUL-terminated (JSON text here never holds \u0000) */
    } v;
} bd_param_t;

/* The entry of params[0..n) named `name`, or NULL. Pure; any thread. */
const bd_param_t *bd_param_find(const bd_param_t *params, size_t n, const char *name);

/* ---- infer request --------------------------------------------------------------------- */

typedef struct {
    const char *name;      /* arena */
    bool binary;           /* answer in binary: the output's binary_data, else binary_data_output */
    size_t classification; /* parameters.classification (top-k classes); 0: none */
} bd_output_req_t;

typedef struct {
    const char *id;            /* arena; NULL when the request had none */
    const char *model_name;    /* arena; "model_name" when given (front ends that route by it) */
    const char *model_version; /* arena; "model_version" when given */
    bd_tensor_t *inputs;       /* arena */
    size_t n_inputs;
    bd_output_req_t *outputs; /* arena; NULL/0: every output of the model */
    size_t n_outputs;
    bool binary_default; /* parameters.binary_data_output: outputs not listed go binary */
    int64_t priority;    /* parameters.priority, 0 when absent */
    uint64_t timeout_us; /* parameters.timeout, 0 when absent */
    /* arena: the other request-level parameters, in the body's order; NULL/0 when none */
    const bd_param_t *params;
    size_t n_params;
    /* Bit i: inputs[i] is BYTES decoded from JSON "data", so each element is the string as
     * the client wrote it (an image input then holds base64 text), not binary bytes. */
    uint64_t json_text;
} bd_infer_req_t;

typedef struct {
    size_t max_elems_per_tensor; /* 0: no limit besides memory */
    size_t max_inputs;           /* 0: 64 */
    int max_depth;               /* JSON nesting limit; 0: 64 */
} bd_decode_limits_t;

/* Decode an infer request body.
 *
 * `body`/`len` is the whole HTTP body; `header_len` is the Inference-Header-Content-Length
 * value, or `len` when the header was absent (then no binary data may follow). Binary input
 * tensors (parameters.binary_data_size) take their bytes, in input order, from
 * body[header_len..len); the sizes must add up to exactly that tail. JSON `data` may be flat
 * or nested (nesting must then match the shape); values are range-checked for their
 * datatype (BOOL accepts true/false; INT/UINT need integers in range; FP accept numbers).
 *
 * On success `out` borrows `body` (binary tensors point into it) and `arena` (everything
 * else). On failure everything in `out` is zero except `id`, `model_name` and
 * `model_version`, those read before the error; returns BD_EINVAL/BD_ETOOBIG/BD_ENOMEM with one
 * sentence in `err`, e.g. "input 'INPUT0': expected 16 values for shape [1,16], got 15". */
int bd_infer_decode(const char *body, size_t len, size_t header_len, bd_arena_t *arena,
                    const bd_decode_limits_t *limits, bd_infer_req_t *out, bd_err_t *err);
/* bd_infer_decode without its fast path for headers of binary inputs: the general decoder,
 * which bd_infer_decode falls back to for anything else. The two decode every request the
 * fast path takes identically (tests and fuzz_decode compare them). */
int bd_infer_decode_json(const char *body, size_t len, size_t header_len, bd_arena_t *arena,
                         const bd_decode_limits_t *limits, bd_infer_req_t *out, bd_err_t *err);

/* ---- classification ------------------------------------------------------------------ */

/* Triton's classification extension: the top `k` classes of each row of `in` (numeric; its
 * elements past the batch dim, flattened, are the classes) as a BYTES tensor named as `in`,
 * shape [rows, k] when `batched` (rows = in's first dim) else [k], of strings
 * "<score>:<index>" or "<score>:<index>:<label>" (labels[index] when index < n_labels),
 * highest score first, ties by lower index, NaN last. Scores print as C++'s std::to_string
 * does, as Triton prints them: "%f" for FP32/FP64, the integer for INT and UINT, 1/0 for BOOL.
 * The strings live in `arena`; `out` borrows it. BD_EINVAL when k exceeds the classes or the
 * dtype is not numeric; BD_ENOMEM/BD_ETOOBIG when the arena cannot hold the result. */
int bd_classify(const bd_tensor_t *in, size_t k, bool batched, const char *const *labels,
                size_t n_labels, bd_arena_t *arena, bd_tensor_t *out, bd_err_t *err);
/* bd_classify's checks alone (BD_EINVAL, its sentences), with the classes a row has in
 * *classes when not NULL: run on a batch's output, it refuses a request before the batch's
 * outcome is counted, where bd_classify runs later, when the reply is written. */
int bd_classify_check(const bd_tensor_t *in, size_t k, bool batched, size_t *classes,
                      bd_err_t *err);

/* ---- infer response -------------------------------------------------------------------- */

typedef struct {
    const bd_tensor_t *tensor; /* borrowed */
    bool binary;               /* send as binary_data after the JSON header */
} bd_output_enc_t;

/* Encode an infer response into `out` (appended):
 *   {"model_name":..,"model_version":..,"id":..(only if id),"outputs":[{"name":..,
 *    "datatype":..,"shape":[..],"data":[..]} | {..,"parameters":{"binary_data_size":N}}]}
 * followed by the binary outputs' bytes in order. `*header_len` is the JSON part's length
 * when any output is binary (the Inference-Header-Content-Length to send; the reply is the
 * binary extension's even when those outputs hold no bytes), else 0 (a plain JSON reply). FP32
 * values are printed with enough digits to round-trip (%.9g), FP64 with %.17g; NaN/Inf as JSON
 * can't carry them are written as null. Returns 0 or BD_ENOMEM. */
int bd_infer_encode(bd_buf_t *out, const char *model_name, const char *model_version,
                    const char *id, const bd_output_enc_t *outputs, size_t n_outputs,
                    size_t *header_len);

#endif
