/* test_backend: the backend registry, model configs, the sim backend and the onnxruntime
 * backend against the real libonnxruntime.so.1 and real models.
 *
 * Models: the ones tools/make_models.py writes (env BD_TEST_MODELS, default
 * "build/test-models"; models ORT must refuse in BD_TEST_BAD_MODELS, default
 * "build/test-models-bad"), and ../shared/models when present (mlp, and identity/simple
 * when the made ones are absent). A check whose model is missing is skipped with a message.
 * ONNX Runtime is the default library (BD_ORT_DEFAULT_LIB), or env BD_TEST_ORT_LIB when set:
 * point it at a missing file to see the tests without the runtime.
 *
 * Two groups, one CTest entry each: `test_backend base` (registry, configs, the sim backend, a
 * missing library; needs no ONNX Runtime) and `test_backend ort` (the onnxruntime backend); no
 * argument runs both. A run in which some test skipped and none failed exits 77, which CTest
 * reports as Skipped (SKIP_RETURN_CODE), never as Passed; without the library the ort group
 * skips as a whole, saying why.
 * Run from the repository root (CTest does). Single-threaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"

/* ../shared/models beside the checkout; ctest runs the tests from the source folder. */
#define SHARED_MODELS "../shared/models"

static bool ort_ok;   /* the library loaded in the group setup */
static int n_skipped; /* tests skipped so far (cmocka does not say) */

/* skip() that main can count. */
#define SKIP()                                                                                     \
    do {                                                                                           \
        n_skipped++;                                                                               \
        skip();                                                                                    \
    } while (0)

/* NULL (bd_ort_init's default search) unless BD_TEST_ORT_LIB names a library. */
static const char *ort_lib(void)
{
    const char *p = getenv("BD_TEST_ORT_LIB");
    return p && p[0] ? p : NULL;
}

/* ---- helpers --------------------------------------------------------------------------- */

static const char *made_dir(void)
{
    const char *d = getenv("BD_TEST_MODELS");
    return d && d[0] ? d : "build/test-models";
}

static const char *bad_dir(void)
{
    const char *d = getenv("BD_TEST_BAD_MODELS");
    return d && d[0] ? d : "build/test-models-bad";
}

static bool is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Path of <dir>/<name>/1/model.onnx into buf if the file exists. */
static bool model_in(const char *dir, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s/1/model.onnx", dir, name);
    return is_file(buf);
}

/* Find model `name`: the made models first, then (if allowed) the shared ones. Skips the
 * test with a message when neither has it, or when ONNX Runtime did not load. */
static void find_model(const char *name, bool shared_ok, bool made_ok, char *buf, size_t cap)
{
    if (!ort_ok) {
        print_message("skip: ONNX Runtime did not load: %s\n", bd_ort_unavailable_reason());
        SKIP();
    }
    if (made_ok && model_in(made_dir(), name, buf, cap)) {
        return;
    }
    if (shared_ok && model_in(SHARED_MODELS, name, buf, cap)) {
        return;
    }
    print_message("skip: model '%s' not found in %s%s%s (run /usr/bin/python3 "
                  "tools/make_models.py --out %s)\n",
                  name, made_ok ? made_dir() : "", made_ok && shared_ok ? " or " : "",
                  shared_ok ? SHARED_MODELS : "", made_dir());
    SKIP();
}

static void cfg_init(bd_model_config_t *cfg, const char *path)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->model_path = path ? strdup(path) : NULL;
    snprintf(cfg->backend, sizeof cfg->backend, "%s", "onnxruntime");
    cfg->max_batch_size = BD_MAX_BATCH_UNSET;
    cfg->instances = 1;
    cfg->threads_per_instance = 1;
}

static void cfg_add_io(bd_io_t **arr, size_t *count, const char *name, bd_dtype_t dt, int ndim,
                       const int64_t *dims)
{
    bd_io_t *n = realloc(*arr, (*count + 1) * sizeof *n);
    assert_non_null(n);
    *arr = n;
    bd_io_t *io = &n[(*count)++];
    memset(io, 0, sizeof *io);
    io->name = strdup(name);
    io->dtype = dt;
    io->dims.ndim = ndim;
    memcpy(io->dims.dims, dims, (size_t)ndim * sizeof dims[0]);
}

static bd_tensor_t tensor(const char *name, bd_dtype_t dt, void *data, int ndim,
                          const int64_t *dims)
{
    bd_tensor_t t = {.name = name, .dtype = dt, .data = data};
    t.shape.ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        t.shape.dims[i] = dims[i];
        n *= (size_t)dims[i];
    }
    t.byte_size = n * bd_dtype_size(dt);
    return t;
}

static void assert_io(const bd_io_t *io, const char *name, bd_dtype_t dt, int ndim,
                      const int64_t *dims)
{
    assert_string_equal(io->name, name);
    assert_int_equal(io->dtype, dt);
    assert_int_equal(io->dims.ndim, ndim);
    for (int i = 0; i < ndim; i++) {
        assert_int_equal(io->dims.dims[i], dims[i]);
    }
}

/* Load + one instance. */
typedef struct {
    bd_model_config_t cfg;
    bd_backend_model_t *m;
    bd_backend_instance_t *inst;
} loaded_t;

static void load_ok(loaded_t *l, const bd_backend_ops_t *ops)
{
    bd_err_t err = {0};
    int rc = ops->load(&l->cfg, &l->m, &err);
    if (rc != 0) {
        fail_msg("load failed (%d): %s", rc, err.msg);
    }
    rc = ops->instance_new(l->m, 0, &l->inst, &err);
    if (rc != 0) {
        fail_msg("instance_new failed (%d): %s", rc, err.msg);
    }
}

static void unload(loaded_t *l, const bd_backend_ops_t *ops)
{
    ops->instance_free(l->inst);
    ops->unload(l->m);
    bd_model_config_dispose(&l->cfg);
}

static void run_ok(const bd_backend_ops_t *ops, bd_backend_instance_t *inst, const bd_tensor_t *in,
                   size_t n_in, bd_tensor_t *out, size_t n_out)
{
    bd_err_t err = {0};
    int rc = ops->run(inst, in, n_in, out, n_out, NULL, &err);
    if (rc != 0) {
        fail_msg("run failed (%d): %s", rc, err.msg);
    }
}

/* Load must fail with `code` and exactly `msg` (or, with prefix=true, a message that
 * starts with it). */
static void load_fails(bd_model_config_t *cfg, int code, const char *msg, bool prefix)
{
    bd_err_t err = {0};
    bd_backend_model_t *m = (bd_backend_model_t *)&err; /* must be reset to NULL */
    int rc = bd_backend_ort.load(cfg, &m, &err);
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    assert_null(m);
    if (prefix) {
        if (strncmp(err.msg, msg, strlen(msg)) != 0) {
            fail_msg("error '%s' does not start with '%s'", err.msg, msg);
        }
    } else {
        assert_string_equal(err.msg, msg);
    }
}

/* ---- registry and config --------------------------------------------------------------- */

static void test_find(void **state)
{
    (void)state;
    assert_ptr_equal(bd_backend_find("onnxruntime"), &bd_backend_ort);
    assert_ptr_equal(bd_backend_find("sim"), &bd_backend_sim);
    assert_null(bd_backend_find("tensorflow"));
    assert_null(bd_backend_find(""));
    assert_null(bd_backend_find(NULL));
    assert_string_equal(bd_backend_ort.name, "onnxruntime");
    assert_string_equal(bd_backend_sim.name, "sim");
}

static void test_config_alloc_and_dispose(void **state)
{
    (void)state;
    bd_model_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    assert_int_equal(bd_model_config_alloc_io(&cfg.inputs, &cfg.n_inputs, 3), 0);
    assert_int_equal(cfg.n_inputs, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_null(cfg.inputs[i].name);
        assert_int_equal(cfg.inputs[i].dims.ndim, 0);
        cfg.inputs[i].name = strdup("x");
    }
    assert_int_equal(bd_model_config_alloc_io(&cfg.outputs, &cfg.n_outputs, 0), 0);
    assert_null(cfg.outputs);
    assert_int_equal(cfg.n_outputs, 0);
    assert_int_equal(bd_model_config_alloc_io(&cfg.outputs, &cfg.n_outputs, SIZE_MAX / 2),
                     BD_ENOMEM);
    assert_null(cfg.outputs);
    cfg.name = strdup("m");
    cfg.dir = strdup("d");
    cfg.model_path = strdup("p");
    cfg.device = strdup("cpu");
    cfg.max_batch_size = 7;
    bd_model_config_dispose(&cfg);
    assert_null(cfg.name);
    assert_null(cfg.inputs);
    assert_int_equal(cfg.n_inputs, 0);
    assert_null(cfg.device);
    assert_int_equal(cfg.max_batch_size, 7);
    bd_model_config_dispose(&cfg); /* twice is harmless */
    bd_model_config_dispose(NULL);
}

/* ---- ONNX Runtime library -------------------------------------------------------------- */

static void test_ort_init_default(void **state)
{
    (void)state;
    if (!ort_ok) {
        print_message("skip: ONNX Runtime did not load: %s\n", bd_ort_unavailable_reason());
        SKIP();
    }
    assert_true(bd_ort_available());
    /* The default library is the 1.30.0 setup installs; BD_TEST_ORT_LIB may name another
     * (the 1.29 GPU build). Either way the API version bound is the library's own minor
     * release (1.29 offers 29, 1.30 offers 30), not a fixed one. */
    char want[32];
    snprintf(want, sizeof want, "%s", ort_lib() ? bd_ort_version() : "1.30.0");
    assert_string_equal(bd_ort_version(), want);
    bd_ort_info_t info;
    unsigned minor = 0;
    assert_true(bd_ort_info(&info));
    assert_int_equal(sscanf(info.version, "1.%u", &minor), 1);
    assert_int_equal(info.api_version, minor > 30 ? 30 : minor);
    assert_non_null(info.path);
    assert_true(info.path[0] == '/');
    assert_string_equal(bd_ort_unavailable_reason(), "");
    /* Initialising again replaces the library cleanly. */
    bd_err_t err = {0};
    assert_int_equal(bd_ort_init(ort_lib(), &err), 0);
    assert_string_equal(bd_ort_version(), want);
}

static void test_ort_init_missing_library(void **state)
{
    (void)state;
    bd_ort_shutdown();
    assert_false(bd_ort_available());
    assert_null(bd_ort_version());

    bd_err_t err = {0};
    const char *bad = "/nonexistent/libonnxruntime.so.1";
    assert_int_equal(bd_ort_init(bad, &err), BD_EUNAVAIL);
    assert_string_equal(err.msg, "cannot load ONNX Runtime from '/nonexistent/libonnxruntime.so.1'"
                                 ": /nonexistent/libonnxruntime.so.1: cannot open shared object "
                                 "file: No such file or directory");
    assert_false(bd_ort_available());
    assert_null(bd_ort_version());
    assert_string_equal(bd_ort_unavailable_reason(), err.msg);

    /* A model load says why. */
    bd_model_config_t cfg;
    cfg_init(&cfg, "/nonexistent/model.onnx");
    char want[BD_ERR_MSG_MAX + 64];
    snprintf(want, sizeof want, "ONNX Runtime is unavailable: %s", err.msg);
    load_fails(&cfg, BD_EUNAVAIL, want, false);
    bd_model_config_dispose(&cfg);

    /* A library that is not ONNX Runtime. */
    assert_int_equal(bd_ort_init("libm.so.6", &err), BD_EUNAVAIL);
    assert_string_equal(err.msg, "cannot load ONNX Runtime from 'libm.so.6': it does not export "
                                 "OrtGetApiBase");

    /* Back to the real one for the tests that follow. */
    if (ort_ok) {
        assert_int_equal(bd_ort_init(ort_lib(), &err), 0);
        assert_string_equal(bd_ort_version(), "1.30.0");
    }
}

/* ---- ONNX Runtime models --------------------------------------------------------------- */

static void test_ort_identity(void **state)
{
    (void)state;
    char path[512];
    find_model("identity", true, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    assert_int_equal(l.cfg.max_batch_size, BD_DEFAULT_MAX_BATCH);
    assert_int_equal(l.cfg.n_inputs, 1);
    assert_int_equal(l.cfg.n_outputs, 1);
    assert_io(&l.cfg.inputs[0], "INPUT0", BD_DT_FP32, 1, (int64_t[]){16});
    assert_io(&l.cfg.outputs[0], "OUTPUT0", BD_DT_FP32, 1, (int64_t[]){16});

    float x[3 * 16];
    for (int i = 0; i < 3 * 16; i++) {
        x[i] = (float)i * 0.5f - 7.25f;
    }
    for (int64_t rows = 1; rows <= 3; rows += 2) {
        bd_tensor_t in = tensor("INPUT0", BD_DT_FP32, x, 2, (int64_t[]){rows, 16});
        bd_tensor_t out;
        run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
        assert_string_equal(out.name, "OUTPUT0");
        assert_int_equal(out.dtype, BD_DT_FP32);
        assert_int_equal(out.shape.ndim, 2);
        assert_int_equal(out.shape.dims[0], rows);
        assert_int_equal(out.shape.dims[1], 16);
        assert_int_equal(out.byte_size, (size_t)rows * 16 * sizeof(float));
        assert_memory_equal(out.data, x, out.byte_size);
    }
    unload(&l, &bd_backend_ort);
}

static void test_ort_simple(void **state)
{
    (void)state;
    char path[512];
    find_model("simple", true, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    assert_int_equal(l.cfg.max_batch_size, 64);
    assert_int_equal(l.cfg.n_inputs, 2);
    assert_int_equal(l.cfg.n_outputs, 2);
    assert_io(&l.cfg.inputs[0], "INPUT0", BD_DT_INT32, 1, (int64_t[]){16});
    assert_io(&l.cfg.inputs[1], "INPUT1", BD_DT_INT32, 1, (int64_t[]){16});
    assert_io(&l.cfg.outputs[0], "OUTPUT0", BD_DT_INT32, 1, (int64_t[]){16});
    assert_io(&l.cfg.outputs[1], "OUTPUT1", BD_DT_INT32, 1, (int64_t[]){16});

    int32_t a[3 * 16];
    int32_t b[3 * 16];
    for (int i = 0; i < 3 * 16; i++) {
        a[i] = i * 1000 - 7;
        b[i] = 3 - i * i;
    }
    for (int64_t rows = 1; rows <= 3; rows += 2) {
        bd_tensor_t in[2] = {tensor("INPUT0", BD_DT_INT32, a, 2, (int64_t[]){rows, 16}),
                             tensor("INPUT1", BD_DT_INT32, b, 2, (int64_t[]){rows, 16})};
        bd_tensor_t out[2];
        run_ok(&bd_backend_ort, l.inst, in, 2, out, 2);
        assert_string_equal(out[0].name, "OUTPUT0");
        assert_string_equal(out[1].name, "OUTPUT1");
        for (int k = 0; k < 2; k++) {
            assert_int_equal(out[k].dtype, BD_DT_INT32);
            assert_int_equal(out[k].shape.ndim, 2);
            assert_int_equal(out[k].shape.dims[0], rows);
            assert_int_equal(out[k].shape.dims[1], 16);
        }
        const int32_t *sum = out[0].data;
        const int32_t *dif = out[1].data;
        for (int i = 0; i < rows * 16; i++) {
            assert_int_equal(sum[i], a[i] + b[i]);
            assert_int_equal(dif[i], a[i] - b[i]);
        }
    }
    unload(&l, &bd_backend_ort);
}

static void test_ort_simple_output_subset(void **state)
{
    (void)state;
    char path[512];
    find_model("simple", true, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    l.cfg.max_batch_size = 8;
    /* Inputs in the reverse of the model's order, and only the second output. */
    cfg_add_io(&l.cfg.inputs, &l.cfg.n_inputs, "INPUT1", BD_DT_INT32, 1, (int64_t[]){16});
    cfg_add_io(&l.cfg.inputs, &l.cfg.n_inputs, "INPUT0", BD_DT_INT32, 1, (int64_t[]){16});
    cfg_add_io(&l.cfg.outputs, &l.cfg.n_outputs, "OUTPUT1", BD_DT_INT32, 1, (int64_t[]){16});
    load_ok(&l, &bd_backend_ort);
    assert_int_equal(l.cfg.max_batch_size, 8);
    assert_int_equal(l.cfg.n_outputs, 1);

    int32_t a[16];
    int32_t b[16];
    for (int i = 0; i < 16; i++) {
        a[i] = 100 + i;
        b[i] = 3 * i;
    }
    bd_tensor_t in[2] = {tensor("INPUT1", BD_DT_INT32, b, 2, (int64_t[]){1, 16}),
                         tensor("INPUT0", BD_DT_INT32, a, 2, (int64_t[]){1, 16})};
    bd_tensor_t out;
    run_ok(&bd_backend_ort, l.inst, in, 2, &out, 1);
    assert_string_equal(out.name, "OUTPUT1");
    const int32_t *dif = out.data;
    for (int i = 0; i < 16; i++) {
        assert_int_equal(dif[i], a[i] - b[i]);
    }
    unload(&l, &bd_backend_ort);
}

static void test_ort_mlp_rows_independent(void **state)
{
    (void)state;
    char path[512];
    find_model("mlp", true, false, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    assert_int_equal(l.cfg.max_batch_size, 64);
    assert_io(&l.cfg.inputs[0], "input", BD_DT_FP32, 1, (int64_t[]){64});
    assert_io(&l.cfg.outputs[0], "probs", BD_DT_FP32, 1, (int64_t[]){10});

    float x[3 * 64];
    for (int i = 0; i < 3 * 64; i++) {
        x[i] = sinf((float)i * 0.37f) * 2.0f;
    }
    float alone[3][10];
    for (int r = 0; r < 3; r++) {
        bd_tensor_t in = tensor("input", BD_DT_FP32, x + r * 64, 2, (int64_t[]){1, 64});
        bd_tensor_t out;
        run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
        assert_int_equal(out.shape.dims[0], 1);
        assert_int_equal(out.shape.dims[1], 10);
        memcpy(alone[r], out.data, sizeof alone[r]);
    }
    bd_tensor_t in = tensor("input", BD_DT_FP32, x, 2, (int64_t[]){3, 64});
    bd_tensor_t out;
    run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
    assert_int_equal(out.shape.dims[0], 3);
    const float *y = out.data;
    for (int r = 0; r < 3; r++) {
        double sum = 0;
        for (int j = 0; j < 10; j++) {
            float a = alone[r][j];
            float b = y[r * 10 + j];
            if (fabsf(a - b) > 1e-5f * fmaxf(fabsf(a), fabsf(b))) {
                fail_msg("row %d col %d: batch %.9g vs alone %.9g", r, j, b, a);
            }
            assert_true(b > 0.0f && b < 1.0f);
            sum += b;
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    unload(&l, &bd_backend_ort);
}

static void test_ort_mlp_small_exact(void **state)
{
    (void)state;
    char path[512];
    find_model("mlp_small", false, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    assert_io(&l.cfg.inputs[0], "input", BD_DT_FP32, 1, (int64_t[]){8});
    assert_io(&l.cfg.outputs[0], "output", BD_DT_FP32, 1, (int64_t[]){4});

    float x[3 * 8];
    for (int i = 0; i < 3 * 8; i++) {
        x[i] = (float)(i - 5); /* integers: every partial sum is exact in float */
    }
    for (int64_t rows = 1; rows <= 3; rows += 2) {
        bd_tensor_t in = tensor("input", BD_DT_FP32, x, 2, (int64_t[]){rows, 8});
        bd_tensor_t out;
        run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
        assert_int_equal(out.shape.dims[0], rows);
        assert_int_equal(out.shape.dims[1], 4);
        const float *y = out.data;
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < 4; j++) {
                /* W[i][j] = ((4i + j) % 7 - 3) / 2, B[j] = j/4 - 1/2 (tools/make_models.py) */
                double want = j / 4.0 - 0.5;
                for (int i = 0; i < 8; i++) {
                    want += x[r * 8 + i] * (((4 * i + j) % 7 - 3) / 2.0);
                }
                if ((double)y[r * 4 + j] != want) {
                    fail_msg("row %d col %d: got %.9g, want %.9g", r, j, y[r * 4 + j], want);
                }
            }
        }
    }
    unload(&l, &bd_backend_ort);
}

static void test_ort_fixed_shape(void **state)
{
    (void)state;
    char path[512];
    find_model("fixed_shape", false, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    assert_int_equal(l.cfg.max_batch_size, 0);
    assert_io(&l.cfg.inputs[0], "INPUT0", BD_DT_FP32, 2, (int64_t[]){2, 3});
    assert_io(&l.cfg.outputs[0], "OUTPUT0", BD_DT_FP32, 2, (int64_t[]){2, 3});
    float x[6] = {1, -2, 3.5f, 0, 1e30f, -0.0f};
    bd_tensor_t in = tensor("INPUT0", BD_DT_FP32, x, 2, (int64_t[]){2, 3});
    bd_tensor_t out;
    run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
    assert_int_equal(out.shape.ndim, 2);
    assert_int_equal(out.shape.dims[0], 2);
    assert_int_equal(out.shape.dims[1], 3);
    assert_memory_equal(out.data, x, sizeof x);
    unload(&l, &bd_backend_ort);

    /* Asking it to batch is refused. */
    bd_model_config_t cfg;
    cfg_init(&cfg, path);
    cfg.max_batch_size = 8;
    load_fails(&cfg, BD_EINVAL,
               "max_batch_size 8 needs a dynamic first dim on every input and output, but "
               "model input 'INPUT0' has shape [2,3]; expected max_batch_size 0 for this model",
               false);
    assert_null(cfg.inputs);
    bd_model_config_dispose(&cfg);
}

static void test_ort_int64_and_bool(void **state)
{
    (void)state;
    char path[512];
    find_model("int64_ident", false, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    assert_io(&l.cfg.inputs[0], "INPUT0", BD_DT_INT64, 1, (int64_t[]){4});
    int64_t v[12] = {INT64_MIN, INT64_MAX, 0, -1, 1, 2, 3, 4, 5, 6, 7, (int64_t)1 << 53};
    bd_tensor_t in = tensor("INPUT0", BD_DT_INT64, v, 2, (int64_t[]){3, 4});
    bd_tensor_t out;
    run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
    assert_int_equal(out.dtype, BD_DT_INT64);
    assert_memory_equal(out.data, v, sizeof v);
    unload(&l, &bd_backend_ort);

    find_model("bool_not", false, true, path, sizeof path);
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    assert_io(&l.cfg.inputs[0], "INPUT0", BD_DT_BOOL, 1, (int64_t[]){4});
    assert_io(&l.cfg.outputs[0], "OUTPUT0", BD_DT_BOOL, 1, (int64_t[]){4});
    uint8_t bits[8] = {1, 0, 0, 1, 1, 1, 0, 0};
    in = tensor("INPUT0", BD_DT_BOOL, bits, 2, (int64_t[]){2, 4});
    run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
    assert_int_equal(out.dtype, BD_DT_BOOL);
    assert_int_equal(out.byte_size, 8);
    const uint8_t *o = out.data;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(o[i], !bits[i]);
    }
    unload(&l, &bd_backend_ort);
}

static void test_ort_fp16_refused(void **state)
{
    (void)state;
    if (!ort_ok) {
        SKIP();
    }
    char path[512];
    if (!model_in(bad_dir(), "fp16_ident", path, sizeof path)) {
        print_message("skip: %s/fp16_ident not found (make_models.py --bad-out)\n", bad_dir());
        SKIP();
    }
    bd_model_config_t cfg;
    cfg_init(&cfg, path);
    load_fails(&cfg, BD_EUNSUPPORTED,
               "model input 'INPUT0' has element type FLOAT16, which batchd cannot carry; "
               "supported: BOOL, INT8/16/32/64, UINT8/16/32/64, FLOAT, DOUBLE, STRING",
               false);
    assert_null(cfg.inputs);
    assert_null(cfg.outputs);
    assert_int_equal(cfg.max_batch_size, BD_MAX_BATCH_UNSET);
    bd_model_config_dispose(&cfg);
}

static void test_ort_bad_paths(void **state)
{
    (void)state;
    if (!ort_ok) {
        SKIP();
    }
    bd_model_config_t cfg;
    cfg_init(&cfg, "/nonexistent/model.onnx");
    load_fails(&cfg, BD_EIO,
               "cannot read model file '/nonexistent/model.onnx': No such file or directory",
               false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, NULL);
    load_fails(&cfg, BD_EINVAL, "no model file path given for the onnxruntime backend", false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, "/tmp");
    load_fails(&cfg, BD_EIO, "cannot read model file '/tmp': not a regular file", false);
    bd_model_config_dispose(&cfg);

    /* A file that is not an ONNX model: ORT's own message after ours. */
    char junk[] = "/tmp/bd_test_backend_XXXXXX";
    int fd = mkstemp(junk);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a model\n", 12), 12);
    close(fd);
    cfg_init(&cfg, junk);
    char want[128];
    snprintf(want, sizeof want, "cannot load model '%s': ", junk);
    load_fails(&cfg, BD_EBACKEND, want, true);
    bd_model_config_dispose(&cfg);
    unlink(junk);
}

static void test_ort_config_mismatch(void **state)
{
    (void)state;
    char path[512];
    find_model("identity", true, true, path, sizeof path);
    bd_model_config_t cfg;

    cfg_init(&cfg, path);
    cfg_add_io(&cfg.inputs, &cfg.n_inputs, "INPUT0", BD_DT_FP32, 1, (int64_t[]){8});
    load_fails(&cfg, BD_EINVAL,
               "input 'INPUT0': config dims [8] do not match the model's [16] (batch dim "
               "excluded)",
               false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, path);
    cfg.max_batch_size = 0; /* then dims include the batch dim */
    cfg_add_io(&cfg.inputs, &cfg.n_inputs, "INPUT0", BD_DT_FP32, 1, (int64_t[]){16});
    load_fails(&cfg, BD_EINVAL,
               "input 'INPUT0': config dims [16] do not match the model's "
               "[-1,16]",
               false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, path);
    cfg_add_io(&cfg.inputs, &cfg.n_inputs, "INPUT0", BD_DT_INT32, 1, (int64_t[]){16});
    load_fails(&cfg, BD_EINVAL,
               "input 'INPUT0': config datatype INT32 does not match the model's FP32", false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, path);
    cfg_add_io(&cfg.inputs, &cfg.n_inputs, "IN", BD_DT_FP32, 1, (int64_t[]){16});
    load_fails(&cfg, BD_EINVAL, "config input 'IN' is not one of the model's inputs ('INPUT0')",
               false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, path);
    cfg_add_io(&cfg.inputs, &cfg.n_inputs, "INPUT0", BD_DT_FP32, 1, (int64_t[]){16});
    cfg_add_io(&cfg.inputs, &cfg.n_inputs, "INPUT1", BD_DT_FP32, 1, (int64_t[]){16});
    load_fails(&cfg, BD_EINVAL, "config lists 2 inputs but the model has 1 ('INPUT0')", false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, path);
    cfg_add_io(&cfg.outputs, &cfg.n_outputs, "OUTPUT0", BD_DT_FP32, 1, (int64_t[]){-1});
    load_fails(&cfg, BD_EINVAL,
               "output 'OUTPUT0': config dims [-1] do not match the model's [16] (batch dim "
               "excluded)",
               false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, path);
    cfg.max_batch_size = -5;
    load_fails(&cfg, BD_EINVAL, "max_batch_size -5 is negative; expected >= 0", false);
    bd_model_config_dispose(&cfg);

    /* A config that agrees is kept as it was. */
    loaded_t l;
    cfg_init(&l.cfg, path);
    l.cfg.max_batch_size = 4;
    cfg_add_io(&l.cfg.inputs, &l.cfg.n_inputs, "INPUT0", BD_DT_FP32, 1, (int64_t[]){16});
    cfg_add_io(&l.cfg.outputs, &l.cfg.n_outputs, "OUTPUT0", BD_DT_FP32, 1, (int64_t[]){16});
    load_ok(&l, &bd_backend_ort);
    assert_int_equal(l.cfg.max_batch_size, 4);
    assert_int_equal(l.cfg.n_inputs, 1);
    unload(&l, &bd_backend_ort);
}

static void test_ort_devices(void **state)
{
    (void)state;
    char path[512];
    find_model("identity", true, true, path, sizeof path);
    bd_model_config_t cfg;
    cfg_init(&cfg, path);
    cfg.device = strdup("tpu:0");
    load_fails(&cfg, BD_EINVAL, "device 'tpu:0' is not valid; expected \"cpu\" or \"cuda:N\"",
               false);
    bd_model_config_dispose(&cfg);

    cfg_init(&cfg, path);
    cfg.device = strdup("cuda:x");
    load_fails(&cfg, BD_EINVAL,
               "device 'cuda:x' is not valid; expected \"cpu\" or \"cuda:N\" "
               "with N a GPU number",
               false);
    bd_model_config_dispose(&cfg);

    /* The CPU build of ORT has no CUDA provider beside it: one sentence that names what is
     * missing and what to do (tests/e2e/test_gpu.py checks each sentence). On a GPU build
     * with a GPU, the model loads instead. */
    cfg_init(&cfg, path);
    cfg.device = strdup("cuda:0");
    bd_err_t err = {0};
    bd_backend_model_t *m = NULL;
    int rc = bd_backend_ort.load(&cfg, &m, &err);
    if (rc == 0) {
        print_message("note: cuda:0 loaded; this ONNX Runtime has a working CUDA provider\n");
        assert_string_equal(cfg.placement.device, "cuda:0");
        assert_string_equal(cfg.placement.provider, "CUDAExecutionProvider");
        bd_backend_ort.unload(m);
    } else {
        const char *want = "device cuda:0 ";
        assert_int_equal(rc, BD_EUNAVAIL);
        if (strncmp(err.msg, want, strlen(want)) != 0 || strchr(err.msg, '\n') ||
            !strchr(err.msg, ';')) {
            fail_msg("unexpected message: %s", err.msg);
        }
        assert_string_equal(cfg.placement.device, ""); /* not loaded: not placed */
        print_message("note: %s\n", err.msg);
    }
    bd_model_config_dispose(&cfg);

    loaded_t l;
    cfg_init(&l.cfg, path);
    l.cfg.device = strdup("cpu");
    load_ok(&l, &bd_backend_ort);
    assert_string_equal(l.cfg.placement.device, "cpu");
    assert_string_equal(l.cfg.placement.provider, "CPUExecutionProvider");
    bd_ort_info_t info;
    assert_true(bd_ort_info(&info));
    if (info.api_version >= 24) { /* placement is reported: every node is on the CPU */
        assert_true(l.cfg.placement.nodes >= 0);
        assert_int_equal(l.cfg.placement.cpu_nodes, l.cfg.placement.nodes);
    } else {
        assert_int_equal(l.cfg.placement.nodes, -1);
    }
    unload(&l, &bd_backend_ort);
}

static void test_ort_run_errors(void **state)
{
    (void)state;
    char path[512];
    find_model("identity", true, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    load_ok(&l, &bd_backend_ort);
    float x[32] = {0};
    bd_tensor_t out;
    bd_err_t err = {0};

    bd_tensor_t in = tensor("INPUT0", BD_DT_INT32, x, 2, (int64_t[]){1, 16});
    assert_int_equal(bd_backend_ort.run(l.inst, &in, 1, &out, 1, NULL, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "run: input 'INPUT0' is INT32; expected FP32");

    in = tensor("INPUT0", BD_DT_FP32, x, 2, (int64_t[]){1, 16});
    in.byte_size = 60;
    assert_int_equal(bd_backend_ort.run(l.inst, &in, 1, &out, 1, NULL, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "run: input 'INPUT0' with shape [1,16] has 60 bytes of data; "
                                 "expected the shape's element count times 4");

    /* What ONNX Runtime calls an invalid argument is the inputs' fault (BD_EINVAL: the
     * scheduler runs a batch's requests again one at a time); here a shape the scheduler
     * would have refused before. */
    in = tensor("INPUT0", BD_DT_FP32, x, 2, (int64_t[]){2, 15});
    assert_int_equal(bd_backend_ort.run(l.inst, &in, 1, &out, 1, NULL, &err), BD_EINVAL);
    assert_int_equal(err.code, BD_EINVAL);
    if (strncmp(err.msg, "ONNX Runtime: ", 14) != 0) {
        fail_msg("unexpected message: %s", err.msg);
    }

    in = tensor("INPUT0", BD_DT_FP32, x, 2, (int64_t[]){1, 16});
    assert_int_equal(bd_backend_ort.run(l.inst, &in, 1, &out, 2, NULL, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "run: got 1 inputs and 2 outputs; expected 1 and 1");

    in.name = "OTHER";
    assert_int_equal(bd_backend_ort.run(l.inst, &in, 1, &out, 1, NULL, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "run: input 0 is 'OTHER'; expected 'INPUT0'");

    /* The instance still works after failures; zero rows too. */
    in = tensor("INPUT0", BD_DT_FP32, NULL, 2, (int64_t[]){0, 16});
    run_ok(&bd_backend_ort, l.inst, &in, 1, &out, 1);
    assert_int_equal(out.shape.dims[0], 0);
    assert_int_equal(out.byte_size, 0);
    unload(&l, &bd_backend_ort);
}

static void test_ort_two_instances(void **state)
{
    (void)state;
    char path[512];
    find_model("simple", true, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    l.cfg.instances = 2;
    load_ok(&l, &bd_backend_ort);
    bd_backend_instance_t *second = NULL;
    bd_err_t err = {0};
    assert_int_equal(bd_backend_ort.instance_new(l.m, 1, &second, &err), 0);
    int32_t a[16];
    int32_t b[16];
    for (int i = 0; i < 16; i++) {
        a[i] = i;
        b[i] = 2 * i;
    }
    bd_tensor_t in[2] = {tensor("INPUT0", BD_DT_INT32, a, 2, (int64_t[]){1, 16}),
                         tensor("INPUT1", BD_DT_INT32, b, 2, (int64_t[]){1, 16})};
    bd_tensor_t o1[2];
    bd_tensor_t o2[2];
    run_ok(&bd_backend_ort, l.inst, in, 2, o1, 2);
    run_ok(&bd_backend_ort, second, in, 2, o2, 2);
    /* Each instance owns its outputs: both stay valid. */
    assert_ptr_not_equal(o1[0].data, o2[0].data);
    assert_memory_equal(o1[0].data, o2[0].data, 64);
    assert_int_equal(((int32_t *)o1[1].data)[15], -15);
    bd_backend_ort.instance_free(second);
    unload(&l, &bd_backend_ort);
}

/* Instances of one model run at the same time on their own threads (as workers do). */
typedef struct {
    bd_backend_instance_t *inst;
    int seed;
    int bad; /* wrong values seen, or -1 for a failed run */
} runner_t;

static void *runner(void *arg)
{
    runner_t *r = arg;
    int32_t a[4 * 16];
    int32_t b[4 * 16];
    for (int iter = 0; iter < 200; iter++) {
        int64_t rows = 1 + (iter + r->seed) % 4;
        for (int i = 0; i < rows * 16; i++) {
            a[i] = r->seed * 100000 + iter * 64 + i;
            b[i] = i - iter;
        }
        bd_tensor_t in[2] = {tensor("INPUT0", BD_DT_INT32, a, 2, (int64_t[]){rows, 16}),
                             tensor("INPUT1", BD_DT_INT32, b, 2, (int64_t[]){rows, 16})};
        bd_tensor_t out[2];
        bd_err_t err = {0};
        if (bd_backend_ort.run(r->inst, in, 2, out, 2, NULL, &err) != 0) {
            r->bad = -1;
            return NULL;
        }
        const int32_t *sum = out[0].data;
        const int32_t *dif = out[1].data;
        for (int i = 0; i < rows * 16; i++) {
            r->bad += sum[i] != a[i] + b[i] || dif[i] != a[i] - b[i];
        }
    }
    return NULL;
}

static void test_ort_instances_run_concurrently(void **state)
{
    (void)state;
    char path[512];
    find_model("simple", true, true, path, sizeof path);
    loaded_t l;
    cfg_init(&l.cfg, path);
    l.cfg.instances = 3;
    load_ok(&l, &bd_backend_ort);
    runner_t r[3] = {{.inst = l.inst, .seed = 1}};
    bd_err_t err = {0};
    for (int i = 1; i < 3; i++) {
        r[i].seed = i + 1;
        assert_int_equal(bd_backend_ort.instance_new(l.m, i, &r[i].inst, &err), 0);
    }
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, runner, &r[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].bad, 0);
    }
    for (int i = 1; i < 3; i++) {
        bd_backend_ort.instance_free(r[i].inst);
    }
    unload(&l, &bd_backend_ort);
}

/* ---- sim ------------------------------------------------------------------------------- */

static void sim_cfg(bd_model_config_t *cfg)
{
    cfg_init(cfg, NULL);
    snprintf(cfg->backend, sizeof cfg->backend, "sim");
    cfg->max_batch_size = 8;
    cfg_add_io(&cfg->inputs, &cfg->n_inputs, "INPUT0", BD_DT_FP32, 1, (int64_t[]){4});
    cfg_add_io(&cfg->inputs, &cfg->n_inputs, "INPUT1", BD_DT_INT64, 2, (int64_t[]){2, -1});
    cfg_add_io(&cfg->outputs, &cfg->n_outputs, "OUTPUT0", BD_DT_FP32, 1, (int64_t[]){4});
    cfg_add_io(&cfg->outputs, &cfg->n_outputs, "OUTPUT1", BD_DT_INT64, 2, (int64_t[]){2, -1});
}

static void sim_load_fails(bd_model_config_t *cfg, const char *msg)
{
    bd_err_t err = {0};
    bd_backend_model_t *m = (bd_backend_model_t *)&err;
    assert_int_equal(bd_backend_sim.load(cfg, &m, &err), BD_EINVAL);
    assert_int_equal(err.code, BD_EINVAL);
    assert_null(m);
    assert_string_equal(err.msg, msg);
}

static void test_sim_outputs_equal_inputs(void **state)
{
    (void)state;
    loaded_t l;
    sim_cfg(&l.cfg);
    load_ok(&l, &bd_backend_sim);
    assert_int_equal(l.cfg.max_batch_size, 8);
    float a[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int64_t b[3 * 2 * 5];
    for (int i = 0; i < 30; i++) {
        b[i] = i * 7 - 100;
    }
    bd_tensor_t in[2] = {tensor("INPUT0", BD_DT_FP32, a, 2, (int64_t[]){3, 4}),
                         tensor("INPUT1", BD_DT_INT64, b, 3, (int64_t[]){3, 2, 5})};
    bd_tensor_t out[2];
    run_ok(&bd_backend_sim, l.inst, in, 2, out, 2);
    assert_string_equal(out[0].name, "OUTPUT0");
    assert_string_equal(out[1].name, "OUTPUT1");
    for (int k = 0; k < 2; k++) {
        assert_int_equal(out[k].dtype, in[k].dtype);
        assert_true(bd_shape_equal(&out[k].shape, &in[k].shape));
        assert_int_equal(out[k].byte_size, in[k].byte_size);
        assert_memory_equal(out[k].data, in[k].data, in[k].byte_size);
    }

    bd_err_t err = {0};
    in[0].dtype = BD_DT_FP64;
    assert_int_equal(bd_backend_sim.run(l.inst, in, 2, out, 2, NULL, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "sim model: input 0 is FP64; expected FP32");
    assert_int_equal(bd_backend_sim.run(l.inst, in, 1, out, 1, NULL, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "sim model: run got 1 inputs and 1 outputs; expected 2 of each");
    unload(&l, &bd_backend_sim);

    /* No max_batch_size in config: the sim does not batch. */
    sim_cfg(&l.cfg);
    l.cfg.max_batch_size = BD_MAX_BATCH_UNSET;
    load_ok(&l, &bd_backend_sim);
    assert_int_equal(l.cfg.max_batch_size, 0);
    unload(&l, &bd_backend_sim);
}

static void test_sim_bad_configs(void **state)
{
    (void)state;
    bd_model_config_t cfg;

    cfg_init(&cfg, NULL);
    sim_load_fails(&cfg, "sim model: config.json must list \"inputs\" and \"outputs\" (a sim "
                         "model has no model file to read them from)");
    bd_model_config_dispose(&cfg);

    sim_cfg(&cfg);
    free(cfg.outputs[1].name);
    cfg.n_outputs = 1;
    sim_load_fails(&cfg, "sim model: has 2 inputs and 1 outputs; expected as many outputs as "
                         "inputs (output i is a copy of input i)");
    bd_model_config_dispose(&cfg);

    sim_cfg(&cfg);
    cfg.outputs[1].dtype = BD_DT_INT32;
    sim_load_fails(&cfg, "sim model: output 'OUTPUT1' is INT32 but input 'INPUT1' is INT64; "
                         "expected output 1 to have input 1's datatype");
    bd_model_config_dispose(&cfg);

    sim_cfg(&cfg);
    cfg.outputs[0].dims.dims[0] = 5;
    sim_load_fails(&cfg, "sim model: output 'OUTPUT0' has dims [5] but input 'INPUT0' has [4]; "
                         "expected output 0 to have input 0's dims");
    bd_model_config_dispose(&cfg);

    sim_cfg(&cfg);
    cfg.inputs[0].dtype = BD_DT_FP16;
    cfg.outputs[0].dtype = BD_DT_FP16;
    sim_load_fails(&cfg, "sim model: input 'INPUT0' has datatype FP16; expected BOOL, INT*, "
                         "UINT*, FP32, FP64 or BYTES");
    bd_model_config_dispose(&cfg);

    sim_cfg(&cfg);
    cfg.max_batch_size = -3;
    sim_load_fails(&cfg, "sim model: max_batch_size -3; expected >= 0");
    bd_model_config_dispose(&cfg);
}

static void test_sim_latency(void **state)
{
    (void)state;
    loaded_t l;
    sim_cfg(&l.cfg);
    l.cfg.sim.latency_us = 20000;
    load_ok(&l, &bd_backend_sim);
    float a[4] = {0};
    int64_t b[10] = {0};
    bd_tensor_t in[2] = {tensor("INPUT0", BD_DT_FP32, a, 2, (int64_t[]){1, 4}),
                         tensor("INPUT1", BD_DT_INT64, b, 3, (int64_t[]){1, 2, 5})};
    bd_tensor_t out[2];
    uint64_t t0 = bd_now_us();
    run_ok(&bd_backend_sim, l.inst, in, 2, out, 2);
    assert_true(bd_now_us() - t0 >= 20000);
    unload(&l, &bd_backend_sim);

    /* per_item_us counts rows: 4 rows * 5 ms. */
    sim_cfg(&l.cfg);
    l.cfg.sim.per_item_us = 5000;
    load_ok(&l, &bd_backend_sim);
    float a4[16] = {0};
    int64_t b4[40] = {0};
    in[0] = tensor("INPUT0", BD_DT_FP32, a4, 2, (int64_t[]){4, 4});
    in[1] = tensor("INPUT1", BD_DT_INT64, b4, 3, (int64_t[]){4, 2, 5});
    t0 = bd_now_us();
    run_ok(&bd_backend_sim, l.inst, in, 2, out, 2);
    assert_true(bd_now_us() - t0 >= 20000);
    unload(&l, &bd_backend_sim);
}

/* sim.fail_rate: 0 never fails, 1 always fails (with the rate in the message), and a share
 * in between fails about that share of runs, the same runs every time (seeded per instance). */
static int sim_failures(double rate, int runs, bool *pattern)
{
    loaded_t l;
    sim_cfg(&l.cfg);
    l.cfg.sim.fail_rate = rate;
    load_ok(&l, &bd_backend_sim);
    float a[4] = {0};
    int64_t b[10] = {0};
    bd_tensor_t in[2] = {tensor("INPUT0", BD_DT_FP32, a, 2, (int64_t[]){1, 4}),
                         tensor("INPUT1", BD_DT_INT64, b, 3, (int64_t[]){1, 2, 5})};
    bd_tensor_t out[2];
    int fails = 0;
    for (int i = 0; i < runs; i++) {
        bd_err_t err = {0};
        int rc = bd_backend_sim.run(l.inst, in, 2, out, 2, NULL, &err);
        if (rc != 0) {
            assert_int_equal(rc, BD_EBACKEND);
            char want[96];
            snprintf(want, sizeof want, "sim model: injected failure (sim.fail_rate %g)", rate);
            assert_string_equal(err.msg, want);
            fails++;
        }
        if (pattern) {
            pattern[i] = rc != 0;
        }
    }
    unload(&l, &bd_backend_sim);
    return fails;
}

static void test_sim_fail_rate(void **state)
{
    (void)state;
    assert_int_equal(sim_failures(0.0, 200, NULL), 0);
    assert_int_equal(sim_failures(1.0, 200, NULL), 200);
    bool p1[1000];
    bool p2[1000];
    int n = sim_failures(0.1, 1000, p1);
    assert_in_range(n, 60, 140);
    assert_int_equal(sim_failures(0.1, 1000, p2), n);
    assert_memory_equal(p1, p2, sizeof p1);
}

/* parameters.sim_fail reaches the sim with the batch: a request that set it true fails the
 * whole run (naming the request when it has an id); false, other parameters or no batch list
 * run normally. check_params accepts only a boolean sim_fail. */
static void test_sim_fail_param(void **state)
{
    (void)state;
    loaded_t l;
    sim_cfg(&l.cfg);
    load_ok(&l, &bd_backend_sim);
    float a[8] = {0};
    int64_t b[20] = {0};
    bd_tensor_t in[2] = {tensor("INPUT0", BD_DT_FP32, a, 2, (int64_t[]){2, 4}),
                         tensor("INPUT1", BD_DT_INT64, b, 3, (int64_t[]){2, 2, 5})};
    bd_tensor_t out[2];
    bd_param_t yes[2] = {{.name = "other", .kind = BD_PARAM_INT, .v.i = 3},
                         {.name = "sim_fail", .kind = BD_PARAM_BOOL, .v.b = true}};
    bd_param_t no = {.name = "sim_fail", .kind = BD_PARAM_BOOL, .v.b = false};
    bd_backend_req_t reqs[2] = {{.row0 = 0, .rows = 1, .id = "a", .params = &no, .n_params = 1},
                                {.row0 = 1, .rows = 1, .id = "b", .params = yes, .n_params = 2}};
    bd_backend_batch_t batch = {.reqs = reqs, .n_reqs = 2};
    bd_err_t err = {0};
    assert_int_equal(bd_backend_sim.run(l.inst, in, 2, out, 2, &batch, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "sim model: the batch failed on purpose because request 'b' set "
                                 "parameters.sim_fail");
    reqs[1].id = NULL;
    assert_int_equal(bd_backend_sim.run(l.inst, in, 2, out, 2, &batch, &err), BD_EBACKEND);
    assert_string_equal(err.msg, "sim model: the batch failed on purpose because a request in it "
                                 "set parameters.sim_fail");
    batch.n_reqs = 1;
    run_ok(&bd_backend_sim, l.inst, in, 2, out, 2);
    assert_int_equal(bd_backend_sim.run(l.inst, in, 2, out, 2, &batch, &err), 0);

    assert_non_null(bd_backend_sim.check_params);
    assert_null(bd_backend_ort.check_params);
    err = (bd_err_t){0};
    assert_int_equal(bd_backend_sim.check_params(l.m, yes, 2, &err), 0);
    assert_int_equal(bd_backend_sim.check_params(l.m, NULL, 0, &err), 0);
    bd_param_t bad[4] = {{.name = "sim_fail", .kind = BD_PARAM_INT, .v.i = 1},
                         {.name = "sim_fail", .kind = BD_PARAM_STRING, .v.s = "true"},
                         {.name = "sim_fail", .kind = BD_PARAM_DOUBLE, .v.d = 1.0},
                         {.name = "sim_fail", .kind = BD_PARAM_OTHER}};
    for (int i = 0; i < 4; i++) {
        err = (bd_err_t){0};
        assert_int_equal(bd_backend_sim.check_params(l.m, &bad[i], 1, &err), BD_EINVAL);
        assert_string_equal(err.msg, "parameters.sim_fail must be true or false");
    }
    unload(&l, &bd_backend_sim);
}

/* ---- main ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    bd_log_set_level(BD_LOG_ERROR);
    bd_err_t err = {0};
    ort_ok = bd_ort_init(ort_lib(), &err) == 0;
    if (!ort_ok) {
        bool gpu = ort_lib() && strstr(ort_lib(), "onnxruntime-gpu");
        print_message("note: ONNX Runtime tests will skip: %s%s\n", err.msg,
                      gpu ? " (install the GPU build with `make setup GPU=1`)" : "");
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    bd_ort_shutdown();
    return 0;
}

#define EXIT_SKIPPED 77 /* SKIP_RETURN_CODE in tests/unit/CMakeLists.txt */

int main(int argc, char **argv)
{
    /* Needs no ONNX Runtime. */
    const struct CMUnitTest base[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_config_alloc_and_dispose),
        cmocka_unit_test(test_ort_init_missing_library),
        cmocka_unit_test(test_sim_outputs_equal_inputs),
        cmocka_unit_test(test_sim_bad_configs),
        cmocka_unit_test(test_sim_latency),
        cmocka_unit_test(test_sim_fail_rate),
        cmocka_unit_test(test_sim_fail_param),
    };
    /* The onnxruntime backend against the real library and models. */
    const struct CMUnitTest ort[] = {
        cmocka_unit_test(test_ort_init_default),
        cmocka_unit_test(test_ort_identity),
        cmocka_unit_test(test_ort_simple),
        cmocka_unit_test(test_ort_simple_output_subset),
        cmocka_unit_test(test_ort_mlp_rows_independent),
        cmocka_unit_test(test_ort_mlp_small_exact),
        cmocka_unit_test(test_ort_fixed_shape),
        cmocka_unit_test(test_ort_int64_and_bool),
        cmocka_unit_test(test_ort_fp16_refused),
        cmocka_unit_test(test_ort_bad_paths),
        cmocka_unit_test(test_ort_config_mismatch),
        cmocka_unit_test(test_ort_devices),
        cmocka_unit_test(test_ort_run_errors),
        cmocka_unit_test(test_ort_two_instances),
        cmocka_unit_test(test_ort_instances_run_concurrently),
    };
    const char *group = argc > 1 ? argv[1] : "all";
    bool all = strcmp(group, "all") == 0;
    if (!all && strcmp(group, "base") != 0 && strcmp(group, "ort") != 0) {
        fprintf(stderr, "usage: test_backend [base|ort|all]\n");
        return EXIT_FAILURE;
    }
    int failed = 0;
    if (all || strcmp(group, "base") == 0) {
        failed += cmocka_run_group_tests_name("backend", base, group_setup, group_teardown);
    }
    if (all || strcmp(group, "ort") == 0) {
        failed += cmocka_run_group_tests_name("backend_ort", ort, group_setup, group_teardown);
    }
    if (failed > 0) {
        return EXIT_FAILURE;
    }
    if (n_skipped > 0) {
        print_message("test_backend: %d test(s) skipped and none failed: exit %d (skipped)\n",
                      n_skipped, EXIT_SKIPPED);
        return EXIT_SKIPPED;
    }
    return 0;
}
