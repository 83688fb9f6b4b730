/* client.c: the HTTP/1.1 client pieces of the load generator: URL parsing, a streaming reply
 * parser (Content-Length, chunked, or delimited by close; head split across any number of
 * reads), one blocking request on its own connection (through TLS for https://: the model
 * metadata, and what `batchd infer` and `inspect` send), and the open-loop schedule.
 *
 * The parser copies nothing in the common case (the whole head arrives in one read): it
 * parses the head in place and only counts body bytes unless the caller asked for them.
 *
 * Threads: pure functions over caller-owned state; a parser belongs to one connection. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "loadgen/loadgen_internal.h"

/* ---- schedule -------------------------------------------------------------------------- */

void bd_lg_sched_init(bd_lg_sched_t *s, bd_lg_dist_t dist, double rate, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->dist = dist;
    s->rate = rate;
    s->burst = 16;
    bd_rng_seed(&s->rng, seed);
}

uint64_t bd_lg_sched_next(bd_lg_sched_t *s)
{
    if (s->dist == BD_LG_CONSTANT || s->dist == BD_LG_BURSTY) {
        uint64_t k = s->dist == BD_LG_BURSTY ? s->k - s->k % (uint64_t)s->burst : s->k;
        double t = (double)k * 1e6 / s->rate;
        s->k++;
        return (uint64_t)t;
    }
    /* The first request goes at 0 like the constant schedule; then exponential gaps.
     * 1 - u is in (0, 1], so the log is finite. */
    if (s->k > 0) {
        s->t_us += -log(1.0 - bd_rng_uniform(&s->rng)) * 1e6 / s->rate;
    }
    s->k++;
    return (uint64_t)s->t_us;
}

/* ---- URL ------------------------------------------------------------------------------- */

int bd_lg_parse_url(const char *url, bd_lg_target_t *t, bd_err_t *err)
{
    t->tls = strncmp(url, "https://", 8) == 0;
    if (!t->tls && strncmp(url, "http://", 7) != 0) {
        return bd_err_set(err, BD_EINVAL, "--url must start with http:// or https://, got '%s'",
                          url);
    }
    const char *p = url + (t->tls ? 8 : 7);
    size_t authority = strcspn(p, "/");
    for (const char *c = p; *c; c++) {
        if ((unsigned char)*c <= ' ' || *c == 0x7f || *c == '?' || *c == '#' ||
            (*c == '@' && (size_t)(c - p) < authority)) {
            return bd_err_set(err, BD_EINVAL,
                              "--url '%s' may hold a host, a port and a path, without a query, "
                              "fragment, user name, space or control character",
                              url);
        }
    }
    const char *host_end;
    const char *host = p;
    if (*p == '[') { /* [IPv6]:port */
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end) {
            return bd_err_set(err, BD_EINVAL, "--url '%s' has '[' without ']'", url);
        }
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen >= sizeof t->host) {
        return bd_err_set(err, BD_EINVAL, "--url '%s' needs a host name of 1 to %zu characters",
                          url, sizeof t->host - 1);
    }
    memcpy(t->host, host, hlen);
    t->host[hlen] = '\0';
    strcpy(t->port, t->tls ? "443" : "80");
    if (*p == ':') {
        p++;
        size_t plen = strspn(p, "0123456789");
        long port = plen > 0 && plen < 6 ? strtol(p, NULL, 10) : -1;
        if (port < 1 || port > 65535 || (p[plen] != '\0' && p[plen] != '/')) {
            return bd_err_set(err, BD_EINVAL, "--url '%s' needs a port from 1 to 65535", url);
        }
        snprintf(t->port, sizeof t->port, "%ld", port);
        p += plen;
    }
    size_t rest = strlen(p);
    while (rest > 0 && p[rest - 1] == '/') {
        rest--;
    }
    if (rest >= sizeof t->prefix) {
        return bd_err_set(err, BD_EINVAL, "--url '%s' has a path longer than %zu characters", url,
                          sizeof t->prefix - 1);
    }
    memcpy(t->prefix, p, rest);
    t->prefix[rest] = '\0';
    return 0;
}

/* ---- reply parser ---------------------------------------------------------------------- */

enum {
    ST_HEAD = 0,
    ST_BODY_LEN,
    ST_BODY_EOF,
    ST_CHUNK_SIZE,
    ST_CHUNK_EXT,
    ST_CHUNK_DATA,
    ST_CHUNK_CR,
    ST_CHUNK_LF,
    ST_TRAILER,
    ST_DONE,
};

void bd_lg_http_init(bd_lg_http_t *p, bd_buf_t *body)
{
    memset(p, 0, sizeof *p);
    bd_buf_init(&p->head);
    p->body = body;
}

void bd_lg_http_reset(bd_lg_http_t *p)
{
    bd_buf_t head = p->head;
    bd_buf_t *body = p->body;
    memset(p, 0, sizeof *p);
    bd_buf_reset(&head);
    p->head = head;
    p->body = body;
}

void bd_lg_http_dispose(bd_lg_http_t *p)
{
    bd_buf_dispose(&p->head);
}

static int fail(bd_lg_http_t *p, const char *why)
{
    p->error = why;
    return BD_LG_HTTP_ERROR;
}

static bool header_is(const char *line, size_t len, const char *name, const char **val,
                      size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0) {
        return false;
    }
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) {
        end--;
    }
    *val = v;
    *vlen = (size_t)(end - v);
    return true;
}

static bool has_token(const char *v, size_t n, const char *token)
{
    size_t tn = strlen(token);
    for (size_t i = 0; i + tn <= n; i++) {
        if (strncasecmp(v + i, token, tn) == 0) {
            return true;
        }
    }
    return false;
}

/* Parse a complete head (status line + headers, ending with the empty line). */
static int parse_head(bd_lg_http_t *p, const char *h, size_t len)
{
    if (len < 12 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') || h[8] != ' ' ||
        h[9] < '1' || h[9] > '5' || h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9') {
        return fail(p, "the reply does not start with an HTTP/1.x status line");
    }
    bool http11 = h[7] == '1';
    p->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    p->keep_alive = http11;
    p->header_len = -1;
    bool have_len = false, chunked = false;
    uint64_t clen = 0;
    const char *line = memchr(h, '\n', len);
    const char *end = h + len;
    while (line && line + 1 < end) {
        line++;
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t llen = nl ? (size_t)(nl - line) : (size_t)(end - line);
        const char *v;
        size_t vlen;
        if (header_is(line, llen, "content-length", &v, &vlen)) {
            if (vlen == 0 || vlen > 18 || strspn(v, "0123456789") < vlen) {
                return fail(p, "the reply's Content-Length is not a number");
            }
            uint64_t n = 0;
            for (size_t i = 0; i < vlen; i++) {
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_len && n != clen) {
                return fail(p, "the reply has two different Content-Length headers");
            }
            have_len = true;
            clen = n;
        } else if (header_is(line, llen, "transfer-encoding", &v, &vlen)) {
            chunked = has_token(v, vlen, "chunked");
        } else if (header_is(line, llen, "connection", &v, &vlen)) {
            if (has_token(v, vlen, "close")) {
                p->keep_alive = false;
            } else if (has_token(v, vlen, "keep-alive")) {
                p->keep_alive = true;
            }
        } else if (header_is(line, llen, "inference-header-content-length", &v, &vlen)) {
            p->header_len = vlen > 0 && vlen <= 18 && strspn(v, "0123456789") >= vlen
                                ? strtoll(v, NULL, 10)
                                : -1;
        }
        line = nl;
    }
    if (p->status < 200 || p->status == 204 || p->status == 304) {
        p->state = p->status < 200 ? ST_HEAD : ST_DONE;
        return 0;
    }
    if (chunked) {
        p->state = ST_CHUNK_SIZE;
    } else if (have_len) {
        p->remaining = clen;
        p->state = clen ? ST_BODY_LEN : ST_DONE;
    } else {
        p->state = ST_BODY_EOF;
        p->keep_alive = false;
    }
    return 0;
}

static void body_bytes(bd_lg_http_t *p, const char *d, size_t n)
{
    if (p->body) {
        bd_buf_append(p->body, d, n);
    }
}

/* Find the end of the head ("\n\r\n" or "\n\n") in d[from..len); returns the length of the
 * head including the empty line, or 0. */
static size_t head_end(const char *d, size_t len, size_t from)
{
    for (size_t i = from; i < len; i++) {
        if (d[i] != '\n') {
            continue;
        }
        if (i + 1 < len && d[i + 1] == '\n') {
            return i + 2;
        }
        if (i + 2 < len && d[i + 1] == '\r' && d[i + 2] == '\n') {
            return i + 3;
        }
    }
    return 0;
}

int bd_lg_http_feed(bd_lg_http_t *p, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    *used = 0;
    while (i < len || p->state == ST_DONE) {
        switch (p->state) {
        case ST_HEAD: {
            if (p->head.len == 0) {
                size_t n = head_end(data + i, len - i, 0);
                if (n) {
                    int rc = parse_head(p, data + i, n);
                    i += n;
                    if (rc) {
                        return rc;
                    }
                    continue;
                }
            }
            size_t old = p->head.len;
            size_t take = len - i;
            if (old + take > BD_LG_MAX_HEAD_BYTES) {
                take = BD_LG_MAX_HEAD_BYTES - old;
            }
            bd_buf_append(&p->head, data + i, take);
            if (p->head.failed) {
                return fail(p, "out of memory reading the reply head");
            }
            size_t n = head_end(p->head.data, p->head.len, old > 2 ? old - 2 : 0);
            if (!n) {
                if (p->head.len >= BD_LG_MAX_HEAD_BYTES) {
                    return fail(p, "the reply head is larger than 64 KiB");
                }
                i += take;
                continue;
            }
            i += n - old;
            int rc = parse_head(p, p->head.data, n);
            bd_buf_reset(&p->head);
            if (rc) {
                return rc;
            }
            continue;
        }
        case ST_BODY_LEN:
        case ST_CHUNK_DATA: {
            size_t n = len - i;
            if ((uint64_t)n > p->remaining) {
                n = (size_t)p->remaining;
            }
            body_bytes(p, data + i, n);
            i += n;
            p->remaining -= n;
            if (p->remaining == 0) {
                p->state = p->state == ST_BODY_LEN ? ST_DONE : ST_CHUNK_CR;
            }
            continue;
        }
        case ST_BODY_EOF:
            body_bytes(p, data + i, len - i);
            i = len;
            continue;
        case ST_CHUNK_SIZE: {
            char c = data[i++];
            int h = bd_hex_digit(c);
            if (h >= 0) {
                if (p->chunk_digits >= 15) {
                    return fail(p, "a chunk size in the reply is too large");
                }
                p->chunk_size = p->chunk_size * 16 + (uint64_t)h;
                p->chunk_digits++;
            } else if (c == '\r' || c == ';' || c == ' ' || c == '\t') {
                p->state = ST_CHUNK_EXT;
            } else if (c == '\n') {
                goto size_line_done;
            } else {
                return fail(p, "the reply has a malformed chunk size");
            }
            continue;
        }
        case ST_CHUNK_EXT:
            if (data[i++] == '\n') {
                goto size_line_done;
            }
            continue;
        case ST_CHUNK_CR:
            if (data[i] == '\r') {
                i++;
            }
            p->state = ST_CHUNK_LF;
            continue;
        case ST_CHUNK_LF:
            if (data[i++] != '\n') {
                return fail(p, "a chunk in the reply is not followed by CRLF");
            }
            p->state = ST_CHUNK_SIZE;
            continue;
        case ST_TRAILER: {
            char c = data[i++];
            if (c == '\n') {
                if (p->line_empty) {
                    p->state = ST_DONE;
                }
                p->line_empty = true;
            } else if (c != '\r') {
                p->line_empty = false;
            }
            continue;
        }
        case ST_DONE:
            *used = i;
            return BD_LG_HTTP_DONE;
        default:
            return fail(p, "reply parser in an impossible state");
        }
    size_line_done:
        if (p->chunk_digits == 0) {
            return fail(p, "the reply has an empty chunk size line");
        }
        if (p->chunk_size == 0) {
            p->state = ST_TRAILER;
            p->line_empty = true;
        } else {
            p->remaining = p->chunk_size;
            p->state = ST_CHUNK_DATA;
        }
        p->chunk_size = 0;
        p->chunk_digits = 0;
    }
    *used = i;
    return BD_LG_HTTP_MORE;
}

int bd_lg_http_eof(bd_lg_http_t *p)
{
    if (p->state == ST_BODY_EOF || p->state == ST_DONE) {
        p->state = ST_DONE;
        return BD_LG_HTTP_DONE;
    }
    return fail(p, "the connection closed before the reply was complete");
}

/* ---- one blocking request -------------------------------------------------------------- */

int bd_lg_http_request(const bd_lg_target_t *t, const char *method, const char *path,
                       const char *headers, const char *body, size_t body_len, uint64_t timeout_us,
                       size_t max_reply, bd_lg_reply_t *r, bd_err_t *err)
{
    uint64_t deadline = bd_now_us() + timeout_us;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int grc = getaddrinfo(t->host, t->port, &hints, &ai);
    if (grc != 0) {
        return bd_err_set(err, BD_EIO, "cannot resolve host '%s': %s", t->host, gai_strerror(grc));
    }
    bd_buf_t req;
    bd_buf_init(&req);
    bool v6 = strchr(t->host, ':') != NULL;
    bd_buf_printf(&req, "%s %s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\nConnection: close\r\n%s", method,
                  t->prefix, path, v6 ? "[" : "", t->host, v6 ? "]" : "", t->port, headers);
    if (t->api_key) {
        bd_buf_printf(&req, "Authorization: Bearer %s\r\n", t->api_key);
    }
    if (body) {
        bd_buf_printf(&req, "Content-Length: %zu\r\n", body_len);
    }
    bd_buf_puts(&req, "\r\n");
    if (body) {
        bd_buf_append(&req, body, body_len);
    }
    bd_lg_http_t p;
    bd_lg_http_init(&p, &r->body);
    int rc = BD_EIO;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || req.failed) {
        bd_err_set(err, BD_EIO, "cannot create a socket: %s", strerror(errno));
        goto done;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        bd_err_set(err, BD_EIO, "cannot connect to %s:%s: %s", t->host, t->port, strerror(errno));
        goto done;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (bd_lg_wait_fd(fd, POLLOUT, deadline) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        bd_err_set(err, BD_EIO, "cannot connect to %s:%s: %s", t->host, t->port,
                   soerr ? strerror(soerr) : "timed out");
        goto done;
    }
    if (t->tls) {
        signal(SIGPIPE, SIG_IGN); /* SSL_write writes with write(2), to a server that may close */
        if (bd_lg_tls_open(t, fd, deadline, &ctx, &ssl, err) != 0) {
            goto done;
        }
    }
    short wait = 0;
    for (size_t off = 0; off < req.len;) {
        ssize_t n = bd_lg_io_send(fd, ssl, req.data + off, req.len - off, &wait);
        if (n > 0) {
            off += (size_t)n;
        } else if (!wait) {
            break; /* the server may have answered (a 413, say) and closed: read what it said */
        } else if (bd_lg_wait_fd(fd, wait, deadline) != 0) {
            bd_err_set(err, BD_EIO, "timed out sending to %s:%s", t->host, t->port);
            goto done;
        }
    }
    char buf[65536];
    int st = BD_LG_HTTP_MORE;
    const char *why = NULL; /* what failed, when the parser's error does not say */
    char size_why[64];
    while (st == BD_LG_HTTP_MORE) {
        if (bd_now_us() >= deadline) { /* a server that never stops sending counts too */
            why = "timed out";
            break;
        }
        ssize_t n = bd_lg_io_recv(fd, ssl, buf, sizeof buf, &wait);
        if (n < 0 && wait) {
            if (bd_lg_wait_fd(fd, wait, deadline) != 0) {
                why = "timed out";
                break;
            }
            continue;
        }
        size_t used;
        /* A reset (or TLS ending without close_notify) ends a reply delimited by the close. */
        st = n > 0 ? bd_lg_http_feed(&p, buf, (size_t)n, &used) : bd_lg_http_eof(&p);
        if (n < 0 && st != BD_LG_HTTP_DONE) {
            why = strerror(errno);
            break;
        }
        if (st == BD_LG_HTTP_MORE && r->body.len > max_reply) {
            snprintf(size_why, sizeof size_why, "the reply is larger than %zu bytes", max_reply);
            why = size_why;
            break;
        }
    }
    bd_buf_reserve(&r->body, 1); /* an empty body still gets its terminating NUL */
    if (st != BD_LG_HTTP_DONE || r->body.failed) {
        rc = r->body.failed ? BD_ENOMEM : BD_EIO;
        bd_err_set(err, rc, "%s %s%s to %s:%s failed: %s", method, t->prefix, path, t->host,
                   t->port,
                   r->body.failed ? "out of memory"
                   : why          ? why
                                  : p.error);
        goto done;
    }
    r->body.data[r->body.len] = '\0';
    r->status = p.status;
    r->header_len = p.header_len;
    rc = 0;
done:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0) {
        close(fd);
    }
    freeaddrinfo(ai);
    bd_lg_http_dispose(&p);
    bd_buf_dispose(&req);
    return rc;
}

/* s as one path segment (RFC 3986 3.3): every byte but the unreserved ones as %XX, so a name
 * with a space, '?', '/' or a control character reaches the server as that name. */
static void put_segment(char *out, size_t cap, size_t *len, const char *s)
{
    for (; *s && *len + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out[(*len)++] = (char)c;
        } else {
            *len += (size_t)snprintf(out + *len, cap - *len, "%%%02X", c);
        }
    }
    out[*len] = '\0';
}

void bd_lg_model_path(const bd_lg_target_t *t, char *out, size_t cap)
{
    size_t len = (size_t)snprintf(out, cap, "/v2/models/");
    put_segment(out, cap, &len, t->model);
    if (t->version[0] && len + 11 < cap) {
        len += (size_t)snprintf(out + len, cap - len, "/versions/");
        put_segment(out, cap, &len, t->version);
    }
}

char *bd_lg_fetch_metadata(const bd_lg_target_t *t, uint64_t timeout_us, size_t *len, bd_err_t *err)
{
    char path[1024];
    bd_lg_model_path(t, path, sizeof path);
    bd_lg_reply_t r = {0};
    bd_buf_init(&r.body);
    char *out = NULL;
    int rc = bd_lg_http_request(t, "GET", path, "", NULL, 0, timeout_us, (size_t)64 << 20, &r, err);
    if (rc == 0 && r.status == 200) {
        out = bd_buf_steal(&r.body, len);
    } else if (rc == 0) {
        char body[BD_TEXT_SNIPPET]; /* escaped when it is no plain text */
        bd_err_set(err, BD_EIO, "GET %s%s answered %d: %s%s", t->prefix, path, r.status,
                   r.body.len ? bd_text_shown(body, sizeof body, r.body.data, r.body.len)
                              : "(empty body)",
                   r.status == 401 ? "; a key goes with --api-key or BATCHD_API_KEY" : "");
    }
    bd_buf_dispose(&r.body);
    return out;
}
