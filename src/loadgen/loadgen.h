/* loadgen: the engine behind `batchd bench`, a load generator for any KServe v2 server.
 *
 * - bd_hdr_t: a lossless latency histogram in the style of HdrHistogram: every value is
 *   counted (no sampling) in log-linear buckets, so a percentile is off by at most one part
 *   in 2^(sub-bucket bits) of the value (3 significant digits: < 0.1%), exact below 2048.
 * - bd_lg_target_t: what to send: the model's metadata (GET /v2/models/{m}) turned into one
 *   prebuilt infer request (JSON or binary tensors, any batch size, zero/random/file data).
 * - bd_lg_run_level: one closed-loop level (N requests always outstanding) or one open-loop
 *   level (requests sent on a constant or Poisson schedule that never waits for answers;
 *   latency counted from the scheduled send time, so there is no coordinated omission),
 *   with warm-up excluded, measurement windows and a stability rule.
 * - Reports: a terminal table, CSV, JSON (echoing the configuration) and an SVG plot.
 *
 * Threads: a level runs on the calling thread (one epoll loop, non-blocking sockets,
 * keep-alive connections). Everything else is plain functions over caller-owned memory. */
#ifndef BD_LOADGEN_H
#define BD_LOADGEN_H

#include <signal.h>
#include <stdio.h>
#include <sys/types.h>

#include "core/core.h"
#include "tensor/tensor.h"

/* ---- histogram ------------------------------------------------------------------------- */

typedef struct bd_hdr bd_hdr_t;

/* A histogram of values 0..highest (values above are clamped to highest and counted in
 * `clamped`) with `sig_digits` (1..5) significant decimal digits. Returns NULL on bad
 * arguments or out of memory. */
bd_hdr_t *bd_hdr_new(uint64_t highest, int sig_digits);
void bd_hdr_free(bd_hdr_t *h);
void bd_hdr_reset(bd_hdr_t *h);
void bd_hdr_record(bd_hdr_t *h, uint64_t value);
void bd_hdr_record_n(bd_hdr_t *h, uint64_t value, uint64_t n);
/* Add every count of `src` into `dst`. Fails (BD_EINVAL) when their ranges or precisions
 * differ. */
int bd_hdr_merge(bd_hdr_t *dst, const bd_hdr_t *src);
/* The nearest-rank percentile (0 < pct <= 100): the smallest recorded value v such that at
 * least pct% of the values are <= v, reported as the highest value its bucket can hold
 * (never above the exact maximum). 0 when empty. */
uint64_t bd_hdr_percentile(const bd_hdr_t *h, double pct);
uint64_t bd_hdr_count(const bd_hdr_t *h);
uint64_t bd_hdr_min(const bd_hdr_t *h); /* exact; 0 when empty */
uint64_t bd_hdr_max(const bd_hdr_t *h); /* exact; 0 when empty */
double bd_hdr_mean(const bd_hdr_t *h);  /* exact (from the sum of the values) */
uint64_t bd_hdr_clamped(const bd_hdr_t *h);
/* The width of the bucket that holds `value`: values a and b in one bucket are reported as
 * the same value. 1 for values below 2^(sub-bucket bits). */
uint64_t bd_hdr_bucket_width(const bd_hdr_t *h, uint64_t value);

/* ---- what to send ---------------------------------------------------------------------- */

typedef enum { BD_LG_DATA_ZERO = 0, BD_LG_DATA_RANDOM } bd_lg_data_t;

typedef struct {
    const char *name; /* input name, or NULL for "the only input" */
    bd_shape_t shape; /* dims without the batch dim (when the model batches) */
} bd_lg_shape_opt_t;

/* "[NAME:]D1,D2,..." (dims >= 0; the last ':' splits, so names may not hold one) into *so,
 * its name copied into name[0..cap). -1 when malformed. */
int bd_lg_parse_shape(const char *s, bd_lg_shape_opt_t *so, char *name, size_t cap);

typedef struct {
    const char *name; /* input name, or NULL for "the only input" */
    const char *path; /* raw little-endian bytes: one row (repeated per batch) or all rows */
} bd_lg_file_opt_t;

typedef struct {
    int64_t batch;                   /* rows per request; 1 when 0 */
    bool binary;                     /* Triton's binary tensor extension for inputs and outputs */
    bd_lg_data_t data;               /* used for inputs without a file */
    uint64_t seed;                   /* random data */
    const bd_lg_shape_opt_t *shapes; /* borrowed */
    size_t n_shapes;
    const bd_lg_file_opt_t *files; /* borrowed */
    size_t n_files;
} bd_lg_request_opts_t;

typedef struct {
    char name[128];
    char datatype[16];
    bd_shape_t shape; /* as sent, batch dim included */
} bd_lg_input_desc_t;

#define BD_LG_MAX_INPUTS 32
#define BD_LG_MAX_CONCURRENCY 100000 /* a closed-loop level's requests outstanding */
#define BD_LG_MAX_RATE 1e7           /* an open-loop level's requests per second */

typedef struct {
    /* connection */
    char host[256]; /* as given in the URL (Host header) */
    char port[16];
    char prefix[256];    /* path before /v2, usually "" */
    bool tls;            /* https:// (batchd infer and inspect; the load generator refuses it) */
    const char *cacert;  /* with tls: PEM file of the CAs to trust (borrowed); NULL: the system's */
    const char *api_key; /* sent as 'Authorization: Bearer <key>' (borrowed); NULL: none */
    /* model */
    char model[256];
    char version[64];       /* "" for the default version */
    int64_t max_batch_size; /* -1 when the metadata did not say */
    bool batched;           /* the first dim of every input is the batch */
    size_t n_inputs;
    bd_lg_input_desc_t inputs[BD_LG_MAX_INPUTS];
    /* the prebuilt request: head + body, sent as is for every request */
    char *request; /* owned */
    size_t request_len;
    size_t body_len;
} bd_lg_target_t;

/* Parse "http://HOST[:PORT][/prefix]" or "https://..." into t->host/port/prefix/tls (port 80,
 * or 443 for https, by default). BD_EINVAL with a sentence for anything else (another scheme,
 * empty host, bad port). */
int bd_lg_parse_url(const char *url, bd_lg_target_t *t, bd_err_t *err);

/* Build t->request from model metadata JSON (`meta`, as GET /v2/models/{m} answers) and the
 * request options. t->host/port/prefix/model/version must be set. Fails (BD_EINVAL) when an
 * input has variable dims and no shape option, a datatype cannot be sent, the batch size is
 * out of range, or a data file has the wrong size. */
int bd_lg_build_request(bd_lg_target_t *t, const char *meta, size_t meta_len,
                        const bd_lg_request_opts_t *ro, bd_err_t *err);

/* A whole reply of bd_lg_http_request. */
typedef struct {
    int status;
    long long header_len; /* Inference-Header-Content-Length; -1 when absent */
    bd_buf_t body;        /* de-chunked and NUL-terminated; the caller's (init and dispose) */
} bd_lg_reply_t;

/* One request on a connection of its own (Connection: close; TLS for https://; t->api_key as
 * a Bearer key when set): `method` {t->prefix}{path} with `headers` (lines ending in CRLF, or
 * "") and `body` (NULL: none), blocking until the reply is whole, at most `timeout_us` in all.
 * A server that answers and closes before taking the whole body (a 413) is read all the same.
 * 0 with the reply in *r (whatever its status); BD_EIO with a sentence when the server cannot
 * be reached, does not answer in time or answers what is not HTTP/1.x, or the body passes
 * `max_reply` bytes; BD_ENOMEM. */
int bd_lg_http_request(const bd_lg_target_t *t, const char *method, const char *path,
                       const char *headers, const char *body, size_t body_len, uint64_t timeout_us,
                       size_t max_reply, bd_lg_reply_t *r, bd_err_t *err);

/* "/v2/models/{model}[/versions/{v}]" (without t->prefix) into out[0..cap). */
void bd_lg_model_path(const bd_lg_target_t *t, char *out, size_t cap);

/* GET {prefix}/v2/models/{model}[/versions/{v}] (bd_lg_http_request); returns the owned body
 * (NUL-terminated) of a 200 reply, else NULL with a sentence that includes the status and the
 * server's error text. */
char *bd_lg_fetch_metadata(const bd_lg_target_t *t, uint64_t timeout_us, size_t *len,
                           bd_err_t *err);

void bd_lg_target_dispose(bd_lg_target_t *t);

/* ---- TLS for an https:// target (tls.c; OpenSSL's SSL_CTX and SSL) ---------------------- */

/* A client context: TLS 1.2 or newer, the server's certificate checked against t->cacert or
 * the system's CAs; partial writes allowed. NULL with err set (a --cacert that cannot be read
 * or holds no certificate). Free with SSL_CTX_free. */
struct ssl_ctx_st *bd_lg_tls_ctx(const bd_lg_target_t *t, bd_err_t *err);
/* Whether `path` holds a CA certificate bd_lg_tls_ctx can load: 0, or BD_EINVAL (BD_ENOMEM)
 * with err. */
int bd_lg_tls_check_cacert(const char *path, bd_err_t *err);
/* A session on socket fd in connect state, checking that the certificate names t->host (a
 * name, with SNI, or an address). NULL with err set. Free with SSL_free. */
struct ssl_st *bd_lg_tls_ssl(struct ssl_ctx_st *ctx, const bd_lg_target_t *t, int fd,
                             bd_err_t *err);
/* A context, a session and the handshake on connected socket fd, blocking or not: when the
 * socket would block it waits (poll) until deadline_us. 0, or err set (the sentence of
 * bd_lg_tls_failed, or a timeout); the caller frees *ctx and *ssl either way (NULL or set). */
int bd_lg_tls_open(const bd_lg_target_t *t, int fd, uint64_t deadline_us, struct ssl_ctx_st **ctx,
                   struct ssl_st **ssl, bd_err_t *err);
/* One send or recv on a socket, through `ssl` when it is not NULL: the bytes moved (recv: 0
 * when the peer closed, with or without a TLS close_notify), or -1 with *wait set to POLLIN or
 * POLLOUT when it would block (or its SO_RCVTIMEO/SO_SNDTIMEO ran out), or with *wait 0 and
 * errno on an error. */
ssize_t bd_lg_io_send(int fd, struct ssl_st *ssl, const char *p, size_t n, short *wait);
ssize_t bd_lg_io_recv(int fd, struct ssl_st *ssl, char *p, size_t n, short *wait);

/* ---- running a level ------------------------------------------------------------------- */

typedef enum { BD_LG_CLOSED = 0, BD_LG_OPEN } bd_lg_mode_t;
typedef enum { BD_LG_CONSTANT = 0, BD_LG_POISSON, BD_LG_BURSTY } bd_lg_dist_t;

/* Error kinds besides HTTP status codes. */
typedef enum {
    BD_LG_ERR_TIMEOUT = 0, /* no complete reply within timeout_us of the (scheduled) start */
    BD_LG_ERR_REFUSED,     /* connect() got ECONNREFUSED */
    BD_LG_ERR_CONNECT,     /* any other connect failure */
    BD_LG_ERR_RESET,       /* the connection closed or failed before the reply was complete */
    BD_LG_ERR_PROTOCOL,    /* the reply was not valid HTTP/1.x */
    BD_LG_ERR_COUNT_
} bd_lg_err_kind_t;

const char *bd_lg_err_name(bd_lg_err_kind_t k); /* "timeout", "refused", ... */

typedef struct {
    bd_lg_mode_t mode;
    bd_lg_dist_t distribution; /* open loop */
    uint64_t warmup_us;        /* excluded from every number */
    uint64_t duration_us;      /* measured time per level (when requests == 0) */
    uint64_t max_duration_us;  /* keep measuring, window by window, until stable; 0: none */
    uint64_t requests;         /* > 0: measure exactly this many requests instead */
    uint64_t window_us;        /* measurement window; 0: duration/5 (1 s with requests) */
    int stable_windows;        /* the last this many windows ... (0: 3) */
    double stable_pct;         /* ... each within this % of their mean throughput (0: 10) */
    uint64_t timeout_us;       /* per request */
    int max_connections;       /* open loop: connections opened at most (0: 1024) */
    uint64_t max_send_lag_us;  /* open loop: p99 send lag above this flags the generator as
                                * fallen behind (0: 10000) */
    uint64_t seed;             /* Poisson schedule */
    int burst;                 /* bursty schedule: requests per burst (0: 16) */
    bool quiet;                /* no progress lines (a level longer than 5 s prints one on
                                * stderr every 5 s while it measures) */
    /* When set and it turns nonzero (a signal handler's flag), the level ends at once: what
     * was measured so far is its result, flagged `interrupted`; requests still out are
     * dropped uncounted. */
    volatile sig_atomic_t *interrupt;
} bd_lg_run_opts_t;

/* The measurement window a level runs with: window_us or its default, at least 10 ms, and at
 * most the duration (without requests). */
uint64_t bd_lg_window_us(const bd_lg_run_opts_t *ro);

#define BD_LG_MAX_WINDOWS 1000
#define BD_LG_STATUS_MAX 600
#define BD_LG_GONE_US 1000000 /* refused connects alone this long end a level */

typedef struct {
    bd_lg_mode_t mode;
    double level;       /* concurrency or rate (req/s) */
    double measured_s;  /* length of the measurement */
    uint64_t scheduled; /* open loop: requests scheduled while measuring */
    uint64_t sent;      /* requests written while measuring (closed) / of those (open) */
    uint64_t responses; /* HTTP replies counted (any status) */
    uint64_t ok;        /* 2xx replies */
    uint64_t errors[BD_LG_ERR_COUNT_];
    uint64_t status[BD_LG_STATUS_MAX]; /* replies per status code */
    double offered_rps;                /* closed: requests sent / s; open: scheduled / s */
    double achieved_rps;               /* replies (any status) completed while measuring / s */
    double goodput_rps;                /* 2xx replies completed while measuring / s */
    double success_rate;               /* 2xx / (replies + errors); 0 when nothing ended */
    double mean_in_flight;             /* Little's law: achieved_rps * mean latency */
    /* latency of every counted reply, microseconds; NaN (and so mean_in_flight) when no reply
     * was counted: the reports write null, an empty CSV field or "-" */
    double lat_min_us, lat_mean_us, lat_p50_us, lat_p90_us, lat_p99_us, lat_p999_us, lat_max_us;
    /* open loop: how late requests were written after their scheduled time; NaN closed loop */
    double send_lag_p99_us, send_lag_max_us;
    bool fell_behind;
    char behind_reason[320];
    size_t n_windows;
    double window_rps[BD_LG_MAX_WINDOWS];
    bool stable;
    bool interrupted; /* ended early by ro->interrupt */
    /* The server stopped accepting connections: from gone_at_s into the level (its warm-up
     * included) every connect was refused and nothing succeeded, for BD_LG_GONE_US (the level
     * then ended early) or until the level's end. */
    bool server_gone;
    double gone_at_s;
} bd_lg_result_t;

/* Run one level against `t` and fill `res`. `level` is the concurrency (closed, >= 1) or the
 * rate in requests/s (open, > 0). Returns 0, or BD_EINVAL/BD_EIO/BD_ENOMEM with a sentence
 * for problems of the generator itself (bad options, no epoll, unresolvable host); failures
 * of the server are counted in `res`, not returned. Calling thread only; blocks for the
 * level's duration. */
int bd_lg_run_level(const bd_lg_target_t *t, const bd_lg_run_opts_t *ro, double level,
                    bd_lg_result_t *res, bd_err_t *err);

/* Fill the latency fields of `res` from `h` (microseconds) and derive the rates from the
 * counts and `measured_s`. Used by bd_lg_run_level; exported for tests and other drivers. */
void bd_lg_result_finish(bd_lg_result_t *res, const bd_hdr_t *h);

/* ---- reports --------------------------------------------------------------------------- */

/* The configuration echoed in the JSON report. */
typedef struct {
    const char *url;
    const bd_lg_target_t *target;
    const bd_lg_run_opts_t *run;
    const bd_lg_request_opts_t *request;
    const char *data_name; /* "zero", "random", "file" */
    const double *levels;  /* the levels asked for (a run cut short lists them all) */
    size_t n_levels;
} bd_lg_config_t;

/* One line: "concurrency=4 achieved=199.8/s p50=20.12ms p99=21.03ms ok=100.00% ...". */
void bd_lg_progress_line(bd_buf_t *out, const bd_lg_result_t *r);
void bd_lg_write_table(FILE *f, const bd_lg_result_t *rs, size_t n);
/* CSV with a header row; columns listed in the implementation's one table. */
void bd_lg_csv(bd_buf_t *out, const bd_lg_result_t *rs, size_t n);
/* {"tool":"batchd bench","version":..,"config":{..},"levels":[{..}, ..]} */
void bd_lg_json(bd_buf_t *out, const bd_lg_config_t *cfg, const bd_lg_result_t *rs, size_t n);
/* A self-contained SVG: throughput (left) and p50/p99 latency (right) against the level. */
void bd_lg_svg(bd_buf_t *out, const char *title, const bd_lg_result_t *rs, size_t n);

#endif
