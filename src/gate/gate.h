/* gate: who may call the server, and how often. Two independent pieces the front ends consult
 * before they do any work for a request:
 *
 * - API keys (--api-keys FILE): a file of `<key> <role>` lines, role `infer` or `admin`. A key
 *   is kept only as its SHA-256; a presented key is hashed and compared with every stored hash
 *   in constant time (no early exit), so the time taken says nothing about which bytes
 *   matched. The file is read at start (a bad file fails the start) and again on SIGHUP (a bad
 *   file then keeps the old keys). Keys never reach a log or an error message: those name the
 *   file and the line.
 * - Rate limits (--rate-limit RPS[:BURST]): one token bucket per caller (its key when keys are
 *   on, else its address) holding BURST tokens, starting full, refilled at RPS tokens per
 *   second (fractions kept); a request takes one token or is refused with the seconds until
 *   one is there (Retry-After). The buckets live in a table of at most max_buckets entries:
 *   buckets that refilled completely are dropped as they are met, and when the table is full
 *   the least recently used bucket gives way, so a flood of source addresses cannot grow it.
 *   The clock is injected (bd_clock_t), so tests drive it by hand.
 *
 * Roles: `admin` may do everything; `infer` everything but changing what is loaded (repository
 * load and unload). Which paths need no key at all is the HTTP front end's call (health,
 * readiness, and /metrics unless metrics_auth).
 *
 * Threads: a bd_gate_t belongs to the event-loop thread (checks, buckets and putting reloaded
 * keys in place run there); the key-file parser and the other pure functions are safe on any
 * thread. */
#ifndef BD_GATE_H
#define BD_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

struct sockaddr;

#define BD_GATE_MAX_KEYS 1024             /* keys in one file */
#define BD_GATE_MAX_KEY_BYTES 256         /* one key's length */
#define BD_GATE_MAX_FILE_BYTES (1u << 20) /* the key file's size */
#define BD_GATE_MAX_BUCKETS 65536         /* rate-limit buckets held at once (default) */
#define BD_GATE_MAX_RATE 1000000.0        /* largest RPS and BURST */

typedef enum {
    BD_GATE_ROLE_NONE = 0, /* no key (keys off, or an open path) */
    BD_GATE_ROLE_INFER,    /* infer, metadata, readiness, statistics, streams, the index */
    BD_GATE_ROLE_ADMIN,    /* everything, repository load and unload included */
} bd_gate_role_t;

const char *bd_gate_role_name(bd_gate_role_t r); /* "none", "infer", "admin" */

/* A caller's identity as the rate limiter sees it: a key's SHA-256, or a client address (a
 * family byte, then the IPv4 address or the IPv6 /64 prefix; IPv4-mapped IPv6 addresses
 * count as IPv4). */
typedef struct {
    uint8_t b[32];
} bd_gate_id_t;

/* ---- key files (any thread) ------------------------------------------------------------- */

typedef struct bd_gate_keys bd_gate_keys_t;

/* Parse a key file's text: one `<key> <role>` per line (fields separated by spaces or tabs;
 * a key is 1..BD_GATE_MAX_KEY_BYTES printable ASCII characters; role `infer` or `admin`),
 * blank lines and lines whose first non-blank character is `#` ignored, and a `#` comment
 * allowed after the role. `path` only names the file in messages. Returns owned keys, or NULL
 * with one sentence in err (BD_EINVAL) naming the file and the first bad line, never a key:
 * a line without a role, a bad role, extra fields, a character that is not printable ASCII,
 * a key that is too long, a key repeated, no key at all, more than BD_GATE_MAX_KEYS;
 * BD_ENOMEM. */
bd_gate_keys_t *bd_gate_keys_parse(const char *text, size_t len, const char *path, bd_err_t *err);
/* Read (at most BD_GATE_MAX_FILE_BYTES) and parse `path`; the text read is wiped. NULL with
 * err set (BD_EIO: unreadable or too large; else as bd_gate_keys_parse). */
bd_gate_keys_t *bd_gate_keys_load(const char *path, bd_err_t *err);
/* bd_gate_keys_load's two halves, for a reader that must not be inside libcrypto when the
 * process exits: read the file (no libcrypto; NULL with err set as bd_gate_keys_load), then
 * parse it and wipe and free the text with bd_gate_keys_text_free (NULL allowed). */
char *bd_gate_keys_read(const char *path, size_t *len, bd_err_t *err);
void bd_gate_keys_text_free(char *text, size_t len);
void bd_gate_keys_free(bd_gate_keys_t *k);
size_t bd_gate_keys_count(const bd_gate_keys_t *k);
/* Keys with role r. */
size_t bd_gate_keys_count_role(const bd_gate_keys_t *k, bd_gate_role_t r);
/* The role of key[0..len), BD_GATE_ROLE_NONE when it is not in the set. Compares against
 * every key without an early exit. Fills *id (may be NULL) with the key's SHA-256. */
bd_gate_role_t bd_gate_keys_lookup(const bd_gate_keys_t *k, const char *key, size_t len,
                                   bd_gate_id_t *id);
/* The role of the key whose SHA-256 is *id (as lookup filled it); NONE when not in the set. */
bd_gate_role_t bd_gate_keys_role_of(const bd_gate_keys_t *k, const bd_gate_id_t *id);

/* ---- parsing what clients send (any thread) ---------------------------------------------- */

/* An Authorization header value `Bearer <token>` (the scheme case-insensitive, RFC 7235; one
 * or more spaces; nothing after the token but spaces): 0 with *key and *key_len pointing into
 * value. -1 for any other value (another scheme, no token, a token with spaces in it). */
int bd_gate_bearer(const char *value, size_t len, const char **key, size_t *key_len);
/* The percent-decoded value of the first `name=` parameter of a query string (the part after
 * '?', without it; the parameter's name is compared decoded too), into buf (cap bytes). 1 when
 * found (*n its length), 0 when absent, -1 when it does not fit or has a bad escape. */
int bd_gate_query_param(const char *query, size_t len, const char *name, char *buf, size_t cap,
                        size_t *n);

/* ---- rate limits (one owner thread) ------------------------------------------------------ */

/* "RPS" or "RPS:BURST": RPS a number from 0.001 to BD_GATE_MAX_RATE, BURST one from 1 to
 * BD_GATE_MAX_RATE; without BURST, burst = max(RPS, 1). BD_EINVAL with one sentence naming
 * `name` (the flag) otherwise. */
int bd_gate_parse_rate(const char *s, const char *name, double *rps, double *burst, bd_err_t *err);

typedef struct bd_gate_limiter bd_gate_limiter_t;

/* Buckets of `burst` tokens refilled at `rps` per second, at most max_buckets of them (0:
 * BD_GATE_MAX_BUCKETS), on `clock`. NULL when out of memory. */
bd_gate_limiter_t *bd_gate_limiter_new(double rps, double burst, size_t max_buckets,
                                       bd_clock_t clock);
void bd_gate_limiter_free(bd_gate_limiter_t *l);
/* Take one token from id's bucket (a new bucket starts full). true: allowed. false: refused,
 * and *retry_after_s = the whole seconds until a token is there, rounded up, at least 1. */
bool bd_gate_limiter_take(bd_gate_limiter_t *l, const bd_gate_id_t *id, uint64_t *retry_after_s);
/* Buckets held now. */
size_t bd_gate_limiter_buckets(const bd_gate_limiter_t *l);

/* ---- the gate (event-loop thread) -------------------------------------------------------- */

typedef struct bd_gate bd_gate_t;

typedef struct {
    const char *keys_path; /* NULL: no API keys (every endpoint is open) */
    bool metrics_auth;     /* /metrics needs a key too (needs keys_path) */
    double rps;            /* 0: no rate limit */
    double burst;          /* with rps: tokens per bucket (>= 1) */
    size_t max_buckets;    /* 0: BD_GATE_MAX_BUCKETS */
} bd_gate_opts_t;

/* Load the key file (when given) and make the limiter (when rps > 0); logs how many keys were
 * loaded. The path is copied. NULL with err set (the key file's error, or out of memory). */
bd_gate_t *bd_gate_new(const bd_gate_opts_t *opts, bd_clock_t clock, bd_err_t *err);
void bd_gate_free(bd_gate_t *g);
bool bd_gate_keys_on(const bd_gate_t *g);
bool bd_gate_metrics_auth(const bd_gate_t *g);
bool bd_gate_limits_on(const bd_gate_t *g);

/* Who sent a request. */
typedef struct {
    bd_gate_role_t role;
    bd_gate_id_t id;     /* the rate-limit bucket: the key's hash, or the client's address */
    uint64_t generation; /* of the key set the key was checked against */
} bd_gate_who_t;

/* A caller without a key, identified by its address (sa may be NULL: all such callers then
 * share one bucket). */
void bd_gate_anonymous(const struct sockaddr *sa, bd_gate_who_t *who);
/* Check key[0..len): 0 and *who filled, or -1 when the key is not in the current set. */
int bd_gate_authenticate(bd_gate_t *g, const char *key, size_t len, bd_gate_who_t *who);
/* For a caller checked earlier (a WebSocket's key, at its upgrade): whether its key is still
 * in the current set after a reload (its role is updated). Always true for a caller without a
 * key and while the set did not change. */
bool bd_gate_still_valid(bd_gate_t *g, bd_gate_who_t *who);
/* Reload the key file (SIGHUP) in two steps, so that the file is read off the loop: any
 * thread loads bd_gate_keys_path's file (bd_gate_keys_load, or its halves; the path is fixed by
 * bd_gate_new, NULL without keys); then bd_gate_reload_apply, on the gate's thread, takes the keys
 * and puts them in place at once, or, when they are NULL, keeps the old ones (read_err says why);
 * it logs either way (never a key) and returns 0, or read_err's code. */
const char *bd_gate_keys_path(const bd_gate_t *g);
int bd_gate_reload_apply(bd_gate_t *g, bd_gate_keys_t *keys, const bd_err_t *read_err);
/* A rate-limited request from `who`: as bd_gate_limiter_take; always true without limits
 * (and with g NULL). When false, err has the 429's code (BD_ERATE) and sentence. */
bool bd_gate_take(bd_gate_t *g, const bd_gate_who_t *who, uint64_t *retry_after_s, bd_err_t *err);

#endif
