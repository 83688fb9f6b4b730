/* stream_internal.h: the WebSocket pieces that are pure functions over bytes (frames.c), for
 * stream.c, its tests and its fuzz target. Any thread; no allocation. */
#ifndef BD_STREAM_INTERNAL_H
#define BD_STREAM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool bd_ws_utf8_valid(const unsigned char *s, size_t n);

/* Frame headers of a client's byte stream, tracked across reads. */
typedef struct {
    uint8_t h[14];
    size_t have;          /* header bytes seen so far */
    uint64_t skip;        /* payload bytes of the current frame still to pass */
    bool data;            /* the current frame is a data frame (text, binary, continuation) */
    uint64_t data_bytes;  /* data frames' payload bytes passed (the caller may reset it) */
    uint64_t max_message; /* the caller's limit on a data message's length; 0: none */
    uint64_t message;     /* payload bytes the current data message's headers declared */
    uint16_t code;        /* with *bad: the close code, 1002 or 1009 */
} bd_ws_frames_t;

/* Walk the frame headers in the next `n` bytes. wslay answers most protocol errors with
 * 1002 itself, but a fragmented or oversized control frame, a close frame with a 1-byte
 * payload, or a payload length not in its shortest form or with its top bit set (RFC 6455
 * 5.2), only with a close that has no status code: such a header is caught here (code 1002),
 * and so is the header of a data frame that takes its message past max_message (1009), from
 * the header alone, before any of its payload came. Returns how many of the bytes may go on
 * to wslay: `n`, or the bytes before the bad header (then *bad names the problem in one
 * sentence, and f->code its close code; the tracker is where that header starts, so a scan
 * of the same bytes again finds it again). */
size_t bd_ws_frames_scan(bd_ws_frames_t *f, const uint8_t *p, size_t n, const char **bad);

/* A binary request message: a 4-byte little-endian JSON header length N, N bytes of JSON,
 * then the tensor bytes. Sets *header_len = N. BD_EINVAL with one sentence when the message
 * is shorter than its prefix says or N is 0. */
int bd_ws_binary_split(const unsigned char *data, size_t len, size_t *header_len, bd_err_t *err);

/* The top-level "id" of a JSON request object (a text message, or a binary message's header),
 * read without decoding the rest, for the error reply to a message refused before decoding
 * (a rate limit). true with the unescaped id in `id` (NUL-terminated, valid UTF-8, any
 * length); false, `id` empty, when there is none, it is not a string, memory ran out, or the
 * text is not an object this scan can follow. Linear in len. */
bool bd_ws_peek_id(const char *json, size_t len, bd_buf_t *id);

#endif
