/* http: the KServe v2 / Open Inference Protocol front end over HTTP/1.1 (keep-alive), on
 * libh2o-evloop. Routes, the infer handler (JSON and Triton's binary tensor extension, through
 * the shared infer layer), model and server metadata, health, /metrics, the model repository
 * extension (index, load, unload) and the statistics extension. A client that hangs up while
 * its request is queued gets the request cancelled. GETs of the stream paths are handed to the
 * WebSocket front end.
 *
 * Threads: everything runs on the server's event-loop thread. The loop never blocks: parsing
 * and validation happen on it, execution happens on the workers, model loads on the
 * repository's loader thread; their completions come back through the loop's mailbox. */
#ifndef BD_HTTP_H
#define BD_HTTP_H

#include "core/core.h"
#include "gate/gate.h"
#include "infer/infer.h"
#include "metrics/metrics.h"
#include "repo/repo.h"
#include "stream/stream.h"

struct st_h2o_evloop_t;
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

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
    /* request bytes held on this loop, shared with the WebSocket streams (borrowed, required):
     * a body that would take them past budget->max gets 503 from its head (bodies up to 64 KiB
     * always pass) */
    bd_budget_t *budget;
    size_t max_connections;  /* open connections (WebSocket ones included); 0: no limit */
    size_t max_header_bytes; /* request line + headers; larger ones get 431; 0: 16 KiB */
    int timeout_secs;        /* idle keep-alive, and a head, body or TLS handshake that stops;
                              * 0: 10 s */
    bd_model_control_t model_control;
    /* API keys (401/403 before routing; health, model readiness and /metrics without
     * --metrics-auth stay open) and rate limits on infer (429); borrowed; NULL: neither */
    bd_gate_t *gate;
    /* serve HTTPS and WSS with this context (bd_http_tls_new); borrowed, must outlive the
     * front end; NULL: plain HTTP and WS */
    struct ssl_ctx_st *tls;
    /* GET /v2/health/ready: true, 200 only while every model is READY (bd_repo_ready), else
     * 503 saying which are not and why; false, 200 while the server runs */
    bool strict_readiness;
    /* A request with an Origin header (a browser's, on behalf of a web page) gets 403 unless
     * the origin is the server's own (its host and port are the request's Host) or listed
     * here: comma-separated origins ("http://localhost:3000"), "*" for any. Borrowed; NULL:
     * none but the server's own. */
    const char *allow_origins;
} bd_http_opts_t;

/* A server TLS context from PEM files for bd_http_opts_t.tls: `cert_file` (the certificate,
 * then any intermediates) and `key_file` (its unencrypted private key), which must match. TLS
 * 1.2 and 1.3 only, ECDHE with AEAD ciphers for TLS 1.2, no renegotiation, no compression, ALPN
 * "http/1.1" only (HTTP/2 stays off). Returns owned (bd_http_tls_free); NULL with err set
 * (BD_EINVAL, one sentence naming the file and where it was given: `cert_name` and `key_name`,
 * the flags or environment variables) when a file cannot be read, is not
 * what it should be, or the pair does not match. Logs a warning for a certificate outside its
 * validity period. Any thread, before a front end uses it; then read-only. */
struct ssl_ctx_st *bd_http_tls_new(const char *cert_file, const char *key_file,
                                   const char *cert_name, const char *key_name, bd_err_t *err);
/* Free a context from bd_http_tls_new (NULL: nothing), after the front end that borrowed it;
 * connections still open hold their own references. */
void bd_http_tls_free(struct ssl_ctx_st *ctx);

/* Whether host:port can be listened on now (a socket opened and closed again): serve checks before
 * the models load, so that a port in use fails the start at once rather than after every model has
 * loaded. 0, or BD_EIO with err set as bd_http_new would. */
int bd_http_check_listen(const char *host, int port, bd_err_t *err);
/* Start the HTTP front end on `loop` and bind its listening socket. Borrows everything,
 * which must outlive it. NULL with err set when the address cannot be bound. */
bd_http_t *bd_http_new(struct st_h2o_evloop_t *loop, bd_repo_t *repo, bd_metrics_t *metrics,
                       bd_infer_t *infer, bd_stream_t *stream, const bd_http_opts_t *opts,
                       bd_err_t *err);
/* The bound port (useful with port 0). */
int bd_http_port(const bd_http_t *h);
/* Drain, step 1: close the listener (new connections are refused), answer readiness and
 * repository requests with "shutting down", and end keep-alive after each reply. */
void bd_http_stop(bd_http_t *h);
/* Drain, step 2 (every reply queued): close idle keep-alive connections once their last
 * reply was written. */
void bd_http_close_idle(bd_http_t *h);
/* Drain, step 3 (the wait for clients ran out): close every connection still open (a request
 * still arriving, a reply the client does not read); h2o sees each end on the next turns. */
void bd_http_close_all(bd_http_t *h);
/* Open client connections, upgraded WebSocket ones included (their sockets keep the
 * close hook set at accept). */
size_t bd_http_connections(const bd_http_t *h);
void bd_http_free(bd_http_t *h);

#endif
