/* test_metrics: counters, gauge and histograms of src/metrics, and their Prometheus text,
 * checked line by line with exact values. Single-threaded except the concurrency test, which
 * checks that relaxed atomic adds from several threads lose nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"

/* The rendered text split into lines (owned copies). */
typedef struct {
    char **lines;
    size_t n;
    char *text;
} lines_t;

static lines_t render(bd_metrics_t *m)
{
    bd_buf_t b;
    bd_buf_init(&b);
    bd_metrics_render(m, &b);
    assert_false(b.failed);
    lines_t l = {0};
    l.text = bd_buf_steal(&b, NULL);
    assert_non_null(l.text);
    size_t len = strlen(l.text);
    assert_true(len > 0);
    assert_int_equal(l.text[len - 1], '\n');
    for (size_t i = 0; i < len; i++) {
        if (l.text[i] == '\n') {
            l.n++;
        }
    }
    l.lines = calloc(l.n, sizeof *l.lines);
    assert_non_null(l.lines);
    size_t k = 0;
    char *p = l.text;
    for (char *nl = strchr(p, '\n'); nl; nl = strchr(p, '\n')) {
        *nl = '\0';
        l.lines[k++] = p;
        p = nl + 1;
    }
    return l;
}

static void lines_free(lines_t *l)
{
    free(l->lines);
    free(l->text);
}

/* Index of the line equal to `want`, failing the test when it is absent. */
static size_t find_line(const lines_t *l, const char *want)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->lines[i], want) == 0) {
            return i;
        }
    }
    fail_msg("line not found: %s", want);
    return 0;
}

static size_t count_prefix(const lines_t *l, const char *prefix)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (strncmp(l->lines[i], prefix, strlen(prefix)) == 0) {
            n++;
        }
    }
    return n;
}

static void test_outcome_names(void **state)
{
    (void)state;
    assert_string_equal(bd_outcome_name(BD_OUTCOME_SUCCESS), "success");
    assert_string_equal(bd_outcome_name(BD_OUTCOME_REJECTED), "rejected");
    assert_string_equal(bd_outcome_name(BD_OUTCOME_INVALID), "invalid");
    assert_string_equal(bd_outcome_name(BD_OUTCOME_ERROR), "error");
    assert_string_equal(bd_outcome_name(BD_OUTCOME_TIMEOUT), "timeout");
    assert_string_equal(bd_outcome_name(BD_OUTCOME_CANCELLED), "cancelled");
    assert_string_equal(bd_outcome_name(BD_OUTCOME_COUNT_), "unknown");
}

static void test_model_handle_is_shared(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    assert_non_null(m);
    bd_model_metrics_t *a = bd_metrics_model(m, "mlp", "1");
    bd_model_metrics_t *b = bd_metrics_model(m, "mlp", "2");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(bd_metrics_model(m, "mlp", "1"), a);
    assert_null(bd_metrics_model(NULL, "mlp", "1"));
    assert_null(bd_metrics_model(m, NULL, "1"));
    bd_metrics_free(m);
}

static void test_null_handle_is_ignored(void **state)
{
    (void)state;
    bd_metrics_request(NULL, BD_PROTO_HTTP, BD_OUTCOME_SUCCESS);
    bd_metrics_request_durations(NULL, 1, 2, 3);
    bd_metrics_batch(NULL, 4);
    bd_metrics_queue_depth_add(NULL, 1);
    assert_int_equal(bd_metrics_get_requests(NULL, BD_OUTCOME_SUCCESS), 0);
    assert_int_equal(bd_metrics_get_items(NULL), 0);
    assert_int_equal(bd_metrics_get_executions(NULL), 0);
    assert_int_equal(bd_metrics_get_queue_depth(NULL), 0);
    bd_metrics_render(NULL, NULL);
    bd_metrics_free(NULL);
}

static void test_counters_read_back(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(m, "m", "1");
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_SUCCESS);
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_SUCCESS);
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_REJECTED);
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_COUNT_); /* out of range: ignored */
    bd_metrics_batch(mm, 3);
    bd_metrics_batch(mm, 5);
    bd_metrics_queue_depth_add(mm, 4);
    bd_metrics_queue_depth_add(mm, -1);
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_SUCCESS), 2);
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_REJECTED), 1);
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_ERROR), 0);
    assert_int_equal(bd_metrics_get_items(mm), 8);
    assert_int_equal(bd_metrics_get_executions(mm), 2);
    assert_int_equal(bd_metrics_get_queue_depth(mm), 3);
    bd_metrics_free(m);
}

static void test_render_empty_registry_has_headers(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    lines_t l = render(m);
    const char *want[] = {
        "# HELP batchd_inference_requests_total Inference requests by outcome.",
        "# TYPE batchd_inference_requests_total counter",
        "# HELP batchd_inference_items_total Batch rows executed (a request may contribute "
        "several).",
        "# TYPE batchd_inference_items_total counter",
        "# HELP batchd_inference_executions_total Model executions (batches that succeeded).",
        "# TYPE batchd_inference_executions_total counter",
        "# HELP batchd_batch_size Rows per model execution.",
        "# TYPE batchd_batch_size histogram",
        "# HELP batchd_queue_duration_seconds Successful requests: time from arrival until their "
        "batch started.",
        "# TYPE batchd_queue_duration_seconds histogram",
        "# HELP batchd_compute_duration_seconds Successful requests: their batch's gather, run and "
        "scatter time.",
        "# TYPE batchd_compute_duration_seconds histogram",
        "# HELP batchd_request_duration_seconds Successful requests: time from arrival until the "
        "answer was ready.",
        "# TYPE batchd_request_duration_seconds histogram",
        "# HELP batchd_queue_depth Requests waiting in the queue.",
        "# TYPE batchd_queue_depth gauge",
        "# HELP batchd_inference_inflight Requests accepted by the scheduler and not yet "
        "answered (queued or running).",
        "# TYPE batchd_inference_inflight gauge",
        "# HELP batchd_model_info Where each loaded model version runs: always 1, labelled with "
        "its device and execution provider.",
        "# TYPE batchd_model_info gauge",
        "# HELP batchd_websocket_connections Open WebSocket connections.",
        "# TYPE batchd_websocket_connections gauge",
        "batchd_websocket_connections 0",
        "# HELP batchd_connections_refused_total Times a connection could not be accepted (at "
        "--max-connections or out of descriptors).",
        "# TYPE batchd_connections_refused_total counter",
        "batchd_connections_refused_total 0",
        "# HELP batchd_http_buffered_bytes Request bytes the HTTP connections and WebSockets "
        "hold (a body being received counts its whole length; a WebSocket its messages in "
        "flight or arriving and unparsed bytes).",
        "# TYPE batchd_http_buffered_bytes gauge",
        "batchd_http_buffered_bytes 0",
        "# HELP batchd_http_buffer_full_total Requests answered 503 from their head because their "
        "body would take batchd_http_buffered_bytes past --max-buffered-bytes.",
        "# TYPE batchd_http_buffer_full_total counter",
        "batchd_http_buffer_full_total 0",
        "# HELP batchd_rate_limited_total Infer requests refused with 429 by --rate-limit.",
        "# TYPE batchd_rate_limited_total counter",
        "batchd_rate_limited_total{protocol=\"http\"} 0",
        "batchd_rate_limited_total{protocol=\"websocket\"} 0",
    };
    assert_int_equal(l.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < l.n; i++) {
        assert_string_equal(l.lines[i], want[i]);
    }
    lines_free(&l);
    bd_metrics_free(m);
}

static void test_render_counters_exact(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(m, "mlp", "1");
    for (int i = 0; i < 7; i++) {
        bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_SUCCESS);
    }
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_INVALID);
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_ERROR);
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_ERROR);
    bd_metrics_request(mm, BD_PROTO_WEBSOCKET, BD_OUTCOME_CANCELLED);
    bd_metrics_websocket_connections_add(m, 2);
    bd_metrics_websocket_connections_add(m, -1);
    bd_metrics_batch(mm, 3);
    bd_metrics_batch(mm, 4);
    bd_metrics_queue_depth_add(mm, 5);
    bd_metrics_queue_depth_add(mm, -2);
    bd_metrics_inflight_add(mm, 4);
    bd_metrics_inflight_add(mm, -1);
    bd_metrics_rate_limited_add(m, BD_PROTO_WEBSOCKET);
    for (int k = 0; k < 3; k++) {
        bd_metrics_rate_limited_add(m, BD_PROTO_HTTP);
    }
    bd_metrics_http_buffered_set(m, 99);
    bd_metrics_http_buffered_set(m, 12345); /* a gauge: the last value */
    bd_metrics_http_buffer_full_add(m);
    bd_metrics_http_buffer_full_add(m);
    lines_t l = render(m);
    size_t i = find_line(&l, "# TYPE batchd_inference_requests_total counter");
    const char *req[] = {
        "batchd_inference_requests_total{model=\"mlp\",version=\"1\",protocol=\"http\",outcome="
        "\"success\"} 7",
        "batchd_inference_requests_total{model=\"mlp\",version=\"1\",protocol=\"http\",outcome="
        "\"rejected\"} 0",
        "batchd_inference_requests_total{model=\"mlp\",version=\"1\",protocol=\"http\",outcome="
        "\"invalid\"} 1",
        "batchd_inference_requests_total{model=\"mlp\",version=\"1\",protocol=\"http\",outcome="
        "\"error\"} 2",
        "batchd_inference_requests_total{model=\"mlp\",version=\"1\",protocol=\"http\",outcome="
        "\"timeout\"} 0",
        "batchd_inference_requests_total{model=\"mlp\",version=\"1\",protocol=\"http\",outcome="
        "\"cancelled\"} 0",
    };
    for (size_t k = 0; k < 6; k++) {
        assert_string_equal(l.lines[i + 1 + k], req[k]);
    }
    /* The same outcomes again for the websocket protocol, each its own series. */
    assert_string_equal(l.lines[i + 7], "batchd_inference_requests_total{model=\"mlp\",version="
                                        "\"1\",protocol=\"websocket\",outcome=\"success\"} 0");
    assert_string_equal(l.lines[i + 12], "batchd_inference_requests_total{model=\"mlp\",version="
                                         "\"1\",protocol=\"websocket\",outcome=\"cancelled\"} 1");
    /* And for redis, listed although no Redis front end ever ran: every protocol always is,
     * so the family has 3 protocols x 6 outcomes per model and then the next family. */
    assert_string_equal(l.lines[i + 13], "batchd_inference_requests_total{model=\"mlp\",version="
                                         "\"1\",protocol=\"redis\",outcome=\"success\"} 0");
    assert_string_equal(l.lines[i + 18], "batchd_inference_requests_total{model=\"mlp\",version="
                                         "\"1\",protocol=\"redis\",outcome=\"cancelled\"} 0");
    assert_string_equal(l.lines[i + 19], "# HELP batchd_inference_items_total Batch rows executed "
                                         "(a request may contribute several).");
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_CANCELLED), 1);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_HTTP, BD_OUTCOME_CANCELLED), 0);
    assert_string_equal(l.lines[l.n - 14], "batchd_websocket_connections 1");
    assert_string_equal(l.lines[l.n - 11], "batchd_connections_refused_total 0");
    assert_string_equal(l.lines[l.n - 8], "batchd_http_buffered_bytes 12345");
    assert_string_equal(l.lines[l.n - 5], "batchd_http_buffer_full_total 2");
    assert_string_equal(l.lines[l.n - 2], "batchd_rate_limited_total{protocol=\"http\"} 3");
    assert_string_equal(l.lines[l.n - 1], "batchd_rate_limited_total{protocol=\"websocket\"} 1");
    assert_int_equal(bd_metrics_get_rate_limited(m, BD_PROTO_HTTP), 3);
    assert_int_equal(bd_metrics_get_rate_limited(m, BD_PROTO_WEBSOCKET), 1);
    assert_int_equal(bd_metrics_get_rate_limited(m, BD_PROTO_REDIS), 0);
    i = find_line(&l, "# TYPE batchd_inference_items_total counter");
    assert_string_equal(l.lines[i + 1],
                        "batchd_inference_items_total{model=\"mlp\",version=\"1\"} 7");
    i = find_line(&l, "# TYPE batchd_inference_executions_total counter");
    assert_string_equal(l.lines[i + 1],
                        "batchd_inference_executions_total{model=\"mlp\",version=\"1\"} 2");
    i = find_line(&l, "# TYPE batchd_queue_depth gauge");
    assert_string_equal(l.lines[i + 1], "batchd_queue_depth{model=\"mlp\",version=\"1\"} 3");
    i = find_line(&l, "# TYPE batchd_inference_inflight gauge");
    assert_string_equal(l.lines[i + 1], "batchd_inference_inflight{model=\"mlp\",version=\"1\"} 3");
    /* then model_info's HELP and TYPE (no series: no device set), and the server-wide
     * families: HELP, TYPE, values */
    assert_int_equal(i + 20, l.n);
    assert_int_equal(bd_metrics_get_inflight(mm), 3);
    /* Each family's HELP and TYPE once. */
    assert_int_equal(count_prefix(&l, "# TYPE "), 15);
    assert_int_equal(count_prefix(&l, "# HELP "), 15);
    /* 15 header pairs, 3 protocols x 6 outcomes, items, executions, depth, inflight, 12
     * batch-size lines, 3 x 19 duration lines and the six server-wide values. */
    assert_int_equal(l.n, 30 + 18 + 4 + 12 + 3 * 19 + 6);
    lines_free(&l);
    bd_metrics_free(m);
}

static void test_render_batch_histogram_cumulative(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(m, "m", "2");
    size_t sizes[] = {1, 1, 2, 3, 4, 5, 64, 200, 256, 257, 1000};
    size_t total = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        bd_metrics_batch(mm, sizes[k]);
        total += sizes[k];
    }
    lines_t l = render(m);
    size_t i = find_line(&l, "# TYPE batchd_batch_size histogram");
    const char *want[] = {
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"1\"} 2",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"2\"} 3",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"4\"} 5",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"8\"} 6",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"16\"} 6",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"32\"} 6",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"64\"} 7",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"128\"} 7",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"256\"} 9",
        "batchd_batch_size_bucket{model=\"m\",version=\"2\",le=\"+Inf\"} 11",
        "batchd_batch_size_sum{model=\"m\",version=\"2\"} 1793",
        "batchd_batch_size_count{model=\"m\",version=\"2\"} 11",
    };
    assert_int_equal(total, 1793);
    for (size_t k = 0; k < 12; k++) {
        assert_string_equal(l.lines[i + 1 + k], want[k]);
    }
    assert_string_equal(l.lines[i + 13], "# HELP batchd_queue_duration_seconds Successful "
                                         "requests: time from arrival until their batch started.");
    lines_free(&l);
    bd_metrics_free(m);
}

static void test_render_duration_histograms_exact(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(m, "m", "1");
    /* queue: 100us (on the 0.0001 bound: le is inclusive), 101us, 10s, 11s.
     * compute: 0, 2500us, 2501us, 3us. total: 1.5ms x 4 (sum 0.006000). */
    bd_metrics_request_durations(mm, 100, 0, 1500);
    bd_metrics_request_durations(mm, 101, 2500, 1500);
    bd_metrics_request_durations(mm, 10000000, 2501, 1500);
    bd_metrics_request_durations(mm, 11000000, 3, 1500);
    lines_t l = render(m);
    size_t i = find_line(&l, "# TYPE batchd_queue_duration_seconds histogram");
    const char *q = "batchd_queue_duration_seconds_bucket{model=\"m\",version=\"1\",le=";
    const char *les[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                         "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                         "1",      "2.5",     "5",      "10",    "+Inf"};
    unsigned qwant[] = {1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4};
    char want[256];
    for (size_t k = 0; k < 17; k++) {
        snprintf(want, sizeof want, "%s\"%s\"} %u", q, les[k], qwant[k]);
        assert_string_equal(l.lines[i + 1 + k], want);
    }
    assert_string_equal(l.lines[i + 18],
                        "batchd_queue_duration_seconds_sum{model=\"m\",version=\"1\"} 21.000201");
    assert_string_equal(l.lines[i + 19],
                        "batchd_queue_duration_seconds_count{model=\"m\",version=\"1\"} 4");

    i = find_line(&l, "# TYPE batchd_compute_duration_seconds histogram");
    const char *c = "batchd_compute_duration_seconds_bucket{model=\"m\",version=\"1\",le=";
    unsigned cwant[] = {2, 2, 2, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
    for (size_t k = 0; k < 17; k++) {
        snprintf(want, sizeof want, "%s\"%s\"} %u", c, les[k], cwant[k]);
        assert_string_equal(l.lines[i + 1 + k], want);
    }
    assert_string_equal(l.lines[i + 18],
                        "batchd_compute_duration_seconds_sum{model=\"m\",version=\"1\"} 0.005004");

    i = find_line(&l, "# TYPE batchd_request_duration_seconds histogram");
    assert_string_equal(
        l.lines[i + 4],
        "batchd_request_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"0.001\"} 0");
    assert_string_equal(
        l.lines[i + 5],
        "batchd_request_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"0.0025\"} 4");
    assert_string_equal(l.lines[i + 18],
                        "batchd_request_duration_seconds_sum{model=\"m\",version=\"1\"} 0.006000");
    assert_string_equal(l.lines[i + 19],
                        "batchd_request_duration_seconds_count{model=\"m\",version=\"1\"} 4");
    lines_free(&l);
    bd_metrics_free(m);
}

static void test_render_escapes_label_values(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(m, "a\"b\\c\nd", "1");
    bd_metrics_queue_depth_add(mm, -1);
    lines_t l = render(m);
    find_line(&l, "batchd_queue_depth{model=\"a\\\"b\\\\c\\nd\",version=\"1\"} -1");
    lines_free(&l);
    bd_metrics_free(m);

    /* A folder name that is not UTF-8: each bad byte is U+FFFD, valid UTF-8 is kept. */
    m = bd_metrics_new();
    mm = bd_metrics_model(m, "\xff\xfe caf\xc3\xa9 \xc3", "1");
    bd_metrics_queue_depth_add(mm, -1);
    l = render(m);
    find_line(&l, "batchd_queue_depth{model=\"\xef\xbf\xbd\xef\xbf\xbd caf\xc3\xa9 "
                  "\xef\xbf\xbd\",version=\"1\"} -1");
    lines_free(&l);
    bd_metrics_free(m);
}

static void test_render_models_in_registration_order(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *b = bd_metrics_model(m, "b", "1");
    bd_model_metrics_t *a = bd_metrics_model(m, "a", "3");
    bd_metrics_batch(b, 2);
    bd_metrics_batch(a, 5);
    lines_t l = render(m);
    size_t i = find_line(&l, "# TYPE batchd_inference_items_total counter");
    assert_string_equal(l.lines[i + 1],
                        "batchd_inference_items_total{model=\"b\",version=\"1\"} 2");
    assert_string_equal(l.lines[i + 2],
                        "batchd_inference_items_total{model=\"a\",version=\"3\"} 5");
    assert_string_equal(l.lines[i + 3], "# HELP batchd_inference_executions_total Model "
                                        "executions (batches that succeeded).");
    /* 2 models x 3 protocols x 6 outcomes */
    assert_int_equal(count_prefix(&l, "batchd_inference_requests_total{"), 36);
    assert_int_equal(l.n, 24 + 2 + 10 + 2 * (18 + 4 + 12 + 3 * 19));
    lines_free(&l);
    bd_metrics_free(m);
}

/* batchd_model_info: one series per version whose device was set, with the device and the
 * execution provider as labels, value 1; set again, it is replaced. */
static void test_render_model_info(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *a = bd_metrics_model(m, "a", "1");
    bd_model_metrics_t *b = bd_metrics_model(m, "b\"q", "2");
    bd_metrics_model(m, "not_loaded", "1");
    bd_metrics_model_info(m, a, "cpu", "CPUExecutionProvider");
    bd_metrics_model_info(m, b, "cpu", "sim");
    bd_metrics_model_info(m, b, "cuda:0", "CUDAExecutionProvider");
    bd_metrics_model_info(NULL, a, "cpu", "x"); /* no registry: nothing */
    lines_t l = render(m);
    size_t i = find_line(&l, "# TYPE batchd_model_info gauge");
    assert_string_equal(l.lines[i + 1], "batchd_model_info{model=\"a\",version=\"1\","
                                        "device=\"cpu\",execution_provider="
                                        "\"CPUExecutionProvider\"} 1");
    assert_string_equal(l.lines[i + 2], "batchd_model_info{model=\"b\\\"q\",version=\"2\","
                                        "device=\"cuda:0\",execution_provider="
                                        "\"CUDAExecutionProvider\"} 1");
    assert_int_equal(count_prefix(&l, "batchd_model_info{"), 2);
    lines_free(&l);
    bd_metrics_free(m);
}

#define CONC_THREADS 4
#define CONC_ITERS 20000

static void *conc_worker(void *arg)
{
    bd_model_metrics_t *mm = arg;
    for (int i = 0; i < CONC_ITERS; i++) {
        bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_SUCCESS);
        bd_metrics_batch(mm, 2);
        bd_metrics_queue_depth_add(mm, 1);
        bd_metrics_queue_depth_add(mm, -1);
        bd_metrics_request_durations(mm, 1, 2, 3);
    }
    return NULL;
}

static void test_concurrent_updates_lose_nothing(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(m, "m", "1");
    pthread_t t[CONC_THREADS];
    for (int i = 0; i < CONC_THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, conc_worker, mm), 0);
    }
    /* Scrape while they run: must not crash or race (TSan checks the latter). */
    for (int i = 0; i < 5; i++) {
        lines_t l = render(m);
        lines_free(&l);
    }
    for (int i = 0; i < CONC_THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    uint64_t n = (uint64_t)CONC_THREADS * CONC_ITERS;
    assert_int_equal(bd_metrics_get_requests(mm, BD_OUTCOME_SUCCESS), n);
    assert_int_equal(bd_metrics_get_executions(mm), n);
    assert_int_equal(bd_metrics_get_items(mm), 2 * n);
    assert_int_equal(bd_metrics_get_queue_depth(mm), 0);
    lines_t l = render(m);
    find_line(&l, "batchd_batch_size_count{model=\"m\",version=\"1\"} 80000");
    find_line(&l, "batchd_request_duration_seconds_sum{model=\"m\",version=\"1\"} 0.240000");
    lines_free(&l);
    bd_metrics_free(m);
}

/* The statistics extension reads the same counters as /metrics: phase times per batch size,
 * per-request compute times (each request charged its batch's phases), success and fail. */
static void test_stats_from_phases_and_requests(void **state)
{
    (void)state;
    bd_metrics_t *m = bd_metrics_new();
    bd_model_metrics_t *mm = bd_metrics_model(m, "m", "1");
    bd_metrics_batch_phases(mm, 3, 2, 1000, 50000, 2000);
    bd_metrics_batch_phases(mm, 1, 1, 0, 20000, 500);
    bd_metrics_batch_phases(mm, 3, 3, 10, 40000, 20);
    bd_metrics_batch_phases(mm, 300, 1, 1, 2, 3); /* beyond the direct table */
    bd_metrics_batch_phases(mm, 1000, 1, 4, 5, 6);
    bd_metrics_batch_phases(mm, 300, 1, 1, 2, 3);
    bd_metrics_request_durations(mm, 10, 20, 40);
    bd_metrics_request_durations(mm, 5, 20, 30);
    bd_metrics_request_fail_duration(mm, 7);
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_REJECTED);
    bd_metrics_request(mm, BD_PROTO_HTTP, BD_OUTCOME_INVALID); /* a fail of no time */
    bd_model_stats_t st;
    bd_metrics_stats(mm, &st);
    assert_int_equal(st.success.count, 2);
    assert_int_equal(st.success.ns, 70000);
    assert_int_equal(st.queue.count, 2);
    assert_int_equal(st.queue.ns, 15000);
    assert_int_equal(st.fail.count, 3);
    assert_int_equal(st.fail.ns, 7000);
    assert_int_equal(st.compute_input.count, 9);
    assert_int_equal(st.compute_input.ns, 2 * 1000 + 3 * 10 + 1 + 4 + 1);
    assert_int_equal(st.compute_infer.ns, 2 * 50000 + 20000 + 3 * 40000 + 2 + 5 + 2);
    assert_int_equal(st.compute_output.ns, 2 * 2000 + 500 + 3 * 20 + 3 + 6 + 3);
    assert_int_equal(st.inference_count, 3 + 1 + 3 + 300 + 1000 + 300);
    assert_int_equal(st.execution_count, 6);
    assert_int_equal(st.execution_count, bd_metrics_get_executions(mm));
    assert_int_equal(st.inference_count, bd_metrics_get_items(mm));
    assert_true(st.last_inference_ms > 1600000000000ull);

    bd_batch_stats_t bs[8];
    assert_int_equal(bd_metrics_batch_stats(mm, bs, 8), 4);
    assert_int_equal(bs[0].batch_size, 1);
    assert_int_equal(bs[0].compute_infer.count, 1);
    assert_int_equal(bs[0].compute_infer.ns, 20000);
    assert_int_equal(bs[1].batch_size, 3);
    assert_int_equal(bs[1].compute_input.count, 2);
    assert_int_equal(bs[1].compute_input.ns, 1010);
    assert_int_equal(bs[1].compute_infer.ns, 90000);
    assert_int_equal(bs[1].compute_output.ns, 2020);
    assert_int_equal(bs[2].batch_size, 300);
    assert_int_equal(bs[2].compute_infer.count, 2);
    assert_int_equal(bs[3].batch_size, 1000);
    assert_int_equal(bd_metrics_batch_stats(mm, bs, 2), 2); /* capped */
    assert_int_equal(bd_metrics_batch_stats(NULL, bs, 8), 0);
    bd_metrics_stats(NULL, &st);
    assert_int_equal(st.execution_count, 0);

    /* /metrics agrees: the batch histogram saw the same six batches. */
    bd_buf_t b;
    bd_buf_init(&b);
    bd_metrics_render(m, &b);
    assert_non_null(strstr(b.data, "batchd_batch_size_count{model=\"m\",version=\"1\"} 6\n"));
    assert_non_null(
        strstr(b.data, "batchd_request_duration_seconds_count{model=\"m\",version=\"1\"} 2\n"));
    bd_buf_dispose(&b);
    bd_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcome_names),
        cmocka_unit_test(test_model_handle_is_shared),
        cmocka_unit_test(test_null_handle_is_ignored),
        cmocka_unit_test(test_counters_read_back),
        cmocka_unit_test(test_render_empty_registry_has_headers),
        cmocka_unit_test(test_render_counters_exact),
        cmocka_unit_test(test_render_batch_histogram_cumulative),
        cmocka_unit_test(test_render_duration_histograms_exact),
        cmocka_unit_test(test_render_escapes_label_values),
        cmocka_unit_test(test_render_models_in_registration_order),
        cmocka_unit_test(test_render_model_info),
        cmocka_unit_test(test_concurrent_updates_lose_nothing),
        cmocka_unit_test(test_stats_from_phases_and_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
