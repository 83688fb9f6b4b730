/* metrics.c: per model version counters, a gauge and fixed-bucket histograms, rendered in
 * the Prometheus text exposition format (version 0.0.4).
 *
 * Every value is a C11 atomic updated with relaxed ordering: request paths (event-loop and
 * worker threads) only ever do atomic adds, never take a lock. A histogram keeps one
 * non-cumulative count per bucket plus an integer sum; the renderer accumulates the buckets
 * and derives _count from them, so within one scrape the +Inf bucket always equals _count.
 * Durations are kept in integer microseconds and printed as seconds with six decimals, so
 * the text is exact (no floating-point noise).
 *
 * Ownership: the registry owns every bd_model_metrics_t (a singly linked list in
 * registration order, guarded by `mu`, which is taken only to register and to render).
 * Handles stay valid until bd_metrics_free. Threads: any. */
#include "metrics/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Upper bounds (inclusive, as Prometheus' `le`) of the batch size buckets. */
#define BATCH_BUCKETS 9
static const uint64_t batch_bounds[BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const char *const batch_le[BATCH_BUCKETS] = {"1",  "2",  "4",   "8",  "16",
                                                    "32", "64", "128", "256"};

/* Upper bounds of the duration buckets, in microseconds, and their text in seconds. */
#define DUR_BUCKETS 16
static const uint64_t dur_bounds_us[DUR_BUCKETS] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const dur_le[DUR_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10"};

#define MAX_BUCKETS 16

/* Per-batch-size statistics: a fixed array indexed by rows - 1 (no lock, no allocation on
 * the hot path). Batches larger than MAX_BATCH_STATS rows go to a small table of slots
 * claimed by compare-and-swap on their size (rare: only models with max_batch_size > 256);
 * when every slot is taken, such a batch is still counted everywhere except batch_stats. */
#define MAX_BATCH_STATS 256
#define MAX_BIG_BATCH_STATS 64
_Static_assert(MAX_BATCH_STATS + MAX_BIG_BATCH_STATS == BD_METRICS_MAX_BATCH_STATS,
               "metrics.h names the sum");

typedef struct {
    _Atomic uint64_t size; /* big table only: 0 = free slot, else the batch size it holds */
    _Atomic uint64_t count;
    _Atomic uint64_t input_ns;
    _Atomic uint64_t infer_ns;
    _Atomic uint64_t output_ns;
} batch_stat_t;

typedef struct {
    _Atomic uint64_t buckets[MAX_BUCKETS + 1]; /* last one: above every bound (+Inf only) */
    _Atomic uint64_t sum;                      /* rows, or microseconds */
} hist_t;

struct bd_model_metrics {
    char *model;   /* owned */
    char *version; /* owned */
    _Atomic uint64_t requests[BD_PROTO_COUNT_][BD_OUTCOME_COUNT_];
    _Atomic uint64_t items;
    _Atomic uint64_t executions;
    _Atomic int64_t queue_depth;
    _Atomic int64_t inflight;
    hist_t batch_size;
    hist_t queue_dur;
    hist_t compute_dur;
    hist_t request_dur;
    /* Statistics extension: cumulative nanoseconds (counts come from the histograms and
     * counters above, so /stats and /metrics agree). */
    _Atomic uint64_t success_ns;
    _Atomic uint64_t fail_count;
    _Atomic uint64_t fail_ns;
    _Atomic uint64_t queue_ns;
    _Atomic uint64_t exec_requests; /* requests in successfully executed batches */
    _Atomic uint64_t input_ns;      /* per request: its batch's gather time */
    _Atomic uint64_t infer_ns;
    _Atomic uint64_t output_ns;
    _Atomic uint64_t last_inference_ms;
    _Atomic uint64_t success_count;
    batch_stat_t bstats[MAX_BATCH_STATS]; /* index = rows - 1 */
    batch_stat_t big[MAX_BIG_BATCH_STATS];
    char device[16];          /* batchd_model_info; "" until set; under the registry's mu */
    char provider[32];        /* under the registry's mu */
    bd_model_metrics_t *next; /* under the registry's mu */
};

struct bd_metrics {
    pthread_mutex_t mu;
    bd_model_metrics_t *head; /* under mu; registration order */
    bd_model_metrics_t *tail;
    _Atomic int64_t ws_connections;
    _Atomic uint64_t connections_refused;
    _Atomic int64_t http_buffered;
    _Atomic uint64_t http_buffer_full;
    _Atomic uint64_t rate_limited[BD_PROTO_COUNT_];
    bd_metrics_render_cb extra_cb; /* a front end's families; set before serving */
    void *extra_ctx;
};

static const char *const outcome_names[BD_OUTCOME_COUNT_] = {"success", "rejected", "invalid",
                                                             "error",   "timeout",  "cancelled"};

static const char *const protocol_names[BD_PROTO_COUNT_] = {"http", "websocket", "redis"};

const char *bd_protocol_name(bd_protocol_t p)
{
    if ((int)p < 0 || p >= BD_PROTO_COUNT_) {
        return "unknown";
    }
    return protocol_names[p];
}

const char *bd_outcome_name(bd_outcome_t o)
{
    if ((int)o < 0 || o >= BD_OUTCOME_COUNT_) {
        return "unknown";
    }
    return outcome_names[o];
}

bd_metrics_t *bd_metrics_new(void)
{
    bd_metrics_t *m = calloc(1, sizeof *m);
    if (!m) {
        return NULL;
    }
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void bd_metrics_set_extra(bd_metrics_t *m, bd_metrics_render_cb cb, void *ctx)
{
    if (m) {
        m->extra_cb = cb;
        m->extra_ctx = ctx;
    }
}

void bd_metrics_free(bd_metrics_t *m)
{
    if (!m) {
        return;
    }
    bd_model_metrics_t *mm = m->head;
    while (mm) {
        bd_model_metrics_t *next = mm->next;
        free(mm->model);
        free(mm->version);
        free(mm);
        mm = next;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

bd_model_metrics_t *bd_metrics_model(bd_metrics_t *m, const char *model, const char *version)
{
    if (!m || !model || !version) {
        return NULL;
    }
    pthread_mutex_lock(&m->mu);
    for (bd_model_metrics_t *mm = m->head; mm; mm = mm->next) {
        if (strcmp(mm->model, model) == 0 && strcmp(mm->version, version) == 0) {
            pthread_mutex_unlock(&m->mu);
            return mm;
        }
    }
    bd_model_metrics_t *mm = calloc(1, sizeof *mm);
    if (mm) {
        mm->model = strdup(model);
        mm->version = strdup(version);
        if (!mm->model || !mm->version) {
            free(mm->model);
            free(mm->version);
            free(mm);
            mm = NULL;
        }
    }
    if (mm) {
        if (m->tail) {
            m->tail->next = mm;
        } else {
            m->head = mm;
        }
        m->tail = mm;
    }
    pthread_mutex_unlock(&m->mu);
    return mm;
}

void bd_metrics_model_info(bd_metrics_t *m, bd_model_metrics_t *mm, const char *device,
                           const char *provider)
{
    if (!m || !mm) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    snprintf(mm->device, sizeof mm->device, "%s", device ? device : "");
    snprintf(mm->provider, sizeof mm->provider, "%s", provider ? provider : "");
    pthread_mutex_unlock(&m->mu);
}

/* ---- updates (hot path: relaxed atomics only) ------------------------------------------ */

static void add_u64(_Atomic uint64_t *v, uint64_t d)
{
    atomic_fetch_add_explicit(v, d, memory_order_relaxed);
}

static uint64_t load_u64(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void hist_observe(hist_t *h, const uint64_t *bounds, int n, uint64_t v)
{
    int i = 0;
    while (i < n && v > bounds[i]) {
        i++;
    }
    add_u64(&h->buckets[i], 1);
    add_u64(&h->sum, v);
}

void bd_metrics_request(bd_model_metrics_t *mm, bd_protocol_t protocol, bd_outcome_t outcome)
{
    if (!mm || (int)outcome < 0 || outcome >= BD_OUTCOME_COUNT_ || (int)protocol < 0 ||
        protocol >= BD_PROTO_COUNT_) {
        return;
    }
    add_u64(&mm->requests[protocol][outcome], 1);
}

void bd_metrics_request_durations(bd_model_metrics_t *mm, uint64_t queue_us, uint64_t compute_us,
                                  uint64_t total_us)
{
    if (!mm) {
        return;
    }
    hist_observe(&mm->queue_dur, dur_bounds_us, DUR_BUCKETS, queue_us);
    hist_observe(&mm->compute_dur, dur_bounds_us, DUR_BUCKETS, compute_us);
    hist_observe(&mm->request_dur, dur_bounds_us, DUR_BUCKETS, total_us);
    add_u64(&mm->success_count, 1);
    add_u64(&mm->success_ns, total_us * 1000u);
    add_u64(&mm->queue_ns, queue_us * 1000u);
}

void bd_metrics_request_fail_duration(bd_model_metrics_t *mm, uint64_t total_us)
{
    if (!mm) {
        return;
    }
    add_u64(&mm->fail_count, 1);
    add_u64(&mm->fail_ns, total_us * 1000u);
}

/* The batch_stats slot for `rows`, or NULL when the big table is full. */
static batch_stat_t *batch_slot(bd_model_metrics_t *mm, size_t rows)
{
    if (rows >= 1 && rows <= MAX_BATCH_STATS) {
        return &mm->bstats[rows - 1];
    }
    for (int i = 0; i < MAX_BIG_BATCH_STATS; i++) {
        batch_stat_t *b = &mm->big[i];
        uint64_t have = atomic_load_explicit(&b->size, memory_order_acquire);
        if (have == rows) {
            return b;
        }
        if (have == 0) {
            uint64_t expect = 0;
            if (atomic_compare_exchange_strong(&b->size, &expect, (uint64_t)rows) ||
                expect == rows) {
                return b;
            }
        }
    }
    return NULL;
}

void bd_metrics_batch_phases(bd_model_metrics_t *mm, size_t rows, size_t requests,
                             uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns)
{
    if (!mm) {
        return;
    }
    bd_metrics_batch(mm, rows);
    /* Triton's per-request compute durations: every request of a batch is charged the
     * whole batch's phase times. */
    add_u64(&mm->exec_requests, requests);
    add_u64(&mm->input_ns, input_ns * requests);
    add_u64(&mm->infer_ns, infer_ns * requests);
    add_u64(&mm->output_ns, output_ns * requests);
    batch_stat_t *b = batch_slot(mm, rows);
    if (b) {
        add_u64(&b->count, 1);
        add_u64(&b->input_ns, input_ns);
        add_u64(&b->infer_ns, infer_ns);
        add_u64(&b->output_ns, output_ns);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    atomic_store_explicit(&mm->last_inference_ms, ms, memory_order_relaxed);
}

void bd_metrics_stats(bd_model_metrics_t *mm, bd_model_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!mm) {
        return;
    }
    out->success.count = load_u64(&mm->success_count);
    out->success.ns = load_u64(&mm->success_ns);
    /* Rejected requests never queued, and most invalid ones (400) were refused before they
     * queued: both count as failures that took no time, as Triton counts a request it
     * refuses for its inputs. */
    out->fail.count = load_u64(&mm->fail_count) + bd_metrics_get_requests(mm, BD_OUTCOME_REJECTED) +
                      bd_metrics_get_requests(mm, BD_OUTCOME_INVALID);
    out->fail.ns = load_u64(&mm->fail_ns);
    out->queue.count = out->success.count;
    out->queue.ns = load_u64(&mm->queue_ns);
    uint64_t execd = load_u64(&mm->exec_requests);
    out->compute_input.count = execd;
    out->compute_input.ns = load_u64(&mm->input_ns);
    out->compute_infer.count = execd;
    out->compute_infer.ns = load_u64(&mm->infer_ns);
    out->compute_output.count = execd;
    out->compute_output.ns = load_u64(&mm->output_ns);
    out->inference_count = load_u64(&mm->items);
    out->execution_count = load_u64(&mm->executions);
    out->last_inference_ms = load_u64(&mm->last_inference_ms);
}

static void put_batch_stat(bd_batch_stats_t *o, uint64_t size, batch_stat_t *b)
{
    uint64_t n = load_u64(&b->count);
    o->batch_size = size;
    o->compute_input.count = n;
    o->compute_input.ns = load_u64(&b->input_ns);
    o->compute_infer.count = n;
    o->compute_infer.ns = load_u64(&b->infer_ns);
    o->compute_output.count = n;
    o->compute_output.ns = load_u64(&b->output_ns);
}

size_t bd_metrics_batch_stats(bd_model_metrics_t *mm, bd_batch_stats_t *out, size_t cap)
{
    if (!mm || !out) {
        return 0;
    }
    size_t n = 0;
    for (size_t i = 0; i < MAX_BATCH_STATS && n < cap; i++) {
        if (load_u64(&mm->bstats[i].count) > 0) {
            put_batch_stat(&out[n++], i + 1, &mm->bstats[i]);
        }
    }
    /* The big table in ascending size order: repeatedly take the smallest size above the
     * last one written (at most 64 slots, read only by the statistics endpoint). */
    uint64_t last = MAX_BATCH_STATS;
    while (n < cap) {
        int best = -1;
        uint64_t best_size = UINT64_MAX;
        for (int i = 0; i < MAX_BIG_BATCH_STATS; i++) {
            uint64_t sz = atomic_load_explicit(&mm->big[i].size, memory_order_acquire);
            if (sz > last && sz < best_size && load_u64(&mm->big[i].count) > 0) {
                best = i;
                best_size = sz;
            }
        }
        if (best < 0) {
            break;
        }
        put_batch_stat(&out[n++], best_size, &mm->big[best]);
        last = best_size;
    }
    return n;
}

void bd_metrics_batch(bd_model_metrics_t *mm, size_t rows)
{
    if (!mm) {
        return;
    }
    add_u64(&mm->executions, 1);
    add_u64(&mm->items, rows);
    hist_observe(&mm->batch_size, batch_bounds, BATCH_BUCKETS, rows);
}

void bd_metrics_queue_depth_add(bd_model_metrics_t *mm, int64_t delta)
{
    if (!mm) {
        return;
    }
    atomic_fetch_add_explicit(&mm->queue_depth, delta, memory_order_relaxed);
}

uint64_t bd_metrics_get_requests_by(bd_model_metrics_t *mm, bd_protocol_t protocol,
                                    bd_outcome_t outcome)
{
    if (!mm || (int)outcome < 0 || outcome >= BD_OUTCOME_COUNT_ || (int)protocol < 0 ||
        protocol >= BD_PROTO_COUNT_) {
        return 0;
    }
    return load_u64(&mm->requests[protocol][outcome]);
}

uint64_t bd_metrics_get_requests(bd_model_metrics_t *mm, bd_outcome_t outcome)
{
    uint64_t n = 0;
    for (int p = 0; p < BD_PROTO_COUNT_; p++) {
        n += bd_metrics_get_requests_by(mm, (bd_protocol_t)p, outcome);
    }
    return n;
}

void bd_metrics_websocket_connections_add(bd_metrics_t *m, int64_t delta)
{
    if (m) {
        atomic_fetch_add_explicit(&m->ws_connections, delta, memory_order_relaxed);
    }
}

void bd_metrics_connections_refused_add(bd_metrics_t *m, uint64_t n)
{
    if (m) {
        add_u64(&m->connections_refused, n);
    }
}

uint64_t bd_metrics_get_connections_refused(bd_metrics_t *m)
{
    return m ? load_u64(&m->connections_refused) : 0;
}

void bd_metrics_http_buffered_set(bd_metrics_t *m, int64_t bytes)
{
    if (m) {
        atomic_store_explicit(&m->http_buffered, bytes, memory_order_relaxed);
    }
}

int64_t bd_metrics_get_http_buffered(bd_metrics_t *m)
{
    return m ? atomic_load_explicit(&m->http_buffered, memory_order_relaxed) : 0;
}

void bd_metrics_http_buffer_full_add(bd_metrics_t *m)
{
    if (m) {
        add_u64(&m->http_buffer_full, 1);
    }
}

uint64_t bd_metrics_get_http_buffer_full(bd_metrics_t *m)
{
    return m ? load_u64(&m->http_buffer_full) : 0;
}

void bd_metrics_rate_limited_add(bd_metrics_t *m, bd_protocol_t protocol)
{
    if (m && protocol < BD_PROTO_COUNT_) {
        add_u64(&m->rate_limited[protocol], 1);
    }
}

uint64_t bd_metrics_get_rate_limited(bd_metrics_t *m, bd_protocol_t protocol)
{
    return m && protocol < BD_PROTO_COUNT_ ? load_u64(&m->rate_limited[protocol]) : 0;
}

int64_t bd_metrics_get_websocket_connections(bd_metrics_t *m)
{
    return m ? atomic_load_explicit(&m->ws_connections, memory_order_relaxed) : 0;
}

uint64_t bd_metrics_get_items(bd_model_metrics_t *mm)
{
    return mm ? load_u64(&mm->items) : 0;
}

uint64_t bd_metrics_get_executions(bd_model_metrics_t *mm)
{
    return mm ? load_u64(&mm->executions) : 0;
}

void bd_metrics_inflight_add(bd_model_metrics_t *mm, int64_t delta)
{
    if (mm) {
        atomic_fetch_add_explicit(&mm->inflight, delta, memory_order_relaxed);
    }
}

int64_t bd_metrics_get_inflight(bd_model_metrics_t *mm)
{
    return mm ? atomic_load_explicit(&mm->inflight, memory_order_relaxed) : 0;
}

int64_t bd_metrics_get_queue_depth(bd_model_metrics_t *mm)
{
    return mm ? atomic_load_explicit(&mm->queue_depth, memory_order_relaxed) : 0;
}

/* ---- rendering ------------------------------------------------------------------------- */

/* A label value as the exposition format wants it: UTF-8 with backslash, double quote and
 * newline escaped; a byte that does not start valid UTF-8 (a folder name's) is written as
 * U+FFFD, as the JSON replies write it. */
static void put_label_value(bd_buf_t *out, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    bd_buf_putc(out, '"');
    size_t start = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        const char *esc = u[i] == '\\'   ? "\\\\"
                          : u[i] == '"'  ? "\\\""
                          : u[i] == '\n' ? "\\n"
                                         : NULL;
        if (!esc && u[i] >= 0x80 && bd_utf8_decode(u + i, n - i, &len) < 0) {
            esc = "\xef\xbf\xbd"; /* U+FFFD */
        }
        if (esc) {
            bd_buf_append(out, s + start, i - start);
            bd_buf_puts(out, esc);
            start = i + 1;
        }
        i += esc ? 1 : len;
    }
    bd_buf_append(out, s + start, n - start);
    bd_buf_putc(out, '"');
}

/* `name{model="..",version=".."` without the closing brace, so callers can add labels. */
static void put_series(bd_buf_t *out, const char *name, const char *suffix,
                       const bd_model_metrics_t *mm)
{
    bd_buf_puts(out, name);
    bd_buf_puts(out, suffix);
    bd_buf_puts(out, "{model=");
    put_label_value(out, mm->model);
    bd_buf_puts(out, ",version=");
    put_label_value(out, mm->version);
}

static void put_header(bd_buf_t *out, const char *name, const char *type, const char *help)
{
    bd_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

typedef enum { SUM_COUNT, SUM_SECONDS } sum_kind_t;

static void put_hist(bd_buf_t *out, const char *name, bd_model_metrics_t *mm, hist_t *h,
                     const char *const *le, int n, sum_kind_t kind)
{
    uint64_t cum = 0;
    for (int i = 0; i <= n; i++) {
        cum += load_u64(&h->buckets[i]);
        put_series(out, name, "_bucket", mm);
        bd_buf_printf(out, ",le=\"%s\"} %" PRIu64 "\n", i < n ? le[i] : "+Inf", cum);
    }
    uint64_t sum = load_u64(&h->sum);
    put_series(out, name, "_sum", mm);
    if (kind == SUM_SECONDS) {
        bd_buf_printf(out, "} %" PRIu64 ".%06" PRIu64 "\n", sum / 1000000u, sum % 1000000u);
    } else {
        bd_buf_printf(out, "} %" PRIu64 "\n", sum);
    }
    put_series(out, name, "_count", mm);
    bd_buf_printf(out, "} %" PRIu64 "\n", cum);
}

typedef enum {
    F_REQUESTS,
    F_ITEMS,
    F_EXECUTIONS,
    F_BATCH,
    F_QUEUE_DUR,
    F_COMPUTE_DUR,
    F_REQUEST_DUR,
    F_QUEUE_DEPTH,
    F_INFLIGHT,
    F_COUNT_
} family_t;

static const struct {
    const char *name;
    const char *type;
    const char *help;
} families[F_COUNT_] = {
    [F_REQUESTS] = {"batchd_inference_requests_total", "counter", "Inference requests by outcome."},
    [F_ITEMS] = {"batchd_inference_items_total", "counter",
                 "Batch rows executed (a request may contribute several)."},
    [F_EXECUTIONS] = {"batchd_inference_executions_total", "counter",
                      "Model executions (batches that succeeded)."},
    [F_BATCH] = {"batchd_batch_size", "histogram", "Rows per model execution."},
    [F_QUEUE_DUR] = {"batchd_queue_duration_seconds", "histogram",
                     "Successful requests: time from arrival until their batch started."},
    [F_COMPUTE_DUR] = {"batchd_compute_duration_seconds", "histogram",
                       "Successful requests: their batch's gather, run and scatter time."},
    [F_REQUEST_DUR] = {"batchd_request_duration_seconds", "histogram",
                       "Successful requests: time from arrival until the answer was ready."},
    [F_QUEUE_DEPTH] = {"batchd_queue_depth", "gauge", "Requests waiting in the queue."},
    [F_INFLIGHT] = {"batchd_inference_inflight", "gauge",
                    "Requests accepted by the scheduler and not yet answered (queued or running)."},
};

static void render_family(bd_buf_t *out, family_t f, bd_model_metrics_t *mm)
{
    const char *name = families[f].name;
    switch (f) {
    case F_REQUESTS:
        for (int p = 0; p < BD_PROTO_COUNT_; p++) {
            for (int o = 0; o < BD_OUTCOME_COUNT_; o++) {
                put_series(out, name, "", mm);
                bd_buf_printf(out, ",protocol=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                              protocol_names[p], outcome_names[o], load_u64(&mm->requests[p][o]));
            }
        }
        break;
    case F_ITEMS:
        put_series(out, name, "", mm);
        bd_buf_printf(out, "} %" PRIu64 "\n", load_u64(&mm->items));
        break;
    case F_EXECUTIONS:
        put_series(out, name, "", mm);
        bd_buf_printf(out, "} %" PRIu64 "\n", load_u64(&mm->executions));
        break;
    case F_BATCH:
        put_hist(out, name, mm, &mm->batch_size, batch_le, BATCH_BUCKETS, SUM_COUNT);
        break;
    case F_QUEUE_DUR:
        put_hist(out, name, mm, &mm->queue_dur, dur_le, DUR_BUCKETS, SUM_SECONDS);
        break;
    case F_COMPUTE_DUR:
        put_hist(out, name, mm, &mm->compute_dur, dur_le, DUR_BUCKETS, SUM_SECONDS);
        break;
    case F_REQUEST_DUR:
        put_hist(out, name, mm, &mm->request_dur, dur_le, DUR_BUCKETS, SUM_SECONDS);
        break;
    case F_QUEUE_DEPTH:
        put_series(out, name, "", mm);
        bd_buf_printf(out, "} %" PRId64 "\n", bd_metrics_get_queue_depth(mm));
        break;
    case F_INFLIGHT:
        put_series(out, name, "", mm);
        bd_buf_printf(out, "} %" PRId64 "\n", bd_metrics_get_inflight(mm));
        break;
    case F_COUNT_:
        break;
    }
}

void bd_metrics_render(bd_metrics_t *m, bd_buf_t *out)
{
    if (!m) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    for (int f = 0; f < F_COUNT_; f++) {
        put_header(out, families[f].name, families[f].type, families[f].help);
        for (bd_model_metrics_t *mm = m->head; mm; mm = mm->next) {
            render_family(out, (family_t)f, mm);
        }
    }
    put_header(out, "batchd_model_info", "gauge",
               "Where each loaded model version runs: always 1, labelled with its device and "
               "execution provider.");
    for (bd_model_metrics_t *mm = m->head; mm; mm = mm->next) {
        if (mm->device[0]) {
            put_series(out, "batchd_model_info", "", mm);
            bd_buf_puts(out, ",device=");
            put_label_value(out, mm->device);
            bd_buf_puts(out, ",execution_provider=");
            put_label_value(out, mm->provider);
            bd_buf_puts(out, "} 1\n");
        }
    }
    pthread_mutex_unlock(&m->mu);
    put_header(out, "batchd_websocket_connections", "gauge", "Open WebSocket connections.");
    bd_buf_printf(out, "batchd_websocket_connections %" PRId64 "\n",
                  bd_metrics_get_websocket_connections(m));
    put_header(out, "batchd_connections_refused_total", "counter",
               "Times a connection could not be accepted (at --max-connections or out of "
               "descriptors).");
    bd_buf_printf(out, "batchd_connections_refused_total %" PRIu64 "\n",
                  bd_metrics_get_connections_refused(m));
    put_header(out, "batchd_http_buffered_bytes", "gauge",
               "Request bytes the HTTP connections and WebSockets hold (a body being "
               "received counts its whole length; a WebSocket its messages in flight or "
               "arriving and unparsed bytes).");
    bd_buf_printf(out, "batchd_http_buffered_bytes %" PRId64 "\n", bd_metrics_get_http_buffered(m));
    put_header(out, "batchd_http_buffer_full_total", "counter",
               "Requests answered 503 from their head because their body would take "
               "batchd_http_buffered_bytes past --max-buffered-bytes.");
    bd_buf_printf(out, "batchd_http_buffer_full_total %" PRIu64 "\n",
                  bd_metrics_get_http_buffer_full(m));
    /* Only the front ends --rate-limit applies to (the Redis ingest reads at its own pace). */
    put_header(out, "batchd_rate_limited_total", "counter",
               "Infer requests refused with 429 by --rate-limit.");
    for (int p = BD_PROTO_HTTP; p <= BD_PROTO_WEBSOCKET; p++) {
        bd_buf_printf(out, "batchd_rate_limited_total{protocol=\"%s\"} %" PRIu64 "\n",
                      bd_protocol_name((bd_protocol_t)p),
                      bd_metrics_get_rate_limited(m, (bd_protocol_t)p));
    }
    if (m->extra_cb) {
        m->extra_cb(m->extra_ctx, out);
    }
}
