/* http: the KServe v2 / Open Inference Protocol front end over HTTP/1.1 (keep-alive), on
 * libh2o-evloop. Routes, the infer handler (JSON and Triton's binary tensor extension), model
 * and server metadata, health, /metrics, the model repository extension (index, load,
 * unload) and the statistics extension. A client that hangs up while its request is queued
 * gets the request cancelled. h2o stays behind this header: nothing else in batchd includes
 * h2o.
 *
 * Threads: everything runs on the one event-loop thread that calls bd_http_run, except the
 * scheduler's completion callback, which only posts a message to that loop. The loop never
 * blocks: parsing and validation happen on it, execution happens on the workers, model loads
 * on the repository's loader thread. The loop is the repository's owner thread. */
#ifndef BD_HTTP_H
#define BD_HTTP_H

#include <signal.h>

#include "core/core.h"
#include "metrics/metrics.h"
#include "repo/repo.h"

typedef struct bd_http bd_http_t;

/* Who changes the loaded models while the server runs. */
typedef enum {
    BD_MODEL_CONTROL_NONE = 0, /* everything loads at start; nothing changes later */
    BD_MODEL_CONTROL_EXPLICIT, /* POST /v2/repository/models/{m}/load and /unload */
    BD_MODEL_CONTROL_POLL,     /* the repository rescans its folder (bd_repo_opts_t) */
} bd_model_control_t;

typedef struct {
    const char *host;      /* address to bind, e.g. "127.0.0.1" or "0.0.0.0" */
    int port;              /* 0: pick a free port */
    size_t max_body_bytes; /* larger request bodies get 413 */
    bd_model_control_t model_control;
} bd_http_opts_t;

/* Create the loop and bind the listening socket. Borrows repo and metrics, which must
 * outlive the server. NULL with err set when the address cannot be bound. */
bd_http_t *bd_http_new(bd_repo_t *repo, bd_metrics_t *metrics, const bd_http_opts_t *opts,
                       bd_err_t *err);
/* The bound port (useful with port 0). */
int bd_http_port(const bd_http_t *h);
/* Serve on the calling thread until one of the signals in `stop_signals` arrives (they must
 * be blocked in every thread; they are read through a signalfd). Then shut down gracefully:
 * close the listener, close the repository to new requests, answer everything already
 * queued (and every model load asked for), and return 0. */
int bd_http_run(bd_http_t *h, const sigset_t *stop_signals);
void bd_http_free(bd_http_t *h);

#endif
