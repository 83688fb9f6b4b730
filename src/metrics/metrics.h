/* metrics: Prometheus counters, gauges and histograms per model version, rendered as text
 * for GET /metrics.
 *
 * Every value is an atomic updated with relaxed ordering, so the hot path takes no lock;
 * a scrape reads them without stopping anyone (values of one scrape are each exact but not a
 * single snapshot). The registry's list of models is guarded by a mutex taken only when a
 * model version is registered and when rendering.
 *
 * Threads: any. bd_metrics_model_t handles stay valid until bd_metrics_free. */
#ifndef BD_METRICS_H
#define BD_METRICS_H

#include "core/core.h"

typedef enum {
    BD_OUTCOME_SUCCESS = 0,
    BD_OUTCOME_REJECTED,  /* queue full, shutting down or the circuit breaker (503) */
    BD_OUTCOME_INVALID,   /* bad request (400) */
    BD_OUTCOME_ERROR,     /* backend failure (500) */
    BD_OUTCOME_TIMEOUT,   /* deadline passed while queued */
    BD_OUTCOME_CANCELLED, /* client went away while queued */
    BD_OUTCOME_COUNT_
} bd_outcome_t;

const char *bd_outcome_name(bd_outcome_t o); /* "success", "rejected", ... */

/* The front end a request came through: the `protocol` label of requests_total. */
typedef enum {
    BD_PROTO_HTTP = 0,
    BD_PROTO_WEBSOCKET,
    BD_PROTO_REDIS,
    BD_PROTO_COUNT_
} bd_protocol_t;

const char *bd_protocol_name(bd_protocol_t p); /* "http", "websocket", "redis" */

typedef struct bd_metrics bd_metrics_t;
typedef struct bd_model_metrics bd_model_metrics_t;

bd_metrics_t *bd_metrics_new(void);
void bd_metrics_free(bd_metrics_t *m);

/* The handle for (model, version), created on first use; owned by the registry. NULL only
 * when out of memory (every bd_metrics_* call accepts NULL and does nothing). */
bd_model_metrics_t *bd_metrics_model(bd_metrics_t *m, const char *model, const char *version);

/* batchd_inference_requests_total{model,version,protocol,outcome} += 1 */
void bd_metrics_request(bd_model_metrics_t *mm, bd_protocol_t protocol, bd_outcome_t outcome);
/* A successful request's durations (microseconds): queue (arrival -> batch start), compute
 * (its batch's gather, run and scatter) and end to end (arrival -> completion). */
void bd_metrics_request_durations(bd_model_metrics_t *mm, uint64_t queue_us, uint64_t compute_us,
                                  uint64_t total_us);
/* One batch executed with `rows` items: executions_total += 1, items_total += rows,
 * batch_size histogram observes rows. */
void bd_metrics_batch(bd_model_metrics_t *mm, size_t rows);
/* batchd_queue_depth += delta */
void bd_metrics_queue_depth_add(bd_model_metrics_t *mm, int64_t delta);

/* batchd_inference_inflight += delta: accepted by the scheduler, not yet answered. */
void bd_metrics_inflight_add(bd_model_metrics_t *mm, int64_t delta);

/* batchd_model_info{model,version,device,execution_provider} 1 from now on: where the
 * version runs ("cpu" or "cuda:N"; "CPUExecutionProvider", "CUDAExecutionProvider" or
 * "sim"). Set when the version has loaded (a reload sets it again); like the version's other
 * series it stays after an unload. Longer strings are cut. Any thread. */
void bd_metrics_model_info(bd_metrics_t *m, bd_model_metrics_t *mm, const char *device,
                           const char *provider);

/* batchd_connections_refused_total += n: times a connection could not be taken (at
 * --max-connections, or out of descriptors); accepting pauses until one closes. */
void bd_metrics_connections_refused_add(bd_metrics_t *m, uint64_t n);
uint64_t bd_metrics_get_connections_refused(bd_metrics_t *m);

/* batchd_websocket_connections += delta (open WebSocket connections, all models). */
void bd_metrics_websocket_connections_add(bd_metrics_t *m, int64_t delta);

/* batchd_rate_limited_total{protocol} += 1: an infer request refused with 429 by --rate-limit
 * (counted here, not in requests_total: it never reached a model). */
/* batchd_http_buffered_bytes = bytes (the server's bd_budget_t, which http and stream keep), and
 * batchd_http_buffer_full_total += 1 for a request refused by --max-buffered-bytes (from its
 * head by http, or once inflated by infer). */
void bd_metrics_http_buffered_set(bd_metrics_t *m, int64_t bytes);
int64_t bd_metrics_get_http_buffered(bd_metrics_t *m);
void bd_metrics_http_buffer_full_add(bd_metrics_t *m);
uint64_t bd_metrics_get_http_buffer_full(bd_metrics_t *m);
void bd_metrics_rate_limited_add(bd_metrics_t *m, bd_protocol_t protocol);
uint64_t bd_metrics_get_rate_limited(bd_metrics_t *m, bd_protocol_t protocol);

/* A front end's own metric families (the Redis ingest's), appended to the exposition after
 * the server-wide ones: `cb` writes complete families (# HELP, # TYPE, samples) into `out`.
 * It runs on the thread that calls bd_metrics_render (the event loop). One callback at
 * most; cb NULL removes it. */
typedef void (*bd_metrics_render_cb)(void *ctx, bd_buf_t *out);
void bd_metrics_set_extra(bd_metrics_t *m, bd_metrics_render_cb cb, void *ctx);

/* Read back a counter (for tests and the statistics extension); requests are summed over
 * protocols. */
uint64_t bd_metrics_get_requests(bd_model_metrics_t *mm, bd_outcome_t outcome);
uint64_t bd_metrics_get_requests_by(bd_model_metrics_t *mm, bd_protocol_t protocol,
                                    bd_outcome_t outcome);
int64_t bd_metrics_get_websocket_connections(bd_metrics_t *m);
uint64_t bd_metrics_get_items(bd_model_metrics_t *mm);
uint64_t bd_metrics_get_executions(bd_model_metrics_t *mm);
int64_t bd_metrics_get_queue_depth(bd_model_metrics_t *mm);
int64_t bd_metrics_get_inflight(bd_model_metrics_t *mm);

/* ---- statistics extension (Triton's /v2/models/{m}/stats), from the same counters ----- */

typedef struct {
    uint64_t count;
    uint64_t ns; /* cumulative nanoseconds */
} bd_stat_duration_t;

typedef struct {
    bd_stat_duration_t success; /* successful requests, end to end */
    bd_stat_duration_t fail;    /* failed requests (error, timeout, cancelled, rejected, invalid) */
    bd_stat_duration_t queue;   /* time queued, per executed request */
    bd_stat_duration_t compute_input;  /* gathering inputs, per executed request */
    bd_stat_duration_t compute_infer;  /* the backend run, per executed request */
    bd_stat_duration_t compute_output; /* scattering outputs, per executed request */
    uint64_t inference_count;          /* rows executed (= items_total) */
    uint64_t execution_count;          /* batches executed (= executions_total) */
    uint64_t last_inference_ms;        /* wall clock (ms since the epoch) of the last batch */
} bd_model_stats_t;

typedef struct {
    uint64_t batch_size;
    bd_stat_duration_t compute_input; /* count = batches of this size */
    bd_stat_duration_t compute_infer;
    bd_stat_duration_t compute_output;
} bd_batch_stats_t;

/* One batch of `rows` rows: its gather, run and scatter times in nanoseconds, and the number
 * of requests in it. Updates executions, items, the batch-size histogram and batch_stats. */
void bd_metrics_batch_phases(bd_model_metrics_t *mm, size_t rows, size_t requests,
                             uint64_t input_ns, uint64_t infer_ns, uint64_t output_ns);
/* A request that failed after it was queued (error, timeout, cancelled): fail.count += 1,
 * fail.ns += its time from arrival to completion. Rejected and invalid requests count in fail
 * with no time; successes (success, queue) come from bd_metrics_request_durations.
 * Any thread. */
void bd_metrics_request_fail_duration(bd_model_metrics_t *mm, uint64_t total_us);
void bd_metrics_stats(bd_model_metrics_t *mm, bd_model_stats_t *out);
/* Per-batch-size statistics, ascending by batch_size; returns how many were written. At most
 * BD_METRICS_MAX_BATCH_STATS sizes are kept (each size 1..256, and the first 64 sizes above
 * 256 that ran), whatever max_batch_size is now: a reload may have lowered it. */
#define BD_METRICS_MAX_BATCH_STATS (256 + 64)
size_t bd_metrics_batch_stats(bd_model_metrics_t *mm, bd_batch_stats_t *out, size_t cap);

/* Append the Prometheus text exposition (version 0.0.4) of every metric. Families:
 *   batchd_inference_requests_total{model,version,protocol,outcome} counter
 *   batchd_inference_items_total{model,version}               counter
 *   batchd_inference_executions_total{model,version}          counter
 *   batchd_batch_size{model,version}                          histogram (le 1,2,4,..,256,+Inf)
 *   batchd_queue_duration_seconds{model,version}              histogram
 *   batchd_compute_duration_seconds{model,version}            histogram
 *   batchd_request_duration_seconds{model,version}            histogram
 *   batchd_queue_depth{model,version}                         gauge
 *   batchd_inference_inflight{model,version}                  gauge
 *   batchd_websocket_connections                              gauge (no labels)
 *   batchd_connections_refused_total                          counter (no labels)
 *   batchd_http_buffered_bytes                                gauge (no labels)
 *   batchd_http_buffer_full_total                             counter (no labels)
 *   batchd_rate_limited_total{protocol}                       counter (http, websocket)
 * then the extra families (bd_metrics_set_extra). Each family has its # HELP and # TYPE lines
 * once; every protocol (http, websocket, redis) and every outcome is listed for every model
 * (0 included), whichever front ends run. */
void bd_metrics_render(bd_metrics_t *m, bd_buf_t *out);

#endif
