/* fuzz_ws: the WebSocket byte checks (src/stream/frames.c) on arbitrary client bytes.
 *
 * The input's first byte picks a chunk size; the rest is fed to bd_ws_frames_scan in chunks
 * of that size, as reads would deliver it, and every message-sized piece goes through
 * bd_ws_utf8_valid and bd_ws_binary_split. Checks, besides ASan/UBSan: the scan never passes
 * more bytes than it was given; a bad header stops it; the same bytes in one chunk and in
 * small chunks give the same verdict; UTF-8 validity agrees with a decoder written the slow
 * way; a split header length always fits the message; an id peeked from the bytes (as JSON)
 * is NUL-terminated inside its buffer and valid UTF-8, and nothing is found in bytes that do
 * not start with '{'. */
#include <stdlib.h>
#include <string.h>

#include "stream/stream_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decode one code point the slow way; returns its length, 0 when invalid. */
static size_t slow_utf8(const uint8_t *s, size_t n)
{
    static const struct {
        uint8_t mask, lead;
        size_t len;
        uint32_t min;
    } forms[] = {{0x80, 0x00, 1, 0},
                 {0xE0, 0xC0, 2, 0x80},
                 {0xF0, 0xE0, 3, 0x800},
                 {0xF8, 0xF0, 4, 0x10000}};
    for (size_t f = 0; f < 4; f++) {
        if ((s[0] & forms[f].mask) != forms[f].lead) {
            continue;
        }
        if (n < forms[f].len) {
            return 0;
        }
        uint32_t cp = s[0] & (uint8_t)~forms[f].mask;
        for (size_t k = 1; k < forms[f].len; k++) {
            if ((s[k] & 0xC0) != 0x80) {
                return 0;
            }
            cp = cp << 6 | (s[k] & 0x3F);
        }
        bool ok = cp >= forms[f].min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        return ok ? forms[f].len : 0;
    }
    return 0;
}

static bool slow_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = slow_utf8(s + i, n - i);
        if (k == 0) {
            return false;
        }
        i += k;
    }
    return true;
}

/* Feed `p` in chunks of `chunk`; returns the bytes passed and whether a bad header came. */
static size_t scan_all(const uint8_t *p, size_t n, size_t chunk, bool *bad_seen)
{
    bd_ws_frames_t f;
    memset(&f, 0, sizeof f);
    size_t passed = 0;
    *bad_seen = false;
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        const char *bad = NULL;
        size_t ok = bd_ws_frames_scan(&f, p + off, k, &bad);
        if (ok > k || (!bad && ok != k)) {
            abort();
        }
        passed += ok;
        if (bad) {
            if (!*bad) {
                abort();
            }
            *bad_seen = true;
            break;
        }
    }
    return passed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t chunk = (size_t)(data[0] % 16) + 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    bool bad_small, bad_whole;
    size_t small = scan_all(p, n, chunk, &bad_small);
    size_t whole = scan_all(p, n, n ? n : 1, &bad_whole);
    /* How the bytes arrive must not change the verdict; in chunks, the first bytes of a bad
     * header may have gone on before the rest of it came (at most a header's 14). */
    if (bad_small != bad_whole || small < whole || small - whole >= 14 ||
        (!bad_small && small != n)) {
        abort();
    }

    if (bd_ws_utf8_valid(p, n) != slow_valid(p, n)) {
        abort();
    }

    size_t header_len = 0;
    bd_err_t err;
    if (bd_ws_binary_split(p, n, &header_len, &err) == 0) {
        if (header_len == 0 || header_len > n - 4) {
            abort();
        }
    } else if (err.code != BD_EINVAL || !err.msg[0]) {
        abort();
    }

    bd_buf_t id;
    bd_buf_init(&id);
    bool found = bd_ws_peek_id((const char *)p, n, &id);
    if ((found && (!id.data || strlen(id.data) != id.len || id.len > n)) ||
        (!found && id.len != 0) ||
        (id.len && !bd_ws_utf8_valid((const unsigned char *)id.data, id.len)) ||
        (found && memchr(p, '{', n) == NULL)) {
        abort();
    }
    bd_buf_dispose(&id);
    return 0;
}
