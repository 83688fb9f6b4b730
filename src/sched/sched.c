/* sched.c: the per-model-version scheduler: request validation, one bounded FIFO per
 * priority level, deadlines, batch forming, the circuit breaker, warmup, worker threads,
 * gather of inputs into per-instance batch buffers and scatter of outputs back to each
 * request.
 *
 * Batch forming (take_batch) follows sched.h: the head is the oldest request of the highest
 * non-empty level; the batch is the head plus every later request whose non-batch dims equal
 * it, that level first and then the lower ones, in arrival order, while the rows fit in
 * max_batch_size. A compatible request that does not fit ends the scan and stays queued;
 * incompatible requests are skipped (they keep their place). The batch runs at once when it
 * is full, when batching is off (max_batch_size 0 or dynamic_batching false: one request per
 * batch), when the next compatible request would not fit, when the scheduler is closed
 * (nothing more will come, so waiting helps no one), when a preferred batch size can be
 * formed (then the longest prefix whose rows are a preferred size runs, as Triton does), when
 * max_queue_delay_us is 0, or when the batch's oldest request (of any level) has waited
 * max_queue_delay_us by the scheduler's clock. With "auto" the last two are replaced by
 * bd_sched_auto_hold_until (autodelay.c). Whenever a batch runs that is not full, it is the longest
 * preferred prefix if one exists, else everything that fits.
 *
 * Deadlines: a request's deadline is its arrival plus parameters.timeout (or its level's
 * default_timeout_us); queued requests with one sit in a min-heap by deadline as well as in
 * their level's FIFO. A timer thread sleeps until the earliest deadline and completes every
 * request whose deadline passed with BD_ETIMEOUT, so a timeout fires while every instance is
 * busy on a long batch. Workers (and bd_sched_step) expire due requests under the same lock
 * right before they form a batch, so an expired request never runs.
 *
 * Circuit breaker: `cb_fails` failed batches in a row (circuit_breaker.consecutive_failures)
 * open it: submits fail with BD_EUNAVAIL and the reason until cooldown_us passed, and the
 * requests queued when it opens are answered the same at once (not run batch after failing
 * batch). Then it is half-open: submits are accepted and the next batch is the one probe
 * (other instances wait meanwhile; what queues behind it waits too); its success closes the
 * breaker, its failure opens it again (and answers what queued behind it). Only the probe
 * closes it: a batch another instance was running when it opened succeeds without closing it.
 *
 * Wake-ups: a submit signals an idle worker only when it changes what a waiting worker would
 * do: the queue's head changed (a new head, or a higher level), or enough rows are queued to
 * run before the delay (a full batch, the smallest preferred size, the auto target). A worker
 * waiting for the delay is otherwise left asleep until its timed wait ends; signalling on
 * every submit made futex wake-ups dominate the profile. A held submit (bd_sched_submit_held)
 * only notes that it would have signalled; bd_sched_kick, after the group, signals once.
 *
 * Submit validates the request and puts its inputs into the model's input order (so every
 * later step indexes inputs by config position), then queues it under `mu`.
 *
 * Threads: bd_sched_submit, _cancel, _available, _queue_depth, _expire and _close from any
 * thread; each worker thread (one per instance) owns its inst_t: the backend session, the
 * batch buffers and the batch array, except while bd_sched_run_inline's caller has claimed
 * it (under `mu`; the worker waits meanwhile); the timer thread owns nothing but reads the heap
 * under `mu`. An image model's instance may have image decoder threads (start_helpers): they
 * decode requests of the worker's current batch into their rows, from when the worker wakes
 * them until it saw the last one finish (decode_images, under the instance's `dmu`), and
 * touch nothing else. `mu` guards the queues, the heap, the breaker, the auto learner and
 * `closed`; it is never held across a backend run or a completion callback. In manual mode there
 * are no workers and no timer: bd_sched_step and bd_sched_expire do their jobs on the caller's
 * thread (one caller per instance at a time).
 *
 * Ownership: the scheduler borrows cfg, ops and bm and keeps its own copy of the policy. The
 * requests of a running batch are listed for the backend (bd_backend_batch_t: rows, id,
 * parameters) in the instance's run_reqs, which borrow from the requests. A queued request
 * is owned by the scheduler until its done callback, which hands it back. A request's outputs
 * live in one malloc'd block (req->out_block: the tensor array, the output names, then the
 * data). */
#include "sched/sched.h"

#include "sched/sched_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_QUEUE_SIZE 1024
#define ERR_LOG_INTERVAL_US 1000000u
#define MAX_WAIT_US 3600000000u
#define TIMEOUT_MSG "request timeout expired in queue"

typedef struct {
    unsigned char *data; /* owned */
    size_t cap;
} batch_buf_t;

/* What one thread needs to decode images: the decoder's buffers and base64 text decoded. */
typedef struct {
    bd_image_scratch_t *img; /* owned */
    unsigned char *b64;      /* owned */
    size_t b64_cap;
} decoder_t;

/* At most this many threads decode one batch's images (the worker and its helpers). */
#define MAX_DECODERS 8

typedef struct inst inst_t;

/* A thread that decodes a share of each batch's images beside its instance's worker. */
typedef struct {
    inst_t *in;
    decoder_t d;
    pthread_t thread;
    bool started;
} helper_t;

/* One model instance. Its worker thread only (or the bd_sched_step caller in manual mode);
 * the scheduler's creator and bd_sched_free before start and after join. */
struct inst {
    bd_sched_t *s;
    int index;
    bd_backend_instance_t *bi; /* owned: ops->instance_free */
    pthread_t thread;
    bool thread_started;
    batch_buf_t *in_bufs;     /* owned, cfg->n_inputs: gathered inputs, reused across batches */
    bd_tensor_t *in_tensors;  /* owned, cfg->n_inputs: the gathered batch as the backend sees it */
    bd_tensor_t *out_tensors; /* owned, cfg->n_outputs: filled by the backend's run */
    bd_req_t **batch;         /* owned, batch_cap entries: the requests of the current batch */
    bd_backend_req_t *run_reqs; /* owned, batch_cap entries: the batch as the backend sees it */
    size_t batch_cap;
    /* Image models (cfg->image): the worker's decoder, and the requests whose images failed
     * to decode in the current batch (batch_cap entries). With threads_per_instance above 1
     * (and worker threads), helpers decode a batch's requests beside the worker (decode_images):
     * the job's fields are written by the worker before it wakes them under dmu and read by
     * all until the last one reports done under dmu. */
    decoder_t dec;
    bd_req_t **failed;
    /* A batch the model refused for one request's input values (the backend's BD_EINVAL), run
     * again a request at a time so that only that request fails (batch_cap entries, when
     * batch_cap > 1). */
    bd_req_t **alone;
    helper_t *helpers; /* owned, n_helpers */
    int n_helpers;
    pthread_mutex_t dmu;
    pthread_cond_t dwake; /* helpers wait for a new job (dgen) or dstop */
    pthread_cond_t ddone; /* the worker waits for dbusy to reach 0 */
    bool dsync;           /* dmu and the conditions were made */
    uint64_t dgen;
    bool dstop;
    int dbusy;
    size_t dn;           /* the job: batch[0..dn) */
    atomic_size_t dnext; /* the next request of the job to decode */
    size_t *drow0;       /* owned, batch_cap: each request's first row in the buffer */
    unsigned char *ddst; /* the image input's batch buffer */
    size_t drow_bytes;
    bool probe; /* the current batch is the circuit breaker's probe (set under mu) */
    bool rerun; /* refused_values runs the current batch's requests one at a time */
    /* What those re-runs told the breaker, once for the batch: rerun_told, it was told (a
     * re-run failed the backend, or decided the probe); rerun_ok, one ran. */
    bool rerun_told;
    bool rerun_ok;
    bool waiting; /* under mu: its worker waits on cv for work */
    bool claimed; /* under mu: bd_sched_run_inline's caller runs it; its worker keeps off */
    bool parked;  /* under mu: its worker waits for the claim to end */
};

/* One priority level's FIFO; under mu. */
typedef struct {
    bd_list_t queue; /* of bd_req_t.link, oldest first */
    size_t depth;
    size_t cap;                  /* max_queue_size of this level */
    uint64_t default_timeout_us; /* 0: none */
} level_t;

typedef enum { CB_CLOSED = 0, CB_OPEN, CB_HALF_OPEN } cb_state_t;

struct bd_sched {
    const bd_model_config_t *cfg; /* borrowed */
    bd_sched_policy_t policy;     /* copied; read-only after bd_sched_new */
    const bd_backend_ops_t *ops;  /* borrowed */
    bd_backend_model_t *bm;       /* borrowed */
    bd_clock_t clock;
    bool real_clock; /* phase times then come from CLOCK_MONOTONIC in nanoseconds */
    bool manual;
    bd_model_metrics_t *metrics; /* borrowed, may be NULL */
    bool batching;               /* max_batch_size > 0 and dynamic batching on */
    size_t max_rows;             /* max_batch_size, at least 1 */
    size_t min_preferred;        /* smallest preferred batch size <= max_rows; 0: none */
    const char *model_name;      /* borrowed from cfg, never NULL */
    int n_levels;
    int default_level;                    /* 0-based */
    _Atomic uint64_t last_err_log_us;     /* log_batch_error's failed batches */
    _Atomic uint64_t last_refused_log_us; /* and refused ones, apart: clients cause those */

    pthread_mutex_t mu;
    pthread_cond_t cv;                      /* workers wait here */
    pthread_cond_t tcv;                     /* the timer waits here */
    level_t levels[BD_MAX_PRIORITY_LEVELS]; /* under mu */
    size_t depth;                           /* under mu: requests queued, all levels */
    size_t rows_queued;                     /* under mu: their rows */
    size_t bytes_queued;                    /* under mu: their inputs' bytes */
    bool closed;                            /* under mu */
    int idle_workers;                       /* under mu: workers waiting on cv */
    bool kick_owed;      /* under mu: a held submit would have woken a worker (bd_sched_kick) */
    uint64_t batch_ns;   /* under mu: running average of a batch's gather and run, in ns */
    bool batch_measured; /* under mu: batch_ns holds a measurement */
    bd_req_t **heap;     /* under mu: queued requests with a deadline */
    size_t heap_n;
    size_t heap_cap;
    bd_sched_auto_t autod; /* under mu */
    size_t auto_target;    /* under mu: rows at which a held auto batch runs; 0: none held */
    cb_state_t cb_state;   /* under mu, and the rest of the breaker */
    int cb_fails;          /* failed batches in a row */
    uint64_t cb_open_until;
    bool cb_probe_busy;
    char cb_last_err[BD_ERR_MSG_MAX];

    pthread_t timer;
    bool timer_started;
    bool timer_stop;     /* under mu */
    uint64_t timer_wake; /* under mu: the deadline the timer sleeps until; UINT64_MAX: none */

    int n_inst;
    inst_t *insts; /* owned */
    int image_idx; /* the input cfg->image decodes into; -1: none */
};

/* ---- requests -------------------------------------------------------------------------- */

/* A request and the first chunk of its arena in one allocation: a request with binary tensors
 * keeps its names, decoded header and call in it, so the request path makes one malloc here
 * instead of two. */
typedef struct {
    bd_req_t req; /* first: the block is freed through it */
    _Alignas(16) unsigned char arena[2048];
} req_block_t;

bd_req_t *bd_req_new(size_t arena_limit)
{
    req_block_t *b = malloc(sizeof *b);
    if (!b) {
        return NULL;
    }
    bd_req_t *req = &b->req;
    memset(req, 0, sizeof *req);
    bd_arena_init_in(&req->arena, arena_limit, b->arena, sizeof b->arena);
    bd_list_init(&req->link);
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

static bool is_image_input(const bd_model_config_t *cfg, const bd_io_t *io)
{
    return cfg->image.enabled && strcmp(io->name, cfg->image.input) == 0;
}

/* An image input: BYTES [n], one encoded JPEG or PNG per row (base64 text when it came in
 * JSON), each header read here so that most bad images fail before they are queued; a JPEG
 * whose frame header lies past the base64 prefix read here is checked when decoded. */
static int check_image_input(const bd_model_config_t *cfg, const bd_io_t *io, const bd_tensor_t *t,
                             bool json_text, bd_err_t *err)
{
    bool batching = cfg->max_batch_size > 0;
    char got[160];
    if (t->dtype != BD_DT_BYTES) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%s': expected datatype BYTES (encoded JPEG or PNG images, one "
                          "per row), got %s",
                          io->name, bd_dtype_name(t->dtype));
    }
    int64_t n = t->shape.ndim == 1 ? t->shape.dims[0] : -1;
    if (n < 1 || (batching ? n > cfg->max_batch_size : n != 1)) {
        if (batching) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%s': expected shape [n] for n images, n from 1 to %d, got %s",
                              io->name, cfg->max_batch_size,
                              fmt_dims(got, sizeof got, false, &t->shape));
        }
        return bd_err_set(err, BD_EINVAL, "input '%s': expected shape [1] (one image), got %s",
                          io->name, fmt_dims(got, sizeof got, false, &t->shape));
    }
    int rc = bd_bytes_check(io->name, t->data, t->byte_size, (size_t)n, err);
    const unsigned char *p = t->data;
    size_t off = 0;
    for (int64_t k = 0; rc == 0 && k < n; k++) {
        uint32_t len = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
                       (uint32_t)p[off + 3] << 24;
        const unsigned char *img = p + off + BD_BYTES_PREFIX;
        size_t index = n > 1 ? (size_t)k : SIZE_MAX;
        size_t ilen = len;
        bool partial = false;
        unsigned char head[3072];
        off += BD_BYTES_PREFIX + (size_t)len;
        if (json_text) {
            size_t m = len > 4096 ? 4096 : len;
            partial = m < len;
            if (!bd_base64_decode((const char *)img, m, head, &ilen)) {
                return index == SIZE_MAX
                           ? bd_err_set(err, BD_EINVAL,
                                        "input '%s': the image is not valid base64 (the standard "
                                        "alphabet, padded)",
                                        io->name)
                           : bd_err_set(err, BD_EINVAL,
                                        "input '%s': image %zu is not valid base64 (the standard "
                                        "alphabet, padded)",
                                        io->name, index);
            }
            img = head;
        }
        bd_image_info_t info;
        rc = bd_image_probe(img, ilen, partial, cfg->image.max_pixels, io->name, index, &info, err);
    }
    return rc;
}

int bd_sched_check_dtype(const bd_io_t *io, bd_dtype_t got, bd_err_t *err)
{
    if (got != io->dtype) {
        return bd_err_set(err, BD_EINVAL, "input '%s': expected datatype %s, got %s", io->name,
                          bd_dtype_name(io->dtype), bd_dtype_name(got));
    }
    return 0;
}

static int check_input(const bd_model_config_t *cfg, const bd_io_t *io, const bd_tensor_t *t,
                       bool json_text, bd_err_t *err)
{
    bool batching = cfg->max_batch_size > 0;
    if (is_image_input(cfg, io)) {
        return check_image_input(cfg, io, t, json_text, err);
    }
    char want[160];
    char got[160];
    if (bd_sched_check_dtype(io, t->dtype, err) != 0) {
        return BD_EINVAL;
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
    /* A zero dim makes the tensor empty whatever the other dims are, for every datatype. */
    size_t count = 0, bytes = 0;
    if (bd_shape_count(&t->shape, 0, &count, NULL) != 0 ||
        !bd_mul_size(count, bd_dtype_size(t->dtype), &bytes)) {
        return bd_err_set(err, BD_EINVAL, "input '%s': shape %s is too large", io->name,
                          fmt_dims(got, sizeof got, false, &t->shape));
    }
    if (t->dtype == BD_DT_BYTES) {
        /* Variable-size elements: the data must hold exactly the shape's elements. */
        return bd_bytes_check(io->name, t->data, t->byte_size, count, err);
    }
    if (t->byte_size != bytes) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%s': expected %zu bytes of data for shape %s, got %zu", io->name,
                          bytes, fmt_dims(got, sizeof got, false, &t->shape), t->byte_size);
    }
    if (bytes > 0 && !t->data) {
        return bd_err_set(err, BD_EINVAL, "input '%s': the tensor has no data", io->name);
    }
    if (t->dtype == BD_DT_BOOL) {
        /* Binary data is taken as sent; the models read a byte that is not 0 or 1 as
         * undefined (ONNX Runtime's Not turned 0x02 into 0x03, "true"). */
        const unsigned char *p = t->data;
        for (size_t i = 0; i < bytes; i++) {
            if (p[i] > 1) {
                return bd_err_set(err, BD_EINVAL,
                                  "input '%s': BOOL element %zu is the byte 0x%02x; expected 0 "
                                  "(false) or 1 (true)",
                                  io->name, i, p[i]);
            }
        }
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
        int rc = check_input(cfg, io, t, i < 64 && (in->json_text >> i & 1), err);
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
        const bd_io_t *io = find_io(cfg->outputs, cfg->n_outputs, name);
        if (!io) {
            if (cfg->n_outputs == 0) {
                return bd_err_set(err, BD_EINVAL, "unknown output '%s'; the model has no outputs",
                                  name);
            }
            return bd_err_set(err, BD_EINVAL, "unknown output '%s'; the model's outputs are %s",
                              name, fmt_names(list, sizeof list, cfg->outputs, cfg->n_outputs));
        }
        size_t k = in->outputs[i].classification, classes = 0;
        if (k > 0 && io->dtype == BD_DT_BYTES) {
            return bd_err_set(err, BD_EINVAL,
                              "output '%s' is BYTES; classification needs a numeric output", name);
        }
        /* With fixed class dims the count is known now; variable ones are checked when the
         * output exists (bd_classify). */
        if (k > 0 && bd_shape_count(&io->dims, 0, &classes, NULL) == 0 && k > classes) {
            return bd_err_set(err, BD_EINVAL,
                              "output '%s': classification asks for %zu classes but the output "
                              "has %zu",
                              name, k, classes);
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
                    if (j < 64) { /* keep json_text's bits with their inputs */
                        uint64_t bi = in->json_text >> i & 1, bj = in->json_text >> j & 1;
                        in->json_text &= ~((uint64_t)1 << i | (uint64_t)1 << j);
                        in->json_text |= bi << j | bj << i;
                    }
                }
                break;
            }
        }
    }
}

/* ---- queues and the deadline heap (under mu) ------------------------------------------- */

static void heap_set(bd_sched_t *s, size_t i, bd_req_t *r)
{
    s->heap[i] = r;
    r->heap_idx = i;
}

static void heap_up(bd_sched_t *s, size_t i)
{
    bd_req_t *r = s->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->deadline_us <= r->deadline_us) {
            break;
        }
        heap_set(s, i, s->heap[p]);
        i = p;
    }
    heap_set(s, i, r);
}

static void heap_down(bd_sched_t *s, size_t i)
{
    bd_req_t *r = s->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n) {
            break;
        }
        if (c + 1 < s->heap_n && s->heap[c + 1]->deadline_us < s->heap[c]->deadline_us) {
            c++;
        }
        if (s->heap[c]->deadline_us >= r->deadline_us) {
            break;
        }
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, r);
}

static int heap_push(bd_sched_t *s, bd_req_t *r)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        size_t bytes;
        bd_req_t **h = NULL;
        if (bd_mul_size(cap, sizeof *h, &bytes)) {
            h = realloc(s->heap, bytes);
        }
        if (!h) {
            return BD_ENOMEM;
        }
        s->heap = h;
        s->heap_cap = cap;
    }
    heap_set(s, s->heap_n++, r);
    heap_up(s, s->heap_n - 1);
    return 0;
}

static void heap_remove(bd_sched_t *s, bd_req_t *r)
{
    size_t i = r->heap_idx;
    bd_req_t *last = s->heap[--s->heap_n];
    if (i < s->heap_n) {
        heap_set(s, i, last);
        heap_up(s, i);
        heap_down(s, last->heap_idx);
    }
}

/* The highest non-empty level, or -1 when every queue is empty. */
static int top_level(const bd_sched_t *s)
{
    for (int l = 0; l < s->n_levels; l++) {
        if (!bd_list_empty(&s->levels[l].queue)) {
            return l;
        }
    }
    return -1;
}

/* Take a queued request out of its level's FIFO and the heap. */
static void q_unlink(bd_sched_t *s, bd_req_t *r)
{
    level_t *l = &s->levels[r->level];
    bd_list_unlink(&r->link);
    l->depth--;
    s->depth--;
    s->rows_queued -= r->rows;
    s->bytes_queued -= r->in_bytes;
    if (r->deadline_us) {
        heap_remove(s, r);
    }
    r->queued = false;
    bd_metrics_queue_depth_add(s->metrics, -1);
}

/* Move every request whose deadline is at or before `now` out of the queues onto `out` (an
 * initialised list head), earliest deadline first. True when it moved any. */
static bool take_expired(bd_sched_t *s, uint64_t now, bd_list_t *out)
{
    bool any = false;
    while (s->heap_n > 0 && s->heap[0]->deadline_us <= now) {
        bd_req_t *r = s->heap[0];
        q_unlink(s, r);
        bd_list_push_back(out, &r->link);
        any = true;
    }
    if (any && s->idle_workers > 0) {
        pthread_cond_broadcast(&s->cv); /* a head may be gone: waiting workers recompute */
    }
    return any;
}

/* Hand a finished request back to its owner; the in-flight gauge counts from a successful
 * submit to here. No lock held. */
static void complete(bd_sched_t *s, bd_req_t *r)
{
    bd_metrics_inflight_add(s->metrics, -1);
    if (r->done) {
        r->done(r, r->done_ctx); /* r belongs to the callee from here on */
    }
}

/* Complete a take_expired list (no lock held; the list is the caller's). Returns how many. */
static int complete_expired(bd_sched_t *s, bd_list_t *list)
{
    int n = 0;
    uint64_t now = bd_list_empty(list) ? 0 : bd_clock_now(&s->clock);
    bd_list_t *node;
    while ((node = bd_list_first(list))) {
        bd_req_t *r = BD_CONTAINER_OF(node, bd_req_t, link);
        bd_list_unlink(node); /* before done: the callee may free r */
        r->status = BD_ETIMEOUT;
        bd_err_set(&r->err, BD_ETIMEOUT, TIMEOUT_MSG);
        bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_TIMEOUT);
        bd_metrics_request_fail_duration(s->metrics, now - r->arrival_us);
        n++;
        complete(s, r);
    }
    return n;
}

/* ---- circuit breaker (under mu) -------------------------------------------------------- */

static bool cb_enabled(const bd_sched_t *s)
{
    return s->policy.circuit_breaker.consecutive_failures > 0;
}

static void cb_refresh(bd_sched_t *s, uint64_t now)
{
    if (s->cb_state == CB_OPEN && now >= s->cb_open_until) {
        s->cb_state = CB_HALF_OPEN;
        s->cb_probe_busy = false;
    }
}

/* What submits fail with while the breaker is open: BD_EUNAVAIL, a sentence with the time
 * left and the last error, and that time in whole seconds (rounded up) to retry after. */
static void cb_refusal(const bd_sched_t *s, uint64_t now, bd_err_t *err)
{
    uint64_t left = s->cb_open_until > now ? s->cb_open_until - now : 0;
    uint64_t tenths = (left + 99999u) / 100000u; /* round up: never "0.0 s" while closed */
    int n = snprintf(err->msg, sizeof err->msg,
                     "model '%s' version %" PRId64 " is unavailable for another %" PRIu64
                     ".%" PRIu64 " s after %d failed batches in a row; last error: ",
                     s->model_name, s->cfg->version, tenths / 10u, tenths % 10u, s->cb_fails);
    if (n >= 0 && (size_t)n < sizeof err->msg) {
        /* cut at the end of msg */
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, "%s", s->cb_last_err);
    }
    uint64_t secs = (left + 999999u) / 1000000u;
    err->code = BD_EUNAVAIL;
    err->retry_after_s = secs == 0 ? 1 : secs > UINT_MAX ? UINT_MAX : (unsigned)secs;
}

/* Move every queued request onto `out` (an initialised list head). */
static void take_all_queued(bd_sched_t *s, bd_list_t *out)
{
    for (int l = 0; l < s->n_levels; l++) {
        bd_list_t *node;
        while ((node = bd_list_first(&s->levels[l].queue))) {
            bd_req_t *r = BD_CONTAINER_OF(node, bd_req_t, link);
            q_unlink(s, r);
            bd_list_push_back(out, &r->link);
        }
    }
}

/* A batch finished on `in` (ok or not). When it opens the breaker, the queued requests move
 * onto `refused` with the error new submits get in `refusal`: they are answered at once
 * rather than run one failing batch after another (the caller completes them unlocked). */
static void cb_record(bd_sched_t *s, inst_t *in, bool ok, const bd_err_t *err, uint64_t now,
                      bd_list_t *refused, bd_err_t *refusal)
{
    bool probe = in->probe;
    in->probe = false;
    if (!cb_enabled(s)) {
        return;
    }
    if (probe) {
        s->cb_probe_busy = false;
    }
    if (ok) {
        /* Only the probe closes an open breaker: a batch that was already running when it
         * opened says nothing of the cool-down (CONFIG.md: 503 for cooldown_us, then one
         * probe decides). */
        if (probe && s->cb_state != CB_CLOSED) {
            BD_INFO("sched", "circuit closed model=%s version=%" PRId64, s->model_name,
                    s->cfg->version);
            pthread_cond_broadcast(&s->cv);
            s->cb_state = CB_CLOSED;
        }
        s->cb_fails = s->cb_state == CB_CLOSED ? 0 : s->cb_fails;
        return;
    }
    if (s->cb_fails < INT32_MAX) {
        s->cb_fails++;
    }
    snprintf(s->cb_last_err, sizeof s->cb_last_err, "%s", err->msg);
    if (probe || (s->cb_state == CB_CLOSED &&
                  s->cb_fails >= s->policy.circuit_breaker.consecutive_failures)) {
        uint64_t cool = s->policy.circuit_breaker.cooldown_us;
        s->cb_state = CB_OPEN;
        s->cb_open_until = now > UINT64_MAX - cool ? UINT64_MAX : now + cool;
        BD_WARN("sched",
                "circuit open model=%s version=%" PRId64 " failed_batches=%d cooldown_us=%" PRIu64
                " probe=%d error=\"%s\"",
                s->model_name, s->cfg->version, s->cb_fails, cool, probe, err->msg);
        cb_refusal(s, now, refusal);
        take_all_queued(s, refused);
        pthread_cond_broadcast(&s->cv); /* waiting workers recompute: the queue is empty */
    }
}

/* Complete a list cb_record refused (no lock held; the list is the caller's). */
static void complete_refused(bd_sched_t *s, bd_list_t *list, const bd_err_t *refusal)
{
    bd_list_t *node;
    while ((node = bd_list_first(list))) {
        bd_req_t *r = BD_CONTAINER_OF(node, bd_req_t, link);
        bd_list_unlink(node); /* before done: the callee may free r */
        r->status = refusal->code;
        r->err = *refusal;
        bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_REJECTED);
        complete(s, r);
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

static bool is_preferred(const bd_sched_t *s, size_t rows)
{
    for (size_t i = 0; i < s->policy.n_preferred_batch_sizes && i < BD_MAX_LIST; i++) {
        if ((size_t)s->policy.preferred_batch_sizes[i] == rows) {
            return true;
        }
    }
    return false;
}

/* Rows queued at which a submit wakes a worker that waits for the delay: from then on a
 * batch may be ready before the delay ends. */
static size_t wake_rows(const bd_sched_t *s)
{
    if (!s->batching || s->closed) {
        return 1;
    }
    if (s->policy.delay_auto) {
        return s->auto_target ? s->auto_target : 1;
    }
    if (s->policy.max_queue_delay_us == 0) {
        return 1;
    }
    return s->min_preferred ? s->min_preferred : s->max_rows;
}

/* Select the next batch for `in` at time `now`. When it is ready, unlink its requests from
 * the queues into in->batch and return how many (rows in *rows_out); otherwise return 0 with
 * *wake_us set to when it will be (UINT64_MAX when the queue is empty or only a finishing
 * probe can make it ready). Caller holds mu and has taken the expired requests out. */
static size_t take_batch(bd_sched_t *s, inst_t *in, uint64_t now, size_t *rows_out,
                         uint64_t *wake_us)
{
    *wake_us = UINT64_MAX;
    int top = top_level(s);
    if (top < 0) {
        return 0;
    }
    if (cb_enabled(s)) {
        cb_refresh(s, now);
        if (s->cb_state == CB_HALF_OPEN && s->cb_probe_busy) {
            return 0; /* one probe at a time; its end broadcasts */
        }
    }
    bd_req_t *head = BD_CONTAINER_OF(bd_list_first(&s->levels[top].queue), bd_req_t, link);
    in->batch[0] = head;
    size_t n = 1;
    size_t rows = head->rows;
    uint64_t oldest = head->arrival_us; /* the batch's delay counts from its oldest request */
    size_t pref_n = 0;
    size_t pref_rows = 0;
    bool can_grow = true;
    if (s->batching) {
        if (is_preferred(s, rows)) {
            pref_n = 1;
            pref_rows = rows;
        }
        for (int l = top; l < s->n_levels && can_grow && rows < s->max_rows; l++) {
            const bd_list_t *q = &s->levels[l].queue;
            for (bd_list_t *it = l == top ? head->link.next : q->next;
                 it != q && rows < s->max_rows; it = it->next) {
                bd_req_t *r = BD_CONTAINER_OF(it, bd_req_t, link);
                if (!same_item_dims(s, head, r)) {
                    continue;
                }
                if (r->rows > s->max_rows - rows) {
                    can_grow = false; /* it waits for the next batch; this one cannot grow */
                    break;
                }
                in->batch[n++] = r;
                rows += r->rows;
                oldest = r->arrival_us < oldest ? r->arrival_us : oldest;
                if (is_preferred(s, rows)) {
                    pref_n = n;
                    pref_rows = rows;
                }
            }
        }
    }
    bool full = rows >= s->max_rows;
    bool ready = !s->batching || s->closed || full || !can_grow || pref_n > 0;
    if (!ready && s->policy.delay_auto) {
        size_t target = 0;
        uint64_t until =
            bd_sched_auto_hold_until(&s->autod, rows, s->max_rows, s->n_inst, oldest, now, &target);
        if (until == 0) {
            ready = true;
        } else {
            *wake_us = until;
            s->auto_target = target;
        }
    } else if (!ready) {
        uint64_t due;
        if (__builtin_add_overflow(oldest, s->policy.max_queue_delay_us, &due)) {
            due = UINT64_MAX - 1;
        }
        if (s->policy.max_queue_delay_us == 0 || now >= due) {
            ready = true;
        } else {
            *wake_us = due;
        }
    }
    if (!ready) {
        return 0;
    }
    if (!full && pref_n > 0) {
        n = pref_n;
        rows = pref_rows;
    }
    for (size_t k = 0; k < n; k++) {
        q_unlink(s, in->batch[k]);
    }
    s->auto_target = 0;
    if (cb_enabled(s) && s->cb_state == CB_HALF_OPEN) {
        in->probe = true;
        s->cb_probe_busy = true;
    }
    *rows_out = rows;
    return n;
}

/* ---- running a batch (no lock held) ---------------------------------------------------- */

/* The shape the backend sees for the image input of a batch of `rows`: the model's dims
 * with variable ones taken from the preprocess spec (and a leading 1 without batching). */
static void image_shape(const bd_sched_t *s, size_t rows, bd_shape_t *out)
{
    const bd_model_config_t *cfg = s->cfg;
    const bd_image_spec_t *im = &cfg->image;
    const bd_shape_t *d = &cfg->inputs[s->image_idx].dims;
    int64_t chw[3];
    if (im->layout == BD_IMAGE_NCHW) {
        chw[0] = im->channels, chw[1] = im->height, chw[2] = im->width;
    } else {
        chw[0] = im->height, chw[1] = im->width, chw[2] = im->channels;
    }
    out->ndim = 0;
    if (cfg->max_batch_size > 0) {
        out->dims[out->ndim++] = (int64_t)rows;
    } else if (d->ndim == 4) {
        out->dims[out->ndim++] = 1;
    }
    for (int k = 0; k < 3; k++) {
        out->dims[out->ndim++] = chw[k];
    }
}

/* Check that the model's input `cfg->image.input` can take the images (FP32, three dims in
 * the layout, or four with a leading 1 when the model does not batch; fixed dims equal to
 * the spec). Returns its index, or -1 with err set. */
static int image_input_index(const bd_model_config_t *cfg, bd_err_t *err)
{
    const bd_image_spec_t *im = &cfg->image;
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        const bd_io_t *io = &cfg->inputs[i];
        if (strcmp(io->name, im->input) != 0) {
            continue;
        }
        if (io->dtype != BD_DT_FP32) {
            bd_err_set(err, BD_EINVAL,
                       "config.json: 'preprocess.input' '%s' is %s; image preprocessing writes "
                       "FP32",
                       io->name, bd_dtype_name(io->dtype));
            return -1;
        }
        int64_t want[3];
        if (im->layout == BD_IMAGE_NCHW) {
            want[0] = im->channels, want[1] = im->height, want[2] = im->width;
        } else {
            want[0] = im->height, want[1] = im->width, want[2] = im->channels;
        }
        const bd_shape_t *d = &io->dims;
        int lead = cfg->max_batch_size == 0 && d->ndim == 4 ? 1 : 0;
        bool ok = d->ndim == 3 + lead && (!lead || d->dims[0] == 1 || d->dims[0] == -1);
        for (int k = 0; ok && k < 3; k++) {
            ok = d->dims[k + lead] == -1 || d->dims[k + lead] == want[k];
        }
        if (!ok) {
            char a[160];
            bd_err_set(err, BD_EINVAL,
                       "config.json: 'preprocess' makes [%lld,%lld,%lld] (%s) but input '%s' has "
                       "dims %s",
                       (long long)want[0], (long long)want[1], (long long)want[2],
                       im->layout == BD_IMAGE_NCHW ? "NCHW" : "NHWC", io->name,
                       fmt_dims(a, sizeof a, false, d));
            return -1;
        }
        return (int)i;
    }
    char list[BD_ERR_MSG_MAX];
    bd_err_set(err, BD_EINVAL,
               "config.json: 'preprocess.input' '%s' is not an input of the model; its inputs are "
               "%s",
               im->input, fmt_names(list, sizeof list, cfg->inputs, cfg->n_inputs));
    return -1;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Decode request r's images (its image input: one per row, checked at submit) into rows
 * [row0, row0 + r->rows) of the image batch buffer `dst`. */
static int decode_request_images(bd_sched_t *s, decoder_t *d, bd_req_t *r, float *dst,
                                 bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    const bd_tensor_t *t = &r->in.inputs[s->image_idx];
    const char *name = cfg->inputs[s->image_idx].name;
    size_t elems = bd_image_row_elems(&cfg->image);
    const unsigned char *p = t->data;
    size_t off = 0;
    for (size_t j = 0; j < r->rows; j++) {
        size_t len = le32(p + off);
        const unsigned char *img = p + off + BD_BYTES_PREFIX;
        size_t index = r->rows > 1 ? j : SIZE_MAX;
        off += BD_BYTES_PREFIX + len;
        if (s->image_idx < 64 && (r->in.json_text >> s->image_idx & 1)) {
            size_t need = len / 4 * 3 + 3;
            if (d->b64_cap < need) {
                free(d->b64);
                d->b64 = malloc(need);
                d->b64_cap = d->b64 ? need : 0;
                if (!d->b64) {
                    return bd_err_set(err, BD_ENOMEM, "out of memory decoding base64 of input '%s'",
                                      name);
                }
            }
            if (!bd_base64_decode((const char *)img, len, d->b64, &len)) {
                return index == SIZE_MAX
                           ? bd_err_set(err, BD_EINVAL, "input '%s': the image is not valid base64",
                                        name)
                           : bd_err_set(err, BD_EINVAL, "input '%s': image %zu is not valid base64",
                                        name, index);
            }
            img = d->b64;
        }
        int rc =
            bd_image_preprocess(&cfg->image, img, len, name, index, d->img, dst + j * elems, err);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Decode the job's requests that are still untaken (any thread of the job). */
static void decode_share(bd_sched_t *s, inst_t *in, decoder_t *d)
{
    size_t k;
    while ((k = atomic_fetch_add(&in->dnext, 1)) < in->dn) {
        bd_req_t *r = in->batch[k];
        float *dst = (float *)(void *)(in->ddst + in->drow0[k] * in->drow_bytes);
        r->status = decode_request_images(s, d, r, dst, &r->err);
    }
}

static void *helper_main(void *arg)
{
    helper_t *hp = arg;
    inst_t *in = hp->in;
    uint64_t seen = 0;
    pthread_mutex_lock(&in->dmu);
    for (;;) {
        while (!in->dstop && in->dgen == seen) {
            pthread_cond_wait(&in->dwake, &in->dmu);
        }
        if (in->dstop) {
            break;
        }
        seen = in->dgen;
        pthread_mutex_unlock(&in->dmu);
        decode_share(in->s, in, &hp->d);
        pthread_mutex_lock(&in->dmu);
        if (--in->dbusy == 0) {
            pthread_cond_signal(&in->ddone);
        }
    }
    pthread_mutex_unlock(&in->dmu);
    return NULL;
}

/* Decode the batch's images into the image input's buffer, each request at its rows, on the
 * worker and its helpers (a request at a time each, as they come free). A request whose image
 * fails leaves the batch (the rows after it move up, *rows reduced) and goes to in->failed
 * with its reason, so it fails alone. Returns the requests that stay. */
static size_t decode_images(bd_sched_t *s, inst_t *in, size_t n, size_t *rows, size_t *n_failed)
{
    const bd_model_config_t *cfg = s->cfg;
    size_t row_bytes = bd_image_row_elems(&cfg->image) * sizeof(float);
    batch_buf_t *buf = &in->in_bufs[s->image_idx];
    size_t total = 0;
    bool ok = bd_mul_size(row_bytes, *rows, &total);
    if (ok && buf->cap < total) {
        free(buf->data);
        buf->data = malloc(total);
        buf->cap = buf->data ? total : 0;
        ok = buf->data != NULL;
    }
    *n_failed = 0;
    if (!ok) {
        for (size_t k = 0; k < n; k++) {
            bd_req_t *r = in->batch[k];
            r->status =
                bd_err_set(&r->err, BD_ENOMEM, "out of memory for a batch of %zu images", *rows);
            in->failed[(*n_failed)++] = r;
        }
        *rows = 0;
        return 0;
    }
    size_t row = 0;
    for (size_t k = 0; k < n; k++) {
        in->drow0[k] = row;
        row += in->batch[k]->rows;
    }
    in->dn = n;
    in->ddst = buf->data;
    in->drow_bytes = row_bytes;
    atomic_store(&in->dnext, 0);
    int helpers = n > 1 ? in->n_helpers : 0;
    if (helpers > 0) {
        pthread_mutex_lock(&in->dmu);
        in->dbusy = helpers;
        in->dgen++;
        pthread_cond_broadcast(&in->dwake);
        pthread_mutex_unlock(&in->dmu);
    }
    decode_share(s, in, &in->dec);
    if (helpers > 0) {
        pthread_mutex_lock(&in->dmu);
        while (in->dbusy > 0) {
            pthread_cond_wait(&in->ddone, &in->dmu);
        }
        pthread_mutex_unlock(&in->dmu);
    }
    size_t kept = 0;
    row = 0;
    for (size_t k = 0; k < n; k++) {
        bd_req_t *r = in->batch[k];
        if (r->status != 0) {
            in->failed[(*n_failed)++] = r;
            continue;
        }
        if (in->drow0[k] != row) { /* a request before it failed: close the gap */
            memmove(buf->data + row * row_bytes, buf->data + in->drow0[k] * row_bytes,
                    r->rows * row_bytes);
        }
        in->batch[kept++] = r;
        row += r->rows;
    }
    *rows = row;
    return kept;
}

/* Concatenate the batch's inputs (row-major with the batch dim first, so a request's rows
 * are its whole data) into the instance's buffers. The image input was decoded into its
 * buffer already (decode_images). */
static int gather(bd_sched_t *s, inst_t *in, size_t n, size_t rows, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        if ((int)i == s->image_idx) {
            bd_tensor_t *bt = &in->in_tensors[i];
            bt->name = cfg->inputs[i].name;
            bt->dtype = BD_DT_FP32;
            image_shape(s, rows, &bt->shape);
            bt->data = in->in_bufs[i].data;
            bt->byte_size = rows * bd_image_row_elems(&cfg->image) * sizeof(float);
            continue;
        }
        const bd_tensor_t *first = &in->batch[0]->in.inputs[i];
        size_t row_bytes = first->byte_size / in->batch[0]->rows;
        size_t total;
        bool ok = bd_mul_size(row_bytes, rows, &total);
        if (first->dtype == BD_DT_BYTES) {
            /* Rows vary in size (see tensor.h's BYTES layout): the batch is the requests'
             * buffers back to back, each already checked element by element. */
            total = 0;
            for (size_t k = 0; k < n && ok; k++) {
                ok = bd_add_size(total, in->batch[k]->in.inputs[i].byte_size, &total);
            }
        }
        if (!ok) {
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
        bool is_bytes = t->dtype == BD_DT_BYTES;
        size_t count = 0, bytes = 0;
        bool ok = (is_bytes || bd_dtype_size(t->dtype) > 0) &&
                  bd_shape_count(&t->shape, 0, &count, NULL) == 0 &&
                  bd_mul_size(count, bd_dtype_size(t->dtype), &bytes);
        if (ok && is_bytes) {
            /* The data must be exactly `count` elements. */
            ok = bd_bytes_check(name, t->data, t->byte_size, count, NULL) == 0;
            bytes = t->byte_size;
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

/* Where rows [row0, row0 + n) of output `t` (a batch of `rows`) lie in its data. BYTES rows
 * vary in size, so their elements are walked (check_outputs checked every length). */
static void row_span(const bd_tensor_t *t, size_t rows, size_t row0, size_t n, size_t *start,
                     size_t *len)
{
    if (t->dtype != BD_DT_BYTES) {
        size_t row_bytes = t->byte_size / rows;
        *start = row_bytes * row0;
        *len = row_bytes * n;
        return;
    }
    size_t count = 0, bad, need, left;
    bd_shape_count(&t->shape, 0, &count, NULL);
    size_t per_row = count / rows;
    *start = 0;
    *len = 0;
    if (bd_bytes_skip(t->data, t->byte_size, per_row * row0, start, &bad, &need, &left)) {
        bd_bytes_skip((const unsigned char *)t->data + *start, t->byte_size - *start, per_row * n,
                      len, &bad, &need, &left);
    }
}

/* Whether request r asked for the output `name` (a request that lists none asks for all). */
static bool wants_output(const bd_req_t *r, const char *name)
{
    for (size_t k = 0; k < r->in.n_outputs; k++) {
        if (r->in.outputs[k].name && strcmp(r->in.outputs[k].name, name) == 0) {
            return true;
        }
    }
    return r->in.n_outputs == 0;
}

/* Copy request `r`'s rows [row0, row0 + r->rows) of every output it asked for into one new
 * block; the others keep their shape with no bytes. */
static int scatter(bd_sched_t *s, inst_t *in, bd_req_t *r, size_t row0, size_t rows, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    size_t n_out = cfg->n_outputs;
    free(r->out_block);
    r->out_block = NULL;
    r->outputs = NULL;
    r->n_outputs = 0;
    /* Classification of an output with variable class dims is checked now that the output
     * exists (bd_sched_validate did fixed ones): a refusal is this request's (BD_EINVAL,
     * counted invalid), not a success whose reply then fails. */
    for (size_t j = 0; j < r->in.n_outputs; j++) {
        const bd_io_t *io = r->in.outputs[j].classification
                                ? find_io(cfg->outputs, n_out, r->in.outputs[j].name)
                                : NULL;
        if (io) {
            bd_tensor_t t = in->out_tensors[io - cfg->outputs];
            t.name = io->name;
            int rc = bd_classify_check(&t, r->in.outputs[j].classification, cfg->max_batch_size > 0,
                                       NULL, err);
            if (rc != 0) {
                return rc;
            }
        }
    }
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
        size_t start, part = 0;
        if (wants_output(r, cfg->outputs[i].name)) {
            row_span(&in->out_tensors[i], rows, row0, r->rows, &start, &part);
        }
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
        size_t start = 0, part = 0;
        if (wants_output(r, cfg->outputs[i].name)) {
            row_span(t, rows, row0, r->rows, &start, &part);
        }
        off = align16(off);
        if (part > 0) {
            memcpy(block + off, (const unsigned char *)t->data + start, part);
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

/* A failed batch's WARN line, at most one per ERR_LOG_INTERVAL_US a model and `last` (its
 * failed batches', or its refused ones', so that clients' bad values do not hide the backend's
 * faults). `what`: "batch failed", or what was done about it. */
static void log_batch_error(bd_sched_t *s, _Atomic uint64_t *last_us, const char *what,
                            const bd_err_t *err, size_t n)
{
    uint64_t now = bd_now_us();
    uint64_t last = atomic_load_explicit(last_us, memory_order_relaxed);
    if (last != 0 && now - last < ERR_LOG_INTERVAL_US) {
        return;
    }
    if (atomic_compare_exchange_strong(last_us, &last, now)) {
        BD_WARN("sched", "%s model=%s version=%" PRId64 " requests=%zu error=\"%s\"", what,
                s->model_name, s->cfg->version, n, err->msg);
    }
}

/* Run in->batch[0..n) (rows in all), complete every request, then call their callbacks. */

/* Nanoseconds for the phase statistics: the real monotonic clock, or the injected clock's
 * microseconds in tests (so their phase times are exact). */
static uint64_t now_ns(const bd_sched_t *s)
{
    if (s->real_clock) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    return bd_clock_now(&s->clock) * 1000u;
}

/* List in->batch[0..n) for the backend: each request's rows, id and parameters. */
static void describe_batch(const inst_t *in, size_t n, bd_backend_batch_t *batch)
{
    size_t row0 = 0;
    for (size_t k = 0; k < n; k++) {
        const bd_req_t *r = in->batch[k];
        in->run_reqs[k] = (bd_backend_req_t){.row0 = row0,
                                             .rows = r->rows,
                                             .id = r->in.id,
                                             .params = r->in.params,
                                             .n_params = r->in.n_params};
        row0 += r->rows;
    }
    batch->reqs = in->run_reqs;
    batch->n_reqs = n;
}

/* A circuit-breaker probe this instance held, given back undecided: what it ran said nothing
 * of the backend (no request left, or only a client's bad values). */
static void give_back_probe(bd_sched_t *s, inst_t *in)
{
    if (in->probe) {
        pthread_mutex_lock(&s->mu);
        in->probe = false;
        s->cb_probe_busy = false;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

/* Complete the requests whose images failed to decode (counted invalid: the client's
 * data, not the model, was at fault). `empty`: nothing is left to run, so a circuit-breaker
 * probe this batch held is given back undecided. */
static void fail_images(bd_sched_t *s, inst_t *in, size_t n_failed, bool empty)
{
    if (empty) {
        give_back_probe(s, in);
    }
    uint64_t now = bd_clock_now(&s->clock);
    for (size_t k = 0; k < n_failed; k++) {
        bd_req_t *r = in->failed[k];
        in->failed[k] = NULL;
        r->start_us = now;
        r->end_us = now;
        bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_INVALID);
        complete(s, r);
    }
}

static void run_batch(bd_sched_t *s, inst_t *in, size_t n, size_t rows);

/* Under mu: a batch took `ns` to gather and run (bd_sched_run_inline's average). */
static void learn_cost(bd_sched_t *s, uint64_t ns)
{
    s->batch_ns = s->batch_measured ? (s->batch_ns * 7 + ns) / 8 : ns;
    s->batch_measured = true;
}

/* The model refused in->batch[0..n)'s input values (an index out of its table's range, say),
 * a batch run_batch started at `start` (the clock's µs) and t0 (now_ns). The fault is a
 * request's, not the backend's, so the breaker is not told of the refusal. Several requests
 * run again one at a time, so that only those whose own values the model refuses fail, instead
 * of every client that shared their batch; one alone is answered 400 with the model's reason
 * (outcome invalid). The batch as formed is told once: its cost, the refusal's and the re-runs'
 * together, to the average that decides inline runs; and the breaker, by the first re-run that
 * fails the backend, or that runs or fails in a probe batch, before that re-run's clients have
 * their answers (run_batch), else by the end that one ran (a probe batch whose requests were
 * all refused gives its probe back undecided). */
static void refused_values(bd_sched_t *s, inst_t *in, size_t n, uint64_t start, uint64_t t0,
                           const bd_err_t *err)
{
    if (n > 1) {
        /* WARN: a model that cannot run batches (ONNX Runtime says INVALID_ARGUMENT for some
         * batch-size faults too) would otherwise lose its batching unseen. */
        log_batch_error(s, &s->last_refused_log_us,
                        "batch refused; its requests run again one at a time", err, n);
        memcpy(in->alone, in->batch, n * sizeof *in->batch);
        in->rerun = true;
        in->rerun_told = false;
        in->rerun_ok = false;
        for (size_t k = 0; k < n; k++) {
            in->batch[0] = in->alone[k];
            in->alone[k] = NULL;
            run_batch(s, in, 1, in->batch[0]->rows);
        }
        in->rerun = false;
        bd_list_t refused;
        bd_list_init(&refused);
        bd_err_t refusal = {0};
        pthread_mutex_lock(&s->mu);
        learn_cost(s, now_ns(s) - t0);
        if (!in->rerun_told && in->rerun_ok) {
            cb_record(s, in, true, err, bd_clock_now(&s->clock), &refused, &refusal);
        }
        pthread_mutex_unlock(&s->mu);
        give_back_probe(s, in); /* all refused: the probe is undecided */
        complete_refused(s, &refused, &refusal);
        return;
    }
    if (!in->rerun) {
        pthread_mutex_lock(&s->mu);
        learn_cost(s, now_ns(s) - t0);
        pthread_mutex_unlock(&s->mu);
        give_back_probe(s, in);
    }
    bd_req_t *r = in->batch[0];
    in->batch[0] = NULL;
    r->status = BD_EINVAL;
    bd_err_set(&r->err, BD_EINVAL, "the model cannot run on this request's input values: %s",
               err->msg);
    r->start_us = start;
    r->end_us = bd_clock_now(&s->clock);
    bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_INVALID);
    complete(s, r);
}

/* Run in->batch[0..n) (rows in all), complete every request, then call their callbacks. */
static void run_batch(bd_sched_t *s, inst_t *in, size_t n, size_t rows)
{
    const bd_model_config_t *cfg = s->cfg;
    bd_err_t err = {0};
    uint64_t start = bd_clock_now(&s->clock);
    uint64_t t0 = now_ns(s);
    int rc = 0;
    const bd_tensor_t *inputs = in->batch[0]->in.inputs; /* one request: no copy */
    size_t n_failed = 0;
    if (s->image_idx >= 0) {
        n = decode_images(s, in, n, &rows, &n_failed);
        fail_images(s, in, n_failed, n == 0);
        if (n == 0) {
            return;
        }
    }
    if (n > 1 || s->image_idx >= 0) {
        rc = gather(s, in, n, rows, &err);
        inputs = in->in_tensors;
    }
    uint64_t t1 = now_ns(s);
    if (rc == 0) {
        bd_backend_batch_t batch;
        describe_batch(in, n, &batch);
        memset(in->out_tensors, 0, cfg->n_outputs * sizeof *in->out_tensors);
        rc = s->ops->run(in->bi, inputs, cfg->n_inputs, in->out_tensors, cfg->n_outputs, &batch,
                         &err);
        if (rc != 0) {
            rc = rc == BD_EINVAL ? BD_EINVAL : BD_EBACKEND;
            err.code = rc;
            if (err.msg[0] == '\0') {
                bd_err_set(&err, rc, "the backend failed to run a batch of %zu rows", rows);
            }
        } else {
            rc = check_outputs(s, in, rows, &err);
        }
    }
    if (rc == BD_EINVAL) {
        refused_values(s, in, n, start, t0, &err);
        return;
    }
    uint64_t t2 = now_ns(s);
    /* Breaker and learner first, so a client that sees this batch's answer and submits again
     * already meets the new state. */
    pthread_mutex_lock(&s->mu);
    bd_list_t refused;
    bd_list_init(&refused);
    bd_err_t refusal = {0};
    if (in->rerun) {
        /* One of a refused batch's re-runs: the batch is one to the breaker (refused_values). */
        in->rerun_ok |= rc == 0;
        if (!in->rerun_told && (rc != 0 || in->probe)) {
            in->rerun_told = true;
            cb_record(s, in, rc == 0, &err, bd_clock_now(&s->clock), &refused, &refusal);
        }
    } else {
        learn_cost(s, t2 - t0);
        cb_record(s, in, rc == 0, &err, bd_clock_now(&s->clock), &refused, &refusal);
    }
    if (rc == 0 && s->policy.delay_auto) {
        bd_sched_auto_batch(&s->autod, rows, (t2 - t1) / 1000u);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) {
        log_batch_error(s, &s->last_err_log_us, "batch failed", &err, n);
    }
    size_t row0 = 0;
    size_t n_ok = 0;
    for (size_t k = 0; k < n; k++) {
        bd_req_t *r = in->batch[k];
        int status = rc;
        if (status == 0) {
            status = scatter(s, in, r, row0, rows, &r->err);
        } else {
            r->err = err;
        }
        row0 += r->rows;
        r->status = status;
        n_ok += status == 0;
    }
    uint64_t t3 = now_ns(s);
    uint64_t end = bd_clock_now(&s->clock);
    if (rc == 0) {
        bd_metrics_batch_phases(s->metrics, rows, n_ok, t1 - t0, t2 - t1, t3 - t2);
    }
    for (size_t k = 0; k < n; k++) {
        bd_req_t *r = in->batch[k];
        r->start_us = start;
        r->end_us = end;
        if (r->status == 0) {
            r->err.code = 0;
            r->err.msg[0] = '\0';
            bd_metrics_request_durations(s->metrics, start - r->arrival_us, end - start,
                                         end - r->arrival_us);
            bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_SUCCESS);
        } else if (rc == 0 && r->status == BD_EINVAL) {
            bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_INVALID); /* scatter's */
        } else {
            bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_ERROR);
            bd_metrics_request_fail_duration(s->metrics, end - r->arrival_us);
        }
    }
    for (size_t k = 0; k < n; k++) {
        bd_req_t *r = in->batch[k];
        in->batch[k] = NULL;
        complete(s, r);
    }
    complete_refused(s, &refused, &refusal);
}

/* ---- warmup ---------------------------------------------------------------------------- */

/* Run one zero-filled batch of `b` rows on `in` (b is 1 and there is no batch dim when the
 * model does not batch; variable dims are 1). Not counted anywhere. */
static int warmup_once(bd_sched_t *s, inst_t *in, int b, void **bufs, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    bool lead = cfg->max_batch_size > 0;
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        const bd_io_t *io = &cfg->inputs[i];
        bd_tensor_t *t = &in->in_tensors[i];
        memset(t, 0, sizeof *t);
        t->name = io->name;
        t->dtype = io->dtype;
        int nd = io->dims.ndim + (lead ? 1 : 0);
        if (io->dims.ndim < 0 || nd > BD_MAX_DIMS) {
            return bd_err_set(err, BD_EINVAL, "input '%s' has %d dims; at most %d are supported",
                              io->name, io->dims.ndim, BD_MAX_DIMS - (lead ? 1 : 0));
        }
        t->shape.ndim = nd;
        if ((int)i == s->image_idx) {
            /* Zeroed pixels of the shape the decoder writes. */
            image_shape(s, (size_t)b, &t->shape);
            size_t ib = bd_image_row_elems(&cfg->image) * sizeof(float) * (size_t)b;
            if (!(bufs[i] = calloc(1, ib))) {
                return bd_err_set(err, BD_ENOMEM, "out of memory for a warmup batch of input '%s'",
                                  io->name);
            }
            t->data = bufs[i];
            t->byte_size = ib;
            continue;
        }
        /* BYTES: zeroed 4-byte lengths, i.e. empty strings. */
        size_t bytes = io->dtype == BD_DT_BYTES ? BD_BYTES_PREFIX : bd_dtype_size(io->dtype);
        if (lead) {
            t->shape.dims[0] = b;
            bytes *= (size_t)b;
        }
        for (int d = 0; d < io->dims.ndim; d++) {
            int64_t v = io->dims.dims[d] < 0 ? 1 : io->dims.dims[d];
            t->shape.dims[d + (lead ? 1 : 0)] = v;
            if (!bd_mul_size(bytes, (size_t)v, &bytes)) {
                return bd_err_set(err, BD_ENOMEM, "input '%s' is too large to warm up", io->name);
            }
        }
        bufs[i] = calloc(1, bytes ? bytes : 1);
        if (!bufs[i]) {
            return bd_err_set(err, BD_ENOMEM, "out of memory for a warmup batch of input '%s'",
                              io->name);
        }
        t->data = bufs[i];
        t->byte_size = bytes;
    }
    memset(in->out_tensors, 0, cfg->n_outputs * sizeof *in->out_tensors);
    int rc = s->ops->run(in->bi, in->in_tensors, cfg->n_inputs, in->out_tensors, cfg->n_outputs,
                         NULL, err);
    if (rc != 0) {
        if (err && err->msg[0] == '\0') {
            bd_err_set(err, BD_EBACKEND, "the backend failed without a reason");
        }
        return BD_EBACKEND;
    }
    return check_outputs(s, in, (size_t)b, err);
}

/* policy.warmup.count runs of each warmup batch size (clamped to max_batch_size) on `in`. */
static int warmup(bd_sched_t *s, inst_t *in, bd_err_t *err)
{
    const bd_model_config_t *cfg = s->cfg;
    const bd_sched_policy_t *pol = &s->policy;
    if (pol->warmup.count <= 0 || pol->warmup.n_batch_sizes == 0) {
        return 0;
    }
    void **bufs = calloc(cfg->n_inputs + 1, sizeof *bufs);
    if (!bufs) {
        return bd_err_set(err, BD_ENOMEM, "out of memory for warmup");
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < pol->warmup.n_batch_sizes && i < BD_MAX_LIST; i++) {
        int b = cfg->max_batch_size > 0 ? pol->warmup.batch_sizes[i] : 1;
        if (b > cfg->max_batch_size && cfg->max_batch_size > 0) {
            b = cfg->max_batch_size;
        }
        if (b < 1) {
            b = 1;
        }
        for (int c = 0; rc == 0 && c < pol->warmup.count; c++) {
            rc = warmup_once(s, in, b, bufs, err);
            for (size_t k = 0; k < cfg->n_inputs; k++) {
                free(bufs[k]);
                bufs[k] = NULL;
            }
            if (rc != 0) {
                bd_err_prefix(err,
                              "model '%s' version %" PRId64
                              ": warmup batch of %d rows failed on instance %d: ",
                              s->model_name, cfg->version, b, in->index);
            }
        }
    }
    free(bufs);
    return rc;
}

/* ---- workers and the timer ------------------------------------------------------------- */

/* Wait on `cv` for at most `rel_us` (CLOCK_MONOTONIC, so wall-clock jumps do not matter; the
 * relative wait also works with an injected clock). Caller holds mu. */
static void timed_wait(bd_sched_t *s, pthread_cond_t *cv, uint64_t rel_us)
{
    if (rel_us > MAX_WAIT_US) {
        rel_us = MAX_WAIT_US;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (rel_us % 1000000u) * 1000u;
    ts.tv_sec += (time_t)(rel_us / 1000000u + ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(cv, &s->mu, &ts);
}

/* With mu held: complete every queued request whose deadline passed (mu is released while
 * their callbacks run). True when it completed any, so the caller re-reads the queue. */
static bool expire_due(bd_sched_t *s, uint64_t now)
{
    bd_list_t expired;
    bd_list_init(&expired);
    if (!take_expired(s, now, &expired)) {
        return false;
    }
    pthread_mutex_unlock(&s->mu);
    complete_expired(s, &expired);
    pthread_mutex_lock(&s->mu);
    return true;
}

static void *worker_main(void *arg)
{
    inst_t *in = arg;
    bd_sched_t *s = in->s;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        uint64_t now = bd_clock_now(&s->clock);
        if (expire_due(s, now)) {
            continue;
        }
        if (in->claimed) {
            in->parked = true;
            pthread_cond_wait(&s->cv, &s->mu); /* the inline caller wakes it when done */
            in->parked = false;
            continue;
        }
        uint64_t wake;
        size_t rows = 0;
        size_t n = take_batch(s, in, now, &rows, &wake);
        if (n > 0) {
            if (s->depth > 0 && s->idle_workers > 0) {
                pthread_cond_signal(&s->cv); /* another idle instance may take the rest */
            }
            pthread_mutex_unlock(&s->mu);
            run_batch(s, in, n, rows);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->closed && s->depth == 0) {
            break;
        }
        s->idle_workers++;
        in->waiting = true;
        if (wake == UINT64_MAX) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else {
            timed_wait(s, &s->cv, wake > now ? wake - now : 0);
        }
        in->waiting = false;
        s->idle_workers--;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Completes requests whose deadline passed the moment it passes, whatever the workers do. */
static void *timer_main(void *arg)
{
    bd_sched_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->timer_stop) {
        uint64_t now = bd_clock_now(&s->clock);
        if (expire_due(s, now)) {
            continue;
        }
        s->timer_wake = s->heap_n > 0 ? s->heap[0]->deadline_us : UINT64_MAX;
        if (s->timer_wake == UINT64_MAX) {
            pthread_cond_wait(&s->tcv, &s->mu);
        } else {
            timed_wait(s, &s->tcv, s->timer_wake - now);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int bd_sched_expire(bd_sched_t *s)
{
    if (!s) {
        return 0;
    }
    bd_list_t expired;
    bd_list_init(&expired);
    pthread_mutex_lock(&s->mu);
    take_expired(s, bd_clock_now(&s->clock), &expired);
    pthread_mutex_unlock(&s->mu);
    return complete_expired(s, &expired);
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
    int done = bd_sched_expire(s);
    size_t rows = 0;
    pthread_mutex_lock(&s->mu);
    size_t n = take_batch(s, in, bd_clock_now(&s->clock), &rows, &wake);
    uint64_t next_deadline = s->heap_n > 0 ? s->heap[0]->deadline_us : UINT64_MAX;
    pthread_mutex_unlock(&s->mu);
    if (n == 0) {
        if (wake_us) {
            *wake_us = wake < next_deadline ? wake : next_deadline;
        }
        return done;
    }
    run_batch(s, in, n, rows);
    return done + (int)n;
}

/* ---- submit, cancel, availability ------------------------------------------------------ */

static int submit_req(bd_sched_t *s, bd_req_t *req, bool held, bd_err_t *err)
{
    size_t rows = 1;
    int rc = bd_sched_validate(s->cfg, &req->in, &rows, err);
    if (rc == 0 && s->ops->check_params) {
        rc = s->ops->check_params(s->bm, req->in.params, req->in.n_params, err);
    }
    if (rc != 0) {
        bd_metrics_request(s->metrics, req->protocol, BD_OUTCOME_INVALID);
        return rc;
    }
    order_inputs(s->cfg, &req->in);
    /* 0, or past the model's levels (as Triton): the default level. */
    int level = req->in.priority <= 0 || req->in.priority > (int64_t)s->n_levels
                    ? s->default_level
                    : (int)req->in.priority - 1;
    level_t *l = &s->levels[level];
    pthread_mutex_lock(&s->mu);
    /* The clock is read under mu so arrival times never decrease along a queue. */
    uint64_t now = bd_clock_now(&s->clock);
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        bd_metrics_request(s->metrics, req->protocol, BD_OUTCOME_REJECTED);
        return bd_err_set(err, BD_ESHUTDOWN,
                          "model '%s' version %" PRId64
                          " is shutting down and accepts no new requests",
                          s->model_name, s->cfg->version);
    }
    if (cb_enabled(s)) {
        cb_refresh(s, now);
        if (s->cb_state == CB_OPEN) {
            bd_err_t refusal;
            cb_refusal(s, now, &refusal);
            pthread_mutex_unlock(&s->mu);
            bd_metrics_request(s->metrics, req->protocol, BD_OUTCOME_REJECTED);
            if (err) {
                *err = refusal;
            }
            return refusal.code;
        }
    }
    if (l->depth >= l->cap) {
        pthread_mutex_unlock(&s->mu);
        bd_metrics_request(s->metrics, req->protocol, BD_OUTCOME_REJECTED);
        if (s->n_levels == 1) {
            return bd_err_set(err, BD_EFULL,
                              "model '%s' version %" PRId64
                              ": queue is full (%zu requests); retry later",
                              s->model_name, s->cfg->version, l->cap);
        }
        return bd_err_set(err, BD_EFULL,
                          "model '%s' version %" PRId64
                          ": the queue of priority level %d is full (%zu requests); retry later",
                          s->model_name, s->cfg->version, level + 1, l->cap);
    }
    /* As Triton's allow_timeout_override (which /config reports true): a request's own
     * timeout may shorten its level's default, not lengthen it; with no default, it is the
     * only one. */
    uint64_t timeout = l->default_timeout_us;
    if (req->in.timeout_us && (!timeout || req->in.timeout_us < timeout)) {
        timeout = req->in.timeout_us;
    }
    req->rows = rows;
    req->in_bytes = 0;
    for (size_t i = 0; i < req->in.n_inputs; i++) {
        req->in_bytes += req->in.inputs[i].byte_size; /* each under --max-body-bytes */
    }
    req->arrival_us = now;
    req->start_us = 0;
    req->end_us = 0;
    req->status = 0;
    req->err.code = 0;
    req->err.msg[0] = '\0';
    req->level = level;
    req->deadline_us = 0;
    if (timeout > 0) {
        req->deadline_us = now > UINT64_MAX - timeout ? UINT64_MAX : now + timeout;
        if (heap_push(s, req) != 0) {
            pthread_mutex_unlock(&s->mu);
            bd_metrics_request(s->metrics, req->protocol, BD_OUTCOME_REJECTED);
            return bd_err_set(err, BD_ENOMEM, "out of memory queueing a request for model '%s'",
                              s->model_name);
        }
    }
    bool new_head = true;
    for (int i = 0; i <= level && new_head; i++) {
        new_head = bd_list_empty(&s->levels[i].queue);
    }
    bd_list_push_back(&l->queue, &req->link);
    l->depth++;
    req->queued = true;
    s->depth++;
    s->rows_queued += rows;
    s->bytes_queued += req->in_bytes;
    bd_metrics_queue_depth_add(s->metrics, 1);
    bd_metrics_inflight_add(s->metrics, 1);
    if (s->policy.delay_auto) {
        bd_sched_auto_arrival(&s->autod, now);
    }
    if (new_head || s->rows_queued >= wake_rows(s)) {
        if (held) {
            s->kick_owed = true;
        } else if (s->idle_workers > 0) {
            pthread_cond_signal(&s->cv);
        }
    }
    if (req->deadline_us && req->heap_idx == 0 && req->deadline_us < s->timer_wake) {
        s->timer_wake = req->deadline_us;
        pthread_cond_signal(&s->tcv);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int bd_sched_submit(bd_sched_t *s, bd_req_t *req, bd_err_t *err)
{
    return submit_req(s, req, false, err);
}

int bd_sched_submit_held(bd_sched_t *s, bd_req_t *req, bd_err_t *err)
{
    return submit_req(s, req, true, err);
}

void bd_sched_kick(bd_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->kick_owed && s->idle_workers > 0) {
        pthread_cond_signal(&s->cv);
    }
    s->kick_owed = false;
    pthread_mutex_unlock(&s->mu);
}

bool bd_sched_run_inline(bd_sched_t *s, uint64_t max_ns)
{
    if (s->n_inst != 1 || !s->insts[0].thread_started) {
        return false; /* one instance only: its worker is the only waiter a signal could reach */
    }
    if (s->image_idx >= 0) {
        return false; /* a small PNG can decode to 40 megapixels */
    }
    inst_t *in = &s->insts[0];
    pthread_mutex_lock(&s->mu);
    uint64_t now = bd_clock_now(&s->clock);
    while (expire_due(s, now)) {
        now = bd_clock_now(&s->clock);
    }
    size_t n = 0, rows = 0;
    uint64_t wake;
    if (s->kick_owed && in->waiting && !in->claimed && !s->closed && s->batch_measured &&
        s->batch_ns < max_ns && s->bytes_queued <= BD_SCHED_INLINE_MAX_BYTES) {
        n = take_batch(s, in, now, &rows, &wake);
    }
    if (n > 0) {
        in->claimed = true;
        s->kick_owed = false;
    }
    pthread_mutex_unlock(&s->mu);
    if (n == 0) {
        return false;
    }
    run_batch(s, in, n, rows);
    pthread_mutex_lock(&s->mu);
    in->claimed = false;
    if (in->parked || (s->depth > 0 && in->waiting)) {
        pthread_cond_broadcast(&s->cv); /* the worker, back to its own loop */
    }
    pthread_mutex_unlock(&s->mu);
    return true;
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
    if (!req->queued) {
        pthread_mutex_unlock(&s->mu);
        return BD_EBUSY;
    }
    bool was_head = req->link.prev == &s->levels[req->level].queue;
    q_unlink(s, req);
    if (was_head && s->idle_workers > 0) {
        pthread_cond_broadcast(&s->cv); /* a worker holding for this head recomputes */
    }
    uint64_t now = bd_clock_now(&s->clock);
    pthread_mutex_unlock(&s->mu);
    req->status = BD_ECANCELLED;
    bd_err_set(&req->err, BD_ECANCELLED, "the request was cancelled while queued");
    bd_metrics_request(s->metrics, req->protocol, BD_OUTCOME_CANCELLED);
    bd_metrics_request_fail_duration(s->metrics, now - req->arrival_us);
    complete(s, req);
    return 0;
}

bool bd_sched_available(bd_sched_t *s, char *reason, size_t cap)
{
    if (reason && cap > 0) {
        reason[0] = '\0';
    }
    if (!s || !cb_enabled(s)) {
        return true;
    }
    pthread_mutex_lock(&s->mu);
    uint64_t now = bd_clock_now(&s->clock);
    cb_refresh(s, now);
    bool open = s->cb_state == CB_OPEN;
    if (open && reason && cap > 0) {
        bd_err_t refusal;
        cb_refusal(s, now, &refusal);
        snprintf(reason, cap, "%s", refusal.msg);
    }
    pthread_mutex_unlock(&s->mu);
    return !open;
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
    if (s->image_idx >= 0) {
        in->dec.img = bd_image_scratch_new();
        in->failed = calloc(in->batch_cap, sizeof *in->failed);
        in->drow0 = calloc(in->batch_cap, sizeof *in->drow0);
    }
    if (in->batch_cap > 1) {
        in->alone = calloc(in->batch_cap, sizeof *in->alone);
    }
    if (!in->batch || !in->in_bufs || !in->in_tensors || !in->out_tensors ||
        (in->batch_cap > 1 && !in->alone) ||
        (s->image_idx >= 0 && (!in->dec.img || !in->failed || !in->drow0))) {
        return bd_err_set(err, BD_ENOMEM, "out of memory creating instance %d of model '%s'", index,
                          s->model_name);
    }
    /* Fixed dims: one buffer per input for max_batch_size rows, reused by every batch
     * (large per-batch allocations page-fault every time; see DESIGN.md). */
    for (size_t i = 0; s->batching && i < cfg->n_inputs; i++) {
        size_t row = (int)i == s->image_idx ? bd_image_row_elems(&cfg->image) * sizeof(float)
                                            : fixed_row_bytes(&cfg->inputs[i]);
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
        bd_err_prefix(err, "model '%s' instance %d: ", s->model_name, index);
        return rc;
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
    free(in->run_reqs);
    bd_image_scratch_free(in->dec.img);
    free(in->dec.b64);
    free(in->failed);
    free(in->alone);
    free(in->drow0);
    for (int i = 0; i < in->n_helpers; i++) {
        bd_image_scratch_free(in->helpers[i].d.img);
        free(in->helpers[i].d.b64);
    }
    free(in->helpers);
    if (in->dsync) {
        pthread_cond_destroy(&in->ddone);
        pthread_cond_destroy(&in->dwake);
        pthread_mutex_destroy(&in->dmu);
    }
}

/* Image models with worker threads and more than one thread per instance: that many threads
 * decode a batch's images (MAX_DECODERS at most), the worker and threads - 1 helpers. The
 * model's own threads wait for the batch meanwhile, so the helpers take no core from it. */
static int start_helpers(bd_sched_t *s, inst_t *in, bd_err_t *err)
{
    int threads =
        s->cfg->threads_per_instance < MAX_DECODERS ? s->cfg->threads_per_instance : MAX_DECODERS;
    if (s->image_idx < 0 || in->batch_cap < 2 || threads < 2) {
        return 0;
    }
    if (!(in->helpers = calloc((size_t)threads - 1, sizeof *in->helpers))) {
        return bd_err_set(err, BD_ENOMEM, "out of memory for the image decoders of model '%s'",
                          s->model_name);
    }
    pthread_mutex_init(&in->dmu, NULL);
    pthread_cond_init(&in->dwake, NULL);
    pthread_cond_init(&in->ddone, NULL);
    in->dsync = true;
    for (int i = 0; i < threads - 1; i++) {
        helper_t *hp = &in->helpers[i];
        hp->in = in;
        if (!(hp->d.img = bd_image_scratch_new())) {
            return bd_err_set(err, BD_ENOMEM, "out of memory for the image decoders of model '%s'",
                              s->model_name);
        }
        int e = pthread_create(&hp->thread, NULL, helper_main, hp);
        if (e != 0) {
            return bd_err_set(err, BD_ENOMEM, "cannot start an image decoder of model '%s': %s",
                              s->model_name, strerror(e));
        }
        hp->started = true;
        in->n_helpers = i + 1;
    }
    return 0;
}

static void stop_helpers(inst_t *in)
{
    if (!in->dsync) {
        return;
    }
    pthread_mutex_lock(&in->dmu);
    in->dstop = true;
    pthread_cond_broadcast(&in->dwake);
    pthread_mutex_unlock(&in->dmu);
    for (int i = 0; i < in->n_helpers; i++) {
        if (in->helpers[i].started) {
            pthread_join(in->helpers[i].thread, NULL);
            in->helpers[i].started = false;
        }
    }
}

/* Join the started workers and the timer (after close), fail anything still queued (only
 * possible when workers never started), free the instances and the scheduler. */
static void destroy(bd_sched_t *s)
{
    for (int i = 0; i < s->n_inst; i++) {
        if (s->insts[i].thread_started) {
            pthread_join(s->insts[i].thread, NULL);
        }
        stop_helpers(&s->insts[i]);
    }
    pthread_mutex_lock(&s->mu);
    s->timer_stop = true;
    pthread_cond_signal(&s->tcv);
    pthread_mutex_unlock(&s->mu);
    if (s->timer_started) {
        pthread_join(s->timer, NULL);
    }
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int top = top_level(s);
        bd_list_t *first = top >= 0 ? bd_list_first(&s->levels[top].queue) : NULL;
        bd_req_t *r = first ? BD_CONTAINER_OF(first, bd_req_t, link) : NULL;
        if (r) {
            q_unlink(s, r);
        }
        pthread_mutex_unlock(&s->mu);
        if (!r) {
            break;
        }
        r->status = BD_ESHUTDOWN;
        bd_err_set(&r->err, BD_ESHUTDOWN, "model '%s' version %" PRId64 " was unloaded",
                   s->model_name, s->cfg->version);
        bd_metrics_request(s->metrics, r->protocol, BD_OUTCOME_REJECTED);
        complete(s, r);
    }
    for (int i = 0; i < s->n_inst; i++) {
        inst_dispose(s, &s->insts[i]);
    }
    free(s->insts);
    free(s->heap);
    pthread_cond_destroy(&s->tcv);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Levels, queue sizes and the smallest usable preferred size from the policy. Policies made
 * by hand (tests) may leave priority_levels and the per-level sizes 0: one level, and
 * max_queue_size (or the documented default 1024) for each. */
static void init_policy(bd_sched_t *s)
{
    const bd_sched_policy_t *pol = &s->policy;
    s->n_levels = pol->priority_levels >= 1 && pol->priority_levels <= BD_MAX_PRIORITY_LEVELS
                      ? pol->priority_levels
                      : 1;
    int def = pol->default_priority_level;
    s->default_level = (def >= 1 && def <= s->n_levels ? def : s->n_levels) - 1;
    size_t base = pol->max_queue_size ? pol->max_queue_size : DEFAULT_QUEUE_SIZE;
    for (int l = 0; l < BD_MAX_PRIORITY_LEVELS; l++) {
        bd_list_init(&s->levels[l].queue);
    }
    for (int l = 0; l < s->n_levels; l++) {
        s->levels[l].cap = pol->levels[l].max_queue_size ? pol->levels[l].max_queue_size : base;
        s->levels[l].default_timeout_us = pol->levels[l].default_timeout_us;
    }
    for (size_t i = 0; i < pol->n_preferred_batch_sizes && i < BD_MAX_LIST; i++) {
        size_t p = pol->preferred_batch_sizes[i] > 0 ? (size_t)pol->preferred_batch_sizes[i] : 0;
        if (p > 0 && p <= s->max_rows && (s->min_preferred == 0 || p < s->min_preferred)) {
            s->min_preferred = p;
        }
    }
}

bd_sched_t *bd_sched_new(const bd_model_config_t *cfg, const bd_sched_policy_t *policy,
                         const bd_backend_ops_t *ops, bd_backend_model_t *bm,
                         const bd_sched_opts_t *opts, bd_err_t *err)
{
    for (size_t i = 0; i < cfg->n_inputs + cfg->n_outputs; i++) {
        const bd_io_t *io = i < cfg->n_inputs ? &cfg->inputs[i] : &cfg->outputs[i - cfg->n_inputs];
        if (!io->name) {
            bd_err_set(err, BD_EINVAL, "model '%s': every input and output needs a name",
                       cfg->name ? cfg->name : "");
            return NULL;
        }
        size_t row = bd_dtype_size(io->dtype) ? bd_dtype_size(io->dtype) : 1;
        for (int d = 0; d < io->dims.ndim && d < BD_MAX_DIMS; d++) {
            if (io->dims.dims[d] > 0 && !bd_mul_size(row, (size_t)io->dims.dims[d], &row)) {
                char dims[256];
                bd_err_set(err, BD_EINVAL,
                           "model '%s': %s '%s' has dims %s, more bytes a row than memory can "
                           "address; no request could carry one",
                           cfg->name ? cfg->name : "", i < cfg->n_inputs ? "input" : "output",
                           io->name, bd_shape_str(&io->dims, dims, sizeof dims));
                return NULL;
            }
        }
    }
    for (size_t i = 0; policy && i < policy->n_preferred_batch_sizes && i < BD_MAX_LIST; i++) {
        int size = policy->preferred_batch_sizes[i], mbs = cfg->max_batch_size;
        if (mbs <= 0) {
            bd_err_set(err, BD_EINVAL,
                       "config.json: 'dynamic_batching.preferred_batch_sizes' has %d, but "
                       "max_batch_size is 0 (no batch dim, no batching); remove it",
                       size);
            return NULL;
        }
        if (size > mbs) { /* Triton refuses it too */
            bd_err_set(err, BD_EINVAL,
                       "config.json: 'dynamic_batching.preferred_batch_sizes' has %d, above "
                       "max_batch_size %d; expected sizes from 1 to %d",
                       size, mbs, mbs);
            return NULL;
        }
    }
    int image_idx = -1;
    if (cfg->image.enabled && (image_idx = image_input_index(cfg, err)) < 0) {
        return NULL;
    }
    bd_sched_t *s = calloc(1, sizeof *s);
    if (!s) {
        bd_err_set(err, BD_ENOMEM, "out of memory creating a scheduler");
        return NULL;
    }
    s->cfg = cfg;
    s->image_idx = image_idx;
    if (policy) {
        s->policy = *policy;
    }
    s->ops = ops;
    s->bm = bm;
    s->real_clock = !(opts && opts->clock.now_us);
    s->clock = s->real_clock ? bd_clock_real() : opts->clock;
    s->manual = opts && opts->manual;
    s->metrics = opts ? opts->metrics : NULL;
    s->batching = cfg->max_batch_size > 0 && s->policy.dynamic_batching;
    s->max_rows = cfg->max_batch_size > 0 ? (size_t)cfg->max_batch_size : 1;
    s->model_name = cfg->name ? cfg->name : "";
    s->n_inst = cfg->instances > 0 ? cfg->instances : 1;
    s->timer_wake = UINT64_MAX;
    init_policy(s);

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
    if (pthread_cond_init(&s->tcv, &ca) != 0) {
        pthread_cond_destroy(&s->cv);
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
        s->insts[i].run_reqs = calloc(s->insts[i].batch_cap, sizeof *s->insts[i].run_reqs);
        if (!s->insts[i].run_reqs) {
            bd_err_set(err, BD_ENOMEM, "out of memory creating instance %d of model '%s'", i,
                       s->model_name);
            goto fail;
        }
    }
    /* Warm every instance up before anything can be queued: the model is not ready (and
     * bd_sched_new does not return) until each ran the warmup batches. */
    for (int i = 0; i < s->n_inst; i++) {
        if (warmup(s, &s->insts[i], err) != 0) {
            goto fail;
        }
    }
    if (!s->manual) {
        int e = pthread_create(&s->timer, NULL, timer_main, s);
        if (e != 0) {
            bd_err_set(err, BD_ENOMEM, "cannot start the timer thread of model '%s': %s",
                       s->model_name, strerror(e));
            goto fail;
        }
        s->timer_started = true;
    }
    for (int i = 0; !s->manual && i < s->n_inst; i++) {
        if (start_helpers(s, &s->insts[i], err) != 0) {
            goto fail;
        }
        int e = pthread_create(&s->insts[i].thread, NULL, worker_main, &s->insts[i]);
        if (e != 0) {
            bd_err_set(err, BD_ENOMEM, "cannot start worker thread %d of model '%s': %s", i,
                       s->model_name, strerror(e));
            goto fail;
        }
        s->insts[i].thread_started = true;
    }
    char delay[32];
    if (s->policy.delay_auto) {
        snprintf(delay, sizeof delay, "auto");
    } else {
        snprintf(delay, sizeof delay, "%" PRIu64, s->policy.max_queue_delay_us);
    }
    BD_INFO("sched",
            "started model=%s version=%" PRId64 " instances=%d max_batch_size=%d batching=%d "
            "max_queue_delay_us=%s priority_levels=%d max_queue_size=%zu warmup_runs=%d "
            "image_decoders=%d manual=%d",
            s->model_name, cfg->version, s->n_inst, cfg->max_batch_size, s->batching, delay,
            s->n_levels,
            s->policy.max_queue_size ? s->policy.max_queue_size : (size_t)DEFAULT_QUEUE_SIZE,
            s->policy.warmup.count * (int)s->policy.warmup.n_batch_sizes * s->n_inst,
            s->image_idx >= 0 ? s->insts[0].n_helpers + 1 : 0, s->manual);
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
