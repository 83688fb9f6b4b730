/* ingest: the Redis Streams front end. For every model whose config.json has a "redis"
 * section, batchd joins a consumer group on the streams that match the section's glob (found
 * with SCAN at start and every 2 s), reads entries with XREADGROUP over up to 64 streams per
 * read, feeds each entry's raw tensor bytes to the model through the shared infer layer
 * (bd_infer_start_raw), and writes one result entry per input entry to the result stream,
 * acknowledging the input (XACK) only once its result is written. Entries idle in any
 * consumer's pending list for claim_idle_ms are taken over (XAUTOCLAIM); entries delivered
 * more than max_deliveries times go to the dead-letter stream. Bad entries get an error result
 * at once; entries the model failed stay pending and come back later.
 *
 * Backpressure: a model's streams are read only while its queue is below three quarters of
 * max_queue_size and the entries held for it stay under a cap (count and bytes); nothing read
 * is ever dropped.
 *
 * Redis going away never stops the server: HTTP keeps serving, the loss is logged once, every
 * connection reconnects with backoff, and what was read is answered when it is back (a result
 * is written and its input acknowledged atomically, and only while the input is still
 * pending, so a retry never duplicates acknowledged work).
 *
 * Threads: the event-loop thread only (hiredis's async API on the h2o loop; completions come
 * back through the infer layer's mailbox). hiredis stays behind this header. */
#ifndef BD_INGEST_H
#define BD_INGEST_H

#include "core/core.h"
#include "infer/infer.h"
#include "metrics/metrics.h"
#include "repo/repo.h"

struct st_h2o_evloop_t;

typedef struct bd_ingest bd_ingest_t;

/* --redis, parsed (bd_ingest_parse_url). */
typedef struct {
    char host[256]; /* a name, or a numeric IPv4/IPv6 address; empty with path */
    char path[108]; /* unix://: the server's socket (sun_path's size); empty over TCP */
    int port;
    int db;
    char user[128];     /* empty: AUTH with the password alone (the default user) */
    char password[256]; /* empty: no AUTH */
} bd_redis_url_t;

typedef struct {
    bd_redis_url_t url;
    const char *consumer;   /* this process's consumer name in every group */
    size_t max_entry_bytes; /* an entry's inputs together, and its metadata fields together;
                             * larger: an error result */
} bd_ingest_opts_t;

/* Parse "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]" (PORT 6379 and DB 0 by default; an IPv6
 * HOST in brackets; %XX escapes in USER and PASSWORD) or "unix://[[USER]:PASSWORD@]/PATH[?db=DB]"
 * (a Redis on this machine, through its unixsocket). HOST is kept as given: the ingest looks a
 * name up off the loop, again after every loss. 0, or BD_EINVAL with one sentence (which never
 * repeats the password). */
int bd_ingest_parse_url(const char *url, bd_redis_url_t *out, bd_err_t *err);

/* Where the URL leads, for logs: "host=HOST port=PORT" ("host=HOST address=ADDR port=PORT" with
 * an address its name led to), or "path=PATH". Returns buf, which BD_INGEST_WHERE_MAX bytes
 * always hold. */
#define BD_INGEST_WHERE_MAX 400
const char *bd_ingest_url_where(const bd_redis_url_t *u, const char *addr, char *buf, size_t n);

/* Start ingest for the models of `repo` that have a redis section (and for those loaded
 * later). Connects in the background: a Redis that is not there yet is retried with
 * backoff. Borrows loop, inf, repo and metrics; copies opts. NULL with err when out of
 * memory. Loop thread. */
bd_ingest_t *bd_ingest_new(struct st_h2o_evloop_t *loop, bd_infer_t *inf, bd_repo_t *repo,
                           bd_metrics_t *metrics, const bd_ingest_opts_t *opts, bd_err_t *err);
/* Drain: no new reads, claims or scans; what was read is still run, written and acked. */
void bd_ingest_stop(bd_ingest_t *ing);
/* Entries read and not yet handed to a model, or reads in flight (false once a drain waited
 * past its bound). */
bool bd_ingest_reading(const bd_ingest_t *ing);
/* Results not yet written (false once a drain waited past its bound). */
bool bd_ingest_busy(bd_ingest_t *ing);
/* Close the connections and free everything; entries not answered stay pending in Redis.
 * After every call handed to the infer layer came back. NULL is fine. */
void bd_ingest_free(bd_ingest_t *ing);

#endif
