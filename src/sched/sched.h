/* sched: one scheduler per loaded model version. It owns one bounded FIFO per priority
 * level, the worker threads (one per model instance, each with its own backend session and
 * reusable batch buffers), a timer thread for deadlines, and the batch-forming rule:
 *
 *   A free instance takes the oldest request of the highest non-empty priority level and
 *   every later queued request whose non-batch dims equal it, that level first and then the
 *   lower ones, each in arrival order, while the rows fit in max_batch_size. It runs that
 *   batch at once if it is full, if batching is off, if max_queue_delay_us is 0, if the next
 *   compatible request would not fit, if a preferred batch size can be formed (then the
 *   largest such prefix runs), or if the oldest request has waited max_queue_delay_us
 *   (measured from its arrival); otherwise it waits until then or until more requests come.
 *   With "auto" the wait is decided from the learnt cost curve and arrival rate instead.
 *
 * A queued request whose deadline (arrival + parameters.timeout or its level's
 * default_timeout_us) passes is completed at once with BD_ETIMEOUT by the timer thread, even
 * while every instance is busy, and is never executed. After
 * circuit_breaker.consecutive_failures failed batches in a row, submits fail with
 * BD_EUNAVAIL for cooldown_us, and so do the requests queued when it opened (completed at
 * once, never executed); then one probe batch decides.
 *
 * Each request's outputs are exactly what the model gives for that request alone: inputs are
 * gathered row-wise into the instance's batch buffer, outputs scattered back by rows.
 *
 * Threads: bd_sched_submit from any thread (never blocks: a full queue fails at once).
 * Completion callbacks run on whatever thread finished the request (the worker that ran the
 * batch, the timer thread, the canceller); front ends never see them: the infer layer's
 * callback only posts to the owner thread's mailbox (core.h). Workers wait on a
 * condition variable; the queue is guarded by one mutex, never held across a backend call
 * or a callback. */
#ifndef BD_SCHED_H
#define BD_SCHED_H

#include "backend/backend.h"
#include "core/core.h"
#include "metrics/metrics.h"
#include "tensor/tensor.h"

typedef struct bd_req bd_req_t;
typedef struct bd_sched bd_sched_t;

/* ---- the scheduling policy (config.json's dynamic_batching, warmup, circuit_breaker) ---- */

#define BD_MAX_PRIORITY_LEVELS 16
#define BD_MAX_LIST 16 /* preferred batch sizes, warmup batch sizes */

/* One priority level's queue policy (dynamic_batching.priority_queue_policy). */
typedef struct {
    size_t max_queue_size;       /* requests queued at this level before 503; 0: the policy's */
    uint64_t default_timeout_us; /* deadline for requests that set none; 0: none */
} bd_priority_level_t;

/* How a scheduler queues, batches and protects one model version. Plain values only:
 * nothing here needs freeing, and bd_sched_new copies it. A zeroed policy is valid: no
 * dynamic batching, one level of max_queue_size 1024, no warmup, no circuit breaker. */
typedef struct {
    bool dynamic_batching;       /* false: each request is executed on its own */
    uint64_t max_queue_delay_us; /* how long an under-full batch may wait for its oldest */
    bool delay_auto;             /* "max_queue_delay_us": "auto": the scheduler learns it */
    size_t max_queue_size;       /* queued requests before 503 (per level); 0: 1024 */
    uint64_t default_timeout_us; /* the levels' deadline unless their own policy says (the
                                  * model config endpoint reports it; levels[] is what runs) */
    int priority_levels;         /* 1..BD_MAX_PRIORITY_LEVELS; 0 or out of range: 1 */
    int default_priority_level;  /* 1..priority_levels: where priority 0 (unset) goes */
    bd_priority_level_t levels[BD_MAX_PRIORITY_LEVELS]; /* [0] is priority 1 (highest) */
    int preferred_batch_sizes[BD_MAX_LIST];             /* ascending, unique */
    size_t n_preferred_batch_sizes;
    struct {
        int batch_sizes[BD_MAX_LIST]; /* each run `count` times before the model is ready */
        size_t n_batch_sizes;
        int count;
    } warmup;
    struct {
        int consecutive_failures; /* this many failed batches in a row: unavailable; 0: off */
        uint64_t cooldown_us;     /* then probed again after this long */
    } circuit_breaker;
} bd_sched_policy_t;

/* ---- requests ------------------------------------------------------------------------- */

/* Called once per submitted request when it is finished (status set). Ownership of the
 * request returns to the callee. Never called for a request whose submit failed. It runs on
 * the worker that ran the batch, on the timer thread for a deadline that passed (status
 * BD_ETIMEOUT), or on the bd_sched_cancel caller (BD_ECANCELLED). */
typedef void (*bd_req_done_cb)(bd_req_t *req, void *ctx);

struct bd_req {
    /* --- set by the submitter ------------------------------------------------------ */
    bd_arena_t arena; /* owns the request's small pieces (names, decoded JSON data) */
    char *body;       /* owned (malloc), may be NULL; binary tensors point into it */
    size_t body_len;
    bd_infer_req_t in; /* decoded request; borrows arena and body */
    bd_req_done_cb done;
    void *done_ctx;
    bd_protocol_t protocol; /* the front end it came through (metrics label) */
    /* --- set by the scheduler ------------------------------------------------------ */
    size_t rows;         /* batch rows this request contributes (1 without batching) */
    uint64_t arrival_us; /* when it was queued */
    uint64_t start_us;   /* when its batch started */
    uint64_t end_us;     /* when its batch finished */
    int status;          /* 0, or BD_EBACKEND / BD_ESHUTDOWN ... on failure */
    bd_err_t err;        /* the reason when status != 0 */
    /* Every model output in config order, data in out_block; one that in.outputs does not
     * list (when it lists any) keeps its shape but has no bytes (byte_size 0). */
    bd_tensor_t *outputs;
    size_t n_outputs;
    void *out_block; /* owned (malloc): the outputs' data */
    /* --- scheduler private --------------------------------------------------------- */
    bd_list_t link;       /* in its level's queue (O(1) cancel and expiry), then briefly in a
                           * list of expired requests */
    uint64_t deadline_us; /* 0: none */
    size_t heap_idx;      /* position in the deadline heap while queued with a deadline */
    int level;            /* 0-based priority level (0 = priority 1, the highest) */
    bool queued;          /* in a queue; under the scheduler's mutex */
    size_t in_bytes;      /* its inputs' bytes, while queued */
};

/* A zeroed request with an arena limited to `arena_limit` bytes (0: no limit). */
bd_req_t *bd_req_new(size_t arena_limit);
/* Frees the arena, body, out_block and the request. NULL is fine. */
void bd_req_free(bd_req_t *req);

typedef struct {
    bd_clock_t clock;            /* zero: the real clock */
    bool manual;                 /* no worker threads: the caller drives bd_sched_step */
    bd_model_metrics_t *metrics; /* borrowed, may be NULL */
} bd_sched_opts_t;

/* Create the scheduler for a loaded model: one backend instance per cfg->instances and
 * (unless manual) one worker thread each, each warmed up as `policy` says. Borrows cfg, ops
 * and bm, which must outlive it; copies `policy` (NULL: a zeroed one). Returns NULL with err
 * set when an instance fails to start or to warm up. */
bd_sched_t *bd_sched_new(const bd_model_config_t *cfg, const bd_sched_policy_t *policy,
                         const bd_backend_ops_t *ops, bd_backend_model_t *bm,
                         const bd_sched_opts_t *opts, bd_err_t *err);

/* Check a decoded request against the model: every model input given exactly once and no
 * unknown one, datatypes equal, shapes equal to the model's dims (batch dim 1..max_batch_size
 * first when batching, the same in every input), requested outputs known. A priority past the
 * model's levels is not refused: it means the default level, as in Triton. Sets *rows.
 * Returns 0 or BD_EINVAL with one sentence, e.g. "input 'INPUT0': expected datatype FP32, got
 * INT32". Pure; any thread. */
int bd_sched_validate(const bd_model_config_t *cfg, const bd_infer_req_t *in, size_t *rows,
                      bd_err_t *err);
/* The datatype part of that check, for a front end that must say it before its own checks
 * (raw bytes, whose count the wrong datatype's size would get wrong): 0 when `got` is io's
 * datatype, else BD_EINVAL with the same sentence. Pure; any thread. */
int bd_sched_check_dtype(const bd_io_t *io, bd_dtype_t got, bd_err_t *err);

/* Validate and queue `req`. On success the scheduler owns req until req->done runs. On
 * failure the caller still owns it and done is never called: BD_EINVAL (bad request,
 * parameters.priority outside 0..priority_levels, a parameter the backend's check_params
 * refuses), BD_EFULL (its level's queue at max_queue_size), BD_EUNAVAIL (circuit breaker
 * open), BD_ESHUTDOWN (closed), BD_ENOMEM. Any thread; never blocks. */
int bd_sched_submit(bd_sched_t *s, bd_req_t *req, bd_err_t *err);

/* bd_sched_submit without waking a worker: the caller submits a group (e.g. every request
 * one event-loop turn decoded for this model) and then calls bd_sched_kick once, so the group
 * forms one batch with one wake-up instead of the first request running alone. Until the
 * kick, a held request waits for a worker that wakes for another reason. */
int bd_sched_submit_held(bd_sched_t *s, bd_req_t *req, bd_err_t *err);
/* Wake an idle worker if a held submit since the last kick would have. Any thread. */
void bd_sched_kick(bd_sched_t *s);
/* After held submits, instead of waking the worker: when the model has one instance, its
 * worker is waiting, a batch costs under max_ns on average (gather and run, as measured), the
 * queued requests' inputs total at most BD_SCHED_INLINE_MAX_BYTES and the model decodes no
 * images (costs the average cannot foresee), run the ready batch on the calling thread, completing
 * its requests there (their callbacks run on it before this returns); the worker keeps off the
 * instance meanwhile. Returns whether it ran a batch; call bd_sched_kick after it either way. For
 * models whose batch costs a few microseconds, where handing the batch to the worker costs more
 * than running it. */
bool bd_sched_run_inline(bd_sched_t *s, uint64_t max_ns);
#define BD_SCHED_INLINE_MAX_BYTES ((size_t)64 << 10)

size_t bd_sched_queue_depth(bd_sched_t *s);

/* Take `req` out of the queue if it is still waiting there: it completes at once with status
 * BD_ECANCELLED (outcome `cancelled`), its done callback running on the calling thread before
 * this returns, and it is never executed. Returns 0 then, or BD_EBUSY when the request already
 * left the queue (its batch is running or done): nothing happens, and its completion arrives
 * as usual. Any thread; never blocks on a running batch. */
int bd_sched_cancel(bd_sched_t *s, bd_req_t *req);

/* False while the circuit breaker holds the model unavailable (after
 * policy.circuit_breaker.consecutive_failures failed batches in a row, for cooldown_us, then
 * one probe batch decides); `reason` (may be NULL) then gets one sentence naming the last
 * backend error. Submits fail with BD_EUNAVAIL meanwhile. Any thread. */
bool bd_sched_available(bd_sched_t *s, char *reason, size_t cap);

/* Stop accepting: later submits fail with BD_ESHUTDOWN; queued requests still run. */
void bd_sched_close(bd_sched_t *s);

/* Close, let the workers finish everything queued, join them, free the instances and the
 * scheduler. Completion callbacks of the remaining requests run before it returns. */
void bd_sched_free(bd_sched_t *s);

/* Manual mode (tests): first complete every queued request whose deadline passed at the
 * scheduler clock's now (BD_ETIMEOUT, on the calling thread); then, if a batch is ready for
 * instance `inst`, run it on the calling thread and complete its requests. Return how many
 * requests it completed (expired ones included; not those an opening circuit breaker
 * refused). *wake_us is set to the earliest clock time at which something will be due when
 * nothing more is ready now: the held batch's delay or the earliest deadline (UINT64_MAX when
 * the queue is empty). */
int bd_sched_step(bd_sched_t *s, int inst, uint64_t *wake_us);

/* Complete every queued request whose deadline passed at the scheduler clock's now with
 * BD_ETIMEOUT ("request timeout expired in queue", outcome `timeout`), callbacks on the
 * calling thread; returns how many. The timer thread does this by itself; manual mode calls
 * it (or bd_sched_step). Any thread. */
int bd_sched_expire(bd_sched_t *s);

#endif
