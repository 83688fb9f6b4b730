/* http.c: the KServe v2 HTTP front end on libh2o-evloop (see http.h).
 *
 * One event loop on the thread that calls bd_http_run owns every connection. An infer
 * request is decoded and validated on the loop, wrapped in a job that lives in the request's
 * own arena, and submitted to its model's scheduler. The worker that runs its batch calls
 * on_done, which only posts the job to the loop through h2o's multithread queue; the loop
 * then writes the reply.
 *
 * Lifetimes (the trap in h2o: an h2o_req_t dies when its connection closes): each job keeps
 * a guard allocated in req->pool whose dispose callback clears job->req. A job whose request
 * died is freed without replying when it comes back. The guard is cleared before replying,
 * because replying may free the pool. Only the loop thread touches job->req and the guard.
 *
 * Shutdown: a signalfd in the loop sees SIGTERM/SIGINT; the listener closes (new connections
 * are refused), the repository stops accepting, and the loop keeps running until every
 * submitted job came back and its reply was written. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>
#include <h2o/multithread.h>
#include <h2o/socket/evloop.h>

#include "sched/sched.h"
#include "tensor/tensor.h"

struct bd_http {
    bd_repo_t *repo;
    bd_metrics_t *metrics;
    size_t max_body_bytes;
    int port;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_evloop_t *loop;
    h2o_socket_t *listener;
    h2o_socket_t *sigsock;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
    bd_buf_t out;    /* reply scratch, reused; loop thread only */
    size_t inflight; /* jobs submitted and not yet back; loop thread only */
    size_t conns;    /* open client connections; loop thread only */
    bool stopping;
};

typedef struct job job_t;
struct job {
    h2o_multithread_message_t msg; /* zeroed on creation, as h2o requires */
    bd_http_t *h;
    h2o_req_t *req; /* NULL once the client's request died */
    job_t **guard;  /* lives in req->pool; points back at this job */
    bd_model_t *model;
    bd_req_t *breq; /* owns this job (the job lives in its arena) */
};

/* ---- replies --------------------------------------------------------------------------- */

static int status_of(int code)
{
    switch (code) {
    case BD_EINVAL:
    case BD_ENOTFOUND:
    case BD_ETOOBIG:
    case BD_EUNSUPPORTED:
        return 400;
    case BD_ENOPATH:
        return 404;
    case BD_EMETHOD:
        return 405;
    case BD_EFULL:
    case BD_ETIMEOUT:
    case BD_ESHUTDOWN:
    case BD_EUNAVAIL:
        return 503;
    default:
        return 500;
    }
}

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
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

static void reply(h2o_req_t *req, int status, const char *content_type, const char *body,
                  size_t len)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
    h2o_send_inline(req, body, len);
}

static void reply_json(bd_http_t *h, h2o_req_t *req, int status)
{
    if (h->out.failed) {
        bd_buf_reset(&h->out);
        bd_buf_json_error(&h->out, "out of memory while writing the reply");
        status = 500;
    }
    reply(req, status, "application/json", h->out.data, h->out.len);
}

static void reply_error(bd_http_t *h, h2o_req_t *req, int code, const char *msg)
{
    bd_buf_reset(&h->out);
    bd_buf_json_error(&h->out, msg);
    reply_json(h, req, status_of(code));
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
    bd_buf_printf(b, ",\"versions\":[\"%s\"],\"platform\":\"%s\"", bd_model_version(m),
                  bd_model_platform(m));
    bd_buf_puts(b, ",\"inputs\":");
    json_ios(b, cfg, cfg->inputs, cfg->n_inputs);
    bd_buf_puts(b, ",\"outputs\":");
    json_ios(b, cfg, cfg->outputs, cfg->n_outputs);
    bd_buf_printf(b, ",\"max_batch_size\":%d}", cfg->max_batch_size);
    reply_json(h, req, 200);
}

static void server_metadata(bd_http_t *h, h2o_req_t *req)
{
    bd_buf_reset(&h->out);
    bd_buf_puts(&h->out, "{\"name\":\"batchd\",\"version\":\"" BD_VERSION
                         "\",\"extensions\":[\"binary_tensor_data\"]}");
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
    reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", h->out.data, h->out.len);
}

/* ---- infer ----------------------------------------------------------------------------- */

static void on_guard_dispose(void *p)
{
    job_t *j = *(job_t **)p;
    if (j) {
        j->req = NULL;
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

static void on_done(bd_req_t *breq, void *ctx)
{
    job_t *j = ctx;
    (void)breq;
    h2o_multithread_send_message(&j->h->receiver, &j->msg);
}

static void send_result(bd_http_t *h, job_t *j)
{
    bd_req_t *r = j->breq;
    h2o_req_t *req = j->req;
    if (r->status != 0) {
        reply_error(h, req, r->status, r->err.msg);
        return;
    }
    const bd_infer_req_t *in = &r->in;
    size_t n = in->n_outputs ? in->n_outputs : r->n_outputs;
    bd_output_enc_t enc[64];
    if (n > 64) {
        reply_error(h, req, BD_EINVAL, "a request may ask for at most 64 outputs");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!in->n_outputs) {
            enc[i] = (bd_output_enc_t){&r->outputs[i], in->binary_default};
            continue;
        }
        enc[i] = (bd_output_enc_t){NULL, in->outputs[i].binary};
        for (size_t k = 0; k < r->n_outputs; k++) {
            if (strcmp(r->outputs[k].name, in->outputs[i].name) == 0) {
                enc[i].tensor = &r->outputs[k];
            }
        }
        if (!enc[i].tensor) { /* validated at submit; kept as a broken-invariant guard */
            reply_error(h, req, BD_EINVAL, "a requested output is not produced by the model");
            return;
        }
    }
    size_t header_len = 0;
    bd_buf_reset(&h->out);
    if (bd_infer_encode(&h->out, bd_model_name(j->model), bd_model_version(j->model), in->id, enc,
                        n, &header_len) != 0 ||
        h->out.failed) {
        reply_error(h, req, BD_ENOMEM, "out of memory while writing the reply");
        return;
    }
    if (header_len == h->out.len) {
        reply_json(h, req, 200);
        return;
    }
    char num[24];
    int len = snprintf(num, sizeof num, "%zu", header_len);
    h2o_add_header_by_str(&req->pool, &req->res.headers,
                          H2O_STRLIT("inference-header-content-length"), 0,
                          "Inference-Header-Content-Length", num, (size_t)len);
    reply(req, 200, "application/octet-stream", h->out.data, h->out.len);
}

static void on_complete(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    bd_http_t *h = H2O_STRUCT_FROM_MEMBER(bd_http_t, receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        job_t *j = H2O_STRUCT_FROM_MEMBER(job_t, msg, msg);
        h->inflight--;
        if (j->req) {
            *j->guard = NULL;
            send_result(h, j);
        }
        bd_req_free(j->breq);
    }
}

static void infer(bd_http_t *h, h2o_req_t *req, bd_model_t *m)
{
    bd_err_t err = {0};
    bd_model_metrics_t *mm = bd_model_metrics(m);
    if (!bd_model_ready(m)) {
        bd_err_set(&err, BD_EUNAVAIL, "model '%s' is unavailable: %s", bd_model_name(m),
                   bd_model_reason(m));
        reply_error(h, req, err.code, err.msg);
        return;
    }
    size_t len = req->entity.len;
    size_t header_len = 0;
    if (req->entity.base == NULL || len == 0) {
        bd_metrics_request(mm, BD_OUTCOME_INVALID);
        reply_error(h, req, BD_EINVAL, "the request body is empty; expected a JSON infer request");
        return;
    }
    if (header_length(req, len, &header_len, &err) != 0) {
        bd_metrics_request(mm, BD_OUTCOME_INVALID);
        reply_error(h, req, err.code, err.msg);
        return;
    }
    /* Decoded JSON data can take up to 8 bytes per 2 body bytes; bound the arena by that. */
    size_t limit = len < (SIZE_MAX - (1u << 20)) / 8 ? len * 8 + (1u << 20) : SIZE_MAX;
    bd_req_t *r = bd_req_new(limit);
    job_t *j = r ? bd_arena_calloc(&r->arena, 1, sizeof *j) : NULL;
    const char *body = req->entity.base;
    if (j && header_len < len) {
        /* Binary tensors point into the body, which must outlive the h2o request. */
        r->body = malloc(len);
        if (r->body) {
            memcpy(r->body, req->entity.base, len);
            r->body_len = len;
            body = r->body;
        }
    }
    if (!j || (header_len < len && !r->body)) {
        bd_req_free(r);
        reply_error(h, req, BD_ENOMEM, "out of memory while reading the request");
        return;
    }
    bd_decode_limits_t limits = {0};
    int rc = bd_infer_decode(body, len, header_len, &r->arena, &limits, &r->in, &err);
    if (rc != 0) {
        bd_metrics_request(mm, BD_OUTCOME_INVALID);
        bd_req_free(r);
        reply_error(h, req, rc, err.msg);
        return;
    }
    j->h = h;
    j->req = req;
    j->model = m;
    j->breq = r;
    r->done = on_done;
    r->done_ctx = j;
    rc = bd_sched_submit(bd_model_sched(m), r, &err);
    if (rc != 0) {
        bd_req_free(r);
        reply_error(h, req, rc, err.msg);
        return;
    }
    j->guard = h2o_mem_alloc_shared(&req->pool, sizeof *j->guard, on_guard_dispose);
    *j->guard = j;
    h->inflight++;
}

/* ---- routing --------------------------------------------------------------------------- */

static void route_model(bd_http_t *h, h2o_req_t *req, h2o_iovec_t *seg, int n)
{
    /* seg: models, {m} [, versions, {v}] [, ready | infer] */
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
    } else if (n != rest) {
        reply_error(h, req, BD_ENOPATH, "unknown path; see docs/API.md for the endpoints");
        return;
    }
    bool post = strcmp(action, "infer") == 0;
    if (post ? !method_is(req, "POST") : !is_get(req)) {
        reply_error(h, req, BD_EMETHOD,
                    post ? "this endpoint takes POST" : "this endpoint takes GET");
        return;
    }
    bd_err_t err = {0};
    bd_model_t *m = NULL;
    if (bd_repo_find(h->repo, seg[1].base, seg[1].len, version.base, version.len, &m, &err)) {
        reply_error(h, req, err.code, err.msg);
        return;
    }
    if (post) {
        infer(h, req, m);
    } else if (!bd_model_ready(m)) {
        bd_err_set(&err, BD_EUNAVAIL, "model '%s' is unavailable: %s", bd_model_name(m),
                   bd_model_reason(m));
        reply_error(h, req, *action ? BD_EINVAL : BD_EUNAVAIL, err.msg);
    } else if (*action) {
        reply(req, 200, "application/json", "", 0);
    } else {
        model_metadata(h, req, m);
    }
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    bd_http_t *h = *(bd_http_t **)(self + 1);
    h2o_iovec_t seg[8];
    int n = split_path(req->path_normalized, seg, 8);
    if (n == 1 && iov_eq(seg[0], "metrics")) {
        is_get(req) ? metrics_page(h, req)
                    : reply_error(h, req, BD_EMETHOD, "this endpoint takes GET");
        return 0;
    }
    if (n < 1 || !iov_eq(seg[0], "v2")) {
        reply_error(h, req, BD_ENOPATH, "unknown path; see docs/API.md for the endpoints");
        return 0;
    }
    if (n >= 3 && iov_eq(seg[1], "models")) {
        route_model(h, req, seg + 1, n - 1);
        return 0;
    }
    bool health = n == 3 && iov_eq(seg[1], "health");
    bool live = health && iov_eq(seg[2], "live");
    bool ready = health && iov_eq(seg[2], "ready");
    if (n != 1 && !live && !ready) {
        reply_error(h, req, BD_ENOPATH, "unknown path; see docs/API.md for the endpoints");
    } else if (!is_get(req)) {
        reply_error(h, req, BD_EMETHOD, "this endpoint takes GET");
    } else if (n == 1) {
        server_metadata(h, req);
    } else if (ready && h->stopping) {
        reply_error(h, req, BD_EINVAL, "the server is shutting down");
    } else {
        reply(req, 200, "application/json", "", 0);
    }
    return 0;
}

/* ---- sockets and lifecycle ------------------------------------------------------------- */

static void on_conn_close(void *data)
{
    bd_http_t *h = data;
    h->conns--;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    bd_http_t *h = listener->data;
    if (err) {
        return;
    }
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock) {
            break;
        }
        h->conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = h;
        h2o_accept(&h->accept_ctx, sock);
    }
}

static void on_signal(h2o_socket_t *sock, const char *err)
{
    bd_http_t *h = sock->data;
    struct signalfd_siginfo si;
    (void)err;
    while (read(h2o_socket_get_fd(sock), &si, sizeof si) == (ssize_t)sizeof si) {
        if (!h->stopping) {
            BD_INFO("http", "shutdown signal=%u inflight=%zu", si.ssi_signo, h->inflight);
        }
        h->stopping = true;
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

bd_http_t *bd_http_new(bd_repo_t *repo, bd_metrics_t *metrics, const bd_http_opts_t *opts,
                       bd_err_t *err)
{
    bd_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    h->repo = repo;
    h->metrics = metrics;
    h->max_body_bytes = opts->max_body_bytes;
    bd_buf_init(&h->out);
    h2o_config_init(&h->config);
    h->config.server_name = h2o_iovec_init(H2O_STRLIT("batchd"));
    h->config.max_request_entity_size = opts->max_body_bytes;
    /* HTTP/2 stays off: h2o 2.2.5 lacks the rapid-reset fix (CVE-2023-44487). */
    h->config.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *host =
        h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler + sizeof h);
    handler->on_req = on_req;
    *(bd_http_t **)(handler + 1) = h;

    h->loop = h2o_evloop_create();
    h2o_context_init(&h->ctx, h->loop, &h->config);
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->config.hosts;
    h->queue = h2o_multithread_create_queue(h->loop);
    h2o_multithread_register_receiver(h->queue, &h->receiver, on_complete);
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

int bd_http_run(bd_http_t *h, const sigset_t *stop_signals)
{
    int sfd = signalfd(-1, stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        BD_ERROR("http", "signalfd failed: %s", strerror(errno));
        return BD_EIO;
    }
    h->sigsock = h2o_evloop_socket_create(h->loop, sfd, H2O_SOCKET_FLAG_DONT_READ);
    h->sigsock->data = h;
    h2o_socket_read_start(h->sigsock, on_signal);

    while (!h->stopping) {
        h2o_evloop_run(h->loop, INT32_MAX);
    }
    /* Drain: refuse new connections, refuse new requests, answer what is queued. */
    h2o_socket_read_stop(h->listener);
    h2o_socket_close(h->listener);
    h->listener = NULL;
    bd_repo_close(h->repo);
    /* HTTP/1 reads only this flag (no keep-alive after it). h2o_context_request_shutdown
     * would also arm HTTP/2's graceful-shutdown timer, which outlives the drain. */
    h->ctx.shutdown_requested = 1;
    while (h->inflight > 0) {
        h2o_evloop_run(h->loop, 100);
    }
    /* Every reply is queued. Idle keep-alive connections would wait for their next request
     * (h2o drops keep-alive only for requests that arrive after the shutdown request), so
     * shrink the idle timeout to zero: h2o then closes each connection once its reply has
     * been written, and the context can be disposed with no connection left. */
    h->ctx.http1.req_timeout.timeout = 0;
    uint64_t until = bd_now_us() + 5000000;
    while (h->conns > 0 && bd_now_us() < until) {
        h2o_evloop_run(h->loop, 10);
    }
    BD_INFO("http", "drained; exiting open_connections=%zu", h->conns);
    return 0;
}

void bd_http_free(bd_http_t *h)
{
    if (!h) {
        return;
    }
    if (h->listener) {
        h2o_socket_close(h->listener);
    }
    if (h->sigsock) {
        h2o_socket_read_stop(h->sigsock);
        h2o_socket_close(h->sigsock);
    }
    if (h->queue) {
        h2o_multithread_unregister_receiver(h->queue, &h->receiver);
    }
    h2o_context_dispose(&h->ctx);
    if (h->queue) {
        h2o_multithread_destroy_queue(h->queue);
    }
    if (h->loop) {
        /* Run once more so closed sockets are reaped before the loop goes away. */
        h2o_evloop_run(h->loop, 0);
        h2o_evloop_destroy(h->loop);
    }
    h2o_config_dispose(&h->config);
    bd_buf_dispose(&h->out);
    free(h);
}
