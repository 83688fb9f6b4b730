/* resolve.c: Redis's host name, looked up off the event loop (see ingest_internal.h).
 *
 * getaddrinfo blocks (a DNS server that does not answer holds it for seconds), so lookups run
 * on the resolver's own thread: the loop thread asks for one (resolver_want) and copies the
 * last answer (resolver_get) when it next connects, both under the mutex; nothing else
 * crosses. A name is looked up again whenever a connection is lost or every address of the
 * last answer failed, so a Redis that comes back at another address (a container recreated)
 * or whose name appears only after batchd started (a compose service) is found.
 *
 * The thread is detached and the resolver freed by whichever of the two lets go last, so the
 * loop never waits for a lookup in flight, not even at shutdown.
 *
 * Threads: the event-loop thread (new, want, get, free) and the resolver's own. */
#include "ingest/ingest_internal.h"

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct resolver {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char name[256];
    /* guarded by mu */
    char addrs[RESOLVER_MAX_ADDRS][RESOLVER_ADDR_MAX];
    size_t n;
    char why[RESOLVER_WHY_MAX];
    uint64_t lookups; /* finished lookups */
    bool wanted;
    bool stop;
    int refs; /* the loop's and the thread's */
};

static void let_go(resolver_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
    }
}

/* One lookup: every distinct address, in getaddrinfo's order (which puts the preferred
 * family first), or none and why. */
static void look_up(const char *name, char addrs[][RESOLVER_ADDR_MAX], size_t *n, char *why,
                    size_t why_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    *n = 0;
    int rc = getaddrinfo(name, NULL, &hints, &ai);
    if (rc != 0) {
        snprintf(why, why_len, "the name does not resolve: %s", gai_strerror(rc));
        return;
    }
    for (const struct addrinfo *a = ai; a && *n < RESOLVER_MAX_ADDRS; a = a->ai_next) {
        /* getnameinfo keeps an IPv6 link-local address's %zone, which inet_ntop drops */
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            getnameinfo(a->ai_addr, a->ai_addrlen, addrs[*n], RESOLVER_ADDR_MAX, NULL, 0,
                        NI_NUMERICHOST) != 0) {
            continue;
        }
        bool seen = false;
        for (size_t i = 0; i < *n && !seen; i++) {
            seen = strcmp(addrs[i], addrs[*n]) == 0;
        }
        *n += !seen;
    }
    freeaddrinfo(ai);
    if (*n == 0) {
        snprintf(why, why_len, "the name has no IPv4 or IPv6 address");
    }
}

static void *resolver_main(void *arg)
{
    resolver_t *r = arg;
    char addrs[RESOLVER_MAX_ADDRS][RESOLVER_ADDR_MAX];
    char why[sizeof r->why];
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->wanted && !r->stop) {
            pthread_cond_wait(&r->cv, &r->mu);
        }
        if (r->stop) {
            break;
        }
        r->wanted = false;
        pthread_mutex_unlock(&r->mu);
        size_t n = 0;
        why[0] = '\0';
        look_up(r->name, addrs, &n, why, sizeof why);
        pthread_mutex_lock(&r->mu);
        if (n > 0 || r->n == 0) {
            /* A failed lookup (a DNS server that did not answer this once) keeps the last
             * addresses: they are still worth trying. */
            memcpy(r->addrs, addrs, n * sizeof addrs[0]);
            r->n = n;
            snprintf(r->why, sizeof r->why, "%s", why);
        }
        r->lookups++;
    }
    pthread_mutex_unlock(&r->mu);
    let_go(r);
    return NULL;
}

resolver_t *resolver_new(const char *name, bd_err_t *err)
{
    resolver_t *r = calloc(1, sizeof *r);
    if (!r) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->why, sizeof r->why, "the name is being looked up");
    r->wanted = true; /* the first lookup starts at once */
    r->refs = 2;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_t t;
    int e = pthread_create(&t, NULL, resolver_main, r);
    if (e != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        bd_err_set(err, BD_EIO, "cannot start the thread that looks up host '%s': %s", name,
                   strerror(e));
        return NULL;
    }
    pthread_detach(t);
    return r;
}

void resolver_want(resolver_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->wanted = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

size_t resolver_get(resolver_t *r, char addrs[][RESOLVER_ADDR_MAX], uint64_t *lookups, char *why,
                    size_t why_len)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    memcpy(addrs, r->addrs, n * sizeof r->addrs[0]);
    *lookups = r->lookups;
    snprintf(why, why_len, "%s", r->why);
    pthread_mutex_unlock(&r->mu);
    return n;
}

void resolver_free(resolver_t *r)
{
    if (!r) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    let_go(r);
}
