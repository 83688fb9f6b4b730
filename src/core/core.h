/* core: the small pieces every other module uses.
 *
 * - Errors: functions return 0 or a negative BD_E* code; detail goes into an optional
 *   bd_err_t (code + one sentence), filled only on the cold path.
 * - Logging: one line per event, "module key=value ...", to stderr, thread-safe.
 * - Clock: monotonic microseconds, plus a clock type that tests can replace.
 * - bd_buf_t: a growable byte buffer (responses, JSON text).
 * - bd_arena_t: a bump allocator with a byte limit; a request owns one for its small pieces
 *   and freeing the request frees them all.
 * - Overflow-checked size arithmetic for everything a client sizes.
 * - Random numbers: one small seeded generator for load schedules, synthetic data and faults.
 * - UTF-8: one decoder for the JSON codec and WebSocket text frames.
 *
 * Threads: everything here is safe on any thread; a bd_buf_t or bd_arena_t belongs to one
 * owner at a time. */
#ifndef BD_CORE_H
#define BD_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ---------------------------------------------------------------------------- */

enum {
    BD_OK = 0,
    BD_EINVAL = -1,        /* the client sent something wrong (HTTP 400) */
    BD_ENOTFOUND = -2,     /* unknown model or version (HTTP 400, as Triton) */
    BD_ENOPATH = -3,       /* unknown URL path (HTTP 404) */
    BD_EMETHOD = -4,       /* wrong HTTP method (HTTP 405) */
    BD_EFULL = -5,         /* queue full: overloaded (HTTP 503) */
    BD_ESHUTDOWN = -6,     /* shutting down (HTTP 503) */
    BD_EUNAVAIL = -7,      /* model not ready (HTTP 503) */
    BD_EBACKEND = -8,      /* the backend failed to run (HTTP 500) */
    BD_ENOMEM = -9,        /* out of memory (HTTP 500) */
    BD_ETOOBIG = -10,      /* body or tensor over a configured limit (HTTP 400) */
    BD_EIO = -11,          /* file or socket error (HTTP 500) */
    BD_EUNSUPPORTED = -12, /* valid but not implemented here (HTTP 400) */
    BD_ETIMEOUT = -13,     /* the request's deadline passed while it was queued (HTTP 503) */
    BD_ECANCELLED = -14,   /* the client went away; nobody reads the answer */
    BD_EBUSY = -15,        /* the operation cannot happen now (e.g. already running) */
    BD_EAUTH = -16,        /* no API key, or one that is not valid (HTTP 401) */
    BD_EFORBIDDEN = -17,   /* the API key's role may not do this (HTTP 403) */
    BD_ERATE = -18,        /* over the caller's rate limit (HTTP 429) */
    BD_ECODING = -19,      /* a request body's Content-Encoding is not taken (HTTP 415) */
    BD_EBODYSIZE = -20,    /* a body past the limit once decompressed (HTTP 413) */
    BD_ENOTIMPL = -21,     /* an HTTP method the server implements nowhere (HTTP 501) */
};

#define BD_ERR_MSG_MAX 512

typedef struct {
    int code;
    char msg[BD_ERR_MSG_MAX];
    /* > 0: the condition lasts about this many more seconds (the circuit breaker's cool-down),
     * for an HTTP 503's Retry-After. bd_err_set clears it. */
    unsigned retry_after_s;
} bd_err_t;

/* Fill `err` (may be NULL) with `code` and a printf-style sentence. Returns `code`, so
 * `return bd_err_set(err, BD_EINVAL, "...")` reads naturally. */
int bd_err_set(bd_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefix the message already in `err` (may be NULL: then nothing happens): "model 'x': <old
 * message>", cut at BD_ERR_MSG_MAX; err->code is kept. Returns nothing, because without `err`
 * it cannot know the failure: the caller returns the code it already holds. */
void bd_err_prefix(bd_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A short fixed name for a code ("invalid argument", ...). */
const char *bd_strerror(int code);

/* ---- logging --------------------------------------------------------------------------- */

enum { BD_LOG_DEBUG = 0, BD_LOG_INFO = 1, BD_LOG_WARN = 2, BD_LOG_ERROR = 3 };

void bd_log_set_level(int level);
int bd_log_level(void);
/* s[0..n) as the value of a log line's key=value field: as it is when it is 1 to 64 printable
 * ASCII characters other than space, '"', '=' and '\\'; else quoted, '"' and '\\' escaped and
 * other bytes as \xNN, cut to fit `cap` (at least 8), so that a client's value (a model name it
 * asked for) cannot read as fields of its own. Returns buf. */
const char *bd_log_field(char *buf, size_t cap, const char *s, size_t n);
/* The string s always quoted and escaped as bd_log_field does it: for free text (a `reason=`
 * that may hold quotes from a config file or a Redis error). BD_LOG_TEXT_MAX fits any bd_err_t
 * message with room to escape some of it; longer text is cut. Returns buf. */
#define BD_LOG_TEXT_MAX 768
const char *bd_log_quoted(char *buf, size_t cap, const char *s);
/* Whether s[0..n) is printable text: ASCII but for its controls, and valid UTF-8 but for the C1
 * controls (no byte that moves a terminal's cursor or starts an escape sequence). */
bool bd_text_plain(const char *s, size_t n);
/* s[0..n) (NULL: "?") for a line a person reads on a terminal (a CLI's output of what a server
 * sent): as it is when it is printable text (bd_text_plain), else quoted as bd_log_field
 * quotes; cut to fit cap (at least 8), at a character's boundary, a cut of plain text marked
 * "...". Returns buf. */
const char *bd_text_shown(char *buf, size_t cap, const char *s, size_t n);
/* The buffer for a reply body quoted in an error sentence: its first 300 bytes and "...". */
#define BD_TEXT_SNIPPET 304
/* Writes "<time> <LEVEL> <module> <message>\n" to stderr in one write(2), or, when stderr
 * cannot take it at once, queues it (at most 1 MiB, then lines are dropped and counted) for a
 * writer thread: no caller ever blocks on the log. Any thread. */
void bd_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define BD_DEBUG(mod, ...)                                                                         \
    do {                                                                                           \
        if (bd_log_level() <= BD_LOG_DEBUG)                                                        \
            bd_log(BD_LOG_DEBUG, mod, __VA_ARGS__);                                                \
    } while (0)
#define BD_INFO(mod, ...) bd_log(BD_LOG_INFO, mod, __VA_ARGS__)
#define BD_WARN(mod, ...) bd_log(BD_LOG_WARN, mod, __VA_ARGS__)
#define BD_ERROR(mod, ...) bd_log(BD_LOG_ERROR, mod, __VA_ARGS__)

/* ---- clock ----------------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in microseconds. */
uint64_t bd_now_us(void);

/* A replaceable clock: production uses bd_clock_real(); tests pass their own. */
typedef struct {
    uint64_t (*now_us)(void *ctx);
    void *ctx;
} bd_clock_t;

bd_clock_t bd_clock_real(void);
static inline uint64_t bd_clock_now(const bd_clock_t *c)
{
    return c->now_us(c->ctx);
}

/* ---- checked arithmetic ---------------------------------------------------------------- */

/* Return false on overflow. */
static inline bool bd_mul_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool bd_add_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* ---- numbers as text -------------------------------------------------------------------- */

/* v in decimal at w (at most 20 bytes, not terminated); returns the end. For the request path,
 * where snprintf's format parsing costs more than the digits. */
static inline char *bd_fmt_u64(char *w, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        *w++ = tmp[--n];
    }
    return w;
}

/* ---- random numbers -------------------------------------------------------------------- */

/* xoshiro256** (Blackman and Vigna, 2018) seeded through splitmix64: fast, 256 bits of state,
 * and the same sequence for the same seed on every platform, so seeded runs (bench schedules
 * and data, sim fault patterns) repeat exactly. Not for anything secret. A generator belongs
 * to one thread at a time; there is no shared global one. */
typedef struct {
    uint64_t s[4];
} bd_rng_t;

/* Any seed is fine, 0 included (splitmix64 spreads it over the whole state). */
void bd_rng_seed(bd_rng_t *r, uint64_t seed);
uint64_t bd_rng_next_u64(bd_rng_t *r);
/* Uniform in [0, 1): 53 random bits, so every value is a multiple of 2^-53. */
double bd_rng_uniform(bd_rng_t *r);

/* ---- growable buffer ------------------------------------------------------------------- */

typedef struct {
    char *data; /* owned; NUL-terminated when len < cap */
    size_t len;
    size_t cap;
    bool failed; /* an append ran out of memory: the contents are incomplete */
} bd_buf_t;

void bd_buf_init(bd_buf_t *b);
void bd_buf_dispose(bd_buf_t *b);
void bd_buf_reset(bd_buf_t *b);
/* Empty `b`, and free its memory when it holds more than `keep` bytes: a reused scratch buffer
 * does not keep a rare large reply's memory. */
void bd_buf_trim(bd_buf_t *b, size_t keep);
/* Ensure room for `n` more bytes. Returns BD_ENOMEM and sets `failed` on failure. */
int bd_buf_reserve(bd_buf_t *b, size_t n);
void bd_buf_append(bd_buf_t *b, const void *data, size_t n);
/* Inline, so that a literal's length is known where it is written. */
static inline void bd_buf_puts(bd_buf_t *b, const char *s)
{
    bd_buf_append(b, s, __builtin_strlen(s));
}
void bd_buf_putc(bd_buf_t *b, char c);
void bd_buf_printf(bd_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append `s` (n bytes) as a quoted, escaped JSON string: valid UTF-8 as it is, the characters
 * JSON must escape escaped, and each byte that does not start valid UTF-8 (a name cut inside a
 * character, a folder or path with raw bytes) as U+FFFD, so that the text stays JSON. */
void bd_buf_json_string(bd_buf_t *b, const char *s, size_t n);
/* Append {"error":"<msg>"}. */
void bd_buf_json_error(bd_buf_t *b, const char *msg);
/* Take ownership of the contents; `b` is left empty. */
char *bd_buf_steal(bd_buf_t *b, size_t *len);

/* ---- arena ----------------------------------------------------------------------------- */

typedef struct bd_arena_chunk bd_arena_chunk_t;

typedef struct {
    bd_arena_chunk_t *head;
    size_t used;  /* bytes handed out plus chunk overhead */
    size_t limit; /* 0: no limit */
} bd_arena_t;

void bd_arena_init(bd_arena_t *a, size_t limit);
/* bd_arena_init whose first chunk is `size` bytes at `mem` (16-byte aligned, outliving the
 * arena, never freed by it): an arena that stays small then costs no malloc of its own. When
 * mem does not fit (misaligned, too small, over the limit) it is not used. */
void bd_arena_init_in(bd_arena_t *a, size_t limit, void *mem, size_t size);
/* Returns 16-byte aligned memory, or NULL when out of memory or over the limit. */
void *bd_arena_alloc(bd_arena_t *a, size_t n);
void *bd_arena_calloc(bd_arena_t *a, size_t count, size_t size);
char *bd_arena_strndup(bd_arena_t *a, const char *s, size_t n);
void bd_arena_dispose(bd_arena_t *a);

/* ---- intrusive list -------------------------------------------------------------------- */

/* A circular doubly linked list with a sentinel head; an element embeds a bd_list_t and is
 * found back with BD_CONTAINER_OF. Unlinked nodes point at themselves, so bd_list_unlink is
 * safe on a node that is not in a list. O(1) push, unlink; not thread-safe: the owner of the
 * list (or its lock) guards it. */
typedef struct bd_list {
    struct bd_list *prev, *next;
} bd_list_t;

#define BD_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void bd_list_init(bd_list_t *l)
{
    l->prev = l->next = l;
}
static inline bool bd_list_empty(const bd_list_t *l)
{
    return l->next == l;
}
static inline bool bd_list_linked(const bd_list_t *n)
{
    return n->next != n && n->next != NULL;
}
/* Insert `n` before `at` (at the tail when `at` is the head). */
static inline void bd_list_insert_before(bd_list_t *at, bd_list_t *n)
{
    n->prev = at->prev;
    n->next = at;
    at->prev->next = n;
    at->prev = n;
}
static inline void bd_list_push_back(bd_list_t *head, bd_list_t *n)
{
    bd_list_insert_before(head, n);
}
static inline void bd_list_unlink(bd_list_t *n)
{
    if (n->next) {
        n->prev->next = n->next;
        n->next->prev = n->prev;
    }
    n->prev = n->next = n;
}
/* The first element, or NULL when empty. */
static inline bd_list_t *bd_list_first(const bd_list_t *head)
{
    return head->next == head ? NULL : head->next;
}

/* ---- request bytes held ---------------------------------------------------------------- */

/* The bytes of client requests the front ends on one event loop hold at once (HTTP bodies,
 * WebSocket messages), against --max-buffered-bytes. The server owns it; the front ends add
 * and remove what they hold. That loop's thread only. */
typedef struct {
    size_t used;
    size_t max; /* 0: no limit */
} bd_budget_t;

/* ---- mailbox: completions back to their owner thread ----------------------------------- */

/* A mailbox belongs to one owner thread (an event loop). Any thread posts a bd_mail_t to it;
 * the owner's loop watches bd_mailbox_fd (an eventfd) and calls bd_mailbox_drain, which runs
 * every posted mail's callback on the owner thread, in posting order. This is the one way
 * work finished elsewhere (a batch on a worker, a deadline on the timer thread, a model load
 * on the loader thread) comes back to the thread that owns the request.
 *
 * Bounded by construction: a mail is embedded in the object it reports on (a request, a
 * load), and each object is posted at most once before it is drained, so the list never
 * holds more entries than such objects exist; each of those is bounded by its own cap (queue
 * sizes, in-flight limits). Posting never allocates and never fails. */
typedef struct bd_mail bd_mail_t;
typedef void (*bd_mail_cb)(bd_mail_t *mail);
struct bd_mail {
    bd_mail_t *next; /* the mailbox's; zero until posted */
    bd_mail_cb cb;   /* set by the poster before posting; runs on the owner thread */
};

typedef struct bd_mailbox bd_mailbox_t;

/* NULL with err set when the eventfd cannot be made. Owner thread. */
bd_mailbox_t *bd_mailbox_new(bd_err_t *err);
/* Runs what is still posted (as bd_mailbox_drain), then frees. Owner thread. */
void bd_mailbox_free(bd_mailbox_t *mb);
/* Readable while mail waits. The owner's loop watches it; it stays owned by the mailbox. */
int bd_mailbox_fd(const bd_mailbox_t *mb);
/* Post `mail` (mail->cb set): its callback will run on the owner thread. The caller hands
 * the object that embeds `mail` over to the owner thread. Any thread; takes a mutex for a
 * few instructions; writes the eventfd only when the list was empty (one wake-up per drain). */
void bd_mailbox_post(bd_mailbox_t *mb, bd_mail_t *mail);
/* Take every posted mail and run the callbacks in posting order, unlocked (a callback may
 * post again: that mail runs on the next drain). Returns how many ran. Owner thread. */
size_t bd_mailbox_drain(bd_mailbox_t *mb);
/* Around work the owner thread runs itself and answers in the same turn (a batch run on the
 * event loop): from bd_mailbox_hold on, posts this thread makes to mb write no wake-up, and
 * bd_mailbox_drain_held ends that and runs what was posted (other threads' mail too) without
 * reading the eventfd: two syscalls fewer a turn. A wake-up another thread wrote meanwhile
 * stays, and costs one empty drain at most. Owner thread; drain_held before the loop waits.
 * Holds do not nest: one mailbox at a time per thread. */
void bd_mailbox_hold(bd_mailbox_t *mb);
size_t bd_mailbox_drain_held(bd_mailbox_t *mb);

/* ---- files ----------------------------------------------------------------------------- */

/* Read a whole regular file (at most max_bytes; a FIFO, directory or device is refused, never
 * waited on). Returns owned bytes (NUL-terminated) or NULL. */
char *bd_read_file(const char *path, size_t max_bytes, size_t *len, bd_err_t *err);

/* The memory this process may use, in bytes: the lowest of the machine's RAM and the memory
 * limits of its cgroups, its own and each one above it (v2: memory.max under `cgroup_root`, at
 * the path of `proc_cgroup`'s "0::" line; v1: memory.limit_in_bytes under `cgroup_root`/memory,
 * at the path of its "memory" line). Normally bd_memory_limit("/sys/fs/cgroup",
 * "/proc/self/cgroup"). *from says where the figure came from: "cgroup" or "ram". 0 when none
 * can be read. */
uint64_t bd_memory_limit(const char *cgroup_root, const char *proc_cgroup, const char **from);

/* ---- text ---------------------------------------------------------------------------- */

/* The code point of the UTF-8 sequence at p[0..n) (n >= 1) and its length in *len; -1 when p
 * does not start a valid one: overlong forms, surrogates and values past U+10FFFF are not
 * (RFC 3629, as jansson and WebSocket text frames need). */
int32_t bd_utf8_decode(const unsigned char *p, size_t n, size_t *len);

/* jansson's error text (json_error_t.text) as a client or an operator should read it, into
 * buf[0..cap): its flag name "without JSON_ALLOW_NUL" becomes "in strings", and a UTF-8 byte
 * order mark before the value, which it shows as an invisible character, is named. Returns
 * buf. */
const char *bd_json_fault(char *buf, size_t cap, const char *text);

/* The value of one hex digit (either case); -1 when c is not one. */
int bd_hex_digit(char c);
/* The byte of a URL part at *p, a %XX escape decoded (RFC 3986 2.1), moving *p past it (p <
 * end); -1 for a '%' without two hex digits after it (*p then moves one byte). '+' stays '+'. */
int bd_pct_byte(const char **p, const char *end);
/* The next name=value pair of a URL query q[0..n) (the part after '?'), read from *pos (0 at
 * first; moved past the pair): its name and value as sent, still %XX-encoded; *value is NULL
 * for a pair without '='. False when no pair is left. */
bool bd_query_pair(const char *q, size_t n, size_t *pos, const char **name, size_t *name_len,
                   const char **value, size_t *value_len);
/* Whether s[0..n), %XX escapes decoded, is exactly the text `want`. */
bool bd_pct_equal(const char *s, size_t n, const char *want);
/* The value of the four hex digits at p (a JSON \uXXXX escape); -1 when they are not. */
int32_t bd_hex4(const char *p);

#endif
