/* sched.c: the per-model-version scheduler: request validation, a bounded FIFO, batch
 * forming, worker threads, gather of inputs into per-instance batch buffers and scatter of
 * outputs back to each request.
 *
 * Batch forming (take_batch) follows sched.h: the oldest request plus every later request
 * whose non-batch dims equal it, in arrival order, while the rows fit in max_batch_size. A
 * compatible request that does not fit ends the scan and stays queued for the next batch;
 * incompatible requests are skipped (they keep their place). The batch runs at once when it
 * is full, when batching is off (max_batch_size 0 or dynamic_batching false: one request per
 * batch), when max_queue_delay_us is 0, when the next compatible request would not fit, when
 * the scheduler is closed (nothing more will come, so waiting helps no one), or when the
 * oldest request has waited max_queue_delay_us by the scheduler's clock. max_queue_size 0
 * means the documented default, 1024.
 *
 * Submit validates the request and puts its inputs into the model's input order (so every
 * later step indexes inputs by config position), then queues it under `mu`.
 *
 * Threads: bd_sched_submit, bd_sched_queue_depth and bd_sched_close from any thread; each
 * worker thread (one per instance) owns its inst_t: the backend session, the batch buffers
 * and the batch array. `mu` guards the queue and `closed`; it is never held across a backend
 * run or a completion callback. In manual mode there are no workers and bd_sched_step does
 * the worker's job on the caller's thread (one caller per instance at a time).
 *
 * Ownership: the scheduler borrows cfg, ops and bm. A queued request is owned by the
 * scheduler until its done callback, which hands it back. A request's outputs live in one
 * malloc'd block (req->out_block: the tensor array, the output names, then the data). */
#include "sched/sched.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_QUEUE_SIZE 1024
#define ERR_LOG_INTERVAL_US 1000000u
#define MAX_WAIT_US 3600000000u

typedef struct {
    unsigned char *data; /* owned */
    size_t cap;
} batch_buf_t;

/* One model instance. Its worker thread only (or the bd_sched_step caller in manual mode);
 * the scheduler's creator and bd_sched_free before start and after join. */
typedef struct {
    bd_sched_t *s;
    int index;
    bd_backend_instance_t *bi; /* owned: ops->instance_free */
    pthread_t thread;
    bool thread_started;
    batch_buf_t *in_bufs;     /* owned, cfg->n_inputs: gathered inputs, reused across batches */
    bd_tensor_t *in_tensors;  /* owned, cfg->n_inputs: the gathered batch as the backend sees it */
    bd_tensor_t *out_tensors; /* owned, cfg->n_outputs: filled by the backend's run */
    bd_req_t **batch;         /* owned, batch_cap entries: the requests of the current batch */
    size_t batch_cap;
} inst_t;

struct bd_sched {
    const bd_model_config_t *cfg; /* borrowed */
    const bd_backend_ops_t *ops;  /* borrowed */
    bd_backend_model_t *bm;       /* borrowed */
    bd_clock_t clock;
    bool manual;
    bd_model_metrics_t *metrics; /* borrowed, may be NULL */
    bool batching;               /* max_batch_size > 0 and dynamic batching on */
    size_t max_rows;             /* max_batch_size, at least 1 */
    size_t max_queue;
    const char *model_name; /* borrowed from cfg, never NULL */
    _Atomic uint64_t last_err_log_us;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bd_req_t *head; /* under mu: oldest first */
    bd_req_t *tail; /* under mu */
    size_t depth;   /* under mu */
    bool closed;    /* under mu */

    int n_inst;
    inst_t *insts; /* owned */
};

/* ---- requests -------------------------------------------------------------------------- */

bd_req_t *bd_req_new(size_t arena_limit)
{
    bd_req_t *req = calloc(1, sizeof *req);
    if (req) {
        bd_arena_init(&req->arena, arena_limit);
    }
    return req;
}

void bd_req_free(bd_req_t *req)
{
    if (!req) {
        return;
    }
    bd_arena_dispose(&req->arena);
    free(req->body);
    free(req->out_block);
    free(req);
}

/* ---- validation ------------------------------------------------------------------------ */

/* "[-1,16]": the shape, with a leading -1 for the batch dim when `lead`. Always terminated. */
static const char *fmt_dims(char *buf, size_t cap, bool lead, const bd_shape_t *s)
{
    size_t n = 0;
    int w = snprintf(buf, cap, "[%s", lead ? "-1" : "");
    n = w > 0 ? (size_t)w : 0;
    int ndim = s->ndim < 0 ? 0 : s->ndim > BD_MAX_DIMS ? BD_MAX_DIMS : s->ndim;
    for (int i = 0; i < ndim && n < cap; i++) {
        w = snprintf(buf + n, cap - n, "%s%" PRId64, (lead || i > 0) ? "," : "", s->dims[i]);
        n += w > 0 ? (size_t)w : 0;
    }
    if (n < cap) {
        snprintf(buf + n, cap - n, "]");
    }
    return buf;
}

/* "INPUT0, INPUT1" into buf (truncated when long). */
static const char *fmt_names(char *buf, size_t cap, const bd_io_t *ios, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && len < cap; i++) {
        int w =
            snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", ios[i].name ? ios[i].name : "");
        len += w > 0 ? (size_t)w : 0;
    }
    return buf;
}

/* A request tensor's name; a NULL name (never valid) compares and prints as "". */
static const char *tname(const bd_tensor_t *t)
{
    return t->name ? t->name : "";
}

static const bd_io_t *find_io(const bd_io_t *ios, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (ios[i].name && strcmp(ios[i].name, name) == 0) {
            return &ios[i];
        }
    }
    return NULL;
}

static bool shape_matches(const bd_io_t *io, const bd_shape_t *got, bool batching)
{
    int lead = batching ? 1 : 0;
    if (io->dims.ndim < 0 || io->dims.ndim + lead != got->ndim || got->ndim > BD_MAX_DIMS) {
        return false;
    }
    for (int i = lead; i < got->ndim; i++) {
        int64_t want = io->dims.dims[i - lead];
        if (got->dims[i] < 0 || (want >= 0 && got->dims[i] != want)) {
            return false;
        }
    }
    return true;
}

static int check_input(const bd_model_config_t *cfg, const bd_io_t *io, const bd_tensor_t *t,
                       bd_err_t *err)
{
    bool batching = cfg->max_batch_size > 0;
    char want[160];
    char got[160];
    if (t->dtype != io->dtype) {
        return bd_err_set(err, BD_EINVAL, "input '%s': expected datatype %s, got %s", io->name,
                          bd_dtype_name(io->dtype), bd_dtype_name(t->dtype));
    }
    if (!bd_dtype_supported(t->dtype)) {
        return bd_err_set(err, BD_EINVAL, "input '%s': datatype %s is not supported", io->name,
                          bd_dtype_name(t->dtype));
    }
    if (!shape_matches(io, &t->shape, batching)) {
        return bd_err_set(err, BD_EINVAL, "input '%s': expected shape %s, got %s", io->name,
                          fmt_dims(want, sizeof want, batching, &io->dims),
                          fmt_dims(got, sizeof got, false, &t->shape));
    }
    if (batching) {
        int64_t b = t->shape.dims[0];
        if (b < 1) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%s': batch size must be at least 1, got %" PRId64, io->name,
                              b);
        }
        if (b > cfg->max_batch_size) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%s': batch size %" PRId64 " exceeds max_batch_size %d",
                              io->name, b, cfg->max_batch_size);
        }
    }
    size_t bytes = bd_dtype_size(t->dtype);
    for (int i = 0; i < t->shape.ndim; i++) {
        if (!bd_mul_size(bytes, (size_t)t->shape.dims[i], &bytes)) {
            return bd_err_set(err, BD_EINVAL, "input '%s': shape %s is too large", io->name,
                              fmt_dims(got, sizeof got, false, &t->shape));
        }
    }
    if (t->byte_size != bytes) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%s': expected %zu bytes of data for shape %s, got %zu", io->name,
                          bytes, fmt_dims(got, sizeof got, false, &t->shape), t->byte_size);
    }
    if (bytes > 0 && !t->data) {
        return bd_err_set(err, BD_EINVAL, "input '%s': the tensor has no data", io->name);
    }
    return 0;
}

int bd_sched_validate(const bd_model_config_t *cfg, const bd_infer_req_t *in, size_t *rows,
                      bd_err_t *err)
{
    char list[BD_ERR_MSG_MAX];
    bool batching = cfg->max_batch_size > 0;
    if ((in->n_inputs > 0 && !in->inputs) || (in->n_outputs > 0 && !in->outputs)) {
        return bd_err_set(err, BD_EINVAL, "the request's input or output list is missing");
    }
    for (size_t i = 0; i < in->n_inputs; i++) {
        const bd_tensor_t *t = &in->inputs[i];
        const char *name = tname(t);
        const bd_io_t *io = find_io(cfg->inputs, cfg->n_inputs, name);
        if (!io) {
            if (cfg->n_inputs == 0) {
                return bd_err_set(err, BD_EINVAL, "unknown input '%s'; the model has no inputs",
                                  name);
            }
            return bd_err_set(err, BD_EINVAL, "unknown input '%s'; the model's inputs are %s", name,
                              fmt_names(list, sizeof list, cfg->inputs, cfg->n_inputs));
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(tname(&in->inputs[j]), name) == 0) {
                return bd_err_set(err, BD_EINVAL, "input '%s' is given more than once", name);
            }
        }
        int rc = check_input(cfg, io, t, err);
        if (rc != 0) {
            return rc;
        }
        if (batching && i > 0 && t->shape.dims[0] != in->inputs[0].shape.dims[0]) {
            return bd_err_set(
                err, BD_EINVAL,
                "inputs disagree on the batch size: '%s' has %" PRId64 " rows, '%s' has %" PRId64,
                tname(&in->inputs[0]), in->inputs[0].shape.dims[0], name, t->shape.dims[0]);
        }
    }
    /* Every request input is known and unique, so equal counts mean none is missing. */
    if (in->n_inputs != cfg->n_inputs) {
        for (size_t j = 0; j < cfg->n_inputs; j++) {
            bool found = false;
            for (size_t i = 0; i < in->n_inputs && !found; i++) {
                found =
                    cfg->inputs[j].name && strcmp(tname(&in->inputs[i]), cfg->inputs[j].name) == 0;
            }
            if (!found) {
                return bd_err_set(err, BD_EINVAL, "missing input '%s'", cfg->inputs[j].name);
            }
        }
    }
    for (size_t i = 0; i < in->n_outputs; i++) {
        const char *name = in->outputs[i].name ? in->outputs[i].name : "";
        if (!find_io(cfg->outputs, cfg->n_outputs, name)) {
            if (cfg->n_outputs == 0) {
                return bd_err_set(err, BD_EINVAL, "unknown output '%s'; the model has no outputs",
                                  name);
            }
            return bd_err_set(err, BD_EINVAL, "unknown output '%s'; the model's outputs are %s",
                              name, fmt_names(list, sizeof list, cfg->outputs, cfg->n_outputs));
        }
    }
    size_t r = 1;
    if (batching && in->n_inputs > 0) {
        r = (size_t)in->inputs[0].shape.dims[0];
    }
    if (rows) {
        *rows = r;
    }
    return 0;
}

/* After validation: put the request's inputs into the model's input order. */
static void order_inputs(const bd_model_config_t *cfg, bd_infer_req_t *in)
{
    for (size_t i = 0; i < cfg->n_inputs && i < in->n_inputs; i++) {
        for (size_t j = i; j < in->n_inputs; j++) {
            if (strcmp(tname(&in->inputs[j]), cfg->inputs[i].name) == 0) {
                if (j != i) {
                    bd_tensor_t tmp = in->inputs[i];
                    in->inputs[i] = in->inputs[j];
                    in->inputs[j] = tmp;
                }
                break;
            }
        }
    }
}

/* ---- batch forming (under mu) ---------------------------------------------------------- */

static bool same_item_dims(const bd_sched_t *s, const bd_req_t *a, const bd_req_t *b)
{
    for (size_t i = 0; i < s->cfg->n_inputs; i++) {
        const bd_shape_t *x = &a->in.inputs[i].shape;
        const bd_shape_t *y = &b->in.inputs[i].shape;
        if (x->ndim != y->ndim) {
            return false;
        }
        for (int d = 1; d < x->ndim; d++) {
            if (x->dims[d] != y->dims[d]) {
                return false;
            }
        }
    }
    return true;
}

/* Select the next batch for `in` at time `now`. When it is ready, unlink its requests from
 * the queue into in->batch and return how many (rows in *rows_out); otherwise return 0 with
 * *wake_us set to when it will be (UINT64_MAX when the queue is empty). Caller holds mu. */
static size_t take_batch(bd_sched_t *s, inst_t *in, uint64_t now, size_t *rows_out,
                         uint64_t *wake_us)
{
    *wake_us = UINT64_MAX;
    bd_req_t *head = s->head;
    if (!head) {
        return 0;
    }
    in->batch[0] = head;
    size_t n = 1;
    size_t rows = head->rows;
    bool ready =
        !s->batching || s->closed || s->cfg->max_queue_delay_us == 0 || rows >= s->max_rows;
    if (s->batching) {
        for (bd_req_t *r = head->next; r && rows < s->max_rows; r = r->next) {
            if (!same_item_dims(s, head, r)) {
                continue;
            }
            if (r->rows > s->max_rows - rows) {
                ready = true; /* it waits for the next batch; this one cannot grow */
                break;
            }
            in->batch[n++] = r;
            rows += r->rows;
        }
        if (rows >= s->max_rows) {
            ready = true;
        }
    }
    if (!ready) {
        uint64_t due;
        if (__builtin_add_overflow(head->arrival_us, s->cfg->max_queue_delay_us, &due)) {
            due = UINT64_MAX - 1;
        }
        if (now < due) {
            *wake_us = due;
            return 0;
        }
    }
    /* Unlink the chosen requests; they appear in queue order, so one pass finds them. */
    bd_req_t **pp = &s->head;
    bd_req_t *prev = NULL;
    size_t k = 0;
    while (*pp && k < n) {
        bd_req_t *r = *pp;
        if (r == in->batch[k]) {
            *pp = r->next;
            if (s->tail == r) {
                s->tail = prev;
            }
            r->next = NULL;
            k++;
        } else {
            prev = r;
            pp = &r->next;
        }
    }
    s->depth -= n;
    bd_metrics_queue_depth_add(s->metrics, -(int64_t)n);
    *rows_out = rows;
    return n;
}

/* ---- running a batch (no lock held) ---------------------------------------------------- */

/* Concatenate the batch's inputs (row-major with the batch dim first, so a request's rows
 * are its whole data) into the instance's buffers. */
static int gather(bd_sched_t *s, inst_t *in, size_t n, size_t rows, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        const bd_tensor_t *first = &in->batch[0]->in.inputs[i];
        size_t row_bytes = first->byte_size / in->batch[0]->rows;
        size_t total;
        if (!bd_mul_size(row_bytes, rows, &total)) {
            return bd_err_set(err, BD_ENOMEM, "input '%s': a batch of %zu rows is too large",
                              cfg->inputs[i].name, rows);
        }
        batch_buf_t *buf = &in->in_bufs[i];
        if (buf->cap < total) {
            /* Variable dims: grow and keep (the contents need not survive). */
            free(buf->data);
            buf->data = malloc(total);
            buf->cap = buf->data ? total : 0;
            if (!buf->data) {
                return bd_err_set(err, BD_ENOMEM,
                                  "out of memory for a batch of %zu rows of input '%s'", rows,
                                  cfg->inputs[i].name);
            }
        }
        size_t off = 0;
        for (size_t k = 0; k < n; k++) {
            const bd_tensor_t *t = &in->batch[k]->in.inputs[i];
            if (t->byte_size > 0 && t->byte_size <= total - off) {
                memcpy(buf->data + off, t->data, t->byte_size);
                off += t->byte_size;
            }
        }
        bd_tensor_t *bt = &in->in_tensors[i];
        bt->name = cfg->inputs[i].name;
        bt->dtype = first->dtype;
        bt->shape = first->shape;
        bt->shape.dims[0] = (int64_t)rows;
        bt->data = buf->data;
        bt->byte_size = total;
    }
    return 0;
}

/* The backend's outputs must be what the contract says before we scatter them by rows. */
static int check_outputs(bd_sched_t *s, inst_t *in, size_t rows, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    char shape[160];
    for (size_t i = 0; i < cfg->n_outputs; i++) {
        const bd_tensor_t *t = &in->out_tensors[i];
        const char *name = cfg->outputs[i].name;
        size_t bytes = bd_dtype_size(t->dtype);
        bool ok = bytes > 0 && t->shape.ndim >= 0 && t->shape.ndim <= BD_MAX_DIMS;
        for (int d = 0; ok && d < t->shape.ndim; d++) {
            ok = t->shape.dims[d] >= 0 && bd_mul_size(bytes, (size_t)t->shape.dims[d], &bytes);
        }
        if (!ok || bytes != t->byte_size || (bytes > 0 && !t->data)) {
            return bd_err_set(err, BD_EBACKEND,
                              "the backend returned output '%s' with shape %s, datatype %s and "
                              "%zu bytes of data, which do not agree",
                              name, fmt_dims(shape, sizeof shape, false, &t->shape),
                              bd_dtype_name(t->dtype), t->byte_size);
        }
        if (cfg->max_batch_size > 0 && (t->shape.ndim < 1 || t->shape.dims[0] != (int64_t)rows)) {
            return bd_err_set(err, BD_EBACKEND,
                              "the backend returned output '%s' with shape %s for a batch of %zu "
                              "rows",
                              name, fmt_dims(shape, sizeof shape, false, &t->shape), rows);
        }
    }
    return 0;
}

static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/* Copy request `r`'s rows [row0, row0 + r->rows) of every output into one new block. */
static int scatter(bd_sched_t *s, inst_t *in, bd_req_t *r, size_t row0, size_t rows, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    size_t n_out = cfg->n_outputs;
    free(r->out_block);
    r->out_block = NULL;
    r->outputs = NULL;
    r->n_outputs = 0;
    if (n_out == 0) {
        return 0;
    }
    /* Layout: tensors, names, then each output's data at a 16-byte boundary. Every size
     * here is bounded by buffers that already exist, but the sum is still checked. */
    size_t total = n_out * sizeof(bd_tensor_t);
    bool ok = true;
    for (size_t i = 0; i < n_out && ok; i++) {
        ok = bd_add_size(total, strlen(cfg->outputs[i].name) + 1, &total);
    }
    for (size_t i = 0; i < n_out && ok; i++) {
        size_t part = in->out_tensors[i].byte_size / rows * r->rows;
        ok = bd_add_size(total, 15, &total) && bd_add_size(align16(total), part, &total);
    }
    unsigned char *block = ok ? malloc(total ? total : 1) : NULL;
    if (!block) {
        return bd_err_set(err, BD_ENOMEM, "out of memory for the outputs of a %zu-row request",
                          r->rows);
    }
    bd_tensor_t *outs = (bd_tensor_t *)(void *)block;
    size_t off = n_out * sizeof(bd_tensor_t);
    for (size_t i = 0; i < n_out; i++) {
        size_t len = strlen(cfg->outputs[i].name) + 1;
        memcpy(block + off, cfg->outputs[i].name, len);
        outs[i].name = (const char *)(block + off);
        off += len;
    }
    for (size_t i = 0; i < n_out; i++) {
        const bd_tensor_t *t = &in->out_tensors[i];
        size_t row_bytes = t->byte_size / rows;
        size_t part = row_bytes * r->rows;
        off = align16(off);
        if (part > 0) {
            memcpy(block + off, (const unsigned char *)t->data + row_bytes * row0, part);
        }
        outs[i].dtype = t->dtype;
        outs[i].shape = t->shape;
        if (cfg->max_batch_size > 0) {
            outs[i].shape.dims[0] = (int64_t)r->rows;
        }
        outs[i].data = block + off;
        outs[i].byte_size = part;
        off += part;
    }
    r->out_block = block;
    r->outputs = outs;
    r->n_outputs = n_out;
    return 0;
}

static void log_batch_error(bd_sched_t *s, const bd_err_t *err, size_t n)
{
    uint64_t now = bd_now_us();
    uint64_t last = atomic_load_explicit(&s->last_err_log_us, memory_order_relaxed);
    if (last != 0 && now - last < ERR_LOG_INTERVAL_US) {
        return;
    }
    if (atomic_compare_exchange_strong(&s->last_err_log_us, &last, now)) {
        BD_WARN("sched", "batch failed model=%s version=%" PRId64 " requests=%zu error=\"%s\"",
                s->model_name, s->cfg->version, n, err->msg);
    }
}

/* Run in->batch[0..n) (rows in all), complete every request, then call their callbacks. */
static void run_batch(bd_sched_t *s, inst_t *in, size_t n, size_t rows)
{
    const bd_model_config_t *cfg = s->cfg;
    bd_err_t err = {0};
    uint64_t start = bd_clock_now(&s->clock);
    int rc = 0;
    const bd_tensor_t *inputs = in->batch[0]->in.inputs; /* one request: no copy */
    if (n > 1) {
        rc = gather(s, in, n, rows, &err);
        inputs = in->in_tensors;
    }
    if (rc == 0) {
        memset(in->out_tensors, 0, cfg->n_outputs * sizeof *in->out_tensors);
        rc = s->ops->run(in->bi, inputs, cfg->n_inputs, in->out_tensors, cfg->n_outputs, &err);
        if (rc != 0) {
            rc = BD_EBACKEND;
            err.code = BD_EBACKEND;
            if (err.msg[0] == '\0') {
                bd_err_set(&err, BD_EBACKEND, "the backend failed to run a batch of %zu rows",
                           rows);
            }
        } else {
            rc = check_outputs(s, in, rows, &err);
        }
    }
    uint64_t end = bd_clock_now(&s->clock);
    if (rc == 0) {
        bd_metrics_batch(s->metrics, rows);
    } else {
        log_batch_error(s, &err, n);
    }
    size_t row0 = 0;
    for (size_t k = 0; k < n; k++) {
        bd_req_t *r = in->batch[k];
        r->start_us = start;
        r->end_us = end;
        int status = rc;
        if (status == 0) {
            status = scatter(s, in, r, row0, rows, &r->err);
        } else {
            r->err = err;
        }
        row0 += r->rows;
        r->status = status;
        if (status == 0) {
            r->err.code = 0;
            r->err.msg[0] = '\0';
            bd_metrics_request_durations(s->metrics, start - r->arrival_us, end - start,
                                         end - r->arrival_us);
            bd_metrics_request(s->metrics, BD_OUTCOME_SUCCESS);
        } else {
            bd_metrics_request(s->metrics, BD_OUTCOME_ERROR);
        }
    }
    for (size_t k = 0; k < n; k++) {
        bd_req_t *r = in->batch[k];
        in->batch[k] = NULL;
        if (r->done) {
            r->done(r, r->done_ctx); /* r belongs to the callee from here on */
        }
    }
}

/* ---- workers --------------------------------------------------------------------------- */

/* Wait on cv for at most `rel_us` (CLOCK_MONOTONIC, so wall-clock jumps do not matter; the
 * relative wait also works with an injected clock). Caller holds mu. */
static void timed_wait(bd_sched_t *s, uint64_t rel_us)
{
    if (rel_us > MAX_WAIT_US) {
        rel_us = MAX_WAIT_US;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (rel_us % 1000000u) * 1000u;
    ts.tv_sec += (time_t)(rel_us / 1000000u + ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

static void *worker_main(void *arg)
{
    inst_t *in = arg;
    bd_sched_t *s = in->s;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        uint64_t now = bd_clock_now(&s->clock);
        uint64_t wake;
        size_t rows = 0;
        size_t n = take_batch(s, in, now, &rows, &wake);
        if (n > 0) {
            if (s->head) {
                pthread_cond_signal(&s->cv); /* another idle instance may take the rest */
            }
            pthread_mutex_unlock(&s->mu);
            run_batch(s, in, n, rows);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->closed) {
            break; /* closed makes every batch ready, so the queue is empty */
        }
        if (wake == UINT64_MAX) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else {
            timed_wait(s, wake - now);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int bd_sched_step(bd_sched_t *s, int inst, uint64_t *wake_us)
{
    uint64_t wake = UINT64_MAX;
    if (wake_us) {
        *wake_us = UINT64_MAX;
    }
    if (!s || !s->manual || inst < 0 || inst >= s->n_inst) {
        return BD_EINVAL;
    }
    inst_t *in = &s->insts[inst];
    size_t rows = 0;
    pthread_mutex_lock(&s->mu);
    size_t n = take_batch(s, in, bd_clock_now(&s->clock), &rows, &wake);
    pthread_mutex_unlock(&s->mu);
    if (n == 0) {
        if (wake_us) {
            *wake_us = wake;
        }
        return 0;
    }
    run_batch(s, in, n, rows);
    return (int)n;
}

/* ---- submit and lifecycle -------------------------------------------------------------- */

int bd_sched_submit(bd_sched_t *s, bd_req_t *req, bd_err_t *err)
{
    size_t rows = 1;
    int rc = bd_sched_validate(s->cfg, &req->in, &rows, err);
    if (rc != 0) {
        bd_metrics_request(s->metrics, BD_OUTCOME_INVALID);
        return rc;
    }
    order_inputs(s->cfg, &req->in);
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        bd_metrics_request(s->metrics, BD_OUTCOME_REJECTED);
        return bd_err_set(err, BD_ESHUTDOWN,
                          "model '%s' version %" PRId64
                          " is shutting down and accepts no new requests",
                          s->model_name, s->cfg->version);
    }
    if (s->depth >= s->max_queue) {
        pthread_mutex_unlock(&s->mu);
        bd_metrics_request(s->metrics, BD_OUTCOME_REJECTED);
        return bd_err_set(err, BD_EFULL,
                          "model '%s' version %" PRId64
                          ": queue is full (%zu requests); retry later",
                          s->model_name, s->cfg->version, s->max_queue);
    }
    /* The clock is read under mu so arrival times never decrease along the queue. */
    req->rows = rows;
    req->arrival_us = bd_clock_now(&s->clock);
    req->start_us = 0;
    req->end_us = 0;
    req->status = 0;
    req->err.code = 0;
    req->err.msg[0] = '\0';
    req->next = NULL;
    if (s->tail) {
        s->tail->next = req;
    } else {
        s->head = req;
    }
    s->tail = req;
    s->depth++;
    bd_metrics_queue_depth_add(s->metrics, 1);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

size_t bd_sched_queue_depth(bd_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->depth;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int bd_sched_cancel(bd_sched_t *s, bd_req_t *req)
{
    if (!s || !req) {
        return BD_EINVAL;
    }
    pthread_mutex_lock(&s->mu);
    bd_req_t **pp = &s->head;
    bd_req_t *prev = NULL;
    while (*pp && *pp != req) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp) {
        pthread_mutex_unlock(&s->mu);
        return BD_EBUSY;
    }
    *pp = req->next;
    if (s->tail == req) {
        s->tail = prev;
    }
    req->next = NULL;
    s->depth--;
    bd_metrics_queue_depth_add(s->metrics, -1);
    pthread_mutex_unlock(&s->mu);
    uint64_t now = bd_clock_now(&s->clock);
    req->status = BD_ECANCELLED;
    bd_err_set(&req->err, BD_ECANCELLED, "the request was cancelled while queued");
    bd_metrics_request(s->metrics, BD_OUTCOME_CANCELLED);
    bd_metrics_request_fail_duration(s->metrics, now - req->arrival_us);
    if (req->done) {
        req->done(req, req->done_ctx);
    }
    return 0;
}

bool bd_sched_available(bd_sched_t *s, char *reason, size_t cap)
{
    (void)s;
    if (reason && cap > 0) {
        reason[0] = '\0';
    }
    return true;
}

void bd_sched_close(bd_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Size of one row of `io` in bytes, or 0 when a dim is variable (or on overflow). */
static size_t fixed_row_bytes(const bd_io_t *io)
{
    size_t bytes = bd_dtype_size(io->dtype);
    for (int d = 0; d < io->dims.ndim && d < BD_MAX_DIMS; d++) {
        if (io->dims.dims[d] < 0 || !bd_mul_size(bytes, (size_t)io->dims.dims[d], &bytes)) {
            return 0;
        }
    }
    return bytes;
}

static int inst_init(bd_sched_t *s, inst_t *in, int index, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    in->s = s;
    in->index = index;
    in->batch_cap = s->batching ? s->max_rows : 1;
    in->batch = calloc(in->batch_cap, sizeof *in->batch);
    in->in_bufs = calloc(cfg->n_inputs + 1, sizeof *in->in_bufs);
    in->in_tensors = calloc(cfg->n_inputs + 1, sizeof *in->in_tensors);
    in->out_tensors = calloc(cfg->n_outputs + 1, sizeof *in->out_tensors);
    if (!in->batch || !in->in_bufs || !in->in_tensors || !in->out_tensors) {
        return bd_err_set(err, BD_ENOMEM, "out of memory creating instance %d of model '%s'", index,
                          s->model_name);
    }
    /* Fixed dims: one buffer per input for max_batch_size rows, reused by every batch
     * (large per-batch allocations page-fault every time; see DESIGN.md). */
    for (size_t i = 0; s->batching && i < cfg->n_inputs; i++) {
        size_t row = fixed_row_bytes(&cfg->inputs[i]);
        size_t total;
        if (row == 0) {
            continue;
        }
        if (!bd_mul_size(row, s->max_rows, &total) || !(in->in_bufs[i].data = malloc(total))) {
            return bd_err_set(err, BD_ENOMEM,
                              "cannot allocate the batch buffer of input '%s' (%zu rows of %zu "
                              "bytes) for model '%s'",
                              cfg->inputs[i].name, s->max_rows, row, s->model_name);
        }
        in->in_bufs[i].cap = total;
    }
    int rc = s->ops->instance_new(s->bm, index, &in->bi, err);
    if (rc != 0) {
        in->bi = NULL;
        return bd_err_prefix(err, "model '%s' instance %d: ", s->model_name, index);
    }
    return 0;
}

static void inst_dispose(bd_sched_t *s, inst_t *in)
{
    if (in->bi) {
        s->ops->instance_free(in->bi);
    }
    for (size_t i = 0; in->in_bufs && i < s->cfg->n_inputs; i++) {
        free(in->in_bufs[i].data);
    }
    free(in->in_bufs);
    free(in->in_tensors);
    free(in->out_tensors);
    free(in->batch);
}

/* Join the started workers (after close), free the instances and the scheduler. */
static void destroy(bd_sched_t *s)
{
    for (int i = 0; i < s->n_inst; i++) {
        if (s->insts[i].thread_started) {
            pthread_join(s->insts[i].thread, NULL);
        }
    }
    for (int i = 0; i < s->n_inst; i++) {
        inst_dispose(s, &s->insts[i]);
    }
    free(s->insts);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

bd_sched_t *bd_sched_new(const bd_model_config_t *cfg, const bd_backend_ops_t *ops,
                         bd_backend_model_t *bm, const bd_sched_opts_t *opts, bd_err_t *err)
{
    for (size_t i = 0; i < cfg->n_inputs + cfg->n_outputs; i++) {
        const bd_io_t *io = i < cfg->n_inputs ? &cfg->inputs[i] : &cfg->outputs[i - cfg->n_inputs];
        if (!io->name) {
            bd_err_set(err, BD_EINVAL, "model '%s': every input and output needs a name",
                       cfg->name ? cfg->name : "");
            return NULL;
        }
    }
    bd_sched_t *s = calloc(1, sizeof *s);
    if (!s) {
        bd_err_set(err, BD_ENOMEM, "out of memory creating a scheduler");
        return NULL;
    }
    s->cfg = cfg;
    s->ops = ops;
    s->bm = bm;
    s->clock = (opts && opts->clock.now_us) ? opts->clock : bd_clock_real();
    s->manual = opts && opts->manual;
    s->metrics = opts ? opts->metrics : NULL;
    s->batching = cfg->max_batch_size > 0 && cfg->dynamic_batching;
    s->max_rows = cfg->max_batch_size > 0 ? (size_t)cfg->max_batch_size : 1;
    s->max_queue = cfg->max_queue_size ? cfg->max_queue_size : DEFAULT_QUEUE_SIZE;
    s->model_name = cfg->name ? cfg->name : "";
    s->n_inst = cfg->instances > 0 ? cfg->instances : 1;

    pthread_condattr_t ca;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        bd_err_set(err, BD_ENOMEM, "cannot create the scheduler's mutex");
        return NULL;
    }
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&s->cv, &ca) != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        bd_err_set(err, BD_ENOMEM, "cannot create the scheduler's condition variable");
        return NULL;
    }
    pthread_condattr_destroy(&ca);

    s->insts = calloc((size_t)s->n_inst, sizeof *s->insts);
    if (!s->insts) {
        s->n_inst = 0;
        bd_err_set(err, BD_ENOMEM, "out of memory creating a scheduler");
        goto fail;
    }
    for (int i = 0; i < s->n_inst; i++) {
        if (inst_init(s, &s->insts[i], i, err) != 0) {
            goto fail;
        }
    }
    for (int i = 0; !s->manual && i < s->n_inst; i++) {
        int e = pthread_create(&s->insts[i].thread, NULL, worker_main, &s->insts[i]);
        if (e != 0) {
            bd_err_set(err, BD_ENOMEM, "cannot start worker thread %d of model '%s': %s", i,
                       s->model_name, strerror(e));
            goto fail;
        }
        s->insts[i].thread_started = true;
    }
    BD_INFO("sched",
            "started model=%s version=%" PRId64 " instances=%d max_batch_size=%d batching=%d "
            "max_queue_delay_us=%" PRIu64 " max_queue_size=%zu manual=%d",
            s->model_name, cfg->version, s->n_inst, cfg->max_batch_size, s->batching,
            cfg->max_queue_delay_us, s->max_queue, s->manual);
    return s;

fail:
    bd_sched_close(s);
    destroy(s);
    return NULL;
}

void bd_sched_free(bd_sched_t *s)
{
    if (!s) {
        return;
    }
    bd_sched_close(s);
    if (s->manual) {
        uint64_t wake;
        while (bd_sched_step(s, 0, &wake) > 0) {
        }
    }
    destroy(s);
}
