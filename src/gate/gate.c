/* gate.c: API keys and rate limits (see gate.h).
 *
 * Keys: the file is parsed line by line into {SHA-256 of the key, role, line}; the plaintext
 * is never kept (the text read from the file is wiped once parsed). A lookup hashes the
 * presented key and compares the digest with every stored one with CRYPTO_memcmp, folding the
 * result into the answer with masks rather than branches, and never stops early: its time
 * depends on the number of keys and the presented key's length, not on its contents. Hashing
 * first also makes the compare length-independent (fixed 32-byte digests).
 *
 * Buckets: a chained hash table of at most max_buckets entries keyed by bd_gate_id_t, hashed
 * with SipHash-2-4 under a random key (client addresses are chosen by clients, who must not be
 * able to pile them onto one chain), and an LRU list. Each take first drops up to two of the
 * least recently used buckets if they have refilled completely (a full bucket is the same as
 * no bucket), then finds or makes the caller's bucket (when the table is full, the least
 * recently used bucket is reused), refills it for the time since it was last seen and takes
 * a token. Tokens are doubles: fractional rates and partial refills are kept exactly enough
 * (a tiny tolerance absorbs rounding such as 3 x 1/3).
 *
 * Threads: bd_gate_t and bd_gate_limiter_t belong to one thread (the event loop); the parser
 * and the other pure functions are safe on any thread. */
#include "gate/gate.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#define TOKEN_EPSILON 1e-9 /* rounding slack when comparing token counts */
#define SWEEP_PER_TAKE 2   /* idle buckets dropped per take at most */

const char *bd_gate_role_name(bd_gate_role_t r)
{
    return r == BD_GATE_ROLE_ADMIN ? "admin" : r == BD_GATE_ROLE_INFER ? "infer" : "none";
}

/* ---- key files -------------------------------------------------------------------------- */

typedef struct {
    uint8_t hash[32];
    uint32_t role; /* bd_gate_role_t; a full word for the masks below */
    size_t line;
} gate_key_t;

struct bd_gate_keys {
    size_t n;
    gate_key_t keys[];
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* The next field of line[*i..n): [*start, *end); false when none is left. */
static bool next_field(const char *line, size_t n, size_t *i, size_t *start, size_t *end)
{
    while (*i < n && is_blank(line[*i])) {
        (*i)++;
    }
    if (*i == n) {
        return false;
    }
    *start = *i;
    while (*i < n && !is_blank(line[*i])) {
        (*i)++;
    }
    *end = *i;
    return true;
}

static int line_error(bd_err_t *err, const char *path, size_t line, const char *what)
{
    return bd_err_set(err, BD_EINVAL, "API key file '%s' line %zu: %s", path, line, what);
}

/* One non-comment line: fill *k, or fail with the line's error. */
static int parse_line(const char *s, size_t n, const char *path, size_t line, gate_key_t *k,
                      bd_err_t *err)
{
    size_t i = 0, ks, ke, rs, re, xs, xe;
    if (!next_field(s, n, &i, &ks, &ke)) {
        return 0; /* not reached: blank lines are skipped by the caller */
    }
    for (size_t j = ks; j < ke; j++) {
        unsigned char c = (unsigned char)s[j];
        if (c < 0x21 || c > 0x7e) {
            return line_error(err, path, line,
                              "the key has a character that is not printable ASCII (keys are "
                              "printable ASCII without spaces)");
        }
    }
    if (ke - ks > BD_GATE_MAX_KEY_BYTES) {
        char msg[96];
        snprintf(msg, sizeof msg, "the key is longer than %d characters", BD_GATE_MAX_KEY_BYTES);
        return line_error(err, path, line, msg);
    }
    if (!next_field(s, n, &i, &rs, &re)) {
        return line_error(err, path, line, "expected '<key> <role>', but the line has no role");
    }
    if (re - rs == 5 && memcmp(s + rs, "infer", 5) == 0) {
        k->role = BD_GATE_ROLE_INFER;
    } else if (re - rs == 5 && memcmp(s + rs, "admin", 5) == 0) {
        k->role = BD_GATE_ROLE_ADMIN;
    } else {
        /* The bad word is not quoted: with the fields swapped it would be the key. */
        return line_error(err, path, line, "the role must be 'infer' or 'admin'");
    }
    if (next_field(s, n, &i, &xs, &xe) && s[xs] != '#') {
        return line_error(err, path, line,
                          "expected '<key> <role>', but the line has more fields (a comment "
                          "after the role starts with '#')");
    }
    SHA256((const unsigned char *)s + ks, ke - ks, k->hash);
    k->line = line;
    return 0;
}

bd_gate_keys_t *bd_gate_keys_parse(const char *text, size_t len, const char *path, bd_err_t *err)
{
    bd_gate_keys_t *k = calloc(1, sizeof *k + BD_GATE_MAX_KEYS * sizeof(gate_key_t));
    if (!k) {
        bd_err_set(err, BD_ENOMEM, "out of memory while reading the API key file");
        return NULL;
    }
    size_t line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *s = text + pos;
        size_t n = end - pos;
        pos = end + 1;
        line++;
        if (n > 0 && s[n - 1] == '\r') {
            n--;
        }
        size_t first = 0;
        while (first < n && is_blank(s[first])) {
            first++;
        }
        if (first == n || s[first] == '#') {
            continue;
        }
        if (k->n == BD_GATE_MAX_KEYS) {
            char msg[96];
            snprintf(msg, sizeof msg, "more than %d keys", BD_GATE_MAX_KEYS);
            line_error(err, path, line, msg);
            goto fail;
        }
        gate_key_t *key = &k->keys[k->n];
        if (parse_line(s, n, path, line, key, err) != 0) {
            goto fail;
        }
        for (size_t j = 0; j < k->n; j++) {
            if (memcmp(k->keys[j].hash, key->hash, sizeof key->hash) == 0) {
                char msg[96];
                snprintf(msg, sizeof msg, "repeats the key of line %zu", k->keys[j].line);
                line_error(err, path, line, msg);
                goto fail;
            }
        }
        k->n++;
    }
    if (k->n == 0) {
        bd_err_set(err, BD_EINVAL,
                   "API key file '%s' has no keys (expected lines '<key> <role>', role infer "
                   "or admin)",
                   path);
        goto fail;
    }
    return k;
fail:
    bd_gate_keys_free(k);
    return NULL;
}

char *bd_gate_keys_read(const char *path, size_t *len, bd_err_t *err)
{
    bd_err_t rerr = {0};
    char *text = bd_read_file(path, BD_GATE_MAX_FILE_BYTES, len, &rerr);
    if (!text) {
        bd_err_set(err, rerr.code ? rerr.code : BD_EIO, "cannot read the API key file: %s",
                   rerr.msg);
    }
    return text;
}

void bd_gate_keys_text_free(char *text, size_t len)
{
    if (text) {
        explicit_bzero(text, len); /* not libcrypto: see gate.h */
        free(text);
    }
}

bd_gate_keys_t *bd_gate_keys_load(const char *path, bd_err_t *err)
{
    size_t len = 0;
    char *text = bd_gate_keys_read(path, &len, err);
    if (!text) {
        return NULL;
    }
    bd_gate_keys_t *k = bd_gate_keys_parse(text, len, path, err);
    bd_gate_keys_text_free(text, len);
    return k;
}

void bd_gate_keys_free(bd_gate_keys_t *k)
{
    if (k) {
        OPENSSL_cleanse(k->keys, k->n * sizeof k->keys[0]);
        free(k);
    }
}

size_t bd_gate_keys_count(const bd_gate_keys_t *k)
{
    return k ? k->n : 0;
}

size_t bd_gate_keys_count_role(const bd_gate_keys_t *k, bd_gate_role_t r)
{
    size_t n = 0;
    for (size_t i = 0; k && i < k->n; i++) {
        n += k->keys[i].role == (uint32_t)r;
    }
    return n;
}

bd_gate_role_t bd_gate_keys_role_of(const bd_gate_keys_t *k, const bd_gate_id_t *id)
{
    uint32_t role = 0;
    for (size_t i = 0; k && i < k->n; i++) {
        /* All-ones when equal, else zero: no branch on the comparison's result. */
        uint32_t eq = (uint32_t)(CRYPTO_memcmp(k->keys[i].hash, id->b, sizeof id->b) == 0);
        role |= (0u - eq) & k->keys[i].role;
    }
    return (bd_gate_role_t)role;
}

bd_gate_role_t bd_gate_keys_lookup(const bd_gate_keys_t *k, const char *key, size_t len,
                                   bd_gate_id_t *id)
{
    bd_gate_id_t h;
    SHA256((const unsigned char *)key, len, h.b);
    if (id) {
        *id = h;
    }
    if (len == 0 || len > BD_GATE_MAX_KEY_BYTES) {
        return BD_GATE_ROLE_NONE; /* no stored key has that length */
    }
    return bd_gate_keys_role_of(k, &h);
}

/* ---- parsing what clients send ----------------------------------------------------------- */

int bd_gate_bearer(const char *value, size_t len, const char **key, size_t *key_len)
{
    static const char scheme[] = "bearer";
    size_t n = sizeof scheme - 1;
    if (len <= n || strncasecmp(value, scheme, n) != 0 || value[n] != ' ') {
        return -1;
    }
    size_t i = n;
    while (i < len && value[i] == ' ') {
        i++;
    }
    size_t start = i;
    while (i < len && value[i] != ' ' && value[i] != '\t') {
        i++;
    }
    size_t end = i;
    while (i < len && (value[i] == ' ' || value[i] == '\t')) {
        i++;
    }
    if (end == start || i != len) {
        return -1;
    }
    *key = value + start;
    *key_len = end - start;
    return 0;
}

int bd_gate_query_param(const char *query, size_t len, const char *name, char *buf, size_t cap,
                        size_t *n)
{
    size_t pos = 0, name_len, value_len;
    const char *p, *value;
    while (bd_query_pair(query, len, &pos, &p, &name_len, &value, &value_len)) {
        if (!value || !bd_pct_equal(p, name_len, name)) {
            continue;
        }
        size_t w = 0;
        /* '+' stays '+' (RFC 3986; a key has no spaces for form encoding's reading) */
        for (const char *v = value; v < value + value_len;) {
            int c = bd_pct_byte(&v, value + value_len);
            if (c < 0 || w == cap) {
                return -1;
            }
            buf[w++] = (char)c;
        }
        *n = w;
        return 1;
    }
    return 0;
}

/* ---- rate limits ------------------------------------------------------------------------- */

int bd_gate_parse_rate(const char *s, const char *name, double *rps, double *burst, bd_err_t *err)
{
    char *end = NULL;
    double r = strtod(s, &end);
    double b = 0;
    bool ok = end != s && isfinite(r) && r >= 0.001 && r <= BD_GATE_MAX_RATE;
    if (ok && *end == ':') {
        const char *bs = end + 1;
        b = strtod(bs, &end);
        ok = end != bs && isfinite(b) && b >= 1 && b <= BD_GATE_MAX_RATE;
    } else {
        b = r < 1 ? 1 : r;
    }
    /* strtod also reads hex, "inf" and leading spaces: take plain decimals only. */
    for (const char *p = s; ok && *p; p++) {
        ok = (*p >= '0' && *p <= '9') || *p == '.' || *p == ':';
    }
    if (!ok || *end != '\0') {
        return bd_err_set(err, BD_EINVAL,
                          "%s must be RPS or RPS:BURST (RPS a number of requests per second from "
                          "0.001 to 1000000, BURST a number from 1 to 1000000), got '%s'",
                          name, s);
    }
    *rps = r;
    *burst = b;
    return 0;
}

typedef struct bucket bucket_t;
struct bucket {
    bucket_t *next; /* hash chain */
    bd_list_t lru;  /* on the limiter's lru, least recently used first */
    bd_gate_id_t id;
    double tokens;
    uint64_t last_us;
};

struct bd_gate_limiter {
    double rps;
    double burst;
    size_t max_buckets;
    bd_clock_t clock;
    bucket_t **slots;
    size_t mask; /* slots - 1 (a power of two) */
    size_t n;
    bd_list_t lru;
    uint64_t sip[2]; /* the table hash's random key */
};

/* SipHash-2-4 (Aumasson and Bernstein, 2012) of the 32 bytes of an id. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash_id(const uint64_t key[2], const bd_gate_id_t *id)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
    for (size_t i = 0; i < sizeof id->b; i += 8) {
        uint64_t m = 0;
        for (int j = 7; j >= 0; j--) {
            m = (m << 8) | id->b[i + (size_t)j]; /* little-endian */
        }
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)sizeof id->b << 56;
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

bd_gate_limiter_t *bd_gate_limiter_new(double rps, double burst, size_t max_buckets,
                                       bd_clock_t clock)
{
    bd_gate_limiter_t *l = calloc(1, sizeof *l);
    if (!l) {
        return NULL;
    }
    l->rps = rps;
    l->burst = burst < 1 ? 1 : burst;
    l->max_buckets = max_buckets ? max_buckets : BD_GATE_MAX_BUCKETS;
    l->clock = clock;
    size_t slots = 16;
    while (slots < l->max_buckets / 2 && slots < ((size_t)1 << 30)) {
        slots *= 2;
    }
    l->slots = calloc(slots, sizeof *l->slots);
    if (!l->slots) {
        free(l);
        return NULL;
    }
    l->mask = slots - 1;
    bd_list_init(&l->lru);
    if (getrandom(l->sip, sizeof l->sip, 0) != (ssize_t)sizeof l->sip) {
        /* No entropy: still correct, only the chains' spread is guessable. */
        l->sip[0] = bd_now_us();
        l->sip[1] = (uint64_t)(uintptr_t)l;
    }
    return l;
}

static bucket_t **slot_of(bd_gate_limiter_t *l, const bd_gate_id_t *id)
{
    return &l->slots[siphash_id(l->sip, id) & l->mask];
}

/* Unlink b from its chain and the LRU list (not freed). */
static void unlink_bucket(bd_gate_limiter_t *l, bucket_t *b)
{
    for (bucket_t **p = slot_of(l, &b->id); *p; p = &(*p)->next) {
        if (*p == b) {
            *p = b->next;
            break;
        }
    }
    bd_list_unlink(&b->lru);
    l->n--;
}

static void refill(bd_gate_limiter_t *l, bucket_t *b, uint64_t now)
{
    if (now > b->last_us) {
        b->tokens += (double)(now - b->last_us) * l->rps / 1e6;
        if (b->tokens > l->burst) {
            b->tokens = l->burst;
        }
    }
    b->last_us = now > b->last_us ? now : b->last_us;
}

/* Drop up to SWEEP_PER_TAKE of the least recently used buckets that have refilled. */
static void sweep(bd_gate_limiter_t *l, uint64_t now)
{
    for (int i = 0; i < SWEEP_PER_TAKE && !bd_list_empty(&l->lru); i++) {
        bucket_t *b = BD_CONTAINER_OF(bd_list_first(&l->lru), bucket_t, lru);
        refill(l, b, now);
        if (b->tokens < l->burst - TOKEN_EPSILON) {
            return; /* the oldest is still refilling; younger ones refilled less */
        }
        unlink_bucket(l, b);
        free(b);
    }
}

bool bd_gate_limiter_take(bd_gate_limiter_t *l, const bd_gate_id_t *id, uint64_t *retry_after_s)
{
    uint64_t now = bd_clock_now(&l->clock);
    sweep(l, now);
    bucket_t **slot = slot_of(l, id);
    bucket_t *b = *slot;
    while (b && memcmp(b->id.b, id->b, sizeof id->b) != 0) {
        b = b->next;
    }
    if (b) {
        bd_list_unlink(&b->lru);
        refill(l, b, now);
    } else {
        if (l->n >= l->max_buckets) {
            /* Full: the least recently used bucket gives way (it is reused). */
            b = BD_CONTAINER_OF(bd_list_first(&l->lru), bucket_t, lru);
            unlink_bucket(l, b);
        } else if (!(b = malloc(sizeof *b))) {
            if (bd_list_empty(&l->lru)) {
                return true; /* out of memory with nothing to reuse: let it through */
            }
            b = BD_CONTAINER_OF(bd_list_first(&l->lru), bucket_t, lru);
            unlink_bucket(l, b);
        }
        b->id = *id;
        b->tokens = l->burst;
        b->last_us = now;
        b->next = *slot;
        *slot = b;
        bd_list_init(&b->lru);
        l->n++;
    }
    bd_list_push_back(&l->lru, &b->lru);
    if (b->tokens >= 1 - TOKEN_EPSILON) {
        b->tokens = b->tokens - 1 < 0 ? 0 : b->tokens - 1;
        return true;
    }
    double wait_s = (1 - b->tokens) / l->rps;
    double secs = ceil(wait_s - TOKEN_EPSILON);
    *retry_after_s = secs < 1 ? 1 : (uint64_t)secs;
    return false;
}

size_t bd_gate_limiter_buckets(const bd_gate_limiter_t *l)
{
    return l ? l->n : 0;
}

void bd_gate_limiter_free(bd_gate_limiter_t *l)
{
    if (!l) {
        return;
    }
    while (!bd_list_empty(&l->lru)) {
        bucket_t *b = BD_CONTAINER_OF(bd_list_first(&l->lru), bucket_t, lru);
        bd_list_unlink(&b->lru);
        free(b);
    }
    free(l->slots);
    free(l);
}

/* ---- the gate ---------------------------------------------------------------------------- */

struct bd_gate {
    char *keys_path;      /* owned; NULL: keys off */
    bd_gate_keys_t *keys; /* the current set */
    uint64_t generation;  /* +1 per successful reload */
    bool metrics_auth;
    bd_gate_limiter_t *limiter; /* NULL: no limits */
};

static void log_keys(const char *what, const bd_gate_t *g)
{
    BD_INFO("gate", "api keys %s file=\"%s\" keys=%zu infer=%zu admin=%zu", what, g->keys_path,
            bd_gate_keys_count(g->keys), bd_gate_keys_count_role(g->keys, BD_GATE_ROLE_INFER),
            bd_gate_keys_count_role(g->keys, BD_GATE_ROLE_ADMIN));
}

bd_gate_t *bd_gate_new(const bd_gate_opts_t *opts, bd_clock_t clock, bd_err_t *err)
{
    bd_gate_t *g = calloc(1, sizeof *g);
    if (!g) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    g->metrics_auth = opts->metrics_auth;
    if (opts->keys_path) {
        g->keys_path = strdup(opts->keys_path);
        if (!g->keys_path) {
            bd_err_set(err, BD_ENOMEM, "out of memory");
            goto fail;
        }
        if (!(g->keys = bd_gate_keys_load(g->keys_path, err))) {
            goto fail;
        }
        log_keys("loaded", g);
    }
    if (opts->rps > 0) {
        g->limiter = bd_gate_limiter_new(opts->rps, opts->burst, opts->max_buckets, clock);
        if (!g->limiter) {
            bd_err_set(err, BD_ENOMEM, "out of memory");
            goto fail;
        }
    }
    return g;
fail:
    bd_gate_free(g);
    return NULL;
}

void bd_gate_free(bd_gate_t *g)
{
    if (!g) {
        return;
    }
    bd_gate_keys_free(g->keys);
    bd_gate_limiter_free(g->limiter);
    free(g->keys_path);
    free(g);
}

bool bd_gate_keys_on(const bd_gate_t *g)
{
    return g && g->keys;
}

bool bd_gate_metrics_auth(const bd_gate_t *g)
{
    return g && g->keys && g->metrics_auth;
}

bool bd_gate_limits_on(const bd_gate_t *g)
{
    return g && g->limiter;
}

void bd_gate_anonymous(const struct sockaddr *sa, bd_gate_who_t *who)
{
    memset(who, 0, sizeof *who);
    who->role = BD_GATE_ROLE_NONE;
    if (!sa) {
        return;
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        who->id.b[0] = 4;
        memcpy(who->id.b + 1, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            who->id.b[0] = 4;
            memcpy(who->id.b + 1, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            /* Per /64: one client is usually given a whole /64, and would otherwise have as
             * many buckets as it cares to use addresses. */
            who->id.b[0] = 6;
            memcpy(who->id.b + 1, &in6->sin6_addr, 8);
        }
    }
}

int bd_gate_authenticate(bd_gate_t *g, const char *key, size_t len, bd_gate_who_t *who)
{
    memset(who, 0, sizeof *who);
    who->role = bd_gate_keys_lookup(g->keys, key, len, &who->id);
    who->generation = g->generation;
    return who->role == BD_GATE_ROLE_NONE ? -1 : 0;
}

bool bd_gate_still_valid(bd_gate_t *g, bd_gate_who_t *who)
{
    if (!g || !g->keys || who->role == BD_GATE_ROLE_NONE || who->generation == g->generation) {
        return true;
    }
    who->role = bd_gate_keys_role_of(g->keys, &who->id);
    who->generation = g->generation;
    return who->role != BD_GATE_ROLE_NONE;
}

const char *bd_gate_keys_path(const bd_gate_t *g)
{
    return g ? g->keys_path : NULL;
}

int bd_gate_reload_apply(bd_gate_t *g, bd_gate_keys_t *keys, const bd_err_t *read_err)
{
    if (!keys) {
        if (g && g->keys_path) {
            char why[BD_LOG_TEXT_MAX];
            BD_WARN("gate", "api keys reload failed; keeping the %zu keys loaded before reason=%s",
                    bd_gate_keys_count(g->keys), bd_log_quoted(why, sizeof why, read_err->msg));
        }
        return read_err->code ? read_err->code : BD_EINVAL;
    }
    bd_gate_keys_free(g->keys);
    g->keys = keys;
    g->generation++;
    log_keys("reloaded", g);
    return 0;
}

bool bd_gate_take(bd_gate_t *g, const bd_gate_who_t *who, uint64_t *retry_after_s, bd_err_t *err)
{
    if (!g || !g->limiter || bd_gate_limiter_take(g->limiter, &who->id, retry_after_s)) {
        return true;
    }
    bd_err_set(err, BD_ERATE,
               "too many requests: this %s is over its rate limit (--rate-limit); retry in %llu s",
               bd_gate_keys_on(g) ? "API key" : "client address",
               (unsigned long long)*retry_after_s);
    return false;
}
