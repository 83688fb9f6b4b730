/* server.c: the event loop, the mailbox's and the signals' sockets in it, the front ends and
 * the drain (see server.h).
 *
 * One h2o evloop on the thread that calls bd_server_run. Three descriptors wake it besides
 * the clients' sockets: the listener (HTTP's), the mailbox's eventfd (every completion: a
 * scheduler's request, a repository load, a reloaded key file) and a signalfd for the stop
 * signals and SIGHUP, which reloads the API key file (gate/): a thread of its own reads it,
 * since a file system can stall, and the keys come back through the mailbox. The mailbox and
 * signal descriptors are dup'ed into the loop because h2o closes what it watches.
 *
 * Threads: the loop thread, and a short-lived reload thread per SIGHUP (reload_main, which
 * touches only its reload_t and, last, the mailbox), detached once its keys are in place. */
#include "server/server.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <h2o.h>
#include <h2o/socket/evloop.h>

#include "infer/infer.h"
#include "stream/stream.h"

/* How long the drain waits for clients to take their last replies and close. */
#define CLOSE_WAIT_US 5000000

struct bd_server {
    bd_repo_t *repo;
    bd_mailbox_t *mailbox;
    h2o_evloop_t *loop;
    h2o_socket_t *mailsock;
    h2o_socket_t *sigsock;
    bd_infer_t *infer;
    bd_stream_t *stream;
    bd_http_t *http;
    bd_gate_t *gate;    /* borrowed from the options; NULL: no keys, no limits */
    bd_budget_t budget; /* request bytes http and stream hold, against --max-buffered-bytes */
    bool stopping;
    bd_server_frontend_t frontends[BD_SERVER_MAX_FRONTENDS]; /* registered by the caller */
    size_t n_frontends;
    h2o_timeout_t flush_timeout; /* zero delay: the infer layer's flush, in the same turn */
    h2o_timeout_entry_t flush_entry;
    /* The SIGHUP reload under way (NULL: none), and whether another SIGHUP came meanwhile;
     * its thread, and whether that thread is still to be joined (one that posted while the
     * server was stopping: its last write to the mailbox must end before the mailbox does). */
    struct reload *reload;
    bool reload_again;
    pthread_t reload_thread;
    bool reload_join;
};

/* A model whose batches cost less than this runs a turn's requests on the loop (the infer
 * layer's inline_max_ns): handing them to its worker would cost more than the batch. */
#define INLINE_MAX_NS 50000u

/* The infer layer held a submit: flush from a zero-delay timer, still in this turn of the
 * loop, so that replies written there complete (and h2o resumes reading their connections)
 * before the loop updates its epoll set: no read stop and start reach the kernel. */
static void on_held(void *ctx)
{
    bd_server_t *s = ctx;
    if (!h2o_timeout_is_linked(&s->flush_entry)) {
        h2o_timeout_link(s->loop, &s->flush_timeout, &s->flush_entry);
    }
}

static void on_flush(h2o_timeout_entry_t *entry)
{
    bd_server_t *s = H2O_STRUCT_FROM_MEMBER(bd_server_t, flush_entry, entry);
    bd_infer_flush(s->infer);
}

static void on_mail(h2o_socket_t *sock, const char *err)
{
    bd_server_t *s = sock->data;
    (void)err;
    bd_mailbox_drain(s->mailbox);
}

/* A SIGHUP's reload of the key file: a thread reads it (from a copy of the path), parses it
 * and posts the keys to the loop, which puts them in place. `state`, under mu, settles who
 * frees this: the loop once the mail ran (PARSING: the thread parses and posts, and touches
 * nothing after posting), or the thread itself when the server stopped waiting for it while it
 * was still reading (ABANDONED, at exit: a read stalled on a file system must not keep the
 * process from ending). An abandoned thread neither parses nor enters libcrypto, whose state
 * the process's exit frees under it; the exit waits for one that is parsing. */
typedef struct reload {
    bd_mail_t mail;
    bd_server_t *s;
    pthread_mutex_t mu;
    enum { RELOAD_READING, RELOAD_PARSING, RELOAD_ABANDONED } state;
    bd_gate_keys_t *keys; /* the thread's result, the loop's once posted */
    bd_err_t err;
    char path[]; /* the key file */
} reload_t;

static void reload_free(reload_t *r)
{
    bd_gate_keys_free(r->keys);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void *reload_main(void *arg)
{
    reload_t *r = arg;
    size_t len = 0;
    char *text = bd_gate_keys_read(r->path, &len, &r->err);
    pthread_mutex_lock(&r->mu);
    bool abandoned = r->state == RELOAD_ABANDONED;
    r->state = RELOAD_PARSING;
    pthread_mutex_unlock(&r->mu);
    if (abandoned) {
        bd_gate_keys_text_free(text, len);
        reload_free(r);
        return NULL;
    }
    if (text) {
        r->keys = bd_gate_keys_parse(text, len, r->path, &r->err);
        bd_gate_keys_text_free(text, len);
    }
    bd_mailbox_post(r->s->mailbox, &r->mail); /* its last touch of r */
    return NULL;
}

static void reload_start(bd_server_t *s);

static void on_reloaded(bd_mail_t *mail)
{
    reload_t *r = BD_CONTAINER_OF(mail, reload_t, mail);
    bd_server_t *s = r->s;
    bd_gate_reload_apply(s->gate, r->keys, &r->err); /* logs what it did; takes the keys */
    r->keys = NULL;
    reload_free(r);
    s->reload = NULL;
    if (s->stopping) {
        s->reload_join = true; /* reload_settle joins it */
    } else {
        pthread_detach(s->reload_thread);
    }
    if (s->reload_again && !s->stopping) {
        s->reload_again = false;
        reload_start(s);
    }
}

/* One reload at a time: a SIGHUP during one asks for another after it. */
static void reload_start(bd_server_t *s)
{
    if (s->reload) {
        s->reload_again = true;
        return;
    }
    const char *path = bd_gate_keys_path(s->gate);
    reload_t *r = calloc(1, sizeof *r + strlen(path) + 1);
    int rc = r ? 0 : ENOMEM;
    if (rc == 0) {
        r->mail.cb = on_reloaded;
        r->s = s;
        pthread_mutex_init(&r->mu, NULL);
        strcpy(r->path, path);
        if ((rc = pthread_create(&s->reload_thread, NULL, reload_main, r)) != 0) {
            pthread_mutex_destroy(&r->mu);
        }
    }
    if (rc != 0) {
        free(r);
        BD_WARN("gate",
                "api keys reload failed; keeping the keys loaded before reason=\"cannot "
                "start a thread to read the file: %s\"",
                strerror(rc));
        return;
    }
    s->reload = r;
}

static void turn(bd_server_t *s, int32_t max_wait_ms);

/* At exit: a reload that is parsing or has posted is waited for (a moment: the mail is on its
 * way) and its thread joined; one still reading is left to finish and free itself. */
static void reload_settle(bd_server_t *s)
{
    s->reload_again = false;
    reload_t *r = s->reload;
    if (r) {
        pthread_mutex_lock(&r->mu);
        bool coming = r->state == RELOAD_PARSING;
        if (!coming) {
            BD_WARN("gate", "api keys reload still reading file=\"%s\"; exiting without it",
                    r->path);
            r->state = RELOAD_ABANDONED; /* r is the thread's now */
            s->reload = NULL;
            pthread_detach(s->reload_thread);
        }
        pthread_mutex_unlock(&r->mu);
        while (s->reload) {
            turn(s, 100);
        }
    }
    if (s->reload_join) {
        pthread_join(s->reload_thread, NULL);
        s->reload_join = false;
    }
}

static void on_signal(h2o_socket_t *sock, const char *err)
{
    bd_server_t *s = sock->data;
    struct signalfd_siginfo si;
    (void)err;
    while (read(h2o_socket_get_fd(sock), &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            if (s->stopping) {
                BD_INFO("server", "reload signal=%u ignored: shutting down", si.ssi_signo);
            } else if (bd_gate_keys_on(s->gate)) {
                reload_start(s);
            } else {
                BD_INFO("server", "reload signal=%u: nothing to reload (no --api-keys)",
                        si.ssi_signo);
            }
            continue;
        }
        if (!s->stopping) {
            BD_INFO("server", "shutdown signal=%u inflight=%zu", si.ssi_signo,
                    bd_infer_inflight(s->infer));
        }
        s->stopping = true;
    }
}

/* Watch a dup of `fd` in the loop (h2o closes the descriptors it watches). */
static h2o_socket_t *watch_fd(bd_server_t *s, int fd, h2o_socket_cb cb, bd_err_t *err)
{
    int dfd = fd >= 0 ? dup(fd) : -1;
    if (dfd < 0) {
        bd_err_set(err, BD_EIO, "cannot watch a descriptor in the event loop: %s", strerror(errno));
        return NULL;
    }
    h2o_socket_t *sock = h2o_evloop_socket_create(s->loop, dfd, H2O_SOCKET_FLAG_DONT_READ);
    sock->data = s;
    h2o_socket_read_start(sock, cb);
    return sock;
}

bd_server_t *bd_server_new(bd_repo_t *repo, bd_metrics_t *metrics, bd_mailbox_t *mailbox,
                           const bd_server_opts_t *opts, bd_err_t *err)
{
    bd_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    s->repo = repo;
    s->mailbox = mailbox;
    s->gate = opts->http.gate;
    s->budget.max = opts->max_buffered_bytes;
    s->loop = h2o_evloop_create();
    bd_infer_opts_t io = {.offload_bytes = BD_SERVER_OFFLOAD_BYTES,
                          .max_decode_bytes = opts->max_decode_bytes,
                          .group_submits = true,
                          .on_held = on_held,
                          .on_held_ctx = s,
                          .inline_max_ns = INLINE_MAX_NS,
                          .budget = &s->budget,
                          .metrics = metrics};
    h2o_timeout_init(s->loop, &s->flush_timeout, 0);
    s->flush_entry.cb = on_flush;
    s->infer = bd_infer_new(repo, mailbox, &io);
    bd_stream_opts_t so = {.max_inflight = opts->ws_max_inflight,
                           .idle_timeout_us = opts->ws_idle_timeout_us,
                           .max_message_bytes = opts->http.max_body_bytes,
                           .gate = opts->http.gate,
                           .budget = &s->budget};
    s->stream = s->infer ? bd_stream_new(s->loop, s->infer, metrics, &so) : NULL;
    if (!s->stream) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        goto fail;
    }
    if (!(s->mailsock = watch_fd(s, bd_mailbox_fd(mailbox), on_mail, err))) {
        goto fail;
    }
    bd_http_opts_t ho = opts->http;
    ho.budget = &s->budget;
    s->http = bd_http_new(s->loop, repo, metrics, s->infer, s->stream, &ho, err);
    if (!s->http) {
        goto fail;
    }
    return s;
fail:
    bd_server_free(s);
    return NULL;
}

int bd_server_port(const bd_server_t *s)
{
    return bd_http_port(s->http);
}

h2o_evloop_t *bd_server_loop(bd_server_t *s)
{
    return s->loop;
}

bd_infer_t *bd_server_infer(bd_server_t *s)
{
    return s->infer;
}

int bd_server_add_frontend(bd_server_t *s, const bd_server_frontend_t *fe)
{
    if (s->n_frontends == BD_SERVER_MAX_FRONTENDS) {
        return BD_EFULL;
    }
    s->frontends[s->n_frontends++] = *fe;
    return 0;
}

/* Any registered front end still reading (which == 0) or busy (which == 1). */
static bool frontends_pending(bd_server_t *s, int which)
{
    for (size_t i = 0; i < s->n_frontends; i++) {
        bd_server_frontend_t *fe = &s->frontends[i];
        if (which == 0 ? fe->reading(fe->ctx) : fe->busy(fe->ctx)) {
            return true;
        }
    }
    return false;
}

/* One turn of the loop, then the models this turn's requests went to are woken once each:
 * what one turn decoded for a model forms one batch. (on_flush usually did it already, within
 * the turn; this catches submits made after it ran.) */
static void turn(bd_server_t *s, int32_t max_wait_ms)
{
    h2o_evloop_run(s->loop, max_wait_ms);
    bd_infer_flush(s->infer);
}

int bd_server_run(bd_server_t *s, const sigset_t *stop_signals)
{
    bd_err_t err = {0};
    sigset_t watched = *stop_signals;
    sigaddset(&watched, SIGHUP);
    int sfd = signalfd(-1, &watched, SFD_NONBLOCK | SFD_CLOEXEC);
    s->sigsock = sfd >= 0 ? watch_fd(s, sfd, on_signal, &err) : NULL;
    if (sfd >= 0) {
        close(sfd);
    }
    if (!s->sigsock) {
        BD_ERROR("server", "cannot watch the stop signals: %s",
                 sfd < 0 ? strerror(errno) : err.msg);
        return BD_EIO;
    }
    while (!s->stopping) {
        turn(s, INT32_MAX);
    }
    /* Drain: refuse new connections, sockets and requests; answer what is queued. */
    bd_http_stop(s->http);
    bd_stream_shutdown(s->stream);
    for (size_t i = 0; i < s->n_frontends; i++) {
        s->frontends[i].stop(s->frontends[i].ctx);
    }
    /* What the front ends read still reaches its model before the repository closes (they
     * bound the wait themselves, e.g. when their server went away). */
    while (frontends_pending(s, 0)) {
        turn(s, 100);
    }
    bd_repo_close(s->repo);
    while (bd_infer_inflight(s->infer) > 0 || bd_repo_busy(s->repo)) {
        turn(s, 100);
    }
    while (frontends_pending(s, 1)) {
        turn(s, 100);
    }
    /* Every reply is queued: close idle connections once their replies are written; the
     * streams close themselves (1001) once theirs are. */
    bd_http_close_idle(s->http);
    uint64_t until = bd_now_us() + CLOSE_WAIT_US;
    while ((bd_http_connections(s->http) > 0 || bd_stream_connections(s->stream) > 0) &&
           bd_now_us() < until) {
        turn(s, 10);
    }
    if (bd_http_connections(s->http) > 0) {
        bd_http_close_all(s->http);
        until = bd_now_us() + CLOSE_WAIT_US / 5;
        while (bd_http_connections(s->http) > 0 && bd_now_us() < until) {
            turn(s, 10);
        }
    }
    reload_settle(s);
    BD_INFO("server", "drained; exiting open_connections=%zu open_streams=%zu",
            bd_http_connections(s->http), bd_stream_connections(s->stream));
    return 0;
}

void bd_server_poll(bd_server_t *s, int timeout_ms)
{
    turn(s, timeout_ms);
}

static void close_watch(h2o_socket_t *sock)
{
    if (sock) {
        h2o_socket_read_stop(sock);
        h2o_socket_close(sock);
    }
}

void bd_server_free(bd_server_t *s)
{
    if (!s) {
        return;
    }
    close_watch(s->sigsock);
    close_watch(s->mailsock);
    bd_stream_free(s->stream);
    bd_http_free(s->http);
    if (s->loop) {
        if (h2o_timeout_is_linked(&s->flush_entry)) {
            h2o_timeout_unlink(&s->flush_entry);
        }
        h2o_timeout_dispose(s->loop, &s->flush_timeout);
    }
    bd_infer_free(s->infer);
    if (s->loop) {
        /* Run once more so closed sockets are reaped before the loop goes away. */
        h2o_evloop_run(s->loop, 0);
        h2o_evloop_destroy(s->loop);
    }
    free(s);
}
