/* loadgen_internal.h: pieces shared by the loadgen files and its unit test: the streaming
 * HTTP/1.1 reply parser and the open-loop schedule (its random numbers are core's bd_rng_t).
 * Not for other modules. */
#ifndef BD_LOADGEN_INTERNAL_H
#define BD_LOADGEN_INTERNAL_H

#include "loadgen/loadgen.h"

/* ---- open-loop schedule ---------------------------------------------------------------- */

/* Send times as offsets from the level's start. Constant: request k at exactly k * 1e6/rate
 * microseconds (computed from k, so no rounding drifts in). Poisson: independent exponential
 * gaps with mean 1e6/rate. Bursty: `burst` requests at the same instant, bursts spaced so
 * the mean rate is still `rate` (burst b at b * burst * 1e6/rate). */
typedef struct {
    bd_lg_dist_t dist;
    double rate; /* requests per second, > 0 */
    int burst;   /* bursty: requests per burst, >= 1 (bd_lg_sched_init sets 16) */
    uint64_t k;  /* requests scheduled so far */
    double t_us; /* Poisson: the last send time */
    bd_rng_t rng;
} bd_lg_sched_t;

void bd_lg_sched_init(bd_lg_sched_t *s, bd_lg_dist_t dist, double rate, uint64_t seed);
/* The offset (microseconds, rounded down) of the next request; advances. */
uint64_t bd_lg_sched_next(bd_lg_sched_t *s);

/* ---- streaming HTTP/1.1 reply parser --------------------------------------------------- */

enum {
    BD_LG_HTTP_MORE = 0, /* feed more bytes */
    BD_LG_HTTP_DONE = 1, /* one reply is complete */
    BD_LG_HTTP_ERROR = -1,
};

#define BD_LG_MAX_HEAD_BYTES 65536

typedef struct {
    int state;
    int status;
    bool keep_alive;     /* the connection may carry the next request */
    uint64_t remaining;  /* body or chunk bytes still to come */
    uint64_t chunk_size; /* the size line being read */
    int chunk_digits;
    bool line_empty;      /* trailer: nothing but CR seen on this line so far */
    long long header_len; /* Inference-Header-Content-Length; -1 when absent or not a number */
    bd_buf_t head;        /* head bytes when they arrive in pieces */
    bd_buf_t *body;       /* borrowed; when set, body bytes (de-chunked) are appended */
    const char *error;    /* static text when BD_LG_HTTP_ERROR */
} bd_lg_http_t;

void bd_lg_http_init(bd_lg_http_t *p, bd_buf_t *body);
/* Ready for the next reply on the same connection (keeps the head buffer's memory). */
void bd_lg_http_reset(bd_lg_http_t *p);
void bd_lg_http_dispose(bd_lg_http_t *p);
/* Feed `len` bytes; `*used` says how many belong to this reply (on DONE, the rest belong to
 * whatever follows). */
int bd_lg_http_feed(bd_lg_http_t *p, const char *data, size_t len, size_t *used);
/* The peer closed the connection: DONE when the reply's body was delimited by the close,
 * else ERROR. */
int bd_lg_http_eof(bd_lg_http_t *p);

/* Wait (poll) until fd is ready for `events` or deadline_us passes (BD_EIO). tls.c. */
int bd_lg_wait_fd(int fd, short events, uint64_t deadline_us);

#endif
