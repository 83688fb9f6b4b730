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
 * on end-of-file or a reset cancels the call. A cancelled job is answered with a short error,
 * and a job that was already running when its client left with its result, which no one reads
 * unless the client only shut its writing half; writing it lets h2o see a dead socket and close
 * the connection. A job whose h2o request died (the guard fired) is cancelled too.
 *
 * Model loads (POST .../load) wait for the repository's loader thread; the repository posts
 * the result to the loop's mailbox and on_loaded answers the waiting request (guarded like
 * a job).
 *
 * TLS (--tls-cert/--tls-key; serve builds the context and lends it): h2o's socket layer does
 * the handshake and the records, so the routes, the handlers and the WebSocket streams see
 * plain bytes in sock->input as before. The handshake is started here (on_accept) rather than
 * by h2o_accept, so that a plain-HTTP request on the TLS port gets an unencrypted 400 that says
 * so (bodiless for a HEAD: on_first_bytes looks before the handshake starts), so that a request
 * that came with the handshake is judged by check_head before h2o's HTTP/1 takes the connection
 * (on_handshake), and so that the drain can close connections still in their handshake. It is
 * bounded by --http-timeout-secs (h2o's handshake timeout list); a failed one closes only its
 * connection. Three places use the raw socket past h2o and change under TLS: the hang-up watch (a
 * leaving TLS client's last bytes are records, e.g. a close_notify, which a peek cannot read, so it
 * asks the kernel whether the peer shut its side: poll POLLRDHUP); refuse_head and refuse_body
 * (their 400/408/431 and early 401/413/429/503 go through TLS with h2o_socket_write, then the
 * socket is shut down under h2o's HTTP/1, which ends it without a close_notify; a connection whose
 * first head on_handshake refused never reaches h2o's HTTP/1 and is closed with h2o_socket_close,
 * close_notify first); and the 400 for plain HTTP (raw_reply, sent with send() before any TLS
 * exists). The WebSocket close (stream/) shuts the socket for writing only without TLS.
 *
 * Threads: the event-loop thread only. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>
#include <h2o/http1.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sched/sched.h"
#include "tensor/tensor.h"
#include "zip/zip.h"

struct bd_http {
    bd_repo_t *repo;
    bd_metrics_t *metrics;
    bd_infer_t *infer;
    bd_stream_t *stream;
    size_t max_body_bytes;
    bd_budget_t *budget; /* request bytes held, the connections' part counted by count_buffer */
    int port;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    SSL_CTX *ssl_ctx;          /* --tls-cert/--tls-key (borrowed); NULL: plain HTTP */
    const char *allow_origins; /* --allow-origin (borrowed); NULL: none */
    h2o_evloop_t *loop;
    h2o_socket_t *listener;
    bd_model_control_t model_control;
    bool strict_readiness; /* --strict-readiness */
    bd_buf_t out; /* reply scratch, reused (up to SCRATCH_KEEP bytes kept); loop thread only */
    /* compressed-reply scratch, likewise */
    bd_buf_t zout;
    size_t conns; /* open client connections; loop thread only */
    size_t max_connections;
    size_t max_header_bytes;
    uint64_t head_timeout_us; /* --http-timeout-secs: idle, head and body timeouts */
    h2o_socket_cb http1_read; /* h2o's HTTP/1 read callback, which on_read_checked wraps */
    h2o_timeout_t rewatch_timeout;
    bool accept_paused;
    bool refusing; /* a pause was counted; its retries are not, until a connection is taken */
    /* Connections closed from their head (refuse_head): logged at most once a second, with
     * how many were not (clients cause them, and one client could fill the log). */
    uint64_t refuse_logged_us;
    uint64_t refuse_unlogged;
    h2o_timeout_t accept_timeout;
    h2o_timeout_entry_t accept_entry;
    /* open connections, for the unfinished-head check; loop thread only */
    bd_list_t conn_list; /* conn_t.link */
    bd_list_t lingering; /* linger_t.link: closed after h2o's own error, body still coming */
    h2o_timeout_t head_timeout;
    h2o_timeout_entry_t head_entry;
    bool stopping;
    bool closing_idle; /* bd_http_close_idle: the drain closes connections between requests */
    bool ctx_init;
    /* hang-up watch; loop thread only */
    bd_list_t watch; /* job_t.wlink, in submit order */
    h2o_timeout_t watch_timeout;
    h2o_timeout_entry_t watch_entry;
    bool watch_init;
    /* API keys and rate limits (borrowed; NULL: none), and who sent the request being routed
     * (set by admit in on_req, read by the handlers it calls); loop thread only */
    bd_gate_t *gate;
    bd_gate_who_t who;
};

/* The watch: a job's socket is first peeked WATCH_INTERVAL_US after submit, then every
 * WATCH_INTERVAL_US; at most WATCH_BUDGET peeks per tick bound the loop's cost under
 * overload (thousands queued): detection then takes a few ticks longer. */
#define WATCH_TICK_MS 10
#define WATCH_INTERVAL_US 10000
#define WATCH_BUDGET 512
#define ACCEPT_RETRY_MS 100
#define MAX_URL_BYTES 8192
#define URL_TOO_LONG "the URL has %zu bytes; at most %d are accepted" /* its 414 */
#define MAX_HEADERS 64              /* header fields; h2o's parser stops at 100 with a plain 400 */
#define HEAD_CHECK_MS 100           /* how often connections between requests are looked at */
#define DRAIN_STALL_US 1000000      /* draining: a request that has not grown for this long */
#define BACKSTOP_TIMEOUT_MS 3600000 /* h2o's own request timeout, under on_head_tick's */
#define RESERVE_MIN_BYTES (64u * 1024)  /* bodies from this size get their buffer at once */
#define RESERVE_HEAD_BYTES (16u * 1024) /* room for the head beside a body reserved ahead */
#define SCRATCH_KEEP (1u << 20)         /* reply scratch bytes kept between replies */

/* A compressed body that http.c inflates itself (the repository's JSON parameters; infer
 * bodies are infer's) may inflate to this many bytes, and be this many bytes before: it is
 * inflated on the loop, and the input bounds the work where the output cannot (empty stored
 * blocks inflate to nothing). */
#define LOOP_INFLATE_BYTES (256u * 1024)
#define LOOP_INFLATE_IN_BYTES (64u * 1024)

/* One accepted connection, until it closes. */
typedef struct {
    bd_list_t link; /* on h->conn_list */
    bd_http_t *h;
    h2o_socket_t *sock;
    bool upgraded;   /* its request asked for a WebSocket: the buffer holds frames, not a head */
    bool refused;    /* answered 431, 408 or early (early_refusal), or idle too long: closing */
    int linger_fd;   /* h2o answers with its own error and closes: its body is drained (linger) */
    bool discarding; /* after an early refusal: its body is read and dropped (on_read_discard) */
    size_t discard_left;     /* bytes of that body still to come */
    uint64_t discard_end_us; /* ...read for at most --http-timeout-secs from the refusal */
    bool token_taken; /* early_refusal took this head's --rate-limit token: rate_ok does not */
    size_t buffered;  /* its part of h->budget->used */
    size_t promised;  /* room its admitted body may take (a chunked one's is unknown) */
    size_t replying;  /* the body of the reply h2o holds until it is written (or the end) */
    /* Set while h2o holds a request of ours (from the handler, or from the response filter
     * for h2o's own answers, until the request is disposed); lives in the request's pool:
     * busy[0] is this conn (NULL once it closed), busy[1] the request. */
    void **busy;
    bool head_checked;                 /* check_head passed its head; until busy ends */
    size_t head_len;                   /* that head's bytes */
    int hosts;                         /* that head's Host fields */
    bool chunked;                      /* that head had Transfer-Encoding: chunked */
    h2o_timeout_entry_t rewatch_entry; /* on h->rewatch_timeout: watch_reads after a reply */
    size_t last_body;                  /* the last request's body bytes (reserve_next) */
    int phase;                         /* what on_head_tick last saw: PHASE_* */
    size_t seen_size;                  /* the input buffer's size then */
    uint64_t since_us;                 /* when the phase began (a body: when it last grew) */
    char *held;      /* a pipelined head to refuse, kept from h2o until on_rewatch */
    size_t held_len; /* its bytes */
    /* TLS only (--tls-cert): */
    /* h2o's HTTP/1 does not have it yet: its handshake has not ended, or a head that came with
     * the handshake is being refused (on_handshake); handshake_entry is linked meanwhile */
    bool handshaking;
    h2o_socket_cb reader;    /* refuse_head: h2o's read callback, restored after the answer */
    bool plain_head;         /* its first bytes were "HEAD ": a plain-HTTP HEAD (on_handshake) */
    struct timeval accepted; /* when accepted, for h2o's HTTP/1 connection */
    h2o_timeout_entry_t handshake_entry; /* on h->ctx.handshake_timeout while handshaking */
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

static void accept_stream(bd_http_t *h, h2o_req_t *req, const char *model, size_t model_len,
                          const char *version, size_t version_len);
static void on_conn_close(void *data);
static void count_buffer(conn_t *c);

/* The connection of an HTTP/1 request; NULL when h2o does not say. */
static conn_t *conn_of(h2o_req_t *req)
{
    h2o_socket_t *sock = req_socket(req);
    return sock && sock->on_close.cb == on_conn_close ? sock->on_close.data : NULL;
}

/* ---- replies --------------------------------------------------------------------------- */

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
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
    if (len > 0) { /* an empty body (health, readiness, load) has no media type */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
    }
}

/* ---- content codings --------------------------------------------------------------------
 * Replies over BD_ZIP_MIN_BYTES are compressed when the client's Accept-Encoding takes gzip or
 * deflate: here on the loop for what is encoded here, up to SCRATCH_KEEP bytes (metadata,
 * statistics, metrics, infer replies small enough to be encoded on the loop; see loop_coding
 * and reply_buf), and on infer's decode thread for infer replies large enough to be encoded
 * there. Request bodies with Content-Encoding gzip or deflate are inflated by infer (infer
 * requests: a little on the loop, the rest off it) or here (the repository's small JSON
 * bodies, at most LOOP_INFLATE_BYTES from at most LOOP_INFLATE_IN_BYTES). h2o 2.2.5's
 * compress filter is not used: it has no deflate, runs on the loop only, and could not take
 * a reply that the decode thread compressed already. */

/* The values of every `token` header of the request joined with ", " (in the request's pool
 * when there are several); base NULL when there is none. */
static h2o_iovec_t header_values(h2o_req_t *req, const h2o_token_t *token)
{
    ssize_t i = h2o_find_header(&req->headers, token, -1);
    if (i < 0) {
        return h2o_iovec_init(NULL, 0);
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    while ((i = h2o_find_header(&req->headers, token, i)) >= 0) {
        v = h2o_concat(&req->pool, v, h2o_iovec_init(H2O_STRLIT(", ")),
                       req->headers.entries[i].value);
    }
    return v;
}

/* The coding the client takes for a reply; identity without Accept-Encoding. */
static bd_zip_coding_t reply_coding(h2o_req_t *req)
{
    h2o_iovec_t v = header_values(req, H2O_TOKEN_ACCEPT_ENCODING);
    return v.base ? bd_zip_accept(v.base, v.len) : BD_ZIP_IDENTITY;
}

/* The coding a reply of `len` bytes encoded on the loop goes out in: compressed only over
 * BD_ZIP_MIN_BYTES (smaller ones gain nothing) and up to SCRATCH_KEEP (a longer deflate would
 * hold the loop; infer's large replies are compressed on its decode thread instead). */
static bd_zip_coding_t loop_coding(h2o_req_t *req, size_t len)
{
    return len > BD_ZIP_MIN_BYTES && len <= SCRATCH_KEEP ? reply_coding(req) : BD_ZIP_IDENTITY;
}

/* The reply's body is in `coding` (RFC 9110 §8.4) and was `plain_len` bytes before. Vary
 * (§12.5.5) goes on every reply whose representation could depend on Accept-Encoding, i.e.
 * every one over BD_ZIP_MIN_BYTES, compressed or not: a cache must neither hand a compressed
 * reply to a client that did not ask for it nor an identity one to every client. */
static void mark_coded(h2o_req_t *req, bd_zip_coding_t coding, size_t plain_len)
{
    if (coding != BD_ZIP_IDENTITY) {
        const char *name = bd_zip_name(coding);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_ENCODING, NULL, name,
                       strlen(name));
    }
    if (coding != BD_ZIP_IDENTITY || plain_len > BD_ZIP_MIN_BYTES) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL,
                       H2O_STRLIT("Accept-Encoding"));
    }
}

/* The request body's coding (Content-Encoding); false after replying 415 when it is not one
 * the server takes. */
static bool body_coding(bd_http_t *h, h2o_req_t *req, bd_zip_coding_t *coding);

/* Send a copy of body (h2o copies it into the request's pool) as it is. An empty body is
 * sent as no buffer at all: h2o 2.2.5's writev leaves a trailing empty buffer counted as
 * unwritten, waits for the socket to turn writable and writes it then, which cost a health
 * check three more syscalls (writev and two epoll_ctl) and a loop turn. */
static void reply_plain(bd_http_t *h, h2o_req_t *req, int status, const char *content_type,
                        const char *body, size_t len)
{
    static h2o_generator_t no_body = {NULL, NULL};
    reply_head(h, req, status, content_type, len);
    if (len > 0) {
        h2o_send_inline(req, body, len);
        return;
    }
    h2o_start_response(req, &no_body);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

/* Send a copy of body, compressed when loop_coding says so and the client takes gzip or
 * deflate (out of memory, as it is). */
static void reply(bd_http_t *h, h2o_req_t *req, int status, const char *content_type,
                  const char *body, size_t len)
{
    bd_zip_coding_t coding = loop_coding(req, len);
    size_t plain_len = len;
    bd_buf_reset(&h->zout);
    if (coding != BD_ZIP_IDENTITY && bd_zip_deflate(coding, body, len, &h->zout, NULL) == 0) {
        body = h->zout.data;
        len = h->zout.len;
    } else {
        coding = BD_ZIP_IDENTITY;
    }
    mark_coded(req, coding, plain_len);
    reply_plain(h, req, status, content_type, body, len);
    bd_buf_trim(&h->zout, SCRATCH_KEEP);
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

/* Send 200 with the contents of `body`, which is left empty. `coded`: the body is in that
 * coding already (compressed on the decode thread); else it is compressed here as reply()
 * does, up to SCRATCH_KEEP bytes: a longer one was encoded on the loop because the client
 * asked for no compression (infer sends those to its decode thread), or it is a plain-image
 * reply, and goes out as it is rather than hold the loop for a multi-megabyte deflate. */
static void reply_buf(bd_http_t *h, h2o_req_t *req, const char *content_type, bd_buf_t *body,
                      bd_zip_coding_t coded)
{
    if (coded != BD_ZIP_IDENTITY) {
        mark_coded(req, coded, 0);
    } else if (body->len > SCRATCH_KEEP) {
        mark_coded(req, BD_ZIP_IDENTITY, body->len); /* Vary: it could have been compressed */
    }
    if (body->len <= SCRATCH_KEEP) {
        if (coded != BD_ZIP_IDENTITY) {
            reply_plain(h, req, 200, content_type, body->data, body->len);
        } else {
            reply(h, req, 200, content_type, body->data, body->len);
        }
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

static void retry_after(h2o_req_t *req, unsigned long long secs)
{
    char num[24];
    int len = snprintf(num, sizeof num, "%llu", secs);
    h2o_iovec_t v = h2o_strdup(&req->pool, num, (size_t)len);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, v.base, v.len);
}

static void reply_error(bd_http_t *h, h2o_req_t *req, int code, const char *msg)
{
    if (code == BD_EFULL) {
        /* A full queue, or --max-decode-bytes in use: gone in a moment (RFC 9110 §10.2.3). */
        retry_after(req, 1);
    }
    bd_buf_reset(&h->out);
    bd_buf_json_error(&h->out, msg);
    reply_json(h, req, bd_infer_http_status(code));
}

/* An error from the infer layer, with Retry-After where it says when the condition ends (a
 * circuit breaker's cool-down). */
static void reply_failure(bd_http_t *h, h2o_req_t *req, const bd_err_t *err)
{
    if (err->retry_after_s > 0 && err->code != BD_EFULL) {
        retry_after(req, err->retry_after_s);
    }
    reply_error(h, req, err->code, err->msg);
}

static bool body_coding(bd_http_t *h, h2o_req_t *req, bd_zip_coding_t *coding)
{
    h2o_iovec_t v = header_values(req, H2O_TOKEN_CONTENT_ENCODING);
    bd_err_t err = {0};
    *coding = BD_ZIP_IDENTITY;
    if (!v.base || bd_zip_content_encoding(v.base, v.len, coding, &err) == 0) {
        return true;
    }
    /* RFC 9110 §15.5.16: a 415 for a content coding says which ones would have been taken. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_ENCODING, NULL,
                   H2O_STRLIT("gzip, deflate"));
    reply_error(h, req, err.code, err.msg);
    return false;
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

/* The 413's sentence, whoever answers it (h2o, request_head_ok, early_refusal). */
static void too_large(const bd_http_t *h, char *msg, size_t cap)
{
    snprintf(msg, cap,
             "the request body is larger than the server's limit of %zu bytes (--max-body-bytes)",
             h->max_body_bytes);
}

static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
                            h2o_send_state_t state)
{
    json_error_ostream_t *o = (json_error_ostream_t *)self;
    (void)bufs;
    (void)n;
    bool last = !h2o_send_state_is_in_progress(state);
    h2o_ostream_send_next(self, req, last ? &o->body : NULL, last ? 1 : 0, state);
}

static void hold_refused(conn_t *c, const h2o_req_t *req);

static void on_busy_disposed(void *p)
{
    void **busy = p;
    conn_t *c = busy[0];
    if (c) {
        hold_refused(c, busy[1]); /* before h2o parses what is pipelined behind the request */
        c->busy = NULL;
        c->head_checked = false;
        c->token_taken = false;
        c->replying = 0; /* written, or the connection is gone */
        count_buffer(c);
        /* A request was served: on_head_tick starts the idle time afresh at its next look, even
         * when the request came and went between two looks and it never saw it busy. */
        c->phase = PHASE_BUSY;
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
    conn_t *c = conn_of(req);
    if (c && !c->busy) {
        c->busy = h2o_mem_alloc_shared(&req->pool, 2 * sizeof *c->busy, on_busy_disposed);
        c->busy[0] = c;
        c->busy[1] = req;
        c->last_body = req->entity.base ? req->entity.len : 0;
        c->promised = 0; /* the body is in: what the buffer holds is what counts */
        count_buffer(c);
    }
}

/* "Server: batchd" as the first of a reply's header fields. h2o writes its server_name (left
 * empty, see bd_http_new) right after Content-Length with a sprintf of its own, 1.4K
 * instructions a reply; a first ordinary field puts the same bytes in the same place. */
static h2o_iovec_t server_field = {H2O_STRLIT("Server")};

static void add_server(h2o_req_t *req)
{
    h2o_headers_t *hs = &req->res.headers;
    if (hs->size > 0 && hs->entries[0].name == &server_field) {
        return;
    }
    h2o_vector_reserve(&req->pool, hs, hs->size + 1);
    memmove(hs->entries + 1, hs->entries, hs->size * sizeof *hs->entries);
    hs->entries[0] = (h2o_header_t){&server_field, NULL, h2o_iovec_init(H2O_STRLIT("batchd"))};
    hs->size++;
}

/* Every reply that passes h2o's filters, ours and h2o's own errors: the Server field, and
 * h2o's plain-text errors become JSON ones. */
static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    bd_http_t *h = *(bd_http_t **)(self + 1);
    mark_busy(req);
    add_server(req);
    conn_t *c = conn_of(req);
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    h2o_iovec_t *type = ct >= 0 ? &req->res.headers.entries[ct].value : NULL;
    if (req->res.status >= 400 && type &&
        h2o_memis(type->base, type->len, H2O_STRLIT("text/plain; charset=utf-8"))) {
        if (c && c->linger_fd < 0 && !req->http1_is_persistent && !h->stopping) {
            c->linger_fd = dup(h2o_socket_get_fd(c->sock)); /* h2o closes its own first */
        }
        char msg[160];
        if (req->res.status == 413) {
            too_large(h, msg, sizeof msg);
            req->res.reason = reason_of(413); /* h2o's chunked path says "Request Entity ..." */
        } else if (req->res.status == 400 && c && c->chunked) {
            snprintf(msg, sizeof msg,
                     "the request is not valid HTTP/1.1: its chunked body is malformed (each "
                     "chunk is a hex size, CRLF, that many bytes, CRLF; a 0 size ends it)");
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
    if (c && req->res.content_length != SIZE_MAX) {
        /* The reply's body is held until written; a client that does not read keeps it. */
        c->replying = req->res.content_length;
        count_buffer(c);
    }
    h2o_setup_next_ostream(req, slot);
}

/* ---- small parsing helpers ------------------------------------------------------------- */

static bool iov_eq(h2o_iovec_t v, const char *s)
{
    size_t n = strlen(s);
    return v.len == n && memcmp(v.base, s, n) == 0;
}

/* Split "/a/b/c" into segments; returns the count, or -1 when there are more than `max`.
 * `path` has no query: h2o's normalised path ends before it, so a '?' here was a %3F, part of
 * a segment (a model named "a?b"). */
static int split_path(h2o_iovec_t path, h2o_iovec_t *seg, int max)
{
    int n = 0;
    size_t i = 0;
    while (i < path.len) {
        if (path.base[i] == '/') {
            i++;
        }
        if (i == path.len) {
            break; /* a trailing '/' */
        }
        if (path.base[i] == '/') {
            return -1; /* an empty segment ("/v2/models//infer") names nothing */
        }
        size_t start = i;
        while (i < path.len && path.base[i] != '/') {
            i++;
        }
        if (n == max) {
            return -1;
        }
        seg[n++] = h2o_iovec_init(path.base + start, i - start);
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

/* The methods of RFC 9110 §9 and PATCH: on a path that takes others they are a 405 with Allow;
 * any other token is a method the server implements nowhere, a 501 (§15.6.2). */
static bool method_known(h2o_req_t *req)
{
    static const char *const known[] = {"GET",     "HEAD",  "POST",    "PUT",  "DELETE",
                                        "CONNECT", "TRACE", "OPTIONS", "PATCH"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (method_is(req, known[i])) {
            return true;
        }
    }
    return false;
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
    bd_buf_printf(b, ",\"max_batch_size\":%d", cfg->max_batch_size);
    /* Where it runs (the backend filled cfg->placement at load); node counts when ONNX
     * Runtime reports placement (1.24+). Names and numbers only: no escaping needed. */
    if (cfg->placement.device[0]) {
        bd_buf_printf(b, ",\"device\":\"%s\",\"execution_provider\":\"%s\"", cfg->placement.device,
                      cfg->placement.provider);
    }
    if (cfg->placement.device[0] && cfg->placement.nodes >= 0) {
        bd_buf_printf(b, ",\"graph_nodes\":%d,\"graph_nodes_on_cpu\":%d", cfg->placement.nodes,
                      cfg->placement.cpu_nodes);
    }
    bd_buf_putc(b, '}');
    reply_json(h, req, 200);
}

/* Triton's model-config enum spelling of a datatype (TYPE_STRING is BYTES). */
static const char *config_type(bd_dtype_t dt)
{
    switch (dt) {
    case BD_DT_BOOL:
        return "TYPE_BOOL";
    case BD_DT_UINT8:
        return "TYPE_UINT8";
    case BD_DT_UINT16:
        return "TYPE_UINT16";
    case BD_DT_UINT32:
        return "TYPE_UINT32";
    case BD_DT_UINT64:
        return "TYPE_UINT64";
    case BD_DT_INT8:
        return "TYPE_INT8";
    case BD_DT_INT16:
        return "TYPE_INT16";
    case BD_DT_INT32:
        return "TYPE_INT32";
    case BD_DT_INT64:
        return "TYPE_INT64";
    case BD_DT_FP16:
        return "TYPE_FP16";
    case BD_DT_FP32:
        return "TYPE_FP32";
    case BD_DT_FP64:
        return "TYPE_FP64";
    case BD_DT_BYTES:
        return "TYPE_STRING";
    default:
        return "TYPE_INVALID";
    }
}

/* model_config.proto's ModelInput/ModelOutput: dims without the batch dim when batching, as
 * in config.json; an image input is what clients send (one encoded image per row), as in
 * the metadata. */
static void config_ios(bd_buf_t *b, const bd_model_config_t *cfg, const bd_io_t *io, size_t n)
{
    bd_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        bd_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        bd_buf_json_string(b, io[i].name, strlen(io[i].name));
        if (io == cfg->inputs && cfg->image.enabled && strcmp(io[i].name, cfg->image.input) == 0) {
            bd_buf_puts(b, cfg->max_batch_size > 0
                               ? ",\"data_type\":\"TYPE_STRING\",\"dims\":[]}"
                               : ",\"data_type\":\"TYPE_STRING\",\"dims\":[1]}");
            continue;
        }
        bd_buf_printf(b, ",\"data_type\":\"%s\",\"dims\":[", config_type(io[i].dtype));
        for (int d = 0; d < io[i].dims.ndim; d++) {
            bd_buf_printf(b, "%s%lld", d ? "," : "", (long long)io[i].dims.dims[d]);
        }
        bd_buf_puts(b, "]}");
    }
    bd_buf_putc(b, ']');
}

/* model_config.proto's ModelQueuePolicy: a request whose deadline passes is refused (503). */
static void config_queue_policy(bd_buf_t *b, size_t max_queue_size, uint64_t timeout_us)
{
    bd_buf_printf(b,
                  "{\"timeout_action\":\"REJECT\",\"default_timeout_microseconds\":%llu,"
                  "\"allow_timeout_override\":true,\"max_queue_size\":%zu}",
                  (unsigned long long)timeout_us, max_queue_size);
}

/* GET /v2/models/{m}[/versions/{v}]/config: the version's configuration in Triton's
 * model-config JSON (model_config.proto's field names, numbers as numbers, as Triton's HTTP
 * endpoint writes them), so tritonclient's get_model_config works. What batchd has no
 * equivalent for is left out. docs/API.md lists the fields. */
static void model_config(bd_http_t *h, h2o_req_t *req, bd_model_t *m)
{
    const bd_config_t *full = bd_model_full_config(m);
    if (!full) {
        reply_error(h, req, BD_EUNAVAIL, "the model has no configuration");
        return;
    }
    const bd_model_config_t *cfg = &full->model;
    const bd_sched_policy_t *pol = &full->sched;
    const bd_version_policy_t *vp = &full->version_policy;
    bd_buf_t *b = &h->out;
    bd_buf_reset(b);
    bd_buf_puts(b, "{\"name\":");
    bd_buf_json_string(b, bd_model_name(m), strlen(bd_model_name(m)));
    bd_buf_printf(b, ",\"platform\":\"%s\",\"backend\":", bd_model_platform(m));
    bd_buf_json_string(b, cfg->backend, strlen(cfg->backend));
    if (vp->kind == BD_VERSIONS_ALL) {
        bd_buf_puts(b, ",\"version_policy\":{\"all\":{}}");
    } else if (vp->kind == BD_VERSIONS_SPECIFIC) {
        bd_buf_puts(b, ",\"version_policy\":{\"specific\":{\"versions\":[");
        for (size_t i = 0; i < vp->n_versions; i++) {
            bd_buf_printf(b, "%s%lld", i ? "," : "", (long long)vp->versions[i]);
        }
        bd_buf_puts(b, "]}}");
    } else {
        bd_buf_printf(b, ",\"version_policy\":{\"latest\":{\"num_versions\":%d}}",
                      vp->latest > 0 ? vp->latest : 1);
    }
    bd_buf_printf(b, ",\"max_batch_size\":%d,\"input\":", cfg->max_batch_size);
    config_ios(b, cfg, cfg->inputs, cfg->n_inputs);
    bd_buf_puts(b, ",\"output\":");
    config_ios(b, cfg, cfg->outputs, cfg->n_outputs);
    if (pol->dynamic_batching && cfg->max_batch_size > 0) { /* none without batching */
        bd_buf_puts(b, ",\"dynamic_batching\":{\"preferred_batch_size\":[");
        for (size_t i = 0; i < pol->n_preferred_batch_sizes; i++) {
            bd_buf_printf(b, "%s%d", i ? "," : "", pol->preferred_batch_sizes[i]);
        }
        bd_buf_putc(b, ']');
        if (!pol->delay_auto) { /* "auto" has no Triton equivalent: left out */
            bd_buf_printf(b, ",\"max_queue_delay_microseconds\":%llu",
                          (unsigned long long)pol->max_queue_delay_us);
        }
        int levels = pol->priority_levels;
        levels = levels >= 1 && levels <= BD_MAX_PRIORITY_LEVELS ? levels : 1;
        size_t qsize = pol->max_queue_size ? pol->max_queue_size : 1024;
        bd_buf_printf(b, ",\"priority_levels\":%d,\"default_priority_level\":%d", levels,
                      pol->default_priority_level);
        bd_buf_puts(b, ",\"default_queue_policy\":");
        config_queue_policy(b, qsize, pol->default_timeout_us);
        /* Levels whose own policy differs from the default one. */
        bd_buf_puts(b, ",\"priority_queue_policy\":{");
        bool first = true;
        for (int i = 0; i < levels; i++) {
            const bd_priority_level_t *l = &pol->levels[i];
            size_t lq = l->max_queue_size ? l->max_queue_size : qsize;
            if (lq == qsize && l->default_timeout_us == pol->default_timeout_us) {
                continue;
            }
            bd_buf_printf(b, "%s\"%d\":", first ? "" : ",", i + 1);
            config_queue_policy(b, lq, l->default_timeout_us);
            first = false;
        }
        bd_buf_puts(b, "}}");
    }
    const char *dev = cfg->device; /* the sim backend runs on the CPU whatever it says */
    if (dev && strncmp(dev, "cuda:", 5) == 0 && strcmp(cfg->backend, "sim") != 0) {
        bd_buf_printf(b,
                      ",\"instance_group\":[{\"count\":%d,\"kind\":\"KIND_GPU\","
                      "\"gpus\":[%d]}]",
                      cfg->instances, atoi(dev + 5));
    } else {
        bd_buf_printf(b, ",\"instance_group\":[{\"count\":%d,\"kind\":\"KIND_CPU\"}]",
                      cfg->instances);
    }
    bd_buf_putc(b, '}');
    reply_json(h, req, 200);
}

/* GET /v2/health/ready (the drain answered 503 before this, in on_req). Relaxed: 200 while
 * the server runs. Strict: 200 only when bd_repo_ready says so; otherwise 503 with
 * {"error": "not ready: <why>", "models": [index rows of what is not ready]}. */
static void health_ready(bd_http_t *h, h2o_req_t *req)
{
    if (!h->strict_readiness) {
        reply(h, req, 200, "application/json", "", 0);
        return;
    }
    bd_buf_t rows;
    bd_buf_init(&rows);
    char why[480] = "";
    if (bd_repo_ready(h->repo, &rows, why, sizeof why)) {
        reply(h, req, 200, "application/json", "", 0);
    } else {
        char msg[sizeof why + 16];
        snprintf(msg, sizeof msg, "not ready: %s", why);
        bd_buf_reset(&h->out);
        bd_buf_puts(&h->out, "{\"error\":");
        bd_buf_json_string(&h->out, msg, strlen(msg));
        bd_buf_puts(&h->out, ",\"models\":");
        if (!rows.failed) {
            bd_buf_append(&h->out, rows.data, rows.len);
        }
        bd_buf_putc(&h->out, '}');
        h->out.failed = h->out.failed || rows.failed;
        reply_json(h, req, 503);
    }
    bd_buf_dispose(&rows);
}

static void server_metadata(bd_http_t *h, h2o_req_t *req)
{
    /* The repository extension's index answers in every --model-control mode (load and
     * unload only in explicit mode, as Triton's); schedule_policy is the request parameters
     * priority and timeout. */
    bd_buf_reset(&h->out);
    bd_buf_puts(&h->out, "{\"name\":\"batchd\",\"version\":\"" BD_VERSION
                         "\",\"extensions\":[\"binary_tensor_data\",\"classification\","
                         "\"model_configuration\",\"model_repository\",\"schedule_policy\","
                         "\"statistics\"]}");
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

/* ---- API keys and rate limits (gate/) ------------------------------------------------------
 * With --api-keys every path needs a key but the open ones below; admit runs on every request
 * before routing and answers 401 or 403 itself. The key comes from `Authorization: Bearer`,
 * or on a WebSocket upgrade also from ?api_key= (browsers cannot set headers there). Keys are
 * never logged (nothing here logs a request line or a header). --rate-limit takes a token from
 * the caller's bucket (its key's, else its address's) for each infer request. A request with
 * a body that admit would refuse 401, or rate_ok 429, is answered earlier, from its head
 * (early_refusal), so that its body is dropped rather than buffered. */

/* Served without a key: health, a model's readiness, and /metrics unless --metrics-auth. */
static bool open_path(bd_http_t *h, const h2o_iovec_t *seg, int n)
{
    if (n == 1 && iov_eq(seg[0], "metrics")) {
        return !bd_gate_metrics_auth(h->gate);
    }
    if (n < 3 || !iov_eq(seg[0], "v2")) {
        return false;
    }
    if (n == 3 && iov_eq(seg[1], "health")) {
        return true;
    }
    return iov_eq(seg[1], "models") && iov_eq(seg[n - 1], "ready") &&
           (n == 4 || (n == 6 && iov_eq(seg[3], "versions")));
}

/* The WebSocket upgrade paths, where ?api_key= is taken too. */
static bool stream_path(const h2o_iovec_t *seg, int n)
{
    if (n < 2 || !iov_eq(seg[0], "v2")) {
        return false;
    }
    if (n == 2) {
        return iov_eq(seg[1], "stream");
    }
    return iov_eq(seg[1], "models") && iov_eq(seg[n - 1], "stream") &&
           (n == 4 || (n == 6 && iov_eq(seg[3], "versions")));
}

/* Repository load and unload: `admin` keys only. */
static bool admin_path(const h2o_iovec_t *seg, int n)
{
    return n == 5 && iov_eq(seg[0], "v2") && iov_eq(seg[1], "repository") &&
           iov_eq(seg[2], "models") && (iov_eq(seg[4], "load") || iov_eq(seg[4], "unload"));
}

/* WWW-Authenticate with a 401 (RFC 6750 §3: error="invalid_token" when a key came but is not
 * valid), and with the 403 of a key whose role does not reach the endpoint (§3.1). */
#define AUTH_PLAIN "Bearer realm=\"batchd\""
#define AUTH_INVALID "Bearer realm=\"batchd\", error=\"invalid_token\""
#define AUTH_SCOPE "Bearer realm=\"batchd\", error=\"insufficient_scope\""
static const char MSG_NEED_KEY[] =
    "this endpoint needs an API key: send 'Authorization: Bearer <key>'";
static const char MSG_BAD_HEADER[] = "the Authorization header must be one 'Bearer <API key>'";
static const char MSG_BAD_KEY[] = "the API key is not valid";

static void reply_unauthorized(bd_http_t *h, h2o_req_t *req, bool bad_key, const char *msg)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                   bad_key ? AUTH_INVALID : AUTH_PLAIN,
                   strlen(bad_key ? AUTH_INVALID : AUTH_PLAIN));
    reply_error(h, req, BD_EAUTH, msg);
}

/* A caller without a key, told apart by its address (sock NULL: one bucket for all such). */
static void anonymous_who(h2o_socket_t *sock, bd_gate_who_t *who)
{
    struct sockaddr_storage ss;
    bool addr = sock && h2o_socket_getpeername(sock, (struct sockaddr *)&ss) > 0;
    bd_gate_anonymous(addr ? (struct sockaddr *)&ss : NULL, who);
}

/* Whether a and b are the same bytes but for letter case. */
static bool same_nocase(const char *a, size_t a_len, const char *b, size_t b_len)
{
    for (size_t i = 0; a_len == b_len && i < a_len; i++) {
        if (h2o_tolower(a[i]) != h2o_tolower(b[i])) {
            return false;
        }
    }
    return a_len == b_len;
}

/* Whether raw_reply may carry s[0..n) as it is: printable ASCII without '"' or '\\' (it writes
 * no JSON escapes, and bytes past ASCII may not be UTF-8). */
static bool raw_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < ' ' || s[i] > '~' || s[i] == '"' || s[i] == '\\') {
            return false;
        }
    }
    return true;
}

/* Whether `origin` is in the comma-separated `list` ("*" matches any). */
static bool origin_listed(const char *list, h2o_iovec_t origin)
{
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        h2o_iovec_t item = h2o_str_stripws(p, end ? (size_t)(end - p) : strlen(p));
        if ((item.len == 1 && item.base[0] == '*') ||
            same_nocase(item.base, item.len, origin.base, origin.len)) {
            return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* Whether a request's Host (name[:port]) names this machine by address: an IP address, or
 * localhost, which browsers resolve themselves. Any other name could be one that its owner
 * points at 127.0.0.1 while a browser holds their page (DNS rebinding): the page is then, to
 * the browser, this server's own. */
static bool host_is_address(h2o_iovec_t host)
{
    if (host.len > 2 && host.base[0] == '[') {
        return true; /* an IPv6 literal: no name */
    }
    size_t n = host.len;
    for (size_t i = n; i > 0; i--) {
        if (host.base[i - 1] == ':') {
            n = i - 1; /* the port */
            break;
        }
    }
    char name[256]; /* a DNS name's 253 bytes */
    if (n == 0 || n >= sizeof name) {
        return false;
    }
    memcpy(name, host.base, n);
    name[n] = '\0';
    n -= name[n - 1] == '.'; /* the root's dot */
    name[n] = '\0';
    struct in_addr a;
    return inet_pton(AF_INET, name, &a) == 1 || strcasecmp(name, "localhost") == 0 ||
           (n > 10 && strcasecmp(name + n - 10, ".localhost") == 0);
}

/* Whether `sock` (NULL: unknown) came from this machine itself: in on a loopback address, or
 * from the very address it came in on (a browser here reaching this machine's LAN or docker0
 * address). DNS rebinding is a way in only to a server the attacker's page cannot reach by
 * itself; from elsewhere host names are the usual way in, and some clients that are not
 * browsers send Origin with the Host they used (websocket-client, for one). A client that binds
 * its socket to another address of this machine first counts as elsewhere: browsers do not. */
static bool from_this_machine(h2o_socket_t *sock)
{
    struct sockaddr_storage here, peer;
    if (!sock || h2o_socket_getsockname(sock, (struct sockaddr *)&here) == 0) {
        return true;
    }
    if (here.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&here;
        const struct sockaddr_in *b = (const struct sockaddr_in *)&peer;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127 ||
               h2o_socket_getpeername(sock, (struct sockaddr *)&peer) == 0 ||
               (peer.ss_family == AF_INET && a->sin_addr.s_addr == b->sin_addr.s_addr);
    }
    if (here.ss_family != AF_INET6) {
        return true;
    }
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)&here)->sin6_addr;
    const struct in6_addr *b6 = &((const struct sockaddr_in6 *)&peer)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127) ||
           h2o_socket_getpeername(sock, (struct sockaddr *)&peer) == 0 ||
           (peer.ss_family == AF_INET6 && memcmp(a6, b6, sizeof *a6) == 0);
}

/* An Origin as browsers send it: printable ASCII, at most a host name's 253 bytes with a
 * scheme and port. Only such a one is listed, echoed or shown. */
#define ORIGIN_MAX 300
#define ORIGIN_MSG_MAX (2 * ORIGIN_MAX + 300)
/* What a listed page's requests may carry, and which reply headers it may read (CORS). */
#define CORS_ALLOWED                                                                               \
    "Authorization, Content-Type, Content-Encoding, Accept-Encoding, "                             \
    "Inference-Header-Content-Length"
#define CORS_EXPOSED "Inference-Header-Content-Length, Retry-After, WWW-Authenticate"

/* A web page's request, sent by a browser with its Origin (`origin`, stripped): refused (403)
 * unless the page is the server's own (scheme://host[:port] with the request's Host, `host`,
 * where that is an address, host_is_address, or the request came from another machine,
 * from_this_machine of `sock`) or --allow-origin lists it, so that pages a browser on this machine
 * opens cannot use a batchd on 127.0.0.1 (infer, load, unload, WebSockets; docs/SECURITY.md).
 * Clients that are not browsers send no Origin, or their own Host's. True with the answer's
 * sentence in msg[ORIGIN_MSG_MAX]; false with *listed set when the page is another site's that
 * --allow-origin lists. Judged from the head for a request with a body (early_refusal: before
 * API keys and rate limits), in on_req for one without. */
static bool origin_refused(const bd_http_t *h, h2o_iovec_t o, h2o_iovec_t host, h2o_socket_t *sock,
                           bool *listed, char *msg)
{
    const char *sep = o.len > 3 ? memchr(o.base, ':', o.len - 2) : NULL;
    *listed = false;
    bool own_name = sep && sep[1] == '/' && sep[2] == '/' &&
                    same_nocase(sep + 3, (size_t)(o.base + o.len - (sep + 3)), host.base, host.len);
    if (own_name && (host_is_address(host) || !from_this_machine(sock))) {
        return false;
    }
    bool null = o.len == 4 && memcmp(o.base, "null", 4) == 0;
    bool plain = o.len <= ORIGIN_MAX && raw_text(o.base, o.len);
    if (!null && plain && origin_listed(h->allow_origins, o)) {
        *listed = !own_name; /* a listed page of its own needs no CORS */
        return false;
    }
    /* Shown only as browsers send it: the sentence also goes out from the head (raw_reply). */
    int shown = (int)o.len;
    if (null) {
        /* A file, or a sandboxed frame any site can make: no origin to allow, not even by *. */
        snprintf(msg, ORIGIN_MSG_MAX,
                 "a request from a web page without an origin of its own (Origin: null: a "
                 "local file or a sandboxed frame) is refused");
    } else if (!plain) {
        snprintf(msg, ORIGIN_MSG_MAX,
                 "a request with an Origin header that is not an origin (scheme://host[:port]) "
                 "is refused");
    } else if (own_name) {
        snprintf(msg, ORIGIN_MSG_MAX,
                 "a request from the web page origin '%.*s' is refused: its host is a name, not "
                 "an address or localhost, and any site can point a name here (DNS rebinding); "
                 "start batchd with --allow-origin %.*s to accept requests from its pages",
                 shown, o.base, shown, o.base);
    } else {
        snprintf(msg, ORIGIN_MSG_MAX,
                 "a request from the web page origin '%.*s' is refused: it is not this server's "
                 "own; start batchd with --allow-origin %.*s to accept requests from its pages",
                 shown, o.base, shown, o.base);
    }
    return true;
}

/* The header lines ("Name: value\r\n" each) that a reply written past h2o (refuse_body)
 * carries for a page's browser, as origin_ok adds them to routed replies: Vary: Origin with
 * --allow-origin, and for `listed` (the page's origin, or empty when it is not a listed page)
 * the CORS ones; its origin is echoed only as browsers send it. */
#define CORS_LINES_MAX (ORIGIN_MAX + 200)
static void cors_lines(const bd_http_t *h, char *out, h2o_iovec_t listed)
{
    bool echo = listed.len != 0; /* origin_refused lists only what a browser sends */
    snprintf(out, CORS_LINES_MAX, "%s%s%.*s%s", h->allow_origins ? "Vary: Origin\r\n" : "",
             echo ? "Access-Control-Allow-Origin: " : "", echo ? (int)listed.len : 0,
             echo ? listed.base : "",
             echo ? "\r\nAccess-Control-Expose-Headers: " CORS_EXPOSED "\r\n" : "");
}

/* RFC 6454 7.3: a browser sends one Origin; which of several to judge is anyone's guess. */
static const char MSG_TWO_ORIGINS[] =
    "a request with more than one Origin header is refused (a browser sends one)";

/* origin_refused for a request h2o parsed; false after answering it: 403, or the CORS
 * preflight of a listed page. A listed page's browser hands it a reply only if the reply says
 * so (CORS): each carries Access-Control-Allow-Origin with the page's origin, and the preflight
 * a browser sends before a request with JSON or an Authorization (OPTIONS with
 * Access-Control-Request-Method; it carries no key, so it is answered before admit) gets 204
 * with the methods and headers the page may use. */
static bool origin_ok(bd_http_t *h, h2o_req_t *req)
{
    if (h->allow_origins) {
        /* Replies differ by Origin (CORS headers, 403): caches must not mix them up. */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
    }
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (i < 0) {
        return true;
    }
    if (h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), i) >= 0) {
        reply_error(h, req, BD_EFORBIDDEN, MSG_TWO_ORIGINS);
        return false;
    }
    h2o_iovec_t o =
        h2o_str_stripws(req->headers.entries[i].value.base, req->headers.entries[i].value.len);
    bool listed;
    char msg[ORIGIN_MSG_MAX];
    if (origin_refused(h, o, req->authority, req_socket(req), &listed, msg)) {
        reply_error(h, req, BD_EFORBIDDEN, msg);
        return false;
    }
    if (!listed) {
        return true;
    }
    h2o_headers_t *out = &req->res.headers;
    h2o_add_header(&req->pool, out, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, o.base, o.len);
    if (!method_is(req, "OPTIONS") ||
        h2o_find_header_by_str(&req->headers, H2O_STRLIT("access-control-request-method"), -1) <
            0) {
        h2o_add_header_by_str(&req->pool, out, H2O_STRLIT("access-control-expose-headers"), 0, NULL,
                              H2O_STRLIT(CORS_EXPOSED));
        return true;
    }
    h2o_add_header_by_str(&req->pool, out, H2O_STRLIT("access-control-allow-methods"), 0, NULL,
                          H2O_STRLIT("GET, HEAD, POST"));
    h2o_add_header_by_str(&req->pool, out, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
                          H2O_STRLIT(CORS_ALLOWED));
    h2o_add_header_by_str(&req->pool, out, H2O_STRLIT("access-control-max-age"), 0, NULL,
                          H2O_STRLIT("600"));
    if (h2o_find_header_by_str(&req->headers, H2O_STRLIT("access-control-request-private-network"),
                               -1) >= 0) {
        /* Chrome asks before a public site's page reaches a private address (Private Network
         * Access): a listed page may. */
        h2o_add_header_by_str(&req->pool, out, H2O_STRLIT("access-control-allow-private-network"),
                              0, NULL, H2O_STRLIT("true"));
    }
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_send_inline(req, NULL, 0);
    return false;
}

/* Decide who sends `req` (h->who). Returns false after answering 401 (no key, a malformed
 * Authorization, an unknown key) or 403 (an `infer` key on load or unload). */
static bool admit(bd_http_t *h, h2o_req_t *req, const h2o_iovec_t *seg, int n)
{
    if (!h->gate) {
        return true;
    }
    bool keys = bd_gate_keys_on(h->gate);
    if (!keys || open_path(h, seg, n)) {
        /* Without keys, callers are told apart by address (only the limiter asks). */
        anonymous_who(!keys && bd_gate_limits_on(h->gate) ? req_socket(req) : NULL, &h->who);
        return true;
    }
    const char *key = NULL;
    size_t key_len = 0;
    char qkey[BD_GATE_MAX_KEY_BYTES + 1];
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, i) >= 0 ||
            bd_gate_bearer(v.base, v.len, &key, &key_len) != 0) {
            reply_unauthorized(h, req, false, MSG_BAD_HEADER);
            return false;
        }
    } else if (stream_path(seg, n) && req->query_at != SIZE_MAX) {
        const char *q = req->path.base + req->query_at + 1;
        size_t qlen = req->path.len - req->query_at - 1;
        int found = bd_gate_query_param(q, qlen, "api_key", qkey, sizeof qkey, &key_len);
        if (found < 0) {
            reply_unauthorized(h, req, true, MSG_BAD_KEY);
            return false;
        }
        key = found ? qkey : NULL;
    }
    if (!key) {
        reply_unauthorized(h, req, false,
                           stream_path(seg, n)
                               ? "this endpoint needs an API key: send 'Authorization: Bearer "
                                 "<key>' or, on a WebSocket upgrade, ?api_key=<key>"
                               : MSG_NEED_KEY);
        return false;
    }
    if (bd_gate_authenticate(h->gate, key, key_len, &h->who) != 0) {
        reply_unauthorized(h, req, true, MSG_BAD_KEY);
        return false;
    }
    if (admin_path(seg, n) && h->who.role != BD_GATE_ROLE_ADMIN) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT(AUTH_SCOPE));
        reply_error(h, req, BD_EFORBIDDEN,
                    "loading and unloading models needs an API key with the 'admin' role; this "
                    "key has the 'infer' role");
        return false;
    }
    return true;
}

/* --rate-limit: an infer request past its caller's bucket gets 429 with Retry-After. Returns
 * false after answering. */
static bool rate_ok(bd_http_t *h, h2o_req_t *req)
{
    conn_t *c = conn_of(req);
    if (c && c->token_taken) {
        c->token_taken = false; /* taken from its head already (early_refusal) */
        return true;
    }
    uint64_t retry = 0;
    bd_err_t err;
    if (bd_gate_take(h->gate, &h->who, &retry, &err)) {
        return true;
    }
    bd_metrics_rate_limited_add(h->metrics, BD_PROTO_HTTP);
    retry_after(req, retry);
    reply_error(h, req, err.code, err.msg);
    return false;
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

/* Under TLS a leaving client's last bytes are usually records (a close_notify alert) that a
 * peek cannot tell from a pipelined request, and that stay unread, and over plain HTTP a
 * client may leave with pipelined requests unread: ask the kernel whether the peer shut its
 * side (the FIN or a reset behind those bytes) instead. */
static bool peer_shut(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
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
        if (h->ssl_ctx) {
            if (peer_shut(j->fd)) {
                client_left(j);
            } else {
                j->next_check_us = now + WATCH_INTERVAL_US;
                watch_add(h, j);
            }
            continue;
        }
        char c;
        ssize_t n = recv(j->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0 && peer_shut(j->fd)) {
            client_left(j); /* pipelined bytes, then the end of its data: POLLRDHUP sees both */
            continue;
        }
        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) {
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
    /* Given twice, the values must agree (as Content-Length's must): a proxy could split the
     * body at the other. */
    for (ssize_t k = i;
         (k = h2o_find_header_by_str(&req->headers, H2O_STRLIT("inference-header-content-length"),
                                     k)) >= 0;) {
        h2o_iovec_t w = req->headers.entries[k].value;
        if (!h2o_memis(v.base, v.len, w.base, w.len)) {
            return bd_err_set(err, BD_EINVAL,
                              "Inference-Header-Content-Length is given twice, as '%.*s' and "
                              "'%.*s'; expected one value",
                              (int)(v.len > 32 ? 32 : v.len), v.base,
                              (int)(w.len > 32 ? 32 : w.len), w.base);
        }
    }
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
    size_t plain_len = h->out.len; /* the reply's length before any compression */
    bd_zip_coding_t coded = rc == 0 ? bd_call_reply_coding(j->call, &plain_len) : BD_ZIP_IDENTITY;
    if (rc != 0) {
        reply_failure(h, req, &err);
    } else if (header_len == 0) {
        reply_buf(h, req, "application/json", &h->out, coded);
    } else {
        char num[24];
        size_t len = (size_t)(bd_fmt_u64(num, header_len) - num);
        h2o_add_header_by_str(&req->pool, &req->res.headers,
                              H2O_STRLIT("inference-header-content-length"), 0,
                              "Inference-Header-Content-Length", num, len);
        reply_buf(h, req, "application/octet-stream", &h->out, coded);
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
        if (j->client_gone && bd_call_status(call, NULL) != 0) {
            /* Written to a dead socket: h2o sees the error and closes it. */
            reply_error(j->h, j->req, BD_ECANCELLED, "the client closed the connection");
        } else {
            /* A call that ran to its end is answered even when its client closed its side:
             * one that only shut down its writing half (shutdown(SHUT_WR)) still reads it,
             * and to a dead socket it is written as the error would be. */
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

/* ?classification=K (a plain image body's; any other body is refused with it), name and value
 * percent-decoded: 0 when absent; -1 when it is not 1..65536 (empty included) or given twice. */
static long query_classification(h2o_req_t *req)
{
    if (req->query_at == SIZE_MAX) {
        return 0;
    }
    const char *q = req->path.base + req->query_at + 1;
    size_t qlen = req->path.len - req->query_at - 1;
    size_t pos = 0, name_len, value_len;
    const char *name, *value;
    long found = 0;
    while (bd_query_pair(q, qlen, &pos, &name, &name_len, &value, &value_len)) {
        if (!bd_pct_equal(name, name_len, "classification")) {
            continue;
        }
        long k = 0; /* no value, or an empty one: 0, refused below */
        for (const char *p = value; p && p < value + value_len;) {
            int c = bd_pct_byte(&p, value + value_len);
            if (c < '0' || c > '9' || k > 65536) {
                return -1;
            }
            k = k * 10 + (c - '0');
        }
        if (found || k < 1 || k > 65536) {
            return -1;
        }
        found = k;
    }
    return found;
}

static void infer(bd_http_t *h, h2o_req_t *req, h2o_iovec_t model, h2o_iovec_t version)
{
    if (!rate_ok(h, req)) {
        return;
    }
    bd_zip_coding_t coding = BD_ZIP_IDENTITY;
    if (!body_coding(h, req, &coding)) {
        return;
    }
    bd_err_t err = {0};
    bd_err_t framing = {0};
    size_t len = req->entity.base ? req->entity.len : 0;
    size_t header_len = len;
    /* A compressed body's Inference-Header-Content-Length counts in the inflated body (as
     * Triton's client compresses the whole body it built), whose length infer learns:
     * SIZE_MAX when absent. */
    bool bad_framing =
        len && header_length(req, coding ? SIZE_MAX : len, &header_len, &framing) != 0;
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
                         .coding = coding,
                         .max_body_bytes = h->max_body_bytes,
                         .reply_coding = reply_coding(req),
                         .user_size = sizeof(job_t)};
    bd_call_t *call = NULL;
    int rc;
    bool image = image_body(req);
    if (image && coding != BD_ZIP_IDENTITY) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCEPT_ENCODING, NULL,
                       H2O_STRLIT("identity"));
        reply_error(h, req, BD_ECODING,
                    "a plain image body (image/jpeg, image/png) is taken only uncompressed; "
                    "send it without Content-Encoding (JPEG and PNG are compressed already)");
        return;
    }
    if (image) {
        long k = query_classification(req);
        if (k < 0) {
            reply_error(h, req, BD_EINVAL,
                        "?classification must be given once, as a number of classes from 1 "
                        "to 65536");
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
    } else if (query_classification(req) != 0) {
        reply_error(h, req, BD_EINVAL,
                    "?classification is taken with a plain image body (image/jpeg, image/png); "
                    "a JSON or binary request asks an output for its top K classes with "
                    "\"parameters\": {\"classification\": K}");
        return;
    } else {
        rc = bd_infer_start(h->infer, &a, on_call_done, &call, &err);
    }
    if (rc != 0) {
        reply_failure(h, req, &err);
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
    /* Every size the counters hold: they outlive reloads, which may lower max_batch_size. */
    size_t cap = BD_METRICS_MAX_BATCH_STATS;
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

/* The request's JSON body: *out NULL for an empty body. Replies (400, 413, 415) and returns -1
 * when the body is not a JSON object, or a compressed one is too large or not taken. */
static int body_object(bd_http_t *h, h2o_req_t *req, json_t **out)
{
    *out = NULL;
    bd_zip_coding_t coding = BD_ZIP_IDENTITY;
    if (!body_coding(h, req, &coding)) {
        return -1;
    }
    const char *data = req->entity.base;
    size_t len = data ? req->entity.len : 0;
    size_t max = h->max_body_bytes < LOOP_INFLATE_BYTES ? h->max_body_bytes : LOOP_INFLATE_BYTES;
    if (coding == BD_ZIP_IDENTITY && len > max) {
        /* Parsed on the loop (jansson holds ~20x the text): only as far as a small JSON body
         * goes, as for an inflated one. */
        char msg[160];
        snprintf(msg, sizeof msg,
                 "the request body is %zu bytes; this endpoint takes bodies of at most %zu bytes",
                 len, max);
        reply_error(h, req, BD_EBODYSIZE, msg);
        return -1;
    }
    bd_buf_t plain;
    bd_buf_init(&plain);
    if (coding != BD_ZIP_IDENTITY && len > LOOP_INFLATE_IN_BYTES) {
        /* Inflated on the loop: the compressed size bounds the work, as the inflated one
         * bounds the memory. */
        bd_err_t err = {0};
        bd_err_set(&err, BD_EBODYSIZE,
                   "the %s request body is %zu bytes compressed; this endpoint takes compressed "
                   "bodies of at most %u bytes",
                   bd_zip_name(coding), len, LOOP_INFLATE_IN_BYTES);
        reply_error(h, req, err.code, err.msg);
        return -1;
    }
    if (coding != BD_ZIP_IDENTITY && len > 0) {
        /* Inflated here on the loop, so only as far as a small JSON body goes. */
        bd_err_t err = {0};
        int rc = bd_zip_inflate(coding, data, len, max, &plain, &err);
        if (rc == BD_ETOOBIG) {
            rc = bd_zip_body_too_large(coding, max,
                                       max == h->max_body_bytes
                                           ? "this endpoint's bodies (--max-body-bytes)"
                                           : "this endpoint's bodies",
                                       &err);
        }
        if (rc != 0) {
            bd_buf_dispose(&plain);
            reply_error(h, req, rc, err.msg);
            return -1;
        }
        data = plain.data;
        len = plain.len;
    }
    if (len == 0) {
        bd_buf_dispose(&plain);
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    bd_buf_dispose(&plain);
    if (!root) {
        char msg[BD_ERR_MSG_MAX], why[JSON_ERROR_TEXT_LENGTH + 64];
        snprintf(msg, sizeof msg,
                 "request body is not valid JSON: %s (line %d, column %d); expected a JSON "
                 "object (or an empty body)",
                 bd_json_fault(why, sizeof why, jerr.text), jerr.line, jerr.column);
        reply_error(h, req, BD_EINVAL, msg);
        return -1;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        reply_error(h, req, BD_EINVAL, "the request body must be a JSON object (or empty)");
        return -1;
    }
    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params)) {
        json_decref(root);
        reply_error(h, req, BD_EINVAL, "'parameters' must be a JSON object");
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
    json_t *body; /* parameters.unload_dependents has no effect here: no ensembles */
    if (body_object(h, req, &body) != 0) {
        return;
    }
    json_t *deps = json_object_get(json_object_get(body, "parameters"), "unload_dependents");
    bool bad = deps && !json_is_boolean(deps); /* deps is body's: read it before the decref */
    json_decref(body);
    if (bad) {
        reply_error(h, req, BD_EINVAL, "'unload_dependents' must be true or false");
        return;
    }
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
    /* Triton's rule: changes only in explicit mode; the index is readable in every mode. */
    if (!index && h->model_control != BD_MODEL_CONTROL_EXPLICIT) {
        bd_err_t err;
        bd_err_set(&err, BD_EINVAL,
                   "loading and unloading models needs the server started with --model-control "
                   "explicit (it runs with --model-control %s)",
                   control_name(h->model_control));
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
    /* seg: models, {m} [, versions, {v}] [, ready | infer | stats | stream | config] */
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
    } else if (n == rest + 1 && iov_eq(seg[rest], "config")) {
        action = "config";
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
        /* The config endpoint answers an unknown model or version 404, as Triton's does. */
        bool config404 = strcmp(action, "config") == 0 && err.code == BD_ENOTFOUND;
        reply_error(h, req, config404 ? BD_ENOPATH : err.code, err.msg);
        return;
    }
    char breaker[BD_ERR_MSG_MAX];
    if (strcmp(action, "stream") == 0) {
        accept_stream(h, req, seg[1].base, seg[1].len, version.base, version.len);
    } else if (strcmp(action, "stats") == 0) {
        stats(h, req, m, version.len > 0);
    } else if (!bd_model_ready(m)) {
        bd_err_set(&err, BD_EUNAVAIL, "model '%s' is unavailable: %s", bd_model_name(m),
                   bd_model_reason(m));
        reply_error(h, req, strcmp(action, "ready") == 0 ? BD_EINVAL : BD_EUNAVAIL, err.msg);
    } else if (strcmp(action, "config") == 0) {
        model_config(h, req, m);
    } else if (*action && !bd_sched_available(bd_model_sched(m), breaker, sizeof breaker)) {
        /* The circuit breaker holds it: not ready until the probe succeeds. Its sentence
         * names the model and version. */
        reply_error(h, req, BD_EUNAVAIL, breaker);
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

/* RFC 3986's unreserved and sub-delims punctuation: -._~!$&'()*+,;= */
static bool host_punct(unsigned char ch)
{
    const uint64_t below_64 = 1ull << '!' | 1ull << '$' | 1ull << '&' | 1ull << '\'' | 1ull << '(' |
                              1ull << ')' | 1ull << '*' | 1ull << '+' | 1ull << ',' | 1ull << '-' |
                              1ull << '.' | 1ull << ';' | 1ull << '=';
    return ch < 64 ? (below_64 >> ch) & 1 : ch == '_' || ch == '~';
}

static bool ascii_digit(unsigned char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool ascii_hex(unsigned char ch)
{
    return ascii_digit(ch) || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
}

/* RFC 9110 7.2's Host: uri-host [":" port], where uri-host is an IP-literal ("[...]") or a
 * reg-name (unreserved, %XX and sub-delims; IPv4 is one), possibly empty. Runs on every
 * request: plain comparisons, no ctype or strchr calls. */
static bool host_ok(const char *s, size_t n)
{
    size_t i = 0;
    if (n > 0 && s[0] == '[') {
        while (++i < n && s[i] != ']') {
            unsigned char ch = (unsigned char)s[i];
            if (!ascii_hex(ch) && ch != ':' && ch != 'v' && ch != 'V' && !host_punct(ch)) {
                return false;
            }
        }
        if (i++ == n) {
            return false; /* no ']' */
        }
    } else {
        for (; i < n && s[i] != ':'; i++) {
            unsigned char ch = (unsigned char)s[i];
            bool pct = ch == '%' && i + 2 < n && ascii_hex((unsigned char)s[i + 1]) &&
                       ascii_hex((unsigned char)s[i + 2]);
            bool alnum = ascii_digit(ch) || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
            if (!alnum && !host_punct(ch) && !pct) {
                return false;
            }
            i += pct ? 2 : 0;
        }
    }
    if (i < n && s[i++] != ':') {
        return false;
    }
    for (; i < n; i++) {
        if (!ascii_digit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* The head faults RFC 9112 makes a 400 and picohttpparser passes, in both places that judge
 * heads: judge_head (before h2o parses a head: the first of a read in check_head, a pipelined
 * one when the request before it is disposed, in hold_refused) and request_head_ok (which reads
 * a pipelined head again in on_req, as no read marked it checked). A folded line is one a
 * proxy may unfold and h2o drops ("Content-Length: 2\r\n 0"), so where the body ends would be
 * read two ways. */
static const char FAULT_FRAGMENT[] =
    "the request target has a fragment ('#'), which a request must not send (RFC 9112 3.2)";
static const char FAULT_TARGET[] =
    "the request target must start with '/' (or be an absolute URL, or '*' for OPTIONS; RFC "
    "9112 3.2)";

/* A request target of RFC 9112 3.2's forms that h2o routes: origin ("/..."), absolute
 * ("http://host/...") or asterisk ("*", which the routes answer). h2o took "v2/..." too. */
static bool target_ok(const char *path, size_t len)
{
    return len > 0 &&
           (path[0] == '/' || (len == 1 && path[0] == '*') || memmem(path, len, "://", 3) != NULL);
}
static const char FAULT_FOLD[] =
    "a header line starts with a space or tab (a folded line, which RFC 9112 5.2 refuses)";
static const char FAULT_HOST[] =
    "the Host header is not a host with an optional port (RFC 9112 3.2)";
static const char FAULT_TE10[] =
    "an HTTP/1.0 request must not have Transfer-Encoding (RFC 9112 6.1)";
static const char FAULT_CL[] =
    "Content-Length must be one decimal number (repeated values must be equal)";

/* A Content-Length value, spaces around it allowed: 1 to 19 digits. */
static bool content_length(h2o_iovec_t v, unsigned long long *out)
{
    v = h2o_str_stripws(v.base, v.len);
    unsigned long long n = 0;
    for (size_t k = 0; k < v.len; k++) {
        if (v.base[k] < '0' || v.base[k] > '9') {
            return false;
        }
        n = n * 10 + (unsigned long long)(v.base[k] - '0');
    }
    *out = n;
    return v.len > 0 && v.len <= 19;
}

/* The request line and headers, checked before anything else. Size: a URL over
 * MAX_URL_BYTES gets 414, a head over --max-header-bytes 431 (h2o itself accepts up to about
 * 400 KiB). Framing (RFC 9112): a request with both Content-Length and Transfer-Encoding, or
 * with Content-Length values that differ or are not a number, could be read differently by
 * a proxy in front of us (request smuggling): refuse it and close the connection. An
 * HTTP/1.1 request needs exactly one Host (§3.2), and the faults of FAULT_* above are refused
 * here too, for the heads check_head does not see. h2o 2.2.5 keeps only one of each of these
 * headers (it reads the body by the last framing header it saw), so the check reads the raw
 * header block, which is still at the front of the connection's input buffer while the
 * request is handled; a head check_head judged (c->head_checked) is not read again, as all
 * but its Host count and its URL's length passed there. Returns false after replying (the
 * connection then closes). */
static bool request_head_ok(bd_http_t *h, h2o_req_t *req, const conn_t *c)
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
    const char *fault = NULL;
    if (c && c->head_checked) {
        host = c->hosts;
        head_end = p; /* its size was judged there */
    } else {
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
            if (*p == ' ' || *p == '\t') {
                fault = fault ? fault : FAULT_FOLD;
            } else if (header_is(p, len, "content-length")) {
                h2o_iovec_t v = h2o_str_stripws(p + 15, len - 15);
                unsigned long long value;
                cl_bad =
                    cl_bad || !content_length(v, &value) ||
                    (cl > 0 && (v.len != first_cl.len || memcmp(v.base, first_cl.base, v.len)));
                first_cl = cl == 0 ? v : first_cl;
                cl++;
            } else if (header_is(p, len, "transfer-encoding")) {
                te++;
            } else if (header_is(p, len, "host")) {
                h2o_iovec_t v = h2o_str_stripws(p + 5, len - 5);
                fault = fault || host_ok(v.base, v.len) ? fault : FAULT_HOST;
                host++;
            }
        }
        if (memchr(req->input.path.base, '#', req->input.path.len)) {
            fault = FAULT_FRAGMENT;
        } else if (!target_ok(req->input.path.base, req->input.path.len)) {
            fault = FAULT_TARGET;
        } else if (!fault && req->version == 0x100 && te > 0) {
            fault = FAULT_TE10;
        }
    }
    size_t head_bytes = (size_t)(head_end - sock->input->bytes);
    char msg[160];
    int status = 400;
    const char *why = NULL;
    if (req->input.path.len > MAX_URL_BYTES) {
        status = 414;
        snprintf(msg, sizeof msg, URL_TOO_LONG, req->input.path.len, MAX_URL_BYTES);
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
    } else if (fault) { /* in check_head's order: before the framing and the body's size */
        why = fault;
    } else if (req->entity.base && req->entity.len > h->max_body_bytes) {
        status = 413; /* h2o's bound is one byte more (see bd_http_new) */
        too_large(h, msg, sizeof msg);
        why = msg;
    } else if (cl > 0 && te > 0) {
        why = "a request must not have both Content-Length and Transfer-Encoding";
    } else if (cl_bad) {
        why = FAULT_CL;
    } else if (req->version == 0x101 && host != 1) {
        why = host ? "an HTTP/1.1 request must have exactly one Host header, it has several"
                   : "an HTTP/1.1 request must have a Host header";
    }
    if (!why) {
        /* 'Connection: keep-alive, close' closes too (RFC 9112 9.6; h2o misses the token when
         * it is not the first). */
        ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONNECTION, -1);
        if (ci >= 0 &&
            h2o_contains_token(req->headers.entries[ci].value.base,
                               req->headers.entries[ci].value.len, H2O_STRLIT("close"), ',')) {
            req->http1_is_persistent = 0;
        }
        return true;
    }
    req->http1_is_persistent = 0; /* what follows on this connection cannot be trusted */
    bd_buf_reset(&h->out);
    bd_buf_json_error(&h->out, why);
    reply_json(h, req, status);
    return false;
}

/* The path routes go by: h2o's normalised one, or for an absolute-form target
 * ("http://host:port/v2/..."; RFC 9112 3.2.2: a server must accept it) the path after the
 * authority, normalised likewise. */
static h2o_iovec_t route_path(h2o_req_t *req)
{
    static const char *const schemes[] = {"http://", "https://"};
    h2o_iovec_t p = req->path;
    if (p.len == 0 || p.base[0] == '/') {
        return req->path_normalized; /* origin form: every request but a rare proxy's */
    }
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(schemes[i]);
        if (p.len > n && strncasecmp(p.base, schemes[i], n) == 0) {
            const char *slash = memchr(p.base + n, '/', p.len - n);
            if (!slash) {
                return h2o_iovec_init(H2O_STRLIT("/"));
            }
            size_t query_at;
            size_t *norm = NULL;
            return h2o_url_normalize_path(&req->pool, slash, (size_t)(p.base + p.len - slash),
                                          &query_at, &norm);
        }
    }
    return req->path_normalized;
}

/* Whether the target's path (before any query) has a %2F. */
static bool encoded_slash(const h2o_req_t *req)
{
    size_t end = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    for (size_t i = 0; i + 2 < end; i++) {
        if (req->path.base[i] == '%' && req->path.base[i + 1] == '2' &&
            (req->path.base[i + 2] | 0x20) == 'f') {
            return true;
        }
    }
    return false;
}

/* Whether the peer of `sock` is gone: reset, or closed both ways (a half-close is not). */
static bool peer_gone(h2o_socket_t *sock)
{
    struct pollfd p = {.fd = h2o_socket_get_fd(sock), .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP));
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    bd_http_t *h = *(bd_http_t **)(self + 1);
    mark_busy(req);
    conn_t *c = conn_of(req);
    if (c && !c->head_checked && peer_gone(c->sock)) {
        /* A pipelined request (h2o parsed it from its buffer, not from a read) of a client
         * that is gone. h2o 2.2.5 ignores a failed write and takes the next request from the
         * buffer at once, in the same loop turn: a client that pipelined megabytes and left
         * kept the loop answering them for seconds. This one gets its answer for the record
         * (nothing runs) and the connection closes after it. */
        req->http1_is_persistent = 0;
        reply_error(h, req, BD_ECANCELLED, "the client closed the connection");
        return 0;
    }
    if (!request_head_ok(h, req, c)) {
        return 0;
    }
    if (h->stopping) {
        /* The drain: a request that arrives on a kept-alive connection after the signal. */
        reply_error(h, req, BD_ESHUTDOWN, "the server is shutting down");
        return 0;
    }
    if (!method_known(req)) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "the method '%.*s' is not implemented; this server takes GET, HEAD and POST",
                 (int)(req->method.len > 32 ? 32 : req->method.len), req->method.base);
        reply_error(h, req, BD_ENOTIMPL, msg);
        return 0;
    }
    if (iov_eq(req->path, "*")) {
        /* The asterisk form asks about the server as a whole, and only OPTIONS may use it
         * (RFC 9110 §9.3.7, RFC 9112 §3.2.4). */
        if (method_is(req, "OPTIONS")) {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                           H2O_STRLIT("GET, HEAD, POST"));
            reply(h, req, 200, "application/json", "", 0);
        } else {
            reply_error(h, req, BD_EINVAL, "the target '*' is for OPTIONS only (RFC 9112 3.2.4)");
        }
        return 0;
    }
    h2o_iovec_t seg[8] = {{0}}; /* split_path fills n of them; GCC -O3 cannot see that */
    h2o_iovec_t path = route_path(req);
    int n = split_path(path, seg, 8);
    if (!origin_ok(h, req) || !admit(h, req, seg, n)) {
        return 0;
    }
    if (path.len && memchr(path.base, '\0', path.len)) { /* h2o decoded a %00 */
        reply_error(h, req, BD_EINVAL, "the path must not contain a NUL byte (%00)");
        return 0;
    }
    if (encoded_slash(req)) {
        /* h2o decodes it into a separator, but it is data in a segment (RFC 3986 2.2), and
         * no model or version name holds a '/'. */
        reply_error(h, req, BD_ENOPATH,
                    "the path holds an encoded '/' (%2F), which no model or version name has");
        return 0;
    }
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
            accept_stream(h, req, NULL, 0, NULL, 0);
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
    } else if (ready) {
        health_ready(h, req);
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

/* ---- lingering close ----------------------------------------------------------------------
 * h2o answers a chunked body that passes --max-body-bytes (413) or breaks its framing (400)
 * itself, stops reading and closes once the answer is written. Closing a socket with the
 * client's bytes unread sends a reset, which can reach the client before it reads the answer:
 * it saw "connection reset" or "broken pipe" instead of the 413. So such a connection's socket
 * outlives h2o's: a duplicate of its descriptor is shut for writing (the end after the answer)
 * and what still comes is read and dropped until the client closes, or for at most
 * --http-timeout-secs. It stays counted in h->conns (--max-connections) until then. */
typedef struct {
    bd_list_t link; /* on h->lingering */
    bd_http_t *h;
    h2o_socket_t *sock;
    uint64_t end_us;
} linger_t;

static void on_linger_close(void *data)
{
    linger_t *l = data;
    bd_list_unlink(&l->link);
    l->h->conns--;
    accept_resume(l->h);
    free(l);
}

static void on_linger_read(h2o_socket_t *sock, const char *err)
{
    h2o_buffer_consume(&sock->input, sock->input->size);
    if (err) {
        h2o_socket_close(sock); /* frees it (on_linger_close) */
    }
}

/* Takes over fd, the duplicate of a connection's descriptor that h2o has just closed; false
 * (fd closed) when it cannot. */
static bool linger(bd_http_t *h, int fd)
{
    linger_t *l = h->stopping ? NULL : calloc(1, sizeof *l);
    if (!l) {
        close(fd);
        return false;
    }
    shutdown(fd, SHUT_WR);
    l->h = h;
    l->end_us = bd_now_us() + h->head_timeout_us;
    l->sock = h2o_evloop_socket_create(h->loop, fd, 0);
    l->sock->on_close.cb = on_linger_close;
    l->sock->on_close.data = l;
    bd_list_push_back(&h->lingering, &l->link);
    h2o_socket_read_start(l->sock, on_linger_read);
    if (!h2o_timeout_is_linked(&h->head_entry)) {
        h2o_timeout_link(h->loop, &h->head_timeout, &h->head_entry); /* ends it (on_head_tick) */
    }
    return true;
}

static void on_conn_close(void *data)
{
    conn_t *c = data;
    bd_http_t *h = c->h;
    bool lingering = c->linger_fd >= 0 && linger(h, c->linger_fd);
    if (c->busy) {
        c->busy[0] = NULL;
    }
    if (h2o_timeout_is_linked(&c->rewatch_entry)) {
        h2o_timeout_unlink(&c->rewatch_entry);
    }
    if (h2o_timeout_is_linked(&c->handshake_entry)) {
        h2o_timeout_unlink(&c->handshake_entry);
    }
    h->budget->used -= c->buffered;
    bd_metrics_http_buffered_set(h->metrics, (int64_t)h->budget->used);
    bd_list_unlink(&c->link);
    free(c->held);
    free(c);
    if (!lingering) {
        h->conns--;
        accept_resume(h);
    }
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

/* Whether the client's next bytes are in the kernel, not yet read: the loop reads them in its
 * next turn. An idle connection closed then loses (and resets) a request already sent, which a
 * proxy reusing its kept-alive connections sees as a 502: it arrived while the loop handled
 * other sockets in the turn before the head check. */
static bool bytes_waiting(h2o_socket_t *sock)
{
    int n = 0;
    return ioctl(h2o_socket_get_fd(sock), FIONREAD, &n) == 0 && n > 0;
}

/* Whether buf holds nothing but CR and LF bytes. */
static bool only_line_ends(const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '\r' && buf[i] != '\n') {
            return false;
        }
    }
    return true;
}

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

/* A GET on a stream path, for stream/. Once it upgrades, the connection's buffer holds frames,
 * not heads, and stream/ counts its bytes; a refused handshake leaves it an HTTP connection. */
static void accept_stream(bd_http_t *h, h2o_req_t *req, const char *model, size_t model_len,
                          const char *version, size_t version_len)
{
    conn_t *c = conn_of(req);
    add_server(req); /* its 101 does not pass the filters */
    if (bd_stream_accept(h->stream, req, model, model_len, version, version_len, &h->who) && c) {
        c->upgraded = true;
        count_buffer(c);
    }
}

/* A whole HTTP/1.1 answer `status` with {"error": msg} and Connection: close, for the replies
 * written past h2o (refuse_head, the plain-HTTP 400 on the TLS port), into resp (cap bytes,
 * enough for msg and `extra`: msg at most 160 bytes, ORIGIN_MSG_MAX in refuse_body's, whose
 * header lines take CORS_LINES_MAX + 100; needing no JSON escapes). Returns its length. */
/* `extra`: more header lines ("Name: value\r\n" each), or NULL. */
static size_t raw_reply(char *resp, size_t cap, int status, const char *extra, const char *msg)
{
    /* RFC 9110 6.6.1: an origin server with a clock sends Date (IMF-fixdate; the C locale's
     * day and month names are the ones it wants). */
    char date[40];
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
    int n = snprintf(resp, cap,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: batchd\r\n"
                     "Content-Type: application/json\r\n"
                     "Connection: close\r\n%sContent-Length: %zu\r\n\r\n{\"error\":\"%s\"}",
                     status, reason_of(status), date, extra ? extra : "", strlen(msg) + 12, msg);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Answer with resp[0..n) straight on the socket and shut it down. Nothing else writes while
 * h2o waits for a head. Best effort: a full socket buffer only loses the answer, not the close,
 * which h2o then sees as the client's. While c->discarding, only the sending side is shut:
 * the body behind the head is read and dropped first (on_read_discard). */
static bool refuse_tls(conn_t *c, const char *resp, size_t len);

static void refuse_with(conn_t *c, int status, const char *resp, size_t n)
{
    int fd = h2o_socket_get_fd(c->sock);
    c->refused = true;
    if (c->sock->ssl) {
        c->discarding = refuse_tls(c, resp, n) && c->discarding;
        return;
    }
    if (send(fd, resp, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        BD_DEBUG("http", "%d not sent: %s", status, strerror(errno));
    }
    shutdown(fd, c->discarding ? SHUT_WR : SHUT_RDWR);
}

static void refuse_head(conn_t *c, int status, const char *msg)
{
    char resp[512];
    refuse_with(c, status, resp, raw_reply(resp, sizeof resp, status, NULL, msg));
    bd_http_t *h = c->h;
    uint64_t now = bd_now_us();
    if (h->refuse_logged_us && now - h->refuse_logged_us < 1000000) {
        h->refuse_unlogged += bd_log_level() > BD_LOG_DEBUG; /* at debug each has its line */
        BD_DEBUG("http", "closing a connection: %s", msg);
        return;
    }
    if (h->refuse_unlogged) {
        BD_WARN("http",
                "closing a connection: %s (connections closed from their head, any reason: %" PRIu64
                " more since the last such line)",
                msg, h->refuse_unlogged);
    } else {
        BD_WARN("http", "closing a connection: %s", msg);
    }
    h->refuse_logged_us = now;
    h->refuse_unlogged = 0;
}

/* An early 401, 413, 429 or 503 (early_refusal): answered before the body, which is then read and
 * dropped as it comes (`left` more bytes of it) instead of buffered. Not logged: clients cause
 * these, and the same answers after a buffered body are not logged either. */
static void refuse_body(conn_t *c, int status, const char *extra, h2o_iovec_t listed,
                        const char *msg, size_t left)
{
    char resp[CORS_LINES_MAX + ORIGIN_MSG_MAX + 400], lines[CORS_LINES_MAX + 100];
    cors_lines(c->h, lines, listed);
    snprintf(lines + strlen(lines), sizeof lines - strlen(lines), "%s", extra ? extra : "");
    size_t n = raw_reply(resp, sizeof resp, status, lines, msg);
    h2o_buffer_consume(&c->sock->input, c->sock->input->size); /* the head, the body so far */
    c->promised = 0;
    count_buffer(c);
    c->discarding = left > 0;
    c->discard_left = left;
    c->since_us = bd_now_us();
    c->discard_end_us = c->since_us + c->h->head_timeout_us;
    refuse_with(c, status, resp, n);
}

static void on_read_checked(h2o_socket_t *sock, const char *err);

/* The close of a connection whose client may still be sending sends a reset. It must: after
 * shutdown(SHUT_RD) the kernel stops opening the receive window, and a socket closed with its
 * window at 0 leaves a FIN-WAIT-2 remnant that answers the client's probes with that window,
 * its sends blocked for a minute. */
static void reset_on_close(h2o_socket_t *sock)
{
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    setsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
}

/* Reads after an early refusal: drop them until the body's end, the client's, or a stall
 * (on_head_tick ends it), then close as refuse_head does. Plain connections get here through
 * on_read_checked; TLS ones from on_refused_written. */
static void on_read_discard(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->on_close.data;
    size_t got = sock->input->size;
    h2o_buffer_consume(&sock->input, got);
    count_buffer(c);
    if (c->discarding) {
        c->discard_left -= got < c->discard_left ? got : c->discard_left;
        c->since_us = bd_now_us();
        if (!err && c->discard_left > 0) {
            return;
        }
        c->discarding = false;
    }
    if (c->handshaking) {
        h2o_socket_close(sock); /* not h2o's HTTP/1's (on_refused_written); frees c */
        return;
    }
    shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
    if (err) {
        c->h->http1_read(sock, err); /* h2o sees the end and closes */
    } else if (sock->_cb.read != on_read_checked) {
        h2o_socket_read_start(sock, on_read_checked); /* which passes the end on to h2o */
    }
}

static void on_refused_written(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->on_close.data;
    if (c->discarding) {
        h2o_socket_read_start(sock, on_read_discard);
        if (err) {
            on_read_discard(sock, err);
        }
        return;
    }
    if (c->handshaking) {
        h2o_socket_close(sock); /* not h2o's HTTP/1's: closed here, close_notify first; frees c */
        return;
    }
    shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
    h2o_socket_read_start(sock, c->reader);
}

/* refuse_head under TLS: bytes sent straight to the socket would break the record stream, so
 * the answer goes through h2o_socket_write (which encrypts a copy at once). h2o's reading stops
 * meanwhile, so that it cannot start a reply of its own on top of ours; once the answer is
 * written the connection is shut down and h2o's reader restored, to see the end and close. If
 * h2o is writing (or not reading) there is no answer, only the shutdown. If h2o closes the
 * connection first (its backstop timeout, the drain), the write callback never runs. A head
 * that came with the handshake (on_handshake) is refused before h2o's HTTP/1 has the
 * connection: nothing reads it then, and once the answer is written it is closed here. */
static bool refuse_tls(conn_t *c, const char *resp, size_t len)
{
    if (!c->handshaking && (h2o_socket_is_writing(c->sock) || !c->sock->_cb.read)) {
        shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
        return false;
    }
    c->reader = c->sock->_cb.read;
    h2o_socket_read_stop(c->sock);
    h2o_iovec_t iov = h2o_iovec_init(resp, len);
    h2o_socket_write(c->sock, &iov, 1, on_refused_written);
    return true;
}

/* ---- request bytes held ------------------------------------------------------------------
 * Each connection's input buffer holds its request's head and body until the reply is out, so
 * without a bound N clients could make the server hold N x --max-body-bytes. The connections'
 * part of h->budget (which the WebSockets share) is the sum of the bytes each buffer holds, or,
 * from an admitted head until its body is in, the bytes its body was promised if that is more
 * (its Content-Length; a chunked body is promised --max-body-bytes), plus the body of the reply
 * h2o holds until it is written (a client that does not read keeps it: a few KiB of gzip that
 * inflate to a large reply each would pass the bound otherwise); a head whose body would
 * take it past --max-buffered-bytes is answered 503 (room_for_body). Bytes, not the buffers'
 * capacities: h2o rounds those up to a power of two, and the pages past the data are not touched.
 * Recounted after each read, each reserve, each reply and every head tick. */
static void count_buffer(conn_t *c)
{
    const h2o_buffer_t *in = c->sock && !c->upgraded ? c->sock->input : NULL;
    size_t now = in && in->bytes ? in->size : 0; /* a WebSocket's: stream counts them */
    if (now < c->promised) {
        now = c->promised;
    }
    now += c->replying;
    bd_budget_t *budget = c->h->budget;
    budget->used = budget->used - c->buffered + now;
    c->buffered = now;
    bd_metrics_http_buffered_set(c->h->metrics, (int64_t)budget->used);
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
                h2o_buffer_reserve(in, cl - have); /* as h2o would as the body came */
            }
            return;
        }
        if (p != buf && !cl && header_is(p, len, "content-length") &&
            !content_length(h2o_iovec_init(p + 15, len - 15), &cl)) {
            cl = 0;
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
 * loop polls again. A head pipelined behind a request, which h2o parses from its buffer at
 * once, is judged the same way when that request is disposed (hold_refused). */

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

static bool field_is(const struct phr_header *f, const char *name)
{
    size_t n = strlen(name);
    return f->name && f->name_len == n && strncasecmp(f->name, name, n) == 0;
}

/* "1.5 MiB", "12.0 KiB" or "300 bytes", into buf. */
static const char *size_text(char *buf, size_t cap, size_t n)
{
    if (n >= (1u << 20)) {
        snprintf(buf, cap, "%.1f MiB", (double)n / (1u << 20));
    } else if (n >= 1024) {
        snprintf(buf, cap, "%.1f KiB", (double)n / 1024);
    } else {
        snprintf(buf, cap, "%zu bytes", n);
    }
    return buf;
}

/* --max-buffered-bytes: a request whose body takes `need` bytes (its Content-Length, or
 * --max-body-bytes when chunked) and would take h->budget past the limit is answered 503
 * from its head and its body dropped (`left` bytes to come). Bodies up to RESERVE_MIN_BYTES
 * always pass, and so does a request while nothing else is held (so a body of --max-body-bytes
 * is never refused on an idle server). An admitted one is promised its room until its body is
 * in (mark_busy). False after refusing. */
static bool room_for_body(bd_http_t *h, conn_t *c, unsigned long long need, size_t left,
                          h2o_iovec_t listed)
{
    if (!h->budget->max || need <= RESERVE_MIN_BYTES || need > h->max_body_bytes) {
        return true; /* h2o refuses a body over --max-body-bytes itself (413) */
    }
    size_t others = h->budget->used - c->buffered;
    if (others == 0 || others + need <= h->budget->max) {
        c->promised = (size_t)need;
        count_buffer(c);
        return true;
    }
    char msg[160], held[24], adds[24], limit[24];
    snprintf(msg, sizeof msg,
             "the server holds %s of requests and this one would add %s, past "
             "--max-buffered-bytes (%s); retry shortly",
             size_text(held, sizeof held, others), size_text(adds, sizeof adds, (size_t)need),
             size_text(limit, sizeof limit, h->budget->max));
    bd_metrics_http_buffer_full_add(h->metrics);
    refuse_body(c, 503, "Retry-After: 1\r\n", listed, msg, left);
    return false;
}

/* An infer request that waits for 100 Continue (Expect) to a model or version the repository
 * does not have: its 400 goes now, so the client does not send a body only to be refused
 * after it (curl sends any body over 1 MiB so). False after refusing. A sentence that would
 * need JSON escapes (raw_reply takes none) is left to the handler. */
static bool model_known(bd_http_t *h, const h2o_iovec_t *seg, int ns, conn_t *c, size_t left,
                        h2o_iovec_t listed)
{
    bd_model_t *m = NULL;
    bd_err_t err = {0};
    h2o_iovec_t v = ns == 6 ? seg[4] : h2o_iovec_init(NULL, 0);
    if (bd_repo_find(h->repo, seg[2].base, seg[2].len, v.base, v.len, &m, &err) == 0 ||
        err.code != BD_ENOTFOUND || strlen(err.msg) > 300 || !raw_text(err.msg, strlen(err.msg))) {
        return true;
    }
    refuse_body(c, 400, NULL, listed, err.msg, left);
    return false;
}

/* A body that one Content-Length announces over --max-body-bytes (413), a request that admit
 * would refuse 401, or rate_ok 429, or that --max-buffered-bytes has no room for (503,
 * room_for_body), is answered from its head before its body is buffered: the body is then
 * dropped as it arrives (refuse_body), so that a client still sending it reads the answer
 * instead of a reset (h2o's own 413, left for a chunked body, closes at once). The room is checked
 * for every body, however framed; 401 and 429 only where the answer is certain: a body framed by
 * one Content-Length or by chunked alone, a path that is not open nor a WebSocket one and that
 * h2o's normalisation leaves alone (no '%', no dot segments); then, with API keys, no valid
 * 'Authorization: Bearer' key (401), the room (503), and with --rate-limit, a POST to an infer path
 * whose caller has no token left (429; a token it takes here is the request's, token_taken). All
 * else is admit's and rate_ok's, after the body. */
static bool early_refusal(bd_http_t *h, conn_t *c, const char *method, size_t method_len,
                          const char *path, size_t path_len, const struct phr_header *f, size_t n,
                          size_t head, bool expects)
{
    bool keys = h->gate && bd_gate_keys_on(h->gate);
    bool limits = h->gate && bd_gate_limits_on(h->gate);
    unsigned long long cl = 0, one = 0;
    int n_cl = 0, n_auth = 0, n_origin = 0;
    bool cl_differ = false;
    bool te = c->chunked; /* check_head let a Transfer-Encoding through only as one chunked */
    const struct phr_header *auth = NULL, *first_cl = NULL, *origin = NULL, *host = NULL;
    for (size_t i = 0; i < n; i++) {
        if (field_is(&f[i], "content-length")) {
            if (!content_length(h2o_iovec_init(f[i].value, f[i].value_len), &one)) {
                return true; /* request_head_ok refuses it */
            }
            cl_differ = cl_differ ||
                        (first_cl && (f[i].value_len != first_cl->value_len ||
                                      memcmp(f[i].value, first_cl->value, f[i].value_len) != 0));
            first_cl = first_cl ? first_cl : &f[i];
            cl = one > cl ? one : cl;
            n_cl++;
        } else if (field_is(&f[i], "authorization")) {
            n_auth++;
            auth = &f[i];
        } else if (field_is(&f[i], "origin")) {
            origin = origin ? origin : &f[i];
            n_origin++;
        } else if (field_is(&f[i], "host")) {
            host = &f[i]; /* the last, as h2o takes it (several only in HTTP/1.0) */
        }
    }
    if (cl_differ || (n_cl && te)) {
        /* Where the body ends is unknown (RFC 9112 6.3): answered now, as request_head_ok
         * would after a body h2o framed by one of them. */
        refuse_head(c, 400,
                    cl_differ ? "Content-Length must be one decimal number (repeated values "
                                "must be equal)"
                              : "a request must not have both Content-Length and "
                                "Transfer-Encoding");
        return false;
    }
    if (!te && cl == 0) {
        return true; /* no body */
    }
    /* What is still to come of the body (a refused one is read that far and dropped, unless it
     * stalls or takes --http-timeout-secs in all; a chunked one, up to --max-body-bytes). */
    size_t have = c->sock->input->size - head;
    unsigned long long need = te ? h->max_body_bytes : cl;
    unsigned long long rest = te ? h->max_body_bytes : cl > have ? cl - have : 0;
    size_t left = rest < SIZE_MAX ? (size_t)rest : SIZE_MAX;
    char why[ORIGIN_MSG_MAX];
    bool listed = false;
    h2o_iovec_t o =
        origin ? h2o_str_stripws(origin->value, origin->value_len) : h2o_iovec_init(NULL, 0);
    if (n_origin > 1 ||
        (origin &&
         origin_refused(h, o,
                        host ? h2o_iovec_init(host->value, host->value_len) : h2o_iovec_init("", 0),
                        c->sock, &listed, why))) {
        /* before keys, and before a token is taken */
        refuse_body(c, 403, NULL, h2o_iovec_init(NULL, 0), n_origin > 1 ? MSG_TWO_ORIGINS : why,
                    left);
        return false;
    }
    h2o_iovec_t page = listed ? o : h2o_iovec_init(NULL, 0); /* its replies carry CORS */
    if (n_cl == 1 && !te && cl > h->max_body_bytes) {
        char msg[160];
        too_large(h, msg, sizeof msg);
        refuse_body(c, 413, NULL, page, msg, left);
        return false;
    }
    if (!keys && !limits && !h->budget->max) {
        return true;
    }
    if (n_cl > 1) {
        return room_for_body(h, c, need, left, page); /* framing only h2o and admit settle */
    }
    size_t plen = 0;
    while (plen < path_len && path[plen] != '?') {
        plen++;
    }
    h2o_iovec_t seg[8];
    int ns = plen > 0 && path[0] == '/' && !memchr(path, '%', plen)
                 ? split_path(h2o_iovec_init(path, plen), seg, 8)
                 : -1;
    for (int i = 0; i < ns; i++) {
        ns = iov_eq(seg[i], ".") || iov_eq(seg[i], "..") ? -1 : ns;
    }
    /* Keys and limits judge only paths whose routing is certain; room, every body. */
    bool judged = !(ns < 0 || open_path(h, seg, ns) || stream_path(seg, ns));
    bd_gate_who_t who;
    if (keys && judged) {
        const char *key = NULL, *msg = NULL;
        size_t key_len = 0;
        if (n_auth == 0) {
            msg = MSG_NEED_KEY;
        } else if (n_auth > 1 ||
                   bd_gate_bearer(auth->value, auth->value_len, &key, &key_len) != 0) {
            msg = MSG_BAD_HEADER;
        } else if (bd_gate_authenticate(h->gate, key, key_len, &who) != 0) {
            msg = MSG_BAD_KEY;
        }
        if (msg) {
            refuse_body(c, 401,
                        msg == MSG_BAD_KEY ? "WWW-Authenticate: " AUTH_INVALID "\r\n"
                                           : "WWW-Authenticate: " AUTH_PLAIN "\r\n",
                        page, msg, left);
            return false;
        }
    }
    if (!room_for_body(h, c, need, left, page)) {
        return false;
    }
    bool infer = judged && method_len == 4 && memcmp(method, "POST", 4) == 0 && ns >= 4 &&
                 iov_eq(seg[0], "v2") && iov_eq(seg[1], "models") &&
                 ((ns == 4 && iov_eq(seg[3], "infer")) ||
                  (ns == 6 && iov_eq(seg[3], "versions") && iov_eq(seg[5], "infer")));
    if (infer && expects && !model_known(h, seg, ns, c, left, page)) {
        return false;
    }
    if (!limits || !infer) {
        return true;
    }
    if (!keys) {
        anonymous_who(c->sock, &who);
    }
    uint64_t retry = 0;
    bd_err_t err;
    if (bd_gate_take(h->gate, &who, &retry, &err)) {
        c->token_taken = true;
        return true;
    }
    bd_metrics_rate_limited_add(h->metrics, BD_PROTO_HTTP);
    char extra[48];
    snprintf(extra, sizeof extra, "Retry-After: %llu\r\n", (unsigned long long)retry);
    refuse_body(c, 429, extra, page, err.msg, left);
    return false;
}

/* RFC 9112 5: whitespace after a field value is not part of it, but h2o 2.2.5's parser keeps
 * it ('Content-Length: 2 ' was a 400, 'Sec-WebSocket-Version: 13 ' a 426). It is moved in
 * place to the front of the value, which the parser skips: the head keeps its length. */
static void trim_values(struct phr_header *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *v = (char *)(uintptr_t)f[i].value;
        size_t len = f[i].value_len, k = 0;
        while (k < len && (v[len - 1 - k] == ' ' || v[len - 1 - k] == '\t')) {
            k++;
        }
        if (k > 0 && k < len) {
            memmove(v + k, v, len - k);
            memset(v, ' ', k);
            f[i].value = v + k;
            f[i].value_len = len - k;
        }
    }
}

/* What RFC 9112 makes a 400 in a head that parsed (picohttpparser passes these), or NULL. */
static const char *head_fault(int minor, const char *path, size_t path_len,
                              const struct phr_header *f, size_t n)
{
    if (memchr(path, '#', path_len)) {
        return FAULT_FRAGMENT;
    }
    if (!target_ok(path, path_len)) {
        return FAULT_TARGET;
    }
    bool te = false;
    const struct phr_header *cl = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!f[i].name) {
            return FAULT_FOLD;
        }
        if (field_is(&f[i], "host") && !host_ok(f[i].value, f[i].value_len)) {
            return FAULT_HOST;
        }
        if (field_is(&f[i], "content-length")) {
            /* h2o refuses these with a bare "Invalid Request" */
            unsigned long long v;
            if (!content_length(h2o_iovec_init(f[i].value, f[i].value_len), &v) ||
                (cl && (cl->value_len != f[i].value_len ||
                        memcmp(cl->value, f[i].value, f[i].value_len) != 0))) {
                return FAULT_CL;
            }
            cl = &f[i];
        }
        te = te || field_is(&f[i], "transfer-encoding");
    }
    return minor == 0 && te ? FAULT_TE10 : NULL;
}

static const char TE_UNKNOWN[] = "the only Transfer-Encoding supported is chunked (a compressed "
                                 "body says so with Content-Encoding)";

/* The request's transfer codings, over every Transfer-Encoding field (RFC 9110 5.3: several
 * fields are one list): NULL when they are none or chunked alone (*chunked says which);
 * else why not. RFC 9112 6.3: chunked must be the last coding, and once (7), or where the
 * body ends is unknown: 400; a coding the server does not know is a 501 (6.1). h2o's own
 * 400 said only "Invalid Request". An empty element (RFC 9110 5.6.1 lets a recipient skip
 * it) is refused with the 400 too: h2o reads only the last field, and whole, so it would
 * frame "chunked," or "chunked" then an empty field otherwise than this list says. */
static const char *transfer_codings(const struct phr_header *f, size_t n, bool *chunked)
{
    size_t n_chunked = 0, n_codings = 0;
    bool last_chunked = false, any = false, empty = false;
    for (size_t i = 0; i < n; i++) {
        if (!field_is(&f[i], "transfer-encoding")) {
            continue;
        }
        any = true;
        const char *p = f[i].value, *end = f[i].value + f[i].value_len;
        while (p <= end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            h2o_iovec_t v = h2o_str_stripws(p, (size_t)((comma ? comma : end) - p));
            last_chunked = v.len == 7 && strncasecmp(v.base, "chunked", 7) == 0;
            n_chunked += last_chunked;
            n_codings += v.len > 0;
            empty = empty || v.len == 0;
            p = (comma ? comma : end) + 1;
        }
    }
    *chunked = n_chunked > 0;
    if (any && (empty || !last_chunked || n_chunked > 1)) {
        return "the request's transfer codings must end with chunked, applied once (RFC 9112 "
               "6.3), or where its body ends is unknown";
    }
    return n_codings > n_chunked ? TE_UNKNOWN : NULL;
}

/* A head as check_head reads it: picohttpparser's parse, and what the judgement learns. */
typedef struct {
    int len; /* phr_parse_request's: the head's length, -1 (not a head) or -2 (unfinished) */
    const char *method, *path;
    size_t method_len, path_len;
    int minor;
    struct phr_header fields[MAX_HEADERS];
    size_t n_fields;
    size_t head;  /* its bytes (when unfinished: those so far) */
    bool chunked; /* Transfer-Encoding: chunked */
    int hosts;    /* Host fields */
    bool expects; /* Expect: 100-continue, HTTP/1.1 (any other value was a 417) */
} head_t;

/* Judge the head at p (n bytes, or those so far): 0 when it may go on to h2o (unfinished
 * heads too, within --max-header-bytes), else the status to refuse it with, and why in msg
 * (cap bytes, at least 160). Reads only: a head judged at a read and one judged pipelined get
 * the same answer. */
static int judge_head(const bd_http_t *h, const char *p, size_t n, head_t *hd, char *msg,
                      size_t cap)
{
    hd->n_fields = MAX_HEADERS;
    hd->len = phr_parse_request(p, n, &hd->method, &hd->method_len, &hd->path, &hd->path_len,
                                &hd->minor, hd->fields, &hd->n_fields, 0);
    hd->chunked = false;
    hd->hosts = 0;
    hd->expects = false;
    if (hd->len == -1) {
        /* Too many fields, or not HTTP/1.x at all: count the lines to tell which. */
        size_t lines = 0;
        bool ended = false;
        const char *end = p + (n < 65536 ? n : 65536), *nl;
        for (const char *q = p; (nl = memchr(q, '\n', (size_t)(end - q))); q = nl + 1) {
            if ((ended = nl == q || (nl == q + 1 && *q == '\r'))) {
                break;
            }
            lines++;
        }
        if (lines > MAX_HEADERS + 1) {
            snprintf(msg, cap, "the request has %s%zu header fields; at most %d are accepted",
                     ended ? "" : "more than ", ended ? lines - 1 : (size_t)MAX_HEADERS,
                     MAX_HEADERS);
            return 431;
        }
        snprintf(msg, cap,
                 "the request head is not HTTP/1.x: expected a request line (METHOD TARGET "
                 "HTTP/1.1) and header fields (RFC 9112)");
        return 400;
    }
    size_t head = hd->head = hd->len > 0 ? (size_t)hd->len : n;
    /* Past the head's limit because of the URL (a request line that is that long alone): 414,
     * as for a URL over MAX_URL_BYTES in a head that fits. */
    bool line_ends =
        memchr(p, '\n', head < h->max_header_bytes ? head : h->max_header_bytes) != NULL;
    if (head > h->max_header_bytes && ((hd->len > 0 && hd->path_len > MAX_URL_BYTES) ||
                                       (!line_ends && h->max_header_bytes >= MAX_URL_BYTES))) {
        if (hd->len > 0) {
            snprintf(msg, cap, URL_TOO_LONG, hd->path_len, MAX_URL_BYTES);
        } else {
            snprintf(msg, cap,
                     "the request line passes %zu bytes without ending; a URL may have at most "
                     "%d bytes",
                     h->max_header_bytes, MAX_URL_BYTES);
        }
        return 414;
    }
    if (head > h->max_header_bytes) {
        snprintf(msg, cap,
                 "the request line and headers %s %zu bytes%s; at most %zu are accepted "
                 "(--max-header-bytes)",
                 hd->len > 0 ? "have" : "pass", hd->len > 0 ? head : h->max_header_bytes,
                 hd->len > 0 ? "" : " without ending", h->max_header_bytes);
        return 431;
    }
    if (hd->len <= 0) {
        return 0;
    }
    trim_values(hd->fields, hd->n_fields); /* before head_fault: 'Host: a ' is a valid Host */
    const char *fault = head_fault(hd->minor, hd->path, hd->path_len, hd->fields, hd->n_fields);
    if (fault) {
        snprintf(msg, cap, "%s", fault);
        return 400;
    }
    const char *te_fault = transfer_codings(hd->fields, hd->n_fields, &hd->chunked);
    if (te_fault) {
        snprintf(msg, cap, "%s", te_fault);
        return te_fault == TE_UNKNOWN ? 501 : 400;
    }
    for (size_t i = 0; i < hd->n_fields; i++) {
        const struct phr_header *f = &hd->fields[i];
        hd->hosts += field_is(f, "host");
        if (!field_is(f, "expect")) {
            continue;
        }
        hd->expects = hd->minor == 1 && f->value_len == 12;
        if (hd->minor == 1 && f->value_len > 0 &&
            (f->value_len != 12 || strncasecmp(f->value, "100-continue", 12) != 0)) {
            /* h2o's own 417 says only "Expectation Failed" (the value is not shown:
             * raw_reply takes no JSON escapes) */
            snprintf(msg, cap,
                     "the Expect header asks for what cannot be met; the only expectation "
                     "supported is 100-continue");
            return 417;
        }
    }
    return 0;
}

/* RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored, and no 1xx is sent to it;
 * h2o 2.2.5 answers it, so the field is renamed out of h2o's sight (in its buffer). */
static void hide_expect_10(const head_t *hd)
{
    for (size_t i = 0; hd->len > 0 && hd->minor == 0 && i < hd->n_fields; i++) {
        if (field_is(&hd->fields[i], "expect")) {
            ((char *)(uintptr_t)hd->fields[i].name)[0] = 'X';
        }
    }
}

/* Judge the head at the front of c's input buffer; false after refusing it. */
static bool check_head(bd_http_t *h, conn_t *c)
{
    h2o_buffer_t *in = c->sock->input;
    if (!in || in->size == 0) {
        return true;
    }
    head_t hd;
    char msg[160];
    int status = judge_head(h, in->bytes, in->size, &hd, msg, sizeof msg);
    if (status) {
        refuse_head(c, status, msg);
        return false;
    }
    hide_expect_10(&hd);
    c->chunked = hd.chunked;
    c->hosts = hd.hosts;
    c->head_checked = hd.len > 0;
    c->head_len = hd.head;
    return hd.len <= 0 || early_refusal(h, c, hd.method, hd.method_len, hd.path, hd.path_len,
                                        hd.fields, hd.n_fields, hd.head, hd.expects);
}

/* A head pipelined behind a request is parsed by h2o from its buffer right after that
 * request is disposed, with no read for on_read_checked to see: h2o answered one it could not
 * parse with its canned plain-text 400, and one it could parse was judged only in on_req
 * (request_head_ok), after its body, where h2o had already refused some (a transfer coding
 * other than chunked with a 400, an unknown expectation with its own 417). So when a request
 * is disposed, the head behind it gets judge_head's verdict; one that would be refused is taken
 * out of the buffer (h2o finds it empty and waits for a read) and put back by on_rewatch,
 * before the loop polls again, through on_read_checked, where check_head refuses it as it
 * refuses a first head. */

/* Where req ends in c's input buffer (h2o consumes that much once its reply is out): bytes
 * past it are pipelined. 0: unknown, or h2o does not keep the connection. */
static size_t request_end(conn_t *c, const h2o_req_t *req)
{
    h2o_buffer_t *in = c->sock->input;
    size_t end = 0;
    if (!req->http1_is_persistent || !in || in->size == 0 || c->upgraded) {
        return 0;
    }
    if (req->entity.base) {
        /* h2o's entity ends where its request does, chunked (decoded in place) or not */
        end = (size_t)(req->entity.base + req->entity.len - in->bytes);
    } else if (c->head_checked) {
        end = c->head_len;
    } else {
        head_t hd; /* pipelined: no read judged it */
        char msg[160];
        judge_head(c->h, in->bytes, in->size, &hd, msg, sizeof msg);
        end = hd.len > 0 ? (size_t)hd.len : 0;
    }
    return end <= in->size ? end : 0;
}

/* req: the request being disposed, its head judgement (c->head_checked) not yet reset;
 * whether h2o keeps the connection is known only now (on_req and the drain may end it). */
static void hold_refused(conn_t *c, const h2o_req_t *req)
{
    h2o_buffer_t *in = c->sock->input;
    if (c->refused || c->held) {
        return;
    }
    size_t end = request_end(c, req);
    if (!end || end >= in->size) {
        return;
    }
    size_t n = in->size - end;
    head_t hd;
    char msg[160];
    if (!judge_head(c->h, in->bytes + end, n, &hd, msg, sizeof msg)) {
        hide_expect_10(&hd);
        return;
    }
    /* What check_head reads of a head it refuses: its lines in the first 64 KiB, its size up
     * to --max-header-bytes + 1. */
    size_t most = c->h->max_header_bytes + 1 > 65536 ? c->h->max_header_bytes + 1 : 65536;
    size_t keep = n < most ? n : most;
    if (!(c->held = malloc(keep))) {
        return; /* h2o and request_head_ok answer it */
    }
    memcpy(c->held, in->bytes + end, keep);
    c->held_len = keep;
    in->size = end; /* h2o consumes the request, and then finds nothing */
}

/* Puts a held head back as if just read; false when there was none. */
static bool release_held(conn_t *c)
{
    if (!c->held) {
        return false;
    }
    h2o_iovec_t room = h2o_buffer_reserve(&c->sock->input, c->held_len);
    memcpy(room.base, c->held, c->held_len);
    c->sock->input->size += c->held_len;
    free(c->held);
    c->held = NULL;
    on_read_checked(c->sock, NULL);
    return true;
}

/* A client that sends requests far ahead of reading their replies: h2o reads what the
 * kernel holds in one go (megabytes), and the bytes stay held until the replies before them
 * are read. Past --max-buffered-bytes, a read that left more than one request's worth (the
 * first head's admitted body, plus a head and RESERVE_MIN_BYTES) is answered 503 at its first
 * request and the connection closes. False after refusing. */
static bool pipelined_room(bd_http_t *h, conn_t *c)
{
    size_t ahead = c->sock->input->size;
    if (!h->budget->max || h->budget->used <= h->budget->max ||
        ahead <= c->promised + h->max_header_bytes + RESERVE_MIN_BYTES) {
        return true;
    }
    char msg[200], sent[24], held[24], limit[24];
    snprintf(msg, sizeof msg,
             "this connection sent %s of requests ahead of their replies while the server holds "
             "%s, past --max-buffered-bytes (%s); read replies before sending more",
             size_text(sent, sizeof sent, ahead), size_text(held, sizeof held, h->budget->used),
             size_text(limit, sizeof limit, h->budget->max));
    bd_metrics_http_buffer_full_add(h->metrics);
    refuse_head(c, 503, msg);
    h2o_buffer_consume(&c->sock->input, ahead); /* never parsed: h2o closes at the next read */
    count_buffer(c);
    return false;
}

static void on_read_checked(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->on_close.data;
    count_buffer(c);
    if (c->discarding) {
        on_read_discard(sock, err);
        return;
    }
    if (c->refused && !err) {
        /* Refused and shut down, but the kernel still hands over what was queued before the
         * shutdown (megabytes from a pipelining client, or the rest of a refused body): dropped,
         * and h2o closes now instead of parsing it, with a reset. */
        reset_on_close(sock);
        h2o_buffer_consume(&sock->input, sock->input->size);
        count_buffer(c);
        err = h2o_socket_error_closed;
    }
    bool fresh = !err && !c->head_checked && !c->refused;
    if (fresh && !check_head(c->h, c)) {
        return;
    }
    if (fresh && c->head_checked && !pipelined_room(c->h, c)) {
        return;
    }
    if (fresh && c->head_checked) {
        reserve_body(c->h, &sock->input); /* the rest of its body is read in one go */
        count_buffer(c);
    }
    c->h->http1_read(sock, err);
}

/* Wrap the connection's read callback if it is h2o's HTTP/1 one (not a WebSocket's, not
 * stopped while a request is handled). Called when h2o's HTTP/1 has just taken the connection
 * and after each reply (on_rewatch), when the callback of a connection that is not a stream is
 * h2o's HTTP/1 one: the first such callback seen is recorded. It is NULL when h2o stopped
 * reading at once, for a request that came with the TLS handshake (on_handshake), so NULL is
 * never recorded. */
static void watch_reads(bd_http_t *h, conn_t *c)
{
    if (!h->http1_read && c->sock->_cb.read && !c->upgraded && !c->refused) {
        h->http1_read = c->sock->_cb.read;
    }
    if (c->sock->_cb.read && c->sock->_cb.read == h->http1_read && !c->upgraded) {
        c->sock->_cb.read = on_read_checked;
    }
}

/* A client that sent a large body tends to send the next one like it, often head and body in
 * one write that h2o reads at once, doubling its buffer (and copying what it read) on the way
 * up: a 602 KB body took seven growths and ~1 MB of copies. Once a reply is out and nothing
 * has arrived yet, room for another such body is made ahead; on_head_tick gives it back when
 * the connection stays idle. Like h2o's own reads, a failed malloc here ends the process
 * (h2o_mem_alloc), so what is reserved stays within what h2o allocates for that body anyway:
 * at most --max-body-bytes per connection. */
static void reserve_next(bd_http_t *h, conn_t *c)
{
    h2o_buffer_t *in = c->sock->input;
    size_t want = c->last_body + RESERVE_HEAD_BYTES;
    if (c->upgraded || c->refused || c->last_body < RESERVE_MIN_BYTES ||
        c->last_body > h->max_body_bytes || in->size != 0 || (in->bytes && in->capacity >= want)) {
        return;
    }
    h2o_buffer_reserve(&c->sock->input, want); /* h2o would have, for such a body */
}

static void on_rewatch(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, rewatch_entry, entry);
    watch_reads(c->h, c);
    if (release_held(c)) {
        return;
    }
    reserve_next(c->h, c);
    count_buffer(c);
}

static void on_head_tick(h2o_timeout_entry_t *entry)
{
    bd_http_t *h = H2O_STRUCT_FROM_MEMBER(bd_http_t, head_entry, entry);
    uint64_t now = bd_now_us();
    unsigned long long secs = (unsigned long long)(h->head_timeout_us / 1000000);
    char msg[160];
    for (bd_list_t *n = h->lingering.next, *next; n != &h->lingering; n = next) {
        next = n->next;
        linger_t *l = BD_CONTAINER_OF(n, linger_t, link);
        if (now >= l->end_us) {
            h2o_socket_close(l->sock); /* frees l */
        }
    }
    for (bd_list_t *n = h->conn_list.next; n != &h->conn_list; n = n->next) {
        conn_t *c = BD_CONTAINER_OF(n, conn_t, link);
        count_buffer(c);
        if (c->discarding &&
            (now - c->since_us >= h->head_timeout_us || now >= c->discard_end_us)) {
            c->discarding = false;   /* a refused body stalled or took too long: close */
            reset_on_close(c->sock); /* (on_read_discard, which TLS reads go to, does not) */
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
        }
        if (c->upgraded || c->refused || c->handshaking) {
            continue;
        }
        h2o_buffer_t *in = c->sock->input;
        size_t size = in ? in->size : 0;
        int phase = c->busy ? PHASE_BUSY : size == 0 ? PHASE_IDLE : PHASE_HEAD;
        if (phase == PHASE_HEAD && has_head_end(in->bytes, size)) {
            phase = PHASE_BODY;
        } else if (phase == PHASE_HEAD && h->closing_idle && only_line_ends(in->bytes, size)) {
            phase = PHASE_IDLE; /* empty lines between requests (RFC 9112 2.2): no request */
        }
        bool growing = phase == PHASE_BODY || (h->closing_idle && phase == PHASE_HEAD);
        if (phase != c->phase || (growing && size != c->seen_size)) {
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
        } else if (h->closing_idle && (phase == PHASE_HEAD || phase == PHASE_BODY) &&
                   now - c->since_us >= DRAIN_STALL_US) {
            /* Draining, and this request stopped coming: answer it now, not at the end. */
            refuse_head(c, 503, "the server is shutting down");
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
        } else if (phase == PHASE_IDLE && (late || h->closing_idle) && !bytes_waiting(c->sock)) {
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR); /* h2o then sees the end */
            c->refused = true;
        } else if (phase == PHASE_IDLE && in && in->bytes &&
                   now - c->since_us >= HEAD_CHECK_MS * 1000) {
            /* Idle a whole tick with an empty buffer reserve_next made: give it back. */
            h2o_buffer_dispose(&c->sock->input);
            h2o_buffer_init(&c->sock->input, &h2o_socket_buffer_prototype);
        } else if (phase == PHASE_BODY) {
            reserve_body(h, &c->sock->input);
        }
    }
    if (!bd_list_empty(&h->conn_list) || !bd_list_empty(&h->lingering)) {
        h2o_timeout_link(h->loop, &h->head_timeout, &h->head_entry);
    }
}

/* ---- TLS handshakes ----------------------------------------------------------------------
 * With --tls-cert each accepted connection first runs its handshake (h2o's socket layer,
 * OpenSSL underneath); only then does h2o's HTTP/1 take it, as h2o_accept would. The handshake
 * is bounded by --http-timeout-secs (h2o's handshake timeout list); a failed or late one closes
 * that connection alone, logged at debug (clients cause these). A plain-HTTP request on this
 * port is refused by OpenSSL before any TLS exists (a first record that starts with an HTTP
 * method), so it can be answered in plain text: a 400 that says to use https://. */

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->on_close.data;
    bd_http_t *h = c->h;
    /* h2o decrypts what came with the handshake's last records before calling us, and
     * h2o_http1_accept dispatches a request found there at once, before watch_reads can wrap
     * h2o's reader: that head is judged here. A refused one never reaches h2o's HTTP/1: the
     * connection stays `handshaking` (on_head_tick leaves it alone, the drain closes it, the
     * handshake timeout still bounds it) until refuse_tls has written the answer and closed it. */
    if (!err && sock->input->size > 0 && !check_head(h, c)) {
        return;
    }
    c->handshaking = false;
    if (h2o_timeout_is_linked(&c->handshake_entry)) {
        h2o_timeout_unlink(&c->handshake_entry);
    }
    if (!err) {
        h2o_http1_accept(&h->accept_ctx, sock, c->accepted);
        watch_reads(h, c);
        return;
    }
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST) {
        char resp[256];
        size_t n = raw_reply(resp, sizeof resp, 400, NULL,
                             "this port speaks HTTPS (TLS) only: use https:// or wss://");
        const char *head_end = strstr(resp, "\r\n\r\n");
        if (c->plain_head && head_end) {
            n = (size_t)(head_end + 4 - resp); /* a HEAD's answer has no body */
        }
        if (send(h2o_socket_get_fd(sock), resp, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            BD_DEBUG("http", "400 not sent: %s", strerror(errno));
        }
    }
    char why[BD_LOG_TEXT_MAX];
    BD_DEBUG("http", "tls handshake failed reason=%s",
             bd_log_quoted(why, sizeof why,
                           e && ERR_reason_error_string(e) ? ERR_reason_error_string(e) : err));
    ERR_clear_error();
    h2o_socket_close(sock); /* frees c (on_conn_close) */
}

static void on_handshake_timeout(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, handshake_entry, entry);
    BD_DEBUG("http", "tls handshake timed out");
    c->handshaking = false;
    h2o_socket_close(c->sock); /* frees c (on_conn_close) */
}

/* A connection's first bytes, read before its handshake starts (h2o hands them to it): only to
 * know whether a plain-HTTP request, which OpenSSL tells apart (on_handshake), is a HEAD,
 * whose 400 has no body. Bytes that could still begin "HEAD " wait for more (a TLS record
 * never starts so), within the handshake's time. */
static void on_first_bytes(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->on_close.data;
    if (err) {
        h2o_socket_close(sock); /* frees c (on_conn_close) */
        return;
    }
    size_t n = sock->input->size < 5 ? sock->input->size : 5;
    if (n < 5 && (n == 0 || memcmp(sock->input->bytes, "HEAD ", n) == 0)) {
        return;
    }
    c->plain_head = n == 5 && memcmp(sock->input->bytes, "HEAD ", 5) == 0;
    h2o_socket_read_stop(sock);
    h2o_socket_ssl_handshake(sock, c->h->ssl_ctx, NULL, on_handshake);
}

static void start_tls(bd_http_t *h, conn_t *c)
{
    c->handshaking = true;
    c->accepted = *h2o_get_timestamp(&h->ctx, NULL, NULL);
    c->handshake_entry.cb = on_handshake_timeout;
    h2o_timeout_link(h->loop, &h->ctx.handshake_timeout, &c->handshake_entry);
    h2o_socket_read_start(c->sock, on_first_bytes);
}

/* One count per pause: the retries every ACCEPT_RETRY_MS while clients wait are the same
 * pause, until a connection is taken again. */
static void count_refusal(bd_http_t *h)
{
    if (!h->refusing) {
        h->refusing = true;
        bd_metrics_connections_refused_add(h->metrics, 1);
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
            if (i == 0) {
                count_refusal(h); /* woken for a client it cannot take; later, none may wait */
            }
            accept_pause(h);
            break;
        }
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (!h->refusing) {
                    BD_WARN("http", "accept paused reason=\"%s\" open_connections=%zu",
                            strerror(errno), h->conns);
                }
                count_refusal(h);
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
        h->refusing = false;
        c->h = h;
        c->sock = sock;
        c->linger_fd = -1;
        c->rewatch_entry.cb = on_rewatch;
        bd_list_push_back(&h->conn_list, &c->link);
        h->conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = c;
        if (!h2o_timeout_is_linked(&h->head_entry)) {
            h2o_timeout_link(h->loop, &h->head_timeout, &h->head_entry);
        }
        if (h->ssl_ctx) {
            start_tls(h, c);
        } else {
            h2o_accept(&h->accept_ctx, sock);
            watch_reads(h, c);
        }
    }
}

/* A listening socket on host:port (non-blocking); -1 with err set when there is none. */
static int open_listener(const char *host, int port, bd_err_t *err)
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
        bd_err_set(err, BD_EIO, "cannot listen on %s:%d: %s", host, port, strerror(saved));
    }
    return fd;
}

int bd_http_check_listen(const char *host, int port, bd_err_t *err)
{
    int fd = open_listener(host, port, err); /* port 0 too: the host may be the problem */
    if (fd >= 0) {
        close(fd);
    }
    return fd < 0 ? err->code : 0;
}

static int bind_listener(bd_http_t *h, const char *host, int port, bd_err_t *err)
{
    int fd = open_listener(host, port, err);
    if (fd < 0) {
        return err->code;
    }
    int saved = 0;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        saved = errno;
        close(fd);
        return bd_err_set(err, BD_EIO, "cannot read the address of %s:%d: %s", host, port,
                          strerror(saved));
    }
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
    h->budget = opts->budget;
    h->max_connections = opts->max_connections;
    h->max_header_bytes = opts->max_header_bytes ? opts->max_header_bytes : 16384;
    h->model_control = opts->model_control;
    h->gate = opts->gate;
    h->strict_readiness = opts->strict_readiness;
    h->allow_origins = opts->allow_origins;
    bd_buf_init(&h->out);
    bd_buf_init(&h->zout);
    bd_list_init(&h->watch);
    bd_list_init(&h->conn_list);
    bd_list_init(&h->lingering);
    h2o_config_init(&h->config);
    /* h2o refuses a chunked body once it reaches its bound, one of exactly --max-body-bytes
     * too: its bound is one byte more, and request_head_ok refuses what passes it. */
    h->config.max_request_entity_size = opts->max_body_bytes + 1;
    /* Idle connections, heads and bodies that stop arriving are timed by on_head_tick. */
    uint64_t timeout_s = opts->timeout_secs > 0 ? (uint64_t)opts->timeout_secs : 10;
    h->head_timeout_us = timeout_s * 1000000;
    h->config.http1.req_timeout = BACKSTOP_TIMEOUT_MS;
    /* A TLS handshake that stops is closed (start_tls), after as long. */
    h->config.handshake_timeout = timeout_s * 1000;
    /* h2o moves a socket buffer past 32 MB into a memory-mapped file under /tmp, so every
     * large body would be written to disk as it arrives; --max-body-bytes bounds the buffer,
     * which stays in memory. */
    h2o_socket_buffer_mmap_settings.threshold = SIZE_MAX;
    /* HTTP/2 stays off: h2o 2.2.5 lacks the rapid-reset fix (CVE-2023-44487). */
    h->config.http1.upgrade_to_http2 = 0;
    h->config.server_name = h2o_iovec_init(NULL, 0); /* add_server writes it */
    h2o_hostconf_t *host =
        h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler + sizeof h);
    handler->on_req = on_req;
    *(bd_http_t **)(handler + 1) = h;
    h2o_pathconf_t *filtered[] = {path, &host->fallback_path};
    for (size_t i = 0; i < 2; i++) {
        h2o_filter_t *f = h2o_create_filter(filtered[i], sizeof *f + sizeof h);
        f->on_setup_ostream = on_setup_ostream;
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
    /* Zero: on_rewatch runs in the loop turn that disposed the request, before the next poll,
     * as long as replies end before this list's turn (socket callbacks and the mailbox run
     * first; no timeout list set up after this one ends an HTTP reply). watch_reads and a
     * held head (hold_refused) rely on it. */
    h2o_timeout_init(h->loop, &h->rewatch_timeout, 0);
    h->head_entry.cb = on_head_tick;
    h->watch_init = true;
    /* TLS: start_tls runs each connection's handshake, so accept_ctx.ssl_ctx stays NULL. */
    h->ssl_ctx = opts->tls;
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
    /* HTTP/1 reads only this flag (no keep-alive after it). h2o_context_request_shutdown
     * would also arm HTTP/2's graceful-shutdown timer, which outlives the drain. */
    h->ctx.shutdown_requested = 1;
    if (h->listener) {
        /* Connections the kernel completed since the loop last accepted would be reset by the
         * close (a proxy opening one per request saw a 502): taken first, their requests get
         * the drain's 503. on_accept takes up to 64 a call. */
        for (int i = 0; i < 16; i++) {
            size_t before = h->conns;
            on_accept(h->listener, NULL);
            if (h->conns - before < 64) {
                break;
            }
        }
        h2o_socket_read_stop(h->listener);
        h2o_socket_close(h->listener);
        h->listener = NULL;
    }
    /* A connection still in its TLS handshake has sent no request: close it now rather than
     * have the drain wait for it. */
    for (bd_list_t *n = h->conn_list.next, *next; n != &h->conn_list; n = next) {
        next = n->next;
        conn_t *c = BD_CONTAINER_OF(n, conn_t, link);
        if (c->handshaking) {
            c->handshaking = false;
            h2o_socket_close(c->sock); /* frees c (on_conn_close) */
        }
    }
}

void bd_http_close_idle(bd_http_t *h)
{
    /* Idle keep-alive connections would wait for their next request (h2o drops keep-alive
     * only for requests that arrive after the shutdown request): the next head check closes
     * each one that holds no request, once its reply is written. A request still arriving
     * (h2o's own timeout, set to zero, would cut it) is read to its end and answered 503. */
    h->closing_idle = true;
    if (!bd_list_empty(&h->conn_list) && !h2o_timeout_is_linked(&h->head_entry)) {
        h2o_timeout_link(h->loop, &h->head_timeout, &h->head_entry);
    }
}

void bd_http_close_all(bd_http_t *h)
{
    h->ctx.http1.req_timeout.timeout = 0; /* what h2o still times closes at its next turn */
    for (bd_list_t *n = h->conn_list.next; n != &h->conn_list; n = n->next) {
        conn_t *c = BD_CONTAINER_OF(n, conn_t, link);
        if (!c->upgraded) { /* a WebSocket's socket is stream/'s to close */
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
        }
    }
    for (bd_list_t *n = h->lingering.next; n != &h->lingering; n = n->next) {
        shutdown(h2o_socket_get_fd(BD_CONTAINER_OF(n, linger_t, link)->sock), SHUT_RDWR);
    }
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
    if (h->refuse_unlogged) {
        BD_WARN("http",
                "%" PRIu64 " more connections were closed from their head since the last "
                "'closing a connection' line",
                h->refuse_unlogged);
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
    bd_buf_dispose(&h->zout);
    free(h);
}
