/* test_loadgen.c: the load generator's pieces that need no server: the histogram against a
 * sorted array, merging, the open-loop schedule arithmetic and the Poisson mean, the HTTP
 * reply parser fed in every split, URL parsing, request building from metadata, and the
 * CSV/JSON/SVG fields. The event loop itself is tested end to end (tests/e2e/test_bench.py)
 * against a fake server with a known delay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/loadgen.h"
#include "loadgen/loadgen_internal.h"

/* ---- histogram ------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t exact_pct(const uint64_t *sorted, size_t n, double pct)
{
    size_t rank = (size_t)ceil(pct / 100.0 * (double)n - 1e-9);
    if (rank < 1) {
        rank = 1;
    }
    return sorted[rank - 1];
}

static void test_hdr_percentiles_match_sorted_array(void **state)
{
    (void)state;
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof *v);
    assert_non_null(v);
    bd_hdr_t *h = bd_hdr_new((uint64_t)3600 * 1000000, 3);
    assert_non_null(h);
    bd_rng_t rng;
    bd_rng_seed(&rng, 42);
    long double sum = 0;
    for (size_t i = 0; i < N; i++) {
        /* log-uniform from 1 us to 100 s: every bucket size gets exercised */
        v[i] = (uint64_t)exp(bd_rng_uniform(&rng) * log(1e8));
        sum += v[i];
        bd_hdr_record(h, v[i]);
    }
    qsort(v, N, sizeof *v, cmp_u64);
    static const double pcts[] = {0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++) {
        uint64_t want = exact_pct(v, N, pcts[i]);
        uint64_t got = bd_hdr_percentile(h, pcts[i]);
        /* Stated precision: the same bucket, i.e. at most width-1 above, never below, and
         * the width is under 1/1024 of the value (3 significant digits). */
        assert_true(got >= want);
        assert_true(got - want < bd_hdr_bucket_width(h, want));
        assert_true((double)(got - want) <= (double)want / 1024.0);
    }
    assert_int_equal(bd_hdr_count(h), N);
    assert_int_equal(bd_hdr_min(h), v[0]);
    assert_int_equal(bd_hdr_max(h), v[N - 1]);
    assert_int_equal(bd_hdr_percentile(h, 100), v[N - 1]);
    assert_true(fabs(bd_hdr_mean(h) - (double)(sum / N)) < 1e-6 * (double)(sum / N));
    free(v);
    bd_hdr_free(h);
}

static void test_hdr_small_values_are_exact(void **state)
{
    (void)state;
    bd_hdr_t *h = bd_hdr_new(1000000, 3);
    for (uint64_t x = 1; x <= 1000; x++) {
        bd_hdr_record(h, x);
    }
    assert_int_equal(bd_hdr_percentile(h, 50), 500);
    assert_int_equal(bd_hdr_percentile(h, 90), 900);
    assert_int_equal(bd_hdr_percentile(h, 99), 990);
    assert_int_equal(bd_hdr_percentile(h, 99.9), 999);
    assert_int_equal(bd_hdr_percentile(h, 100), 1000);
    assert_int_equal(bd_hdr_percentile(h, 0.05), 1);
    assert_int_equal(bd_hdr_bucket_width(h, 2047), 1);
    assert_int_equal(bd_hdr_bucket_width(h, 2048), 2);
    assert_int_equal(bd_hdr_bucket_width(h, 1000000), 512);
    assert_true(fabs(bd_hdr_mean(h) - 500.5) < 1e-9);
    bd_hdr_reset(h);
    assert_int_equal(bd_hdr_count(h), 0);
    assert_int_equal(bd_hdr_percentile(h, 50), 0);
    assert_int_equal(bd_hdr_min(h), 0);
    bd_hdr_free(h);
}

static void test_hdr_clamps_above_highest(void **state)
{
    (void)state;
    bd_hdr_t *h = bd_hdr_new(10000, 3);
    bd_hdr_record(h, 5);
    bd_hdr_record_n(h, 1000000, 3);
    assert_int_equal(bd_hdr_count(h), 4);
    assert_int_equal(bd_hdr_clamped(h), 3);
    assert_int_equal(bd_hdr_max(h), 10000);
    assert_int_equal(bd_hdr_percentile(h, 100), 10000);
    assert_null(bd_hdr_new(10000, 0));
    assert_null(bd_hdr_new(10000, 6));
    assert_null(bd_hdr_new(1, 3));
    bd_hdr_free(h);
}

static void test_hdr_merge_equals_recording_all(void **state)
{
    (void)state;
    bd_hdr_t *a = bd_hdr_new(100000000, 3), *b = bd_hdr_new(100000000, 3);
    bd_hdr_t *all = bd_hdr_new(100000000, 3);
    bd_rng_t rng;
    bd_rng_seed(&rng, 7);
    for (int i = 0; i < 50000; i++) {
        uint64_t x = 1 + bd_rng_next_u64(&rng) % 5000000;
        bd_hdr_record(i % 3 ? a : b, x);
        bd_hdr_record(all, x);
    }
    assert_int_equal(bd_hdr_merge(a, b), 0);
    assert_int_equal(bd_hdr_count(a), 50000);
    assert_int_equal(bd_hdr_min(a), bd_hdr_min(all));
    assert_int_equal(bd_hdr_max(a), bd_hdr_max(all));
    assert_true(fabs(bd_hdr_mean(a) - bd_hdr_mean(all)) < 1e-6);
    for (double p = 1; p <= 100; p += 0.5) {
        assert_int_equal(bd_hdr_percentile(a, p), bd_hdr_percentile(all, p));
    }
    bd_hdr_t *other = bd_hdr_new(100000000, 2);
    assert_int_equal(bd_hdr_merge(a, other), BD_EINVAL);
    bd_hdr_t *empty = bd_hdr_new(100000000, 3);
    assert_int_equal(bd_hdr_merge(a, empty), 0);
    assert_int_equal(bd_hdr_min(a), bd_hdr_min(all));
    bd_hdr_free(a);
    bd_hdr_free(b);
    bd_hdr_free(all);
    bd_hdr_free(other);
    bd_hdr_free(empty);
}

/* ---- schedule -------------------------------------------------------------------------- */

static void test_constant_schedule_is_exact(void **state)
{
    (void)state;
    bd_lg_sched_t s;
    bd_lg_sched_init(&s, BD_LG_CONSTANT, 50.0, 1);
    for (uint64_t k = 0; k < 1000; k++) {
        assert_int_equal(bd_lg_sched_next(&s), k * 20000);
    }
    bd_lg_sched_init(&s, BD_LG_CONSTANT, 3.0, 1);
    assert_int_equal(bd_lg_sched_next(&s), 0);
    assert_int_equal(bd_lg_sched_next(&s), 333333);
    assert_int_equal(bd_lg_sched_next(&s), 666666);
    assert_int_equal(bd_lg_sched_next(&s), 1000000); /* from k, so no drift */
    /* After a million requests at 7 req/s the schedule is still on time to the microsecond. */
    bd_lg_sched_init(&s, BD_LG_CONSTANT, 7.0, 1);
    uint64_t last = 0;
    for (int k = 0; k <= 1000000; k++) {
        last = bd_lg_sched_next(&s);
    }
    assert_int_equal(last, (uint64_t)(1000000.0 * 1e6 / 7.0));
}

static void test_bursty_schedule_keeps_the_mean_rate(void **state)
{
    (void)state;
    bd_lg_sched_t s;
    bd_lg_sched_init(&s, BD_LG_BURSTY, 100.0, 1);
    s.burst = 4;
    /* Bursts of 4 at once, 40 ms apart: 100 requests/s on average. */
    const uint64_t want[] = {0, 0, 0, 0, 40000, 40000, 40000, 40000, 80000};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        assert_int_equal(bd_lg_sched_next(&s), want[k]);
    }
    bd_lg_sched_init(&s, BD_LG_BURSTY, 50.0, 1);
    assert_int_equal(s.burst, 16); /* the default */
}

static void test_poisson_schedule_mean_and_spread(void **state)
{
    (void)state;
    enum { N = 200000 };
    bd_lg_sched_t s;
    bd_lg_sched_init(&s, BD_LG_POISSON, 1000.0, 12345);
    assert_int_equal(bd_lg_sched_next(&s), 0);
    double prev = 0, sum = 0, sum2 = 0;
    bool monotonic = true;
    for (int i = 0; i < N; i++) {
        double t = (double)bd_lg_sched_next(&s);
        double gap = t - prev;
        monotonic = monotonic && gap >= 0;
        sum += gap;
        sum2 += gap * gap;
        prev = t;
    }
    double mean = sum / N;
    double sd = sqrt(sum2 / N - mean * mean);
    assert_true(monotonic);
    assert_true(fabs(mean - 1000.0) < 10.0); /* 1%: ~4.5 standard errors */
    assert_true(fabs(sd - 1000.0) < 20.0);   /* exponential: sd == mean */
    /* The same seed gives the same schedule. */
    bd_lg_sched_t a, b;
    bd_lg_sched_init(&a, BD_LG_POISSON, 10.0, 99);
    bd_lg_sched_init(&b, BD_LG_POISSON, 10.0, 99);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(bd_lg_sched_next(&a), bd_lg_sched_next(&b));
    }
}

/* ---- HTTP reply parser ----------------------------------------------------------------- */

/* Feed `msg` in pieces of `step` bytes; return the final code and the bytes used. */
static int feed_steps(bd_lg_http_t *p, const char *msg, size_t len, size_t step, size_t *total)
{
    size_t off = 0;
    *total = 0;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        size_t used = 0;
        int rc = bd_lg_http_feed(p, msg + off, n, &used);
        if (rc != BD_LG_HTTP_MORE) {
            *total = off + used;
            return rc;
        }
        assert_int_equal(used, n);
        off += n;
    }
    *total = off;
    return BD_LG_HTTP_MORE;
}

static void check_all_splits(const char *msg, int status, bool keep_alive, const char *body)
{
    size_t len = strlen(msg);
    for (size_t step = 1; step <= len; step++) {
        bd_buf_t b;
        bd_buf_init(&b);
        bd_lg_http_t p;
        bd_lg_http_init(&p, &b);
        size_t used;
        int rc = feed_steps(&p, msg, len, step, &used);
        assert_int_equal(rc, BD_LG_HTTP_DONE);
        assert_int_equal(used, len);
        assert_int_equal(p.status, status);
        assert_int_equal(p.keep_alive, keep_alive);
        assert_int_equal(b.len, strlen(body));
        assert_memory_equal(b.data ? b.data : "", body, b.len);
        bd_lg_http_dispose(&p);
        bd_buf_dispose(&b);
    }
}

static void test_http_content_length_any_split(void **state)
{
    (void)state;
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: 11\r\n\r\n{\"a\":[1,2]}",
                     200, true, "{\"a\":[1,2]}");
    check_all_splits("HTTP/1.1 503 Service Unavailable\r\ncontent-length:  9 \r\n"
                     "Connection: close\r\n\r\n{\"e\":\"x\"}",
                     503, false, "{\"e\":\"x\"}");
    check_all_splits("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, false, "ok");
    check_all_splits("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200,
                     true, "");
    check_all_splits("HTTP/1.1 204 No Content\r\n\r\n", 204, true, "");
    check_all_splits("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                     200, true, "x");
}

static void test_http_chunked_any_split(void **state)
{
    (void)state;
    check_all_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
                     200, true, "hello, world");
    check_all_splits("HTTP/1.1 400 Bad Request\r\ntransfer-encoding: Chunked\r\n\r\n"
                     "A\r\n0123456789\r\n0\r\n\r\n",
                     400, true, "0123456789");
}

/* Inference-Header-Content-Length, for `batchd infer`'s binary replies: -1 when absent or not
 * a number, and again -1 for the next reply on the connection when it has none. */
static void test_http_inference_header_length(void **state)
{
    (void)state;
    const char *two = "HTTP/1.1 200 OK\r\ninference-header-content-length:  13 \r\n"
                      "Content-Length: 17\r\n\r\n{\"outputs\":1}abcd"
                      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    bd_lg_http_t p;
    bd_lg_http_init(&p, NULL);
    size_t used;
    assert_int_equal(bd_lg_http_feed(&p, two, strlen(two), &used), BD_LG_HTTP_DONE);
    assert_int_equal(p.header_len, 13);
    bd_lg_http_reset(&p);
    size_t used2;
    assert_int_equal(bd_lg_http_feed(&p, two + used, strlen(two) - used, &used2), BD_LG_HTTP_DONE);
    assert_int_equal(p.header_len, -1);
    bd_lg_http_reset(&p);
    const char *bad = "HTTP/1.1 200 OK\r\nInference-Header-Content-Length: 1x\r\n"
                      "Content-Length: 0\r\n\r\n";
    assert_int_equal(bd_lg_http_feed(&p, bad, strlen(bad), &used), BD_LG_HTTP_DONE);
    assert_int_equal(p.header_len, -1);
    bd_lg_http_dispose(&p);
}

static void test_http_two_replies_in_one_read(void **state)
{
    (void)state;
    const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                      "HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n";
    bd_lg_http_t p;
    bd_lg_http_init(&p, NULL);
    size_t used;
    assert_int_equal(bd_lg_http_feed(&p, two, strlen(two), &used), BD_LG_HTTP_DONE);
    assert_int_equal(used, 41);
    assert_int_equal(p.status, 200);
    bd_lg_http_reset(&p);
    size_t used2;
    assert_int_equal(bd_lg_http_feed(&p, two + used, strlen(two) - used, &used2), BD_LG_HTTP_DONE);
    assert_int_equal(used + used2, strlen(two));
    assert_int_equal(p.status, 429);
    bd_lg_http_dispose(&p);
}

static void test_http_close_delimited_and_errors(void **state)
{
    (void)state;
    bd_buf_t b;
    bd_buf_init(&b);
    bd_lg_http_t p;
    bd_lg_http_init(&p, &b);
    size_t used;
    const char *m = "HTTP/1.1 200 OK\r\n\r\nuntil close";
    assert_int_equal(bd_lg_http_feed(&p, m, strlen(m), &used), BD_LG_HTTP_MORE);
    assert_int_equal(bd_lg_http_eof(&p), BD_LG_HTTP_DONE);
    assert_false(p.keep_alive);
    assert_string_equal(b.data, "until close");
    bd_lg_http_dispose(&p);

    bd_lg_http_init(&p, NULL);
    m = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
    assert_int_equal(bd_lg_http_feed(&p, m, strlen(m), &used), BD_LG_HTTP_MORE);
    assert_int_equal(bd_lg_http_eof(&p), BD_LG_HTTP_ERROR);
    assert_string_equal(p.error, "the connection closed before the reply was complete");
    bd_lg_http_dispose(&p);

    bd_lg_http_init(&p, NULL);
    m = "SSH-2.0-OpenSSH\r\n\r\n";
    assert_int_equal(bd_lg_http_feed(&p, m, strlen(m), &used), BD_LG_HTTP_ERROR);
    assert_string_equal(p.error, "the reply does not start with an HTTP/1.x status line");
    bd_lg_http_dispose(&p);

    bd_lg_http_init(&p, NULL);
    m = "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n";
    assert_int_equal(bd_lg_http_feed(&p, m, strlen(m), &used), BD_LG_HTTP_ERROR);
    assert_string_equal(p.error, "the reply's Content-Length is not a number");
    bd_lg_http_dispose(&p);

    bd_lg_http_init(&p, NULL);
    m = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    assert_int_equal(bd_lg_http_feed(&p, m, strlen(m), &used), BD_LG_HTTP_ERROR);
    assert_string_equal(p.error, "the reply has a malformed chunk size");
    bd_lg_http_dispose(&p);

    /* A head that never ends is refused at 64 KiB, not buffered forever. */
    bd_lg_http_init(&p, NULL);
    char *big = malloc(70000);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(big + 20, 'a', 70000 - 20);
    int rc = BD_LG_HTTP_MORE;
    for (size_t off = 0; off < 70000 && rc == BD_LG_HTTP_MORE; off += 1000) {
        rc = bd_lg_http_feed(&p, big + off, 1000, &used);
    }
    assert_int_equal(rc, BD_LG_HTTP_ERROR);
    assert_string_equal(p.error, "the reply head is larger than 64 KiB");
    free(big);
    bd_lg_http_dispose(&p);
    bd_buf_dispose(&b);
}

/* ---- URL and request ------------------------------------------------------------------- */

static void test_parse_url(void **state)
{
    (void)state;
    bd_lg_target_t t;
    bd_err_t err = {0};
    memset(&t, 0, sizeof t);
    assert_int_equal(bd_lg_parse_url("http://127.0.0.1:8000", &t, &err), 0);
    assert_string_equal(t.host, "127.0.0.1");
    assert_string_equal(t.port, "8000");
    assert_string_equal(t.prefix, "");
    assert_false(t.tls);
    assert_int_equal(bd_lg_parse_url("http://example.com/kserve/", &t, &err), 0);
    assert_string_equal(t.host, "example.com");
    assert_string_equal(t.port, "80");
    assert_string_equal(t.prefix, "/kserve");
    assert_int_equal(bd_lg_parse_url("http://[::1]:9000", &t, &err), 0);
    assert_string_equal(t.host, "::1");
    assert_string_equal(t.port, "9000");
    assert_int_equal(bd_lg_parse_url("https://x.example/p", &t, &err), 0);
    assert_true(t.tls);
    assert_string_equal(t.host, "x.example");
    assert_string_equal(t.port, "443");
    assert_string_equal(t.prefix, "/p");
    assert_int_equal(bd_lg_parse_url("https://x:1", &t, &err), 0);
    assert_string_equal(t.port, "1");
    assert_int_equal(bd_lg_parse_url("ftp://x:1", &t, &err), BD_EINVAL);
    assert_string_equal(err.msg, "--url must start with http:// or https://, got 'ftp://x:1'");
    assert_int_equal(bd_lg_parse_url("http://x:70000", &t, &err), BD_EINVAL);
    assert_string_equal(err.msg, "--url 'http://x:70000' needs a port from 1 to 65535");
    assert_int_equal(bd_lg_parse_url("http://:80", &t, &err), BD_EINVAL);
}

static const char META[] =
    "{\"name\":\"m\",\"versions\":[\"1\"],\"platform\":\"batchd_sim\",\"max_batch_size\":8,"
    "\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[-1,4]},"
    "{\"name\":\"IDX\",\"datatype\":\"INT64\",\"shape\":[-1,-1]}],"
    "\"outputs\":[{\"name\":\"OUTPUT0\",\"datatype\":\"FP32\",\"shape\":[-1,4]}]}";

static void target_init(bd_lg_target_t *t)
{
    memset(t, 0, sizeof *t);
    assert_int_equal(bd_lg_parse_url("http://127.0.0.1:8000", t, NULL), 0);
    strcpy(t->model, "m");
}

static void test_build_request_json_and_binary(void **state)
{
    (void)state;
    bd_lg_target_t t;
    target_init(&t);
    bd_err_t err = {0};
    bd_lg_request_opts_t ro = {.batch = 2};
    assert_int_equal(bd_lg_build_request(&t, META, strlen(META), &ro, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'IDX' has variable dims [-1] (batch dim excluded); "
                                 "give them with --shape IDX:D1,D2,...");

    bd_lg_shape_opt_t shape = {.name = "IDX", .shape = {.ndim = 1, .dims = {3}}};
    ro.shapes = &shape;
    ro.n_shapes = 1;
    target_init(&t);
    assert_int_equal(bd_lg_build_request(&t, META, strlen(META), &ro, &err), 0);
    assert_true(t.batched);
    assert_int_equal(t.max_batch_size, 8);
    const char *body = strstr(t.request, "\r\n\r\n") + 4;
    assert_string_equal(body,
                        "{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[2,4],"
                        "\"data\":[0,0,0,0,0,0,0,0]},{\"name\":\"IDX\",\"datatype\":\"INT64\","
                        "\"shape\":[2,3],\"data\":[0,0,0,0,0,0]}]}");
    assert_int_equal(t.body_len, strlen(body));
    assert_non_null(strstr(t.request, "POST /v2/models/m/infer HTTP/1.1\r\n"));
    assert_non_null(strstr(t.request, "Host: 127.0.0.1:8000\r\n"));
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body));
    assert_non_null(strstr(t.request, cl));
    bd_lg_target_dispose(&t);

    /* Binary: the JSON header, then 2*4*4 + 2*3*8 bytes. */
    ro.binary = true;
    ro.data = BD_LG_DATA_RANDOM;
    target_init(&t);
    strcpy(t.version, "1");
    assert_int_equal(bd_lg_build_request(&t, META, strlen(META), &ro, &err), 0);
    assert_non_null(strstr(t.request, "POST /v2/models/m/versions/1/infer HTTP/1.1\r\n"));
    const char *hdr = "{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"shape\":[2,4],"
                      "\"parameters\":{\"binary_data_size\":32}},{\"name\":\"IDX\",\"datatype\":"
                      "\"INT64\",\"shape\":[2,3],\"parameters\":{\"binary_data_size\":48}}],"
                      "\"parameters\":{\"binary_data_output\":true}}";
    snprintf(cl, sizeof cl, "Inference-Header-Content-Length: %zu\r\n", strlen(hdr));
    assert_non_null(strstr(t.request, cl));
    body = strstr(t.request, "\r\n\r\n") + 4;
    assert_memory_equal(body, hdr, strlen(hdr));
    assert_int_equal(t.body_len, strlen(hdr) + 80);
    float f[8];
    memcpy(f, body + strlen(hdr), sizeof f);
    for (int i = 0; i < 8; i++) {
        assert_true(f[i] >= 0.0f && f[i] < 1.0f);
    }
    bd_lg_target_dispose(&t);

    /* Too big a batch, and a model that does not batch. */
    ro.batch = 9;
    target_init(&t);
    assert_int_equal(bd_lg_build_request(&t, META, strlen(META), &ro, &err), BD_EINVAL);
    assert_string_equal(err.msg, "--batch 9 is above model 'm''s max_batch_size 8");
    const char *nob = "{\"max_batch_size\":0,\"inputs\":[{\"name\":\"X\",\"datatype\":\"UINT8\","
                      "\"shape\":[3]}]}";
    ro.batch = 2;
    ro.n_shapes = 0;
    target_init(&t);
    assert_int_equal(bd_lg_build_request(&t, nob, strlen(nob), &ro, &err), BD_EINVAL);
    assert_string_equal(err.msg, "model 'm' does not batch (max_batch_size 0), so --batch must "
                                 "be 1, got 2");
    const char *bytes = "{\"inputs\":[{\"name\":\"S\",\"datatype\":\"BYTES\",\"shape\":[-1,1]}]}";
    ro.batch = 1;
    target_init(&t);
    assert_int_equal(bd_lg_build_request(&t, bytes, strlen(bytes), &ro, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'S' has datatype BYTES, which batchd cannot send as raw "
                                 "or generated values (BOOL, INT*, UINT*, FP32, FP64 only); an "
                                 "image input takes batchd infer --image FILE");
    assert_false(t.max_batch_size > 0);
    assert_true(t.batched); /* Triton style: no max_batch_size, leading -1 */
    bd_lg_target_dispose(&t);
}

/* ---- reports --------------------------------------------------------------------------- */

static void sample_results(bd_lg_result_t r[2])
{
    memset(r, 0, 2 * sizeof *r);
    r[0].mode = BD_LG_CLOSED;
    r[0].level = 4;
    r[0].measured_s = 2.0;
    r[0].sent = 400;
    r[0].responses = 398;
    r[0].ok = 396;
    r[0].status[200] = 396;
    r[0].status[503] = 2;
    r[0].errors[BD_LG_ERR_TIMEOUT] = 1;
    r[0].errors[BD_LG_ERR_REFUSED] = 1;
    bd_hdr_t *h = bd_hdr_new(3600000000ULL, 3);
    for (int i = 1; i <= 398; i++) {
        bd_hdr_record(h, 20000 + (uint64_t)i);
    }
    bd_lg_result_finish(&r[0], h);
    bd_hdr_free(h);
    r[0].n_windows = 3;
    r[0].window_rps[0] = 199;
    r[0].window_rps[1] = 200;
    r[0].window_rps[2] = 201;
    r[0].stable = true;
    r[1] = r[0];
    r[1].level = 8;
}

static void test_result_finish_arithmetic(void **state)
{
    (void)state;
    bd_lg_result_t r[2];
    sample_results(r);
    assert_true(fabs(r[0].success_rate - 396.0 / 400.0) < 1e-12);
    assert_true(fabs(r[0].offered_rps - 200.0) < 1e-9);
    assert_true(fabs(r[0].achieved_rps - 199.0) < 1e-9);
    assert_true(fabs(r[0].goodput_rps - 198.0) < 1e-9);
    assert_true(fabs(r[0].lat_mean_us - 20199.5) < 1e-6);
    /* Little's law: in flight = throughput x latency. */
    assert_true(fabs(r[0].mean_in_flight - 199.0 * 0.0201995) < 1e-9);
    assert_true(r[0].lat_p50_us >= 20199 && r[0].lat_p50_us < 20199 + 16);
    assert_true(r[0].lat_max_us == 20398);
}

static void test_csv_fields(void **state)
{
    (void)state;
    bd_lg_result_t r[2];
    sample_results(r);
    bd_buf_t b;
    bd_buf_init(&b);
    bd_lg_csv(&b, r, 2);
    const char *header = "mode,concurrency,rate,offered_rps,achieved_rps,goodput_rps,p50_us,"
                         "p90_us,p99_us,p999_us,max_us,mean_us,success_rate,mean_in_flight,"
                         "measured_s,sent,responses,ok,timeout,refused,connect,reset,protocol,"
                         "http_429,http_503,http_other,status_counts,send_lag_p99_us,"
                         "generator_fell_behind,stable,interrupted,server_gone\n";
    assert_memory_equal(b.data, header, strlen(header));
    char want[512];
    snprintf(want, sizeof want,
             "closed,4,,200,199,198,%.0f,%.0f,%.0f,%.0f,20398,20199.5,0.99,%.6g,2,400,398,"
             "396,1,1,0,0,0,0,2,0,200:396;503:2,0,false,true,false,false\n",
             r[0].lat_p50_us, r[0].lat_p90_us, r[0].lat_p99_us, r[0].lat_p999_us,
             r[0].mean_in_flight);
    const char *row0 = b.data + strlen(header);
    assert_memory_equal(row0, want, strlen(want));
    assert_memory_equal(row0 + strlen(want), "closed,8,,200,", 14);
    bd_buf_dispose(&b);
}

static void test_json_fields(void **state)
{
    (void)state;
    bd_lg_result_t r[2];
    sample_results(r);
    r[1].mode = BD_LG_OPEN;
    r[1].level = 50;
    r[1].fell_behind = true;
    strcpy(r[1].behind_reason, "p99 send lag 5000 us is above 1000 us");
    r[1].server_gone = true;
    r[1].gone_at_s = 1.23456;
    bd_lg_target_t t;
    target_init(&t);
    bd_lg_run_opts_t ro = {.mode = BD_LG_CLOSED,
                           .duration_us = 2000000,
                           .warmup_us = 500000,
                           .timeout_us = 10000000,
                           .stable_windows = 3,
                           .stable_pct = 10};
    bd_lg_request_opts_t rq = {.batch = 2, .binary = true};
    bd_lg_config_t cfg = {.url = "http://127.0.0.1:8000",
                          .target = &t,
                          .run = &ro,
                          .request = &rq,
                          .data_name = "zero"};
    bd_buf_t b;
    bd_buf_init(&b);
    bd_lg_json(&b, &cfg, r, 2);
    json_error_t jerr;
    json_t *root = json_loads(b.data, 0, &jerr);
    assert_non_null(root);
    json_t *c = json_object_get(root, "config");
    assert_string_equal(json_string_value(json_object_get(c, "url")), "http://127.0.0.1:8000");
    assert_string_equal(json_string_value(json_object_get(c, "model")), "m");
    assert_true(json_real_value(json_object_get(c, "duration_s")) == 2.0 ||
                json_integer_value(json_object_get(c, "duration_s")) == 2);
    assert_int_equal(json_integer_value(json_object_get(c, "batch")), 2);
    assert_true(json_is_true(json_object_get(c, "binary")));
    assert_string_equal(json_string_value(json_object_get(c, "data")), "zero");
    json_t *levels = json_object_get(root, "levels");
    assert_int_equal(json_array_size(levels), 2);
    json_t *l0 = json_array_get(levels, 0);
    assert_int_equal(json_integer_value(json_object_get(l0, "concurrency")), 4);
    assert_int_equal(json_integer_value(json_object_get(l0, "offered_rps")), 200);
    assert_int_equal(json_integer_value(json_object_get(l0, "achieved_rps")), 199);
    assert_true(fabs(json_number_value(json_object_get(l0, "success_rate")) - 0.99) < 1e-9);
    json_t *lat = json_object_get(l0, "latency_us");
    assert_int_equal(json_integer_value(json_object_get(lat, "p50")), (json_int_t)r[0].lat_p50_us);
    assert_int_equal(json_integer_value(json_object_get(lat, "p999")),
                     (json_int_t)r[0].lat_p999_us);
    assert_int_equal(json_integer_value(json_object_get(lat, "max")), 20398);
    json_t *sc = json_object_get(l0, "status_counts");
    assert_int_equal(json_integer_value(json_object_get(sc, "200")), 396);
    assert_int_equal(json_integer_value(json_object_get(sc, "503")), 2);
    json_t *er = json_object_get(l0, "errors");
    assert_int_equal(json_integer_value(json_object_get(er, "timeout")), 1);
    assert_int_equal(json_integer_value(json_object_get(er, "refused")), 1);
    assert_int_equal(json_integer_value(json_object_get(er, "http_503")), 2);
    assert_true(json_is_false(json_object_get(l0, "generator_fell_behind")));
    assert_true(json_is_true(json_object_get(l0, "stable")));
    assert_true(json_is_false(json_object_get(l0, "interrupted")));
    assert_true(json_is_false(json_object_get(l0, "server_gone")));
    assert_true(json_is_null(json_object_get(l0, "server_gone_at_s")));
    assert_int_equal(json_array_size(json_object_get(l0, "window_rps")), 3);
    json_t *l1 = json_array_get(levels, 1);
    assert_int_equal(json_integer_value(json_object_get(l1, "rate")), 50);
    assert_null(json_object_get(l1, "concurrency"));
    assert_true(json_is_true(json_object_get(l1, "generator_fell_behind")));
    assert_string_equal(json_string_value(json_object_get(l1, "behind_reason")),
                        "p99 send lag 5000 us is above 1000 us");
    assert_true(json_is_true(json_object_get(l1, "server_gone")));
    assert_true(fabs(json_number_value(json_object_get(l1, "server_gone_at_s")) - 1.235) < 1e-9);
    json_decref(root);
    bd_buf_dispose(&b);
}

static void test_svg_has_both_panels(void **state)
{
    (void)state;
    bd_lg_result_t r[2];
    sample_results(r);
    r[1].lat_p99_us = 45000;
    bd_buf_t b;
    bd_buf_init(&b);
    bd_lg_svg(&b, "a <title> & more", r, 2);
    assert_non_null(strstr(b.data, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_non_null(strstr(b.data, "a &lt;title&gt; &amp; more"));
    assert_non_null(strstr(b.data, "throughput (responses/s)"));
    assert_non_null(strstr(b.data, "latency (ms)"));
    assert_non_null(strstr(b.data, ">p99</text>"));
    /* three series (throughput, p50, p99) of two points each */
    size_t circles = 0;
    for (const char *p = b.data; (p = strstr(p, "<circle")); p++) {
        circles++;
    }
    assert_int_equal(circles, 6);
    /* the latency axis reaches past the largest p99 (45 ms) */
    assert_non_null(strstr(b.data, ">50</text>"));
    assert_true(b.len > 0 && strcmp(b.data + b.len - 7, "</svg>\n") == 0);
    bd_buf_dispose(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr_percentiles_match_sorted_array),
        cmocka_unit_test(test_hdr_small_values_are_exact),
        cmocka_unit_test(test_hdr_clamps_above_highest),
        cmocka_unit_test(test_hdr_merge_equals_recording_all),
        cmocka_unit_test(test_constant_schedule_is_exact),
        cmocka_unit_test(test_bursty_schedule_keeps_the_mean_rate),
        cmocka_unit_test(test_poisson_schedule_mean_and_spread),
        cmocka_unit_test(test_http_content_length_any_split),
        cmocka_unit_test(test_http_chunked_any_split),
        cmocka_unit_test(test_http_inference_header_length),
        cmocka_unit_test(test_http_two_replies_in_one_read),
        cmocka_unit_test(test_http_close_delimited_and_errors),
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_build_request_json_and_binary),
        cmocka_unit_test(test_result_finish_arithmetic),
        cmocka_unit_test(test_csv_fields),
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_svg_has_both_panels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
