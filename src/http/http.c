/* http.c: the KServe v2 HTTP front end on libh2o-evloop (see http.h).
 *
 * The server's event loop (server/) owns every connection; this file holds the routes and
 * the KServe handlers. An infer request goes to the shared infer layer (infer/), which
 * decodes, validates and submits it; its completion comes back on the loop through the
 * mailbox, and on_call_done writes the reply. A request for a stream path is handed to the
 * WebSocket front end (stream/).
 *
 * Lifetimes (the trap in h2o: an h2o_req_t dies when its connection closes): each job (the
 * HTTP state a call carries, bd_call_user) keeps a guard allocated in req->pool whose dispose
 * callback clears job->req. A job whose request died is freed without replying when it comes
 * back. The guard is cleared before replying, because replying may free the pool.
 *
 * Client hang-ups: h2o stops reading an HTTP/1.1 connection once a request was handed to
 * us, so a client that closes while its request is queued goes unseen. Jobs in flight sit on
 * a watch list in submit order; a 10 ms timer peeks (recv MSG_PEEK|MSG_DONTWAIT) the socket
 * of each job that has waited at least WATCH_INTERVAL_US, at most WATCH_BUDGET per tick, and
 * on end-of-file or a reset cancels the call. A cancelled job, and a job that was already
 * running when its client left, is answered with a short error that no one reads; writing
 * it lets h2o see the dead socket and close the connection. A job whose h2o request died
 * (the guard fired) is cancelled too.
 *
 * Model loads (POST .../load) wait for the repository's loader thread; the repository posts
 * the result to the loop's mailbox and on_loaded answers the waiting request (guarded like
 * a job).
 *
 * Threads: the event-loop thread only. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>
#include <jansson.h>

#include "sched/sched.h"
#include "tensor/tensor.h"

struct bd_http {
    bd_repo_t *repo;
    bd_metrics_t *metrics;
    bd_infer_t *infer;
    bd_stream_t *stream;
    size_t max_body_bytes;
    int port;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_evloop_t *loop;
    h2o_socket_t *listener;
    bd_model_control_t model_control;
    bd_buf_t out; /* reply scratch, reused (up to SCRATCH_KEEP bytes kept); loop thread only */
    size_t conns; /* open client connections; loop thread only */
    size_t max_connections;
    size_t max_header_bytes;
    uint64_t head_timeout_us; /* --http-timeout-secs: idle, head and body timeouts */
    h2o_socket_cb http1_read; /* h2o's HTTP/1 read callback, which on_read_checked wraps */
    h2o_timeout_t rewatch_timeout;
    bool accept_paused;
    h2o_timeout_t accept_timeout;
    h2o_timeout_entry_t accept_entry;
    /* open connections, for the unfinished-head check; loop thread only */
    bd_list_t conn_list; /* conn_t.link */
    h2o_timeout_t head_timeout;
    h2o_timeout_entry_t head_entry;
    bool stopping;
    bool ctx_init;
    /* hang-up watch; loop thread only */
    bd_list_t watch; /* job_t.wlink, in submit order */
    h2o_timeout_t watch_timeout;
    h2o_timeout_entry_t watch_entry;
    bool watch_init;
};

/* The watch: a job's socket is first peeked WATCH_INTERVAL_US after submit, then every
 * WATCH_INTERVAL_US; at most WATCH_BUDGET peeks per tick bound the loop's cost under
 * overload (thousands queued): detection then takes a few ticks longer. */
#define WATCH_TICK_MS 10
#define WATCH_INTERVAL_US 10000
#define WATCH_BUDGET 512
#define ACCEPT_RETRY_MS 100
#define MAX_URL_BYTES 8192
#define MAX_HEADERS 64               /* header fields; h2o's parser stops at 100 with a plain 400 */
#define HEAD_CHECK_MS 100            /* how often connections between requests are looked at */
#define BACKSTOP_TIMEOUT_MS 3600000  /* h2o's own request timeout, under on_head_tick's */
#define RESERVE_MIN_BYTES (1u << 20) /* bodies from this size get their buffer at once */
#define SCRATCH_KEEP (1u << 20)      /* reply scratch bytes kept between replies */

/* One accepted connection, until it closes. */
typedef struct {
    bd_list_t link; /* on h->conn_list */
    bd_http_t *h;
    h2o_socket_t *sock;
    bool upgraded; /* its request asked for a WebSocket: the buffer holds frames, not a head */
    bool refused;  /* answered 431 or 408, or idle too long: closing */
    /* Set while h2o holds a request of ours (from the handler, or from the response filter
     * for h2o's own answers, until the request is disposed); lives in the request's pool. */
    void **busy;
    bool head_checked;                 /* check_head passed its head; until busy ends */
    h2o_timeout_entry_t rewatch_entry; /* on h->rewatch_timeout: watch_reads after a reply */
    int phase;                         /* what on_head_tick last saw: PHASE_* */
    size_t seen_size;                  /* the input buffer's size then */
    uint64_t since_us;                 /* when the phase began (a body: when it last grew) */
} conn_t;

enum { PHASE_BUSY, PHASE_IDLE, PHASE_HEAD, PHASE_BODY };

typedef struct job job_t;
struct job {
    bd_http_t *h;
    bd_call_t *call; /* owns this job (the job is the call's user state) */
    h2o_req_t *req;  /* NULL once the client's request died */
    job_t **guard;   /* lives in req->pool; points back at this job */
    int fd;          /* the client's socket while req lives; -1 when unknown */
    uint64_t next_check_us;
    bd_list_t wlink;  /* on h->watch while watched */
    bool client_gone; /* the client hung up: nobody reads the reply */
};

/* The socket of an HTTP/1 request (HTTP/2 is off); NULL when h2o does not say. */
static h2o_socket_t *req_socket(h2o_req_t *req)
{
    return req->version < 0x200 && req->conn->callbacks->get_socket
               ? req->conn->callbacks->get_socket(req->conn)
               : NULL;
}

static void mark_stream(h2o_req_t *req);
static void on_conn_close(void *data);

/* ---- replies --------------------------------------------------------------------------- */

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

static void reply_head(bd_http_t *h, h2o_req_t *req, int status, const char *content_type,
                       size_t len)
{
    if (h->stopping) {
        req->http1_is_persistent = 0; /* Connection: close: the server is going away */
    }
    req->res.status = status;
    req->res.reason = reason_of(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
}

/* Send a copy of body (h2o copies it into the request's pool). */
static void reply(bd_http_t *h, h2o_req_t *req, int status, const char *content_type,
                  const char *body, size_t len)
{
    reply_head(h, req, status, content_type, len);
    h2o_send_inline(req, body, len);
}

/* A large reply is sent without a copy: its buffer moves into the request's pool, which
 * frees it when the request is done. */
typedef struct {
    h2o_generator_t gen; /* sends everything at once: no proceed, no stop */
    bd_buf_t body;
} owned_reply_t;

static void owned_reply_dispose(void *p)
{
    bd_buf_dispose(&((owned_reply_t *)p)->body);
}

/* Send 200 with the contents of `body`, which is left empty. */
static void reply_buf(bd_http_t *h, h2o_req_t *req, const char *content_type, bd_buf_t *body)
{
    if (body->len <= SCRATCH_KEEP) {
        reply(h, req, 200, content_type, body->data, body->len);
        bd_buf_reset(body);
        return;
    }
    owned_reply_t *o = h2o_mem_alloc_shared(&req->pool, sizeof *o, owned_reply_dispose);
    o->gen = (h2o_generator_t){NULL, NULL};
    o->body = *body;
    bd_buf_init(body);
    reply_head(h, req, 200, content_type, o->body.len);
    h2o_start_response(req, &o->gen);
    h2o_iovec_t iov = h2o_iovec_init(o->body.data, o->body.len);
    h2o_send(req, &iov, 1, H2O_SEND_STATE_FINAL);
}

static void reply_json(bd_http_t *h, h2o_req_t *req, int status)
{
    if (h->out.failed) {
        bd_buf_reset(&h->out);
        bd_buf_json_error(&h->out, "out of memory while writing the reply");
        status = 500;
    }
    reply(h, req, status, "application/json", h->out.data, h->out.len);
}

static void reply_error(bd_http_t *h, h2o_req_t *req, int code, const char *msg)
{
    bd_buf_reset(&h->out);
    bd_buf_json_error(&h->out, msg);
    reply_json(h, req, bd_infer_http_status(code));
}

/* 405 with the Allow header (RFC 9110 §15.5.6). */
static void reply_method(bd_http_t *h, h2o_req_t *req, bool post)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                   post ? "POST" : "GET, HEAD", post ? 4 : 9);
    reply_error(h, req, BD_EMETHOD, post ? "this endpoint takes POST" : "this endpoint takes GET");
}

/* h2o answers a few errors itself, before or instead of our handler: 413 for a body over
 * --max-body-bytes, 400 for broken chunked encoding, 404/405 from its own checks. They come
 * as plain text; this filter (on every path, and on the host's fallback for answers sent
 * before routing) rewrites them as the JSON error every other answer uses. */
typedef struct {
    h2o_ostream_t super;
    h2o_iovec_t body;
} json_error_ostream_t;

static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
                            h2o_send_state_t state)
{
    json_error_ostream_t *o = (json_error_ostream_t *)self;
    (void)bufs;
    (void)n;
    bool last = !h2o_send_state_is_in_progress(state);
    h2o_ostream_send_next(self, req, last ? &o->body : NULL, last ? 1 : 0, state);
}

static void on_busy_disposed(void *p)
{
    conn_t *c = *(conn_t **)p;
    if (c) {
        c->busy = NULL;
        c->head_checked = false;
        /* h2o starts reading the next request right after this, with its own callback. */
        if (!h2o_timeout_is_linked(&c->rewatch_entry)) {
            h2o_timeout_link(c->h->loop, &c->h->rewatch_timeout, &c->rewatch_entry);
        }
    }
}

/* h2o now holds a request of this connection's: on_head_tick leaves the connection alone until
 * the request is disposed (its reply written, or the connection gone). */
static void mark_busy(h2o_req_t *req)
{
    h2o_socket_t *sock = req_socket(req);
    if (!sock || sock->on_close.cb != on_conn_close) {
        return;
    }
    conn_t *c = sock->on_close.data;
    if (!c->busy) {
        c->busy = h2o_mem_alloc_shared(&req->pool, sizeof *c->busy, on_busy_disposed);
        *c->busy = c;
    }
}

static void on_setup_error_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    bd_http_t *h = *(bd_http_t **)(self + 1);
    mark_busy(req);
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    h2o_iovec_t *type = ct >= 0 ? &req->res.headers.entries[ct].value : NULL;
    if (req->res.status >= 400 && type &&
        h2o_memis(type->base, type->len, H2O_STRLIT("text/plain; charset=utf-8"))) {
        char msg[160];
        if (req->res.status == 413) {
            snprintf(msg, sizeof msg,
                     "the request body is larger than the server's limit of %zu bytes "
                     "(--max-body-bytes)",
                     h->max_body_bytes);
        } else if (req->res.status == 400) {
            snprintf(msg, sizeof msg, "the request is not valid HTTP/1.1 (%s)",
                     req->res.reason ? req->res.reason : "bad request");
        } else {
            snprintf(msg, sizeof msg, "%s", req->res.reason ? req->res.reason : "error");
        }
        bd_buf_t b;
        bd_buf_init(&b);
        bd_buf_json_error(&b, msg);
        json_error_ostream_t *o = (json_error_ostream_t *)h2o_add_ostream(req, sizeof *o, slot);
        o->super.do_send = json_error_send;
        o->body = h2o_strdup(&req->pool, b.failed ? "{}" : b.data, b.failed ? 2 : b.len);
        bd_buf_dispose(&b);
        req->res.content_length = o->body.len;
        *type = h2o_iovec_init(H2O_STRLIT("application/json"));
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

/* ---- small parsing helpers ------------------------------------------------------------- */

static bool iov_eq(h2o_iovec_t v, const char *s)
{
    size_t n = strlen(s);
    return v.len == n && memcmp(v.base, s, n) == 0;
}

/* Split "/a/b/c" into segments; returns the count, or -1 when there are more than `max`. */
static int split_path(h2o_iovec_t path, h2o_iovec_t *seg, int max)
{
    int n = 0;
    size_t i = 0;
    while (i < path.len) {
        while (i < path.len && path.base[i] == '/') {
            i++;
        }
        if (i == path.len) {
            break;
        }
        size_t start = i;
        while (i < path.len && path.base[i] != '/' && path.base[i] != '?') {
            i++;
        }
        if (n == max) {
            return -1;
        }
        seg[n++] = h2o_iovec_init(path.base + start, i - start);
        if (i < path.len && path.base[i] == '?') {
            break;
        }
    }
    return n;
}

static bool method_is(h2o_req_t *req, const char *m)
{
    return iov_eq(req->method, m);
}

static bool is_get(h2o_req_t *req)
{
    return method_is(req, "GET") || method_is(req, "HEAD");
}

/* ---- metadata handlers ----------------------------------------------------------------- */

static void json_shape(bd_buf_t *b, const bd_model_config_t *cfg, const bd_io_t *io)
{
    bd_buf_putc(b, '[');
    bool batched = cfg->max_batch_size > 0;
    if (batched) {
        bd_buf_puts(b, "-1");
    }
    for (int i = 0; i < io->dims.ndim; i++) {
        bd_buf_printf(b, "%s%lld", (i || batched) ? "," : "", (long long)io->dims.dims[i]);
    }
    bd_buf_putc(b, ']');
}

static void json_ios(bd_buf_t *b, const bd_model_config_t *cfg, const bd_io_t *io, size_t n)
{
    bd_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        bd_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        bd_buf_json_string(b, io[i].name, strlen(io[i].name));
        if (io == cfg->inputs && cfg->image.enabled && strcmp(io[i].name, cfg->image.input) == 0) {
            /* Offered as encoded images, one per row (docs/API.md): [-1] batching, else [1]. */
            bd_buf_puts(b, cfg->max_batch_size > 0 ? ",\"datatype\":\"BYTES\",\"shape\":[-1]"
                                                   : ",\"datatype\":\"BYTES\",\"shape\":[1]");
            bd_buf_putc(b, '}');
            continue;
        }
        bd_buf_printf(b, ",\"datatype\":\"%s\",\"shape\":", bd_dtype_name(io[i].dtype));
        json_shape(b, cfg, &io[i]);
        bd_buf_putc(b, '}');
    }
    bd_buf_putc(b, ']');
}

static void model_metadata(bd_http_t *h, h2o_req_t *req, bd_model_t *m)
{
    const bd_model_config_t *cfg = bd_model_config(m);
    bd_buf_t *b = &h->out;
    bd_buf_reset(b);
    bd_buf_puts(b, "{\"name\":");
    bd_buf_json_string(b, bd_model_name(m), strlen(bd_model_name(m)));
    /* Every version being served, as Triton lists them. */
    size_t nv = bd_repo_versions(h->repo, bd_model_name(m), NULL, 0);
    bd_model_t **vs = calloc(nv ? nv : 1, sizeof *vs);
    nv = vs ? bd_repo_versions(h->repo, bd_model_name(m), vs, nv) : 0;
    b->failed = b->failed || !vs;
    bd_buf_puts(b, ",\"versions\":[");
    bool first = true;
    for (size_t i = 0; i < nv; i++) {
        if (bd_model_ready(vs[i])) {
            bd_buf_printf(b, "%s\"%s\"", first ? "" : ",", bd_model_version(vs[i]));
            first = false;
        }
    }
    free(vs);
    bd_buf_printf(b, "],\"platform\":\"%s\"", bd_model_platform(m));
    bd_buf_puts(b, ",\"inputs\":");
    json_ios(b, cfg, cfg->inputs, cfg->n_inputs);
    bd_buf_puts(b, ",\"outputs\":");
    json_ios(b, cfg, cfg->outputs, cfg->n_outputs);
    bd_buf_printf(b, ",\"max_batch_size\":%d}", cfg->max_batch_size);
    reply_json(h, req, 200);
}

static void server_metadata(bd_http_t *h, h2o_req_t *req)
{
    /* Only what works: the repository extension needs a --model-control mode. */
    bd_buf_reset(&h->out);
    bd_buf_puts(&h->out, "{\"name\":\"batchd\",\"version\":\"" BD_VERSION
                         "\",\"extensions\":[\"binary_tensor_data\",\"classification\"");
    if (h->model_control != BD_MODEL_CONTROL_NONE) {
        bd_buf_puts(&h->out, ",\"model_repository\"");
    }
    bd_buf_puts(&h->out, ",\"statistics\"]}");
    reply_json(h, req, 200);
}

static void metrics_page(bd_http_t *h, h2o_req_t *req)
{
    bd_buf_reset(&h->out);
    bd_metrics_render(h->metrics, &h->out);
    if (h->out.failed) {
        reply_error(h, req, BD_ENOMEM, "out of memory while rendering metrics");
        return;
    }
    reply(h, req, 200, "text/plain; version=0.0.4; charset=utf-8", h->out.data, h->out.len);
}

/* ---- client hang-ups -------------------------------------------------------------------- */

static void watch_add(bd_http_t *h, job_t *j)
{
    bd_list_push_back(&h->watch, &j->wlink);
    if (!h2o_timeout_is_linked(&h->watch_entry)) {
        h2o_timeout_link(h->loop, &h->watch_timeout, &h->watch_entry);
    }
}

/* The client is gone: a call still queued leaves the queue (its completion then arrives
 * with BD_ECANCELLED); a running one finishes and is dropped. */
static void client_left(job_t *j)
{
    bd_list_unlink(&j->wlink);
    if (!j->client_gone) {
        j->client_gone = true;
        bd_call_cancel(j->call);
    }
}

static void on_watch_tick(h2o_timeout_entry_t *entry)
{
    bd_http_t *h = H2O_STRUCT_FROM_MEMBER(bd_http_t, watch_entry, entry);
    uint64_t now = bd_now_us();
    for (int budget = WATCH_BUDGET; budget > 0 && !bd_list_empty(&h->watch); budget--) {
        job_t *j = BD_CONTAINER_OF(bd_list_first(&h->watch), job_t, wlink);
        if (j->next_check_us > now) {
            break;
        }
        bd_list_unlink(&j->wlink);
        char c;
        ssize_t n = recv(j->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) {
            continue; /* pipelined bytes: a hang-up behind them cannot be seen; stop */
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            j->next_check_us = now + WATCH_INTERVAL_US;
            watch_add(h, j);
            continue;
        }
        client_left(j); /* 0: end of file; < 0: reset or another socket error */
    }
    if (!bd_list_empty(&h->watch) && !h2o_timeout_is_linked(&h->watch_entry)) {
        h2o_timeout_link(h->loop, &h->watch_timeout, &h->watch_entry);
    }
}

/* ---- infer ----------------------------------------------------------------------------- */

static void on_guard_dispose(void *p)
{
    job_t *j = *(job_t **)p;
    if (j) {
        /* h2o dropped the request (its connection closed): nobody will read the answer. */
        j->req = NULL;
        client_left(j);
    }
}

/* Parse Inference-Header-Content-Length; *header_len = len when absent. */
static int header_length(h2o_req_t *req, size_t len, size_t *header_len, bd_err_t *err)
{
    ssize_t i =
        h2o_find_header_by_str(&req->headers, H2O_STRLIT("inference-header-content-length"), -1);
    if (i < 0) {
        *header_len = len;
        return 0;
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = 0;
    bool ok = v.len > 0 && v.len <= 19;
    for (size_t k = 0; ok && k < v.len; k++) {
        ok = v.base[k] >= '0' && v.base[k] <= '9';
        n = n * 10 + (size_t)(v.base[k] - '0');
    }
    if (!ok) {
        return bd_err_set(err, BD_EINVAL,
                          "Inference-Header-Content-Length '%.*s' is not a byte count",
                          (int)(v.len > 32 ? 32 : v.len), v.base);
    }
    if (n > len) {
        return bd_err_set(err, BD_EINVAL,
                          "Inference-Header-Content-Length is %zu but the body has only %zu bytes",
                          n, len);
    }
    *header_len = n;
    return 0;
}

static void send_result(bd_http_t *h, job_t *j)
{
    h2o_req_t *req = j->req;
    bd_err_t err = {0};
    size_t header_len = 0;
    bd_buf_reset(&h->out);
    int rc = bd_call_encode(j->call, &h->out, &header_len, &err);
    if (rc != 0) {
        reply_error(h, req, rc, err.msg);
    } else if (header_len == h->out.len) {
        reply_buf(h, req, "application/json", &h->out);
    } else {
        char num[24];
        int len = snprintf(num, sizeof num, "%zu", header_len);
        h2o_add_header_by_str(&req->pool, &req->res.headers,
                              H2O_STRLIT("inference-header-content-length"), 0,
                              "Inference-Header-Content-Length", num, (size_t)len);
        reply_buf(h, req, "application/octet-stream", &h->out);
    }
    bd_buf_trim(&h->out, SCRATCH_KEEP);
}

/* The call finished (from the mailbox, on the loop). */
static void on_call_done(bd_call_t *call)
{
    job_t *j = bd_call_user(call);
    bd_list_unlink(&j->wlink);
    if (j->req) {
        *j->guard = NULL;
        if (j->client_gone) {
            /* Written to a dead socket: h2o sees the error and closes it. */
            reply_error(j->h, j->req, BD_ECANCELLED, "the client closed the connection");
        } else {
            send_result(j->h, j);
        }
    }
    bd_call_free(call);
}

/* Content-Type image/jpeg or image/png (parameters after ';' allowed). */
static bool image_body(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i < 0) {
        return false;
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = 0;
    while (n < v.len && v.base[n] != ';' && v.base[n] != ' ') {
        n++;
    }
    return h2o_lcstris(v.base, n, H2O_STRLIT("image/jpeg")) ||
           h2o_lcstris(v.base, n, H2O_STRLIT("image/png"));
}

/* ?classification=K on a plain image body: 0 when absent; -1 when it is not 1..65536. */
static long query_classification(h2o_req_t *req)
{
    if (req->query_at == SIZE_MAX) {
        return 0;
    }
    const char *q = req->path.base + req->query_at + 1;
    const char *end = req->path.base + req->path.len;
    static const char key[] = "classification=";
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        if ((size_t)(e - q) > sizeof key - 1 && memcmp(q, key, sizeof key - 1) == 0) {
            long k = 0;
            for (const char *p = q + sizeof key - 1; p < e; p++) {
                if (*p < '0' || *p > '9' || k > 65536) {
                    return -1;
                }
                k = k * 10 + (*p - '0');
            }
            return k >= 1 && k <= 65536 ? k : -1;
        }
        q = e + 1;
    }
    return 0;
}

static void infer(bd_http_t *h, h2o_req_t *req, h2o_iovec_t model, h2o_iovec_t version)
{
    bd_err_t err = {0};
    bd_err_t framing = {0};
    size_t len = req->entity.base ? req->entity.len : 0;
    size_t header_len = len;
    bool bad_framing = len && header_length(req, len, &header_len, &framing) != 0;
    bd_infer_args_t a = {.protocol = BD_PROTO_HTTP,
                         .model = model.base,
                         .model_len = model.len,
                         .version = version.base,
                         .version_len = version.len,
                         .body = req->entity.base,
                         .len = len,
                         .header_len = header_len,
                         /* From here until the reply is sent h2o neither reads the socket
                          * nor moves its input buffer, which holds the body; the reply waits
                          * for done, and the drain for every call. */
                         .body_kept = true,
                         .framing_err = bad_framing ? &framing : NULL,
                         .user_size = sizeof(job_t)};
    bd_call_t *call = NULL;
    int rc;
    if (image_body(req)) {
        long k = query_classification(req);
        if (k < 0) {
            reply_error(h, req, BD_EINVAL,
                        "?classification must be a number of classes from 1 to 65536");
            return;
        }
        bd_infer_image_args_t ia = {.protocol = BD_PROTO_HTTP,
                                    .model = model.base,
                                    .model_len = model.len,
                                    .version = version.base,
                                    .version_len = version.len,
                                    .data = req->entity.base,
                                    .len = len,
                                    .classification = (size_t)k,
                                    .user_size = sizeof(job_t)};
        rc = bd_infer_start_image(h->infer, &ia, on_call_done, &call, &err);
    } else {
        rc = bd_infer_start(h->infer, &a, on_call_done, &call, &err);
    }
    if (rc != 0) {
        reply_error(h, req, rc, err.msg);
        return;
    }
    job_t *j = bd_call_user(call);
    j->h = h;
    j->call = call;
    j->req = req;
    bd_list_init(&j->wlink);
    j->guard = h2o_mem_alloc_shared(&req->pool, sizeof *j->guard, on_guard_dispose);
    *j->guard = j;
    /* Watch the client's socket while the request waits (HTTP/1.1 only has one). */
    j->fd = -1;
    h2o_socket_t *sock = req_socket(req);
    if (sock) {
        j->fd = h2o_socket_get_fd(sock);
        j->next_check_us = bd_now_us() + WATCH_INTERVAL_US;
        watch_add(h, j);
    }
}

/* ---- statistics extension -------------------------------------------------------------- */

static void stat_json(bd_buf_t *b, const char *key, bd_stat_duration_t d, bool comma)
{
    bd_buf_printf(b, "%s\"%s\":{\"count\":%llu,\"ns\":%llu}", comma ? "," : "", key,
                  (unsigned long long)d.count, (unsigned long long)d.ns);
}

/* One model_stats object in Triton's shape; cache_hit/cache_miss are always zero (batchd
 * has no response cache) but present, because Triton's clients read them. */
static void model_stats_json(bd_buf_t *b, bd_model_t *m)
{
    bd_model_stats_t st = {0};
    bd_metrics_stats(bd_model_metrics(m), &st);
    bd_buf_puts(b, "{\"name\":");
    bd_buf_json_string(b, bd_model_name(m), strlen(bd_model_name(m)));
    bd_buf_printf(b,
                  ",\"version\":\"%s\",\"last_inference\":%llu,\"inference_count\":%llu,"
                  "\"execution_count\":%llu,\"inference_stats\":{",
                  bd_model_version(m), (unsigned long long)st.last_inference_ms,
                  (unsigned long long)st.inference_count, (unsigned long long)st.execution_count);
    bd_stat_duration_t zero = {0, 0};
    stat_json(b, "success", st.success, false);
    stat_json(b, "fail", st.fail, true);
    stat_json(b, "queue", st.queue, true);
    stat_json(b, "compute_input", st.compute_input, true);
    stat_json(b, "compute_infer", st.compute_infer, true);
    stat_json(b, "compute_output", st.compute_output, true);
    stat_json(b, "cache_hit", zero, true);
    stat_json(b, "cache_miss", zero, true);
    bd_buf_puts(b, "},\"batch_stats\":[");
    const bd_model_config_t *cfg = bd_model_config(m);
    size_t cap = (size_t)(cfg && cfg->max_batch_size > 0 ? cfg->max_batch_size : 1) + 1;
    bd_batch_stats_t *bs = calloc(cap, sizeof *bs);
    size_t n = bs ? bd_metrics_batch_stats(bd_model_metrics(m), bs, cap) : 0;
    if (!bs) {
        b->failed = true;
    }
    for (size_t i = 0; i < n; i++) {
        bd_buf_printf(b, "%s{\"batch_size\":%llu", i ? "," : "",
                      (unsigned long long)bs[i].batch_size);
        stat_json(b, "compute_input", bs[i].compute_input, true);
        stat_json(b, "compute_infer", bs[i].compute_infer, true);
        stat_json(b, "compute_output", bs[i].compute_output, true);
        bd_buf_putc(b, '}');
    }
    free(bs);
    bd_buf_puts(b, "]}");
}

/* Stats of every ready version of model `name`; returns how many were written. */
static size_t model_versions_stats(bd_http_t *h, const char *name, bool *first)
{
    size_t nv = bd_repo_versions(h->repo, name, NULL, 0);
    bd_model_t **vs = calloc(nv ? nv : 1, sizeof *vs);
    nv = vs ? bd_repo_versions(h->repo, name, vs, nv) : 0;
    h->out.failed = h->out.failed || !vs;
    size_t written = 0;
    for (size_t i = 0; i < nv; i++) {
        if (bd_model_ready(vs[i])) {
            bd_buf_puts(&h->out, *first ? "" : ",");
            *first = false;
            model_stats_json(&h->out, vs[i]);
            written++;
        }
    }
    free(vs);
    return written;
}

/* GET /v2/models/stats (m NULL: every model), /v2/models/{m}/stats (every ready version of
 * m) and /v2/models/{m}/versions/{v}/stats (that version). */
static void stats(bd_http_t *h, h2o_req_t *req, bd_model_t *m, bool one_version)
{
    bool first = true;
    bd_buf_reset(&h->out);
    bd_buf_puts(&h->out, "{\"model_stats\":[");
    if (!m) {
        for (size_t i = 0; i < bd_repo_count(h->repo); i++) {
            model_versions_stats(h, bd_model_name(bd_repo_at(h->repo, i)), &first);
        }
    } else if (!bd_model_ready(m)) {
        bd_err_t err;
        bd_err_set(&err, BD_EUNAVAIL, "model '%s' is unavailable: %s", bd_model_name(m),
                   bd_model_reason(m));
        reply_error(h, req, err.code, err.msg);
        return;
    } else if (one_version) {
        model_stats_json(&h->out, m);
    } else {
        model_versions_stats(h, bd_model_name(m), &first);
    }
    bd_buf_puts(&h->out, "]}");
    reply_json(h, req, 200);
}

/* ---- model repository extension ------------------------------------------------------- */

typedef struct waiter waiter_t;
struct waiter {
    bd_http_t *h;
    h2o_req_t *req;   /* NULL once the client's request died */
    waiter_t **guard; /* lives in req->pool */
    char name[256];
};

static void on_waiter_dispose(void *p)
{
    waiter_t *w = *(waiter_t **)p;
    if (w) {
        w->req = NULL;
    }
}

static void on_loaded(void *ctx, int rc, const char *msg)
{
    waiter_t *w = ctx;
    if (w->req) {
        *w->guard = NULL;
        if (rc == 0) {
            reply(w->h, w->req, 200, "application/json", "", 0);
        } else {
            char text[BD_ERR_MSG_MAX + 300];
            snprintf(text, sizeof text, "failed to load '%s': %s", w->name, msg);
            bd_buf_reset(&w->h->out);
            bd_buf_json_error(&w->h->out, text);
            reply_json(w->h, w->req, rc == BD_ESHUTDOWN ? 503 : 400);
        }
    }
    free(w);
}

/* The request's JSON body: *out NULL for an empty body. Replies 400 and returns -1 when the
 * body is not a JSON object. */
static int body_object(bd_http_t *h, h2o_req_t *req, json_t **out)
{
    *out = NULL;
    if (req->entity.base == NULL || req->entity.len == 0) {
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        reply_error(h, req, BD_EINVAL, "the request body must be a JSON object (or empty)");
        return -1;
    }
    *out = root;
    return 0;
}

static void repo_index(bd_http_t *h, h2o_req_t *req)
{
    json_t *body;
    if (body_object(h, req, &body) != 0) {
        return;
    }
    json_t *ready = body ? json_object_get(body, "ready") : NULL;
    bool bad = ready && !json_is_boolean(ready);
    bool ready_only = ready && json_is_true(ready);
    json_decref(body);
    if (bad) {
        reply_error(h, req, BD_EINVAL, "'ready' must be true or false");
        return;
    }
    bd_buf_reset(&h->out);
    bd_repo_index(h->repo, ready_only, &h->out);
    reply_json(h, req, 200);
}

static void repo_load(bd_http_t *h, h2o_req_t *req, h2o_iovec_t name)
{
    json_t *body;
    if (body_object(h, req, &body) != 0) {
        return;
    }
    json_t *params = body ? json_object_get(body, "parameters") : NULL;
    bool override = false;
    if (json_is_object(params)) {
        const char *key;
        json_t *v;
        json_object_foreach(params, key, v)
        {
            (void)v;
            override = override || strcmp(key, "config") == 0 || strncmp(key, "file:", 5) == 0;
        }
    }
    json_decref(body);
    if (override) {
        reply_error(h, req, BD_EUNSUPPORTED,
                    "loading with a 'config' or 'file:' override is not supported; change the "
                    "files in the model repository and load again");
        return;
    }
    waiter_t *w = calloc(1, sizeof *w);
    if (!w) {
        reply_error(h, req, BD_ENOMEM, "out of memory");
        return;
    }
    w->h = h;
    w->req = req;
    snprintf(w->name, sizeof w->name, "%.*s", (int)(name.len > 255 ? 255 : name.len), name.base);
    bd_err_t err = {0};
    if (bd_repo_load(h->repo, name.base, name.len, on_loaded, w, &err) != 0) {
        free(w);
        reply_error(h, req, err.code, err.msg);
        return;
    }
    w->guard = h2o_mem_alloc_shared(&req->pool, sizeof *w->guard, on_waiter_dispose);
    *w->guard = w;
}

static void repo_unload(bd_http_t *h, h2o_req_t *req, h2o_iovec_t name)
{
    json_t *body; /* parameters (unload_dependents) have no meaning here: no ensembles */
    if (body_object(h, req, &body) != 0) {
        return;
    }
    json_decref(body);
    bd_err_t err = {0};
    if (bd_repo_unload(h->repo, name.base, name.len, &err) != 0) {
        reply_error(h, req, err.code, err.msg);
        return;
    }
    reply(h, req, 200, "application/json", "", 0);
}

static const char *control_name(bd_model_control_t c)
{
    return c == BD_MODEL_CONTROL_EXPLICIT ? "explicit"
           : c == BD_MODEL_CONTROL_POLL   ? "poll"
                                          : "none";
}

/* seg: repository, index | repository, models, {m}, load | unload */
static void route_repository(bd_http_t *h, h2o_req_t *req, h2o_iovec_t *seg, int n)
{
    bool index = n == 2 && iov_eq(seg[1], "index");
    bool load = n == 4 && iov_eq(seg[1], "models") && iov_eq(seg[3], "load");
    bool unload = n == 4 && iov_eq(seg[1], "models") && iov_eq(seg[3], "unload");
    if (!index && !load && !unload) {
        reply_error(h, req, BD_ENOPATH, "unknown path; see docs/API.md for the endpoints");
        return;
    }
    if (!method_is(req, "POST")) {
        reply_method(h, req, true);
        return;
    }
    /* Triton's rule: changes only in explicit mode; the index is readable whenever the
     * repository can change (explicit or poll). */
    bool allowed = h->model_control == BD_MODEL_CONTROL_EXPLICIT ||
                   (index && h->model_control == BD_MODEL_CONTROL_POLL);
    if (!allowed) {
        bd_err_t err;
        bd_err_set(&err, BD_EINVAL,
                   "%s needs the server started with --model-control explicit%s (it runs with "
                   "--model-control %s)",
                   index ? "the repository index" : "loading and unloading models",
                   index ? " or poll" : "", control_name(h->model_control));
        reply_error(h, req, err.code, err.msg);
        return;
    }
    if (index) {
        repo_index(h, req);
    } else if (load) {
        repo_load(h, req, seg[2]);
    } else {
        repo_unload(h, req, seg[2]);
    }
}

/* ---- routing --------------------------------------------------------------------------- */

static void route_model(bd_http_t *h, h2o_req_t *req, h2o_iovec_t *seg, int n)
{
    /* seg: models, {m} [, versions, {v}] [, ready | infer | stats | stream] */
    h2o_iovec_t version = {NULL, 0};
    int rest = 2;
    if (n >= 4 && iov_eq(seg[2], "versions")) {
        version = seg[3];
        rest = 4;
    }
    const char *action = "";
    if (n == rest + 1 && iov_eq(seg[rest], "ready")) {
        action = "ready";
    } else if (n == rest + 1 && iov_eq(seg[rest], "infer")) {
        action = "infer";
    } else if (n == rest + 1 && iov_eq(seg[rest], "stats")) {
        action = "stats";
    } else if (n == rest + 1 && iov_eq(seg[rest], "stream")) {
        action = "stream";
    } else if (n != rest) {
        reply_error(h, req, BD_ENOPATH, "unknown path; see docs/API.md for the endpoints");
        return;
    }
    bool post = strcmp(action, "infer") == 0;
    if (post ? !method_is(req, "POST") : !is_get(req)) {
        reply_method(h, req, post);
        return;
    }
    if (post) {
        infer(h, req, seg[1], version);
        return;
    }
    bd_err_t err = {0};
    bd_model_t *m = NULL;
    if (bd_repo_find(h->repo, seg[1].base, seg[1].len, version.base, version.len, &m, &err)) {
        reply_error(h, req, err.code, err.msg);
        return;
    }
    char breaker[BD_ERR_MSG_MAX];
    if (strcmp(action, "stream") == 0) {
        mark_stream(req);
        bd_stream_accept(h->stream, req, seg[1].base, seg[1].len, version.base, version.len);
    } else if (strcmp(action, "stats") == 0) {
        stats(h, req, m, version.len > 0);
    } else if (!bd_model_ready(m)) {
        bd_err_set(&err, BD_EUNAVAIL, "model '%s' is unavailable: %s", bd_model_name(m),
                   bd_model_reason(m));
        reply_error(h, req, *action ? BD_EINVAL : BD_EUNAVAIL, err.msg);
    } else if (*action && !bd_sched_available(bd_model_sched(m), breaker, sizeof breaker)) {
        /* The circuit breaker holds it: not ready until the probe succeeds. */
        bd_err_set(&err, BD_EUNAVAIL, "model '%s' is unavailable: %s", bd_model_name(m), breaker);
        reply_error(h, req, err.code, err.msg);
    } else if (*action) {
        reply(h, req, 200, "application/json", "", 0);
    } else {
        model_metadata(h, req, m);
    }
}

/* Case-insensitive "name:" at the start of a header line. */
static bool header_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

/* The request line and headers, checked before anything else. Size: a URL over
 * MAX_URL_BYTES gets 414, a head over --max-header-bytes 431 (h2o itself accepts up to about
 * 400 KiB). Framing (RFC 9112): a request with both Content-Length and Transfer-Encoding, or
 * with Content-Length values that differ or are not a number, could be read differently by
 * a proxy in front of us (request smuggling): refuse it and close the connection. An
 * HTTP/1.1 request needs exactly one Host (§3.2). h2o 2.2.5 keeps only one of each of these
 * headers (it reads the body by the last framing header it saw), so the check reads the raw
 * header block, which is still at the front of the connection's input buffer while the
 * request is handled. Returns false after replying (the connection then closes). */
static bool request_head_ok(bd_http_t *h, h2o_req_t *req)
{
    h2o_socket_t *sock = req_socket(req);
    if (!sock || !sock->input || sock->input->size == 0) {
        return true;
    }
    const char *p = sock->input->bytes, *end = p + sock->input->size;
    const char *head_end = end;
    int cl = 0, te = 0, host = 0, fields = 0;
    h2o_iovec_t first_cl = {NULL, 0};
    bool cl_bad = false;
    const char *nl = memchr(p, '\n', (size_t)(end - p)); /* skip the request line */
    for (p = nl ? nl + 1 : end; p < end; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            break;
        }
        size_t len = (size_t)(nl - p) - (nl > p && nl[-1] == '\r');
        if (len == 0) {
            head_end = nl + 1; /* the end of the header block */
            break;
        }
        fields++;
        if (header_is(p, len, "content-length")) {
            h2o_iovec_t v = h2o_str_stripws(p + 15, len - 15);
            bool digits = v.len > 0 && v.len <= 19;
            for (size_t k = 0; digits && k < v.len; k++) {
                digits = v.base[k] >= '0' && v.base[k] <= '9';
            }
            cl_bad = cl_bad || !digits ||
                     (cl > 0 && (v.len != first_cl.len || memcmp(v.base, first_cl.base, v.len)));
            first_cl = cl == 0 ? v : first_cl;
            cl++;
        } else if (header_is(p, len, "transfer-encoding")) {
            te++;
        } else if (header_is(p, len, "host")) {
            host++;
        }
    }
    size_t head_bytes = (size_t)(head_end - sock->input->bytes);
    char msg[160];
    int status = 400;
    const char *why = NULL;
    if (req->input.path.len > MAX_URL_BYTES) {
        status = 414;
        snprintf(msg, sizeof msg, "the URL has %zu bytes; at most %d are accepted",
                 req->input.path.len, MAX_URL_BYTES);
        why = msg;
    } else if (head_bytes > h->max_header_bytes) {
        status = 431;
        snprintf(msg, sizeof msg,
                 "the request line and headers have %zu bytes; at most %zu are accepted "
                 "(--max-header-bytes)",
                 head_bytes, h->max_header_bytes);
        why = msg;
    } else if (fields > MAX_HEADERS) {
        status = 431;
        snprintf(msg, sizeof msg, "the request has %d header fields; at most %d are accepted",
                 fields, MAX_HEADERS);
        why = msg;
    } else if (cl > 0 && te > 0) {
        why = "a request must not have both Content-Length and Transfer-Encoding";
    } else if (cl_bad) {
        why = "Content-Length must be one decimal number (repeated values must be equal)";
    } else if (req->version == 0x101 && host != 1) {
        why = host ? "an HTTP/1.1 request must have exactly one Host header, it has several"
                   : "an HTTP/1.1 request must have a Host header";
    }
    if (!why) {
        return true;
    }
    req->http1_is_persistent = 0; /* what follows on this connection cannot be trusted */
    bd_buf_reset(&h->out);
    bd_buf_json_error(&h->out, why);
    reply_json(h, req, status);
    return false;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    bd_http_t *h = *(bd_http_t **)(self + 1);
    mark_busy(req);
    if (!request_head_ok(h, req)) {
        return 0;
    }
    if (h->stopping) {
        /* The drain: a request that arrives on a kept-alive connection after the signal. */
        reply_error(h, req, BD_ESHUTDOWN, "the server is shutting down");
        return 0;
    }
    h2o_iovec_t seg[8];
    int n = split_path(req->path_normalized, seg, 8);
    if (n == 1 && iov_eq(seg[0], "metrics")) {
        is_get(req) ? metrics_page(h, req) : reply_method(h, req, false);
        return 0;
    }
    if (n < 1 || !iov_eq(seg[0], "v2")) {
        reply_error(h, req, BD_ENOPATH, "unknown path; see docs/API.md for the endpoints");
        return 0;
    }
    if (n == 3 && iov_eq(seg[1], "models") && iov_eq(seg[2], "stats")) {
        is_get(req) ? stats(h, req, NULL, false) : reply_method(h, req, false);
        return 0;
    }
    if (n >= 3 && iov_eq(seg[1], "models")) {
        route_model(h, req, seg + 1, n - 1);
        return 0;
    }
    if (n == 2 && iov_eq(seg[1], "stream")) {
        if (is_get(req)) {
            mark_stream(req);
            bd_stream_accept(h->stream, req, NULL, 0, NULL, 0);
        } else {
            reply_method(h, req, false);
        }
        return 0;
    }
    if (n >= 2 && iov_eq(seg[1], "repository")) {
        route_repository(h, req, seg + 1, n - 1);
        return 0;
    }
    bool health = n == 3 && iov_eq(seg[1], "health");
    bool live = health && iov_eq(seg[2], "live");
    bool ready = health && iov_eq(seg[2], "ready");
    if (n != 1 && !live && !ready) {
        reply_error(h, req, BD_ENOPATH, "unknown path; see docs/API.md for the endpoints");
    } else if (!is_get(req)) {
        reply_method(h, req, false);
    } else if (n == 1) {
        server_metadata(h, req);
    } else {
        reply(h, req, 200, "application/json", "", 0);
    }
    return 0;
}

/* ---- sockets and lifecycle ------------------------------------------------------------- */

static void on_accept(h2o_socket_t *listener, const char *err);

/* Accepting stopped (at --max-connections, or out of descriptors): the listener is not read,
 * so a full backlog costs nothing, until a connection closes or ACCEPT_RETRY_MS passed. */
static void accept_pause(bd_http_t *h)
{
    if (!h->accept_paused && h->listener) {
        h->accept_paused = true;
        h2o_socket_read_stop(h->listener);
        h2o_timeout_link(h->loop, &h->accept_timeout, &h->accept_entry);
    }
}

static void accept_resume(bd_http_t *h)
{
    if (h->accept_paused && h->listener && !h->stopping) {
        h->accept_paused = false;
        if (h2o_timeout_is_linked(&h->accept_entry)) {
            h2o_timeout_unlink(&h->accept_entry);
        }
        h2o_socket_read_start(h->listener, on_accept);
    }
}

static void on_accept_retry(h2o_timeout_entry_t *entry)
{
    accept_resume(H2O_STRUCT_FROM_MEMBER(bd_http_t, accept_entry, entry));
}

static void on_conn_close(void *data)
{
    conn_t *c = data;
    bd_http_t *h = c->h;
    if (c->busy) {
        *c->busy = NULL;
    }
    if (h2o_timeout_is_linked(&c->rewatch_entry)) {
        h2o_timeout_unlink(&c->rewatch_entry);
    }
    bd_list_unlink(&c->link);
    free(c);
    h->conns--;
    accept_resume(h);
}

/* ---- connections between requests ---------------------------------------------------------
 * h2o buffers up to about 400 KiB of a request head before its parser gives up, and its one
 * request timeout runs from the end of the previous reply to the end of the next body, closing
 * without a word (so a large body on a slow link was cut off however steadily it came). Every
 * HEAD_CHECK_MS each connection that h2o holds no request of is looked at instead, in one of
 * three phases: idle (an empty buffer), a head (no empty line yet) or a body (a complete head
 * whose body is still arriving). A head over --max-header-bytes is answered 431; a head
 * incomplete for --http-timeout-secs, or a body that did not grow for that long, 408; an idle
 * connection is closed after that long without an answer. Each of these is shut down, which
 * h2o then sees as the end of the connection. h2o's own timeout stays as a backstop. */

/* Whether buf holds an empty line, the end of a head ("\n\n" or "\n\r\n"). */
static bool has_head_end(const char *buf, size_t n)
{
    for (const char *p = buf, *end = buf + n; (p = memchr(p, '\n', (size_t)(end - p))); p++) {
        if ((end - p > 1 && p[1] == '\n') || (end - p > 2 && p[1] == '\r' && p[2] == '\n')) {
            return true;
        }
    }
    return false;
}

/* A WebSocket handshake: from now on the connection's buffer holds frames, not heads. */
static void mark_stream(h2o_req_t *req)
{
    h2o_socket_t *sock = req_socket(req);
    if (sock && sock->on_close.cb == on_conn_close) {
        ((conn_t *)sock->on_close.data)->upgraded = true;
    }
}

/* Answer `status` with {"error": msg} straight on the socket and shut it down. Nothing else
 * writes while h2o waits for a head. Best effort: a full socket buffer only loses the answer,
 * not the close, which h2o then sees as the client's. */
static void refuse_head(conn_t *c, int status, const char *msg)
{
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n\r\n{\"error\":\"%s\"}",
                     status, reason_of(status), strlen(msg) + 12, msg);
    int fd = h2o_socket_get_fd(c->sock);
    if (send(fd, resp, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        BD_DEBUG("http", "%d not sent: %s", status, strerror(errno));
    }
    shutdown(fd, SHUT_RDWR);
    c->refused = true;
    BD_WARN("http", "closing a connection: %s", msg);
}

/* A complete head at the front of `in` announcing a Content-Length body of at least
 * RESERVE_MIN_BYTES (and at most --max-body-bytes, which h2o refuses itself): make room for the
 * rest of the body at once. h2o grows a connection's buffer by doubling it as the body arrives,
 * and each step copies everything read so far on the loop (a 50 MB body: ~60 MB of copies, the
 * last one 32 MB at once); one early reserve leaves only the kernel's copy into the buffer. */
static void reserve_body(bd_http_t *h, h2o_buffer_t **in)
{
    const char *buf = (*in)->bytes, *end = buf + (*in)->size, *nl;
    unsigned long long cl = 0;
    for (const char *p = buf; (nl = memchr(p, '\n', (size_t)(end - p))); p = nl + 1) {
        size_t len = (size_t)(nl - p) - (nl > p && nl[-1] == '\r');
        if (len == 0) { /* the head ends at nl */
            size_t have = (size_t)(end - nl - 1);
            size_t room = (*in)->capacity - (size_t)((*in)->bytes - (*in)->_buf) - (*in)->size;
            if (cl >= RESERVE_MIN_BYTES && cl <= h->max_body_bytes && have < cl &&
                room < cl - have) {
                h2o_buffer_reserve(in, cl - have); /* NULL on failure: h2o's next read fails */
            }
            return;
        }
        if (p != buf && !cl && header_is(p, len, "content-length")) {
            char *num_end;
            cl = strtoull(p + 15, &num_end, 10);
            cl = num_end <= nl ? cl : 0;
        }
    }
}

/* ---- request heads, before h2o parses them ----------------------------------------------
 * h2o's HTTP/1 parser answers a head it cannot parse, or one with more than 100 fields, with a
 * canned plain-text 400 of its own, and buffers up to ~400 KiB of an unfinished head. So
 * between requests each connection's read callback (h2o's) is wrapped by on_read_checked,
 * which looks at what arrived before h2o does: a head that is not HTTP/1.x gets a JSON 400,
 * more than MAX_HEADERS fields or --max-header-bytes of head a JSON 431, and the connection is
 * shut down. h2o sets its callback again for every request (after each reply), so the wrapper
 * is put back from a zero timeout once the reply's request is disposed: that runs before the
 * loop polls again. Pipelined requests already buffered are parsed by h2o at once; on_req's
 * request_head_ok still checks those. */

struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
/* picohttpparser's, which libh2o bundles and exports (no header is installed): h2o's own parse,
 * so that what passes here is what h2o accepts. */
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                      const char **path, size_t *path_len, int *minor_version,
                      struct phr_header *headers, size_t *num_headers, size_t last_len);

/* Judge the head at the front of c's input buffer; false after refusing it. */
static bool check_head(bd_http_t *h, conn_t *c)
{
    h2o_buffer_t *in = c->sock->input;
    if (!in || in->size == 0) {
        return true;
    }
    struct phr_header fields[MAX_HEADERS];
    size_t n_fields = MAX_HEADERS, method_len, path_len;
    const char *method, *path;
    int minor;
    int len = phr_parse_request(in->bytes, in->size, &method, &method_len, &path, &path_len, &minor,
                                fields, &n_fields, 0);
    char msg[160];
    if (len == -1) {
        /* Too many fields, or not HTTP/1.x at all: count the lines to tell which. */
        size_t lines = 0;
        bool ended = false;
        const char *end = in->bytes + (in->size < 65536 ? in->size : 65536), *nl;
        for (const char *p = in->bytes; (nl = memchr(p, '\n', (size_t)(end - p))); p = nl + 1) {
            if ((ended = nl == p || (nl == p + 1 && *p == '\r'))) {
                break;
            }
            lines++;
        }
        if (lines > MAX_HEADERS + 1) {
            snprintf(
                msg, sizeof msg, "the request has %s%zu header fields; at most %d are accepted",
                ended ? "" : "more than ", ended ? lines - 1 : (size_t)MAX_HEADERS, MAX_HEADERS);
            refuse_head(c, 431, msg);
        } else {
            refuse_head(c, 400,
                        "the request head is not HTTP/1.x: expected a request line (METHOD "
                        "TARGET HTTP/1.1) and header fields (RFC 9112)");
        }
        return false;
    }
    size_t head = len > 0 ? (size_t)len : in->size;
    if (head > h->max_header_bytes) {
        snprintf(msg, sizeof msg,
                 "the request line and headers %s %zu bytes%s; at most %zu are accepted "
                 "(--max-header-bytes)",
                 len > 0 ? "have" : "pass", len > 0 ? head : h->max_header_bytes,
                 len > 0 ? "" : " without ending", h->max_header_bytes);
        refuse_head(c, 431, msg);
        return false;
    }
    c->head_checked = len > 0;
    return true;
}

static void on_read_checked(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->on_close.data;
    if (err || c->head_checked || c->refused || check_head(c->h, c)) {
        c->h->http1_read(sock, err);
    }
}

/* Wrap the connection's read callback if it is h2o's HTTP/1 one (not a WebSocket's, not
 * stopped while a request is handled). `accepted`: h2o's HTTP/1 layer has just taken the
 * connection, so the callback is that one. */
static void watch_reads(bd_http_t *h, conn_t *c, bool accepted)
{
    if (accepted && !h->http1_read) {
        h->http1_read = c->sock->_cb.read;
    }
    if (c->sock->_cb.read && c->sock->_cb.read == h->http1_read && !c->upgraded) {
        c->sock->_cb.read = on_read_checked;
    }
}

static void on_rewatch(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, rewatch_entry, entry);
    watch_reads(c->h, c, false);
}

static void on_head_tick(h2o_timeout_entry_t *entry)
{
    bd_http_t *h = H2O_STRUCT_FROM_MEMBER(bd_http_t, head_entry, entry);
    uint64_t now = bd_now_us();
    unsigned long long secs = (unsigned long long)(h->head_timeout_us / 1000000);
    char msg[160];
    for (bd_list_t *n = h->conn_list.next; n != &h->conn_list; n = n->next) {
        conn_t *c = BD_CONTAINER_OF(n, conn_t, link);
        if (c->upgraded || c->refused) {
            continue;
        }
        h2o_buffer_t *in = c->sock->input;
        size_t size = in ? in->size : 0;
        int phase = c->busy ? PHASE_BUSY : size == 0 ? PHASE_IDLE : PHASE_HEAD;
        if (phase == PHASE_HEAD && has_head_end(in->bytes, size)) {
            phase = PHASE_BODY;
        }
        if (phase != c->phase || (phase == PHASE_BODY && size != c->seen_size)) {
            c->phase = phase;
            c->seen_size = size;
            c->since_us = now;
        }
        bool late = now - c->since_us >= h->head_timeout_us;
        if (phase == PHASE_HEAD && size > h->max_header_bytes) {
            snprintf(msg, sizeof msg,
                     "the request line and headers pass %zu bytes without ending; at most %zu "
                     "are accepted (--max-header-bytes)",
                     h->max_header_bytes, h->max_header_bytes);
            refuse_head(c, 431, msg);
        } else if (phase == PHASE_HEAD && late) {
            snprintf(msg, sizeof msg,
                     "the request head did not arrive in full within %llu s "
                     "(--http-timeout-secs)",
                     secs);
            refuse_head(c, 408, msg);
        } else if (phase == PHASE_BODY && late) {
            snprintf(msg, sizeof msg,
                     "the request body stopped arriving: nothing came for %llu s "
                     "(--http-timeout-secs)",
                     secs);
            refuse_head(c, 408, msg);
        } else if (phase == PHASE_IDLE && late) {
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR); /* h2o then sees the end */
            c->refused = true;
        } else if (phase == PHASE_BODY) {
            reserve_body(h, &c->sock->input);
        }
    }
    if (!bd_list_empty(&h->conn_list)) {
        h2o_timeout_link(h->loop, &h->head_timeout, &h->head_entry);
    }
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    bd_http_t *h = listener->data;
    if (err) {
        return;
    }
    for (int i = 0; i < 64; i++) {
        if (h->max_connections && h->conns >= h->max_connections) {
            bd_metrics_connections_refused_add(h->metrics, 1);
            accept_pause(h);
            break;
        }
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                BD_WARN("http", "accept paused reason=\"%s\" open_connections=%zu", strerror(errno),
                        h->conns);
                bd_metrics_connections_refused_add(h->metrics, 1);
                accept_pause(h);
            }
            break;
        }
        conn_t *c = calloc(1, sizeof *c);
        if (!c) {
            h2o_socket_close(sock);
            bd_metrics_connections_refused_add(h->metrics, 1);
            break;
        }
        c->h = h;
        c->sock = sock;
        c->rewatch_entry.cb = on_rewatch;
        bd_list_push_back(&h->conn_list, &c->link);
        h->conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = c;
        if (!h2o_timeout_is_linked(&h->head_entry)) {
            h2o_timeout_link(h->loop, &h->head_timeout, &h->head_entry);
        }
        h2o_accept(&h->accept_ctx, sock);
        watch_reads(h, c, true);
    }
}

static int bind_listener(bd_http_t *h, const char *host, int port, bd_err_t *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        return bd_err_set(err, BD_EIO, "cannot resolve host '%s': %s", host, gai_strerror(gai));
    }
    int fd = -1;
    int saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0) {
            break;
        }
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        return bd_err_set(err, BD_EIO, "cannot listen on %s:%d: %s", host, port, strerror(saved));
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    h->listener = h2o_evloop_socket_create(h->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h->listener->data = h;
    h2o_socket_read_start(h->listener, on_accept);
    return 0;
}

bd_http_t *bd_http_new(struct st_h2o_evloop_t *loop, bd_repo_t *repo, bd_metrics_t *metrics,
                       bd_infer_t *infer, bd_stream_t *stream, const bd_http_opts_t *opts,
                       bd_err_t *err)
{
    bd_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    h->loop = loop;
    h->repo = repo;
    h->metrics = metrics;
    h->infer = infer;
    h->stream = stream;
    h->max_body_bytes = opts->max_body_bytes;
    h->max_connections = opts->max_connections;
    h->max_header_bytes = opts->max_header_bytes ? opts->max_header_bytes : 16384;
    h->model_control = opts->model_control;
    bd_buf_init(&h->out);
    bd_list_init(&h->watch);
    bd_list_init(&h->conn_list);
    h2o_config_init(&h->config);
    h->config.server_name = h2o_iovec_init(H2O_STRLIT("batchd"));
    h->config.max_request_entity_size = opts->max_body_bytes;
    /* Idle connections, heads and bodies that stop arriving are timed by on_head_tick. */
    uint64_t timeout_s = opts->timeout_secs > 0 ? (uint64_t)opts->timeout_secs : 10;
    h->head_timeout_us = timeout_s * 1000000;
    h->config.http1.req_timeout = BACKSTOP_TIMEOUT_MS;
    /* h2o moves a socket buffer past 32 MB into a memory-mapped file under /tmp, so every
     * large body would be written to disk as it arrives; --max-body-bytes bounds the buffer,
     * which stays in memory. */
    h2o_socket_buffer_mmap_settings.threshold = SIZE_MAX;
    /* HTTP/2 stays off: h2o 2.2.5 lacks the rapid-reset fix (CVE-2023-44487). */
    h->config.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *host =
        h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler + sizeof h);
    handler->on_req = on_req;
    *(bd_http_t **)(handler + 1) = h;
    h2o_pathconf_t *filtered[] = {path, &host->fallback_path};
    for (size_t i = 0; i < 2; i++) {
        h2o_filter_t *f = h2o_create_filter(filtered[i], sizeof *f + sizeof h);
        f->on_setup_ostream = on_setup_error_ostream;
        *(bd_http_t **)(f + 1) = h;
    }

    h2o_context_init(&h->ctx, h->loop, &h->config);
    h->ctx_init = true;
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->config.hosts;
    h2o_timeout_init(h->loop, &h->watch_timeout, WATCH_TICK_MS);
    h->watch_entry.cb = on_watch_tick;
    h2o_timeout_init(h->loop, &h->accept_timeout, ACCEPT_RETRY_MS);
    h->accept_entry.cb = on_accept_retry;
    h2o_timeout_init(h->loop, &h->head_timeout, HEAD_CHECK_MS);
    h2o_timeout_init(h->loop, &h->rewatch_timeout, 0);
    h->head_entry.cb = on_head_tick;
    h->watch_init = true;
    if (bind_listener(h, opts->host, opts->port, err) != 0) {
        bd_http_free(h);
        return NULL;
    }
    return h;
}

int bd_http_port(const bd_http_t *h)
{
    return h->port;
}

void bd_http_stop(bd_http_t *h)
{
    if (h->stopping) {
        return;
    }
    h->stopping = true;
    if (h2o_timeout_is_linked(&h->accept_entry)) {
        h2o_timeout_unlink(&h->accept_entry);
    }
    if (h->listener) {
        h2o_socket_read_stop(h->listener);
        h2o_socket_close(h->listener);
        h->listener = NULL;
    }
    /* HTTP/1 reads only this flag (no keep-alive after it). h2o_context_request_shutdown
     * would also arm HTTP/2's graceful-shutdown timer, which outlives the drain. */
    h->ctx.shutdown_requested = 1;
}

void bd_http_close_idle(bd_http_t *h)
{
    /* Idle keep-alive connections would wait for their next request (h2o drops keep-alive
     * only for requests that arrive after the shutdown request), so shrink the idle timeout
     * to zero: h2o then closes each connection once its reply has been written. */
    h->ctx.http1.req_timeout.timeout = 0;
}

size_t bd_http_connections(const bd_http_t *h)
{
    return h->conns;
}

void bd_http_free(bd_http_t *h)
{
    if (!h) {
        return;
    }
    if (h->listener) {
        h2o_socket_close(h->listener);
    }
    if (h->watch_init) {
        if (h2o_timeout_is_linked(&h->watch_entry)) {
            h2o_timeout_unlink(&h->watch_entry);
        }
        h2o_timeout_dispose(h->loop, &h->watch_timeout);
        if (h2o_timeout_is_linked(&h->accept_entry)) {
            h2o_timeout_unlink(&h->accept_entry);
        }
        h2o_timeout_dispose(h->loop, &h->accept_timeout);
        if (h2o_timeout_is_linked(&h->head_entry)) {
            h2o_timeout_unlink(&h->head_entry);
        }
        h2o_timeout_dispose(h->loop, &h->head_timeout);
        h2o_timeout_dispose(h->loop, &h->rewatch_timeout);
    }
    if (h->ctx_init) {
        h2o_context_dispose(&h->ctx);
    }
    h2o_config_dispose(&h->config);
    bd_buf_dispose(&h->out);
    free(h);
}
