/* sim.c: the "sim" backend, a synthetic model for tests, fault-free load and capacity
 * planning. Output i is input i (same dtype and dims) under the output's name, and a run
 * takes latency_us + rows * per_item_us, slept with clock_nanosleep on CLOCK_MONOTONIC
 * (rows = inputs[0].shape[0] when the model batches, else 1).
 *
 * Fault injection: with sim.fail_rate p, each run fails (after taking its usual time) with
 * probability p, drawn from a per-instance generator (core's bd_rng_t) seeded with the
 * instance index, so a run of tests sees the same sequence every time. p = 1 fails every batch.
 * A request's parameters.sim_fail (a boolean; check_params refuses anything else before the
 * request is queued) fails the whole batch it runs in, after its usual time, with a message
 * naming the request. parameters.sim_invalid does the same as a model that refuses the
 * request's values would (BD_EINVAL: the scheduler runs the batch's requests again alone).
 *
 * Outputs alias the inputs: outputs[i].data == inputs[i].data. That satisfies the backend
 * contract ("valid until the next run") only because the caller keeps its input buffers
 * alive at least as long as it reads the outputs, which a worker does (it scatters outputs
 * before refilling the batch buffer). No copy means the sim measures the server, not memcpy.
 *
 * Ownership: the model holds copies of what run needs (output names, dtypes, timing), so it
 * does not depend on the config's lifetime. An instance only points at its model.
 * Threads: load/unload/instance_* on the loader thread; run on the instance's worker; the
 * model is read-only after load, so instances run concurrently. */
#include "backend/backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bd_backend_model {
    int max_batch_size;
    uint64_t latency_us;
    uint64_t per_item_us;
    double fail_rate;
    size_t n_io;       /* inputs == outputs */
    bd_dtype_t *dtype; /* [n_io] */
    char **out_name;   /* [n_io], owned */
};

struct bd_backend_instance {
    bd_backend_model_t *model; /* borrowed */
    int index;
    bd_rng_t rng; /* the worker thread only */
};

static void sim_unload(bd_backend_model_t *m)
{
    if (!m) {
        return;
    }
    if (m->out_name) {
        for (size_t i = 0; i < m->n_io; i++) {
            free(m->out_name[i]);
        }
    }
    free(m->out_name);
    free(m->dtype);
    free(m);
}

static int check_io(const char *kind, const bd_io_t *io, bd_err_t *err)
{
    if (!io->name || !io->name[0]) {
        return bd_err_set(err, BD_EINVAL, "sim model: every %s needs a non-empty name", kind);
    }
    if (!bd_dtype_supported(io->dtype)) {
        return bd_err_set(err, BD_EINVAL,
                          "sim model: %s '%s' has datatype %s; expected BOOL, INT*, UINT*, "
                          "FP32, FP64 or BYTES",
                          kind, io->name, bd_dtype_name(io->dtype));
    }
    if (io->dims.ndim < 0 || io->dims.ndim > BD_MAX_DIMS) {
        return bd_err_set(err, BD_EINVAL, "sim model: %s '%s' has %d dims; expected 0 to %d", kind,
                          io->name, io->dims.ndim, BD_MAX_DIMS);
    }
    for (int d = 0; d < io->dims.ndim; d++) {
        if (io->dims.dims[d] < -1) {
            return bd_err_set(err, BD_EINVAL,
                              "sim model: %s '%s' has dim %lld; expected -1 or a size >= 0", kind,
                              io->name, (long long)io->dims.dims[d]);
        }
    }
    return 0;
}

static int sim_load(bd_model_config_t *cfg, bd_backend_model_t **out, bd_err_t *err)
{
    *out = NULL;
    if (cfg->n_inputs == 0 || !cfg->inputs || cfg->n_outputs == 0 || !cfg->outputs) {
        return bd_err_set(err, BD_EINVAL,
                          "sim model: config.json must list \"inputs\" and \"outputs\" (a sim "
                          "model has no model file to read them from)");
    }
    if (cfg->n_outputs != cfg->n_inputs) {
        return bd_err_set(err, BD_EINVAL,
                          "sim model: has %zu inputs and %zu outputs; expected as many outputs "
                          "as inputs (output i is a copy of input i)",
                          cfg->n_inputs, cfg->n_outputs);
    }
    if (cfg->max_batch_size == BD_MAX_BATCH_UNSET) {
        cfg->max_batch_size = 0;
    }
    if (cfg->max_batch_size < 0) {
        return bd_err_set(err, BD_EINVAL, "sim model: max_batch_size %d; expected >= 0",
                          cfg->max_batch_size);
    }
    char a[96];
    char b[96];
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        const bd_io_t *in = &cfg->inputs[i];
        const bd_io_t *o = &cfg->outputs[i];
        int rc = check_io("input", in, err);
        if (rc == 0) {
            rc = check_io("output", o, err);
        }
        if (rc != 0) {
            return rc;
        }
        if (o->dtype != in->dtype) {
            return bd_err_set(err, BD_EINVAL,
                              "sim model: output '%s' is %s but input '%s' is %s; expected "
                              "output %zu to have input %zu's datatype",
                              o->name, bd_dtype_name(o->dtype), in->name, bd_dtype_name(in->dtype),
                              i, i);
        }
        if (!bd_shape_equal(&o->dims, &in->dims)) {
            return bd_err_set(err, BD_EINVAL,
                              "sim model: output '%s' has dims %s but input '%s' has %s; "
                              "expected output %zu to have input %zu's dims",
                              o->name, bd_shape_str(&o->dims, a, sizeof a), in->name,
                              bd_shape_str(&in->dims, b, sizeof b), i, i);
        }
    }

    bd_backend_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        goto nomem;
    }
    m->max_batch_size = cfg->max_batch_size;
    m->latency_us = cfg->sim.latency_us;
    m->per_item_us = cfg->sim.per_item_us;
    m->fail_rate = cfg->sim.fail_rate;
    m->n_io = cfg->n_inputs;
    m->dtype = calloc(m->n_io, sizeof *m->dtype);
    m->out_name = calloc(m->n_io, sizeof *m->out_name);
    if (!m->dtype || !m->out_name) {
        goto nomem;
    }
    for (size_t i = 0; i < m->n_io; i++) {
        m->dtype[i] = cfg->inputs[i].dtype;
        m->out_name[i] = strdup(cfg->outputs[i].name);
        if (!m->out_name[i]) {
            goto nomem;
        }
    }
    /* Runs on the CPU whatever "device" says (http.c's model config says so too). */
    snprintf(cfg->placement.device, sizeof cfg->placement.device, "cpu");
    snprintf(cfg->placement.provider, sizeof cfg->placement.provider, "sim");
    cfg->placement.nodes = -1;
    cfg->placement.cpu_nodes = -1;
    *out = m;
    return 0;

nomem:
    sim_unload(m);
    return bd_err_set(err, BD_ENOMEM, "sim model: out of memory while loading");
}

static int sim_instance_new(bd_backend_model_t *m, int index, bd_backend_instance_t **out,
                            bd_err_t *err)
{
    bd_backend_instance_t *inst = calloc(1, sizeof *inst);
    if (!inst) {
        *out = NULL;
        return bd_err_set(err, BD_ENOMEM, "sim model: out of memory creating instance %d", index);
    }
    inst->model = m;
    inst->index = index;
    bd_rng_seed(&inst->rng, 0x5eed0000u + (uint64_t)index);
    *out = inst;
    return 0;
}

static void sim_instance_free(bd_backend_instance_t *inst)
{
    free(inst);
}

/* Sleep until `us` microseconds from now; restarts after signals (absolute deadline). */
static void sleep_us(uint64_t us)
{
    if (us == 0) {
        return;
    }
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t sec = us / 1000000u;
    long nsec = t.tv_nsec + (long)(us % 1000000u) * 1000L;
    if (nsec >= 1000000000L) {
        nsec -= 1000000000L;
        sec++;
    }
    t.tv_sec += (time_t)sec;
    t.tv_nsec = nsec;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {
    }
}

static int sim_check_params(const bd_backend_model_t *m, const bd_param_t *params, size_t n_params,
                            bd_err_t *err)
{
    (void)m;
    static const char *const names[] = {"sim_fail", "sim_invalid"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const bd_param_t *p = bd_param_find(params, n_params, names[i]);
        if (p && p->kind != BD_PARAM_BOOL) {
            return bd_err_set(err, BD_EINVAL, "parameters.%s must be true or false", names[i]);
        }
    }
    return 0;
}

/* The batch fails on purpose, with `code`, when a request in it set parameters.<name>. */
static int sim_fail_check(const bd_backend_batch_t *batch, const char *name, int code,
                          bd_err_t *err)
{
    for (size_t k = 0; batch && k < batch->n_reqs; k++) {
        const bd_backend_req_t *r = &batch->reqs[k];
        const bd_param_t *p = bd_param_find(r->params, r->n_params, name);
        if (!p || p->kind != BD_PARAM_BOOL || !p->v.b) {
            continue;
        }
        if (r->id) {
            return bd_err_set(err, code,
                              "sim model: the batch failed on purpose because request '%s' set "
                              "parameters.%s",
                              r->id, name);
        }
        return bd_err_set(err, code,
                          "sim model: the batch failed on purpose because a request in it set "
                          "parameters.%s",
                          name);
    }
    return 0;
}

static int sim_run(bd_backend_instance_t *inst, const bd_tensor_t *inputs, size_t n_inputs,
                   bd_tensor_t *outputs, size_t n_outputs, const bd_backend_batch_t *batch,
                   bd_err_t *err)
{
    const bd_backend_model_t *m = inst->model;
    if (n_inputs != m->n_io || n_outputs != m->n_io) {
        return bd_err_set(err, BD_EBACKEND,
                          "sim model: run got %zu inputs and %zu outputs; expected %zu of each",
                          n_inputs, n_outputs, m->n_io);
    }
    for (size_t i = 0; i < n_inputs; i++) {
        if (inputs[i].dtype != m->dtype[i]) {
            return bd_err_set(err, BD_EBACKEND, "sim model: input %zu is %s; expected %s", i,
                              bd_dtype_name(inputs[i].dtype), bd_dtype_name(m->dtype[i]));
        }
    }
    uint64_t rows = 1;
    if (m->max_batch_size > 0) {
        if (inputs[0].shape.ndim < 1 || inputs[0].shape.dims[0] < 0) {
            return bd_err_set(err, BD_EBACKEND,
                              "sim model: input 0 has no batch dim; expected shape [rows, ...]");
        }
        rows = (uint64_t)inputs[0].shape.dims[0];
    }
    uint64_t work_us;
    uint64_t total_us;
    if (__builtin_mul_overflow(rows, m->per_item_us, &work_us) ||
        __builtin_add_overflow(work_us, m->latency_us, &total_us)) {
        total_us = UINT64_MAX;
    }
    if (total_us > (uint64_t)INT32_MAX * 1000000u) {
        total_us = (uint64_t)INT32_MAX * 1000000u; /* keep tv_sec in range */
    }
    sleep_us(total_us);
    if (m->fail_rate > 0 && bd_rng_uniform(&inst->rng) < m->fail_rate) {
        return bd_err_set(err, BD_EBACKEND, "sim model: injected failure (sim.fail_rate %g)",
                          m->fail_rate);
    }
    int rc = sim_fail_check(batch, "sim_invalid", BD_EINVAL, err);
    if (rc == 0) {
        rc = sim_fail_check(batch, "sim_fail", BD_EBACKEND, err);
    }
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < n_outputs; i++) {
        outputs[i] = inputs[i]; /* aliases the input's data: see the file comment */
        outputs[i].name = m->out_name[i];
    }
    return 0;
}

const bd_backend_ops_t bd_backend_sim = {
    .name = "sim",
    .load = sim_load,
    .unload = sim_unload,
    .instance_new = sim_instance_new,
    .instance_free = sim_instance_free,
    .run = sim_run,
    .check_params = sim_check_params,
};
