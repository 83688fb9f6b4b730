/* test_tensor.c: datatypes, shapes, and the KServe v2 request decoder / response encoder.
 *
 * Decoding is checked value by value (exact bytes in the tensor buffer) and error by error
 * (exact code and message); encoding byte-exact, including a comparison of the fast float
 * printer with snprintf over many random values. Single-threaded; each test owns an arena
 * set up and torn down around it. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tensor/tensor.h"

static bd_arena_t arena;
static char *body_copy; /* the last body built by decode_bin, freed at teardown */

static int setup(void **state)
{
    (void)state;
    bd_arena_init(&arena, 0);
    body_copy = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bd_arena_dispose(&arena);
    free(body_copy);
    body_copy = NULL;
    return 0;
}

static int decode_lim(const char *json, const bd_decode_limits_t *lim, bd_infer_req_t *req,
                      bd_err_t *err)
{
    size_t n = strlen(json);
    return bd_infer_decode(json, n, n, &arena, lim, req, err);
}

static int decode(const char *json, bd_infer_req_t *req, bd_err_t *err)
{
    return decode_lim(json, NULL, req, err);
}

/* Body = JSON header followed by `bin_len` binary bytes; header_len is the real length. */
static int decode_bin(const char *json, const void *bin, size_t bin_len, bd_infer_req_t *req,
                      bd_err_t *err)
{
    size_t hlen = strlen(json);
    free(body_copy);
    body_copy = malloc(hlen + bin_len + 1);
    assert_non_null(body_copy);
    memcpy(body_copy, json, hlen);
    if (bin_len) {
        memcpy(body_copy + hlen, bin, bin_len);
    }
    return bd_infer_decode(body_copy, hlen + bin_len, hlen, &arena, NULL, req, err);
}

static void expect_error(const char *json, int code, const char *msg)
{
    bd_infer_req_t req;
    bd_err_t err = {0};
    int rc = decode(json, &req, &err);
    if (rc != code || strcmp(err.msg, msg) != 0) {
        print_error("body: %s\n  got %d '%s'\n  want %d '%s'\n", json, rc, err.msg, code, msg);
    }
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    assert_string_equal(err.msg, msg);
    assert_null(req.inputs); /* a failed decode leaves no half-filled request */
    assert_int_equal(req.n_inputs, 0);
}

/* Encode `t` as the only output and return the text of its "data" array. */
static char *encode_data(const bd_tensor_t *t)
{
    bd_buf_t b;
    bd_buf_init(&b);
    bd_output_enc_t o = {t, false};
    size_t hlen = 0;
    assert_int_equal(bd_infer_encode(&b, "m", "1", NULL, &o, 1, &hlen), 0);
    assert_int_equal(hlen, 0); /* all JSON */
    char *p = strstr(b.data, "\"data\":[");
    assert_non_null(p);
    p += 8;
    char *end = strstr(p, "]}]}");
    assert_non_null(end);
    assert_string_equal(end, "]}]}");
    char *s = strndup(p, (size_t)(end - p));
    bd_buf_dispose(&b);
    return s;
}

/* ---- datatypes and shapes -------------------------------------------------------------- */

static void test_dtype_names(void **state)
{
    (void)state;
    static const char *names[] = {"BOOL",  "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                  "INT32", "INT64", "FP16",   "FP32",   "FP64",   "BYTES"};
    static const size_t sizes[] = {1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 0};
    for (int i = 0; i < 13; i++) {
        bd_dtype_t dt = (bd_dtype_t)(BD_DT_BOOL + i);
        assert_string_equal(bd_dtype_name(dt), names[i]);
        assert_int_equal(bd_dtype_from_name(names[i]), dt);
        assert_int_equal(bd_dtype_size(dt), sizes[i]);
        assert_int_equal(bd_dtype_supported(dt), dt != BD_DT_FP16);
    }
    assert_int_equal(bd_dtype_from_name("fp32"), BD_DT_INVALID);
    assert_int_equal(bd_dtype_from_name("INVALID"), BD_DT_INVALID);
    assert_int_equal(bd_dtype_from_name(""), BD_DT_INVALID);
    assert_int_equal(bd_dtype_from_name(NULL), BD_DT_INVALID);
    /* The counted form reads exactly n bytes: no prefix, no longer name, no NUL inside. */
    assert_int_equal(bd_dtype_from_chars("FP32,", 4), BD_DT_FP32);
    assert_int_equal(bd_dtype_from_chars("UINT16", 5), BD_DT_INVALID); /* "UINT1" */
    assert_int_equal(bd_dtype_from_chars("INT8", 5), BD_DT_INVALID);   /* with its NUL */
    assert_int_equal(bd_dtype_from_chars("FP32\0x", 6), BD_DT_INVALID);
    assert_int_equal(bd_dtype_from_chars("INT64", 5), BD_DT_INT64);
    assert_int_equal(bd_dtype_from_chars("", 0), BD_DT_INVALID);
    assert_string_equal(bd_dtype_name(BD_DT_INVALID), "INVALID");
    assert_string_equal(bd_dtype_name(BD_DT_COUNT_), "INVALID");
    assert_string_equal(bd_dtype_name((bd_dtype_t)-3), "INVALID");
    assert_int_equal(bd_dtype_size(BD_DT_INVALID), 0);
    assert_false(bd_dtype_supported(BD_DT_INVALID));
    assert_false(bd_dtype_supported(BD_DT_COUNT_));
}

static void test_shape_count(void **state)
{
    (void)state;
    bd_err_t err = {0};
    size_t n = 99;
    bd_shape_t s = {2, {1, 16}};
    assert_int_equal(bd_shape_count(&s, 0, &n, &err), 0);
    assert_int_equal(n, 16);
    bd_shape_t scalar = {0, {0}};
    assert_int_equal(bd_shape_count(&scalar, 0, &n, &err), 0);
    assert_int_equal(n, 1);
    bd_shape_t zero = {3, {4, 0, 7}};
    assert_int_equal(bd_shape_count(&zero, 0, &n, &err), 0);
    assert_int_equal(n, 0);
    /* A zero dim makes the product 0 even after the others overflowed. */
    bd_shape_t zero_big = {4, {INT64_MAX, INT64_MAX, INT64_MAX, 0}};
    assert_int_equal(bd_shape_count(&zero_big, 0, &n, &err), 0);
    assert_int_equal(n, 0);

    bd_shape_t neg = {2, {1, -3}};
    assert_int_equal(bd_shape_count(&neg, 0, &n, &err), BD_EINVAL);
    assert_string_equal(err.msg, "shape [1,-3] has a negative dim");
    bd_shape_t big = {3, {4294967296LL, 4294967296LL, 16}};
    assert_int_equal(bd_shape_count(&big, 0, &n, &err), BD_EINVAL);
    assert_string_equal(err.msg, "shape [4294967296,4294967296,16] has too many elements");
    bd_shape_t lim = {2, {4, 16}};
    assert_int_equal(bd_shape_count(&lim, 63, &n, &err), BD_EINVAL);
    assert_string_equal(err.msg, "shape [4,16] has 64 elements, more than the limit of 63");
    assert_int_equal(bd_shape_count(&lim, 64, &n, NULL), 0);
    assert_int_equal(n, 64);
    bd_shape_t bad = {9, {0}};
    assert_int_equal(bd_shape_count(&bad, 0, &n, &err), BD_EINVAL);
    assert_string_equal(err.msg, "shape has 9 dims; 0 to 8 are supported");
}

static void test_shape_str_equal(void **state)
{
    (void)state;
    char buf[64];
    bd_shape_t s = {2, {1, 16}};
    assert_string_equal(bd_shape_str(&s, buf, sizeof buf), "[1,16]");
    bd_shape_t scalar = {0, {0}};
    assert_string_equal(bd_shape_str(&scalar, buf, sizeof buf), "[]");
    bd_shape_t var = {3, {-1, 3, 224}};
    assert_string_equal(bd_shape_str(&var, buf, sizeof buf), "[-1,3,224]");
    char small[5];
    assert_string_equal(bd_shape_str(&var, small, sizeof small), "[-1,");
    bd_shape_t wide = {
        8,
        {INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN}};
    char big[256];
    bd_shape_str(&wide, big, sizeof big);
    assert_int_equal(strlen(big), 2 + 8 * 20 + 7);

    bd_shape_t a = {2, {1, 16}}, b = {2, {1, 16}}, c = {2, {2, 16}}, d = {1, {16}};
    b.dims[5] = 77; /* unused dims do not matter */
    assert_true(bd_shape_equal(&a, &b));
    assert_false(bd_shape_equal(&a, &c));
    assert_false(bd_shape_equal(&a, &d));
    assert_true(bd_shape_equal(&scalar, &scalar));
}

/* ---- decode: values of every datatype -------------------------------------------------- */

typedef struct {
    const char *dtype;
    const char *data; /* JSON values */
    size_t count;
    const void *bytes;   /* expected tensor bytes */
    const char *encoded; /* expected "data" text when encoded back */
} dtype_case_t;

static void test_roundtrip_every_dtype(void **state)
{
    (void)state;
    static const uint8_t b_bool[] = {1, 0, 1};
    static const uint8_t b_u8[] = {0, 255, 7};
    static const uint16_t b_u16[] = {0, 65535, 300};
    static const uint32_t b_u32[] = {0, 4294967295u, 70000};
    static const uint64_t b_u64[] = {0, UINT64_MAX, 9223372036854775808u, 42};
    static const int8_t b_i8[] = {-128, 127, -1, 0};
    static const int16_t b_i16[] = {-32768, 32767, -2};
    static const int32_t b_i32[] = {INT32_MIN, INT32_MAX, 3, -4};
    static const int64_t b_i64[] = {INT64_MIN, INT64_MAX, -1, 9007199254740993};
    static const float b_f32[] = {1.5f, -0.25f, 3.0f, 0.1f, 1e-5f, 3.4e38f, -0.0f, 16777216.0f};
    static const double b_f64[] = {0.1, 1e300, -2.0, 5e-324, 123456789012345678.0, -0.0};
    static const dtype_case_t cases[] = {
        {"BOOL", "[true,false,true]", 3, b_bool, "true,false,true"},
        {"UINT8", "[0,255,7]", 3, b_u8, "0,255,7"},
        {"UINT16", "[0,65535,300]", 3, b_u16, "0,65535,300"},
        {"UINT32", "[0,4294967295,70000]", 3, b_u32, "0,4294967295,70000"},
        {"UINT64", "[0,18446744073709551615,9223372036854775808,42.0]", 4, b_u64,
         "0,18446744073709551615,9223372036854775808,42"},
        {"INT8", "[-128,127,-1,0]", 4, b_i8, "-128,127,-1,0"},
        {"INT16", "[-32768,32767,-2.0]", 3, b_i16, "-32768,32767,-2"},
        {"INT32", "[-2147483648,2147483647,3,-4]", 4, b_i32, "-2147483648,2147483647,3,-4"},
        {"INT64", "[-9223372036854775808,9223372036854775807,-1,9007199254740993]", 4, b_i64,
         "-9223372036854775808,9223372036854775807,-1,9007199254740993"},
        {"FP32", "[1.5,-0.25,3,0.1,1e-5,3.4e38,-0.0,16777216]", 8, b_f32,
         "1.5,-0.25,3,0.100000001,9.99999975e-06,3.39999995e+38,-0.0,16777216"},
        {"FP64", "[0.1,1e300,-2,5e-324,123456789012345678,-0.0]", 6, b_f64,
         "0.10000000000000001,1.0000000000000001e+300,-2,4.9406564584124654e-324,"
         "1.2345678901234568e+17,-0.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const dtype_case_t *c = &cases[i];
        char json[512];
        snprintf(json, sizeof json,
                 "{\"inputs\":[{\"name\":\"X\",\"datatype\":\"%s\",\"shape\":[%zu],\"data\":%s}]}",
                 c->dtype, c->count, c->data);
        bd_infer_req_t req;
        bd_err_t err = {0};
        int rc = decode(json, &req, &err);
        if (rc != 0) {
            print_error("%s: %s\n", c->dtype, err.msg);
        }
        assert_int_equal(rc, 0);
        assert_int_equal(req.n_inputs, 1);
        const bd_tensor_t *t = &req.inputs[0];
        assert_string_equal(t->name, "X");
        assert_int_equal(t->dtype, bd_dtype_from_name(c->dtype));
        assert_int_equal(t->shape.ndim, 1);
        assert_int_equal(t->shape.dims[0], (int64_t)c->count);
        assert_int_equal(t->byte_size, c->count * bd_dtype_size(t->dtype));
        assert_memory_equal(t->data, c->bytes, t->byte_size);
        char *enc = encode_data(t);
        assert_string_equal(enc, c->encoded);
        free(enc);
    }
}

/* FP32 values are rounded once, from the text: a number whose double lies exactly halfway
 * between two floats is rounded by strtof, not twice (double, then float). Each number here
 * reads as a double at a float midpoint, and rounding that double again gives the wrong float
 * (1 and out of range, where the nearest floats are 1 + 2^-23 and FLT_MAX). */
static void test_fp32_rounds_once(void **state)
{
    (void)state;
    const char *json = "{\"inputs\":[{\"name\":\"X\",\"datatype\":\"FP32\",\"shape\":[6],\"data\":["
                       "1.00000005960464478,1.00000005960464477,3.40282356779733661e38,"
                       "-340282356779733661637539395458142568447,0.5,16777217]}]}";
    const float want[6] = {0x1.000002p0f, 1.0f, FLT_MAX, -FLT_MAX, 0.5f, 16777216.0f};
    bd_infer_req_t req;
    bd_err_t err = {0};
    int rc = decode(json, &req, &err);
    if (rc != 0) {
        print_error("%s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(req.inputs[0].byte_size, sizeof want);
    assert_memory_equal(req.inputs[0].data, want, sizeof want);
    /* Just past FLT_MAX + half an ulp, which reads as that double too: out of range. */
    expect_error("{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[1],"
                 "\"data\":[340282356779733661637539395458142568449]}]}",
                 BD_EINVAL,
                 "input 'INPUT0': value 340282356779733661637539395458142568449 at index 0 is "
                 "out of range for FP32");
}

/* parameters.sim_fail (the sim backend's per-request fault injection) is kept for the backend
 * as it came: the codec does not judge it (the sim backend's check_params refuses anything but
 * a boolean; see test_backend and test_sched). */
static void test_decode_sim_fail(void **state)
{
    (void)state;
    const char *in = "\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT32\",\"shape\":[1],"
                     "\"data\":[1]}]}";
    char body[256];
    bd_infer_req_t req;
    bd_err_t err = {0};
    const bd_param_t *p;
    snprintf(body, sizeof body, "{\"parameters\":{\"sim_fail\":true},%s", in);
    assert_int_equal(decode(body, &req, &err), 0);
    assert_non_null(p = bd_param_find(req.params, req.n_params, "sim_fail"));
    assert_int_equal(p->kind, BD_PARAM_BOOL);
    assert_true(p->v.b);
    snprintf(body, sizeof body, "{\"parameters\":{\"sim_fail\":false},%s", in);
    assert_int_equal(decode(body, &req, &err), 0);
    assert_non_null(p = bd_param_find(req.params, req.n_params, "sim_fail"));
    assert_int_equal(p->kind, BD_PARAM_BOOL);
    assert_false(p->v.b);
    snprintf(body, sizeof body, "{%s", in);
    assert_int_equal(decode(body, &req, &err), 0);
    assert_null(bd_param_find(req.params, req.n_params, "sim_fail"));
    assert_int_equal(req.n_params, 0);
    assert_null(req.params);
    snprintf(body, sizeof body, "{\"parameters\":{\"sim_fail\":1},%s", in);
    assert_int_equal(decode(body, &req, &err), 0);
    assert_non_null(p = bd_param_find(req.params, req.n_params, "sim_fail"));
    assert_int_equal(p->kind, BD_PARAM_INT);
    snprintf(body, sizeof body, "{\"parameters\":{\"sim_fail\":\"true\"},%s", in);
    assert_int_equal(decode(body, &req, &err), 0);
    assert_non_null(p = bd_param_find(req.params, req.n_params, "sim_fail"));
    assert_int_equal(p->kind, BD_PARAM_STRING);
    snprintf(body, sizeof body, "{\"parameters\":{\"sim_fail\":null},%s", in);
    assert_int_equal(decode(body, &req, &err), 0);
    assert_non_null(p = bd_param_find(req.params, req.n_params, "sim_fail"));
    assert_int_equal(p->kind, BD_PARAM_OTHER);
}

/* Request-level parameters the codec does not interpret are kept, typed, in the body's order;
 * the three it interprets are not; null, arrays and objects are kept by name only (KServe v2
 * allows only booleans, numbers and strings there); more than BD_MAX_PARAMS entries is a 400. */
#define IN_A "\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT32\",\"shape\":[1],\"data\":[1]}]"

static void test_decode_params_kept_generically(void **state)
{
    (void)state;
    bd_infer_req_t req;
    bd_err_t err = {0};
    const char *json = "{\"parameters\":{\"priority\":1,\"flag\":true,\"n\":-7,\"x\":0.5,"
                       "\"big\":99999999999999999999,\"s\":\"abc\",\"timeout\":5,\"nul\":null,"
                       "\"arr\":[1],\"obj\":{},\"binary_data_output\":false,\"e\":\"\"}," IN_A "}";
    assert_int_equal(decode(json, &req, &err), 0);
    assert_int_equal(req.priority, 1);
    assert_int_equal(req.timeout_us, 5);
    assert_false(req.binary_default);
    const struct {
        const char *name;
        bd_param_kind_t kind;
    } want[] = {{"flag", BD_PARAM_BOOL},  {"n", BD_PARAM_INT},     {"x", BD_PARAM_DOUBLE},
                {"big", BD_PARAM_DOUBLE}, {"s", BD_PARAM_STRING},  {"nul", BD_PARAM_OTHER},
                {"arr", BD_PARAM_OTHER},  {"obj", BD_PARAM_OTHER}, {"e", BD_PARAM_STRING}};
    assert_int_equal(req.n_params, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < req.n_params; i++) {
        assert_string_equal(req.params[i].name, want[i].name);
        assert_int_equal(req.params[i].kind, want[i].kind);
    }
    assert_true(req.params[0].v.b);
    assert_int_equal(req.params[1].v.i, -7);
    assert_true(req.params[2].v.d == 0.5);
    assert_true(req.params[3].v.d == 1e20);
    assert_string_equal(req.params[4].v.s, "abc");
    assert_string_equal(req.params[8].v.s, "");
    assert_null(bd_param_find(req.params, req.n_params, "priority"));
    assert_null(bd_param_find(req.params, req.n_params, "timeout"));
    assert_null(bd_param_find(req.params, req.n_params, "binary_data_output"));
    assert_null(bd_param_find(req.params, req.n_params, "missing"));
    assert_ptr_equal(bd_param_find(req.params, req.n_params, "s"), &req.params[4]);

    char body[2048];
    size_t off = (size_t)snprintf(body, sizeof body, "{\"parameters\":{");
    for (int i = 0; i < BD_MAX_PARAMS; i++) {
        off += (size_t)snprintf(body + off, sizeof body - off, "%s\"p%d\":%d", i ? "," : "", i, i);
    }
    snprintf(body + off, sizeof body - off, "}," IN_A "}");
    assert_int_equal(decode(body, &req, &err), 0);
    assert_int_equal(req.n_params, BD_MAX_PARAMS);
    assert_int_equal(req.params[BD_MAX_PARAMS - 1].v.i, BD_MAX_PARAMS - 1);
    snprintf(body + off, sizeof body - off, ",\"one_more\":1}," IN_A "}");
    expect_error(body, BD_EINVAL, "\"parameters\" has 65 entries; at most 64 are allowed");
}

static void test_decode_full_request(void **state)
{
    (void)state;
    const char *json =
        "{\"id\":\"req-7\",\"parameters\":{\"binary_data_output\":true,\"priority\":2,"
        "\"timeout\":1500,\"sequence_id\":\"ignored\"},\"extra\":[1,2],"
        "\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"data\":[1,2],\"parameters\":{\"other\":1}},"
        "{\"name\":\"INPUT1\",\"datatype\":\"INT32\",\"shape\":[],\"data\":[5]}],"
        "\"outputs\":[{\"name\":\"OUT0\"},{\"name\":\"OUT1\",\"parameters\":{\"binary_data\":"
        "false}}]}";
    bd_infer_req_t req;
    bd_err_t err = {0};
    assert_int_equal(decode(json, &req, &err), 0);
    assert_string_equal(req.id, "req-7");
    assert_true(req.binary_default);
    assert_int_equal(req.priority, 2);
    assert_int_equal(req.timeout_us, 1500);
    assert_int_equal(req.n_inputs, 2);
    assert_int_equal(req.inputs[1].shape.ndim, 0);
    assert_int_equal(req.inputs[1].byte_size, 4);
    assert_int_equal(*(int32_t *)req.inputs[1].data, 5);
    assert_int_equal(req.n_outputs, 2);
    assert_string_equal(req.outputs[0].name, "OUT0");
    assert_true(req.outputs[0].binary); /* from binary_data_output */
    assert_string_equal(req.outputs[1].name, "OUT1");
    assert_false(req.outputs[1].binary);

    /* Defaults when nothing optional is given. */
    assert_int_equal(decode("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"BOOL\",\"shape\":[0],"
                            "\"data\":[]}],\"outputs\":[]}",
                            &req, &err),
                     0);
    assert_null(req.id);
    assert_false(req.binary_default);
    assert_int_equal(req.priority, 0);
    assert_int_equal(req.timeout_us, 0);
    assert_null(req.outputs);
    assert_int_equal(req.n_outputs, 0);
    assert_int_equal(req.inputs[0].byte_size, 0);

    /* A failed decode keeps the names read before the error (errors are answered by id and
     * counted against the model named), nothing else. */
    assert_int_equal(decode("{\"id\":\"e1\",\"model_name\":\"m\",\"model_version\":\"2\","
                            "\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[2],"
                            "\"data\":[1]}]}",
                            &req, &err),
                     BD_EINVAL);
    assert_string_equal(req.id, "e1");
    assert_string_equal(req.model_name, "m");
    assert_string_equal(req.model_version, "2");
    assert_int_equal(req.n_inputs, 0);
    assert_null(req.inputs);
}

static void test_decode_nested(void **state)
{
    (void)state;
    bd_infer_req_t req;
    bd_err_t err = {0};
    const float want[6] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(decode("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[2,3],"
                            "\"data\":[[1,2,3],[4,5,6]]},"
                            "{\"name\":\"B\",\"datatype\":\"FP32\",\"shape\":[2,3],"
                            "\"data\":[1,2,3,4,5,6]}]}",
                            &req, &err),
                     0);
    assert_memory_equal(req.inputs[0].data, want, sizeof want);
    assert_memory_equal(req.inputs[1].data, want, sizeof want);

    const int16_t want3[8] = {0, 1, 2, 3, 4, 5, 6, -7};
    assert_int_equal(decode("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT16\","
                            "\"shape\":[2,2,2],\"data\":[[[0,1],[2,3]],[[4,5],[6,-7]]]}]}",
                            &req, &err),
                     0);
    assert_memory_equal(req.inputs[0].data, want3, sizeof want3);

    assert_int_equal(decode("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"UINT8\","
                            "\"shape\":[2,0],\"data\":[[],[]]}]}",
                            &req, &err),
                     0);
    assert_int_equal(req.inputs[0].byte_size, 0);
}

/* ---- BYTES ----------------------------------------------------------------------------- */

/* Append one BYTES element (4-byte little-endian length + bytes) at w; returns the end. */
static unsigned char *put_elem(unsigned char *w, const char *s, size_t n)
{
    w[0] = (unsigned char)n;
    w[1] = (unsigned char)(n >> 8);
    w[2] = (unsigned char)(n >> 16);
    w[3] = (unsigned char)(n >> 24);
    memcpy(w + 4, s, n);
    return w + 4 + n;
}

#define BYTES1(shape, data)                                                                        \
    "{\"inputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\",\"shape\":" shape ",\"data\":" data "}]}"

static void expect_error_prefix(const char *json, int code, const char *prefix)
{
    bd_infer_req_t req;
    bd_err_t err = {0};
    int rc = decode(json, &req, &err);
    if (rc != code || strncmp(err.msg, prefix, strlen(prefix)) != 0) {
        print_error("body: %s\n  got %d '%s'\n  want %d '%s...'\n", json, rc, err.msg, code,
                    prefix);
    }
    assert_int_equal(rc, code);
    assert_true(strncmp(err.msg, prefix, strlen(prefix)) == 0);
    assert_null(req.inputs);
}

static void test_bytes_json_decode(void **state)
{
    (void)state;
    /* Escapes, a 2-byte UTF-8 character raw, a surrogate pair, \u0000, an empty string. */
    const char *json = BYTES1("[1,5]", "[[\"ab\",\"\",\"\\u00e9\xc3\xa9\\n\\\"\\\\\\/\","
                                       "\"\\ud83d\\ude00\",\"a\\u0000b\\t\"]]");
    bd_infer_req_t req;
    bd_err_t err = {0};
    assert_int_equal(decode(json, &req, &err), 0);
    unsigned char want[64], *w = want;
    w = put_elem(w, "ab", 2);
    w = put_elem(w, "", 0);
    w = put_elem(w, "\xc3\xa9\xc3\xa9\n\"\\/", 8);
    w = put_elem(w, "\xf0\x9f\x98\x80", 4);
    w = put_elem(w, "a\0b\t", 4);
    assert_int_equal(req.inputs[0].dtype, BD_DT_BYTES);
    assert_int_equal(req.inputs[0].byte_size, (size_t)(w - want));
    assert_memory_equal(req.inputs[0].data, want, (size_t)(w - want));
    assert_int_equal(bd_tensor_check_size(&req.inputs[0], NULL), 0);

    /* Flat data, nested shape; an empty tensor. */
    assert_int_equal(decode(BYTES1("[2,1]", "[\"x\",\"yz\"]"), &req, &err), 0);
    w = put_elem(want, "x", 1);
    w = put_elem(w, "yz", 2);
    assert_int_equal(req.inputs[0].byte_size, 11);
    assert_memory_equal(req.inputs[0].data, want, 11);
    assert_int_equal(decode(BYTES1("[0]", "[]"), &req, &err), 0);
    assert_int_equal(req.inputs[0].byte_size, 0);
}

static void test_bytes_json_errors(void **state)
{
    (void)state;
    expect_error(BYTES1("[3]", "[\"a\",\"b\",2]"), BD_EINVAL,
                 "input 'T': value at index 2 is a number; BYTES data must be strings");
    expect_error(BYTES1("[2]", "[\"a\",null]"), BD_EINVAL,
                 "input 'T': value at index 1 is null; BYTES data must be strings");
    expect_error(BYTES1("[2]", "[\"a\",{\"b\":1}]"), BD_EINVAL,
                 "input 'T': value at index 1 is an object; BYTES data must be strings");
    expect_error(BYTES1("[2]", "[\"a\"]"), BD_EINVAL,
                 "input 'T': expected 2 values for shape [2], got 1");
    expect_error(BYTES1("[1]", "[\"a\xff\"]"), BD_EINVAL,
                 "request body is not valid JSON: invalid UTF-8 in a string in the data of input "
                 "'T' near '\xff\"]' (line 1, column 65)");
    /* What jansson refuses in strings, the scanner refuses too. */
    static const char *const bad_utf8[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, 3 bytes */
        "\xed\xa0\x80",     /* an encoded surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xc3",             /* cut short */
        "\x80",             /* a lone continuation byte */
    };
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, BYTES1("[1]", "[\"x%s\"]"), bad_utf8[i]);
        expect_error_prefix(json, BD_EINVAL,
                            "request body is not valid JSON: invalid UTF-8 in a string in the "
                            "data of input 'T'");
    }
    expect_error_prefix(
        BYTES1("[1]", "[\"\\ud800\"]"), BD_EINVAL,
        "request body is not valid JSON: a high surrogate escape not followed "
        "by a low one in a string in the data of input 'T' near '\\ud800\"]' (line 1, "
        "column 64)");
    expect_error_prefix(BYTES1("[1]", "[\"\\ud800\\u0041\"]"), BD_EINVAL,
                        "request body is not valid JSON: a high surrogate escape not followed "
                        "by a low one");
    expect_error_prefix(BYTES1("[1]", "[\"\\udc00\"]"), BD_EINVAL,
                        "request body is not valid JSON: a lone low surrogate escape in a string");
    expect_error_prefix(BYTES1("[1]", "[\"\\x\"]"), BD_EINVAL,
                        "request body is not valid JSON: invalid escape in a string");
    expect_error_prefix(BYTES1("[1]", "[\"\\u12g4\"]"), BD_EINVAL,
                        "request body is not valid JSON: invalid escape in a string");
    expect_error_prefix(BYTES1("[1]", "[\"\\u12\"]"), BD_EINVAL,
                        "request body is not valid JSON: invalid escape in a string");
    expect_error_prefix(BYTES1("[1]", "[\"a\x01\"]"), BD_EINVAL,
                        "request body is not valid JSON: a control character in a string");
    /* \u0000 stays refused outside "data", where jansson reads the text. */
    expect_error_prefix("{\"id\":\"\\u0000\",\"inputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\","
                        "\"shape\":[1],\"data\":[\"a\"]}]}",
                        BD_EINVAL,
                        "request body is not valid JSON: \\u0000 is not allowed in strings");
}

static void test_bytes_binary_decode(void **state)
{
    (void)state;
    unsigned char bin[64], *w = bin;
    w = put_elem(w, "hello", 5);
    w = put_elem(w, "", 0);
    w = put_elem(w, "\0\xff", 2);
    size_t n = (size_t)(w - bin); /* 19 */
    char json[256];
    snprintf(json, sizeof json,
             "{\"inputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\",\"shape\":[3],"
             "\"parameters\":{\"binary_data_size\":%zu}}]}",
             n);
    bd_infer_req_t req;
    bd_err_t err = {0};
    assert_int_equal(decode_bin(json, bin, n, &req, &err), 0);
    assert_int_equal(req.inputs[0].byte_size, n);
    assert_ptr_equal(req.inputs[0].data, body_copy + strlen(json));

    /* Truncated: element 1 says 500 bytes. */
    unsigned char bad[32], *b = put_elem(bad, "abc", 3);
    b[0] = 0xf4;
    b[1] = 0x01;
    b[2] = b[3] = 0;
    memset(b + 4, 'x', 12);
    b += 16; /* 7 + 16 = 23 bytes */
    snprintf(json, sizeof json,
             "{\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":%zu}}]}",
             (size_t)(b - bad));
    assert_int_equal(decode_bin(json, bad, (size_t)(b - bad), &req, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'text': binary BYTES element 1 says 500 bytes but only 12 "
                                 "remain");
    assert_null(req.inputs);

    /* A length prefix cut short; data that ends early; bytes left over. */
    snprintf(json, sizeof json,
             "{\"inputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":10}}]}");
    assert_int_equal(decode_bin(json, "\1\0\0\0a\2\0\0\0b", 10, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg,
                        "input 'T': binary BYTES element 1 says 2 bytes but only 1 remain");
    /* At element 0: most likely data sent without its length prefixes (a PNG as it is). */
    assert_int_equal(decode_bin(json, "\x89PNG\r\n\x1a\n\0\0", 10, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'T': binary BYTES element 0 says 1196314761 bytes but "
                                 "only 6 remain (each element is a 4-byte little-endian length, "
                                 "then that many bytes)");
    assert_int_equal(decode_bin(json, "\1\0\0\0a\0\0\0\0\0", 10, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'T': binary BYTES data has 1 bytes left over after the 2 "
                                 "elements of its shape");
    snprintf(json, sizeof json,
             "{\"inputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\",\"shape\":[3],"
             "\"parameters\":{\"binary_data_size\":14}}]}");
    assert_int_equal(decode_bin(json, "\1\0\0\0a\1\0\0\0b\0\0\0\0", 14, &req, &err), 0);
    assert_int_equal(decode_bin(json, "\1\0\0\0a\2\0\0\0bc\0\0\0", 14, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'T': binary BYTES element 2 has a length prefix cut to 3 "
                                 "of its 4 bytes");
    /* Fewer bytes than the shape's length prefixes: refused before anything is read. */
    assert_int_equal(decode_bin(json, "\0\0\0\0\0\0\0\0", 8, &req, &err), BD_EINVAL);
    snprintf(json, sizeof json,
             "{\"inputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\",\"shape\":[3],"
             "\"parameters\":{\"binary_data_size\":8}}]}");
    assert_int_equal(decode_bin(json, "\0\0\0\0\0\0\0\0", 8, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'T': binary_data_size is 8 but shape [3] of BYTES needs at "
                                 "least 12 bytes (a 4-byte length per element)");
    /* A huge shape with a small size: refused by the size, never allocated. */
    snprintf(json, sizeof json,
             "{\"inputs\":[{\"name\":\"T\",\"datatype\":\"BYTES\",\"shape\":[1000000000000],"
             "\"parameters\":{\"binary_data_size\":4}}]}");
    assert_int_equal(decode_bin(json, "\0\0\0\0", 4, &req, &err), BD_EINVAL);
    /* Ends after 1 of 2 elements. */
    assert_int_equal(bd_bytes_check("T", "\0\0\0\0", 4, 2, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'T': binary BYTES data ends after 1 elements but the shape "
                                 "needs 2");
}

static void test_bytes_encode(void **state)
{
    (void)state;
    unsigned char data[64], *w = data;
    w = put_elem(w, "a\"b\\c\n\x01", 7);
    w = put_elem(w, "\xc3\xa9\xf0\x9f\x98\x80", 6);
    w = put_elem(w, "x\xffy\xc3", 4);
    size_t n = (size_t)(w - data);
    bd_tensor_t t = {"S", BD_DT_BYTES, {2, {1, 3}}, data, n};
    char *got = encode_data(&t);
    assert_string_equal(got, "\"a\\\"b\\\\c\\n\\u0001\",\"\xc3\xa9\xf0\x9f\x98\x80\","
                             "\"x\\ufffdy\\ufffd\"");
    free(got);

    /* Binary: the buffer itself; its size is the prefixes plus the bytes. */
    bd_buf_t b;
    bd_buf_init(&b);
    bd_output_enc_t o = {&t, true};
    size_t hlen = 0;
    assert_int_equal(bd_infer_encode(&b, "m", "1", NULL, &o, 1, &hlen), 0);
    assert_non_null(strstr(b.data, "\"datatype\":\"BYTES\",\"shape\":[1,3],\"parameters\":{"
                                   "\"binary_data_size\":29}"));
    assert_int_equal(n, 29);
    assert_int_equal(b.len, hlen + n);
    assert_memory_equal(b.data + hlen, data, n);
    /* A broken BYTES buffer is refused. */
    bd_buf_reset(&b);
    t.byte_size = n - 1;
    assert_int_equal(bd_infer_encode(&b, "m", "1", NULL, &o, 1, &hlen), BD_EINVAL);
    bd_buf_dispose(&b);

    /* Round trip: decode what the encoder wrote as JSON. */
    t.byte_size = n;
    t.shape = (bd_shape_t){1, {2}};
    w = put_elem(data, "\xe2\x82\xac\"", 4);
    w = put_elem(w, "\t\0", 2);
    t.byte_size = (size_t)(w - data);
    got = encode_data(&t);
    char json[256];
    snprintf(json, sizeof json, BYTES1("[2]", "[%s]"), got);
    free(got);
    bd_infer_req_t req;
    bd_err_t err = {0};
    assert_int_equal(decode(json, &req, &err), 0);
    assert_int_equal(req.inputs[0].byte_size, t.byte_size);
    assert_memory_equal(req.inputs[0].data, data, t.byte_size);
}

/* The strings of a BYTES tensor, joined by '|'. */
static char *bytes_joined(const bd_tensor_t *t)
{
    size_t count = 0, off = 0;
    assert_int_equal(bd_shape_count(&t->shape, 0, &count, NULL), 0);
    char *s = calloc(1, t->byte_size + count + 1);
    const unsigned char *p = t->data;
    for (size_t i = 0; i < count; i++) {
        size_t len = p[off] | (size_t)p[off + 1] << 8;
        if (i) {
            strcat(s, "|");
        }
        strncat(s, (const char *)p + off + 4, len);
        off += 4 + len;
    }
    assert_int_equal(off, t->byte_size);
    return s;
}

static void test_classify(void **state)
{
    (void)state;
    float f[2][4] = {{0.1f, 0.7f, 0.2f, 0.7f}, {-1.0f, NAN, 3.5f, 2.0f}};
    bd_tensor_t t = {"prob", BD_DT_FP32, {2, {2, 4}}, f, sizeof f};
    const char *labels[] = {"cat", "dog", ""};
    bd_tensor_t out;
    bd_err_t err = {0};
    assert_int_equal(bd_classify(&t, 3, true, labels, 3, &arena, &out, &err), 0);
    assert_int_equal(out.dtype, BD_DT_BYTES);
    assert_int_equal(out.shape.ndim, 2);
    assert_int_equal(out.shape.dims[0], 2);
    assert_int_equal(out.shape.dims[1], 3);
    assert_string_equal(out.name, "prob");
    char *s = bytes_joined(&out);
    /* Ties: lower index first; index 3 has no label; an empty label is none; NaN last. */
    assert_string_equal(s, "0.700000:1:dog|0.700000:3|0.200000:2|"
                           "3.500000:2|2.000000:3|-1.000000:0:cat");
    free(s);
    assert_int_equal(bd_tensor_check_size(&out, NULL), 0);

    /* Without batching the whole tensor is the classes; integers print as integers. */
    int64_t v[5] = {INT64_MIN, 9007199254740993, 9007199254740992, 0, -4};
    bd_tensor_t ti = {"logits", BD_DT_INT64, {1, {5}}, v, sizeof v};
    assert_int_equal(bd_classify(&ti, 2, false, NULL, 0, &arena, &out, &err), 0);
    assert_int_equal(out.shape.ndim, 1);
    assert_int_equal(out.shape.dims[0], 2);
    s = bytes_joined(&out);
    assert_string_equal(s, "9007199254740993:1|9007199254740992:2");
    free(s);
    uint8_t u[3] = {200, 255, 7};
    bd_tensor_t tu = {"u", BD_DT_UINT8, {2, {1, 3}}, u, sizeof u};
    assert_int_equal(bd_classify(&tu, 3, true, labels, 2, &arena, &out, &err), 0);
    s = bytes_joined(&out);
    assert_string_equal(s, "255:1:dog|200:0:cat|7:2");
    free(s);
    double d[2] = {1e300, -0.5};
    bd_tensor_t td = {"d", BD_DT_FP64, {2, {1, 2}}, d, sizeof d};
    assert_int_equal(bd_classify(&td, 1, true, NULL, 0, &arena, &out, &err), 0);
    s = bytes_joined(&out);
    char want[400];
    snprintf(want, sizeof want, "%f:0", 1e300);
    assert_string_equal(s, want);
    free(s);

    /* Errors. */
    assert_int_equal(bd_classify(&t, 5, true, NULL, 0, &arena, &out, &err), BD_EINVAL);
    assert_string_equal(err.msg, "output 'prob': classification asks for 5 classes but the output "
                                 "has 4");
    bd_tensor_t tb = {"s", BD_DT_BYTES, {1, {1}}, "\0\0\0\0", 4};
    assert_int_equal(bd_classify(&tb, 1, false, NULL, 0, &arena, &out, &err), BD_EINVAL);
    assert_string_equal(err.msg, "output 's' is BYTES; classification needs a numeric output");
}

/* Every class of a large output, ranked: values ascending with index, every 7th a tie with its
 * neighbour, so the whole order (score descending, then index ascending) is checked; then a k
 * whose ranking alone would pass the request's memory limit is refused before any of it. */
static void test_classify_many(void **state)
{
    (void)state;
    enum { N = 5000 };
    static int32_t v[N];
    for (int i = 0; i < N; i++) {
        v[i] = i % 7 == 0 && i > 0 ? (int32_t)(i - 1) : (int32_t)i;
    }
    bd_tensor_t t = {"x", BD_DT_INT32, {1, {N}}, v, sizeof v};
    bd_tensor_t out;
    bd_err_t err = {0};
    assert_int_equal(bd_classify(&t, N, false, NULL, 0, &arena, &out, &err), 0);
    assert_int_equal(out.shape.dims[0], N);
    const unsigned char *p = out.data;
    int64_t prev_score = INT64_MAX, prev_index = -1;
    for (int j = 0; j < N; j++) {
        uint32_t len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
        char s[32];
        assert_true(len < sizeof s);
        memcpy(s, p + 4, len);
        s[len] = 0;
        long long score = 0, index = 0;
        assert_int_equal(sscanf(s, "%lld:%lld", &score, &index), 2);
        assert_int_equal(score, v[index]);
        assert_true(score < prev_score || (score == prev_score && index > prev_index));
        prev_score = score;
        prev_index = index;
        p += 4 + len;
    }

    /* 4 MB of BOOL asking for all 4,000,000 classes: 32 bytes of ranking each, 128 MB, against a
     * limit of 32 MB. */
    size_t n = 4000000;
    unsigned char *b = calloc(n, 1);
    assert_non_null(b);
    bd_tensor_t tb = {"OUTPUT0", BD_DT_BOOL, {1, {(int64_t)n}}, b, n};
    bd_arena_t small;
    bd_arena_init(&small, (size_t)32 << 20);
    assert_int_equal(bd_classify(&tb, n, false, NULL, 0, &small, &out, &err), BD_ETOOBIG);
    assert_string_equal(err.msg,
                        "classification of output 'OUTPUT0' needs at least 128000000 bytes, "
                        "which would pass the request's memory limit of 33554432 bytes");
    assert_true(small.used < 4096);
    bd_arena_dispose(&small);
    free(b);
}

/* ---- decode: binary tensors ------------------------------------------------------------ */

static void test_decode_binary(void **state)
{
    (void)state;
    const char *json = "{\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[1,4],"
                       "\"parameters\":{\"binary_data_size\":16}},"
                       "{\"name\":\"J\",\"datatype\":\"INT8\",\"shape\":[2],\"data\":[1,-1]},"
                       "{\"name\":\"B\",\"datatype\":\"INT64\",\"shape\":[3],"
                       "\"parameters\":{\"binary_data_size\":24}},"
                       "{\"name\":\"E\",\"datatype\":\"UINT8\",\"shape\":[0],"
                       "\"parameters\":{\"binary_data_size\":0}}]}";
    float a[4] = {1.5f, 2.5f, -3.0f, 0.0f};
    int64_t b[3] = {-5, 6, INT64_MAX};
    unsigned char bin[64] = {0};
    memcpy(bin, a, 16);
    memcpy(bin + 16, b, 24);
    bd_infer_req_t req;
    bd_err_t err = {0};
    assert_int_equal(decode_bin(json, bin, 40, &req, &err), 0);
    assert_int_equal(req.n_inputs, 4);
    size_t hlen = strlen(json);
    assert_ptr_equal(req.inputs[0].data, body_copy + hlen);
    assert_int_equal(req.inputs[0].byte_size, 16);
    assert_memory_equal(req.inputs[0].data, a, 16);
    assert_ptr_equal(req.inputs[2].data, body_copy + hlen + 16);
    assert_memory_equal(req.inputs[2].data, b, 24);
    assert_int_equal(req.inputs[3].byte_size, 0);
    const int8_t j[2] = {1, -1};
    assert_memory_equal(req.inputs[1].data, j, 2);

    /* Tail too short / too long / present without binary inputs. */
    bd_err_t e2 = {0};
    assert_int_equal(decode_bin(json, bin, 36, &req, &e2), BD_EINVAL);
    char want[160];
    snprintf(want, sizeof want,
             "binary inputs take 40 bytes but 36 bytes follow the %zu-byte JSON header", hlen);
    assert_string_equal(e2.msg, want);
    assert_int_equal(decode_bin(json, bin, 0, &req, &e2), BD_EINVAL);
    const char *plain = "{\"inputs\":[{\"name\":\"J\",\"datatype\":\"INT8\",\"shape\":[1],"
                        "\"data\":[1]}]}";
    assert_int_equal(decode_bin(plain, bin, 3, &req, &e2), BD_EINVAL);
    snprintf(want, sizeof want,
             "binary inputs take 0 bytes but 3 bytes follow the %zu-byte JSON header",
             strlen(plain));
    assert_string_equal(e2.msg, want);

    /* The example from the contract: a 120-byte header, 60 bytes behind it. */
    char hdr[121];
    const char *base = "{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\","
                       "\"shape\":[1,16],\"parameters\":{\"binary_data_size\":64}}]";
    size_t blen = strlen(base);
    memcpy(hdr, base, blen);
    memset(hdr + blen, ' ', 119 - blen); /* JSON whitespace pads the header to 120 bytes */
    hdr[119] = '}';
    hdr[120] = '\0';
    assert_int_equal(strlen(hdr), 120);
    assert_int_equal(decode_bin(hdr, bin, 60, &req, &e2), BD_EINVAL);
    assert_string_equal(e2.msg,
                        "binary inputs take 64 bytes but 60 bytes follow the 120-byte JSON header");

    /* Sent without Inference-Header-Content-Length (the whole body taken as the header): the
     * sentences name it, whether the bytes behind the JSON start with a NUL or not, or are
     * only whitespace. */
    char nohdr[200];
    memcpy(nohdr, hdr, 120);
    memcpy(nohdr + 120, "\0\0\x80?", 4); /* 1.0f */
    assert_int_equal(bd_infer_decode(nohdr, 124, 124, &arena, NULL, &req, &e2), BD_EINVAL);
    assert_string_equal(e2.msg, "request body is not valid JSON: a NUL byte is not allowed there "
                                "(line 1, column 121); binary tensor data after the JSON needs "
                                "the JSON's length alone (not the whole body's) in the "
                                "Inference-Header-Content-Length header, or over WebSocket in a "
                                "binary frame's 4-byte prefix");
    assert_int_equal(bd_infer_decode(hdr, 120, 120, &arena, NULL, &req, &e2), BD_EINVAL);
    assert_string_equal(e2.msg, "binary inputs take 64 bytes but 0 bytes follow the 120-byte JSON "
                                "header (with no length given for the JSON, the whole body is "
                                "the JSON header: give it in Inference-Header-Content-Length, or "
                                "over WebSocket send a binary frame)");
    /* A length given, but longer than the JSON: the sentence says that, not that it is
     * missing (the NUL is the first binary byte read as the header's). */
    assert_int_equal(bd_infer_decode(nohdr, 124, 121, &arena, NULL, &req, &e2), BD_EINVAL);
    assert_string_equal(e2.msg, "request body is not valid JSON: a NUL byte is not allowed there "
                                "(line 1, column 121); the JSON ends before the length given for "
                                "it (Inference-Header-Content-Length, or a WebSocket binary "
                                "frame's 4-byte prefix)");

    /* Header longer than the body. */
    assert_int_equal(bd_infer_decode(plain, 10, 11, &arena, NULL, &req, &e2), BD_EINVAL);
    assert_string_equal(e2.msg,
                        "Inference-Header-Content-Length is 11 but the body has only 10 bytes");
}

/* ---- decode: errors -------------------------------------------------------------------- */

#define IN1(fields) "{\"inputs\":[{\"name\":\"INPUT0\"," fields "}]}"
#define FP32_16 "\"datatype\":\"FP32\",\"shape\":[1,16],"

static void test_decode_errors_structure(void **state)
{
    (void)state;
    expect_error("", BD_EINVAL,
                 "request body is not valid JSON: '[' or '{' expected near end of file "
                 "(line 1, column 0)");
    expect_error("{\"inputs\":[}", BD_EINVAL,
                 "request body is not valid JSON: unexpected token near '}' (line 1, column 12)");
    expect_error("{\"inputs\":[]} x", BD_EINVAL,
                 "request body is not valid JSON: end of file expected near 'x' (line 1, "
                 "column 15); binary tensor data after the JSON needs the JSON's length alone (not "
                 "the whole body's) in the Inference-Header-Content-Length header, or over "
                 "WebSocket in a binary frame's 4-byte prefix");
    expect_error("{\"inputs\":[],\"inputs\":[]}", BD_EINVAL,
                 "request body is not valid JSON: duplicate object key near '\"inputs\"' (line "
                 "1, column 21)");
    expect_error("[1]", BD_EINVAL, "request body must be a JSON object");
    expect_error("{}", BD_EINVAL, "request has no \"inputs\"");
    expect_error("{\"inputs\":{}}", BD_EINVAL, "\"inputs\" must be an array");
    expect_error("{\"inputs\":[]}", BD_EINVAL, "\"inputs\" must not be empty");
    expect_error("{\"inputs\":[1]}", BD_EINVAL, "inputs[0] must be an object");
    expect_error("{\"inputs\":[{\"datatype\":\"FP32\"}]}", BD_EINVAL, "inputs[0] has no \"name\"");
    expect_error("{\"inputs\":[{\"name\":7}]}", BD_EINVAL,
                 "inputs[0]: \"name\" must be a non-empty string");
    expect_error("{\"inputs\":[{\"name\":\"\"}]}", BD_EINVAL,
                 "inputs[0]: \"name\" must be a non-empty string");
    expect_error("{\"id\":5,"
                 "\"inputs\":[]}",
                 BD_EINVAL, "\"id\" must be a string");
    expect_error("{\"id\":null,\"inputs\":[]}", BD_EINVAL, "\"id\" must be a string");
    expect_error("{\"parameters\":[],\"inputs\":[]}", BD_EINVAL,
                 "\"parameters\" must be an object");
    expect_error("{\"parameters\":{\"binary_data_output\":1},\"inputs\":[]}", BD_EINVAL,
                 "parameters.binary_data_output must be true or false");
    expect_error("{\"parameters\":{\"priority\":-1},\"inputs\":[]}", BD_EINVAL,
                 "parameters.priority must be a non-negative integer");
    expect_error("{\"parameters\":{\"priority\":\"1\"},\"inputs\":[]}", BD_EINVAL,
                 "parameters.priority must be a non-negative integer");
    expect_error("{\"parameters\":{\"timeout\":1.5},\"inputs\":[]}", BD_EINVAL,
                 "parameters.timeout must be a non-negative integer (microseconds)");
    /* An integer past int64 is told it is too large, not that it is no integer. */
    expect_error("{\"parameters\":{\"timeout\":99999999999999999999},\"inputs\":[]}", BD_EINVAL,
                 "parameters.timeout is past 9223372036854775807, the largest accepted "
                 "(microseconds)");
    expect_error("{\"parameters\":{\"priority\":-99999999999999999999},\"inputs\":[]}", BD_EINVAL,
                 "parameters.priority must be a non-negative integer");
}

static void test_decode_errors_input_fields(void **state)
{
    (void)state;
    expect_error(IN1("\"shape\":[1],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0' has no \"datatype\"");
    expect_error(IN1("\"datatype\":32,\"shape\":[1],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': \"datatype\" must be a string");
    expect_error(IN1("\"datatype\":\"FP99\",\"shape\":[1],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': unknown datatype 'FP99'");
    expect_error(IN1("\"datatype\":\"FP16\",\"shape\":[1],\"data\":[1]"), BD_EUNSUPPORTED,
                 "input 'INPUT0': datatype FP16 is not supported");
    expect_error(IN1("\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': value at index 0 is a number; BYTES data must be strings");
    expect_error(IN1("\"datatype\":\"FP32\",\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0' has no \"shape\"");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":16,\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': \"shape\" must be an array of integers");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1,\"16\"],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': shape entry 1 must be a non-negative integer");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1,-16],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': shape entry 1 must be a non-negative integer");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1.0],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': shape entry 0 must be a non-negative integer");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': shape has 9 dims; at most 8 are supported");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[4294967296,4294967296,16],\"data\":[1]"),
                 BD_EINVAL,
                 "input 'INPUT0': shape [4294967296,4294967296,16] has too many elements");
    /* The count fits size_t but the byte size does not. */
    expect_error(IN1("\"datatype\":\"INT64\",\"shape\":[4611686018427387904],\"data\":[1]"),
                 BD_EINVAL, "input 'INPUT0': shape [4611686018427387904] has too many elements");
    expect_error(IN1(FP32_16 "\"parameters\":7"), BD_EINVAL,
                 "input 'INPUT0': \"parameters\" must be an object");
    expect_error(IN1(FP32_16 "\"parameters\":{}"), BD_EINVAL,
                 "input 'INPUT0' has neither \"data\" nor parameters.binary_data_size");
    expect_error(IN1(FP32_16 "\"parameters\":{\"binary_data_size\":\"64\"}"), BD_EINVAL,
                 "input 'INPUT0': parameters.binary_data_size must be a non-negative integer");
    expect_error(IN1(FP32_16 "\"parameters\":{\"binary_data_size\":-64}"), BD_EINVAL,
                 "input 'INPUT0': parameters.binary_data_size must be a non-negative integer");
    expect_error(IN1(FP32_16 "\"parameters\":{\"binary_data_size\":64},\"data\":[]"), BD_EINVAL,
                 "input 'INPUT0' has both \"data\" and parameters.binary_data_size");
    expect_error(IN1(FP32_16 "\"parameters\":{\"binary_data_size\":60}"), BD_EINVAL,
                 "input 'INPUT0': binary_data_size is 60 but shape [1,16] of FP32 needs 64 "
                 "bytes");
    expect_error(IN1(FP32_16 "\"data\":{}"), BD_EINVAL,
                 "input 'INPUT0': \"data\" must be an array");
    expect_error(IN1(FP32_16 "\"data\":1"), BD_EINVAL, "input 'INPUT0': \"data\" must be an array");
    expect_error("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]},"
                 "{\"name\":\"B\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]},"
                 "{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}",
                 BD_EINVAL, "input 'A' appears more than once");
    /* Long names are cut in messages; the message stays one sentence. */
    char json[600], name[301], want[300];
    memset(name, 'n', 300);
    name[300] = '\0';
    snprintf(json, sizeof json, "{\"inputs\":[{\"name\":\"%s\",\"datatype\":\"X\"}]}", name);
    snprintf(want, sizeof want, "input '%.128s': unknown datatype 'X'", name);
    expect_error(json, BD_EINVAL, want);
}

static void test_decode_errors_data(void **state)
{
    (void)state;
    expect_error(IN1(FP32_16 "\"data\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]"), BD_EINVAL,
                 "input 'INPUT0': expected 16 values for shape [1,16], got 15");
    expect_error(IN1("\"datatype\":\"UINT8\",\"shape\":[3],\"data\":[1,2,300]"), BD_EINVAL,
                 "input 'INPUT0': value 300 at index 2 is out of range for UINT8");
    expect_error(IN1("\"datatype\":\"UINT8\",\"shape\":[1],\"data\":[-1]"), BD_EINVAL,
                 "input 'INPUT0': value -1 at index 0 is out of range for UINT8");
    expect_error(IN1("\"datatype\":\"INT8\",\"shape\":[2],\"data\":[-128,128]"), BD_EINVAL,
                 "input 'INPUT0': value 128 at index 1 is out of range for INT8");
    expect_error(IN1("\"datatype\":\"INT16\",\"shape\":[1],\"data\":[-32769]"), BD_EINVAL,
                 "input 'INPUT0': value -32769 at index 0 is out of range for INT16");
    expect_error(IN1("\"datatype\":\"UINT16\",\"shape\":[1],\"data\":[65536]"), BD_EINVAL,
                 "input 'INPUT0': value 65536 at index 0 is out of range for UINT16");
    expect_error(IN1("\"datatype\":\"INT32\",\"shape\":[1],\"data\":[2147483648]"), BD_EINVAL,
                 "input 'INPUT0': value 2147483648 at index 0 is out of range for INT32");
    expect_error(IN1("\"datatype\":\"UINT32\",\"shape\":[1],\"data\":[4294967296]"), BD_EINVAL,
                 "input 'INPUT0': value 4294967296 at index 0 is out of range for UINT32");
    expect_error(IN1("\"datatype\":\"UINT64\",\"shape\":[1],\"data\":[-1]"), BD_EINVAL,
                 "input 'INPUT0': value -1 at index 0 is out of range for UINT64");
    expect_error(IN1("\"datatype\":\"INT32\",\"shape\":[2],\"data\":[1,1.5]"), BD_EINVAL,
                 "input 'INPUT0': value 1.5 at index 1 is not an integer, as INT32 needs");
    expect_error(IN1("\"datatype\":\"INT32\",\"shape\":[1],\"data\":[\"1\"]"), BD_EINVAL,
                 "input 'INPUT0': value at index 0 is a string; INT32 data must be integers");
    expect_error(IN1("\"datatype\":\"INT64\",\"shape\":[1],\"data\":[null]"), BD_EINVAL,
                 "input 'INPUT0': value at index 0 is null; INT64 data must be integers");
    expect_error(IN1("\"datatype\":\"UINT8\",\"shape\":[1],\"data\":[true]"), BD_EINVAL,
                 "input 'INPUT0': value at index 0 is a boolean; UINT8 data must be integers");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1,{}]"), BD_EINVAL,
                 "input 'INPUT0': value at index 1 is an object; FP32 data must be numbers");
    expect_error(IN1("\"datatype\":\"FP64\",\"shape\":[1],\"data\":[\"NaN\"]"), BD_EINVAL,
                 "input 'INPUT0': value at index 0 is a string; FP64 data must be numbers");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1e39]"), BD_EINVAL,
                 "input 'INPUT0': value 1e39 at index 0 is out of range for FP32");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1],\"data\":[-3.5e38]"), BD_EINVAL,
                 "input 'INPUT0': value -3.5e38 at index 0 is out of range for FP32");
    expect_error(IN1("\"datatype\":\"BOOL\",\"shape\":[2],\"data\":[true,1]"), BD_EINVAL,
                 "input 'INPUT0': value at index 1 is a number; BOOL data must be true or false");
    expect_error(IN1("\"datatype\":\"BOOL\",\"shape\":[1],\"data\":[\"true\"]"), BD_EINVAL,
                 "input 'INPUT0': value at index 0 is a string; BOOL data must be true or false");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1e400],\"data\":[1]"), BD_EINVAL,
                 "request body is not valid JSON: real number overflow near '1e400' (line 1, "
                 "column 60)");
}

static void test_decode_errors_nesting(void **state)
{
    (void)state;
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2,3],\"data\":[[1,2,3],[4,5]]"), BD_EINVAL,
                 "input 'INPUT0': nested data does not match shape [2,3]: data[1] has 2 entries, "
                 "expected 3");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2,3],\"data\":[[1,2,3]]"), BD_EINVAL,
                 "input 'INPUT0': nested data does not match shape [2,3]: data has 1 entries, "
                 "expected 2");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2,3],\"data\":[[1,2,3],4]"), BD_EINVAL,
                 "input 'INPUT0': nested data does not match shape [2,3]: data[1] should be an "
                 "array of 3 entries");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2,1],\"data\":[[1],[[2]]]"), BD_EINVAL,
                 "input 'INPUT0': nested data does not match shape [2,1]: data[1][0] should be "
                 "a value, not an array");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2,2,1],\"data\":[[[1],[2]],[[3],[4],[5]]]"),
                 BD_EINVAL,
                 "input 'INPUT0': nested data does not match shape [2,2,1]: data[1] has 3 "
                 "entries, expected 2");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2,2],\"data\":[1,[2],3,4]"), BD_EINVAL,
                 "input 'INPUT0': data mixes arrays and values at index 1; give it flat or "
                 "nested exactly as shape [2,2]");
    /* Mixed data whose top level has the wrong count: the mixing is the fault, not the count
     * (the client sent 6 values). */
    expect_error(IN1("\"datatype\":\"INT32\",\"shape\":[2,3],\"data\":[1,[2,3],4,5,6]"), BD_EINVAL,
                 "input 'INPUT0': data mixes arrays and values at index 1; give it flat or "
                 "nested exactly as shape [2,3]");
    expect_error(IN1("\"datatype\":\"INT32\",\"shape\":[2,3],\"data\":[1,2,3,4,5,6,[]]"), BD_EINVAL,
                 "input 'INPUT0': data mixes arrays and values at index 6; give it flat or "
                 "nested exactly as shape [2,3]");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1],\"data\":[[1]]"), BD_EINVAL,
                 "input 'INPUT0': data is nested deeper than shape [1], which has 1 dim; give "
                 "its 1 value flat");
    /* Arrays where the shape has one dim: the count and the "mixes" sentences were wrong. */
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[[1,2]]"), BD_EINVAL,
                 "input 'INPUT0': data is nested deeper than shape [2], which has 1 dim; give "
                 "its 2 values flat");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[[1],[2]]"), BD_EINVAL,
                 "input 'INPUT0': data is nested deeper than shape [2], which has 1 dim; give "
                 "its 2 values flat");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[],\"data\":[[1]]"), BD_EINVAL,
                 "input 'INPUT0': data is nested deeper than shape [], which has 0 dims; give "
                 "its 1 value flat");
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2,2],\"data\":[[1,2],[3,\"x\"]]"), BD_EINVAL,
                 "input 'INPUT0': value at index 3 is a string; FP32 data must be numbers");
    /* A huge nested shape with little data fails on the mismatch, not on allocation. */
    expect_error(IN1("\"datatype\":\"FP64\",\"shape\":[1,1000000000000],\"data\":[[1]]"), BD_EINVAL,
                 "input 'INPUT0': nested data does not match shape [1,1000000000000]: data[0] has "
                 "1 entries, expected 1000000000000");
    expect_error(IN1("\"datatype\":\"FP64\",\"shape\":[100000000000],\"data\":[1]"), BD_EINVAL,
                 "input 'INPUT0': expected 100000000000 values for shape [100000000000], got 1");
}

/* "data" is read from the text, not from a tree: its syntax, its place among the keys, keys
 * written with escapes, and error positions after it. */
static void test_decode_data_text(void **state)
{
    (void)state;
    bd_infer_req_t req;
    bd_err_t err = {0};
    /* "data" before "datatype" and "shape", white space everywhere, an escaped key. */
    assert_int_equal(
        decode("{ \"inputs\" : [ { \"d\\u0061ta\" : [ [ 1 , -2.5e0 ] ,\n\t[ 3E1 , 0 ] ] ,"
               " \"shape\" : [2,2], \"name\":\"A\", \"datatype\" : \"FP32\" } ],"
               "\"outputs\":[{\"name\":\"O\",\"data\":[1,2]}]}",
               &req, &err),
        0);
    float want[4] = {1.0f, -2.5f, 30.0f, 0.0f};
    assert_memory_equal(req.inputs[0].data, want, sizeof want);
    assert_int_equal(decode(IN1("\"datatype\":\"INT8\",\"shape\":[0],\"data\":[ ]"), &req, &err),
                     0);
    assert_int_equal(req.inputs[0].byte_size, 0);

    /* Syntax inside "data" is checked as strictly as jansson checks the rest. */
#define SYNTAX(what, near, col)                                                                    \
    "request body is not valid JSON: " what " in the data of input 'INPUT0' near '" near           \
    "' (line 1, column " col ")"
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1,,2]"), BD_EINVAL,
                 SYNTAX("a value is missing", ",2]", "69"));
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1 2]"), BD_EINVAL,
                 SYNTAX("',' or ']' expected", "2]", "69"));
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1,2,]"), BD_EINVAL,
                 SYNTAX("a value is missing", "]", "71"));
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[01,2]"), BD_EINVAL,
                 SYNTAX("',' or ']' expected", "1,2]", "68"));
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1.,2]"), BD_EINVAL,
                 SYNTAX("invalid number", "1.,2]", "67"));
    expect_error(IN1("\"datatype\":\"BOOL\",\"shape\":[1],\"data\":[tru]"), BD_EINVAL,
                 SYNTAX("invalid value", "tru]", "67"));
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1,2}"), BD_EINVAL,
                 SYNTAX("',' or ']' expected", "}", "70"));
#undef SYNTAX
    expect_error(
        "{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1,2",
        BD_EINVAL,
        "request body is not valid JSON: '}' expected near end of file (line 1, column "
        "69)");
    /* jansson's positions past a data array are the header's own. */
    expect_error(
        "{\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP32\",\"shape\":[3],\"data\":[1,\n2,\n3]}"
        "], x}",
        BD_EINVAL,
        "request body is not valid JSON: string or '}' expected near 'x' (line 3, "
        "column 7)");
    /* Numbers past a double's range are out of range, not a parse failure. */
    expect_error(IN1("\"datatype\":\"FP64\",\"shape\":[1],\"data\":[-1e400]"), BD_EINVAL,
                 "input 'INPUT0': value -1e400 at index 0 is out of range for FP64");
    /* Reals read as strtod reads them, on its fast path and off it. */
    char *json = malloc(4000 * 40 + 128);
    double *want_d = malloc(4000 * sizeof *want_d);
    assert_non_null(json);
    assert_non_null(want_d);
    size_t off = (size_t)sprintf(json, IN1("\"datatype\":\"FP64\",\"shape\":[4000],\"data\":["));
    off -= strlen("}]}");
    srand(7);
    for (int i = 0; i < 4000; i++) {
        double m = (double)rand() / RAND_MAX * (rand() % 2 ? 1 : -1);
        double x = ldexp(m, rand() % 140 - 70);
        char num[40];
        int prec = rand() % 20;
        switch (i % 4) {
        case 0:
            snprintf(num, sizeof num, "%.*g", prec, x);
            break;
        case 1:
            snprintf(num, sizeof num, "%.*e", prec, x);
            break;
        case 2:
            snprintf(num, sizeof num, "%.*f", prec, x);
            break;
        default:
            snprintf(num, sizeof num, "%.*E", prec, x);
        }
        want_d[i] = strtod(num, NULL);
        off += (size_t)sprintf(json + off, "%s%s", i ? "," : "", num);
    }
    strcpy(json + off, "]}]}");
    if (decode(json, &req, &err) != 0) {
        print_error("%s\n", err.msg);
    }
    assert_int_equal(err.code, 0);
    assert_memory_equal(req.inputs[0].data, want_d, 4000 * sizeof *want_d);
    free(json);
    free(want_d);
    /* A data marker is not a string a client can send. */
    expect_error(IN1("\"datatype\":\"FP32\",\"shape\":[1],\"data\":\"\\u0000@0\""), BD_EINVAL,
                 "request body is not valid JSON: \\u0000 is not allowed in strings (line 1, "
                 "column 67)");
}

static void test_decode_depth(void **state)
{
    (void)state;
    size_t n = 100000;
    char *deep = malloc(n + 1);
    assert_non_null(deep);
    memset(deep, '[', n);
    deep[n] = '\0';
    expect_error(deep, BD_EINVAL, "request JSON nests deeper than the limit of 64 levels");
    /* Brackets inside strings do not count; escaped quotes do not end strings. */
    snprintf(deep, n, "{\"id\":\"[[[[[[\\\"[[[[\",\"inputs\":[]}");
    bd_decode_limits_t lim = {0, 0, 3};
    bd_infer_req_t req;
    bd_err_t err = {0};
    assert_int_equal(decode_lim(deep, &lim, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg, "\"inputs\" must not be empty");
    lim.max_depth = 2;
    assert_int_equal(
        decode_lim(IN1("\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]"), &lim, &req, &err),
        BD_EINVAL);
    assert_string_equal(err.msg, "request JSON nests deeper than the limit of 2 levels");
    /* Above our limit jansson's own (2048) still answers cleanly... */
    lim.max_depth = 1000000;
    memset(deep, '[', 60000);
    deep[60000] = '\0';
    assert_int_equal(decode_lim(deep, &lim, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg, "request body is not valid JSON: maximum parsing depth reached "
                                 "near '[' (line 1, column 2049)");
    /* ...and so does the bound on the values a tree may hold, before jansson builds it. */
    memset(deep, '[', n);
    deep[n] = '\0';
    assert_int_equal(decode_lim(deep, &lim, &req, &err), BD_EINVAL);
    assert_string_equal(err.msg,
                        "request JSON has more than 65536 values outside the inputs' \"data\"");
    size_t wide_n = 2 * 70000;
    char *wide = malloc(wide_n + 1);
    assert_non_null(wide);
    for (size_t i = 0; i < wide_n; i += 2) {
        memcpy(wide + i, "1,", 2);
    }
    memcpy(wide, "{\"p\":[", 6);
    memcpy(wide + wide_n - 2, "]}", 3);
    assert_int_equal(decode_lim(wide, &lim, &req, &err), BD_EINVAL);
    free(wide);
    assert_string_equal(err.msg,
                        "request JSON has more than 65536 values outside the inputs' \"data\"");
    free(deep);
}

static void test_decode_big_integers(void **state)
{
    (void)state;
    bd_infer_req_t req;
    bd_err_t err = {0};
    assert_int_equal(decode("{\"id\":\"x\",\"inputs\":["
                            "{\"name\":\"U\",\"datatype\":\"UINT64\",\"shape\":[2],"
                            "\"data\":[18446744073709551615,9223372036854775808]},"
                            "{\"name\":\"F\",\"datatype\":\"FP64\",\"shape\":[2],"
                            "\"data\":[100000000000000000000,-100000000000000000000]},"
                            "{\"name\":\"G\",\"datatype\":\"FP32\",\"shape\":[1],"
                            "\"data\":[18446744073709551616]}]}",
                            &req, &err),
                     0);
    uint64_t u[2] = {UINT64_MAX, 9223372036854775808u};
    assert_memory_equal(req.inputs[0].data, u, sizeof u);
    double f[2] = {1e20, -1e20};
    assert_memory_equal(req.inputs[1].data, f, sizeof f);
    float g = 18446744073709551616.0f;
    assert_memory_equal(req.inputs[2].data, &g, sizeof g);

    expect_error(IN1("\"datatype\":\"UINT64\",\"shape\":[1],\"data\":[18446744073709551616]"),
                 BD_EINVAL,
                 "input 'INPUT0': value 18446744073709551616 at index 0 is out of range for "
                 "UINT64");
    expect_error(IN1("\"datatype\":\"INT64\",\"shape\":[1],\"data\":[9223372036854775808]"),
                 BD_EINVAL,
                 "input 'INPUT0': value 9223372036854775808 at index 0 is out of range for INT64");
    expect_error(IN1("\"datatype\":\"INT64\",\"shape\":[1],\"data\":[-9223372036854775809]"),
                 BD_EINVAL,
                 "input 'INPUT0': value -9223372036854775809 at index 0 is out of range for "
                 "INT64");
    expect_error(IN1("\"datatype\":\"UINT64\",\"shape\":[1],\"data\":[-9223372036854775809]"),
                 BD_EINVAL,
                 "input 'INPUT0': value -9223372036854775809 at index 0 is out of range for "
                 "UINT64");
    expect_error(IN1("\"datatype\":\"BOOL\",\"shape\":[1],\"data\":[99999999999999999999]"),
                 BD_EINVAL,
                 "input 'INPUT0': value at index 0 is a number; BOOL data must be true or false");
    /* Integers written as reals are read from their digits, not through a double: exact past
     * 2^53, and a fraction past a double's 17 digits is still a fraction. */
    assert_int_equal(decode("{\"inputs\":[{\"name\":\"U\",\"datatype\":\"UINT64\",\"shape\":[3],"
                            "\"data\":[1e19,9007199254740993.0,0.0000000000000000000042e22]},"
                            "{\"name\":\"I\",\"datatype\":\"INT64\",\"shape\":[3],"
                            "\"data\":[-9007199254740993e0,-0.0,-9223372036854775.808e3]}]}",
                            &req, &err),
                     0);
    uint64_t exact_u[3] = {10000000000000000000u, 9007199254740993u, 42};
    assert_memory_equal(req.inputs[0].data, exact_u, sizeof exact_u);
    int64_t exact_i[3] = {-9007199254740993, 0, INT64_MIN};
    assert_memory_equal(req.inputs[1].data, exact_i, sizeof exact_i);
    expect_error(IN1("\"datatype\":\"INT64\",\"shape\":[1],\"data\":[0.99999999999999999999]"),
                 BD_EINVAL,
                 "input 'INPUT0': value 0.99999999999999999999 at index 0 is not an integer, as "
                 "INT64 needs");
    expect_error(IN1("\"datatype\":\"INT8\",\"shape\":[1],\"data\":[2E-324]"), BD_EINVAL,
                 "input 'INPUT0': value 2E-324 at index 0 is not an integer, as INT8 needs");
    expect_error(
        IN1("\"datatype\":\"UINT64\",\"shape\":[1],\"data\":[1.8446744073709551616e19]"), BD_EINVAL,
        "input 'INPUT0': value 1.8446744073709551616e19 at index 0 is out of range for UINT64");
    expect_error(IN1("\"datatype\":\"UINT8\",\"shape\":[1],\"data\":[1e19]"), BD_EINVAL,
                 "input 'INPUT0': value 1e19 at index 0 is out of range for UINT8");
    expect_error(IN1("\"datatype\":\"INT64\",\"shape\":[1],\"data\":[1e20]"), BD_EINVAL,
                 "input 'INPUT0': value 1e20 at index 0 is out of range for INT64");
    /* The big-integer marker cannot be forged, nor big integers smuggled into strings. */
    expect_error("{\"id\":99999999999999999999,\"inputs\":[]}", BD_EINVAL,
                 "\"id\" must be a string");
    expect_error("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"UINT64\",\"shape\":[1],"
                 "\"data\":[18446744073709551615]},{\"name\":\"\\u0000\"}]}",
                 BD_EINVAL,
                 "request body is not valid JSON: \\u0000 is not allowed in strings (line 1, "
                 "column 96)");
    expect_error("{\"inputs\":[{\"name\":\"\\u0000\"}]}", BD_EINVAL,
                 "request body is not valid JSON: \\u0000 is not allowed in strings (line 1, "
                 "column 21)");
    expect_error(IN1("\"datatype\":\"UINT64\",\"shape\":[99999999999999999999],\"data\":[1]"),
                 BD_EINVAL,
                 "input 'INPUT0': shape entry 0 is past 9223372036854775807, the largest accepted");
    /* A literal past int64 with a leading zero is not JSON (RFC 8259 6): jansson must see it. */
    expect_error_prefix("{\"foo\":01234567890123456789012,\"inputs\":[]}", BD_EINVAL,
                        "request body is not valid JSON: ");
    expect_error_prefix("{\"parameters\":{\"a\":-0099999999999999999999},\"inputs\":[]}", BD_EINVAL,
                        "request body is not valid JSON: ");
    /* A raw NUL byte is not JSON wherever it stands (jansson's reader skipped one after a
     * number or a literal). */
    static const char *const nul_at[] = {"{\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT8\","
                                         "\"shape\":[1@],\"data\":[1]}]}",
                                         "{\"parameters\":{\"a\":true@},\"inputs\":[]}",
                                         "{\"parameters\":{\"a\":1.5@},\"inputs\":[]}"};
    for (size_t k = 0; k < sizeof nul_at / sizeof nul_at[0]; k++) {
        char body[128];
        size_t n = strlen(nul_at[k]);
        memcpy(body, nul_at[k], n);
        size_t at = (size_t)(strchr(nul_at[k], '@') - nul_at[k]);
        body[at] = '\0';
        assert_int_equal(bd_infer_decode(body, n, n, &arena, NULL, &req, &err), BD_EINVAL);
        char want[128];
        snprintf(want, sizeof want,
                 "request body is not valid JSON: a NUL byte is not allowed there (line 1, "
                 "column %zu)",
                 at + 1);
        assert_string_equal(err.msg, want);
    }
    /* Number-like text inside strings is left alone. */
    assert_int_equal(decode("{\"id\":\"99999999999999999999\",\"inputs\":["
                            "{\"name\":\"U\",\"datatype\":\"UINT64\",\"shape\":[1],"
                            "\"data\":[18446744073709551615]}]}",
                            &req, &err),
                     0);
    assert_string_equal(req.id, "99999999999999999999");
}

static void test_decode_outputs_errors(void **state)
{
    (void)state;
#define WITH_OUT(o)                                                                                \
    "{\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT8\",\"shape\":[1],\"data\":[1]}],"             \
    "\"outputs\":" o "}"
    expect_error(WITH_OUT("{}"), BD_EINVAL, "\"outputs\" must be an array");
    expect_error(WITH_OUT("[\"OUT\"]"), BD_EINVAL, "outputs[0] must be an object");
    expect_error(WITH_OUT("[{\"parameters\":{}}]"), BD_EINVAL, "outputs[0] has no \"name\"");
    expect_error(WITH_OUT("[{\"name\":[]}]"), BD_EINVAL,
                 "outputs[0]: \"name\" must be a non-empty string");
    expect_error(WITH_OUT("[{\"name\":\"O\"},{\"name\":\"O\"}]"), BD_EINVAL,
                 "output 'O' is requested more than once");
    expect_error(WITH_OUT("[{\"name\":\"O\",\"parameters\":true}]"), BD_EINVAL,
                 "output 'O': \"parameters\" must be an object");
    expect_error(WITH_OUT("[{\"name\":\"O\",\"parameters\":{\"binary_data\":\"yes\"}}]"), BD_EINVAL,
                 "output 'O': parameters.binary_data must be true or false");
    /* Triton's shared-memory extension is refused, not ignored (the data would go nowhere). */
    expect_error(WITH_OUT("[{\"name\":\"O\",\"parameters\":{\"shared_memory_region\":\"r\","
                          "\"shared_memory_byte_size\":16}}]"),
                 BD_EINVAL,
                 "output 'O': parameters.shared_memory_region asks for Triton's shared-memory "
                 "extension, which batchd does not support; send the data in the request "
                 "(\"data\" or a binary tensor) and read it from the reply");
    expect_error("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT8\",\"shape\":[1],"
                 "\"parameters\":{\"shared_memory_byte_size\":1}}]}",
                 BD_EINVAL,
                 "input 'A': parameters.shared_memory_byte_size asks for Triton's shared-memory "
                 "extension, which batchd does not support; send the data in the request "
                 "(\"data\" or a binary tensor) and read it from the reply");
    expect_error(WITH_OUT("[{\"name\":\"O\",\"parameters\":{\"classification\":0}}]"), BD_EINVAL,
                 "output 'O': parameters.classification must be a positive integer (the number "
                 "of classes to return)");
    expect_error(WITH_OUT("[{\"name\":\"O\",\"parameters\":{\"classification\":\"3\"}}]"),
                 BD_EINVAL,
                 "output 'O': parameters.classification must be a positive integer (the number "
                 "of classes to return)");
#undef WITH_OUT
}

static void test_decode_limits(void **state)
{
    (void)state;
    bd_infer_req_t req;
    bd_err_t err = {0};
    bd_decode_limits_t lim = {15, 2, 0};
    const char *j16 = IN1(FP32_16 "\"data\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]");
    assert_int_equal(decode_lim(j16, &lim, &req, &err), BD_ETOOBIG);
    assert_string_equal(err.msg,
                        "input 'INPUT0': shape [1,16] has 16 elements, more than the limit of 15");
    lim.max_elems_per_tensor = 16;
    assert_int_equal(decode_lim(j16, &lim, &req, &err), 0);

    const char *three = "{\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT8\",\"shape\":[1],"
                        "\"data\":[1]},{\"name\":\"B\"},{\"name\":\"C\"}]}";
    assert_int_equal(decode_lim(three, &lim, &req, &err), BD_ETOOBIG);
    assert_string_equal(err.msg, "request has 3 inputs; at most 2 are allowed");
    const char *outs = "{\"inputs\":[{\"name\":\"A\",\"datatype\":\"INT8\",\"shape\":[1],"
                       "\"data\":[1]}],\"outputs\":[{\"name\":\"X\"},{\"name\":\"Y\"},"
                       "{\"name\":\"Z\"}]}";
    assert_int_equal(decode_lim(outs, &lim, &req, &err), BD_ETOOBIG);
    assert_string_equal(err.msg, "request asks for 3 outputs; at most 2 are allowed");

    /* Default max_inputs is 64. */
    char big[8192];
    size_t off = (size_t)snprintf(big, sizeof big, "{\"inputs\":[");
    for (int i = 0; i < 65; i++) {
        off += (size_t)snprintf(big + off, sizeof big - off,
                                "%s{\"name\":\"I%d\",\"datatype\":\"INT8\",\"shape\":[1],"
                                "\"data\":[1]}",
                                i ? "," : "", i);
    }
    snprintf(big + off, sizeof big - off, "]}");
    expect_error(big, BD_ETOOBIG, "request has 65 inputs; at most 64 are allowed");

    /* An arena limit turns a large tensor into BD_ETOOBIG, not a crash. */
    bd_arena_t small;
    bd_arena_init(&small, 12000);
    char json[40000];
    off = (size_t)snprintf(json, sizeof json,
                           "{\"inputs\":[{\"name\":\"A\",\"datatype\":\"FP64\",\"shape\":[2000],"
                           "\"data\":[");
    for (int i = 0; i < 2000; i++) {
        off += (size_t)snprintf(json + off, sizeof json - off, "%s1", i ? "," : "");
    }
    snprintf(json + off, sizeof json - off, "]}]}");
    assert_int_equal(bd_infer_decode(json, strlen(json), strlen(json), &small, NULL, &req, &err),
                     BD_ETOOBIG);
    assert_string_equal(err.msg, "input 'A' needs 16000 bytes, which would pass the request's "
                                 "memory limit of 12000 bytes");
    bd_arena_dispose(&small);
    bd_arena_init(&small, 100);
    assert_int_equal(decode_lim(j16, NULL, &req, &err), 0);
    assert_int_equal(bd_infer_decode(j16, strlen(j16), strlen(j16), &small, NULL, &req, &err),
                     BD_ETOOBIG);
    char want[160];
    snprintf(want, sizeof want,
             "the input list needs %zu bytes, which would pass the request's memory limit of "
             "100 bytes",
             sizeof(bd_tensor_t) + sizeof(size_t));
    assert_string_equal(err.msg, want);
    bd_arena_dispose(&small);
}

/* ---- encode ---------------------------------------------------------------------------- */

static void test_encode_exact(void **state)
{
    (void)state;
    float f[4] = {1.0f, -2.5f, NAN, INFINITY};
    int32_t i[2] = {7, -8};
    uint8_t bin[3] = {0xde, 0xad, 0x00};
    bd_tensor_t t0 = {"OUT\"0", BD_DT_FP32, {2, {2, 2}}, f, sizeof f};
    bd_tensor_t t1 = {"I", BD_DT_INT32, {1, {2}}, i, sizeof i};
    bd_tensor_t t2 = {"B", BD_DT_UINT8, {2, {1, 3}}, bin, sizeof bin};
    bd_output_enc_t outs[3] = {{&t0, false}, {&t2, true}, {&t1, false}};
    bd_buf_t b;
    bd_buf_init(&b);
    bd_buf_puts(&b, "PREFIX"); /* encode appends */
    size_t hlen = 0;
    assert_int_equal(bd_infer_encode(&b, "mlp", "3", "req\n1", outs, 3, &hlen), 0);
    const char *want =
        "{\"model_name\":\"mlp\",\"model_version\":\"3\",\"id\":\"req\\n1\",\"outputs\":["
        "{\"name\":\"OUT\\\"0\",\"datatype\":\"FP32\",\"shape\":[2,2],"
        "\"data\":[1,-2.5,null,null]},"
        "{\"name\":\"B\",\"datatype\":\"UINT8\",\"shape\":[1,3],"
        "\"parameters\":{\"binary_data_size\":3}},"
        "{\"name\":\"I\",\"datatype\":\"INT32\",\"shape\":[2],\"data\":[7,-8]}]}";
    assert_int_equal(hlen, strlen(want));
    assert_int_equal(b.len, 6 + hlen + 3);
    assert_memory_equal(b.data, "PREFIX", 6);
    assert_memory_equal(b.data + 6, want, hlen);
    assert_memory_equal(b.data + 6 + hlen, bin, 3);
    bd_buf_dispose(&b);

    /* No id, no outputs. */
    bd_buf_init(&b);
    assert_int_equal(bd_infer_encode(&b, "m", "1", NULL, NULL, 0, &hlen), 0);
    assert_string_equal(b.data, "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":[]}");
    assert_int_equal(hlen, 0);

    /* Broken tensors are refused before anything is written. */
    bd_buf_reset(&b);
    bd_tensor_t bad = {"X", BD_DT_FP32, {1, {3}}, f, 16};
    bd_output_enc_t o = {&bad, false};
    assert_int_equal(bd_infer_encode(&b, "m", "1", NULL, &o, 1, &hlen), BD_EINVAL);
    assert_int_equal(b.len, 0);
    bd_tensor_t fp16 = {"X", BD_DT_FP16, {1, {2}}, f, 4};
    o.tensor = &fp16;
    assert_int_equal(bd_infer_encode(&b, "m", "1", NULL, &o, 1, &hlen), BD_EINVAL);
    o.binary = true; /* bytes can be sent for any named datatype */
    assert_int_equal(bd_infer_encode(&b, "m", "1", NULL, &o, 1, &hlen), 0);
    bd_buf_dispose(&b);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The fast FP32 printer must write exactly what "%.9g" writes (and FP64 "%.17g"). */
static void check_floats(bd_dtype_t dt, const void *vals, size_t n)
{
    bd_tensor_t t = {"F", dt, {1, {(int64_t)n}}, (void *)(uintptr_t)vals, n * bd_dtype_size(dt)};
    char *got = encode_data(&t);
    bd_buf_t want;
    bd_buf_init(&want);
    for (size_t i = 0; i < n; i++) {
        double d = dt == BD_DT_FP32 ? (double)((const float *)vals)[i] : ((const double *)vals)[i];
        if (i) {
            bd_buf_putc(&want, ',');
        }
        if (isnan(d) || isinf(d)) {
            bd_buf_puts(&want, "null");
        } else {
            bd_buf_printf(&want, dt == BD_DT_FP32 ? "%.9g" : "%.17g", d);
        }
    }
    assert_string_equal(got, want.data);
    free(got);
    bd_buf_dispose(&want);
}

static void test_encode_floats_match_printf(void **state)
{
    (void)state;
    enum { N = 100000 };
    float *f = malloc(N * sizeof *f);
    double *d = malloc(N * sizeof *d);
    assert_non_null(f);
    assert_non_null(d);
    /* Random bit patterns (every exponent), then values near the fast path's edges. */
    for (size_t i = 0; i < N; i++) {
        uint32_t bits = (uint32_t)rng();
        memcpy(&f[i], &bits, 4);
        uint64_t b64 = rng();
        memcpy(&d[i], &b64, 8);
    }
    check_floats(BD_DT_FP32, f, N);
    check_floats(BD_DT_FP64, d, N);
    static const double edges[] = {1e-4,
                                   1e-5,
                                   1e9,
                                   1e8,
                                   1e-3,
                                   0.1,
                                   0.5,
                                   1,
                                   10,
                                   999999999,
                                   999999999.5,
                                   1e17,
                                   9007199254740993.0,
                                   123.456,
                                   1.0 / 3};
    size_t n = 0;
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++) {
        for (int s = -1; s <= 1; s += 2) {
            float x = (float)(s * edges[e]);
            double y = s * edges[e];
            for (int k = 0; k < 64; k++) {
                f[n] = x;
                d[n] = y;
                n++;
                x = nextafterf(x, INFINITY);
                y = nextafter(y, INFINITY);
            }
        }
    }
    /* Random values in the fixed-notation range with few digits, like real outputs. */
    for (size_t i = 0; i < 20000; i++) {
        f[n] = (float)((double)(rng() % 2000000) / 1000.0 - 1000.0);
        d[n] = (double)f[n];
        n++;
    }
    check_floats(BD_DT_FP32, f, n);
    check_floats(BD_DT_FP64, d, n);
    free(f);
    free(d);
}

static void test_encode_large_tensor_blocks(void **state)
{
    (void)state;
    /* More elements than one formatting block (4096), the widest text per element. */
    enum { N = 10000 };
    int64_t *v = malloc(N * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < N; i++) {
        v[i] = INT64_MIN;
    }
    bd_tensor_t t = {"L", BD_DT_INT64, {2, {100, 100}}, v, N * sizeof *v};
    char *got = encode_data(&t);
    assert_int_equal(strlen(got), N * 20 + (N - 1));
    assert_memory_equal(got, "-9223372036854775808,-9223372036854775808", 41);
    free(got);
    free(v);
}

/* ---- the fast path for binary headers -------------------------------------------------- */

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* bd_infer_decode (fast path first) and bd_infer_decode_json agree on `json` + `tail` bytes:
 * the same code and message, or the same request. */
static void expect_same_decode(const char *json, size_t tail)
{
    size_t hlen = strlen(json);
    char *body = malloc(hlen + tail + 1);
    assert_non_null(body);
    memcpy(body, json, hlen);
    memset(body + hlen, 0x5a, tail);
    bd_arena_t a1, a2;
    bd_arena_init(&a1, 0);
    bd_arena_init(&a2, 0);
    bd_infer_req_t r1, r2;
    bd_err_t e1 = {0}, e2 = {0};
    int rc1 = bd_infer_decode(body, hlen + tail, hlen, &a1, NULL, &r1, &e1);
    int rc2 = bd_infer_decode_json(body, hlen + tail, hlen, &a2, NULL, &r2, &e2);
    if (rc1 != rc2 || strcmp(e1.msg, e2.msg) != 0) {
        fail_msg("%s: fast %d '%s', json %d '%s'", json, rc1, e1.msg, rc2, e2.msg);
    }
    if (rc1 == 0) {
        assert_true(same_str(r1.id, r2.id) && same_str(r1.model_name, r2.model_name) &&
                    same_str(r1.model_version, r2.model_version));
        assert_int_equal(r1.n_inputs, r2.n_inputs);
        assert_int_equal(r1.n_outputs, r2.n_outputs);
        assert_int_equal(r1.binary_default, r2.binary_default);
        assert_int_equal(r1.n_params, r2.n_params);
        assert_int_equal(r1.json_text, r2.json_text);
        for (size_t i = 0; i < r1.n_inputs; i++) {
            const bd_tensor_t *x = &r1.inputs[i], *y = &r2.inputs[i];
            assert_string_equal(x->name, y->name);
            assert_int_equal(x->dtype, y->dtype);
            assert_true(bd_shape_equal(&x->shape, &y->shape));
            assert_int_equal(x->byte_size, y->byte_size);
            assert_ptr_equal(x->data, y->data);
        }
        for (size_t i = 0; i < r1.n_outputs; i++) {
            assert_string_equal(r1.outputs[i].name, r2.outputs[i].name);
            assert_int_equal(r1.outputs[i].binary, r2.outputs[i].binary);
            assert_int_equal(r1.outputs[i].classification, r2.outputs[i].classification);
        }
    }
    bd_arena_dispose(&a1);
    bd_arena_dispose(&a2);
    free(body);
}

static void test_fast_path_decodes_as_the_general_decoder(void **state)
{
    (void)state;
    /* In the fast path's subset. */
    expect_same_decode("{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[1,16],"
                       "\"parameters\":{\"binary_data_size\":64}}],\"outputs\":[{\"name\":"
                       "\"OUTPUT0\",\"parameters\":{\"binary_data\":true}}]}",
                       64);
    expect_same_decode(" { \"id\" : \"r-1\", \"model_name\": \"m\", \"model_version\": \"2\",\n"
                       "\"parameters\": {\"binary_data_output\": true},\t\"inputs\": [ {\"shape\":"
                       "[2, 3], \"datatype\": \"INT8\", \"name\": \"a\", \"parameters\": "
                       "{\"binary_data_size\": 6}}, {\"name\":\"b\",\"datatype\":\"FP64\","
                       "\"shape\":[],\"parameters\":{\"binary_data_size\":8}}],"
                       "\"outputs\": [{\"name\":\"x\"}, {\"name\":\"y\",\"parameters\":"
                       "{\"binary_data\":false}}] } ",
                       14);
    expect_same_decode("{\"outputs\":[],\"inputs\":[{\"name\":\"e\",\"datatype\":\"UINT8\","
                       "\"shape\":[0,4],\"parameters\":{\"binary_data_size\":0}}]}",
                       0);
    /* Near misses: each leaves the subset, and the general decoder's answer stands. */
    const char *near[] = {
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}],\"inputs\":[]}", /* key twice */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":9}}]}", /* size off */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2.0],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* a real dim */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,02],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* leading zero */
        "{\"inputs\":[{\"name\":\"a\\u0041\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* an escape */
        "{\"inputs\":[{\"name\":\"a\tb\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* a raw control character */
        "{\"inputs\":[{\"name\":\"a\x7f\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* DEL, valid JSON */
        "{\"inputs\":[{\"name\":\"\xc3\xa9\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* UTF-8 */
        "{\"inputs\":[{\"name\":\"~ !#\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* the printable edges: in the subset */
        "{\"inputs\":[{\"name\":\"a",                 /* a string that does not end */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP16\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":4}}]}", /* unsupported */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"BYTES\",\"shape\":[1],"
        "\"parameters\":{\"binary_data_size\":5}}]}", /* BYTES */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}},{\"name\":\"a\",\"datatype\":\"FP32\","
        "\"shape\":[1,2],\"parameters\":{\"binary_data_size\":8}}]}", /* same name */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}],\"outputs\":[{\"name\":\"o\"},"
        "{\"name\":\"o\"}]}", /* output twice */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}],\"outputs\":[{\"name\":\"o\","
        "\"parameters\":{\"classification\":2}}]}", /* classification */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}],\"parameters\":{\"priority\":1}}",
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}]} x", /* trailing */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}],}", /* trailing comma */
        "{\"inputs\":[],\"outputs\":[]}",              /* no inputs */
        "{\"inputs\":[{\"name\":\"\",\"datatype\":\"FP32\",\"shape\":[1,2],"
        "\"parameters\":{\"binary_data_size\":8}}]}", /* empty name */
        "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[1,2],\"data\":[1,2]}]}",
        "[1]",
        "",
    };
    for (size_t i = 0; i < sizeof near / sizeof near[0]; i++) {
        expect_same_decode(near[i], 8);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_fast_path_decodes_as_the_general_decoder),
        cmocka_unit_test(test_shape_count),
        cmocka_unit_test(test_shape_str_equal),
        cmocka_unit_test_setup_teardown(test_roundtrip_every_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fp32_rounds_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_full_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_sim_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_params_kept_generically, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_errors_structure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_errors_input_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_errors_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_errors_nesting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_data_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_big_integers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_outputs_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_json_decode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_json_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_binary_decode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_encode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_classify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_classify_many, setup, teardown),
        cmocka_unit_test(test_encode_exact),
        cmocka_unit_test(test_encode_floats_match_printf),
        cmocka_unit_test(test_encode_large_tensor_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
