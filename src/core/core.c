/* core.c: errors, logging, clock, random numbers, buffers, arenas, files (see core.h).
 *
 * Threads: any. The log level is an atomic; each log line is formatted into a stack buffer
 * and written with one write(2), so lines from different threads never interleave. A line
 * that stderr cannot take at once (a log reader that stopped) is queued for the log writer
 * thread instead (log_emit), so no thread ever blocks on the log. */
#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ---------------------------------------------------------------------------- */

int bd_err_set(bd_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        err->retry_after_s = 0;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void bd_err_prefix(bd_err_t *err, const char *fmt, ...)
{
    if (!err) {
        return;
    }
    char prefix[BD_ERR_MSG_MAX];
    char old[BD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n >= sizeof err->msg) {
        n = sizeof err->msg - 1;
    }
    memcpy(err->msg, prefix, n);
    size_t rest = strnlen(old, sizeof old - 1);
    if (rest > sizeof err->msg - 1 - n) {
        rest = sizeof err->msg - 1 - n;
    }
    memcpy(err->msg + n, old, rest);
    err->msg[n + rest] = '\0';
}

const char *bd_strerror(int code)
{
    switch (code) {
    case BD_OK:
        return "ok";
    case BD_EINVAL:
        return "invalid argument";
    case BD_ENOTFOUND:
        return "not found";
    case BD_ENOPATH:
        return "no such path";
    case BD_EMETHOD:
        return "method not allowed";
    case BD_EFULL:
        return "queue full";
    case BD_ESHUTDOWN:
        return "shutting down";
    case BD_EUNAVAIL:
        return "unavailable";
    case BD_EBACKEND:
        return "backend error";
    case BD_ENOMEM:
        return "out of memory";
    case BD_ETOOBIG:
        return "too large";
    case BD_EIO:
        return "i/o error";
    case BD_EUNSUPPORTED:
        return "unsupported";
    case BD_ETIMEOUT:
        return "timed out";
    case BD_ECANCELLED:
        return "cancelled";
    case BD_EBUSY:
        return "busy";
    case BD_EAUTH:
        return "unauthorized";
    case BD_EFORBIDDEN:
        return "forbidden";
    case BD_ERATE:
        return "rate limited";
    case BD_ECODING:
        return "unsupported content coding";
    case BD_EBODYSIZE:
        return "body too large";
    case BD_ENOTIMPL:
        return "not implemented";
    default:
        return "unknown error";
    }
}

/* ---- logging --------------------------------------------------------------------------- */

static atomic_int log_level = BD_LOG_INFO;

void bd_log_set_level(int level)
{
    atomic_store(&log_level, level);
}

int bd_log_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *quote(char *buf, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    buf[k++] = '"';
    for (size_t i = 0; i < n && k + 6 <= cap; i++) { /* room for \xNN, the quote, the NUL */
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[k++] = '\\';
            buf[k++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            buf[k++] = (char)c;
        } else {
            memcpy(buf + k, (char[4]){'\\', 'x', hex[c >> 4], hex[c & 15]}, 4);
            k += 4;
        }
    }
    buf[k++] = '"';
    buf[k] = '\0';
    return buf;
}

const char *bd_log_field(char *buf, size_t cap, const char *s, size_t n)
{
    bool plain = n > 0 && n <= 64 && n < cap;
    for (size_t i = 0; i < n && plain; i++) {
        plain = s[i] > 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '=' && s[i] != '\\';
    }
    if (plain) {
        memcpy(buf, s, n);
        buf[n] = '\0';
        return buf;
    }
    return quote(buf, cap, s, n);
}

const char *bd_log_quoted(char *buf, size_t cap, const char *s)
{
    return quote(buf, cap, s, strlen(s));
}

/* The length of the printable character at s[0..n) (n >= 1): ASCII but its controls and DEL,
 * or valid UTF-8 (bd_utf8_decode) but a C1 control (U+0080..U+009F); 0 when there is none.
 * What the log writes as it is, and what bd_text_plain takes. */
static size_t printable_char(const char *s, size_t n)
{
    size_t len = 1;
    int32_t cp = bd_utf8_decode((const unsigned char *)s, n, &len);
    return cp >= 0x20 && cp != 0x7f && (cp < 0x80 || cp >= 0xa0) ? len : 0;
}

bool bd_text_plain(const char *s, size_t n)
{
    for (size_t i = 0, len; i < n; i += len) {
        len = printable_char(s + i, n - i);
        if (len == 0) {
            return false;
        }
    }
    return true;
}

const char *bd_text_shown(char *buf, size_t cap, const char *s, size_t n)
{
    if (!s) {
        snprintf(buf, cap, "?");
        return buf;
    }
    size_t cut = n < cap ? n : cap - 4; /* room for "..." and the NUL */
    while (cut > 0 && cut < n && ((unsigned char)s[cut] & 0xc0) == 0x80) {
        cut--; /* not inside a character */
    }
    if (!bd_text_plain(s, cut)) {
        return quote(buf, cap, s, n);
    }
    memcpy(buf, s, cut);
    snprintf(buf + cut, cap - cut, "%s", cut < n ? "..." : "");
    return buf;
}

/* ---- log output --------------------------------------------------------------------------
 * A line goes straight to stderr when stderr can take it now (poll) and nothing is queued
 * before it. Otherwise (a pipe whose reader stopped: a stuck log shipper would have stopped
 * the event loop, and SIGTERM with it) it joins a queue of at most LOG_QUEUE_BYTES that the
 * log writer thread, started the first time, empties with blocking writes; past that, lines
 * are dropped and counted, and the writer says how many once the queue is empty. At exit the
 * queue gets up to LOG_EXIT_WAIT_S to go out. */
#define LOG_QUEUE_BYTES (1u << 20)
#define LOG_EXIT_WAIT_S 2

static struct {
    pthread_mutex_t mu;
    pthread_cond_t more, emptied;
    char *ring; /* LOG_QUEUE_BYTES; [head, head + len) mod the size is queued */
    size_t head, len;
    uint64_t dropped;
    bool started, failed; /* the writer thread runs / could not be started */
    bool writing;         /* the writer is in write(): a direct write could block beside it */
} g_out = {.mu = PTHREAD_MUTEX_INITIALIZER,
           .more = PTHREAD_COND_INITIALIZER,
           .emptied = PTHREAD_COND_INITIALIZER};

static size_t format_line(char *line, size_t cap, int level, const char *module, const char *msg,
                          size_t mlen);

static void *log_writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_out.mu);
    for (;;) {
        while (g_out.len == 0 && g_out.dropped == 0) {
            pthread_cond_broadcast(&g_out.emptied);
            pthread_cond_wait(&g_out.more, &g_out.mu);
        }
        char note[256];
        const char *p = note;
        size_t n = 0;
        if (g_out.len > 0) {
            p = g_out.ring + g_out.head;
            n = g_out.len < LOG_QUEUE_BYTES - g_out.head ? g_out.len : LOG_QUEUE_BYTES - g_out.head;
        } else {
            char msg[160];
            int m = snprintf(msg, sizeof msg,
                             "%llu log lines were dropped: stderr took no more for a while",
                             (unsigned long long)g_out.dropped);
            n = format_line(note, sizeof note, BD_LOG_WARN, "log", msg, (size_t)m);
            g_out.dropped = 0;
        }
        g_out.writing = true;
        pthread_mutex_unlock(&g_out.mu); /* producers only append past what is being written */
        ssize_t w = write(STDERR_FILENO, p, n);
        pthread_mutex_lock(&g_out.mu);
        g_out.writing = false;
        size_t done = w > 0 ? (size_t)w : w < 0 && errno == EINTR ? 0 : n; /* else: lost */
        if (p != note) {
            g_out.head = (g_out.head + done) % LOG_QUEUE_BYTES;
            g_out.len -= done;
        }
    }
    return NULL;
}

static void log_exit_flush(void)
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += LOG_EXIT_WAIT_S;
    pthread_mutex_lock(&g_out.mu);
    while ((g_out.len > 0 || g_out.dropped > 0) &&
           pthread_cond_timedwait(&g_out.emptied, &g_out.mu, &end) == 0) {
    }
    pthread_mutex_unlock(&g_out.mu);
}

/* With g_out.mu held. The writer takes no signal: they belong to the threads that wait for
 * them (a thread started before serve blocks SIGTERM would otherwise take it). */
static bool writer_running(void)
{
    if (!g_out.started && !g_out.failed) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_t th;
        g_out.ring = malloc(LOG_QUEUE_BYTES);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        g_out.started = g_out.ring && pthread_create(&th, NULL, log_writer, NULL) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        g_out.failed = !g_out.started;
        if (g_out.started) {
            pthread_detach(th);
            atexit(log_exit_flush);
        }
    }
    return g_out.started;
}

static void log_emit(const char *line, size_t n)
{
    pthread_mutex_lock(&g_out.mu);
    struct pollfd pf = {.fd = STDERR_FILENO, .events = POLLOUT};
    bool now = g_out.len == 0 && g_out.dropped == 0 && !g_out.writing && poll(&pf, 1, 0) == 1;
    if (now || !writer_running()) { /* else no writer thread could start: write, as before */
        ssize_t w = write(STDERR_FILENO, line, n);
        (void)w;
    } else if (g_out.len + n > LOG_QUEUE_BYTES) {
        g_out.dropped++;
    } else {
        size_t tail = (g_out.head + g_out.len) % LOG_QUEUE_BYTES;
        size_t first = n < LOG_QUEUE_BYTES - tail ? n : LOG_QUEUE_BYTES - tail;
        memcpy(g_out.ring + tail, line, first);
        memcpy(g_out.ring, line + first, n - first);
        g_out.len += n;
        pthread_cond_signal(&g_out.more);
    }
    pthread_mutex_unlock(&g_out.mu);
}

void bd_log(int level, const char *module, const char *fmt, ...)
{
    if (level < bd_log_level()) {
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t mlen = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    char line[1024]; /* one line, cut to fit, newline included */
    log_emit(line, format_line(line, sizeof line, level, module, msg, mlen));
}

/* "<time> <LEVEL> <module> <message>\n" into line (cap bytes), the message escaped; its
 * length. */
static size_t format_line(char *line, size_t cap, int level, const char *module, const char *msg,
                          size_t mlen)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 names[level < 0   ? 0
                       : level > 3 ? 3
                                   : level],
                 module);
    /* Messages carry what clients sent (model names, paths): control characters, DEL and
     * every byte that is not part of valid UTF-8 (or that encodes a C1 control) are written
     * as \xNN, so no client can start a log line of its own or hand a log reader bytes it
     * cannot decode. */
    size_t room = cap - 2; /* the newline, and a NUL never written */
    size_t k = n < 0 ? 0 : (size_t)n < room ? (size_t)n : room;
    for (size_t i = 0; i < mlen && k < room;) {
        unsigned char c = (unsigned char)msg[i];
        size_t len = printable_char(msg + i, mlen - i);
        if (len > 0 && k + len <= room) {
            memcpy(line + k, msg + i, len);
            k += len;
            i += len;
        } else if (len == 0 && k + 4 <= room) {
            static const char hex[] = "0123456789abcdef";
            memcpy(line + k, (char[4]){'\\', 'x', hex[c >> 4], hex[c & 15]}, 4);
            k += 4;
            i++;
        } else {
            break;
        }
    }
    line[k++] = '\n';
    return k;
}

/* ---- clock ----------------------------------------------------------------------------- */

uint64_t bd_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t real_now(void *ctx)
{
    (void)ctx;
    return bd_now_us();
}

bd_clock_t bd_clock_real(void)
{
    return (bd_clock_t){.now_us = real_now, .ctx = NULL};
}

/* ---- random numbers -------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bd_rng_seed(bd_rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&seed);
    }
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t bd_rng_next_u64(bd_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double bd_rng_uniform(bd_rng_t *r)
{
    return (double)(bd_rng_next_u64(r) >> 11) * 0x1.0p-53;
}

/* ---- buffer ---------------------------------------------------------------------------- */

void bd_buf_init(bd_buf_t *b)
{
    memset(b, 0, sizeof *b);
}

void bd_buf_dispose(bd_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void bd_buf_trim(bd_buf_t *b, size_t keep)
{
    if (b->cap > keep) {
        bd_buf_dispose(b);
    } else {
        bd_buf_reset(b);
    }
}

void bd_buf_reset(bd_buf_t *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data) {
        b->data[0] = '\0';
    }
}

int bd_buf_reserve(bd_buf_t *b, size_t n)
{
    size_t need;
    if (b->failed || !bd_add_size(b->len, n, &need) || !bd_add_size(need, 1, &need)) {
        b->failed = true;
        return BD_ENOMEM;
    }
    if (need <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return BD_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void bd_buf_append(bd_buf_t *b, const void *data, size_t n)
{
    if (bd_buf_reserve(b, n) != 0) {
        return;
    }
    if (n) {
        memcpy(b->data + b->len, data, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
}

void bd_buf_putc(bd_buf_t *b, char c)
{
    bd_buf_append(b, &c, 1);
}

void bd_buf_printf(bd_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        bd_buf_append(b, small, (size_t)n);
        return;
    }
    if (bd_buf_reserve(b, (size_t)n) != 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void bd_buf_json_string(bd_buf_t *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    if (bd_buf_reserve(b, n + 2) != 0) {
        return;
    }
    bd_buf_putc(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = 1;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80 && bd_utf8_decode(s + i, n - i, &len) >= 0) {
            i += len;
            continue;
        }
        bd_buf_append(b, s + start, i - start);
        if (c >= 0x80) {
            bd_buf_append(b, "\\ufffd", 6);
        } else if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r') {
            char esc[2] = {'\\', c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : (char)c};
            bd_buf_append(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            bd_buf_append(b, esc, 6);
        }
        i++;
        start = i;
    }
    bd_buf_append(b, s + start, n - start);
    bd_buf_putc(b, '"');
}

void bd_buf_json_error(bd_buf_t *b, const char *msg)
{
    bd_buf_puts(b, "{\"error\":");
    bd_buf_json_string(b, msg, strlen(msg));
    bd_buf_putc(b, '}');
}

char *bd_buf_steal(bd_buf_t *b, size_t *len)
{
    char *p = b->data;
    if (len) {
        *len = b->len;
    }
    memset(b, 0, sizeof *b);
    return p;
}

/* ---- arena ----------------------------------------------------------------------------- */

struct bd_arena_chunk {
    bd_arena_chunk_t *next;
    size_t size; /* bytes usable in data[] */
    size_t off;
    bool owned; /* malloc'ed by the arena; false for bd_arena_init_in's memory */
    _Alignas(16) unsigned char data[];
};

#define ARENA_CHUNK 4096u

void bd_arena_init(bd_arena_t *a, size_t limit)
{
    a->head = NULL;
    a->used = 0;
    a->limit = limit;
}

void bd_arena_init_in(bd_arena_t *a, size_t limit, void *mem, size_t size)
{
    bd_arena_init(a, limit);
    if (mem && (uintptr_t)mem % 16 == 0 && size >= sizeof(bd_arena_chunk_t) + 16 &&
        (!limit || size <= limit)) {
        bd_arena_chunk_t *c = mem;
        c->next = NULL;
        c->size = size - sizeof *c;
        c->off = 0;
        c->owned = false;
        a->head = c;
        a->used = size;
    }
}

void *bd_arena_alloc(bd_arena_t *a, size_t n)
{
    size_t rounded;
    if (!bd_add_size(n, 15, &rounded)) {
        return NULL;
    }
    rounded &= ~(size_t)15;
    if (rounded == 0) {
        rounded = 16;
    }
    bd_arena_chunk_t *c = a->head;
    if (!c || c->size - c->off < rounded) {
        size_t size = rounded > ARENA_CHUNK / 2 ? rounded : ARENA_CHUNK;
        size_t total;
        if (!bd_add_size(size, sizeof *c, &total) || !bd_add_size(a->used, total, &total)) {
            return NULL;
        }
        if (a->limit && total > a->limit) {
            /* A small chunk still fits when the limit is below a whole one. */
            if (a->used + sizeof *c + rounded > a->limit) {
                return NULL;
            }
            size = rounded;
        }
        c = malloc(sizeof *c + size);
        if (!c) {
            return NULL;
        }
        c->size = size;
        c->off = 0;
        c->owned = true;
        a->used += sizeof *c + size;
        if (a->head && size > ARENA_CHUNK / 2 && a->head->size - a->head->off > 64) {
            /* A big block gets its own chunk behind the current one, so the current
             * chunk's free space stays usable for small pieces. */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->off;
    c->off += rounded;
    return p;
}

void *bd_arena_calloc(bd_arena_t *a, size_t count, size_t size)
{
    size_t n;
    if (!bd_mul_size(count, size, &n)) {
        return NULL;
    }
    void *p = bd_arena_alloc(a, n);
    if (p) {
        memset(p, 0, n);
    }
    return p;
}

char *bd_arena_strndup(bd_arena_t *a, const char *s, size_t n)
{
    size_t total;
    if (!bd_add_size(n, 1, &total)) {
        return NULL;
    }
    char *p = bd_arena_alloc(a, total);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void bd_arena_dispose(bd_arena_t *a)
{
    bd_arena_chunk_t *c = a->head;
    while (c) {
        bd_arena_chunk_t *next = c->next;
        if (c->owned) {
            free(c);
        }
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- files ----------------------------------------------------------------------------- */

char *bd_read_file(const char *path, size_t max_bytes, size_t *len, bd_err_t *err)
{
    /* O_NONBLOCK: opening a FIFO nobody writes to would wait for ever (a SIGHUP's reload
     * thread with it); it is refused below instead, as a directory or a device is. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        bd_err_set(err, BD_EIO, "cannot open '%s': %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        bd_err_set(err, BD_EIO, "'%s' is not a regular file", path);
        return NULL;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > max_bytes) {
        fclose(f);
        bd_err_set(err, BD_ETOOBIG, "file '%s' is larger than %zu bytes", path, max_bytes);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *data = malloc(size + 1);
    if (!data) {
        fclose(f);
        bd_err_set(err, BD_ENOMEM, "out of memory reading '%s'", path);
        return NULL;
    }
    size_t got = fread(data, 1, size, f);
    fclose(f);
    if (got != size) {
        free(data);
        bd_err_set(err, BD_EIO, "short read on '%s'", path);
        return NULL;
    }
    data[size] = '\0';
    if (len) {
        *len = size;
    }
    return data;
}

/* The first line of a small file (a cgroup's, whose size stat reports as 0) into buf; false
 * when it cannot be read. */
static bool first_line(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    bool ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    if (ok) {
        buf[strcspn(buf, "\n")] = '\0';
    }
    return ok;
}

/* A limit file's number: "max", a value at or past 2^60 (v1's "no limit"), or text that is not
 * a number are no limit (UINT64_MAX). */
static uint64_t limit_in(const char *path)
{
    char line[64];
    if (!first_line(path, line, sizeof line) || line[0] < '0' || line[0] > '9') {
        return UINT64_MAX;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(line, &end, 10);
    return errno || *end || v >= (1ull << 60) ? UINT64_MAX : (uint64_t)v;
}

/* The lowest limit in `file` of the cgroup at base/rel ("/a/b") and each one above it ("/a",
 * then base itself), each of which bounds it. rel is cut up on the way. */
static uint64_t lowest_up(const char *base, char *rel, const char *file)
{
    uint64_t best = UINT64_MAX;
    char path[8192];
    for (;;) {
        snprintf(path, sizeof path, "%s%s/%s", base, rel, file);
        uint64_t v = limit_in(path);
        best = v < best ? v : best;
        char *slash = strrchr(rel, '/');
        if (!slash || rel[0] == '\0') {
            return best;
        }
        *slash = '\0';
    }
}

uint64_t bd_memory_limit(const char *cgroup_root, const char *proc_cgroup, const char **from)
{
    /* /proc/self/cgroup: "0::/path" (v2), "4:memory:/path" (v1's memory controller). */
    char v2[4096] = "", v1[4096] = "", line[4200]; /* PATH_MAX paths */
    FILE *f = fopen(proc_cgroup, "r");
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *ctl = strchr(line, ':');
        char *rel = ctl ? strchr(ctl + 1, ':') : NULL;
        if (!rel) {
            continue;
        }
        *ctl++ = '\0'; /* line: the hierarchy's number, ctl: its controllers, rel: the path */
        *rel++ = '\0';
        if (strcmp(line, "0") == 0 && *ctl == '\0') {
            snprintf(v2, sizeof v2, "%s", rel);
        }
        char *save = NULL;
        for (char *tok = strtok_r(ctl, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (strcmp(tok, "memory") == 0) {
                snprintf(v1, sizeof v1, "%s", rel);
            }
        }
    }
    if (f) {
        fclose(f);
    }
    char base[4096];
    snprintf(base, sizeof base, "%s/memory", cgroup_root);
    uint64_t a = lowest_up(cgroup_root, v2, "memory.max");
    uint64_t b = lowest_up(base, v1, "memory.limit_in_bytes");
    uint64_t best = a < b ? a : b;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    bool cgroup = best < UINT64_MAX && (ram == 0 || best < ram);
    *from = cgroup ? "cgroup" : "ram";
    return cgroup ? best : ram;
}

/* ---- text --------------------------------------------------------------------------- */

/* The code point of the valid UTF-8 sequence at p[0..n), and its length in *len; -1 when
 * p does not start one. Rules as jansson's: no overlong forms, no surrogates, <= U+10FFFF. */
int32_t bd_utf8_decode(const unsigned char *p, size_t n, size_t *len)
{
    unsigned char b = p[0];
    size_t k;
    int32_t cp;
    if (b < 0x80) {
        *len = 1;
        return b;
    }
    if (b >= 0xC2 && b <= 0xDF) {
        k = 2;
        cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        k = 3;
        cp = b & 0x0F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        k = 4;
        cp = b & 0x07;
    } else {
        return -1;
    }
    if (n < k) {
        return -1;
    }
    for (size_t j = 1; j < k; j++) {
        if ((p[j] & 0xC0) != 0x80) {
            return -1;
        }
        cp = (cp << 6) | (p[j] & 0x3F);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
        return -1;
    }
    *len = k;
    return cp;
}

const char *bd_json_fault(char *buf, size_t cap, const char *text)
{
    static const char nul[] = "without JSON_ALLOW_NUL";
    const char *at = strstr(text, nul);
    if (strstr(text, "near '\xef\xbb\xbf")) {
        snprintf(buf, cap, "a UTF-8 byte order mark (EF BB BF) is not allowed before the JSON");
    } else if (at) {
        snprintf(buf, cap, "%.*sin strings%s", (int)(at - text), text, at + sizeof nul - 1);
    } else {
        snprintf(buf, cap, "%s", text);
    }
    return buf;
}

int bd_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int bd_pct_byte(const char **p, const char *end)
{
    const char *s = *p;
    int hi = *s == '%' && end - s > 2 ? bd_hex_digit(s[1]) : -1;
    int lo = hi >= 0 ? bd_hex_digit(s[2]) : -1;
    *p = s + (lo >= 0 ? 3 : 1);
    return lo >= 0 ? hi * 16 + lo : *s == '%' ? -1 : (unsigned char)*s;
}

bool bd_query_pair(const char *q, size_t n, size_t *pos, const char **name, size_t *name_len,
                   const char **value, size_t *value_len)
{
    if (*pos >= n) {
        return false; /* an empty pair after a last '&' names nothing either */
    }
    const char *p = q + *pos;
    const char *amp = memchr(p, '&', n - *pos);
    const char *e = amp ? amp : q + n;
    const char *eq = memchr(p, '=', (size_t)(e - p)); /* a raw '=' (%3D is the name's) */
    *name = p;
    *name_len = (size_t)((eq ? eq : e) - p);
    *value = eq ? eq + 1 : NULL;
    *value_len = eq ? (size_t)(e - eq - 1) : 0;
    *pos = (size_t)(e - q) + 1;
    return true;
}

bool bd_pct_equal(const char *s, size_t n, const char *want)
{
    const char *p = s;
    size_t i = 0;
    while (p < s + n && want[i] && bd_pct_byte(&p, s + n) == (unsigned char)want[i]) {
        i++;
    }
    return p == s + n && !want[i];
}

int32_t bd_hex4(const char *p)
{
    int32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int d = bd_hex_digit(p[k]);
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}
