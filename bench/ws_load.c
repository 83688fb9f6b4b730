/* ws_load: keep exactly N KServe v2 infer requests in flight on ONE WebSocket (batchd's
 * /v2/stream, RFC 6455) for a fixed time, and print one JSON line of throughput and latency.
 *
 *   ws_load --port P --body FILE [--header-len N] [--host 127.0.0.1] [--path /v2/stream]
 *           [--inflight 64] [--warmup 1] [--duration 5] [--timeout 10]
 *
 * FILE is the request, read once. Text mode (no --header-len): FILE is the infer request JSON
 * and goes out as a text frame. Binary mode (--header-len N): FILE is N bytes of JSON header
 * followed by Triton binary tensor bytes (the layout of an HTTP binary body); it goes out as a
 * binary frame prefixed with N as 4 little-endian bytes. The JSON must hold "id":"00000000"
 * (8 digits): each request gets its own id written over those digits (4 digits of slot, 4 of
 * generation), and replies are matched by it.
 *
 * Closed loop: a reply's slot is reused at once for the next request. Every frame is masked
 * (the key is fixed per run; the id digits are masked as they are patched in). Replies that
 * arrive inside [warmup, warmup + duration) are counted and their latencies (send to reply,
 * CLOCK_MONOTONIC) kept; then no new requests go out, the outstanding ones are awaited and the
 * socket is closed with 1000. Output:
 *
 *   {"requests":..,"seconds":..,"rps":..,"p50_ms":..,"p99_ms":..,"mean_ms":..,"max_ms":..,
 *    "errors":..,"inflight":..,"replies_total":..,"client_cpu_us_per_req":..}
 *
 * Exit status 1 on any error reply (after the JSON line), and at once, with a message on
 * stderr, on a protocol problem, a refused handshake, a request older than --timeout, or a
 * drain that takes longer than --timeout. Single-threaded: plain sockets and poll(2). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ID_DIGITS 8
#define MAX_INFLIGHT 9999

typedef struct {
    bool busy;
    unsigned gen;
    uint64_t sent_ns;
} slot_t;

typedef struct {
    char *data;
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed (out: sent; in: parsed) */
    size_t cap;
} buf_t;

static const char *prog = "ws_load";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        die("out of memory");
    }
    return p;
}

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->off > 0 && b->len + more > b->cap) { /* compact first */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + more > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + more) {
            cap *= 2;
        }
        char *p = realloc(b->data, cap);
        if (!p) {
            die("out of memory");
        }
        b->data = p;
        b->cap = cap;
    }
}

static void buf_append(buf_t *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        die("%s: %s", path, strerror(errno));
    }
    buf_t b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_append(&b, chunk, n);
    }
    if (ferror(f)) {
        die("%s: read error", path);
    }
    fclose(f);
    *len = b.len;
    return b.data;
}

/* xorshift64*: mask keys and the handshake nonce need no more than this. */
static uint64_t rng_state;
static uint32_t rnd32(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static void base64(char *dst, const unsigned char *src, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        *dst++ = tab[v >> 18];
        *dst++ = tab[(v >> 12) & 63];
        *dst++ = tab[(v >> 6) & 63];
        *dst++ = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        *dst++ = tab[v >> 18];
        *dst++ = tab[(v >> 12) & 63];
        *dst++ = '=';
        *dst++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        *dst++ = tab[v >> 18];
        *dst++ = tab[(v >> 12) & 63];
        *dst++ = tab[(v >> 6) & 63];
        *dst++ = '=';
    }
    *dst = '\0';
}

/* A masked client frame (FIN set) of `opcode` around payload[0..n). Returns the offset of the
 * payload inside the frame; the frame is appended to `out`; the mask key is `key`. */
static size_t put_frame(buf_t *out, unsigned opcode, const unsigned char key[4],
                        const unsigned char *payload, size_t n)
{
    unsigned char h[14];
    size_t hl = 0;
    h[hl++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[hl++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (unsigned char)(n >> 8);
        h[hl++] = (unsigned char)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int s = 56; s >= 0; s -= 8) {
            h[hl++] = (unsigned char)((uint64_t)n >> s);
        }
    }
    memcpy(h + hl, key, 4);
    hl += 4;
    buf_reserve(out, hl + n);
    memcpy(out->data + out->len, h, hl);
    size_t start = out->len + hl;
    unsigned char *d = (unsigned char *)out->data + start;
    for (size_t i = 0; i < n; i++) {
        d[i] = payload[i] ^ key[i & 3];
    }
    out->len = start + n;
    return start;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0) {
        return 0.0;
    }
    size_t k = (size_t)(p * (double)n + 0.999999);
    k = k == 0 ? 0 : k - 1;
    return (double)v[k < n ? k : n - 1] / 1e6;
}

/* ---- the run ------------------------------------------------------------------------------ */

typedef struct {
    int fd;
    /* the request frame, built once; the id digits sit at frame[id_off .. id_off + 8) */
    unsigned char *frame;
    size_t frame_len;
    size_t id_off; /* offset of the id digits in the frame */
    size_t id_pay; /* ... and in the payload, for the mask phase */
    unsigned char key[4];
    slot_t *slots;
    size_t inflight;
    size_t outstanding;
    buf_t out, in, msg; /* msg: a fragmented message being put together */
    unsigned msg_opcode;
    bool close_sent, close_received;
    uint64_t t_meas, t_end, timeout_ns;
    uint64_t *lat;
    size_t n_lat, cap_lat;
    uint64_t errors, replies;
} run_t;

static void issue(run_t *r, size_t slot)
{
    slot_t *s = &r->slots[slot];
    s->gen = (s->gen + 1) % 10000;
    char digits[ID_DIGITS + 1];
    snprintf(digits, sizeof digits, "%04zu%04u", slot, s->gen);
    for (size_t i = 0; i < ID_DIGITS; i++) {
        r->frame[r->id_off + i] = (unsigned char)digits[i] ^ r->key[(r->id_pay + i) & 3];
    }
    buf_append(&r->out, r->frame, r->frame_len);
    s->busy = true;
    s->sent_ns = now_ns();
}

static void flush_out(run_t *r)
{
    while (r->out.off < r->out.len) {
        ssize_t n = send(r->fd, r->out.data + r->out.off, r->out.len - r->out.off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            die("send: %s", strerror(errno));
        }
        r->out.off += (size_t)n;
    }
    r->out.off = r->out.len = 0;
}

static void on_reply(run_t *r, const unsigned char *p, size_t n, bool binary)
{
    uint64_t t = now_ns();
    const char *hdr = (const char *)p;
    size_t hl = n;
    if (binary) {
        if (n < 4) {
            die("a binary reply of %zu bytes has no header length", n);
        }
        uint32_t h =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (h == 0 || h > n - 4) {
            die("a binary reply's header length %u does not fit its %zu bytes", h, n);
        }
        hdr += 4;
        hl = h;
    }
    static const char key[] = "\"id\":\"";
    const char *q = memmem(hdr, hl, key, sizeof key - 1);
    if (!q) {
        die("a reply without an id: %.*s", (int)(hl < 300 ? hl : 300), hdr);
    }
    q += sizeof key - 1;
    size_t left = hl - (size_t)(q - hdr);
    unsigned slot = 0, gen = 0;
    for (size_t i = 0; i < ID_DIGITS; i++) {
        if (i >= left || q[i] < '0' || q[i] > '9') {
            die("a reply with an id that is not ours: %.*s", (int)(hl < 300 ? hl : 300), hdr);
        }
        if (i < 4) {
            slot = slot * 10 + (unsigned)(q[i] - '0');
        } else {
            gen = gen * 10 + (unsigned)(q[i] - '0');
        }
    }
    if (left <= ID_DIGITS || q[ID_DIGITS] != '"' || slot >= r->inflight || !r->slots[slot].busy ||
        r->slots[slot].gen != gen) {
        die("a reply with an unknown or repeated id: %.*s", (int)(hl < 300 ? hl : 300), hdr);
    }
    slot_t *s = &r->slots[slot];
    s->busy = false;
    r->replies++;
    if (memmem(hdr, hl, "\"error\":", 8)) {
        if (r->errors++ < 5) {
            fprintf(stderr, "%s: error reply: %.*s\n", prog, (int)(hl < 500 ? hl : 500), hdr);
        }
    }
    if (t >= r->t_meas && t < r->t_end) {
        if (r->n_lat == r->cap_lat) {
            r->cap_lat = r->cap_lat ? r->cap_lat * 2 : 65536;
            r->lat = realloc(r->lat, r->cap_lat * sizeof *r->lat);
            if (!r->lat) {
                die("out of memory");
            }
        }
        r->lat[r->n_lat++] = t - s->sent_ns;
    }
    if (t < r->t_end) {
        issue(r, slot);
    } else {
        r->outstanding--;
    }
}

static void on_message(run_t *r, unsigned opcode, const unsigned char *p, size_t n)
{
    switch (opcode) {
    case 1:
    case 2:
        on_reply(r, p, n, opcode == 2);
        break;
    case 8: {
        r->close_received = true;
        unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 0;
        if (!r->close_sent || (code != 1000 && code != 0)) {
            die("the server closed the socket: code %u %.*s", code, n > 2 ? (int)(n - 2) : 0,
                n > 2 ? (const char *)p + 2 : "");
        }
        break;
    }
    case 9: /* ping: answer with a pong carrying the same bytes */
        if (!r->close_sent) {
            put_frame(&r->out, 10, r->key, p, n);
        }
        break;
    case 10:
        break;
    default:
        die("a frame with opcode %u", opcode);
    }
}

/* Parse every complete frame in r->in. */
static void parse_in(run_t *r)
{
    for (;;) {
        const unsigned char *p = (const unsigned char *)r->in.data + r->in.off;
        size_t have = r->in.len - r->in.off;
        if (have < 2) {
            break;
        }
        bool fin = p[0] & 0x80;
        unsigned opcode = p[0] & 0x0f;
        if (p[0] & 0x70) {
            die("a frame with reserved bits set (0x%02x)", p[0]);
        }
        if (p[1] & 0x80) {
            die("a masked frame from the server");
        }
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (have < 4) {
                break;
            }
            len = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (len == 127) {
            if (have < 10) {
                break;
            }
            len = 0;
            for (int i = 0; i < 8; i++) {
                len = len << 8 | p[2 + i];
            }
            hl = 10;
            if (len > ((uint64_t)1 << 32)) {
                die("a frame of %llu bytes", (unsigned long long)len);
            }
        }
        if (have < hl + len) {
            buf_reserve(&r->in, hl + (size_t)len - have); /* room for the rest */
            break;
        }
        const unsigned char *pay = p + hl;
        r->in.off += hl + (size_t)len;
        if (opcode >= 8) { /* control frames are never fragmented */
            if (!fin) {
                die("a fragmented control frame");
            }
            on_message(r, opcode, pay, (size_t)len);
        } else if (opcode == 0) {
            if (r->msg_opcode == 0) {
                die("a continuation frame with no message to continue");
            }
            buf_append(&r->msg, pay, (size_t)len);
            if (fin) {
                on_message(r, r->msg_opcode, (unsigned char *)r->msg.data, r->msg.len);
                r->msg.len = 0;
                r->msg_opcode = 0;
            }
        } else if (r->msg_opcode != 0) {
            die("a new message inside a fragmented one");
        } else if (fin) {
            on_message(r, opcode, pay, (size_t)len);
        } else {
            r->msg_opcode = opcode;
            r->msg.len = 0;
            buf_append(&r->msg, pay, (size_t)len);
        }
    }
    if (r->in.off == r->in.len) {
        r->in.off = r->in.len = 0;
    }
}

static void read_in(run_t *r)
{
    for (;;) {
        buf_reserve(&r->in, 65536);
        size_t room = r->in.cap - r->in.len;
        ssize_t n = recv(r->fd, r->in.data + r->in.len, room, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            die("recv: %s", strerror(errno));
        }
        if (n == 0) {
            if (r->close_sent && r->close_received) {
                return;
            }
            die("the server hung up without a close frame (%zu requests outstanding)",
                r->outstanding);
        }
        r->in.len += (size_t)n;
        parse_in(r);
        if ((size_t)n < room) {
            return;
        }
    }
}

/* Connect, send the upgrade, wait for 101; bytes after the reply's headers stay in r->in. */
static void handshake(run_t *r, const char *host, int port, const char *path, uint64_t deadline)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        die("--host wants a numeric IPv4 address, got '%s'", host);
    }
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (r->fd < 0 || connect(r->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        die("connect %s:%d: %s", host, port, strerror(errno));
    }
    int one = 1;
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK);
    unsigned char nonce[16];
    for (size_t i = 0; i < sizeof nonce; i++) {
        nonce[i] = (unsigned char)rnd32();
    }
    char key[32];
    base64(key, nonce, sizeof nonce);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port, key);
    if (n < 0 || (size_t)n >= sizeof req) {
        die("--path is too long");
    }
    buf_append(&r->out, req, (size_t)n);
    for (;;) {
        flush_out(r);
        const char *end = r->in.len ? memmem(r->in.data, r->in.len, "\r\n\r\n", 4) : NULL;
        if (end) {
            if (r->in.len < 12 || memcmp(r->in.data, "HTTP/1.1 101", 12) != 0) {
                die("the upgrade was refused: %.*s", (int)(r->in.len < 600 ? r->in.len : 600),
                    r->in.data);
            }
            r->in.off = (size_t)(end + 4 - r->in.data);
            return;
        }
        uint64_t t = now_ns();
        if (t >= deadline) {
            die("no reply to the upgrade request");
        }
        struct pollfd pfd = {r->fd, (short)(POLLIN | (r->out.len ? POLLOUT : 0)), 0};
        poll(&pfd, 1, 100);
        buf_reserve(&r->in, 4096);
        ssize_t k = recv(r->fd, r->in.data + r->in.len, r->in.cap - r->in.len, 0);
        if (k == 0) {
            die("the server hung up during the upgrade");
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            die("recv: %s", strerror(errno));
        }
        if (k > 0) {
            r->in.len += (size_t)k;
        }
        if (r->in.len > 65536) {
            die("the upgrade reply's headers are too long");
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: ws_load --port P --body FILE [--header-len N] [--host 127.0.0.1]\n"
                    "               [--path /v2/stream] [--inflight 64] [--warmup 1]\n"
                    "               [--duration 5] [--timeout 10]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/v2/stream", *body_path = NULL;
    int port = 0;
    long header_len = -1;
    long inflight = 64;
    double warmup = 1, duration = 5, timeout = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            usage();
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) {
            host = v;
        } else if (!strcmp(a, "--port")) {
            port = atoi(v);
        } else if (!strcmp(a, "--path")) {
            path = v;
        } else if (!strcmp(a, "--body")) {
            body_path = v;
        } else if (!strcmp(a, "--header-len")) {
            header_len = atol(v);
        } else if (!strcmp(a, "--inflight")) {
            inflight = atol(v);
        } else if (!strcmp(a, "--warmup")) {
            warmup = atof(v);
        } else if (!strcmp(a, "--duration")) {
            duration = atof(v);
        } else if (!strcmp(a, "--timeout")) {
            timeout = atof(v);
        } else {
            usage();
        }
    }
    if (port <= 0 || port > 65535 || !body_path || inflight < 1 || inflight > MAX_INFLIGHT ||
        warmup < 0 || duration <= 0 || timeout <= 0) {
        usage();
    }
    size_t body_len;
    unsigned char *body = (unsigned char *)read_file(body_path, &body_len);
    bool binary = header_len >= 0;
    if (binary && (header_len == 0 || (size_t)header_len > body_len)) {
        die("--header-len %ld does not fit the body's %zu bytes", header_len, body_len);
    }
    size_t json_len = binary ? (size_t)header_len : body_len;
    static const char id_key[] = "\"id\":\"00000000\"";
    const unsigned char *idp = memmem(body, json_len, id_key, sizeof id_key - 1);
    if (!idp) {
        die("%s: the JSON must hold \"id\":\"00000000\" (the digits are overwritten per request)",
            body_path);
    }

    run_t r = {.fd = -1, .inflight = (size_t)inflight};
    rng_state = now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    uint32_t k = rnd32();
    memcpy(r.key, &k, 4);

    /* The payload: [4-byte LE header length] JSON [tensor bytes]. */
    size_t pre = binary ? 4 : 0;
    size_t pay_len = pre + body_len;
    unsigned char *pay = xmalloc(pay_len);
    if (binary) {
        uint32_t h = (uint32_t)header_len;
        unsigned char le[4] = {h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, h >> 24};
        memcpy(pay, le, 4);
    }
    memcpy(pay + pre, body, body_len);
    r.id_pay = pre + (size_t)(idp - body) + 6; /* after "id":" */
    buf_t fb = {0};
    size_t start = put_frame(&fb, binary ? 2 : 1, r.key, pay, pay_len);
    r.frame = (unsigned char *)fb.data;
    r.frame_len = fb.len;
    r.id_off = start + r.id_pay;
    free(pay);
    free(body);

    r.slots = calloc(r.inflight, sizeof *r.slots);
    if (!r.slots) {
        die("out of memory");
    }
    r.timeout_ns = (uint64_t)(timeout * 1e9);
    uint64_t t0 = now_ns();
    handshake(&r, host, port, path, t0 + r.timeout_ns);

    uint64_t t_start = now_ns();
    r.t_meas = t_start + (uint64_t)(warmup * 1e9);
    r.t_end = r.t_meas + (uint64_t)(duration * 1e9);
    uint64_t t_give_up = r.t_end + r.timeout_ns; /* the drain and the close */
    for (size_t i = 0; i < r.inflight; i++) {
        issue(&r, i);
    }
    r.outstanding = r.inflight;
    parse_in(&r); /* frames that came with the 101, if any */
    uint64_t next_check = t_start;
    for (;;) {
        flush_out(&r);
        uint64_t t = now_ns();
        if (t >= r.t_end && r.outstanding == 0 && !r.close_sent) {
            static const unsigned char bye[2] = {0x03, 0xe8}; /* 1000 */
            put_frame(&r.out, 8, r.key, bye, 2);
            r.close_sent = true;
            flush_out(&r);
        }
        if (r.close_sent && r.close_received) {
            break;
        }
        if (t >= t_give_up) {
            die("gave up %.1f s after the end: %zu requests still outstanding%s", timeout,
                r.outstanding, r.close_sent ? ", no close frame back" : "");
        }
        if (t >= next_check) { /* a request older than --timeout is a failure */
            for (size_t i = 0; i < r.inflight; i++) {
                if (r.slots[i].busy && t - r.slots[i].sent_ns > r.timeout_ns) {
                    die("request in slot %zu got no reply in %.1f s", i, timeout);
                }
            }
            next_check = t + 100000000u;
        }
        int wait_ms = 100;
        if (t < r.t_end && (r.t_end - t) / 1000000u < (uint64_t)wait_ms) {
            wait_ms = (int)((r.t_end - t) / 1000000u) + 1;
        }
        struct pollfd pfd = {r.fd, (short)(POLLIN | (r.out.len > r.out.off ? POLLOUT : 0)), 0};
        int pr = poll(&pfd, 1, wait_ms);
        if (pr < 0 && errno != EINTR) {
            die("poll: %s", strerror(errno));
        }
        if (pr > 0 && (pfd.revents & (POLLIN | POLLERR | POLLHUP))) {
            read_in(&r);
        }
    }
    close(r.fd);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_us = (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
                    (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
    qsort(r.lat, r.n_lat, sizeof *r.lat, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < r.n_lat; i++) {
        sum += (double)r.lat[i];
    }
    printf("{\"requests\":%zu,\"seconds\":%.3f,\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"mean_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%llu,\"inflight\":%zu,"
           "\"replies_total\":%llu,\"client_cpu_us_per_req\":%.2f}\n",
           r.n_lat, duration, (double)r.n_lat / duration, pct_ms(r.lat, r.n_lat, 0.50),
           pct_ms(r.lat, r.n_lat, 0.99), r.n_lat ? sum / (double)r.n_lat / 1e6 : 0.0,
           r.n_lat ? (double)r.lat[r.n_lat - 1] / 1e6 : 0.0, (unsigned long long)r.errors,
           r.inflight, (unsigned long long)r.replies, r.replies ? cpu_us / (double)r.replies : 0.0);
    free(r.lat);
    free(r.slots);
    free(r.frame);
    free(r.out.data);
    free(r.in.data);
    free(r.msg.data);
    return r.errors ? 1 : 0;
}
