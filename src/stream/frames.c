/* frames.c: the byte-level WebSocket checks stream.c makes before and around wslay (see
 * stream_internal.h): UTF-8 validation of text messages, the frame-header walk that catches
 * what wslay closes without a status code, the split of a binary request message, and the
 * peek at a request's "id" for messages refused before they are decoded.
 *
 * Threads: pure functions over caller-owned memory; any thread. */
#include "stream/stream_internal.h"

#include <string.h>

bool bd_ws_utf8_valid(const unsigned char *s, size_t n)
{
    size_t len;
    for (size_t i = 0; i < n; i += len) {
        if (bd_utf8_decode(s + i, n - i, &len) < 0) {
            return false;
        }
    }
    return true;
}

/* The length of the frame header that starts with h[0..have) (2 until the second byte). */
static size_t header_size(const uint8_t *h, size_t have)
{
    if (have < 2) {
        return 2;
    }
    uint8_t l7 = h[1] & 0x7f;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

size_t bd_ws_frames_scan(bd_ws_frames_t *f, const uint8_t *p, size_t n, const char **bad)
{
    *bad = NULL;
    size_t i = 0;
    while (i < n) {
        if (f->skip > 0) {
            size_t k = f->skip < n - i ? (size_t)f->skip : n - i;
            f->skip -= k;
            f->data_bytes += f->data ? k : 0;
            i += k;
            continue;
        }
        size_t start = i; /* this header's bytes in p (earlier ones went on already) */
        while (i < n && f->have < header_size(f->h, f->have)) {
            f->h[f->have++] = p[i++];
        }
        if (f->have < header_size(f->h, f->have)) {
            return n; /* the header goes on in later bytes */
        }
        uint8_t l7 = f->h[1] & 0x7f;
        uint64_t plen = l7;
        if (l7 >= 126) {
            plen = 0;
            for (int k = 0; k < (l7 == 126 ? 2 : 8); k++) {
                plen = plen << 8 | f->h[2 + k];
            }
        }
        bool control = (f->h[0] & 0x08) != 0;
        bool fin = (f->h[0] & 0x80) != 0;
        f->have = 0;
        f->code = 1002;
        uint64_t message = (f->h[0] & 0x0f) == 0 ? f->message : 0; /* a continuation adds */
        message = plen > UINT64_MAX - message ? UINT64_MAX : message + plen;
        if ((l7 == 126 && plen < 126) || (l7 == 127 && (plen <= 0xffff || plen >> 63))) {
            *bad = "a frame's payload length must be in its shortest form, and below 2^63";
        } else if (control && (!fin || l7 > 125)) {
            *bad = "control frames must not be fragmented or longer than 125 bytes";
        } else if ((f->h[0] & 0x0f) == 0x8 && plen == 1) {
            *bad = "a close frame's payload is empty or a 2-byte code first";
        } else if (!control && f->max_message && message > f->max_message) {
            *bad = "the message is larger than --max-body-bytes";
            f->code = 1009;
        }
        if (*bad) {
            return start;
        }
        f->skip = plen;
        f->data = !control;
        f->message = control ? f->message : message;
    }
    return n;
}

int bd_ws_binary_split(const unsigned char *data, size_t len, size_t *header_len, bd_err_t *err)
{
    uint32_t n = len >= 4 ? (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                                (uint32_t)data[3] << 24
                          : 0;
    if (len >= 4 && n == 0) {
        return bd_err_set(err, BD_EINVAL,
                          "a binary message's 4-byte JSON header length is 0; it must count the "
                          "bytes of the JSON header that follow it");
    }
    if (len < 4 || n > len - 4) {
        return bd_err_set(err, BD_EINVAL,
                          "a binary message starts with a 4-byte little-endian JSON header "
                          "length followed by that many bytes; this one has %zu bytes in all",
                          len);
    }
    *header_len = n;
    return 0;
}

/* ---- the id of a message refused before it is decoded ------------------------------------ */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) {
        i++;
    }
    return i;
}

/* Past the string that starts at s[*i] == '"'; false when it does not end. */
static bool skip_string(const char *s, size_t n, size_t *i)
{
    for (size_t k = *i + 1; k < n; k++) {
        if (s[k] == '\\') {
            k++;
        } else if (s[k] == '"') {
            *i = k + 1;
            return true;
        }
    }
    return false;
}

/* Past one value at s[*i]: a string, an object or array (by bracket depth, strings skipped),
 * or a number or literal (up to the next delimiter). Not a validator: the decoder is. */
static bool skip_value(const char *s, size_t n, size_t *i)
{
    if (*i >= n) {
        return false;
    }
    if (s[*i] == '"') {
        return skip_string(s, n, i);
    }
    if (s[*i] == '{' || s[*i] == '[') {
        size_t depth = 0;
        for (size_t k = *i; k < n;) {
            char c = s[k];
            if (c == '"') {
                if (!skip_string(s, n, &k)) {
                    return false;
                }
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if ((c == '}' || c == ']') && --depth == 0) {
                *i = k + 1;
                return true;
            }
            k++;
        }
        return false;
    }
    while (*i < n && s[*i] != ',' && s[*i] != '}' && s[*i] != ']' && skip_ws(s, n, *i) == *i) {
        (*i)++;
    }
    return true;
}

/* The JSON string at s[i] == '"', unescaped into out (NUL-terminated); false when it is cut
 * short, has a bad escape or a NUL, or memory runs out. */
static bool decode_string(const char *s, size_t n, size_t i, bd_buf_t *out)
{
    for (size_t k = i + 1; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        unsigned char u[4] = {c};
        size_t m = 1;
        if (c == '"') {
            bd_buf_append(out, "", 0); /* "" is still a string: NUL-terminated */
            return !out->failed && bd_ws_utf8_valid((const unsigned char *)out->data, out->len);
        }
        if (c < 0x20) {
            return false;
        }
        if (c == '\\') {
            if (++k >= n) {
                return false;
            }
            const char *esc = strchr("\"\\/bfnrt", s[k]);
            if (esc && s[k]) {
                u[0] = (unsigned char)"\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrt"];
            } else if (s[k] == 'u') {
                int32_t cp = (n - k - 1 >= 4 ? bd_hex4(s + k + 1) : -1);
                k += 4;
                if (cp >= 0xd800 && cp < 0xdc00) { /* a high surrogate: its low half follows */
                    int32_t lo = k + 2 < n && s[k + 1] == '\\' && s[k + 2] == 'u'
                                     ? (n - k - 3 >= 4 ? bd_hex4(s + k + 3) : -1)
                                     : -1;
                    if (lo < 0xdc00 || lo > 0xdfff) {
                        return false;
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    k += 6;
                } else if (cp <= 0 || (cp >= 0xdc00 && cp <= 0xdfff)) {
                    return false;
                }
                if (cp < 0x80) {
                    u[0] = (unsigned char)cp;
                } else if (cp < 0x800) {
                    u[0] = (unsigned char)(0xc0 | (cp >> 6));
                    u[1] = (unsigned char)(0x80 | (cp & 0x3f));
                    m = 2;
                } else if (cp < 0x10000) {
                    u[0] = (unsigned char)(0xe0 | (cp >> 12));
                    u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    u[2] = (unsigned char)(0x80 | (cp & 0x3f));
                    m = 3;
                } else {
                    u[0] = (unsigned char)(0xf0 | (cp >> 18));
                    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
                    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    u[3] = (unsigned char)(0x80 | (cp & 0x3f));
                    m = 4;
                }
            } else {
                return false;
            }
        }
        bd_buf_append(out, u, m);
    }
    return false;
}

bool bd_ws_peek_id(const char *json, size_t len, bd_buf_t *id)
{
    bd_buf_reset(id);
    size_t i = skip_ws(json, len, 0);
    if (i >= len || json[i] != '{') {
        return false;
    }
    i++;
    for (;;) {
        i = skip_ws(json, len, i);
        if (i >= len || json[i] != '"') {
            return false; /* the end of the object, or not JSON */
        }
        size_t key = i + 1;
        if (!skip_string(json, len, &i)) {
            return false;
        }
        bool is_id = i - key == 3 && memcmp(json + key, "id\"", 3) == 0;
        i = skip_ws(json, len, i);
        if (i >= len || json[i] != ':') {
            return false;
        }
        i = skip_ws(json, len, i + 1);
        if (is_id) {
            if (i < len && json[i] == '"' && decode_string(json, len, i, id)) {
                return true;
            }
            bd_buf_reset(id);
            return false;
        }
        if (!skip_value(json, len, &i)) {
            return false;
        }
        i = skip_ws(json, len, i);
        if (i >= len || json[i] != ',') {
            return false;
        }
        i++;
    }
}
