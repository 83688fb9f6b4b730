/* zip.c: content codings with zlib (see zip.h).
 *
 * The reader owns a z_stream and feeds it the borrowed input in pieces zlib's 32-bit counters
 * can take. Output goes straight into the caller's bd_buf_t, whose capacity this file grows
 * itself (bd_buf_reserve doubles, which could allocate twice the limit): the capacity never
 * passes max_len + 1, the one byte that proves the stream is longer than the limit.
 *
 * Threads: any; a reader belongs to one thread at a time. */
#include "zip/zip.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#define IN_CHUNK (1u << 30)      /* input handed to zlib at once (avail_in is 32 bits) */
#define OUT_MIN (16u * 1024)     /* the smallest growth of an output buffer */
#define OUT_GUESS_MAX (1u << 20) /* the first capacity: 4x the input, at most this */
#define DEFLATE_LEVEL 1          /* Z_BEST_SPEED; see zip.h */

const char *bd_zip_name(bd_zip_coding_t coding)
{
    return coding == BD_ZIP_GZIP ? "gzip" : coding == BD_ZIP_DEFLATE ? "deflate" : "identity";
}

/* ---- header values ---------------------------------------------------------------------- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The next comma-separated element of v[*pos..n), without surrounding whitespace; false at
 * the end. */
static bool next_element(const char *v, size_t n, size_t *pos, const char **el, size_t *len)
{
    if (*pos >= n) {
        return false;
    }
    const char *comma = memchr(v + *pos, ',', n - *pos);
    size_t end = comma ? (size_t)(comma - v) : n;
    size_t a = *pos, b = end;
    while (a < b && is_ows(v[a])) {
        a++;
    }
    while (b > a && is_ows(v[b - 1])) {
        b--;
    }
    *el = v + a;
    *len = b - a;
    *pos = end + 1;
    return true;
}

static bool token_is(const char *t, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(t, name, n) == 0;
}

int bd_zip_content_encoding(const char *v, size_t n, bd_zip_coding_t *coding, bd_err_t *err)
{
    *coding = BD_ZIP_IDENTITY;
    size_t pos = 0, len = 0;
    const char *t = NULL;
    int shown = n > 64 ? 64 : (int)n;
    while (next_element(v, n, &pos, &t, &len)) {
        bd_zip_coding_t c;
        if (len == 0 || token_is(t, len, "identity")) {
            continue;
        } else if (token_is(t, len, "gzip") || token_is(t, len, "x-gzip")) {
            c = BD_ZIP_GZIP;
        } else if (token_is(t, len, "deflate")) {
            c = BD_ZIP_DEFLATE;
        } else {
            return bd_err_set(err, BD_ECODING,
                              "Content-Encoding '%.*s' is not supported; the server accepts "
                              "request bodies as gzip, deflate or identity",
                              (int)(len > 64 ? 64 : len), t);
        }
        if (*coding != BD_ZIP_IDENTITY) {
            return bd_err_set(err, BD_ECODING,
                              "Content-Encoding '%.*s' applies more than one coding; the server "
                              "accepts one of gzip, deflate or identity",
                              shown, v);
        }
        *coding = c;
    }
    return 0;
}

/* A qvalue (RFC 9110 §12.4.2) in thousandths, or -1 when it is not one: "0", "0.5", "1.000". */
static int qvalue(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1') || (n > 1 && s[1] != '.') || n > 5) {
        return -1;
    }
    int q = (s[0] - '0') * 1000;
    int scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        q += (s[i] - '0') * scale;
    }
    return q <= 1000 ? q : -1;
}

bd_zip_coding_t bd_zip_accept(const char *v, size_t n)
{
    /* q in thousandths; -1: not named */
    int q_gzip = -1, q_deflate = -1, q_identity = -1, q_star = -1;
    size_t pos = 0, len = 0;
    const char *el = NULL;
    while (next_element(v, n, &pos, &el, &len)) {
        const char *semi = memchr(el, ';', len);
        size_t tlen = semi ? (size_t)(semi - el) : len;
        while (tlen > 0 && is_ows(el[tlen - 1])) {
            tlen--;
        }
        int q = 1000;
        /* Parameters: only "q" means something here; the last one given counts. */
        for (const char *p = semi; p && q >= 0;) {
            const char *start = p + 1, *end = el + len;
            const char *next = memchr(start, ';', (size_t)(end - start));
            const char *stop = next ? next : end;
            while (start < stop && is_ows(*start)) {
                start++;
            }
            const char *eq = memchr(start, '=', (size_t)(stop - start));
            size_t klen = eq ? (size_t)(eq - start) : 0;
            while (klen > 0 && is_ows(start[klen - 1])) {
                klen--;
            }
            if (eq && token_is(start, klen, "q")) {
                const char *val = eq + 1;
                while (val < stop && is_ows(*val)) {
                    val++;
                }
                size_t vlen = (size_t)(stop - val);
                while (vlen > 0 && is_ows(val[vlen - 1])) {
                    vlen--;
                }
                q = qvalue(val, vlen);
            }
            p = next;
        }
        if (q < 0 || tlen == 0) {
            continue;
        }
        if (token_is(el, tlen, "gzip") || token_is(el, tlen, "x-gzip")) {
            q_gzip = q;
        } else if (token_is(el, tlen, "deflate")) {
            q_deflate = q;
        } else if (token_is(el, tlen, "identity")) {
            q_identity = q;
        } else if (token_is(el, tlen, "*")) {
            q_star = q;
        }
    }
    int g = q_gzip >= 0 ? q_gzip : q_star > 0 ? q_star : 0;
    int d = q_deflate >= 0 ? q_deflate : q_star > 0 ? q_star : 0;
    int best = g >= d ? g : d;
    /* Identity is always acceptable (§12.5.3); it wins only when the client rates it higher
     * than the coding it also offers. */
    if (best == 0 || q_identity > best) {
        return BD_ZIP_IDENTITY;
    }
    return g >= d ? BD_ZIP_GZIP : BD_ZIP_DEFLATE;
}

/* ---- output capacity -------------------------------------------------------------------- */

/* Give `out` a capacity of exactly `cap` bytes when it has less; 0 or BD_ENOMEM. */
static int set_cap(bd_buf_t *out, size_t cap)
{
    if (out->failed) {
        return BD_ENOMEM;
    }
    if (cap <= out->cap) {
        return 0;
    }
    char *p = realloc(out->data, cap);
    if (!p) {
        out->failed = true;
        return BD_ENOMEM;
    }
    out->data = p;
    out->cap = cap;
    return 0;
}

/* A full `out` gets room for more output: twice its capacity, at least `want`, at most
 * `cap_max` (the caller stops there). 0 or BD_ENOMEM. */
static int grow(bd_buf_t *out, size_t want, size_t cap_max)
{
    if (out->len < out->cap) {
        return out->failed ? BD_ENOMEM : 0;
    }
    size_t cap = out->cap > OUT_MIN ? out->cap : OUT_MIN;
    cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
    cap = cap > want ? cap : want;
    return set_cap(out, cap < cap_max ? cap : cap_max);
}

/* ---- inflating -------------------------------------------------------------------------- */

struct bd_zip_reader {
    z_stream zs;
    bd_zip_coding_t coding;
    const unsigned char *in;
    size_t len;
    size_t fed;       /* input handed to zlib so far (zs.avail_in of it not read yet) */
    unsigned members; /* gzip members that ended so far */
    int state;        /* 0: running; 1: ended; < 0: the error code it returned */
    bd_err_t err;
};

/* The zlib format's two header bytes (RFC 1950 §2.2): method 8 (deflate), a window of at most
 * 32 KiB, and a check that makes them a multiple of 31. A raw deflate stream starts like this
 * only with a non-final stored block whose padding bits are not zero. */
static bool zlib_header(const unsigned char *p, size_t n)
{
    return n >= 2 && (p[0] & 0x0f) == 8 && (p[0] >> 4) <= 7 && ((p[0] << 8) | p[1]) % 31 == 0;
}

bd_zip_reader_t *bd_zip_reader_new(bd_zip_coding_t coding, const void *in, size_t len)
{
    bd_zip_reader_t *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    r->coding = coding;
    r->in = in;
    r->len = len;
    int bits = coding == BD_ZIP_GZIP             ? 16 + MAX_WBITS /* gzip only */
               : zlib_header(in, len) || len < 2 ? MAX_WBITS
                                                 : -MAX_WBITS; /* raw deflate */
    if (inflateInit2(&r->zs, bits) != Z_OK) {
        free(r);
        return NULL;
    }
    return r;
}

void bd_zip_reader_free(bd_zip_reader_t *r)
{
    if (r) {
        inflateEnd(&r->zs);
        free(r);
    }
}

size_t bd_zip_read_in(const bd_zip_reader_t *r)
{
    return r->fed - r->zs.avail_in;
}

static int fail(bd_zip_reader_t *r, bd_err_t *err, int code)
{
    r->state = code;
    if (err) {
        *err = r->err;
    }
    return code;
}

int bd_zip_read(bd_zip_reader_t *r, bd_buf_t *out, size_t max_len, size_t max_in, bd_err_t *err)
{
    const char *name = bd_zip_name(r->coding);
    if (r->state < 0) {
        return fail(r, err, r->state);
    }
    size_t cap_max = max_len < SIZE_MAX ? max_len + 1 : SIZE_MAX;
    size_t guess = r->len < OUT_GUESS_MAX / 4 ? r->len * 4 : OUT_GUESS_MAX;
    size_t in_start = bd_zip_read_in(r);
    for (;;) {
        /* Past the limit, even when that last byte also ended the stream. */
        if (out->len > max_len) {
            bd_err_set(err, BD_ETOOBIG, "the %s request body inflates to more than %zu bytes", name,
                       max_len);
            return BD_ETOOBIG;
        }
        if (r->state > 0) {
            return 0;
        }
        size_t used = bd_zip_read_in(r) - in_start;
        if (used >= max_in) {
            return BD_ZIP_PAUSED;
        }
        if (grow(out, out->len + (guess > OUT_MIN ? guess : OUT_MIN), cap_max) != 0) {
            bd_err_set(&r->err, BD_ENOMEM, "out of memory while inflating the %s request body",
                       name);
            return fail(r, err, BD_ENOMEM);
        }
        if (r->zs.avail_in == 0 && r->fed < r->len) {
            size_t n = r->len - r->fed < IN_CHUNK ? r->len - r->fed : IN_CHUNK;
            r->zs.next_in = (unsigned char *)r->in + r->fed;
            r->zs.avail_in = (uInt)n;
            r->fed += n;
        }
        /* zlib gets no more input than the budget has left; the rest is handed again later. */
        if (r->zs.avail_in > max_in - used) {
            r->fed -= r->zs.avail_in - (max_in - used);
            r->zs.avail_in = (uInt)(max_in - used);
        }
        size_t room = (out->cap < cap_max ? out->cap : cap_max) - out->len;
        r->zs.next_out = (unsigned char *)out->data + out->len;
        r->zs.avail_out = (uInt)(room < IN_CHUNK ? room : IN_CHUNK);
        uInt before_out = r->zs.avail_out;
        uInt before_in = r->zs.avail_in;
        int zrc = inflate(&r->zs, Z_NO_FLUSH);
        out->len += before_out - r->zs.avail_out;
        if (out->len < out->cap) {
            out->data[out->len] = '\0';
        }
        size_t left = r->len - bd_zip_read_in(r);
        if (zrc == Z_STREAM_END) {
            if (left == 0) {
                r->state = 1;
                continue; /* 0, unless the last byte passed the limit */
            }
            /* Another gzip member may follow (RFC 1952 §2.2); anything else is garbage. */
            const unsigned char *p = r->in + bd_zip_read_in(r);
            if (r->coding == BD_ZIP_GZIP && left >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
                if (++r->members >= BD_ZIP_MAX_MEMBERS) {
                    bd_err_set(&r->err, BD_EINVAL,
                               "the gzip request body has more than %d members; the server "
                               "takes at most %d (a gzip client sends one)",
                               BD_ZIP_MAX_MEMBERS, BD_ZIP_MAX_MEMBERS);
                    return fail(r, err, BD_EINVAL);
                }
                inflateReset(&r->zs);
                continue;
            }
            bd_err_set(&r->err, BD_EINVAL,
                       "the %s request body has %zu bytes after the end of its compressed data",
                       name, left);
            return fail(r, err, BD_EINVAL);
        }
        if (zrc == Z_NEED_DICT) {
            bd_err_set(
                &r->err, BD_EINVAL,
                "the %s request body needs a preset dictionary, which the server does not have",
                name);
            return fail(r, err, BD_EINVAL);
        }
        if (zrc == Z_DATA_ERROR) {
            bd_err_set(&r->err, BD_EINVAL, "the %s request body is corrupt (%s)", name,
                       r->zs.msg ? r->zs.msg : "invalid data");
            return fail(r, err, BD_EINVAL);
        }
        if (zrc == Z_MEM_ERROR) {
            bd_err_set(&r->err, BD_ENOMEM, "out of memory while inflating the %s request body",
                       name);
            return fail(r, err, BD_ENOMEM);
        }
        bool progress = r->zs.avail_out != before_out || r->zs.avail_in != before_in;
        if (!progress && r->zs.avail_out > 0 && left == 0) {
            bd_err_set(&r->err, BD_EINVAL,
                       "the %s request body is truncated: it ends before its compressed data does",
                       name);
            return fail(r, err, BD_EINVAL);
        }
    }
}

int bd_zip_inflate(bd_zip_coding_t coding, const void *in, size_t len, size_t max_len,
                   bd_buf_t *out, bd_err_t *err)
{
    bd_zip_reader_t *r = bd_zip_reader_new(coding, in, len);
    if (!r) {
        return bd_err_set(err, BD_ENOMEM, "out of memory while inflating the %s request body",
                          bd_zip_name(coding));
    }
    int rc = bd_zip_read(r, out, max_len, SIZE_MAX, err);
    bd_zip_reader_free(r);
    return rc;
}

int bd_zip_body_too_large(bd_zip_coding_t coding, size_t max, const char *limit, bd_err_t *err)
{
    return bd_err_set(err, BD_EBODYSIZE,
                      "the %s request body inflates to more than %zu bytes, the limit for %s",
                      bd_zip_name(coding), max, limit);
}

/* ---- deflating -------------------------------------------------------------------------- */

int bd_zip_deflate(bd_zip_coding_t coding, const void *in, size_t len, bd_buf_t *out, bd_err_t *err)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int bits = coding == BD_ZIP_GZIP ? 16 + MAX_WBITS : MAX_WBITS;
    if (out->failed ||
        deflateInit2(&zs, DEFLATE_LEVEL, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        out->failed = true;
        return bd_err_set(err, BD_ENOMEM, "out of memory while compressing the reply");
    }
    /* deflateBound is what the worst case can take, so one allocation does. */
    size_t need = 0;
    int rc = 0;
    if (!bd_add_size(out->len, deflateBound(&zs, len), &need) || set_cap(out, need) != 0) {
        out->failed = true;
        rc = bd_err_set(err, BD_ENOMEM, "out of memory while compressing the reply");
    }
    size_t fed = 0;
    int zrc = Z_OK;
    while (rc == 0 && zrc != Z_STREAM_END) {
        if (zs.avail_in == 0 && fed < len) {
            size_t n = len - fed < IN_CHUNK ? len - fed : IN_CHUNK;
            zs.next_in = (unsigned char *)in + fed;
            zs.avail_in = (uInt)n;
            fed += n;
        }
        size_t room = out->cap - out->len;
        zs.next_out = (unsigned char *)out->data + out->len;
        zs.avail_out = (uInt)(room < IN_CHUNK ? room : IN_CHUNK);
        uInt before = zs.avail_out;
        zrc = deflate(&zs, fed == len ? Z_FINISH : Z_NO_FLUSH);
        out->len += before - zs.avail_out;
        /* Z_BUF_ERROR is only "no progress"; with deflateBound's room that means broken. */
        if (zrc != Z_OK && zrc != Z_STREAM_END && (zrc != Z_BUF_ERROR || zs.avail_out == 0)) {
            out->failed = true;
            rc = bd_err_set(err, BD_ENOMEM, "compressing the reply failed (zlib error %d)", zrc);
        }
    }
    deflateEnd(&zs);
    if (rc == 0 && out->len < out->cap) {
        out->data[out->len] = '\0';
    }
    return rc;
}
