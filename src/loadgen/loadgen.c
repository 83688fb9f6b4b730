/* loadgen.c: runs one level of load: one epoll loop over non-blocking keep-alive
 * connections, each carrying at most one request at a time (no pipelining).
 *
 * Closed loop: `concurrency` slots, one connection each; a slot sends its next request the
 * moment the previous one ends, so exactly that many requests are always outstanding.
 * Latency runs from the moment a request is issued (connect time included after a
 * reconnect). Requests started while measuring are the measured ones.
 *
 * Threads: one, the caller's; the loop owns every connection and the level's histograms.
 *
 * Open loop: send times come from a schedule (constant, Poisson or bursty) that never waits for
 * replies. A due request takes an idle connection or opens a new one (up to
 * max_connections); if none can be had it waits in a FIFO. Its latency always runs from its
 * scheduled time, so a slow server cannot hide its queueing in the generator's (no
 * coordinated omission). Requests scheduled while measuring are the measured ones; after
 * measuring they are waited for (up to the timeout). How late each was written after its
 * scheduled time is the send lag; a large one means the generator, not the server, set
 * the pace, and the level is flagged.
 *
 * Timeline of a level: warm-up (nothing counted), measurement in windows of window_us
 * (throughput per window for the stability rule), then a drain so that the next level
 * starts on a quiet server. Every measured request's outcome is counted; the rates and
 * windows count every reply that ends while measuring, a warm-up request's too: in a steady
 * state those stand in for the measured requests still out when measuring ends, where
 * counting only the measured ones' would read a latency's worth of replies short.
 *
 * An https:// target: each connection runs its TLS handshake after its TCP connect (counted in
 * the latency of the request that opened it, as the connect is) and then carries requests as
 * a plain one does, through its own SSL session; sessions are not resumed.
 *
 * Events carry (generation << 32 | index) so an event for a socket closed earlier in the same
 * batch is recognised and dropped. A connection is never freed inside its own handler:
 * connections live in one array for the whole level.
 *
 * Threads: the calling thread only; nothing is shared. */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "loadgen/loadgen_internal.h"

#define HIST_HIGHEST_US ((uint64_t)3600 * 1000000) /* one hour */
#define HIST_DIGITS 3
#define RECV_BUF_BYTES (256 * 1024)
#define CONNECT_RETRY_US 10000 /* after a failed connect a closed-loop slot waits this long */
#define TIMEOUT_SCAN_US 1000
#define PROGRESS_US 5000000     /* a progress line this often while a level measures */
#define PROGRESS_TTY_US 1000000 /* ... or, on a terminal, a status line rewritten this often */
#define MAX_EVENTS 512

enum { C_IDLE = 0, C_CONNECTING, C_HANDSHAKE, C_SENDING, C_WAITING, C_RETRY };

typedef struct {
    int fd; /* -1 when closed */
    int state;
    uint32_t gen;  /* bumped whenever fd changes */
    bool busy;     /* carries a request */
    bool want_out; /* EPOLLOUT is registered */
    /* Its outcome is measured: open loop, it was scheduled while measuring; closed loop with
     * --requests N, it is one of the first N started while measuring (exactly N, whatever
     * ends in the same turn); closed loop by duration, it started while measuring. Each is
     * waited for after the measured time (up to the timeout), so a reply slower than the
     * level still counts, with its latency; the rates are of the replies that ended inside
     * the measured time. */
    bool measured;
    size_t woff;
    uint64_t t_start; /* latency reference: issue time (closed) or scheduled time (open) */
    uint64_t retry_at;
    bd_lg_http_t http;
    SSL *ssl; /* https://: the connection's TLS session */
} conn_t;

typedef struct {
    const bd_lg_target_t *t;
    const bd_lg_run_opts_t *ro;
    bd_lg_result_t *res;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int ep;
    SSL_CTX *tls; /* https:// */
    conn_t *conns;
    size_t n_conns;   /* allocated */
    size_t n_created; /* open loop: conns[0..n_created) have been used */
    uint32_t *spare;  /* open loop: stack of connections without a request */
    size_t n_spare;
    uint64_t *pend; /* open loop: scheduled times waiting for a connection (ring) */
    size_t pend_head, pend_len, pend_cap;
    uint64_t in_flight;
    char *rbuf;
    bd_hdr_t *lat;
    bd_hdr_t *lag;
    /* timeline */
    uint64_t t_begin, t0, t1;
    bool measuring, stopped;
    uint64_t win_start, win_count;
    uint64_t measured_done;   /* closed: measured outcomes; open: measured scheduled */
    uint64_t done_in_measure; /* replies ended while measuring */
    uint64_t ok_in_measure;
    uint64_t limit_hits; /* scheduled requests that waited for a connection */
    size_t pend_counted; /* of the pending ones (from the head), those counted in limit_hits */
    uint64_t no_fds;     /* sockets this process could not make (EMFILE, ENFILE) */
    size_t n_retry;      /* closed loop: slots waiting in C_RETRY */
    uint64_t last_scan;
    uint64_t started_measured;  /* closed loop with --requests: requests started while measuring */
    uint64_t first_measured_us; /* with --requests: when the first measured one started (closed
                                 * loop) or was scheduled (open loop) */
    uint64_t open_end_us;       /* open loop with --requests: when measuring ends (0: not known
                                 * yet); no request is scheduled after the N */
    uint64_t next_progress;     /* when the next progress line is due */
    bool tty;                   /* stderr is a terminal: one status line, rewritten in place */
    bool status_shown;          /* ... and it is on the screen now */
    uint64_t refused_since;     /* a connect was refused then, and nothing succeeded since */
} loop_t;

static const char *err_names[BD_LG_ERR_COUNT_] = {"timeout", "refused", "connect", "reset",
                                                  "protocol"};

const char *bd_lg_err_name(bd_lg_err_kind_t k)
{
    return (unsigned)k < BD_LG_ERR_COUNT_ ? err_names[k] : "unknown";
}

static bool is_open(const loop_t *L)
{
    return L->ro->mode == BD_LG_OPEN;
}

static void ep_set(loop_t *L, conn_t *c, bool out, bool add)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0)};
    ev.data.u64 = ((uint64_t)c->gen << 32) | (uint64_t)(c - L->conns);
    epoll_ctl(L->ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

static void conn_close(conn_t *c)
{
    SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
        c->gen++;
    }
    c->state = C_IDLE;
    c->want_out = false;
    bd_lg_http_reset(&c->http);
}

/* ---- outcomes -------------------------------------------------------------------------- */

/* Closed loop with --requests N: the N are all started; a free slot waits. */
static bool all_started(const loop_t *L)
{
    return !is_open(L) && L->ro->requests > 0 && L->measuring &&
           L->started_measured >= L->ro->requests;
}

static void spare_push(loop_t *L, conn_t *c)
{
    L->spare[L->n_spare++] = (uint32_t)(c - L->conns);
}

static void start_request(loop_t *L, conn_t *c, uint64_t t_start, bool measured, uint64_t now);

/* The request on `c` ended (reply or error): free the slot for what comes next. A closed-loop
 * slot sends again at once after a reply; after an error it waits for the retry pass of the
 * loop (a little longer after a failed connect), so errors never recurse. */
static void request_ended(loop_t *L, conn_t *c, uint64_t now, bool error, bool failed_connect)
{
    c->busy = false;
    L->in_flight--;
    if (is_open(L)) {
        spare_push(L, c);
    } else if (all_started(L)) {
        c->state = C_IDLE; /* nothing more to send: the N are out */
    } else if (!error && !L->stopped) {
        start_request(L, c, now, false, now);
    } else {
        c->state = C_RETRY;
        c->retry_at = failed_connect ? now + CONNECT_RETRY_US : now;
        L->n_retry++;
    }
}

static void on_error(loop_t *L, conn_t *c, bd_lg_err_kind_t kind, uint64_t now)
{
    if (c->measured) {
        L->res->errors[kind]++;
        if (!is_open(L)) {
            L->measured_done++;
        }
    }
    conn_close(c);
    request_ended(L, c, now, true, kind == BD_LG_ERR_REFUSED || kind == BD_LG_ERR_CONNECT);
}

static void on_reply(loop_t *L, conn_t *c, uint64_t now)
{
    int status = c->http.status;
    L->refused_since = 0;
    if (L->measuring) {
        L->win_count++;
        L->done_in_measure++;
        L->ok_in_measure += status >= 200 && status < 300;
    }
    if (c->measured) {
        bd_lg_result_t *r = L->res;
        bd_hdr_record(L->lat, now > c->t_start ? now - c->t_start : 0);
        r->responses++;
        r->ok += status >= 200 && status < 300;
        r->status[status < BD_LG_STATUS_MAX ? status : 0]++;
        if (!is_open(L)) {
            L->measured_done++;
        }
    }
    if (c->http.keep_alive) {
        bd_lg_http_reset(&c->http);
        c->state = C_IDLE;
    } else {
        conn_close(c);
    }
    request_ended(L, c, now, false, false);
}

/* ---- sending --------------------------------------------------------------------------- */

static void try_write(loop_t *L, conn_t *c, uint64_t now)
{
    const char *req = L->t->request;
    size_t len = L->t->request_len;
    while (c->woff < len) {
        short wait;
        ssize_t n = bd_lg_io_send(c->fd, c->ssl, req + c->woff, len - c->woff, &wait);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && wait) {
            if (c->want_out != (wait == POLLOUT)) {
                ep_set(L, c, wait == POLLOUT, false); /* POLLIN: on_event writes on EPOLLIN */
            }
            return;
        }
        on_error(L, c, BD_LG_ERR_RESET, now);
        return;
    }
    c->state = C_WAITING;
    if (c->want_out) {
        ep_set(L, c, false, false);
    }
}

static void connect_failed(loop_t *L, conn_t *c, int e, uint64_t now)
{
    if (e == ECONNREFUSED && L->refused_since == 0) {
        L->refused_since = now;
    }
    on_error(L, c, e == ECONNREFUSED ? BD_LG_ERR_REFUSED : BD_LG_ERR_CONNECT, now);
}

/* The TCP connect is done: send, after the TLS handshake for https://. */
static void connected(loop_t *L, conn_t *c, uint64_t now)
{
    L->refused_since = 0;
    if (L->tls && !c->ssl) {
        if (!(c->ssl = bd_lg_tls_ssl(L->tls, L->t, c->fd, NULL))) {
            on_error(L, c, BD_LG_ERR_CONNECT, now);
            return;
        }
        c->state = C_HANDSHAKE;
    }
    if (c->state == C_HANDSHAKE) {
        int r = SSL_connect(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                on_error(L, c, BD_LG_ERR_CONNECT, now); /* the metadata GET checked the cert */
            } else if (c->want_out != (e == SSL_ERROR_WANT_WRITE)) {
                ep_set(L, c, e == SSL_ERROR_WANT_WRITE, false);
            }
            return;
        }
    }
    c->state = C_SENDING;
    try_write(L, c, now);
}

/* Put the request on `c` (connecting first when it has no socket). */
static void start_request(loop_t *L, conn_t *c, uint64_t t_start, bool measured, uint64_t now)
{
    c->busy = true;
    c->measured = is_open(L) ? measured : L->measuring;
    if (!is_open(L) && L->ro->requests > 0 && L->measuring) {
        c->measured = L->started_measured < L->ro->requests;
        if (c->measured && L->started_measured == 0) {
            L->first_measured_us = now;
        }
        L->started_measured += c->measured;
    }
    c->t_start = t_start;
    c->woff = 0;
    L->in_flight++;
    if (c->measured) {
        L->res->sent++;
    }
    if (c->fd >= 0) {
        c->state = C_SENDING;
        try_write(L, c, now);
        return;
    }
    int fd = socket(L->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        L->no_fds += errno == EMFILE || errno == ENFILE;
        connect_failed(L, c, errno, now);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->gen++;
    bd_lg_http_reset(&c->http);
    if (connect(fd, (struct sockaddr *)&L->addr, L->addrlen) == 0) {
        ep_set(L, c, false, true);
        connected(L, c, now);
    } else if (errno == EINPROGRESS) {
        ep_set(L, c, true, true);
        c->state = C_CONNECTING;
    } else {
        connect_failed(L, c, errno, now);
    }
}

/* ---- events ---------------------------------------------------------------------------- */

static void on_readable(loop_t *L, conn_t *c, uint64_t now)
{
    for (;;) {
        short wait;
        ssize_t n = bd_lg_io_recv(c->fd, c->ssl, L->rbuf, RECV_BUF_BYTES, &wait);
        if (n < 0 && wait) {
            if (c->want_out != (wait == POLLOUT)) {
                ep_set(L, c, wait == POLLOUT, false); /* TLS: on_event reads on EPOLLOUT */
            }
            return; /* nothing more now (TLS: maybe a session ticket, read and kept) */
        }
        if (!c->busy) { /* the server closed an idle keep-alive connection, or spoke unasked */
            conn_close(c);
            return;
        }
        if (n <= 0) {
            int rc = n == 0 ? bd_lg_http_eof(&c->http) : BD_LG_HTTP_ERROR;
            if (rc == BD_LG_HTTP_DONE && c->state == C_WAITING) {
                c->http.keep_alive = false;
                on_reply(L, c, now);
            } else {
                on_error(L, c, BD_LG_ERR_RESET, now);
            }
            return;
        }
        size_t used;
        int rc = bd_lg_http_feed(&c->http, L->rbuf, (size_t)n, &used);
        if (rc == BD_LG_HTTP_ERROR) {
            on_error(L, c, BD_LG_ERR_PROTOCOL, now);
            return;
        }
        if (rc == BD_LG_HTTP_DONE) {
            if (used < (size_t)n || c->state != C_WAITING) {
                c->http.keep_alive = false; /* bytes nobody asked for: start afresh */
            }
            on_reply(L, c, now);
            return;
        }
        if (!c->ssl && (size_t)n < RECV_BUF_BYTES) {
            return; /* most likely drained; level-triggered epoll calls again if not */
        }
    }
}

static void on_event(loop_t *L, conn_t *c, uint32_t events, uint64_t now)
{
    if (c->state == C_CONNECTING) {
        int e = 0;
        socklen_t sl = sizeof e;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0) {
            e = errno;
        }
        if (e != 0) {
            connect_failed(L, c, e, now);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }
        connected(L, c, now);
        return;
    }
    if (c->state == C_HANDSHAKE) {
        connected(L, c, now);
        return;
    }
    /* TLS may want to read in the middle of a write, or write in the middle of a read. */
    if (c->ssl && (events & EPOLLIN) && c->state == C_SENDING) {
        try_write(L, c, now);
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->fd >= 0) {
        on_readable(L, c, now);
    } else if (c->ssl && (events & EPOLLOUT) && c->fd >= 0 && c->state == C_WAITING) {
        on_readable(L, c, now);
    }
    if ((events & EPOLLOUT) && c->fd >= 0 && c->state == C_SENDING) {
        try_write(L, c, now);
    }
}

/* ---- open loop ------------------------------------------------------------------------- */

static int pend_push(loop_t *L, uint64_t t)
{
    if (L->pend_len == L->pend_cap) {
        size_t cap, bytes;
        if (!bd_mul_size(L->pend_cap ? L->pend_cap : 1024, 2, &cap) ||
            !bd_mul_size(cap, sizeof *L->pend, &bytes)) {
            return BD_ENOMEM;
        }
        uint64_t *p = malloc(bytes);
        if (!p) {
            return BD_ENOMEM;
        }
        for (size_t i = 0; i < L->pend_len; i++) {
            p[i] = L->pend[(L->pend_head + i) % L->pend_cap];
        }
        free(L->pend);
        L->pend = p;
        L->pend_cap = cap;
        L->pend_head = 0;
    }
    L->pend[(L->pend_head + L->pend_len) % L->pend_cap] = t;
    L->pend_len++;
    return 0;
}

static uint64_t pend_pop(loop_t *L)
{
    uint64_t t = L->pend[L->pend_head];
    L->pend_head = (L->pend_head + 1) % L->pend_cap;
    L->pend_len--;
    L->pend_counted -= L->pend_counted > 0;
    return t;
}

/* A scheduled request is measured when its time falls inside the measurement. Its time
 * decides, never the moment it got a connection. */
static bool sched_measured(const loop_t *L, uint64_t t)
{
    return t >= L->t0 && (L->t1 == 0 || t < L->t1);
}

static void dispatch(loop_t *L, uint64_t now)
{
    while (L->pend_len > 0) {
        conn_t *c = NULL;
        if (L->n_spare > 0) {
            c = &L->conns[L->spare[--L->n_spare]];
        } else if (L->n_created < L->n_conns) {
            c = &L->conns[L->n_created++];
        } else {
            L->limit_hits += L->pend_len - L->pend_counted;
            L->pend_counted = L->pend_len;
            return;
        }
        uint64_t t = pend_pop(L);
        bool m = sched_measured(L, t);
        if (m) {
            bd_hdr_record(L->lag, now > t ? now - t : 0);
        }
        start_request(L, c, t, m, now);
    }
}

/* ---- timeline -------------------------------------------------------------------------- */

static bool windows_stable(const bd_lg_result_t *r, int k, double pct)
{
    if (r->n_windows < (size_t)k || k <= 0) {
        return false;
    }
    double sum = 0;
    for (size_t i = r->n_windows - (size_t)k; i < r->n_windows; i++) {
        sum += r->window_rps[i];
    }
    double mean = sum / k;
    if (mean <= 0) {
        return false; /* nothing came back: not a measurement that settled */
    }
    for (size_t i = r->n_windows - (size_t)k; i < r->n_windows; i++) {
        if (fabs(r->window_rps[i] - mean) > pct / 100.0 * mean) {
            return false;
        }
    }
    return true;
}

static void close_window(loop_t *L, uint64_t end)
{
    bd_lg_result_t *r = L->res;
    double secs = (double)(end - L->win_start) / 1e6;
    if (secs > 0 && r->n_windows < BD_LG_MAX_WINDOWS) {
        r->window_rps[r->n_windows++] = (double)L->win_count / secs;
    }
    L->win_start = end;
    L->win_count = 0;
}

static void stop_measuring(loop_t *L, uint64_t end)
{
    L->measuring = false;
    L->stopped = true;
    L->t1 = end;
}

uint64_t bd_lg_window_us(const bd_lg_run_opts_t *ro)
{
    uint64_t w = ro->window_us ? ro->window_us : ro->requests > 0 ? 1000000 : ro->duration_us / 5;
    w = w < 10000 ? 10000 : w;
    /* --duration 300ms measures 300 ms, whatever --window */
    return ro->requests == 0 && w > ro->duration_us ? ro->duration_us : w;
}

/* Advance warm-up -> measuring -> stopped as time passes. */
static void tick(loop_t *L, uint64_t now, uint64_t window_us, int k, double pct)
{
    const bd_lg_run_opts_t *ro = L->ro;
    if (!L->measuring && !L->stopped && now >= L->t0) {
        L->measuring = true;
        L->win_start = L->t0;
    }
    while (L->measuring && now >= L->win_start + window_us) {
        uint64_t end = L->win_start + window_us;
        close_window(L, end);
        if (ro->requests > 0) {
            continue;
        }
        uint64_t elapsed = end - L->t0;
        bool stable = windows_stable(L->res, k, pct);
        if (elapsed >= ro->duration_us &&
            (stable || elapsed >= ro->max_duration_us || L->res->n_windows >= BD_LG_MAX_WINDOWS)) {
            stop_measuring(L, end);
        }
    }
    if (L->measuring && !is_open(L) && ro->requests > 0 && L->measured_done >= ro->requests) {
        close_window(L, now); /* open loop: when the next would be sent (run_level) */
        stop_measuring(L, now);
    }
}

/* While a long level measures: one line on stderr every PROGRESS_US, so that a run of
 * minutes shows it is alive and how it goes; on a terminal, one status line rewritten every
 * PROGRESS_TTY_US (cleared at the level's end: status_clear). */
static void progress(loop_t *L, uint64_t now)
{
    if (L->ro->quiet || !L->measuring || now < L->next_progress) {
        return;
    }
    uint64_t every = L->tty ? PROGRESS_TTY_US : PROGRESS_US;
    while (L->next_progress <= now) { /* after a stall, one line, not one per interval missed */
        L->next_progress += every;
    }
    const bd_lg_result_t *r = L->res;
    uint64_t errors = r->responses - r->ok;
    for (int k = 0; k < BD_LG_ERR_COUNT_; k++) {
        errors += r->errors[k];
    }
    double s = (double)(now - L->t0) / 1e6;
    fprintf(stderr, "%sbench: %s=%g measuring %.0fs: %llu replies, %.1f/s, errors=%llu%s",
            L->tty ? "\r" : "", is_open(L) ? "rate" : "concurrency", r->level, s,
            (unsigned long long)r->responses, s > 0 ? (double)L->done_in_measure / s : 0.0,
            (unsigned long long)errors, L->tty ? "\033[K" : "\n");
    L->status_shown = L->tty;
}

static void status_clear(loop_t *L)
{
    if (L->status_shown) {
        fputs("\r\033[K", stderr);
        L->status_shown = false;
    }
}

static void scan_timeouts(loop_t *L, uint64_t now)
{
    uint64_t to = L->ro->timeout_us;
    size_t n = is_open(L) ? L->n_created : L->n_conns;
    for (size_t i = 0; i < n; i++) {
        conn_t *c = &L->conns[i];
        if (c->busy && now - c->t_start > to) {
            on_error(L, c, BD_LG_ERR_TIMEOUT, now);
        }
    }
    while (L->pend_len > 0 && now - L->pend[L->pend_head] > to) {
        uint64_t t = pend_pop(L);
        if (sched_measured(L, t)) {
            L->res->errors[BD_LG_ERR_TIMEOUT]++;
        }
    }
}

static void wait_events(loop_t *L, struct epoll_event *evs, int *n, uint64_t wait_us)
{
    struct timespec ts = {.tv_sec = (time_t)(wait_us / 1000000),
                          .tv_nsec = (long)(wait_us % 1000000) * 1000};
    *n = epoll_pwait2(L->ep, evs, MAX_EVENTS, &ts, NULL);
    if (*n < 0 && errno == ENOSYS) {
        *n = epoll_wait(L->ep, evs, MAX_EVENTS, (int)((wait_us + 999) / 1000));
    }
}

static int resolve(loop_t *L, bd_err_t *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(L->t->host, L->t->port, &hints, &ai);
    if (rc != 0) {
        return bd_err_set(err, BD_EIO, "cannot resolve host '%s': %s", L->t->host,
                          gai_strerror(rc));
    }
    memcpy(&L->addr, ai->ai_addr, ai->ai_addrlen);
    L->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static void raise_fd_limit(size_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want + 64) {
        rl.rlim_cur = rl.rlim_max < want + 64 ? rl.rlim_max : want + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void loop_dispose(loop_t *L)
{
    if (L->conns) {
        for (size_t i = 0; i < L->n_conns; i++) {
            conn_close(&L->conns[i]);
            bd_lg_http_dispose(&L->conns[i].http);
        }
    }
    if (L->ep >= 0) {
        close(L->ep);
    }
    SSL_CTX_free(L->tls);
    free(L->conns);
    free(L->spare);
    free(L->pend);
    free(L->rbuf);
    bd_hdr_free(L->lat);
    bd_hdr_free(L->lag);
}

static void describe_behind(loop_t *L, bd_lg_result_t *r)
{
    uint64_t max_lag = L->ro->max_send_lag_us ? L->ro->max_send_lag_us : 10000;
    bool lag = r->send_lag_p99_us > (double)max_lag;
    bool unsent = r->sent < r->scheduled;
    r->fell_behind = lag || unsent;
    if (!r->fell_behind) {
        return;
    }
    bd_buf_t b;
    bd_buf_init(&b);
    if (lag) {
        bd_buf_printf(&b, "p99 send lag %.0f us is above %llu us", r->send_lag_p99_us,
                      (unsigned long long)max_lag);
    }
    if (unsent) {
        bd_buf_printf(&b, "%sonly %llu of %llu scheduled requests were sent", lag ? "; " : "",
                      (unsigned long long)r->sent, (unsigned long long)r->scheduled);
    }
    if (L->limit_hits) {
        bd_buf_printf(&b, "; %llu requests waited for a connection, all %zu being busy",
                      (unsigned long long)L->limit_hits, L->n_conns);
    }
    snprintf(r->behind_reason, sizeof r->behind_reason, "%s", b.data ? b.data : "");
    bd_buf_dispose(&b);
}

/* Either loop: sockets bench could not make are its own fault, not the server's (they are
 * counted as connect errors, since those requests were never sent). */
static void describe_no_fds(const loop_t *L, bd_lg_result_t *r)
{
    if (L->no_fds == 0) {
        return;
    }
    size_t len = r->fell_behind ? strlen(r->behind_reason) : 0;
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    snprintf(r->behind_reason + len, sizeof r->behind_reason - len,
             "%sbench ran out of file descriptors %llu times (limit %llu; connect errors count "
             "them): raise ulimit -n or lower the connections",
             len ? "; " : "", (unsigned long long)L->no_fds, (unsigned long long)rl.rlim_cur);
    r->fell_behind = true;
}

int bd_lg_run_level(const bd_lg_target_t *t, const bd_lg_run_opts_t *ro, double level,
                    bd_lg_result_t *res, bd_err_t *err)
{
    memset(res, 0, sizeof *res);
    res->mode = ro->mode;
    res->level = level;
    bool open = ro->mode == BD_LG_OPEN;
    if (!t->request || !(level > 0) || (!open && (level < 1 || level > BD_LG_MAX_CONCURRENCY)) ||
        (open && level > BD_LG_MAX_RATE)) {
        return bd_err_set(err, BD_EINVAL,
                          open ? "a rate must be above 0 and at most 1e7 requests/s, got %g"
                               : "a concurrency must be from 1 to 100000, got %g",
                          level);
    }
    if (ro->requests == 0 && ro->duration_us == 0) {
        return bd_err_set(err, BD_EINVAL, "a level needs a duration or a request count");
    }
    loop_t L = {.t = t, .ro = ro, .res = res, .ep = -1};
    int rc = resolve(&L, err);
    if (rc) {
        return rc;
    }
    L.n_conns =
        open ? (size_t)(ro->max_connections > 0 ? ro->max_connections : 1024) : (size_t)level;
    raise_fd_limit(L.n_conns);
    L.conns = calloc(L.n_conns, sizeof *L.conns);
    L.spare = calloc(L.n_conns, sizeof *L.spare);
    L.rbuf = malloc(RECV_BUF_BYTES);
    L.lat = bd_hdr_new(HIST_HIGHEST_US, HIST_DIGITS);
    L.lag = bd_hdr_new(HIST_HIGHEST_US, HIST_DIGITS);
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (t->tls && !(L.tls = bd_lg_tls_ctx(t, err))) {
        rc = err ? err->code : BD_EINVAL;
        goto done;
    }
    if (!L.conns || !L.spare || !L.rbuf || !L.lat || !L.lag || L.ep < 0) {
        rc = bd_err_set(err, L.ep < 0 ? BD_EIO : BD_ENOMEM,
                        "cannot set up the load generator (%zu connections): %s", L.n_conns,
                        L.ep < 0 ? strerror(errno) : "out of memory");
        goto done;
    }
    for (size_t i = 0; i < L.n_conns; i++) {
        L.conns[i].fd = -1;
        bd_lg_http_init(&L.conns[i].http, NULL);
    }
    uint64_t window_us = bd_lg_window_us(ro);
    int k = ro->stable_windows > 0 ? ro->stable_windows : 3;
    double pct = ro->stable_pct > 0 ? ro->stable_pct : 10.0;
    uint64_t timeout = ro->timeout_us ? ro->timeout_us : 10000000;
    bd_lg_run_opts_t ro_local = *ro;
    ro_local.timeout_us = timeout;
    L.ro = &ro_local;

    bd_lg_sched_t sched;
    bd_lg_sched_init(&sched, ro->distribution, level, ro->seed);
    if (ro->burst > 0) {
        sched.burst = ro->burst;
    }
    uint64_t now = bd_now_us();
    L.t_begin = now;
    L.t0 = now + ro->warmup_us;
    L.tty = isatty(STDERR_FILENO) == 1;
    L.next_progress = L.t0 + (L.tty ? PROGRESS_TTY_US : PROGRESS_US);
    L.last_scan = now;
    uint64_t next_send = open ? L.t_begin + bd_lg_sched_next(&sched) : 0;
    uint64_t measured_sched = 0;
    uint64_t drain_deadline = 0;
    if (!open) {
        tick(&L, now, window_us, k, pct); /* without a warm-up the first requests are measured */
        for (size_t i = 0; i < L.n_conns && !all_started(&L); i++) {
            start_request(&L, &L.conns[i], now, false, now);
        }
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        now = bd_now_us();
        if (L.open_end_us && now >= L.open_end_us && !L.stopped) {
            close_window(&L, L.open_end_us);
            stop_measuring(&L, L.open_end_us);
        }
        tick(&L, now, window_us, k, pct);
        if (ro->interrupt && *ro->interrupt) {
            res->interrupted = true;
            if (L.measuring) {
                close_window(&L, now);
                stop_measuring(&L, now);
            } else if (!L.stopped) {
                L.t1 = L.t0; /* still warming up: nothing measured */
            }
            break;
        }
        if (L.refused_since && !L.stopped && now - L.refused_since >= BD_LG_GONE_US) {
            /* The server is gone (or closed its port): end the level; what is still out
             * drains as usual. */
            res->server_gone = true;
            res->gone_at_s = (double)(L.refused_since - L.t_begin) / 1e6;
            if (L.measuring) {
                close_window(&L, now);
            }
            stop_measuring(&L, L.measuring ? now : L.t0);
        }
        progress(&L, now);
        if (L.stopped && drain_deadline == 0) {
            drain_deadline = now + timeout;
        }
        if (open && !L.stopped && !L.open_end_us) {
            while (next_send <= now && !L.stopped) {
                if (next_send >= L.t0) {
                    if (ro->requests > 0 && measured_sched >= ro->requests) {
                        /* The level ends when the one after the N would go out: N intervals
                         * of the schedule. A burst holds several at one time, so a bursty
                         * level's N take N / rate, as its mean rate has them. */
                        uint64_t end = next_send;
                        if (ro->distribution == BD_LG_BURSTY) {
                            uint64_t n_us = (uint64_t)llround((double)ro->requests * 1e6 / level);
                            end =
                                L.first_measured_us + n_us > end ? L.first_measured_us + n_us : end;
                        }
                        L.open_end_us = end;
                        if (end <= now) {
                            close_window(&L, end);
                            stop_measuring(&L, end);
                            drain_deadline = now + timeout;
                        }
                        break;
                    }
                    if (measured_sched == 0 && ro->requests > 0) {
                        /* The level's time starts here, not at the warm-up's end: what ended
                         * in between (a warm-up burst's replies) is not in its rates. */
                        L.first_measured_us = next_send;
                        L.win_start = next_send;
                        L.win_count = L.done_in_measure = L.ok_in_measure = 0;
                        res->n_windows = 0;
                    }
                    measured_sched++;
                    L.measured_done = measured_sched;
                }
                if (pend_push(&L, next_send) != 0) {
                    rc = bd_err_set(err, BD_ENOMEM, "out of memory queueing scheduled requests");
                    goto done;
                }
                next_send = L.t_begin + bd_lg_sched_next(&sched);
            }
            res->scheduled = measured_sched;
        }
        if (open) {
            dispatch(&L, now);
        } else if (!L.stopped && L.n_retry > 0) {
            for (size_t i = 0; i < L.n_conns; i++) {
                conn_t *c = &L.conns[i];
                if (!c->busy && c->state == C_RETRY && now >= c->retry_at) {
                    L.n_retry--;
                    if (all_started(&L)) {
                        c->state = C_IDLE;
                    } else {
                        start_request(&L, c, now, false, now);
                    }
                }
            }
        }
        if (now - L.last_scan >= TIMEOUT_SCAN_US) {
            scan_timeouts(&L, now);
            L.last_scan = now;
        }
        if (L.stopped && ((L.in_flight == 0 && L.pend_len == 0) || now >= drain_deadline)) {
            break;
        }
        /* Sleep until the next thing due: a send, a window edge, a retry, a timeout scan. */
        uint64_t due = now + TIMEOUT_SCAN_US;
        if (!L.stopped) {
            uint64_t edge = L.measuring ? L.win_start + window_us : L.t0;
            due = edge < due ? edge : due;
            if (open && L.open_end_us) {
                due = L.open_end_us < due ? L.open_end_us : due;
            } else if (open && next_send < due) {
                due = next_send;
            }
        }
        int n = 0;
        wait_events(&L, evs, &n, due > now ? due - now : 0);
        if (n > 0) {
            now = bd_now_us();
        }
        for (int i = 0; i < n; i++) {
            uint32_t idx = (uint32_t)evs[i].data.u64;
            uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
            conn_t *c = &L.conns[idx];
            if (c->gen == gen && c->fd >= 0) {
                on_event(&L, c, evs[i].events, now);
            }
        }
    }
    /* Whatever is still outstanding after the drain deadline timed out (after an interrupt
     * it is dropped: loop_dispose closes its connections). */
    now = bd_now_us();
    for (size_t i = 0; i < L.n_conns && !res->interrupted; i++) {
        if (L.conns[i].busy) {
            on_error(&L, &L.conns[i], BD_LG_ERR_TIMEOUT, now);
        }
    }
    while (L.pend_len > 0 && !res->interrupted) {
        if (sched_measured(&L, pend_pop(&L))) {
            res->errors[BD_LG_ERR_TIMEOUT]++;
        }
    }
    /* With --requests N the level's time starts with the first of the N. Closed loop, it
     * ends with the last one's reply and the rates are the N's; open loop, it ends when the
     * N+1th would have been sent (N intervals of the schedule). Otherwise the rates are of
     * the replies that ended inside the measured time. */
    bool counted = !open && ro->requests > 0;
    if (ro->requests > 0 && L.first_measured_us > 0 && L.t1 > L.first_measured_us) {
        L.t0 = L.first_measured_us;
    }
    res->measured_s = (double)(L.t1 - L.t0) / 1e6;
    bd_lg_result_finish(res, L.lat);
    if (res->measured_s > 0 && !counted) {
        res->achieved_rps = (double)L.done_in_measure / res->measured_s;
        res->goodput_rps = (double)L.ok_in_measure / res->measured_s;
        res->mean_in_flight = res->achieved_rps * res->lat_mean_us / 1e6;
    }
    res->stable = windows_stable(res, k, pct);
    if (L.refused_since && !res->server_gone && !res->interrupted) {
        res->server_gone = true; /* it ended refusing, for less than BD_LG_GONE_US */
        res->gone_at_s = (double)(L.refused_since - L.t_begin) / 1e6;
    }
    res->send_lag_p99_us = res->send_lag_max_us = NAN; /* closed loop: none, as in the JSON */
    if (open) {
        res->send_lag_p99_us = (double)bd_hdr_percentile(L.lag, 99.0);
        res->send_lag_max_us = (double)bd_hdr_max(L.lag);
        describe_behind(&L, res);
    }
    describe_no_fds(&L, res);
    rc = 0;
done:
    status_clear(&L);
    loop_dispose(&L);
    return rc;
}

void bd_lg_result_finish(bd_lg_result_t *r, const bd_hdr_t *h)
{
    bool none = bd_hdr_count(h) == 0; /* no reply: no latency (NaN; the reports say so) */
    r->lat_min_us = none ? NAN : (double)bd_hdr_min(h);
    r->lat_mean_us = none ? NAN : bd_hdr_mean(h);
    r->lat_p50_us = none ? NAN : (double)bd_hdr_percentile(h, 50.0);
    r->lat_p90_us = none ? NAN : (double)bd_hdr_percentile(h, 90.0);
    r->lat_p99_us = none ? NAN : (double)bd_hdr_percentile(h, 99.0);
    r->lat_p999_us = none ? NAN : (double)bd_hdr_percentile(h, 99.9);
    r->lat_max_us = none ? NAN : (double)bd_hdr_max(h);
    uint64_t errs = 0;
    for (int k = 0; k < BD_LG_ERR_COUNT_; k++) {
        errs += r->errors[k];
    }
    uint64_t ended = r->responses + errs;
    r->success_rate = ended ? (double)r->ok / (double)ended : 0.0;
    if (r->measured_s > 0) {
        r->offered_rps = (double)(r->mode == BD_LG_OPEN ? r->scheduled : r->sent) / r->measured_s;
        r->achieved_rps = (double)r->responses / r->measured_s;
        r->goodput_rps = (double)r->ok / r->measured_s;
        r->mean_in_flight = r->achieved_rps * r->lat_mean_us / 1e6;
    }
}
