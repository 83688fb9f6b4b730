/* zip: HTTP content codings (RFC 9110 §8.4.1) with zlib: compressed request bodies in,
 * compressed replies out.
 *
 * - Codings: gzip (RFC 1952; "x-gzip" is the same) and deflate, which HTTP means as the zlib
 *   format (RFC 1950) and is what Triton's client sends; a raw deflate stream (RFC 1951, sent
 *   by some old clients) is told apart by its first two bytes and taken too.
 * - Bodies in: a reader inflates into a bd_buf_t up to a limit the caller gives, and can be
 *   resumed with a larger one, so a caller inflates a little on one thread and the rest on
 *   another, and counts the bytes as they come. It never holds more than the limit + 1 byte
 *   of output, so a zip bomb costs what the limit allows, not what it expands to.
 * - Replies out: one call compresses a buffer (level 1: a quarter of the CPU of zlib's
 *   default for ~8% more bytes on tensor JSON).
 * - Headers: Content-Encoding of a request and Accept-Encoding (with q-values) parsed here,
 *   so they are tested without a server.
 *
 * Threads: any; a reader belongs to one thread at a time. */
#ifndef BD_ZIP_H
#define BD_ZIP_H

#include "core/core.h"

typedef enum {
    BD_ZIP_IDENTITY = 0, /* no coding */
    BD_ZIP_GZIP,
    BD_ZIP_DEFLATE,
} bd_zip_coding_t;

/* Replies larger than this are worth compressing; smaller ones go out as they are. */
#define BD_ZIP_MIN_BYTES 1024

/* "identity", "gzip" or "deflate": the token a Content-Encoding header carries. */
const char *bd_zip_name(bd_zip_coding_t coding);

/* A request's Content-Encoding value (v, n bytes; the values of several header lines joined
 * with ","): *coding gets gzip, deflate or identity ("identity" entries and empty ones are
 * skipped). BD_ECODING with one sentence in err for a coding other than these, or for more
 * than one coding applied in a row. */
int bd_zip_content_encoding(const char *v, size_t n, bd_zip_coding_t *coding, bd_err_t *err);

/* The coding for a reply to a request whose Accept-Encoding value is v (n bytes; joined as
 * above). gzip or deflate when the client accepts it with a q-value above 0, named or through
 * "*": the higher q wins, gzip on a tie; identity when neither is acceptable, or when the
 * client gives "identity" itself a higher q than both. Elements with a malformed q-value are
 * ignored. (No Accept-Encoding header at all means identity: the caller's case.) */
bd_zip_coding_t bd_zip_accept(const char *v, size_t n);

/* ---- inflating a body ------------------------------------------------------------------ */

typedef struct bd_zip_reader bd_zip_reader_t;

/* Start inflating `in` (len bytes, borrowed: unchanged and alive until the reader is freed)
 * as `coding` (gzip or deflate). NULL when out of memory. */
bd_zip_reader_t *bd_zip_reader_new(bd_zip_coding_t coding, const void *in, size_t len);
/* A gzip body may have this many members (RFC 1952 §2.2); a gzip client sends one. Each
 * member costs an inflateReset, so without a cap a body of empty members is work out of
 * proportion to its size. */
#define BD_ZIP_MAX_MEMBERS 64

/* bd_zip_read stopped because it consumed its input budget (max_in): nothing is wrong. */
#define BD_ZIP_PAUSED 1

/* Inflate into `out` (appending to what it holds; growing it as needed, never past max_len +
 * 1 bytes of capacity) until the stream ends, out->len passes max_len, or this call consumed
 * max_in bytes of input (SIZE_MAX: no budget). The input budget bounds the work of one call
 * where the output limit cannot: empty stored blocks or empty gzip members inflate to
 * nothing, however many there are. Returns:
 * 0 the stream ended exactly at the end of the input (gzip: of its last member);
 * BD_ZIP_PAUSED max_in bytes of input were consumed first; calling again resumes;
 * BD_ETOOBIG the output passed max_len: out->len is max_len + 1 and the reader stopped there;
 *   calling again with a larger max_len resumes (out must hold what it held);
 * BD_EINVAL the data is corrupt, truncated, needs a preset dictionary, has bytes after its
 *   end, or (gzip) has more than BD_ZIP_MAX_MEMBERS members (one sentence in err, naming the
 *   coding);
 * BD_ENOMEM (out->failed set). After 0 or BD_EINVAL it returns the same again. */
int bd_zip_read(bd_zip_reader_t *r, bd_buf_t *out, size_t max_len, size_t max_in, bd_err_t *err);
/* Bytes of input consumed so far. */
size_t bd_zip_read_in(const bd_zip_reader_t *r);
void bd_zip_reader_free(bd_zip_reader_t *r);

/* A whole body at once: a reader run once with max_len and no input budget; same returns
 * (BD_ETOOBIG: out holds max_len + 1 bytes; never BD_ZIP_PAUSED). */
int bd_zip_inflate(bd_zip_coding_t coding, const void *in, size_t len, size_t max_len,
                   bd_buf_t *out, bd_err_t *err);

/* The 413 for a body that inflates past `max` bytes: BD_EBODYSIZE with "the <coding> request
 * body inflates to more than <max> bytes, the limit for <limit>" in err. One sentence for
 * every front end and endpoint, which name their limit in `limit`. */
int bd_zip_body_too_large(bd_zip_coding_t coding, size_t max, const char *limit, bd_err_t *err);

/* ---- compressing a reply --------------------------------------------------------------- */

/* Append `in` (len bytes) compressed as `coding` (gzip or deflate: the zlib format) to `out`.
 * Returns 0, or BD_ENOMEM (out->failed set) with err. */
int bd_zip_deflate(bd_zip_coding_t coding, const void *in, size_t len, bd_buf_t *out,
                   bd_err_t *err);

#endif
