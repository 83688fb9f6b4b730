/* frames.c: the byte-level WebSocket checks stream.c makes before and around wslay (see
 * stream_internal.h): UTF-8 validation of text messages, the frame-header walk that catches
 * what wslay closes without a status code, and the split of a binary request message.
 *
 * Threads: pure functions over caller-owned memory; any thread. */
#include "stream/stream_internal.h"

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
        if (control && (!fin || l7 > 125)) {
            *bad = "control frames must not be fragmented or longer than 125 bytes";
        } else if ((f->h[0] & 0x0f) == 0x8 && plen == 1) {
            *bad = "a close frame's payload is empty or a 2-byte code first";
        }
        if (*bad) {
            return start;
        }
        f->skip = plen;
    }
    return n;
}

int bd_ws_binary_split(const unsigned char *data, size_t len, size_t *header_len, bd_err_t *err)
{
    uint32_t n = len >= 4 ? (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                                (uint32_t)data[3] << 24
                          : 0;
    if (len < 4 || n == 0 || n > len - 4) {
        return bd_err_set(err, BD_EINVAL,
                          "a binary message starts with a 4-byte little-endian JSON header "
                          "length followed by that many bytes; this one has %zu bytes in all",
                          len);
    }
    *header_len = n;
    return 0;
}
