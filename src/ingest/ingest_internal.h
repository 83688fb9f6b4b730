/* ingest_internal.h: what the ingest's own files share: one Redis connection (rconn_t) driven
 * by hiredis's async API on the server's h2o loop (conn.c), the lookup of Redis's host name
 * off the loop (resolve.c), and the glob matching of stream patterns.
 *
 * Threads: the event-loop thread, and the resolver's own (resolve.c). */
#ifndef BD_INGEST_INTERNAL_H
#define BD_INGEST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <h2o.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "ingest/ingest.h"

typedef struct rconn rconn_t;
typedef struct resolver resolver_t;

/* ---- resolve.c: a host name looked up on a thread of its own ------------------------------ */

#define RESOLVER_MAX_ADDRS 8
#define RESOLVER_ADDR_MAX 64 /* an IPv6 address with a %zone, and its NUL */
#define RESOLVER_WHY_MAX 160

/* Start the lookup thread; the first lookup of `name` begins at once. NULL with err when out
 * of memory or threads. */
resolver_t *resolver_new(const char *name, bd_err_t *err);
/* Ask for a fresh lookup (one runs at a time; asking while one runs asks for another). */
void resolver_want(resolver_t *r);
/* The addresses of the last lookup that found any (numeric, in the order to try them; a
 * failed lookup keeps them), how many lookups finished so far, and when there are none, why
 * (not looked up yet, or the lookup's error). */
size_t resolver_get(resolver_t *r, char addrs[][RESOLVER_ADDR_MAX], uint64_t *lookups, char *why,
                    size_t why_len);
/* Let go: a lookup in flight finishes on its thread, which then frees the resolver. */
void resolver_free(resolver_t *r);

/* ---- conn.c: one Redis connection ------------------------------------------------------------ */

/* Redis's addresses and the one in use, shared by every connection of an ingest (loop thread
 * only): the URL's address, or those of its host name, looked up by `res`. Shared so that all
 * connections reach the same server even where a name's addresses lead to different ones
 * (round-robin DNS; ::1 and 127.0.0.1 with two servers; a name moved to another server while
 * the old one still serves). While any connection is up, every connection uses its address,
 * and one that fails there backs off and tries it again; only when none is up does a failed
 * connect move them all on to the next address. A connection that finds the server at the
 * address in use not answering (the watchdog) drops the others that are up there too: a
 * blocking read can take minutes to find it itself. */
typedef struct {
    resolver_t *res; /* owned by the ingest; NULL when the URL's host is an address */
    char addrs[RESOLVER_MAX_ADDRS][RESOLVER_ADDR_MAX]; /* the last lookup's, or the URL's */
    size_t n;
    uint64_t lookups;                  /* the lookup addrs came from */
    size_t next;                       /* while none is up: the address to try */
    size_t failed;                     /* addresses that failed in a row while none was up */
    char in_use[RESOLVER_ADDR_MAX];    /* the address the connections that are up are on */
    size_t up;                         /* connections up (all on in_use) */
    uint64_t frozen;                   /* times a connection found in_use not answering */
    uint64_t said[RESOLVER_MAX_ADDRS]; /* hashes of the refusals logged since none was up:
                                        * each said once, whichever connection meets it */
    size_t n_said;
    uint64_t since_us; /* raddrs_init's time: how long the first lookup has taken */
    bool slow_said;    /* that it is taking long, logged */
} raddrs_t;

/* `host` is the URL's; `res` looks it up when it is a name (NULL: it is an address). */
void raddrs_init(raddrs_t *a, const char *host, resolver_t *res);

/* The connection became usable (up) or was lost (down). When down, every command's callback
 * has already run with a NULL reply. Never frees the rconn. */
typedef void (*rconn_state_cb)(rconn_t *c, bool up);

/* One Redis connection that reconnects by itself with backoff (100 ms doubling to 5 s) until
 * rconn_close. Loop thread only. The h2o socket watches a dup of hiredis's descriptor (both
 * close their own), with H2O_SOCKET_FLAG_DONT_READ so hiredis does every read and write.
 *
 * Watchdog (hiredis 0.14's async API has no timeouts): a connection is usable only once its
 * first commands (AUTH when the URL has a password, SELECT when it has a /DB, then PING) were
 * answered, and without an error (but AUTH's to a server without a password): one drops it and
 * it retries with backoff, logged once, and rconn_poll counts it lost when a command
 * has been outstanding for timeout_us (5 s for the first commands and the PING it sends after
 * 1 s of silence) with no byte received meanwhile and none waiting in the socket (a server
 * that stopped answering without closing: frozen, SIGSTOPped, a dead path); the other
 * connections up on that address are then dropped too. */
struct rconn {
    h2o_evloop_t *loop;
    const bd_redis_url_t *url;    /* borrowed: host, port, db, credentials */
    raddrs_t *addrs;              /* borrowed: shared by the ingest's connections */
    char addr[RESOLVER_ADDR_MAX]; /* the address connected to */
    uint64_t frozen_seen;         /* addrs->frozen when it came up */
    bool pinging;                 /* the idle PING is the oldest command outstanding */
    const char *name;             /* for logs: "control", "read" */
    rconn_state_cb on_state;
    void *owner;
    redisAsyncContext *ac; /* NULL while down */
    h2o_socket_t *sock;
    bool reading;
    bool write_armed;
    bool ready;           /* connected: commands may be sent */
    bool closed;          /* rconn_close ran: never reconnect */
    uint64_t retry_at_us; /* down: the next connect attempt */
    uint64_t backoff_ms;
    uint64_t timeout_us;    /* watchdog bound on an unanswered command */
    uint64_t busy_since_us; /* when the oldest outstanding command was sent, or the last
                               reply before it */
    uint64_t last_rx_us;    /* when bytes last arrived */
    char last_error[320];
    char refused[320]; /* why it is being dropped before it came up: the server refused its
                        * first commands (said by refused()), or it follows the others */
    bool auth_warned;  /* an AUTH error it went on after was logged */
};

/* `addrs` holds url->host's addresses: a failed connect moves on to the next one without
 * backoff (at the next poll) until all failed, then asks for a fresh lookup, as does a
 * connection that was up and is lost. */
void rconn_init(rconn_t *c, h2o_evloop_t *loop, const bd_redis_url_t *url, raddrs_t *addrs,
                const char *name, uint64_t timeout_ms, rconn_state_cb on_state, void *owner);
/* Connect now when down and the backoff has passed; when up, run the watchdog: a command
 * unanswered for timeout_ms drops the connection (its callbacks run with NULL replies, then
 * on_state(false)) and it reconnects with backoff. Call from a periodic tick. */
void rconn_poll(rconn_t *c, uint64_t now_us);
/* Send one command (arguments copied). 0, or -1 when the connection is not usable (the
 * callback then never runs). */
int rconn_send(rconn_t *c, redisCallbackFn *fn, void *priv, int argc, const char **argv,
               const size_t *lens);
/* Drop the connection (pending callbacks run with NULL replies, on_state is not called) and
 * never reconnect. */
void rconn_close(rconn_t *c);

/* Redis-style glob: * ? [abc] [a-z] [^x] and \ escapes. */
bool bd_ingest_glob(const char *pat, size_t plen, const char *s, size_t slen);

#endif
