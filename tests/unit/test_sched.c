/* test_sched: the scheduler in manual mode with a fake clock and a test-local fake backend
 * (no sleeping, exact batch boundaries), the same manual mode and fake clock driving the real
 * sim backend (latency 0), plus threaded tests with real workers, the fake backend made slow,
 * and the real sim backend.
 *
 * The fake backend records every run (rows, requests' data pointers) and writes
 * OUTPUT0 = 2 * INPUT0 + 1 and OUTPUT1 = INPUT1 + 100 into buffers owned by its instance,
 * so each request's outputs show exactly which rows it got back. Threads: the manual tests
 * are single-threaded; the threaded tests guard the completion log with a mutex. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/sched.h"
#include "sched/sched_internal.h"

/* ---- fake backend ---------------------------------------------------------------------- */

#define FAKE_MAX_RUNS 512

struct bd_backend_model {
    int unused;
};

struct bd_backend_instance {
    int index;
    void *out_buf[2];
    size_t out_cap[2];
};

static struct {
    atomic_int fail_next;   /* fail this many runs from now */
    atomic_int refuse_next; /* refuse this many runs' input values (BD_EINVAL) from now */
    atomic_uint advance_us; /* each run takes this long on the fake clock */
    atomic_uint sleep_us;   /* make each run slow (threaded tests) */
    atomic_int runs;
    atomic_int instances; /* live instances */
    atomic_int fail_instance_new;
    atomic_int bad_rows; /* return one row too many in OUTPUT0 */
    size_t rows[FAKE_MAX_RUNS];
    const void *in0_data[FAKE_MAX_RUNS];
    const void *in1_data[FAKE_MAX_RUNS];
    int64_t in0_cols[FAKE_MAX_RUNS];
} fake;

static bd_backend_model_t fake_model;
static _Atomic uint64_t fake_now; /* a fake backend's run may advance it (advance_us) */

static void fake_reset(void)
{
    memset(&fake, 0, sizeof fake);
}

static int fake_instance_new(bd_backend_model_t *m, int index, bd_backend_instance_t **out,
                             bd_err_t *err)
{
    (void)m;
    if (atomic_load(&fake.fail_instance_new)) {
        *out = NULL;
        return bd_err_set(err, BD_EBACKEND, "fake: instance %d refused", index);
    }
    bd_backend_instance_t *inst = calloc(1, sizeof *inst);
    assert_non_null(inst);
    inst->index = index;
    atomic_fetch_add(&fake.instances, 1);
    *out = inst;
    return 0;
}

static void fake_instance_free(bd_backend_instance_t *inst)
{
    free(inst->out_buf[0]);
    free(inst->out_buf[1]);
    free(inst);
    atomic_fetch_sub(&fake.instances, 1);
}

static int fake_run(bd_backend_instance_t *inst, const bd_tensor_t *inputs, size_t n_inputs,
                    bd_tensor_t *outputs, size_t n_outputs, const bd_backend_batch_t *batch,
                    bd_err_t *err)
{
    (void)batch;
    int run = atomic_fetch_add(&fake.runs, 1);
    if (run < FAKE_MAX_RUNS) {
        fake.rows[run] = (size_t)inputs[0].shape.dims[0];
        fake.in0_data[run] = inputs[0].data;
        fake.in1_data[run] = n_inputs > 1 ? inputs[1].data : NULL;
        fake.in0_cols[run] = inputs[0].shape.ndim > 1 ? inputs[0].shape.dims[1] : -1;
    }
    unsigned sl = atomic_load(&fake.sleep_us);
    if (sl) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)sl * 1000};
        nanosleep(&ts, NULL);
    }
    fake_now += atomic_load(&fake.advance_us);
    if (atomic_load(&fake.fail_next) > 0) {
        atomic_fetch_sub(&fake.fail_next, 1);
        return bd_err_set(err, BD_EBACKEND, "fake backend: injected failure");
    }
    if (atomic_load(&fake.refuse_next) > 0) {
        atomic_fetch_sub(&fake.refuse_next, 1);
        return bd_err_set(err, BD_EINVAL, "fake backend: injected refusal");
    }
    assert_int_equal(n_inputs, n_outputs);
    assert_string_equal(inputs[0].name, "INPUT0");
    for (size_t i = 0; i < n_inputs; i++) {
        const bd_tensor_t *in = &inputs[i];
        if (inst->out_cap[i] < in->byte_size) {
            free(inst->out_buf[i]);
            inst->out_buf[i] = malloc(in->byte_size);
            assert_non_null(inst->out_buf[i]);
            inst->out_cap[i] = in->byte_size;
        }
        outputs[i] = *in;
        outputs[i].name = i == 0 ? "OUTPUT0" : "OUTPUT1";
        outputs[i].data = inst->out_buf[i];
        if (in->dtype == BD_DT_FP32) {
            const float *x = in->data;
            float *y = inst->out_buf[i];
            for (size_t k = 0; k < in->byte_size / 4; k++) {
                y[k] = 2.0f * x[k] + 1.0f;
            }
        } else {
            const int32_t *x = in->data;
            int32_t *y = inst->out_buf[i];
            for (size_t k = 0; k < in->byte_size / 4; k++) {
                y[k] = x[k] + 100;
            }
        }
    }
    if (atomic_load(&fake.bad_rows)) {
        outputs[0].shape.dims[0] += 1;
        outputs[0].byte_size += outputs[0].byte_size / (size_t)inputs[0].shape.dims[0];
        outputs[0].data = inst->out_buf[0] = realloc(inst->out_buf[0], outputs[0].byte_size);
        inst->out_cap[0] = outputs[0].byte_size;
        assert_non_null(outputs[0].data);
    }
    return 0;
}

static const bd_backend_ops_t fake_ops = {
    .name = "fake",
    .instance_new = fake_instance_new,
    .instance_free = fake_instance_free,
    .run = fake_run,
};

/* ---- fake clock ------------------------------------------------------------------------ */

static uint64_t fake_clock_now(void *ctx)
{
    (void)ctx;
    return fake_now;
}

/* ---- model configs --------------------------------------------------------------------- */

static char n_in0[] = "INPUT0";
static char n_in1[] = "INPUT1";
static char n_out0[] = "OUTPUT0";
static char n_out1[] = "OUTPUT1";
static char n_model[] = "m";

/* A test model: what the backend reads (m) and the scheduler's policy (p). */
typedef struct {
    bd_model_config_t m;
    bd_sched_policy_t p;
} tcfg_t;

/* INPUT0 FP32 [-1] (variable, so requests of different widths exist), INPUT1 INT32 [2]. */
static bd_io_t ios_in[2];
static bd_io_t ios_out[2];

static tcfg_t make_cfg(int max_batch, uint64_t delay_us, size_t queue)
{
    ios_in[0] = (bd_io_t){.name = n_in0, .dtype = BD_DT_FP32, .dims = {1, {-1}}};
    ios_in[1] = (bd_io_t){.name = n_in1, .dtype = BD_DT_INT32, .dims = {1, {2}}};
    ios_out[0] = (bd_io_t){.name = n_out0, .dtype = BD_DT_FP32, .dims = {1, {-1}}};
    ios_out[1] = (bd_io_t){.name = n_out1, .dtype = BD_DT_INT32, .dims = {1, {2}}};
    tcfg_t cfg = {0};
    cfg.m.name = n_model;
    cfg.m.version = 1;
    cfg.m.max_batch_size = max_batch;
    cfg.p.dynamic_batching = true;
    cfg.p.max_queue_delay_us = delay_us;
    cfg.p.max_queue_size = queue;
    cfg.m.instances = 1;
    cfg.m.threads_per_instance = 1;
    cfg.m.inputs = ios_in;
    cfg.m.n_inputs = 2;
    cfg.m.outputs = ios_out;
    cfg.m.n_outputs = 2;
    return cfg;
}

/* ---- requests and the completion log --------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bd_req_t *reqs[1024];
    int n;
} done_log_t;

static done_log_t g_log = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void on_done(bd_req_t *req, void *ctx)
{
    done_log_t *log = ctx;
    pthread_mutex_lock(&log->mu);
    assert_true(log->n < 1024);
    log->reqs[log->n++] = req;
    pthread_cond_broadcast(&log->cv);
    pthread_mutex_unlock(&log->mu);
}

static void log_clear(void)
{
    pthread_mutex_lock(&g_log.mu);
    for (int i = 0; i < g_log.n; i++) {
        bd_req_free(g_log.reqs[i]);
    }
    g_log.n = 0;
    pthread_mutex_unlock(&g_log.mu);
}

/* A request with `rows` rows: INPUT0 [rows, cols] = base + k, INPUT1 [rows, 2] = ibase + k.
 * `swap` lists INPUT1 first. */
static bd_req_t *mk_req_x(size_t rows, size_t cols, float base, int32_t ibase, bool swap)
{
    bd_req_t *r = bd_req_new(0);
    assert_non_null(r);
    bd_tensor_t *in = bd_arena_calloc(&r->arena, 2, sizeof *in);
    float *x = bd_arena_alloc(&r->arena, rows * cols * sizeof(float) + 1);
    int32_t *y = bd_arena_alloc(&r->arena, rows * 2 * sizeof(int32_t));
    assert_non_null(in);
    assert_non_null(x);
    assert_non_null(y);
    for (size_t k = 0; k < rows * cols; k++) {
        x[k] = base + (float)k;
    }
    for (size_t k = 0; k < rows * 2; k++) {
        y[k] = ibase + (int32_t)k;
    }
    bd_tensor_t t0 = {.name = "INPUT0",
                      .dtype = BD_DT_FP32,
                      .shape = {2, {(int64_t)rows, (int64_t)cols}},
                      .data = x,
                      .byte_size = rows * cols * sizeof(float)};
    bd_tensor_t t1 = {.name = "INPUT1",
                      .dtype = BD_DT_INT32,
                      .shape = {2, {(int64_t)rows, 2}},
                      .data = y,
                      .byte_size = rows * 2 * sizeof(int32_t)};
    in[swap ? 1 : 0] = t0;
    in[swap ? 0 : 1] = t1;
    r->in.inputs = in;
    r->in.n_inputs = 2;
    r->done = on_done;
    r->done_ctx = &g_log;
    return r;
}

static bd_req_t *mk_req(size_t rows, size_t cols, float base, int32_t ibase)
{
    return mk_req_x(rows, cols, base, ibase, false);
}

/* A completed request's two outputs: names, datatypes, shapes [rows,cols] and [rows,2]. */
static void check_output_layout(const bd_req_t *r, size_t rows, size_t cols)
{
    assert_int_equal(r->status, 0);
    assert_string_equal(r->err.msg, "");
    assert_int_equal(r->n_outputs, 2);
    const bd_tensor_t *o0 = &r->outputs[0];
    const bd_tensor_t *o1 = &r->outputs[1];
    assert_string_equal(o0->name, "OUTPUT0");
    assert_string_equal(o1->name, "OUTPUT1");
    assert_int_equal(o0->dtype, BD_DT_FP32);
    assert_int_equal(o1->dtype, BD_DT_INT32);
    assert_int_equal(o0->shape.ndim, 2);
    assert_int_equal(o0->shape.dims[0], rows);
    assert_int_equal(o0->shape.dims[1], cols);
    assert_int_equal(o1->shape.ndim, 2);
    assert_int_equal(o1->shape.dims[0], rows);
    assert_int_equal(o1->shape.dims[1], 2);
    assert_int_equal(o0->byte_size, rows * cols * 4);
    assert_int_equal(o1->byte_size, rows * 2 * 4);
}

/* The outputs of a completed request are exactly the fake's transform of its own inputs. */
static void check_outputs(const bd_req_t *r, size_t rows, size_t cols, float base, int32_t ibase)
{
    check_output_layout(r, rows, cols);
    assert_non_null(r->out_block);
    assert_ptr_equal(r->outputs, r->out_block);
    const bd_tensor_t *o0 = &r->outputs[0];
    const bd_tensor_t *o1 = &r->outputs[1];
    const float *y0 = o0->data;
    const int32_t *y1 = o1->data;
    for (size_t k = 0; k < rows * cols; k++) {
        assert_true(y0[k] == 2.0f * (base + (float)k) + 1.0f);
    }
    for (size_t k = 0; k < rows * 2; k++) {
        assert_int_equal(y1[k], ibase + (int32_t)k + 100);
    }
}

typedef struct {
    tcfg_t cfg;
    bd_metrics_t *metrics;
    bd_model_metrics_t *mm;
    bd_sched_t *s;
} fixture_t;

/* With worker threads unless `manual`; the scheduler reads fake_now when `fake_clock`. */
static void fx_open_with(fixture_t *fx, tcfg_t cfg, bool manual, bool fake_clock)
{
    fake_reset();
    log_clear();
    fake_now = 1000;
    fx->cfg = cfg;
    fx->metrics = bd_metrics_new();
    fx->mm = bd_metrics_model(fx->metrics, "m", "1");
    bd_sched_opts_t opts = {.manual = manual, .metrics = fx->mm};
    if (fake_clock) {
        opts.clock = (bd_clock_t){.now_us = fake_clock_now, .ctx = NULL};
    }
    bd_err_t err = {0};
    fx->s = bd_sched_new(&fx->cfg.m, &fx->cfg.p, &fake_ops, &fake_model, &opts, &err);
    assert_non_null(fx->s);
}

static void fx_open(fixture_t *fx, tcfg_t cfg, bool manual)
{
    fx_open_with(fx, cfg, manual, manual);
}

static void fx_close(fixture_t *fx)
{
    bd_sched_free(fx->s);
    assert_int_equal(atomic_load(&fake.instances), 0);
    bd_metrics_free(fx->metrics);
    log_clear();
}

static void submit_ok(fixture_t *fx, bd_req_t *r)
{
    bd_err_t err = {0};
    int rc = bd_sched_submit(fx->s, r, &err);
    if (rc != 0) {
        fail_msg("submit failed: %d %s", rc, err.msg);
    }
}

static void check_counts(fixture_t *fx, uint64_t success, uint64_t rejected, uint64_t invalid,
                         uint64_t error, uint64_t items, uint64_t executions, int64_t depth)
{
    assert_int_equal(bd_metrics_get_requests(fx->mm, BD_OUTCOME_SUCCESS), success);
    assert_int_equal(bd_metrics_get_requests(fx->mm, BD_OUTCOME_REJECTED), rejected);
    assert_int_equal(bd_metrics_get_requests(fx->mm, BD_OUTCOME_INVALID), invalid);
    assert_int_equal(bd_metrics_get_requests(fx->mm, BD_OUTCOME_ERROR), error);
    assert_int_equal(bd_metrics_get_items(fx->mm), items);
    assert_int_equal(bd_metrics_get_executions(fx->mm), executions);
    assert_int_equal(bd_metrics_get_queue_depth(fx->mm), depth);
    assert_int_equal(bd_sched_queue_depth(fx->s), (size_t)depth);
}

/* ---- validation ------------------------------------------------------------------------ */

/* A model like Triton's examples: INPUT0 FP32 [16], INPUT1 FP32 [16], max_batch_size 32. */
static bd_io_t v_in[2];
static bd_io_t v_out[2];

static tcfg_t vcfg(int max_batch)
{
    v_in[0] = (bd_io_t){.name = n_in0, .dtype = BD_DT_FP32, .dims = {1, {16}}};
    v_in[1] = (bd_io_t){.name = n_in1, .dtype = BD_DT_FP32, .dims = {1, {16}}};
    v_out[0] = (bd_io_t){.name = n_out0, .dtype = BD_DT_FP32, .dims = {1, {16}}};
    v_out[1] = (bd_io_t){.name = n_out1, .dtype = BD_DT_FP32, .dims = {1, {16}}};
    tcfg_t cfg = {0};
    cfg.m.name = n_model;
    cfg.m.version = 1;
    cfg.m.max_batch_size = max_batch;
    cfg.m.inputs = v_in;
    cfg.m.n_inputs = 2;
    cfg.m.outputs = v_out;
    cfg.m.n_outputs = 2;
    return cfg;
}

static float vdata[64 * 16];

static bd_tensor_t vt(const char *name, bd_dtype_t dt, int ndim, int64_t d0, int64_t d1)
{
    bd_tensor_t t = {.name = name, .dtype = dt, .shape = {ndim, {d0, d1}}, .data = vdata};
    size_t n = ndim == 1 ? (size_t)d0 : (size_t)d0 * (size_t)d1;
    t.byte_size = n * 4;
    return t;
}

static void expect_invalid(const tcfg_t *cfg, bd_tensor_t *ins, size_t n, bd_output_req_t *outs,
                           size_t n_outs, const char *msg)
{
    bd_infer_req_t in = {.inputs = ins, .n_inputs = n, .outputs = outs, .n_outputs = n_outs};
    bd_err_t err = {0};
    size_t rows = 77;
    assert_int_equal(bd_sched_validate(&cfg->m, &in, &rows, &err), BD_EINVAL);
    assert_int_equal(err.code, BD_EINVAL);
    assert_string_equal(err.msg, msg);
    assert_int_equal(rows, 77);
}

static void test_validate_messages(void **state)
{
    (void)state;
    tcfg_t cfg = vcfg(32);
    bd_tensor_t t[3];

    t[0] = vt("INPUT0", BD_DT_INT32, 2, 1, 16);
    t[1] = vt("INPUT1", BD_DT_FP32, 2, 1, 16);
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT0': expected datatype FP32, got INT32");

    t[0] = vt("INPUT0", BD_DT_FP32, 2, 1, 15);
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT0': expected shape [-1,16], got [1,15]");
    t[0] = vt("INPUT0", BD_DT_FP32, 1, 16, 0);
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT0': expected shape [-1,16], got [16]");

    t[0] = vt("FOO", BD_DT_FP32, 2, 1, 16);
    expect_invalid(&cfg, t, 2, NULL, 0,
                   "unknown input 'FOO'; the model's inputs are INPUT0, INPUT1");

    t[0] = vt("INPUT0", BD_DT_FP32, 2, 1, 16);
    expect_invalid(&cfg, t, 1, NULL, 0, "missing input 'INPUT1'");
    expect_invalid(&cfg, &t[1], 1, NULL, 0, "missing input 'INPUT0'");

    t[2] = vt("INPUT0", BD_DT_FP32, 2, 1, 16);
    expect_invalid(&cfg, t, 3, NULL, 0, "input 'INPUT0' is given more than once");

    t[0] = vt("INPUT0", BD_DT_FP32, 2, 40, 16);
    t[1] = vt("INPUT1", BD_DT_FP32, 2, 40, 16);
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT0': batch size 40 exceeds max_batch_size 32");

    t[0] = vt("INPUT0", BD_DT_FP32, 2, 0, 16);
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT0': batch size must be at least 1, got 0");

    t[0] = vt("INPUT0", BD_DT_FP32, 2, 2, 16);
    t[1] = vt("INPUT1", BD_DT_FP32, 2, 3, 16);
    expect_invalid(&cfg, t, 2, NULL, 0,
                   "inputs disagree on the batch size: 'INPUT0' has 2 rows, 'INPUT1' has 3");

    t[1] = vt("INPUT1", BD_DT_FP32, 2, 2, 16);
    t[1].byte_size -= 4;
    expect_invalid(&cfg, t, 2, NULL, 0,
                   "input 'INPUT1': expected 128 bytes of data for shape [2,16], got 124");
    t[1].byte_size += 4;
    t[1].data = NULL;
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT1': the tensor has no data");
    t[1].data = vdata;

    bd_output_req_t outs[2] = {{.name = "OUTPUT1"}, {.name = "X"}};
    expect_invalid(&cfg, t, 2, outs, 2,
                   "unknown output 'X'; the model's outputs are OUTPUT0, OUTPUT1");

    /* Valid: inputs in any order, known outputs; rows is the batch dim. */
    bd_tensor_t ok[2] = {vt("INPUT1", BD_DT_FP32, 2, 2, 16), vt("INPUT0", BD_DT_FP32, 2, 2, 16)};
    bd_infer_req_t in = {.inputs = ok, .n_inputs = 2, .outputs = outs, .n_outputs = 1};
    size_t rows = 0;
    bd_err_t err = {0};
    assert_int_equal(bd_sched_validate(&cfg.m, &in, &rows, &err), 0);
    assert_int_equal(rows, 2);
}

static void test_validate_without_batch_dim(void **state)
{
    (void)state;
    tcfg_t cfg = vcfg(0);
    v_in[0].dims = (bd_shape_t){2, {-1, 16}};
    v_in[1].dims = (bd_shape_t){2, {4, 16}};
    bd_tensor_t t[2] = {vt("INPUT0", BD_DT_FP32, 2, 7, 16), vt("INPUT1", BD_DT_FP32, 2, 4, 16)};
    bd_infer_req_t in = {.inputs = t, .n_inputs = 2};
    size_t rows = 0;
    bd_err_t err = {0};
    /* -1 matches anything; rows is 1 without a batch dim. */
    assert_int_equal(bd_sched_validate(&cfg.m, &in, &rows, &err), 0);
    assert_int_equal(rows, 1);

    t[1] = vt("INPUT1", BD_DT_FP32, 2, 1, 16);
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT1': expected shape [4,16], got [1,16]");
    t[1] = vt("INPUT1", BD_DT_FP32, 1, 64, 0);
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT1': expected shape [4,16], got [64]");
    /* A negative request dim never matches, not even a -1 model dim. */
    t[1] = vt("INPUT1", BD_DT_FP32, 2, 4, 16);
    t[0] = vt("INPUT0", BD_DT_FP32, 2, 1, 16);
    t[0].shape.dims[0] = -1;
    expect_invalid(&cfg, t, 2, NULL, 0, "input 'INPUT0': expected shape [-1,16], got [-1,16]");

    /* A zero dim empties the tensor whatever its other dims, for every datatype: [2^62,0]
     * FP32 was "too large" (2^62 * 4 bytes overflowed before the 0) while BOOL passed. */
    v_in[0].dims = (bd_shape_t){2, {-1, -1}};
    t[0] = vt("INPUT0", BD_DT_FP32, 2, INT64_C(1) << 62, 0);
    t[0].byte_size = 0;
    assert_int_equal(bd_sched_validate(&cfg.m, &in, &rows, &err), 0);
    t[0].shape.dims[1] = INT64_C(1) << 62;
    expect_invalid(&cfg, t, 2, NULL, 0,
                   "input 'INPUT0': shape [4611686018427387904,4611686018427387904] is too large");
}

static void test_submit_invalid_counts_and_keeps_ownership(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 100, 16), true);
    bd_req_t *r = mk_req(1, 3, 0, 0);
    r->in.inputs[1].dtype = BD_DT_FP32;
    bd_err_t err = {0};
    assert_int_equal(bd_sched_submit(fx.s, r, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'INPUT1': expected datatype INT32, got FP32");
    check_counts(&fx, 0, 0, 1, 0, 0, 0, 0);
    bd_req_free(r);
    fx_close(&fx);
    assert_int_equal(g_log.n, 0);
}

/* ---- batch forming --------------------------------------------------------------------- */

static void test_step_empty_and_bad_instance(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 100, 16), true);
    uint64_t wake = 5;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, UINT64_MAX);
    assert_int_equal(bd_sched_step(fx.s, 1, &wake), BD_EINVAL);
    assert_int_equal(bd_sched_step(fx.s, -1, &wake), BD_EINVAL);
    fx_close(&fx);
}

static void test_delay_is_honoured_then_fifo_batch(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 100, 16), true);
    fake_now = 1000;
    bd_req_t *a = mk_req(1, 3, 10, 1);
    submit_ok(&fx, a);
    fake_now = 1010;
    bd_req_t *b = mk_req(2, 3, 20, 2);
    submit_ok(&fx, b);
    assert_int_equal(a->arrival_us, 1000);
    assert_int_equal(b->arrival_us, 1010);
    assert_int_equal(a->rows, 1);
    assert_int_equal(b->rows, 2);
    check_counts(&fx, 0, 0, 0, 0, 0, 0, 2);

    uint64_t wake = 0;
    fake_now = 1050;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, 1100); /* the oldest's arrival + delay */
    fake_now = 1099;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, 1100);
    assert_int_equal(atomic_load(&fake.runs), 0);

    fake_now = 1100;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(atomic_load(&fake.runs), 1);
    assert_int_equal(fake.rows[0], 3);
    assert_int_equal(g_log.n, 2);
    assert_ptr_equal(g_log.reqs[0], a);
    assert_ptr_equal(g_log.reqs[1], b);
    check_outputs(a, 1, 3, 10, 1);
    check_outputs(b, 2, 3, 20, 2);
    assert_int_equal(a->start_us, 1100);
    assert_int_equal(a->end_us, 1100);
    check_counts(&fx, 2, 0, 0, 0, 3, 1, 0);

    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, UINT64_MAX);
    fx_close(&fx);
}

static void test_full_batch_runs_at_once(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(4, 1000000, 16), true);
    submit_ok(&fx, mk_req(1, 2, 0, 0));
    submit_ok(&fx, mk_req(3, 2, 100, 10));
    submit_ok(&fx, mk_req(1, 2, 200, 20)); /* would make 5: next batch */
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(fake.rows[0], 4);
    assert_int_equal(g_log.n, 2);
    check_outputs(g_log.reqs[0], 1, 2, 0, 0);
    check_outputs(g_log.reqs[1], 3, 2, 100, 10);
    /* The third is alone and young: it waits for its own delay. */
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, 1000 + 1000000);
    check_counts(&fx, 2, 0, 0, 0, 4, 1, 1);
    fake_now = 1000 + 1000000;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    check_outputs(g_log.reqs[2], 1, 2, 200, 20);
    check_counts(&fx, 3, 0, 0, 0, 5, 2, 0);
    fx_close(&fx);
}

static void test_zero_delay_takes_whatever_is_queued(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 0, 16), true);
    submit_ok(&fx, mk_req(1, 2, 0, 0));
    submit_ok(&fx, mk_req(1, 2, 5, 5));
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(fake.rows[0], 2);
    check_counts(&fx, 2, 0, 0, 0, 2, 1, 0);
    fx_close(&fx);
}

static void test_different_item_dims_never_mixed(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 100, 16), true);
    bd_req_t *a = mk_req(1, 3, 0, 0);
    bd_req_t *b = mk_req(2, 5, 50, 50);
    bd_req_t *c = mk_req(2, 3, 100, 100);
    bd_req_t *d = mk_req(1, 5, 150, 150);
    submit_ok(&fx, a);
    submit_ok(&fx, b);
    submit_ok(&fx, c);
    submit_ok(&fx, d);
    uint64_t wake = 0;
    fake_now = 1100;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(fake.rows[0], 3);
    assert_int_equal(fake.in0_cols[0], 3);
    assert_ptr_equal(g_log.reqs[0], a);
    assert_ptr_equal(g_log.reqs[1], c);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(fake.rows[1], 3);
    assert_int_equal(fake.in0_cols[1], 5);
    assert_ptr_equal(g_log.reqs[2], b);
    assert_ptr_equal(g_log.reqs[3], d);
    check_outputs(a, 1, 3, 0, 0);
    check_outputs(b, 2, 5, 50, 50);
    check_outputs(c, 2, 3, 100, 100);
    check_outputs(d, 1, 5, 150, 150);
    check_counts(&fx, 4, 0, 0, 0, 6, 2, 0);
    fx_close(&fx);
}

static void test_request_too_big_for_the_room_waits(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(4, 100, 16), true);
    bd_req_t *a = mk_req(3, 1, 0, 0);
    bd_req_t *b = mk_req(2, 1, 10, 10);
    bd_req_t *c = mk_req(1, 1, 20, 20);
    submit_ok(&fx, a);
    fake_now = 1001;
    submit_ok(&fx, b);
    fake_now = 1002;
    submit_ok(&fx, c);
    uint64_t wake = 0;
    /* b does not fit beside a, so a's batch cannot grow: it runs at once, without c. */
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(fake.rows[0], 3);
    assert_ptr_equal(g_log.reqs[0], a);
    /* b + c = 3 rows, under-full: wait for b's delay (from b's arrival). */
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, 1101);
    fake_now = 1101;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(fake.rows[1], 3);
    check_outputs(b, 2, 1, 10, 10);
    check_outputs(c, 1, 1, 20, 20);
    check_counts(&fx, 3, 0, 0, 0, 6, 2, 0);
    fx_close(&fx);
}

static void test_scatter_multi_row_requests(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(16, 0, 16), true);
    bd_req_t *r[4] = {mk_req(2, 4, 0, 0), mk_req(1, 4, 1000, 1000),
                      mk_req_x(5, 4, 2000, 2000, true), mk_req(3, 4, 3000, 3000)};
    for (int i = 0; i < 4; i++) {
        submit_ok(&fx, r[i]);
    }
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 4);
    assert_int_equal(fake.rows[0], 11);
    check_outputs(r[0], 2, 4, 0, 0);
    check_outputs(r[1], 1, 4, 1000, 1000);
    check_outputs(r[2], 5, 4, 2000, 2000);
    check_outputs(r[3], 3, 4, 3000, 3000);
    /* The output block is the request's own: outputs point inside it. */
    const unsigned char *blk = r[2]->out_block;
    assert_true((const unsigned char *)r[2]->outputs[1].data > blk);
    check_counts(&fx, 4, 0, 0, 0, 11, 1, 0);
    fx_close(&fx);
}

/* A request that lists its outputs gets the bytes of those alone; the others keep their shape
 * with no bytes. One that lists none, in the same batch, gets them all. */
static void test_scatter_copies_only_requested_outputs(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 0, 16), true);
    bd_req_t *a = mk_req(2, 4, 0, 0);
    bd_req_t *b = mk_req(3, 4, 500, 500);
    bd_output_req_t *want = bd_arena_calloc(&a->arena, 1, sizeof *want);
    assert_non_null(want);
    want->name = "OUTPUT1";
    a->in.outputs = want;
    a->in.n_outputs = 1;
    submit_ok(&fx, a);
    submit_ok(&fx, b);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(a->status, 0);
    assert_int_equal(a->n_outputs, 2);
    assert_string_equal(a->outputs[0].name, "OUTPUT0");
    assert_int_equal(a->outputs[0].shape.dims[0], 2);
    assert_int_equal(a->outputs[0].shape.dims[1], 4);
    assert_int_equal(a->outputs[0].byte_size, 0);
    assert_int_equal(a->outputs[1].byte_size, 2 * 2 * 4);
    const int32_t *y1 = a->outputs[1].data;
    for (int k = 0; k < 4; k++) {
        assert_int_equal(y1[k], k + 100);
    }
    check_outputs(b, 3, 4, 500, 500);
    fx_close(&fx);
}

static void test_single_request_is_not_copied_and_buffers_are_reused(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 0, 16), true);
    bd_req_t *a = mk_req(2, 3, 0, 0);
    submit_ok(&fx, a);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_ptr_equal(fake.in0_data[0], a->in.inputs[0].data);
    assert_ptr_equal(fake.in1_data[0], a->in.inputs[1].data);

    /* Two batches of two: gathered into the instance's buffer, the same one both times
     * (INPUT1 has fixed dims, so its buffer was allocated once for 8 rows). */
    for (int round = 0; round < 2; round++) {
        submit_ok(&fx, mk_req(1, 3, 10, 10));
        submit_ok(&fx, mk_req(4, 3, 20, 20));
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    }
    assert_int_equal(atomic_load(&fake.runs), 3);
    assert_ptr_not_equal(fake.in1_data[1], g_log.reqs[1]->in.inputs[1].data);
    assert_ptr_equal(fake.in1_data[1], fake.in1_data[2]);
    assert_ptr_equal(fake.in0_data[1], fake.in0_data[2]);
    check_outputs(g_log.reqs[3], 1, 3, 10, 10);
    check_outputs(g_log.reqs[4], 4, 3, 20, 20);
    check_counts(&fx, 5, 0, 0, 0, 12, 3, 0);
    fx_close(&fx);
}

static void test_batching_off_runs_each_request_alone(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 1000, 16);
    cfg.p.dynamic_batching = false;
    fx_open(&fx, cfg, true);
    submit_ok(&fx, mk_req(2, 3, 0, 0));
    submit_ok(&fx, mk_req(1, 3, 10, 10));
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(fake.rows[0], 2);
    assert_int_equal(fake.rows[1], 1);
    check_outputs(g_log.reqs[0], 2, 3, 0, 0);
    check_outputs(g_log.reqs[1], 1, 3, 10, 10);
    check_counts(&fx, 2, 0, 0, 0, 3, 2, 0);
    fx_close(&fx);
}

static void test_no_batch_dim_runs_each_request_alone(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(0, 1000, 16);
    fx_open(&fx, cfg, true);
    ios_in[0].dims = (bd_shape_t){2, {-1, -1}};
    ios_in[1].dims = (bd_shape_t){2, {-1, 2}};
    ios_out[0].dims = ios_in[0].dims;
    ios_out[1].dims = ios_in[1].dims;
    bd_req_t *a = mk_req(3, 2, 0, 0);
    bd_req_t *b = mk_req(1, 2, 7, 7);
    submit_ok(&fx, a);
    submit_ok(&fx, b);
    assert_int_equal(a->rows, 1);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    /* Outputs keep the backend's own shape (no batch dim to rewrite). */
    check_outputs(a, 3, 2, 0, 0);
    check_outputs(b, 1, 2, 7, 7);
    check_counts(&fx, 2, 0, 0, 0, 2, 2, 0);
    fx_close(&fx);
}

static void test_queue_full_is_rejected(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 100, 3), true);
    for (int i = 0; i < 3; i++) {
        submit_ok(&fx, mk_req(1, 1, (float)i, i));
    }
    bd_req_t *extra = mk_req(1, 1, 9, 9);
    bd_err_t err = {0};
    assert_int_equal(bd_sched_submit(fx.s, extra, &err), BD_EFULL);
    assert_int_equal(err.code, BD_EFULL);
    assert_string_equal(err.msg, "model 'm' version 1: queue is full (3 requests); retry later");
    check_counts(&fx, 0, 1, 0, 0, 0, 0, 3);
    /* Room again once a batch left the queue. */
    fake_now = 1100;
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 3);
    submit_ok(&fx, extra);
    check_counts(&fx, 3, 1, 0, 0, 3, 1, 1);
    fx_close(&fx); /* drains the last one */
    assert_int_equal(g_log.n, 0);
}

static void test_closed_rejects_and_drains_at_once(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 1000000, 16), true);
    bd_req_t *a = mk_req(1, 2, 1, 1);
    submit_ok(&fx, a);
    bd_sched_close(fx.s);
    bd_req_t *b = mk_req(1, 2, 2, 2);
    bd_err_t err = {0};
    assert_int_equal(bd_sched_submit(fx.s, b, &err), BD_ESHUTDOWN);
    assert_string_equal(err.msg, "model 'm' version 1 is shutting down and accepts no new "
                                 "requests");
    bd_req_free(b);
    check_counts(&fx, 0, 1, 0, 0, 0, 0, 1);
    /* Closed: the under-full batch does not wait for its delay. */
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    check_outputs(a, 1, 2, 1, 1);
    check_counts(&fx, 1, 1, 0, 0, 1, 1, 0);
    fx_close(&fx);
}

static void test_free_drains_queue_in_manual_mode(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(2, 1000000, 16), true);
    for (int i = 0; i < 5; i++) {
        submit_ok(&fx, mk_req(1, 2, (float)(10 * i), i));
    }
    bd_model_metrics_t *mm = fx.mm;
    bd_sched_free(fx.s);
    assert_int_equal(g_log.n, 5);
    for (int i = 0; i < 5; i++) {
        check_outputs(g_log.reqs[i], 1, 2, (float)(10 * i), i);
    }
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_SUCCESS), 5);
    assert_int_equal(bd_metrics_get_executions(mm), 3);
    assert_int_equal(bd_metrics_get_queue_depth(mm), 0);
    assert_int_equal(atomic_load(&fake.instances), 0);
    bd_metrics_free(fx.metrics);
    log_clear();
}

static void test_backend_failure_fails_the_whole_batch(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 0, 16), true);
    bd_req_t *a = mk_req(1, 2, 0, 0);
    bd_req_t *b = mk_req(2, 2, 0, 0);
    submit_ok(&fx, a);
    submit_ok(&fx, b);
    atomic_store(&fake.fail_next, 1);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(g_log.n, 2);
    for (int i = 0; i < 2; i++) {
        bd_req_t *r = g_log.reqs[i];
        assert_int_equal(r->status, BD_EBACKEND);
        assert_int_equal(r->err.code, BD_EBACKEND);
        assert_string_equal(r->err.msg, "fake backend: injected failure");
        assert_null(r->out_block);
        assert_int_equal(r->n_outputs, 0);
    }
    check_counts(&fx, 0, 0, 0, 2, 0, 0, 0);
    /* The next batch is fine again. */
    bd_req_t *c = mk_req(1, 2, 3, 3);
    submit_ok(&fx, c);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    check_outputs(c, 1, 2, 3, 3);
    check_counts(&fx, 1, 0, 0, 2, 1, 1, 0);
    fx_close(&fx);
}

static void test_backend_output_of_wrong_rows_is_a_backend_error(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 0, 16), true);
    submit_ok(&fx, mk_req(1, 2, 0, 0));
    submit_ok(&fx, mk_req(2, 2, 0, 0));
    atomic_store(&fake.bad_rows, 1);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(g_log.reqs[i]->status, BD_EBACKEND);
        assert_string_equal(g_log.reqs[i]->err.msg, "the backend returned output 'OUTPUT0' with "
                                                    "shape [4,2] for a batch of 3 rows");
    }
    check_counts(&fx, 0, 0, 0, 2, 0, 0, 0);
    fx_close(&fx);
}

/* The scheduler holds no lock across a completion: a callback may submit again. */
static bd_sched_t *resubmit_to;
static int resubmits;

static void on_done_resubmit(bd_req_t *req, void *ctx)
{
    on_done(req, ctx);
    if (resubmits < 2) {
        resubmits++;
        bd_req_t *r = mk_req(1, 1, (float)resubmits, resubmits);
        r->done = on_done_resubmit;
        bd_err_t err = {0};
        assert_int_equal(bd_sched_submit(resubmit_to, r, &err), 0);
        assert_int_equal(bd_sched_queue_depth(resubmit_to), 1);
    }
}

static void test_done_callback_may_submit(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 0, 16), true);
    resubmit_to = fx.s;
    resubmits = 0;
    bd_req_t *a = mk_req(1, 1, 0, 0);
    a->done = on_done_resubmit;
    submit_ok(&fx, a);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(g_log.n, 3);
    check_outputs(g_log.reqs[1], 1, 1, 1, 1);
    check_outputs(g_log.reqs[2], 1, 1, 2, 2);
    fx_close(&fx);
}

static void test_validate_null_names_do_not_crash(void **state)
{
    (void)state;
    tcfg_t cfg = vcfg(32);
    bd_tensor_t t[2] = {vt("INPUT0", BD_DT_FP32, 2, 1, 16), vt(NULL, BD_DT_FP32, 2, 1, 16)};
    expect_invalid(&cfg, t, 2, NULL, 0, "unknown input ''; the model's inputs are INPUT0, INPUT1");
    bd_output_req_t outs[1] = {{.name = NULL}};
    t[1].name = "INPUT1";
    expect_invalid(&cfg, t, 2, outs, 1,
                   "unknown output ''; the model's outputs are OUTPUT0, OUTPUT1");
    bd_infer_req_t in = {.inputs = NULL, .n_inputs = 2};
    bd_err_t err = {0};
    assert_int_equal(bd_sched_validate(&cfg.m, &in, NULL, &err), BD_EINVAL);
    assert_string_equal(err.msg, "the request's input or output list is missing");
}

static void test_instance_failure_fails_new(void **state)
{
    (void)state;
    fake_reset();
    atomic_store(&fake.fail_instance_new, 1);
    tcfg_t cfg = make_cfg(8, 0, 16);
    bd_sched_opts_t opts = {.manual = false};
    bd_err_t err = {0};
    assert_null(bd_sched_new(&cfg.m, &cfg.p, &fake_ops, &fake_model, &opts, &err));
    assert_string_equal(err.msg, "model 'm' instance 0: fake: instance 0 refused");
    fake_reset();
}

static void test_preferred_sizes_need_batching(void **state)
{
    (void)state;
    fake_reset();
    tcfg_t cfg = make_cfg(4, 0, 16);
    cfg.p.preferred_batch_sizes[0] = 8;
    cfg.p.n_preferred_batch_sizes = 1;
    bd_sched_opts_t opts = {.manual = false};
    bd_err_t err = {0};
    assert_null(bd_sched_new(&cfg.m, &cfg.p, &fake_ops, &fake_model, &opts, &err));
    assert_string_equal(err.msg, "config.json: 'dynamic_batching.preferred_batch_sizes' has 8, "
                                 "above max_batch_size 4; expected sizes from 1 to 4");
    /* No batch dim: any preferred size is one the model can never form. */
    cfg.m.max_batch_size = 0;
    cfg.p.preferred_batch_sizes[0] = 1;
    err = (bd_err_t){0};
    assert_null(bd_sched_new(&cfg.m, &cfg.p, &fake_ops, &fake_model, &opts, &err));
    assert_string_equal(err.msg, "config.json: 'dynamic_batching.preferred_batch_sizes' has 1, "
                                 "but max_batch_size is 0 (no batch dim, no batching); remove it");
}

static void test_dims_past_memory_are_refused(void **state)
{
    (void)state;
    fake_reset();
    tcfg_t cfg = make_cfg(4, 0, 16);
    ios_in[0].dims = (bd_shape_t){3, {1 << 30, 1 << 30, 1 << 30}};
    bd_sched_opts_t opts = {.manual = false};
    bd_err_t err = {0};
    assert_null(bd_sched_new(&cfg.m, &cfg.p, &fake_ops, &fake_model, &opts, &err));
    assert_string_equal(err.msg, "model 'm': input 'INPUT0' has dims "
                                 "[1073741824,1073741824,1073741824], more bytes a row than "
                                 "memory can address; no request could carry one");
}

static void test_metrics_durations_recorded(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 300, 16), true);
    submit_ok(&fx, mk_req(1, 1, 0, 0)); /* arrives at 1000 */
    fake_now = 1300;
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    bd_buf_t b;
    bd_buf_init(&b);
    bd_metrics_render(fx.metrics, &b);
    assert_non_null(strstr(b.data, "batchd_queue_duration_seconds_bucket{model=\"m\",version="
                                   "\"1\",le=\"0.00025\"} 0\n"));
    assert_non_null(strstr(b.data, "batchd_queue_duration_seconds_bucket{model=\"m\",version="
                                   "\"1\",le=\"0.0005\"} 1\n"));
    assert_non_null(
        strstr(b.data, "batchd_queue_duration_seconds_sum{model=\"m\",version=\"1\"} 0.000300\n"));
    assert_non_null(strstr(
        b.data, "batchd_request_duration_seconds_sum{model=\"m\",version=\"1\"} 0.000300\n"));
    assert_non_null(
        strstr(b.data, "batchd_batch_size_bucket{model=\"m\",version=\"1\",le=\"1\"} 1\n"));
    bd_buf_dispose(&b);
    fx_close(&fx);
}

/* ---- manual mode with the real sim backend ---------------------------------------------- */

/* The real bd_backend_sim (latency 0, so it never sleeps) under the fake clock: the batch
 * boundaries and times are exact, and since the sim copies input i to output i, each
 * request's outputs must be exactly its own inputs. */
typedef struct {
    fixture_t fx;
    bd_backend_model_t *bm;
} sim_fixture_t;

static void sim_open(sim_fixture_t *sf, int max_batch, uint64_t delay_us, size_t queue)
{
    fake_reset();
    log_clear();
    fake_now = 1000;
    fixture_t *fx = &sf->fx;
    fx->cfg = make_cfg(max_batch, delay_us, queue);
    strcpy(fx->cfg.m.backend, "sim");
    fx->cfg.m.sim.latency_us = 0;
    fx->cfg.m.sim.per_item_us = 0;
    bd_err_t err = {0};
    sf->bm = NULL;
    if (bd_backend_sim.load(&fx->cfg.m, &sf->bm, &err) != 0) {
        fail_msg("sim load: %s", err.msg);
    }
    fx->metrics = bd_metrics_new();
    fx->mm = bd_metrics_model(fx->metrics, "m", "1");
    bd_sched_opts_t opts = {
        .manual = true, .metrics = fx->mm, .clock = {.now_us = fake_clock_now, .ctx = NULL}};
    fx->s = bd_sched_new(&fx->cfg.m, &fx->cfg.p, &bd_backend_sim, sf->bm, &opts, &err);
    if (!fx->s) {
        fail_msg("sched: %s", err.msg);
    }
}

static void sim_close(sim_fixture_t *sf)
{
    bd_sched_free(sf->fx.s);
    bd_backend_sim.unload(sf->bm);
    bd_metrics_free(sf->fx.metrics);
    log_clear();
}

/* The outputs of a completed request are exactly its inputs (mk_req's values), in config
 * order under the output names, in its own block (not aliasing the request's inputs). */
static void check_sim_outputs(const bd_req_t *r, size_t rows, size_t cols, float base,
                              int32_t ibase)
{
    check_output_layout(r, rows, cols);
    assert_int_equal(r->rows, rows);
    const bd_tensor_t *o0 = &r->outputs[0];
    const bd_tensor_t *o1 = &r->outputs[1];
    const unsigned char *blk = r->out_block;
    assert_true((const unsigned char *)o0->data >= blk);
    assert_true((const unsigned char *)o1->data >= blk);
    const float *y0 = o0->data;
    const int32_t *y1 = o1->data;
    for (size_t k = 0; k < rows * cols; k++) {
        if (y0[k] != base + (float)k) {
            fail_msg("OUTPUT0[%zu] is %g; expected %g", k, (double)y0[k],
                     (double)(base + (float)k));
        }
    }
    for (size_t k = 0; k < rows * 2; k++) {
        assert_int_equal(y1[k], ibase + (int32_t)k);
    }
}

static void test_sim_manual_delay_exact_wake(void **state)
{
    (void)state;
    sim_fixture_t sf;
    sim_open(&sf, 8, 250, 16);
    fixture_t *fx = &sf.fx;
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, UINT64_MAX);

    fake_now = 1000;
    bd_req_t *a = mk_req(1, 4, 1.5f, 10);
    submit_ok(fx, a);
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, 1250);

    /* A later arrival neither resets nor extends the oldest's deadline. */
    fake_now = 1200;
    bd_req_t *b = mk_req(2, 4, 100.0f, 20);
    submit_ok(fx, b);
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, 1250);
    fake_now = 1249;
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, 1250);
    assert_int_equal(g_log.n, 0);
    check_counts(fx, 0, 0, 0, 0, 0, 0, 2);

    fake_now = 1250;
    wake = 0;
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 2);
    assert_int_equal(g_log.n, 2);
    assert_ptr_equal(g_log.reqs[0], a);
    assert_ptr_equal(g_log.reqs[1], b);
    check_sim_outputs(a, 1, 4, 1.5f, 10);
    check_sim_outputs(b, 2, 4, 100.0f, 20);
    assert_int_equal(a->arrival_us, 1000);
    assert_int_equal(b->arrival_us, 1200);
    assert_int_equal(a->start_us, 1250);
    assert_int_equal(b->start_us, 1250);
    assert_int_equal(a->end_us, 1250);
    check_counts(fx, 2, 0, 0, 0, 3, 1, 0);

    /* Alone again: the next request's deadline counts from its own arrival. */
    fake_now = 5000;
    bd_req_t *c = mk_req(3, 4, -7.0f, 30);
    submit_ok(fx, c);
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, 5250);
    fake_now = 5250;
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 1);
    check_sim_outputs(c, 3, 4, -7.0f, 30);
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, UINT64_MAX);
    check_counts(fx, 3, 0, 0, 0, 6, 2, 0);
    sim_close(&sf);
}

static void test_sim_manual_mixed_rows_each_gets_its_own(void **state)
{
    (void)state;
    sim_fixture_t sf;
    sim_open(&sf, 8, 100, 16);
    fixture_t *fx = &sf.fx;
    /* a, b, d share item dims [3] and fill the batch to exactly 8 rows, so it runs without
     * waiting; c ([5]) is skipped and keeps its place; b lists INPUT1 first. */
    bd_req_t *a = mk_req(1, 3, 0.0f, 0);
    bd_req_t *b = mk_req_x(3, 3, 1000.0f, 1000, true);
    bd_req_t *c = mk_req(2, 5, 2000.0f, 2000);
    bd_req_t *d = mk_req(4, 3, 3000.0f, 3000);
    submit_ok(fx, a);
    submit_ok(fx, b);
    submit_ok(fx, c);
    submit_ok(fx, d);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 3);
    assert_int_equal(g_log.n, 3);
    assert_ptr_equal(g_log.reqs[0], a);
    assert_ptr_equal(g_log.reqs[1], b);
    assert_ptr_equal(g_log.reqs[2], d);
    check_sim_outputs(a, 1, 3, 0.0f, 0);
    check_sim_outputs(b, 3, 3, 1000.0f, 1000);
    check_sim_outputs(d, 4, 3, 3000.0f, 3000);
    check_counts(fx, 3, 0, 0, 0, 8, 1, 1);

    /* c alone waits for its delay, then comes back whole. */
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, 1100);
    fake_now = 1100;
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 1);
    assert_ptr_equal(g_log.reqs[3], c);
    check_sim_outputs(c, 2, 5, 2000.0f, 2000);
    check_counts(fx, 4, 0, 0, 0, 10, 2, 0);
    sim_close(&sf);
}

static void test_sim_manual_fifo_across_batches(void **state)
{
    (void)state;
    sim_fixture_t sf;
    sim_open(&sf, 4, 0, 16);
    fixture_t *fx = &sf.fx;
    /* Rows 2,1 | 2,1 | 3,1: each batch stops at the first request that would not fit. */
    static const size_t rows[6] = {2, 1, 2, 1, 3, 1};
    bd_req_t *r[6];
    for (int i = 0; i < 6; i++) {
        fake_now = 1000 + (uint64_t)i;
        r[i] = mk_req(rows[i], 2, (float)(i * 100), i * 1000);
        submit_ok(fx, r[i]);
    }
    check_counts(fx, 0, 0, 0, 0, 0, 0, 6);
    uint64_t wake = 0;
    fake_now = 2000;
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 2);
    assert_int_equal(bd_metrics_get_queue_depth(fx->mm), 4);
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 2);
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 2);
    assert_int_equal(bd_sched_step(fx->s, 0, &wake), 0);
    assert_int_equal(wake, UINT64_MAX);
    assert_int_equal(g_log.n, 6);
    for (int i = 0; i < 6; i++) {
        assert_ptr_equal(g_log.reqs[i], r[i]);
        check_sim_outputs(r[i], rows[i], 2, (float)(i * 100), i * 1000);
        assert_int_equal(r[i]->arrival_us, 1000 + (uint64_t)i);
        assert_int_equal(r[i]->start_us, 2000);
    }
    check_counts(fx, 6, 0, 0, 0, 10, 3, 0);
    sim_close(&sf);
}

/* ---- threaded -------------------------------------------------------------------------- */

#define T_THREADS 4
#define T_PER_THREAD 50

typedef struct {
    bd_sched_t *s;
    int thread;
    int failed;
} submitter_t;

static void *submitter_main(void *arg)
{
    submitter_t *st = arg;
    for (int i = 0; i < T_PER_THREAD; i++) {
        int id = st->thread * T_PER_THREAD + i;
        bd_req_t *r = mk_req(1 + (size_t)(id % 3), 4, (float)(id * 100), id * 100);
        bd_err_t err = {0};
        if (bd_sched_submit(st->s, r, &err) != 0) {
            st->failed++;
            bd_req_free(r);
        }
    }
    return NULL;
}

static void wait_for_done(int n)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&g_log.mu);
    while (g_log.n < n) {
        if (pthread_cond_timedwait(&g_log.cv, &g_log.mu, &deadline) != 0) {
            break;
        }
    }
    int got = g_log.n;
    pthread_mutex_unlock(&g_log.mu);
    assert_int_equal(got, n);
}

/* Each completed request's outputs match its own inputs (its id is in its INPUT1). */
static void check_threaded_outputs(int n)
{
    bool seen[T_THREADS * T_PER_THREAD] = {false};
    for (int i = 0; i < n; i++) {
        bd_req_t *r = g_log.reqs[i];
        int32_t id = ((const int32_t *)r->in.inputs[1].data)[0] / 100;
        assert_true(id >= 0 && id < T_THREADS * T_PER_THREAD);
        assert_false(seen[id]);
        seen[id] = true;
        check_outputs(r, 1 + (size_t)(id % 3), 4, (float)(id * 100), id * 100);
    }
}

static void run_threaded(int instances, unsigned sleep_us, bool free_early)
{
    fixture_t fx;
    tcfg_t cfg = make_cfg(16, 2000, 1024);
    cfg.m.instances = instances;
    fx_open(&fx, cfg, false);
    atomic_store(&fake.sleep_us, sleep_us);
    submitter_t st[T_THREADS];
    pthread_t t[T_THREADS];
    for (int i = 0; i < T_THREADS; i++) {
        st[i] = (submitter_t){.s = fx.s, .thread = i};
        assert_int_equal(pthread_create(&t[i], NULL, submitter_main, &st[i]), 0);
    }
    for (int i = 0; i < T_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(st[i].failed, 0);
    }
    int total = T_THREADS * T_PER_THREAD;
    if (free_early) {
        /* bd_sched_free must finish everything queued before it returns. */
        bd_model_metrics_t *mm = fx.mm;
        bd_sched_free(fx.s);
        assert_int_equal(g_log.n, total);
        assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_SUCCESS), (uint64_t)total);
        assert_int_equal(bd_metrics_get_queue_depth(mm), 0);
        check_threaded_outputs(total);
        bd_metrics_free(fx.metrics);
        log_clear();
        return;
    }
    wait_for_done(total);
    check_threaded_outputs(total);
    int runs = atomic_load(&fake.runs);
    assert_true(runs < total);
    assert_int_equal(bd_metrics_get_executions(fx.mm), (uint64_t)runs);
    assert_int_equal(bd_metrics_get_requests(fx.mm, BD_OUTCOME_SUCCESS), (uint64_t)total);
    /* ids 0..199: rows 1 + id % 3 -> 67*1 + 67*2 + 66*3 = 399 */
    assert_int_equal(bd_metrics_get_items(fx.mm), 399);
    assert_int_equal(bd_metrics_get_queue_depth(fx.mm), 0);
    fx_close(&fx);
}

static void test_threaded_concurrent_submits_one_instance(void **state)
{
    (void)state;
    run_threaded(1, 2000, false);
}

static void test_threaded_concurrent_submits_two_instances(void **state)
{
    (void)state;
    run_threaded(2, 2000, false);
}

static void test_threaded_free_drains_everything(void **state)
{
    (void)state;
    run_threaded(2, 500, true);
}

static void test_threaded_under_full_batch_waits_for_the_delay(void **state)
{
    (void)state;
    fixture_t fx;
    fx_open(&fx, make_cfg(8, 3000, 16), false);
    bd_req_t *a = mk_req(2, 2, 5, 5);
    submit_ok(&fx, a);
    wait_for_done(1);
    check_outputs(a, 2, 2, 5, 5);
    assert_true(a->start_us >= a->arrival_us + 3000);
    assert_int_equal(atomic_load(&fake.runs), 1);
    assert_int_equal(fake.rows[0], 2);
    fx_close(&fx);
}

/* Give a threaded fixture's worker time to go back to sleep on its empty queue. */
static void let_worker_sleep(void)
{
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
}

/* The held-submit tests' fixture: one worker (max batch 32), the fake clock, the worker asleep
 * on the empty queue. */
static void open_held(fixture_t *fx)
{
    fx_open_with(fx, make_cfg(32, 0, 64), false, true);
    let_worker_sleep();
}

/* A group submitted held (what one event-loop turn decoded) forms one batch with one kick,
 * even with max_queue_delay_us 0, where the first request of an unheld group would wake the
 * idle worker and run alone. The scheduler's clock is the fake one and never moves: nothing
 * here waits for a delay. */
static void test_threaded_held_group_forms_one_batch(void **state)
{
    (void)state;
    fixture_t fx;
    open_held(&fx);
    bd_err_t err = {0};
    bd_req_t *reqs[20];
    for (int i = 0; i < 20; i++) {
        reqs[i] = mk_req(1, 2, (float)(i * 10), i * 10);
        assert_int_equal(bd_sched_submit_held(fx.s, reqs[i], &err), 0);
    }
    let_worker_sleep();
    assert_int_equal(atomic_load(&fake.runs), 0); /* held: the idle worker still sleeps */
    bd_sched_kick(fx.s);
    wait_for_done(20);
    assert_int_equal(atomic_load(&fake.runs), 1);
    assert_int_equal(fake.rows[0], 20);
    for (int i = 0; i < 20; i++) {
        check_outputs(reqs[i], 1, 2, (float)(i * 10), i * 10);
    }
    bd_sched_kick(fx.s); /* nothing owed: a kick with an empty queue does nothing */
    check_counts(&fx, 20, 0, 0, 0, 20, 1, 0);
    fx_close(&fx);
}

/* bd_sched_run_inline: after one batch measured the model's cost, a held group runs on the
 * calling thread (its requests are complete when the call returns) while the worker sleeps;
 * a cost bound below the measured cost, or inputs over BD_SCHED_INLINE_MAX_BYTES, leave the
 * group to the worker. */
static void test_threaded_inline_run_on_the_caller(void **state)
{
    (void)state;
    fixture_t fx;
    open_held(&fx);
    bd_err_t err = {0};
    /* No batch measured yet: nothing runs inline. */
    assert_int_equal(bd_sched_submit_held(fx.s, mk_req(1, 2, 0, 0), &err), 0);
    assert_false(bd_sched_run_inline(fx.s, UINT64_MAX));
    bd_sched_kick(fx.s);
    wait_for_done(1);
    let_worker_sleep(); /* the worker is back asleep */
    bd_req_t *reqs[5];
    for (int i = 0; i < 5; i++) {
        reqs[i] = mk_req(1, 2, (float)(i * 10 + 10), i * 10 + 10);
        assert_int_equal(bd_sched_submit_held(fx.s, reqs[i], &err), 0);
    }
    assert_false(bd_sched_run_inline(fx.s, 0)); /* over the bound */
    assert_true(bd_sched_run_inline(fx.s, UINT64_MAX));
    pthread_mutex_lock(&g_log.mu);
    int done = g_log.n;
    pthread_mutex_unlock(&g_log.mu);
    assert_int_equal(done, 6); /* completed on this thread, before the call returned */
    assert_int_equal(atomic_load(&fake.runs), 2);
    assert_int_equal(fake.rows[1], 5);
    for (int i = 0; i < 5; i++) {
        check_outputs(reqs[i], 1, 2, (float)(i * 10 + 10), i * 10 + 10);
    }
    bd_sched_kick(fx.s); /* owed nothing: the inline run took the group */
    /* The worker still serves the model afterwards. */
    assert_int_equal(bd_sched_submit_held(fx.s, mk_req(1, 2, 7, 7), &err), 0);
    bd_sched_kick(fx.s);
    wait_for_done(7);
    /* More than BD_SCHED_INLINE_MAX_BYTES queued: the worker's, whatever the measured cost
     * (a model with variable dims costs by its data). */
    let_worker_sleep();
    bd_req_t *big = mk_req(1, BD_SCHED_INLINE_MAX_BYTES / sizeof(float), 5, 5);
    assert_int_equal(bd_sched_submit_held(fx.s, big, &err), 0);
    assert_false(bd_sched_run_inline(fx.s, UINT64_MAX));
    bd_sched_kick(fx.s);
    wait_for_done(8);
    check_counts(&fx, 8, 0, 0, 0, 8, 4, 0);
    fx_close(&fx);
}

/* A refused batch costs the refused run and its re-runs one at a time: that whole cost is
 * the batch's to the average that decides inline runs, not each cheap re-run's (which had
 * made the loop take batches, and their refusals, worth many times the bound). */
static void test_threaded_refused_batch_costs_all_its_runs(void **state)
{
    (void)state;
    fixture_t fx;
    open_held(&fx);
    bd_err_t err = {0};
    atomic_store(&fake.advance_us, 10);
    atomic_store(&fake.refuse_next, 1);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(bd_sched_submit_held(fx.s, mk_req(1, 2, (float)i, i), &err), 0);
    }
    bd_sched_kick(fx.s);
    wait_for_done(8);
    assert_int_equal(atomic_load(&fake.runs), 9); /* refused, then each alone */
    let_worker_sleep();                           /* the worker is back asleep */
    assert_int_equal(bd_sched_submit_held(fx.s, mk_req(1, 2, 9, 9), &err), 0);
    assert_false(bd_sched_run_inline(fx.s, 50000)); /* 90 µs, not 10 */
    assert_true(bd_sched_run_inline(fx.s, 100000));
    fx_close(&fx);
}

static void test_threaded_sim_backend(void **state)
{
    (void)state;
    log_clear();
    tcfg_t cfg = make_cfg(16, 1000, 1024);
    cfg.m.instances = 2;
    strcpy(cfg.m.backend, "sim");
    cfg.m.sim.latency_us = 1000;
    cfg.m.sim.per_item_us = 10;
    ios_out[0].dims = ios_in[0].dims;
    ios_out[1].dims = ios_in[1].dims;
    bd_backend_model_t *bm = NULL;
    bd_err_t err = {0};
    if (bd_backend_sim.load(&cfg.m, &bm, &err) != 0) {
        fail_msg("sim load: %s", err.msg);
    }
    bd_metrics_t *metrics = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(metrics, "m", "1");
    bd_sched_opts_t opts = {.metrics = mm};
    bd_sched_t *s = bd_sched_new(&cfg.m, &cfg.p, &bd_backend_sim, bm, &opts, &err);
    assert_non_null(s);
    submitter_t st[T_THREADS];
    pthread_t t[T_THREADS];
    for (int i = 0; i < T_THREADS; i++) {
        st[i] = (submitter_t){.s = s, .thread = i};
        assert_int_equal(pthread_create(&t[i], NULL, submitter_main, &st[i]), 0);
    }
    for (int i = 0; i < T_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(st[i].failed, 0);
    }
    int total = T_THREADS * T_PER_THREAD;
    wait_for_done(total);
    /* The sim copies input i to output i. */
    for (int i = 0; i < total; i++) {
        bd_req_t *r = g_log.reqs[i];
        assert_int_equal(r->status, 0);
        assert_int_equal(r->n_outputs, 2);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(r->outputs[k].byte_size, r->in.inputs[k].byte_size);
            assert_memory_equal(r->outputs[k].data, r->in.inputs[k].data,
                                r->in.inputs[k].byte_size);
            assert_int_equal(r->outputs[k].shape.dims[0], r->rows);
        }
        assert_string_equal(r->outputs[0].name, "OUTPUT0");
    }
    assert_true(bd_metrics_get_executions(mm) < (uint64_t)total);
    assert_int_equal(bd_metrics_get_items(mm), 399);
    bd_sched_free(s);
    bd_backend_sim.unload(bm);
    bd_metrics_free(metrics);
    log_clear();
}

/* ---- scheduling under pressure (issue 3): priorities, deadlines, cancel, preferred sizes,
 * circuit breaker, sim_fail, warmup, statistics, adaptive delay ---------------------------- */

/* A fake backend whose runs take `cost_fixed + cost_per_item * rows` of the fake clock, so the
 * phase statistics and the adaptive delay see exact synthetic costs. */
static uint64_t cost_fixed;
static uint64_t cost_per_item;

static int cost_run(bd_backend_instance_t *inst, const bd_tensor_t *inputs, size_t n_inputs,
                    bd_tensor_t *outputs, size_t n_outputs, const bd_backend_batch_t *batch,
                    bd_err_t *err)
{
    fake_now += cost_fixed + cost_per_item * (uint64_t)inputs[0].shape.dims[0];
    return fake_run(inst, inputs, n_inputs, outputs, n_outputs, batch, err);
}

static const bd_backend_ops_t cost_ops = {
    .name = "fake-cost",
    .instance_new = fake_instance_new,
    .instance_free = fake_instance_free,
    .run = cost_run,
};

/* fx_open with any backend ops, in manual mode under the fake clock. */
static void px_open(fixture_t *fx, tcfg_t cfg, const bd_backend_ops_t *ops, bd_backend_model_t *bm)
{
    fake_reset();
    log_clear();
    fake_now = 1000;
    fx->cfg = cfg;
    fx->metrics = bd_metrics_new();
    fx->mm = bd_metrics_model(fx->metrics, "m", "1");
    bd_sched_opts_t opts = {
        .manual = true, .metrics = fx->mm, .clock = {.now_us = fake_clock_now, .ctx = NULL}};
    bd_err_t err = {0};
    fx->s = bd_sched_new(&fx->cfg.m, &fx->cfg.p, ops, bm, &opts, &err);
    if (!fx->s) {
        fail_msg("bd_sched_new: %s", err.msg);
    }
}

static bd_req_t *mk_prio(int64_t priority, uint64_t timeout_us, float base)
{
    bd_req_t *r = mk_req(1, 1, base, (int32_t)base);
    r->in.priority = priority;
    r->in.timeout_us = timeout_us;
    return r;
}

static tcfg_t prio_cfg(int max_batch, int levels, int def_level)
{
    tcfg_t cfg = make_cfg(max_batch, 0, 16);
    cfg.p.priority_levels = levels;
    cfg.p.default_priority_level = def_level;
    for (int l = 0; l < levels; l++) {
        cfg.p.levels[l].max_queue_size = 16;
    }
    return cfg;
}

static void test_pressure_priority_fills_batch_from_highest_level(void **state)
{
    (void)state;
    fixture_t fx;
    px_open(&fx, prio_cfg(4, 3, 3), &fake_ops, &fake_model);
    bd_req_t *low[5];
    for (int i = 0; i < 5; i++) {
        low[i] = mk_prio(i % 2 ? 3 : 0, 0, (float)i); /* 0 = the default level, 3 */
        submit_ok(&fx, low[i]);
    }
    bd_req_t *mid = mk_prio(2, 0, 50);
    bd_req_t *high = mk_prio(1, 0, 60);
    submit_ok(&fx, mid);
    submit_ok(&fx, high);
    uint64_t wake = 0;
    /* First batch: the highest level first, then the next, then the oldest low ones. */
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 4);
    assert_ptr_equal(g_log.reqs[0], high);
    assert_ptr_equal(g_log.reqs[1], mid);
    assert_ptr_equal(g_log.reqs[2], low[0]);
    assert_ptr_equal(g_log.reqs[3], low[1]);
    check_outputs(high, 1, 1, 60, 60);
    assert_int_equal(fake.rows[0], 4);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 3);
    assert_ptr_equal(g_log.reqs[6], low[4]);
    check_counts(&fx, 7, 0, 0, 0, 7, 2, 0);
    fx_close(&fx);
}

/* The delay counts from the batch's oldest request whatever its level: a high-priority
 * request arriving late does not restart a low one's wait (it was held to ~2x the delay). */
static void test_pressure_delay_counts_from_the_oldest_across_levels(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = prio_cfg(4, 2, 2);
    cfg.p.max_queue_delay_us = 100;
    px_open(&fx, cfg, &fake_ops, &fake_model);
    bd_req_t *low = mk_prio(2, 0, 1);
    submit_ok(&fx, low); /* at 1000 */
    fake_now = 1080;
    bd_req_t *high = mk_prio(1, 0, 2);
    submit_ok(&fx, high);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, 1100); /* low's arrival + delay, not high's (1180) */
    fake_now = 1100;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_ptr_equal(g_log.reqs[0], high);
    assert_ptr_equal(g_log.reqs[1], low);
    fx_close(&fx);
}

static void test_pressure_priority_range_and_per_level_queue(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = prio_cfg(4, 2, 2);
    cfg.p.levels[0].max_queue_size = 1;
    cfg.p.levels[1].max_queue_size = 2;
    px_open(&fx, cfg, &fake_ops, &fake_model);
    bd_err_t err = {0};
    /* Past the model's levels: its default level, as Triton does (a client that sends one
     * priority to every model is served, not refused). */
    submit_ok(&fx, mk_prio(3, 0, 0));
    submit_ok(&fx, mk_prio(1, 0, 1));
    bd_req_t *r = mk_prio(1, 0, 2);
    assert_int_equal(bd_sched_submit(fx.s, r, &err), BD_EFULL);
    assert_string_equal(err.msg, "model 'm' version 1: the queue of priority level 1 is full (1 "
                                 "requests); retry later");
    r->in.priority = 0; /* the default level still has room */
    submit_ok(&fx, r);
    /* The default level holds the priority 3 one and the priority 0 one: full. */
    r = mk_prio(2, 0, 3);
    assert_int_equal(bd_sched_submit(fx.s, r, &err), BD_EFULL);
    assert_string_equal(err.msg, "model 'm' version 1: the queue of priority level 2 is full (2 "
                                 "requests); retry later");
    bd_req_free(r);
    check_counts(&fx, 0, 2, 0, 0, 0, 0, 3);
    fx_close(&fx);

    /* One level: every priority is that level. */
    fx_open(&fx, make_cfg(4, 0, 4), true);
    submit_ok(&fx, mk_prio(2, 0, 0));
    submit_ok(&fx, mk_prio(1, 0, 1));
    check_counts(&fx, 0, 0, 0, 0, 0, 0, 2);
    fx_close(&fx);
}

static void test_pressure_deadline_expires_in_queue_never_runs(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 1000, 16);
    cfg.p.priority_levels = 1;
    cfg.p.levels[0].default_timeout_us = 5000;
    px_open(&fx, cfg, &fake_ops, &fake_model);
    bd_req_t *a = mk_prio(0, 300, 1);  /* its own timeout: deadline 1300 */
    bd_req_t *b = mk_prio(0, 0, 2);    /* the level default: deadline 6000 */
    bd_req_t *c = mk_prio(0, 5500, 3); /* longer than the default: capped at it, 6000 */
    submit_ok(&fx, a);
    submit_ok(&fx, b);
    submit_ok(&fx, c);
    assert_int_equal(a->deadline_us, 1300);
    assert_int_equal(b->deadline_us, 6000);
    assert_int_equal(c->deadline_us, 6000);
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, 1300); /* the deadline comes before the delay (2000) */
    fake_now = 1299;
    assert_int_equal(bd_sched_expire(fx.s), 0);
    fake_now = 1300;
    /* a expires; b and c are still held for the delay, which ends at b's arrival + 1000. */
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_ptr_equal(g_log.reqs[0], a);
    assert_int_equal(a->status, BD_ETIMEOUT);
    assert_int_equal(a->err.code, BD_ETIMEOUT);
    assert_string_equal(a->err.msg, "request timeout expired in queue");
    assert_null(a->out_block);
    assert_int_equal(wake, 2000);
    assert_int_equal(bd_metrics_get_requests(fx.mm, BD_OUTCOME_TIMEOUT), 1);
    assert_int_equal(atomic_load(&fake.runs), 0);
    fake_now = 2000;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(fake.rows[0], 2);
    check_outputs(b, 1, 1, 2, 2);
    check_outputs(c, 1, 1, 3, 3);
    bd_model_stats_t st;
    bd_metrics_stats(fx.mm, &st);
    assert_int_equal(st.fail.count, 1);
    assert_int_equal(st.fail.ns, 300000);
    assert_int_equal(st.success.count, 2);
    check_counts(&fx, 2, 0, 0, 0, 2, 1, 0);
    fx_close(&fx);
}

static void test_pressure_cancel_queued_only(void **state)
{
    (void)state;
    fixture_t fx;
    px_open(&fx, make_cfg(8, 1000, 16), &fake_ops, &fake_model);
    bd_req_t *r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = mk_prio(0, 10000, (float)i);
        submit_ok(&fx, r[i]);
    }
    assert_int_equal(bd_metrics_get_inflight(fx.mm), 3);
    fake_now = 1250;
    assert_int_equal(bd_sched_cancel(fx.s, r[1]), 0);
    assert_int_equal(bd_metrics_get_inflight(fx.mm), 2);
    assert_int_equal(g_log.n, 1); /* its callback ran before cancel returned */
    assert_ptr_equal(g_log.reqs[0], r[1]);
    assert_int_equal(r[1]->status, BD_ECANCELLED);
    assert_int_equal(r[1]->err.code, BD_ECANCELLED);
    assert_int_equal(bd_sched_queue_depth(fx.s), 2);
    assert_int_equal(bd_metrics_get_requests(fx.mm, BD_OUTCOME_CANCELLED), 1);
    /* The head can be cancelled too; the rest keep their order. */
    assert_int_equal(bd_sched_cancel(fx.s, r[0]), 0);
    fake_now = 2000;
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(atomic_load(&fake.runs), 1);
    assert_int_equal(fake.rows[0], 1);
    check_outputs(r[2], 1, 1, 2, 2);
    /* Already run: nothing happens. */
    assert_int_equal(bd_sched_cancel(fx.s, r[2]), BD_EBUSY);
    assert_int_equal(g_log.n, 3);
    assert_int_equal(bd_metrics_get_inflight(fx.mm), 0);
    bd_model_stats_t st;
    bd_metrics_stats(fx.mm, &st);
    assert_int_equal(st.fail.count, 2);
    assert_int_equal(st.fail.ns, 250000 + 250000);
    check_counts(&fx, 1, 0, 0, 0, 1, 1, 0);
    fx_close(&fx);
}

static void test_pressure_preferred_batch_sizes(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 1000, 32);
    cfg.p.preferred_batch_sizes[0] = 2;
    cfg.p.preferred_batch_sizes[1] = 4;
    cfg.p.n_preferred_batch_sizes = 2;
    px_open(&fx, cfg, &fake_ops, &fake_model);
    uint64_t wake = 0;
    submit_ok(&fx, mk_prio(0, 0, 0));
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0); /* no preferred size yet: wait */
    assert_int_equal(wake, 2000);
    submit_ok(&fx, mk_prio(0, 0, 1));
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2); /* 2 is preferred: at once */
    /* 5 queued: the largest preferred size that can be formed is 4. */
    for (int i = 0; i < 5; i++) {
        submit_ok(&fx, mk_prio(0, 0, (float)(10 + i)));
    }
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 4);
    assert_int_equal(fake.rows[1], 4);
    /* One left: it waits for the delay, then runs alone. */
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    assert_int_equal(wake, 2000);
    fake_now = 2000;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    /* Rows count, not requests: 3 and 3 + 2 are no preferred size, so they wait; a third
     * request makes 8 rows, a full batch, which runs whole. */
    fake_now = 5000;
    submit_ok(&fx, mk_req(3, 1, 0, 0));
    submit_ok(&fx, mk_req(2, 1, 0, 0));
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    submit_ok(&fx, mk_req(3, 1, 0, 0));
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 3);
    assert_int_equal(fake.rows[3], 8);
    check_counts(&fx, 10, 0, 0, 0, 15, 4, 0);
    fx_close(&fx);
}

static void test_pressure_circuit_breaker(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(4, 0, 16);
    cfg.p.dynamic_batching = false; /* one request per batch */
    cfg.p.circuit_breaker.consecutive_failures = 3;
    cfg.p.circuit_breaker.cooldown_us = 1000000;
    px_open(&fx, cfg, &fake_ops, &fake_model);
    char reason[BD_ERR_MSG_MAX];
    uint64_t wake = 0;
    bd_err_t err = {0};
    for (int i = 0; i < 4; i++) {
        submit_ok(&fx, mk_prio(0, 0, (float)i));
    }
    atomic_store(&fake.fail_next, 3);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
        assert_true(bd_sched_available(fx.s, reason, sizeof reason));
        assert_string_equal(reason, "");
    }
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    const char *want = "model 'm' version 1 is unavailable for another 1.0 s after 3 failed "
                       "batches in a row; last error: fake backend: injected failure";
    assert_false(bd_sched_available(fx.s, reason, sizeof reason));
    assert_string_equal(reason, want);
    bd_req_t *r = mk_prio(0, 0, 9);
    fake_now += 200000;
    assert_int_equal(bd_sched_submit(fx.s, r, &err), BD_EUNAVAIL);
    assert_string_equal(err.msg, "model 'm' version 1 is unavailable for another 0.8 s after 3 "
                                 "failed batches in a row; last error: fake backend: injected "
                                 "failure");
    assert_int_equal(err.retry_after_s, 1); /* 0.8 s, in whole seconds rounded up */
    /* The request queued when the breaker opened was answered at once with the same
     * sentence: it does not run. */
    assert_int_equal(g_log.n, 4);
    assert_int_equal(g_log.reqs[3]->status, BD_EUNAVAIL);
    assert_string_equal(g_log.reqs[3]->err.msg, want);
    assert_int_equal(g_log.reqs[3]->err.retry_after_s, 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    fake_now += 800000;
    submit_ok(&fx, r);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1); /* the probe succeeds */
    assert_int_equal(r->status, 0);
    assert_true(bd_sched_available(fx.s, reason, sizeof reason));

    /* Open again; after the cooldown one probe, the request behind it waits; the probe's
     * failure re-opens at once and answers the waiting one. */
    atomic_store(&fake.fail_next, 4);
    for (int i = 0; i < 3; i++) {
        submit_ok(&fx, mk_prio(0, 0, (float)i));
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    }
    assert_false(bd_sched_available(fx.s, NULL, 0));
    fake_now += 1000000;
    assert_true(bd_sched_available(fx.s, reason, sizeof reason));
    submit_ok(&fx, mk_prio(0, 0, 20));
    bd_req_t *behind = mk_prio(0, 0, 22);
    submit_ok(&fx, behind);
    int before = g_log.n;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1); /* the probe fails */
    assert_false(bd_sched_available(fx.s, reason, sizeof reason));
    const char *again = "model 'm' version 1 is unavailable for another 1.0 s after 4 failed "
                        "batches in a row; last error: fake backend: injected failure";
    assert_string_equal(reason, again);
    assert_int_equal(g_log.n, before + 2);
    assert_int_equal(behind->status, BD_EUNAVAIL);
    assert_string_equal(behind->err.msg, again);
    assert_int_equal(behind->err.retry_after_s, 1);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
    fake_now += 1000000;
    submit_ok(&fx, mk_prio(0, 0, 21));
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1); /* the probe succeeds */
    assert_true(bd_sched_available(fx.s, NULL, 0));
    check_counts(&fx, 2, 3, 0, 7, 2, 2, 0);
    fx_close(&fx);
}

static void test_pressure_circuit_breaker_off(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(4, 0, 64);
    cfg.p.dynamic_batching = false;
    cfg.p.circuit_breaker.consecutive_failures = 0;
    px_open(&fx, cfg, &fake_ops, &fake_model);
    atomic_store(&fake.fail_next, 50);
    uint64_t wake = 0;
    for (int i = 0; i < 50; i++) {
        submit_ok(&fx, mk_prio(0, 0, 0));
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    }
    assert_true(bd_sched_available(fx.s, NULL, 0));
    fx_close(&fx);
}

/* A manual scheduler over the real sim backend (px_sim_close frees both). */
static bd_backend_model_t *px_sim_open(fixture_t *fx, tcfg_t cfg)
{
    strcpy(cfg.m.backend, "sim");
    bd_backend_model_t *bm = NULL;
    bd_err_t err = {0};
    if (bd_backend_sim.load(&cfg.m, &bm, &err) != 0) {
        fail_msg("sim load: %s", err.msg);
    }
    px_open(fx, cfg, &bd_backend_sim, bm);
    return bm;
}

static void px_sim_close(fixture_t *fx, bd_backend_model_t *bm)
{
    bd_sched_free(fx->s);
    bd_backend_sim.unload(bm);
    bd_metrics_free(fx->metrics);
    log_clear();
}

/* The real sim backend: parameters.sim_fail fails the whole batch it is in, and only that. */
static void test_pressure_sim_fail_fails_its_batch(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 0, 16);
    bd_backend_model_t *bm = px_sim_open(&fx, cfg);
    bd_err_t err = {0};
    bd_req_t *r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = mk_prio(0, 0, (float)i);
    }
    static const bd_param_t sim_fail = {.name = "sim_fail", .kind = BD_PARAM_BOOL, .v.b = true};
    r[1]->in.params = &sim_fail;
    r[1]->in.n_params = 1;
    r[1]->in.id = "bad-1";
    for (int i = 0; i < 3; i++) {
        submit_ok(&fx, r[i]);
    }
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i]->status, BD_EBACKEND);
        assert_string_equal(r[i]->err.msg, "sim model: the batch failed on purpose because "
                                           "request 'bad-1' set parameters.sim_fail");
    }
    bd_req_t *ok = mk_prio(0, 0, 7);
    submit_ok(&fx, ok);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(ok->status, 0);
    check_counts(&fx, 1, 0, 0, 3, 1, 1, 0);
    /* Anything but a boolean is refused at submit (the sim's check_params), alone. */
    static const bd_param_t not_bool = {.name = "sim_fail", .kind = BD_PARAM_INT, .v.i = 1};
    bd_req_t *bad = mk_prio(0, 0, 8);
    bad->in.params = &not_bool;
    bad->in.n_params = 1;
    assert_int_equal(bd_sched_submit(fx.s, bad, &err), BD_EINVAL);
    assert_string_equal(err.msg, "parameters.sim_fail must be true or false");
    bd_req_free(bad);
    check_counts(&fx, 1, 0, 1, 3, 1, 1, 0);
    px_sim_close(&fx, bm);
}

/* A model that refuses one request's values (the sim's parameters.sim_invalid, as ONNX
 * Runtime's INVALID_ARGUMENT) fails that request alone: its batch runs again a request at a
 * time, the others succeed with their own rows, and the breaker (open after one failed batch
 * here) hears nothing of it. */
static void test_pressure_refused_values_fail_alone(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 0, 16);
    cfg.p.circuit_breaker.consecutive_failures = 1;
    cfg.p.circuit_breaker.cooldown_us = 1000000;
    bd_backend_model_t *bm = px_sim_open(&fx, cfg);
    bd_err_t err = {0};
    static const bd_param_t invalid = {.name = "sim_invalid", .kind = BD_PARAM_BOOL, .v.b = true};
    bd_req_t *r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = mk_prio(0, 0, (float)(10 * i));
    }
    r[2]->in.params = &invalid;
    r[2]->in.n_params = 1;
    r[2]->in.id = "bad-2";
    for (int i = 0; i < 4; i++) {
        submit_ok(&fx, r[i]);
    }
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 4);
    for (int i = 0; i < 4; i++) {
        if (i == 2) {
            assert_int_equal(r[i]->status, BD_EINVAL);
            assert_string_equal(r[i]->err.msg,
                                "the model cannot run on this request's input values: sim model: "
                                "the batch failed on purpose because request 'bad-2' set "
                                "parameters.sim_invalid");
            continue;
        }
        assert_int_equal(r[i]->status, 0);
        assert_int_equal(r[i]->outputs[0].shape.dims[0], 1);
        assert_memory_equal(r[i]->outputs[0].data, r[i]->in.inputs[0].data,
                            r[i]->in.inputs[0].byte_size);
    }
    /* Three ran alone; the refused batch of four is no execution, and no failure. */
    check_counts(&fx, 3, 0, 1, 0, 3, 3, 0);
    assert_true(bd_sched_available(fx.s, NULL, 0));
    /* Alone, the same: 400, and the breaker stays closed. */
    bd_req_t *alone = mk_prio(0, 0, 50);
    alone->in.params = &invalid;
    alone->in.n_params = 1;
    submit_ok(&fx, alone);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(alone->status, BD_EINVAL);
    assert_true(bd_sched_available(fx.s, NULL, 0));
    bd_req_t *ok = mk_prio(0, 0, 60);
    submit_ok(&fx, ok);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_int_equal(ok->status, 0);
    check_counts(&fx, 4, 0, 2, 0, 4, 4, 0);
    /* A probe batch refused for one request's values: the others' runs still decide the
     * probe. Here the next fails the model, so the breaker opens again. */
    static const bd_param_t fail = {.name = "sim_fail", .kind = BD_PARAM_BOOL, .v.b = true};
    bd_req_t *broken = mk_prio(0, 0, 70);
    broken->in.params = &fail;
    broken->in.n_params = 1;
    submit_ok(&fx, broken);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    assert_false(bd_sched_available(fx.s, NULL, 0));
    fake_now += 1000000;
    assert_true(bd_sched_available(fx.s, NULL, 0)); /* half open: the next batch probes */
    bd_req_t *pr[2] = {mk_prio(0, 0, 80), mk_prio(0, 0, 90)};
    pr[0]->in.params = &invalid;
    pr[0]->in.n_params = 1;
    pr[1]->in.params = &fail;
    pr[1]->in.n_params = 1;
    submit_ok(&fx, pr[0]);
    submit_ok(&fx, pr[1]);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(pr[0]->status, BD_EINVAL);
    assert_int_equal(pr[1]->status, BD_EBACKEND);
    assert_false(bd_sched_available(fx.s, NULL, 0));
    check_counts(&fx, 4, 0, 3, 2, 4, 4, 0);
    /* parameters.sim_invalid must be a boolean too. */
    static const bd_param_t not_bool = {.name = "sim_invalid", .kind = BD_PARAM_INT, .v.i = 1};
    bd_req_t *bad = mk_prio(0, 0, 8);
    bad->in.params = &not_bool;
    bad->in.n_params = 1;
    assert_int_equal(bd_sched_submit(fx.s, bad, &err), BD_EINVAL);
    assert_string_equal(err.msg, "parameters.sim_invalid must be true or false");
    bd_req_free(bad);
    px_sim_close(&fx, bm);
}

/* A refused batch's re-runs are one batch to the breaker: the backend failures among them
 * count once, not once a request, so one bad value in a batch does not multiply a fault. */
static void test_pressure_refused_batch_counts_once(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 0, 16);
    cfg.p.circuit_breaker.consecutive_failures = 3;
    cfg.p.circuit_breaker.cooldown_us = 1000000;
    bd_backend_model_t *bm = px_sim_open(&fx, cfg);
    static const bd_param_t invalid = {.name = "sim_invalid", .kind = BD_PARAM_BOOL, .v.b = true};
    static const bd_param_t fail = {.name = "sim_fail", .kind = BD_PARAM_BOOL, .v.b = true};
    bd_req_t *r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = mk_prio(0, 0, (float)i);
        r[i]->in.params = i == 0 ? &invalid : &fail;
        r[i]->in.n_params = 1;
        submit_ok(&fx, r[i]);
    }
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 4);
    assert_int_equal(r[0]->status, BD_EINVAL);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(r[i]->status, BD_EBACKEND);
    }
    assert_true(bd_sched_available(fx.s, NULL, 0)); /* one failed batch of three allowed */
    for (int k = 0; k < 2; k++) {
        assert_true(bd_sched_available(fx.s, NULL, 0));
        bd_req_t *f = mk_prio(0, 0, 9);
        f->in.params = &fail;
        f->in.n_params = 1;
        submit_ok(&fx, f);
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
        assert_int_equal(f->status, BD_EBACKEND);
    }
    assert_false(bd_sched_available(fx.s, NULL, 0)); /* the third failed batch opened it */
    /* And one that runs among the re-runs counts as the batch's success: the count restarts. */
    fake_now += 1000000;
    bd_req_t *p[2] = {mk_prio(0, 0, 1), mk_prio(0, 0, 2)};
    p[0]->in.params = &invalid;
    p[0]->in.n_params = 1;
    submit_ok(&fx, p[0]);
    submit_ok(&fx, p[1]);
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    assert_int_equal(p[0]->status, BD_EINVAL);
    assert_int_equal(p[1]->status, 0);
    assert_true(bd_sched_available(fx.s, NULL, 0)); /* the probe batch closed it */
    px_sim_close(&fx, bm);
}

/* A re-run that fails the backend tells the breaker before its client has the answer, as any
 * failed batch does: a client that submits again at once meets the open breaker, and the
 * re-runs after it cannot report a stale failure later. */
static bd_sched_t *told_sched;
static int told_available = -1;

static void on_done_check_breaker(bd_req_t *req, void *ctx)
{
    told_available = bd_sched_available(told_sched, NULL, 0);
    on_done(req, ctx);
}

static void test_pressure_refused_batch_tells_the_breaker_before_answering(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 0, 16);
    cfg.p.circuit_breaker.consecutive_failures = 1;
    cfg.p.circuit_breaker.cooldown_us = 1000000;
    bd_backend_model_t *bm = px_sim_open(&fx, cfg);
    told_sched = fx.s;
    static const bd_param_t invalid = {.name = "sim_invalid", .kind = BD_PARAM_BOOL, .v.b = true};
    static const bd_param_t fail = {.name = "sim_fail", .kind = BD_PARAM_BOOL, .v.b = true};
    bd_req_t *r[3] = {mk_prio(0, 0, 1), mk_prio(0, 0, 2), mk_prio(0, 0, 3)};
    r[0]->in.params = &fail;
    r[0]->in.n_params = 1;
    r[0]->done = on_done_check_breaker;
    r[1]->in.params = &invalid;
    r[1]->in.n_params = 1;
    for (int i = 0; i < 3; i++) {
        submit_ok(&fx, r[i]);
    }
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 3);
    assert_int_equal(r[0]->status, BD_EBACKEND);
    assert_int_equal(told_available, 0); /* open when its client got the 500 */
    assert_int_equal(r[1]->status, BD_EINVAL);
    assert_int_equal(r[2]->status, 0); /* taken before it opened: runs */
    assert_false(bd_sched_available(fx.s, NULL, 0));
    px_sim_close(&fx, bm);
}

static void test_pressure_warmup_runs_before_ready(void **state)
{
    (void)state;
    fixture_t fx;
    tcfg_t cfg = make_cfg(8, 0, 16);
    cfg.m.instances = 2;
    cfg.p.warmup.batch_sizes[0] = 1;
    cfg.p.warmup.batch_sizes[1] = 8;
    cfg.p.warmup.batch_sizes[2] = 100; /* clamped to max_batch_size */
    cfg.p.warmup.n_batch_sizes = 3;
    cfg.p.warmup.count = 2;
    px_open(&fx, cfg, &fake_ops, &fake_model);
    assert_int_equal(atomic_load(&fake.runs), 12);
    const size_t want[6] = {1, 1, 8, 8, 8, 8};
    for (int i = 0; i < 12; i++) {
        assert_int_equal(fake.rows[i], want[i % 6]);
        assert_int_equal(fake.in0_cols[i], 1); /* INPUT0's variable dim is 1 */
    }
    check_counts(&fx, 0, 0, 0, 0, 0, 0, 0);
    fx_close(&fx);

    /* A failed warmup fails bd_sched_new with the reason and frees every instance. */
    fake_reset();
    atomic_store(&fake.fail_next, 1);
    fx.cfg = cfg;
    bd_sched_opts_t opts = {.manual = true};
    bd_err_t err = {0};
    assert_null(bd_sched_new(&fx.cfg.m, &fx.cfg.p, &fake_ops, &fake_model, &opts, &err));
    assert_string_equal(err.msg, "model 'm' version 1: warmup batch of 1 rows failed on "
                                 "instance 0: fake backend: injected failure");
    assert_int_equal(atomic_load(&fake.instances), 0);
}

static void test_pressure_statistics_match_phases(void **state)
{
    (void)state;
    fixture_t fx;
    px_open(&fx, make_cfg(8, 0, 16), &cost_ops, &fake_model);
    cost_fixed = 100;
    cost_per_item = 10;
    submit_ok(&fx, mk_req(1, 1, 0, 0));
    submit_ok(&fx, mk_req(2, 1, 0, 0));
    fake_now = 1040;
    uint64_t wake = 0;
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2); /* 3 rows: 130 us */
    submit_ok(&fx, mk_req(1, 1, 0, 0));                 /* arrives at 1170 */
    assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1); /* 1 row: 110 us */
    bd_model_stats_t st;
    bd_metrics_stats(fx.mm, &st);
    assert_int_equal(st.success.count, 3);
    assert_int_equal(st.success.ns, (170 + 170 + 110) * 1000);
    assert_int_equal(st.queue.count, 3);
    assert_int_equal(st.queue.ns, (40 + 40 + 0) * 1000);
    assert_int_equal(st.compute_infer.count, 3);
    assert_int_equal(st.compute_infer.ns, (130 + 130 + 110) * 1000);
    assert_int_equal(st.compute_input.ns, 0);
    assert_int_equal(st.inference_count, 4);
    assert_int_equal(st.execution_count, 2);
    assert_int_equal(st.fail.count, 0);
    assert_true(st.last_inference_ms > 0);
    bd_batch_stats_t bs[4];
    assert_int_equal(bd_metrics_batch_stats(fx.mm, bs, 4), 2);
    assert_int_equal(bs[0].batch_size, 1);
    assert_int_equal(bs[0].compute_infer.count, 1);
    assert_int_equal(bs[0].compute_infer.ns, 110000);
    assert_int_equal(bs[1].batch_size, 3);
    assert_int_equal(bs[1].compute_infer.ns, 130000);
    cost_fixed = 0;
    cost_per_item = 0;
    fx_close(&fx);
}

/* The learner alone, with synthetic costs and arrivals. */
static void feed(bd_sched_auto_t *a, double fixed, double per, uint64_t gap, int batches)
{
    static const size_t sizes[4] = {1, 3, 6, 8};
    for (int i = 0; i < batches; i++) {
        size_t n = sizes[i % 4];
        bd_sched_auto_batch(a, n, (uint64_t)(fixed + per * (double)n));
    }
    for (int i = 0; i < 40; i++) {
        bd_sched_auto_arrival(a, 10000 + (uint64_t)i * gap);
    }
}

static void test_pressure_auto_delay_learner(void **state)
{
    (void)state;
    double a;
    double b;
    size_t target = 0;
    uint64_t last;

    /* Large fixed cost per call, requests every 200 us: aim for the requests expected within
     * one fixed cost, and hold while they keep coming at that pace (2 x 200 us of quiet ends
     * the hold; one fixed cost is the limit). */
    bd_sched_auto_t big = {0};
    feed(&big, 2000, 100, 200, 7);
    assert_false(bd_sched_auto_fit(&big, &a, &b)); /* 7 batches: not yet */
    last = 10000 + 39 * 200;
    assert_int_equal(bd_sched_auto_hold_until(&big, 1, 32, 1, last, last, &target), 0);
    feed(&big, 2000, 100, 200, 1);
    last = 10000 + 39 * 200;
    assert_true(bd_sched_auto_fit(&big, &a, &b));
    assert_true(a > 1999.9 && a < 2000.1);
    assert_true(b > 99.99 && b < 100.01);
    assert_int_equal(bd_sched_auto_hold_until(&big, 1, 32, 1, last, last, &target), last + 400);
    assert_int_equal(target, 11); /* 1 + 2000 / 200 */
    assert_int_equal(bd_sched_auto_hold_until(&big, 11, 32, 1, last, last, &target), 0);
    assert_int_equal(bd_sched_auto_hold_until(&big, 1, 8, 1, last, last, &target), last + 400);
    assert_int_equal(target, 8); /* never beyond max_batch_size */
    /* The head's own limit comes first when it arrived long ago. */
    assert_int_equal(bd_sched_auto_hold_until(&big, 1, 32, 1, last - 1800, last, &target),
                     last + 200);
    /* The load stopped: 5 ms since the last arrival is longer than the fixed cost. */
    assert_int_equal(bd_sched_auto_hold_until(&big, 1, 32, 1, last, last + 5000, &target), 0);

    /* Same model at low load (a request every 10 ms): a lone request is not held. */
    bd_sched_auto_t light = {0};
    feed(&light, 2000, 100, 10000, 16);
    last = 10000 + 39 * 10000;
    assert_int_equal(bd_sched_auto_hold_until(&light, 1, 32, 1, last, last, NULL), 0);
    /* Moderate load where small batches would leave the instance mostly idle: no hold. */
    bd_sched_auto_t mid = {0};
    feed(&mid, 2000, 100, 1900, 16);
    last = 10000 + 39 * 1900;
    assert_int_equal(bd_sched_auto_hold_until(&mid, 3, 32, 1, last, last, NULL), 0);
    assert_int_equal(bd_sched_auto_hold_until(&mid, 1, 32, 1, last, last, NULL), last + 2000);

    /* A CNN on a CPU: cost linear in n with a small fixed part never waits, even at load. */
    bd_sched_auto_t cnn = {0};
    feed(&cnn, 50, 1000, 20, 16);
    last = 10000 + 39 * 20;
    assert_true(bd_sched_auto_fit(&cnn, &a, &b));
    assert_true(a > 49.9 && a < 50.1);
    assert_int_equal(bd_sched_auto_hold_until(&cnn, 1, 32, 1, last, last, NULL), 0);

    /* A burst: after a quiet spell, requests arrive 50 us apart. The average gap says "about
     * 3 rows"; the pace inside the burst says "as many as come", so the batch is not cut at 3
     * and goes once the burst is over (100 us of quiet). */
    bd_sched_auto_t burst = {0};
    feed(&burst, 2000, 100, 1000, 16);
    uint64_t t = 10000 + 39 * 1000 + 16000;
    for (int i = 0; i < 15; i++) {
        bd_sched_auto_arrival(&burst, t + (uint64_t)i * 50);
    }
    last = t + 14 * 50;
    assert_int_equal(bd_sched_auto_hold_until(&burst, 3, 32, 1, t, last, &target), last + 100);
    assert_int_equal(target, 32); /* 1 + 2000 / 50, capped by max_batch_size */
    assert_int_equal(bd_sched_auto_hold_until(&burst, 15, 32, 1, t, last + 100, &target), 0);

    /* Every batch the same size: the slope is unknown, so nothing is held. */
    bd_sched_auto_t same = {0};
    for (int i = 0; i < 20; i++) {
        bd_sched_auto_batch(&same, 4, 3000);
    }
    assert_false(bd_sched_auto_fit(&same, &a, &b));
}

/* The scheduler with "auto" under the fake clock: it learns a large fixed cost as batches run
 * and then holds a lone request; with a linear cost it never holds. */
static void run_auto(uint64_t fixed, uint64_t per, bool expect_hold)
{
    fixture_t fx;
    tcfg_t cfg = make_cfg(16, 0, 64);
    cfg.p.delay_auto = true;
    px_open(&fx, cfg, &cost_ops, &fake_model);
    cost_fixed = fixed;
    cost_per_item = per;
    uint64_t wake = 0;
    static const int sizes[4] = {1, 3, 6, 8};
    for (int round = 0; round < BD_AUTO_MIN_BATCHES; round++) {
        for (int i = 0; i < sizes[round % 4]; i++) {
            submit_ok(&fx, mk_req(1, 1, 0, 0));
            fake_now += 200;
        }
        /* Not fitted yet: whatever is queued runs at once. */
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), sizes[round % 4]);
    }
    fake_now += 100;
    submit_ok(&fx, mk_req(1, 1, 0, 0));
    uint64_t arrival = fake_now;
    if (!expect_hold) {
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 1);
    } else {
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
        /* Held while requests keep coming at the recent pace (~200 us apart)... */
        assert_true(wake > arrival && wake < arrival + fixed);
        fake_now += 200;
        submit_ok(&fx, mk_req(1, 1, 0, 0));
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 0);
        assert_true(wake > fake_now && wake <= arrival + fixed);
        /* ...and nobody came since: the pair goes at the quiet deadline. */
        fake_now = wake;
        assert_int_equal(bd_sched_step(fx.s, 0, &wake), 2);
    }
    cost_fixed = 0;
    cost_per_item = 0;
    fx_close(&fx);
}

static void test_pressure_auto_delay_in_the_scheduler(void **state)
{
    (void)state;
    run_auto(2000, 100, true);
    run_auto(20, 1000, false);
}

/* Threaded, real clock: a queued request's deadline fires while the only instance is busy on
 * a long batch, long before that batch ends. */
static void test_pressure_threaded_timeout_while_busy(void **state)
{
    (void)state;
    fake_reset();
    log_clear();
    tcfg_t cfg = make_cfg(8, 0, 16);
    bd_metrics_t *metrics = bd_metrics_new();
    bd_sched_opts_t opts = {.metrics = bd_metrics_model(metrics, "m", "1")};
    bd_err_t err = {0};
    bd_sched_t *s = bd_sched_new(&cfg.m, &cfg.p, &fake_ops, &fake_model, &opts, &err);
    assert_non_null(s);
    atomic_store(&fake.sleep_us, 400000);
    bd_req_t *slow = mk_req(1, 2, 0, 0);
    assert_int_equal(bd_sched_submit(s, slow, &err), 0);
    while (atomic_load(&fake.runs) == 0) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    bd_req_t *quick = mk_req(1, 2, 0, 0);
    quick->in.timeout_us = 20000;
    uint64_t t0 = bd_now_us();
    assert_int_equal(bd_sched_submit(s, quick, &err), 0);
    wait_for_done(1);
    uint64_t took = bd_now_us() - t0;
    pthread_mutex_lock(&g_log.mu);
    assert_ptr_equal(g_log.reqs[0], quick);
    pthread_mutex_unlock(&g_log.mu);
    assert_int_equal(quick->status, BD_ETIMEOUT);
    assert_true(took >= 20000 && took < 200000);
    wait_for_done(2);
    assert_int_equal(slow->status, 0);
    assert_int_equal(atomic_load(&fake.runs), 1);
    bd_sched_free(s);
    bd_metrics_free(metrics);
    log_clear();
}

/* Threaded: cancels race with workers; every request completes exactly once, either run or
 * cancelled, and a cancelled one never ran. */
#define C_REQS 200

static void test_pressure_threaded_cancel_races(void **state)
{
    (void)state;
    fake_reset();
    log_clear();
    tcfg_t cfg = make_cfg(4, 0, C_REQS);
    cfg.m.instances = 2;
    bd_metrics_t *metrics = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(metrics, "m", "1");
    bd_sched_opts_t opts = {.metrics = mm};
    bd_err_t err = {0};
    bd_sched_t *s = bd_sched_new(&cfg.m, &cfg.p, &fake_ops, &fake_model, &opts, &err);
    assert_non_null(s);
    atomic_store(&fake.sleep_us, 200);
    bd_req_t *reqs[C_REQS];
    for (int i = 0; i < C_REQS; i++) {
        reqs[i] = mk_req(1, 1, (float)i, i);
        reqs[i]->in.timeout_us = i % 7 == 0 ? 1 : 0; /* some expire at once */
        assert_int_equal(bd_sched_submit(s, reqs[i], &err), 0);
    }
    int cancelled = 0;
    int busy = 0;
    for (int i = C_REQS - 1; i >= 0; i -= 2) {
        /* A request may already be complete and logged; the log owns it until log_clear,
         * so cancel still reads valid memory. */
        int rc = bd_sched_cancel(s, reqs[i]);
        assert_true(rc == 0 || rc == BD_EBUSY);
        cancelled += rc == 0;
        busy += rc == BD_EBUSY;
    }
    wait_for_done(C_REQS);
    bd_sched_free(s);
    int runs_ok = 0;
    int timeouts = 0;
    int cancels = 0;
    for (int i = 0; i < C_REQS; i++) {
        bd_req_t *r = g_log.reqs[i];
        runs_ok += r->status == 0;
        timeouts += r->status == BD_ETIMEOUT;
        cancels += r->status == BD_ECANCELLED;
    }
    assert_int_equal(cancels, cancelled);
    assert_int_equal(runs_ok + timeouts + cancels, C_REQS);
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_CANCELLED), (uint64_t)cancelled);
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_TIMEOUT), (uint64_t)timeouts);
    assert_int_equal(bd_metrics_get_items(mm), (uint64_t)runs_ok);
    assert_int_equal(bd_metrics_get_queue_depth(mm), 0);
    bd_metrics_free(metrics);
    log_clear();
}

/* An instance that fails to start fails bd_sched_new even when the caller passes no err: the
 * failure used to be lost (bd_err_prefix returned 0 for a NULL err), and the scheduler came
 * up with a NULL backend instance that its workers would then run. */
static void test_instance_failure_fails_new_without_err(void **state)
{
    (void)state;
    fake_reset();
    atomic_store(&fake.fail_instance_new, 1);
    tcfg_t cfg = make_cfg(8, 0, 16);
    cfg.m.instances = 2;
    bd_sched_opts_t opts = {.manual = true};
    bd_sched_t *s = bd_sched_new(&cfg.m, &cfg.p, &fake_ops, &fake_model, &opts, NULL);
    if (s) {
        bd_sched_free(s);
    }
    assert_null(s);
    assert_int_equal(atomic_load(&fake.instances), 0);
    assert_int_equal(atomic_load(&fake.runs), 0);
    fake_reset();
}

int main(void)
{
    bd_log_set_level(BD_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_messages),
        cmocka_unit_test(test_validate_without_batch_dim),
        cmocka_unit_test(test_submit_invalid_counts_and_keeps_ownership),
        cmocka_unit_test(test_step_empty_and_bad_instance),
        cmocka_unit_test(test_delay_is_honoured_then_fifo_batch),
        cmocka_unit_test(test_full_batch_runs_at_once),
        cmocka_unit_test(test_zero_delay_takes_whatever_is_queued),
        cmocka_unit_test(test_different_item_dims_never_mixed),
        cmocka_unit_test(test_request_too_big_for_the_room_waits),
        cmocka_unit_test(test_scatter_multi_row_requests),
        cmocka_unit_test(test_scatter_copies_only_requested_outputs),
        cmocka_unit_test(test_single_request_is_not_copied_and_buffers_are_reused),
        cmocka_unit_test(test_batching_off_runs_each_request_alone),
        cmocka_unit_test(test_no_batch_dim_runs_each_request_alone),
        cmocka_unit_test(test_queue_full_is_rejected),
        cmocka_unit_test(test_closed_rejects_and_drains_at_once),
        cmocka_unit_test(test_free_drains_queue_in_manual_mode),
        cmocka_unit_test(test_backend_failure_fails_the_whole_batch),
        cmocka_unit_test(test_backend_output_of_wrong_rows_is_a_backend_error),
        cmocka_unit_test(test_done_callback_may_submit),
        cmocka_unit_test(test_validate_null_names_do_not_crash),
        cmocka_unit_test(test_instance_failure_fails_new),
        cmocka_unit_test(test_metrics_durations_recorded),
        cmocka_unit_test(test_sim_manual_delay_exact_wake),
        cmocka_unit_test(test_sim_manual_mixed_rows_each_gets_its_own),
        cmocka_unit_test(test_sim_manual_fifo_across_batches),
        cmocka_unit_test(test_threaded_concurrent_submits_one_instance),
        cmocka_unit_test(test_threaded_concurrent_submits_two_instances),
        cmocka_unit_test(test_threaded_free_drains_everything),
        cmocka_unit_test(test_threaded_under_full_batch_waits_for_the_delay),
        cmocka_unit_test(test_threaded_held_group_forms_one_batch),
        cmocka_unit_test(test_threaded_inline_run_on_the_caller),
        cmocka_unit_test(test_threaded_refused_batch_costs_all_its_runs),
        cmocka_unit_test(test_threaded_sim_backend),
        cmocka_unit_test(test_pressure_priority_fills_batch_from_highest_level),
        cmocka_unit_test(test_pressure_delay_counts_from_the_oldest_across_levels),
        cmocka_unit_test(test_pressure_priority_range_and_per_level_queue),
        cmocka_unit_test(test_pressure_deadline_expires_in_queue_never_runs),
        cmocka_unit_test(test_pressure_cancel_queued_only),
        cmocka_unit_test(test_pressure_preferred_batch_sizes),
        cmocka_unit_test(test_preferred_sizes_need_batching),
        cmocka_unit_test(test_dims_past_memory_are_refused),
        cmocka_unit_test(test_pressure_circuit_breaker),
        cmocka_unit_test(test_pressure_circuit_breaker_off),
        cmocka_unit_test(test_pressure_sim_fail_fails_its_batch),
        cmocka_unit_test(test_pressure_refused_values_fail_alone),
        cmocka_unit_test(test_pressure_refused_batch_counts_once),
        cmocka_unit_test(test_pressure_refused_batch_tells_the_breaker_before_answering),
        cmocka_unit_test(test_pressure_warmup_runs_before_ready),
        cmocka_unit_test(test_pressure_statistics_match_phases),
        cmocka_unit_test(test_pressure_auto_delay_learner),
        cmocka_unit_test(test_pressure_auto_delay_in_the_scheduler),
        cmocka_unit_test(test_pressure_threaded_timeout_while_busy),
        cmocka_unit_test(test_pressure_threaded_cancel_races),
        cmocka_unit_test(test_instance_failure_fails_new_without_err),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
