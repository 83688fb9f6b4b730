/* stream: WebSocket streaming of KServe v2 infer requests (RFC 6455, frames by wslay). A
 * client upgrades GET /v2/stream or /v2/models/{m}[/versions/{v}]/stream and then sends
 * requests as text frames (a KServe v2 infer request JSON) or binary frames (a 4-byte
 * little-endian length N, N bytes of JSON header, then Triton binary tensor data). Many
 * requests are in flight on one socket; each reply goes out as soon as it is ready (text, or
 * binary in the same length-prefixed layout when binary outputs were asked for), matched by
 * "id". Errors are text frames {"id","error","status"} and the socket stays open.
 *
 * API keys and rate limits (gate/): the caller's identity is settled at the upgrade (by the
 * HTTP front end) and kept with the socket. Each request message takes a token from that
 * caller's bucket; past the limit it gets an error frame with status 429 and the socket stays
 * open. When a SIGHUP reload removed the socket's key, its next message gets status 401 and
 * the socket is closed with 1008.
 *
 * Backpressure: at most max_inflight requests per socket are running or have a reply not yet
 * written; past that the socket is not read (TCP pushes back on the client), nor while the
 * request bytes the server holds (opts.budget, shared with the HTTP front end) are at their
 * bound and the socket has requests in flight. Nothing a client sends is dropped and memory
 * stays bounded.
 *
 * Threads: the event-loop thread only (completions arrive through the infer layer's mailbox).
 * h2o and wslay stay behind this header. */
#ifndef BD_STREAM_H
#define BD_STREAM_H

#include "core/core.h"
#include "gate/gate.h"
#include "infer/infer.h"
#include "metrics/metrics.h"

struct st_h2o_evloop_t;
struct st_h2o_req_t;

typedef struct bd_stream bd_stream_t;

typedef struct {
    size_t max_inflight;      /* per socket; >= 1 */
    uint64_t idle_timeout_us; /* no frame received and nothing in flight this long: close 1000 */
    size_t max_message_bytes; /* larger messages: close 1009 */
    bd_gate_t *gate;          /* keys and rate limits (borrowed); NULL: none */
    /* request bytes held on the loop, shared with the HTTP front end (borrowed, required): a
     * socket holding messages stops reading while it is full */
    bd_budget_t *budget;
} bd_stream_opts_t;

/* Borrows loop, inf and metrics. NULL when out of memory. */
bd_stream_t *bd_stream_new(struct st_h2o_evloop_t *loop, bd_infer_t *inf, bd_metrics_t *metrics,
                           const bd_stream_opts_t *opts);
/* Answer `req` (a GET on a stream path): upgrade it to a WebSocket serving model `model`
 * (NULL: requests name their model) and optional version, or reply with an HTTP error when
 * it is not a valid WebSocket handshake (400), or the server is shutting down (503). `who`
 * (copied; NULL: anonymous) is the caller the HTTP front end admitted, for the rate limit
 * and the key's revocation. True when it upgrades (the 101 is on its way), false after an
 * error reply (the connection stays HTTP). */
bool bd_stream_accept(bd_stream_t *st, struct st_h2o_req_t *req, const char *model,
                      size_t model_len, const char *version, size_t version_len,
                      const bd_gate_who_t *who);
/* Drain: new requests are refused; each socket is closed with 1001 once its in-flight
 * requests were answered. */
void bd_stream_shutdown(bd_stream_t *st);
/* Open sockets (still in the closing handshake included). */
size_t bd_stream_connections(const bd_stream_t *st);
/* Close every socket that is left and free. */
void bd_stream_free(bd_stream_t *st);

#endif
