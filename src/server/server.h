/* server: the process's event loop and its life. It owns the loop (libh2o-evloop), the
 * mailbox through which every completion comes back to the loop (requests from the
 * schedulers, model loads from the repository's loader), the stop signals and the drain; it
 * starts the front ends the options ask for (HTTP, and WebSocket streaming reached through
 * HTTP's upgrade) and hands them the shared infer layer.
 *
 * Drain on SIGTERM/SIGINT: stop accepting connections, sockets and requests and stop the
 * registered front ends' reading; once what they read reached a model, close the repository
 * to new work; run until every request handed to a scheduler came back and was
 * answered and every model load asked for was answered; let the registered front ends
 * deliver their answers; close the WebSocket streams with 1001 and idle keep-alive
 * connections; return.
 *
 * Threads: everything on the thread that calls bd_server_run, which is the repository's
 * owner thread while it runs. */
#ifndef BD_SERVER_H
#define BD_SERVER_H

#include <signal.h>

#include "core/core.h"
#include "http/http.h"
#include "metrics/metrics.h"
#include "repo/repo.h"

typedef struct bd_server bd_server_t;

/* Request bodies larger than this are decoded off the loop (infer's decode thread). */
#define BD_SERVER_OFFLOAD_BYTES (256u * 1024)

typedef struct {
    bd_http_opts_t http; /* .budget is the server's own */
    /* request bytes HTTP connections and WebSockets may hold at once (bodies being received or
     * waiting for replies, messages in flight); 0: no limit */
    size_t max_buffered_bytes;
    size_t max_decode_bytes;     /* body bytes decoding off the loop at once; past it 503 */
    size_t ws_max_inflight;      /* requests in flight per WebSocket before it stops reading */
    uint64_t ws_idle_timeout_us; /* a WebSocket with no frames this long is closed (1000) */
} bd_server_opts_t;

/* Create the loop, start the front ends and bind. Borrows repo, metrics and mailbox (the one
 * the repository posts to, made by the caller before bd_repo_open), which must outlive it.
 * NULL with err set when the address cannot be bound. */
bd_server_t *bd_server_new(bd_repo_t *repo, bd_metrics_t *metrics, bd_mailbox_t *mailbox,
                           const bd_server_opts_t *opts, bd_err_t *err);
/* The bound HTTP port (useful with port 0). */
int bd_server_port(const bd_server_t *s);
/* Serve on the calling thread until one of `stop_signals` arrives (they must be blocked in
 * every thread; they are read through a signalfd), then drain as above and return 0. SIGHUP,
 * which must be blocked too, is read the same way and reloads the API key file (gate/). */
int bd_server_run(bd_server_t *s, const sigset_t *stop_signals);
void bd_server_free(bd_server_t *s);
/* ---- front ends started by the caller on the server's loop (the Redis ingest) ---------------
 * The caller (cli) builds them from the loop and the infer layer below and registers them;
 * the server drives their part of the drain. So the server does not link what they need
 * (hiredis). */
typedef struct {
    void *ctx;
    /* Drain begins: take no new work (stop reading). */
    void (*stop)(void *ctx);
    /* Still holding work it took and has not handed to a model (a read in flight, entries
     * waiting for queue room): the repository stays open while this is true. */
    bool (*reading)(void *ctx);
    /* Still has answers to deliver (results not yet written). */
    bool (*busy)(void *ctx);
} bd_server_frontend_t;

#define BD_SERVER_MAX_FRONTENDS 4

struct st_h2o_evloop_t;
struct bd_infer;
/* The loop and the infer layer, for front ends the caller starts. */
struct st_h2o_evloop_t *bd_server_loop(bd_server_t *s);
struct bd_infer *bd_server_infer(bd_server_t *s);
/* Register a front end (copied) for the drain; BD_EFULL past BD_SERVER_MAX_FRONTENDS. The
 * caller frees it after bd_server_run returned and before bd_server_free. */
int bd_server_add_frontend(bd_server_t *s, const bd_server_frontend_t *fe);

/* Run the loop once, waiting at most timeout_ms for an event: for harnesses (the HTTP fuzz
 * target) that drive the server without signals. Not with bd_server_run. */
void bd_server_poll(bd_server_t *s, int timeout_ms);

#endif
