/* conn.c: one Redis connection on the server's h2o event loop (see ingest_internal.h).
 *
 * hiredis's async API does the protocol; this file is its adapter onto h2o's evloop, which
 * has no raw descriptor watcher: the descriptor is dup'ed into an h2o socket created with
 * H2O_SOCKET_FLAG_DONT_READ, so h2o only reports readiness (read_start for reads,
 * notify_write for one writable event); hiredis writes itself, and we read (in larger pieces
 * than hiredis would) into its reader. hiredis closes its descriptor and h2o its dup, so
 * neither closes the other's.
 *
 * hiredis is only ever given a numeric address (it would resolve a name with a blocking
 * getaddrinfo on the loop): the URL's own, or one of the addresses its name had at the last
 * lookup (resolve.c), tried in turn; or a unix socket's path (unix://), its one "address". A lost
 * connection (refused, reset, the server restarted) is retried with backoff from 100 ms doubling to
 * 5 s; the owner is told when it is up and when it went down, after hiredis ran every pending
 * callback with a NULL reply.
 *
 * A server that stops answering without closing the socket (SIGSTOP, a frozen host, a path
 * that drops packets) is found by a watchdog, since hiredis 0.14's async API has no timeouts:
 * "up" means the first command (PING, or SELECT; after AUTH when the URL has a password) was
 * answered, not merely that the TCP connect finished (the kernel completes it for a stopped
 * server), and a command left unanswered for timeout_us, with no byte arriving meanwhile and
 * none waiting in the socket, drops the connection like a reset would: every callback runs with a
 * NULL reply, the owner is told, and the reconnect backoff starts. Commands that reach the server
 * later on the dropped socket are harmless: the owner only ever sends commands that are safe to
 * repeat (reads re-read pending entries; result writes happen only while an entry is pending).
 *
 * Threads: the event-loop thread only. Ownership: the rconn is embedded in its owner; the
 * redisAsyncContext and the h2o socket are the rconn's. */
#include "ingest/ingest_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <h2o/socket/evloop.h>

#include "core/core.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define HELLO_TIMEOUT_MS 5000 /* the watchdog's bound on the first commands' replies */
#define IDLE_PING_MS 1000     /* an idle connection that is up is pinged after this silence */
#define SLOW_LOOKUP_MS 5000   /* a first lookup still under way this long is logged */
/* Reads per readable event, each of up to READ_BYTES. hiredis's own read takes 16 KiB, i.e.
 * 37 reads for one 600 KB frame; we read larger pieces and feed them to its reader. */
#define READS_PER_EVENT 16
#define READ_BYTES (256u << 10)

/* Exported by libhiredis (0.14 and 1.x) but not declared in its headers: runs the callbacks
 * of every reply the reader holds, as redisAsyncHandleRead does after its own read. */
void redisProcessCallbacks(redisAsyncContext *ac);

static char read_buf[READ_BYTES]; /* the event-loop thread's */

/* Why a connection that came up, or is connecting, elsewhere than the others leaves. */
static void follow_reason(char *buf, size_t n, const raddrs_t *a)
{
    snprintf(buf, n, "the other connections are on address %s", a->in_use);
}

static void look_again(raddrs_t *a)
{
    if (a->res) {
        resolver_want(a->res);
    }
}

/* A connect to `addr` failed before the connection came up. true when there is an address to
 * try now, without backoff: the one in use when `addr` is not it (the others moved on, or
 * are up there), or, while none is up, the next one after `addr`, until all failed in a row
 * (then a fresh lookup is asked for). false: back off and try again (the address in use, when
 * it failed itself). */
static bool next_address(raddrs_t *a, const char *addr)
{
    if (a->up > 0) {
        return strcmp(addr, a->in_use) != 0;
    }
    if (a->n == 0 || strcmp(addr, a->addrs[a->next]) != 0) {
        return a->failed > 0; /* another connection moved them on already: follow it */
    }
    a->next = (a->next + 1) % a->n;
    if (++a->failed < a->n) {
        return true;
    }
    a->failed = 0;
    look_again(a);
    return false;
}

static void went_down(rconn_t *c, const char *why)
{
    bool was_ready = c->ready;
    c->ready = false;
    c->ac = NULL;
    if (why) {
        snprintf(c->last_error, sizeof c->last_error, "%s", why);
    }
    if (c->closed) {
        return;
    }
    if (was_ready) {
        c->addrs->up--;
        look_again(c->addrs); /* lost: the name may have moved */
    } else if (c->addr[0] && next_address(c->addrs, c->addr)) {
        c->retry_at_us = 0; /* another address, at the next poll, without backoff */
        return;
    }
    c->retry_at_us = bd_now_us() + c->backoff_ms * 1000;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    if (c->on_state) {
        c->on_state(c, false);
    }
}

/* ---- the adapter: hiredis asks, h2o watches ------------------------------------------------ */

static void on_readable(h2o_socket_t *sock, const char *err)
{
    rconn_t *c = sock->data;
    (void)err;
    c->last_rx_us = bd_now_us();
    for (int i = 0; i < READS_PER_EVENT && c->ac; i++) {
        redisAsyncContext *ac = c->ac;
        if (!(ac->c.flags & REDIS_CONNECTED)) {
            redisAsyncHandleRead(ac); /* finishes the connect; may free ac (c->ac = NULL) */
            break;
        }
        ssize_t n;
        do {
            n = read(ac->c.fd, read_buf, sizeof read_buf);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        if (n <= 0) {
            /* The end of the stream or an error: hiredis's own read sees it too and runs its
             * disconnect (which may free ac: cleanup then sets c->ac = NULL). */
            redisAsyncHandleRead(ac);
            break;
        }
        /* A feed that fails leaves the reader's error, which the callbacks turn into a
         * disconnect; they may free ac likewise. */
        (void)redisReaderFeed(ac->c.reader, read_buf, (size_t)n);
        redisProcessCallbacks(ac);
        if ((size_t)n < sizeof read_buf) {
            break; /* the socket is drained */
        }
    }
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    rconn_t *c = sock->data;
    (void)err;
    c->write_armed = false;
    if (c->ac) {
        redisAsyncHandleWrite(c->ac);
    }
}

static void ev_add_read(void *priv)
{
    rconn_t *c = priv;
    if (c->sock && !c->reading) {
        c->reading = true;
        h2o_socket_read_start(c->sock, on_readable);
    }
}

static void ev_del_read(void *priv)
{
    rconn_t *c = priv;
    if (c->sock && c->reading) {
        c->reading = false;
        h2o_socket_read_stop(c->sock);
    }
}

static void ev_add_write(void *priv)
{
    rconn_t *c = priv;
    if (c->sock && !c->write_armed) {
        c->write_armed = true;
        h2o_socket_notify_write(c->sock, on_writable);
    }
}

static void ev_del_write(void *priv)
{
    (void)priv; /* a notification that comes anyway finds nothing to write */
}

static void ev_cleanup(void *priv)
{
    rconn_t *c = priv;
    if (c->sock) {
        if (c->reading) {
            h2o_socket_read_stop(c->sock);
        }
        h2o_socket_close(c->sock);
        c->sock = NULL;
    }
    c->reading = false;
    c->write_armed = false;
}

/* ---- connection life ------------------------------------------------------------------------ */

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn_t *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns (no disconnect callback follows). */
        went_down(c, ac->errstr);
    }
    /* Connected is not up: up is the first reply (on_hello). */
}

/* How much of `s` to show: all of it up to `max` bytes, else its sentences that fit (DENIED's
 * advice runs to 800 bytes). */
static int sentences(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max) {
        return (int)n;
    }
    size_t end = max;
    while (end > 0 && !(s[end - 1] == '.' && s[end] == ' ')) {
        end--;
    }
    return (int)(end > 0 ? end : max);
}

enum first { FIRST_AUTH, FIRST_SELECT, FIRST_PING };

/* FNV-1a, to remember which refusals were logged. */
static uint64_t hash_of(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

/* An error answering one of the connection's first commands: NOAUTH or WRONGPASS (the server
 * wants a (different) password), DENIED (a server in protected mode, which then closes),
 * LOADING (a server still loading its data), SELECT's (the URL's /DB is not a database this
 * server has, and DB 0 instead would read and write the wrong keys). The connection is dropped
 * and retried with backoff, as the server may change (had it counted as up, a server that
 * answers and closes would be reconnected to at once, forever); each reason is logged once,
 * by whichever connection meets it first, until a connection is up again. AUTH's "ERR ..." to a
 * server without a password is not a refusal: it serves anyway (on_auth says so). */
static bool refused(rconn_t *c, redisAsyncContext *ac, const redisReply *r, enum first cmd)
{
    if (!r || r->type != REDIS_REPLY_ERROR ||
        (cmd == FIRST_AUTH && strncmp(r->str, "ERR ", 4) == 0 &&
         strncmp(r->str, "ERR invalid password", 20) != 0)) { /* Redis 5's WRONGPASS */
        return false;
    }
    char why[sizeof c->refused];
    bool ux = c->url->path[0] != '\0';
    snprintf(why, sizeof why, "%.*s%s", sentences(r->str, 200), r->str,
             strncmp(r->str, "NOAUTH", 6) == 0
                 ? (ux ? " (give the password in the URL: unix://:PASSWORD@/PATH)"
                       : " (give the password in the URL: redis://:PASSWORD@HOST[:PORT])")
             : strncmp(r->str, "DENIED", 6) == 0
                 ? " (give Redis a password, and the URL too: redis://:PASSWORD@HOST[:PORT])"
             : cmd == FIRST_SELECT
                 ? (ux ? " (SELECT of the URL's ?db=)" : " (SELECT of the URL's /DB)")
                 : "");
    raddrs_t *a = c->addrs;
    uint64_t h = hash_of(why);
    bool said = false;
    for (size_t i = 0; i < a->n_said && i < RESOLVER_MAX_ADDRS && !said; i++) {
        said = a->said[i] == h;
    }
    if (!said) {
        char shown[BD_LOG_TEXT_MAX], where[BD_INGEST_WHERE_MAX];
        BD_ERROR("ingest", "redis refused the connection %s conn=%s reason=%s",
                 bd_ingest_url_where(c->url, a->res ? c->addr : NULL, where, sizeof where), c->name,
                 bd_log_quoted(shown, sizeof shown, why));
        a->said[a->n_said++ % RESOLVER_MAX_ADDRS] = h;
    }
    snprintf(c->refused, sizeof c->refused, "%s", why);
    redisAsyncDisconnect(ac); /* on_disconnect: went_down with the reason */
    return true;
}

static void on_auth(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = priv;
    const redisReply *reply = r;
    if (reply && c->ac == ac && !c->refused[0] && !refused(c, ac, reply, FIRST_AUTH) &&
        reply->type == REDIS_REPLY_ERROR && !c->auth_warned) {
        /* a password given to a server that has none: it serves anyway (said once) */
        c->auth_warned = true;
        char why[BD_LOG_TEXT_MAX], where[BD_INGEST_WHERE_MAX];
        BD_WARN("ingest", "redis AUTH failed %s conn=%s reason=%s; going on",
                bd_ingest_url_where(c->url, NULL, where, sizeof where), c->name,
                bd_log_quoted(why, sizeof why, reply->str));
    }
}

static void on_select(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = priv;
    if (r && c->ac == ac && !c->refused[0]) {
        (void)refused(c, ac, r, FIRST_SELECT);
    }
}

/* PING's reply, the last of the first commands: without an error, the connection is up. */
static void on_hello(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = priv;
    if (!r || c->ac != ac || c->ready || c->refused[0]) {
        return; /* dropped meanwhile: the disconnect path told the owner */
    }
    if (refused(c, ac, r, FIRST_PING)) {
        return;
    }
    raddrs_t *a = c->addrs;
    if (a->up > 0 && strcmp(c->addr, a->in_use) != 0) {
        /* Up on an address the others have left: it follows them (next_address). */
        follow_reason(c->refused, sizeof c->refused, a);
        redisAsyncDisconnect(ac);
        return;
    }
    if (a->up++ == 0) {
        memcpy(a->in_use, c->addr, sizeof a->in_use);
        a->failed = 0;
        a->n_said = 0;
        for (size_t i = 0; i < a->n; i++) {
            a->next = strcmp(a->addrs[i], c->addr) == 0 ? i : a->next; /* first, once none is up */
        }
    }
    c->ready = true;
    c->frozen_seen = a->frozen;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->last_error[0] = '\0';
    if (c->on_state) {
        c->on_state(c, true);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn_t *c = ac->data;
    if (c->ac == ac) {
        went_down(c, c->refused[0] ? c->refused : status == REDIS_OK ? "closed" : ac->errstr);
    }
}

/* The address to connect to (c->addr): the one in use while any connection is up, else the
 * next to try. A fresh lookup replaces a name's addresses, keeping the next to try when it
 * still lists it. false when there is none: the first lookup has not finished (the next poll
 * tries again; said once if it takes SLOW_LOOKUP_MS), or no lookup found any (down, with the
 * lookup's error). */
static bool pick_address(rconn_t *c)
{
    raddrs_t *a = c->addrs;
    char addrs[RESOLVER_MAX_ADDRS][RESOLVER_ADDR_MAX];
    char why[RESOLVER_WHY_MAX] = "";
    uint64_t lookups = 0;
    size_t n = a->res ? resolver_get(a->res, addrs, &lookups, why, sizeof why) : 0;
    if (a->res && lookups != a->lookups) {
        size_t next = 0;
        for (size_t i = 0; i < n && a->n > 0; i++) {
            next = strcmp(addrs[i], a->addrs[a->next]) == 0 ? i : next;
        }
        memcpy(a->addrs, addrs, n * sizeof addrs[0]);
        a->n = n;
        a->next = next;
        a->failed = 0;
        a->lookups = lookups;
    }
    if (a->up > 0) { /* where the others are, listed still or not */
        memcpy(c->addr, a->in_use, sizeof c->addr);
        return true;
    }
    c->addr[0] = '\0';
    if (a->n == 0) {
        if (lookups > 0) {
            look_again(a);
            went_down(c, why);
        } else if (!a->slow_said && bd_now_us() - a->since_us >= SLOW_LOOKUP_MS * 1000ull) {
            /* A DNS server that does not answer holds getaddrinfo for its timeouts (5 s per
             * try and server by default): say why nothing happens yet. */
            a->slow_said = true;
            BD_WARN("ingest",
                    "redis name lookup host=%s has not finished after %d s (is the DNS server "
                    "in /etc/resolv.conf answering?); HTTP keeps serving, still waiting",
                    c->url->host, SLOW_LOOKUP_MS / 1000);
        }
        return false;
    }
    memcpy(c->addr, a->addrs[a->next], sizeof c->addr);
    return true;
}

static void connect_now(rconn_t *c)
{
    if (!pick_address(c)) {
        return;
    }
    redisAsyncContext *ac = c->url->path[0] ? redisAsyncConnectUnix(c->url->path)
                                            : redisAsyncConnect(c->addr, c->url->port);
    if (!ac || ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac) {
            redisAsyncFree(ac);
        }
        went_down(c, why);
        return;
    }
    int fd = dup(ac->c.fd);
    if (fd < 0) {
        redisAsyncFree(ac);
        went_down(c, strerror(errno));
        return;
    }
    c->ac = ac;
    ac->data = c;
    c->sock = h2o_evloop_socket_create(c->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (!c->url->path[0]) {
        redisEnableKeepAlive(&ac->c);
    }
    /* The first command also makes hiredis wait for the connect to finish: AUTH when the URL
     * has a password, SELECT when it has a /DB, then PING, whose reply makes the connection
     * usable; an error answering any of them refuses it (refused). PING comes last as the one
     * a loading server refuses (it takes AUTH and SELECT). */
    c->refused[0] = '\0';
    c->pinging = false;
    c->busy_since_us = bd_now_us();
    const bd_redis_url_t *u = c->url;
    if (u->password[0]) {
        const char *auth[] = {"AUTH", u->user, u->password};
        size_t auth_len[] = {4, strlen(u->user), strlen(u->password)};
        int n = 3;
        if (!u->user[0]) { /* AUTH PASSWORD: the default user */
            auth[1] = u->password;
            auth_len[1] = auth_len[2];
            n = 2;
        }
        redisAsyncCommandArgv(ac, on_auth, c, n, auth, auth_len);
    }
    char db[24];
    snprintf(db, sizeof db, "%d", u->db);
    const char *argv[] = {"SELECT", db};
    size_t lens[] = {6, strlen(db)};
    const char *ping[] = {"PING"};
    size_t ping_len[] = {4};
    if (u->db != 0) {
        redisAsyncCommandArgv(ac, on_select, c, 2, argv, lens);
    }
    redisAsyncCommandArgv(ac, on_hello, c, 1, ping, ping_len);
}

void raddrs_init(raddrs_t *a, const char *host, resolver_t *res)
{
    memset(a, 0, sizeof *a);
    a->res = res;
    a->since_us = bd_now_us();
    if (!res) { /* an address: the one to try */
        size_t n = strnlen(host, RESOLVER_ADDR_MAX - 1);
        memcpy(a->addrs[0], host, n);
        a->addrs[0][n] = '\0';
        a->n = 1;
    }
}

void rconn_init(rconn_t *c, h2o_evloop_t *loop, const bd_redis_url_t *url, raddrs_t *addrs,
                const char *name, uint64_t timeout_ms, rconn_state_cb on_state, void *owner)
{
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->url = url;
    c->addrs = addrs;
    c->name = name;
    c->on_state = on_state;
    c->owner = owner;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->timeout_us = timeout_ms * 1000;
}

/* Drop the connection now, as a reset would: its callbacks run with NULL replies, then
 * went_down. */
static void drop(rconn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;       /* on_disconnect then ignores it; rconn_send refuses meanwhile */
    redisAsyncFree(ac); /* runs pending callbacks (NULL replies) and ev_cleanup */
    went_down(c, why);  /* it clears ready, having seen whether the connection was up */
}

/* The idle PING's reply (or NULL, dropped). */
static void on_pong(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *c = priv;
    (void)ac;
    (void)r;
    c->pinging = false;
}

/* A command unanswered past the bound with nothing received drops the connection. The bound
 * is the connection's own once it is up (a read connection's blocking reads take long), and
 * HELLO_TIMEOUT_MS for its first commands and the idle PING, which never block. An idle connection
 * that is up is sent a PING after IDLE_PING_MS of silence, so a server that froze while nothing was
 * asked of it (a read connection whose entries wait for the model) is found as well: while
 * it counted as up, every other connection would wait for its address. */
static void watchdog(rconn_t *c, uint64_t now_us)
{
    uint64_t since = c->busy_since_us > c->last_rx_us ? c->busy_since_us : c->last_rx_us;
    if (!c->ac->replies.head) {
        if (c->ready && now_us >= since + IDLE_PING_MS * 1000) {
            const char *ping[] = {"PING"};
            size_t len[] = {4};
            c->pinging = rconn_send(c, on_pong, c, 1, ping, len) == 0;
        }
        return;
    }
    uint64_t bound = c->timeout_us;
    if ((!c->ready || c->pinging) && bound > HELLO_TIMEOUT_MS * 1000) {
        bound = HELLO_TIMEOUT_MS * 1000; /* first replies and the idle PING never block */
    }
    if (now_us < since + bound) {
        return;
    }
    int avail = 0;
    if (ioctl(c->ac->c.fd, FIONREAD, &avail) == 0 && avail > 0) {
        c->last_rx_us = now_us; /* a reply is there, not read yet (the loop was busy) */
        return;
    }
    char why[128];
    snprintf(why, sizeof why, "no reply for %" PRIu64 " ms", (now_us - since) / 1000);
    if (c->ready) {
        /* The others up there are dropped too (rconn_poll). They all try this address first
         * again: a server that was only busy (a slow script, a fork) answers then, and one
         * that is frozen fails the 5 s bound on first replies, and they move on. */
        c->addrs->frozen++;
    }
    drop(c, why);
}

void rconn_poll(rconn_t *c, uint64_t now_us)
{
    if (c->closed) {
        return;
    }
    raddrs_t *a = c->addrs;
    char why[RESOLVER_ADDR_MAX + 64];
    if (c->ac && !c->ready && a->up > 0 && strcmp(c->addr, a->in_use) != 0) {
        /* Still connecting where the others are not (any more): follow them now. */
        follow_reason(why, sizeof why, a);
        drop(c, why);
    } else if (c->ac && c->ready && c->frozen_seen != a->frozen) {
        snprintf(why, sizeof why, "another connection found %s%s not answering",
                 c->url->path[0] ? "the server" : "address ", c->url->path[0] ? "" : c->addr);
        drop(c, why);
    }
    if (c->ac) {
        watchdog(c, now_us);
    }
    if (!c->ac && now_us >= c->retry_at_us) {
        connect_now(c);
    }
}

int rconn_send(rconn_t *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
               const size_t *lens)
{
    if (!c->ready || !c->ac) {
        return -1;
    }
    if (!c->ac->replies.head) {
        c->busy_since_us = bd_now_us(); /* the oldest outstanding command from now */
    }
    return redisAsyncCommandArgv(c->ac, fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

void rconn_close(rconn_t *c)
{
    c->closed = true;
    if (c->ready) {
        c->addrs->up--;
    }
    c->ready = false;
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac); /* runs pending callbacks (NULL replies) and ev_cleanup */
    }
}

/* ---- glob --------------------------------------------------------------------------------- */

bool bd_ingest_glob(const char *p, size_t plen, const char *s, size_t slen)
{
    while (plen > 0) {
        switch (*p) {
        case '*':
            while (plen > 1 && p[1] == '*') {
                p++;
                plen--;
            }
            if (plen == 1) {
                return true;
            }
            for (size_t i = 0; i <= slen; i++) {
                if (bd_ingest_glob(p + 1, plen - 1, s + i, slen - i)) {
                    return true;
                }
            }
            return false;
        case '?':
            if (slen == 0) {
                return false;
            }
            s++;
            slen--;
            break;
        case '[': {
            if (slen == 0) {
                return false;
            }
            p++;
            plen--;
            bool neg = plen > 0 && *p == '^';
            if (neg) {
                p++;
                plen--;
            }
            bool match = false;
            while (plen > 0 && *p != ']') {
                if (*p == '\\' && plen >= 2) {
                    p++;
                    plen--;
                    match |= *p == *s;
                } else if (plen >= 3 && p[1] == '-' && p[2] != ']') {
                    char lo = p[0] < p[2] ? p[0] : p[2];
                    char hi = p[0] < p[2] ? p[2] : p[0];
                    match |= *s >= lo && *s <= hi;
                    p += 2;
                    plen -= 2;
                } else {
                    match |= *p == *s;
                }
                p++;
                plen--;
            }
            if (plen == 0) {
                return false; /* no closing ']': nothing matches */
            }
            if (match == neg) {
                return false;
            }
            s++;
            slen--;
            break;
        }
        default:
            if (*p == '\\' && plen >= 2) {
                p++;
                plen--;
            }
            if (slen == 0 || *p != *s) {
                return false;
            }
            s++;
            slen--;
            break;
        }
        p++;
        plen--;
    }
    return slen == 0;
}
