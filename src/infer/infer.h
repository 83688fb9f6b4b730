/* infer: what every front end shares to run one inference request. A front end (HTTP,
 * WebSocket, Redis Streams) speaks only its protocol; it hands the request's bytes to
 * bd_infer_start, which finds and holds the model version, checks readiness, decodes the
 * KServe v2 request (JSON, or a JSON header followed by Triton binary tensors), validates it
 * against the model and submits it to the model's scheduler. When the request is finished
 * (success, backend error, deadline, cancel, shutdown), the call's done callback runs on the
 * owner thread, delivered through the owner's core mailbox; the front end then encodes the
 * reply with bd_call_encode (outputs picked as the request asked, JSON or binary) and frees
 * the call. Outcomes are counted per protocol (the scheduler counts what it decided; this
 * layer counts requests that never reached it as invalid).
 *
 * Threads: one bd_infer_t per owner thread (an event loop). Every function runs on that
 * thread; the scheduler's workers, its timer thread and the repository's loader thread only
 * post to the owner's mailbox. Never blocks. */
#ifndef BD_INFER_H
#define BD_INFER_H

#include "core/core.h"
#include "metrics/metrics.h"
#include "repo/repo.h"
#include "zip/zip.h"

typedef struct bd_infer bd_infer_t;
typedef struct bd_call bd_call_t;

/* The request finished: bd_call_status says how. Runs on the owner thread, from
 * bd_mailbox_drain. The callee owns the call from now on and frees it with bd_call_free
 * (possibly after encoding it). */
typedef void (*bd_call_done_cb)(bd_call_t *call);

/* A request's "id", for an error reply: any length, `found` when the request had one (""
 * included). */
typedef struct {
    bd_buf_t text; /* NUL-terminated when found */
    bool found;
} bd_infer_id_t;

typedef struct {
    /* Bodies larger than this are decoded on the infer layer's decode thread, not on the
     * owner's loop, so one large JSON body never stalls the other clients. */
    size_t offload_bytes;
    /* Bytes of bodies being decoded off the loop at once; a body past it is refused
     * (BD_EFULL, 503) rather than queued, which bounds the memory decoding takes. */
    size_t max_decode_bytes;
    /* Group the submits of one event-loop turn: each model's scheduler is woken once, by
     * bd_infer_flush, which the owner then calls after every turn of its loop. */
    bool group_submits;
    /* With group_submits: called (owner thread) when a submit is held and none was since the
     * last flush, so the owner can flush within the same turn (e.g. from a zero-delay timer). */
    void (*on_held)(void *ctx);
    void *on_held_ctx;
    /* With group_submits: a model whose batches cost less than this (ns, as measured) runs the
     * group on the owner thread at the flush instead of waking its worker, and the replies are
     * delivered (the mailbox drained) before the flush returns. 0: never. */
    uint64_t inline_max_ns;
    /* The owner's request bytes (--max-buffered-bytes), where the front ends count what they
     * hold. A compressed request, once inflated and decoded, counts what it holds there
     * until its call is freed (the front end counts only the compressed bytes); one that
     * would take the bytes past budget->max is refused (BD_EFULL, 503) unless nothing else
     * is held. NULL: not counted. */
    bd_budget_t *budget;
    /* Server-wide metrics, where such a refusal counts (batchd_http_buffer_full_total, as the
     * front end's refusals from a head do). NULL: not counted. */
    bd_metrics_t *metrics;
} bd_infer_opts_t;

/* Borrows repo and mailbox (the owner thread's), which must outlive it; starts the decode
 * thread. NULL when out of memory or the thread cannot start. */
bd_infer_t *bd_infer_new(bd_repo_t *repo, bd_mailbox_t *mailbox, const bd_infer_opts_t *opts);
/* Every call must have been handed back (done ran) and freed before. Joins the decode
 * thread. */
void bd_infer_free(bd_infer_t *inf);
/* Calls started and whose done callback has not run yet. */
size_t bd_infer_inflight(const bd_infer_t *inf);
/* With group_submits: wake each model that requests were submitted to since the last flush,
 * once, so what one loop turn decoded for a model forms one batch (or run it here, see
 * inline_max_ns). Owner thread. */
void bd_infer_flush(bd_infer_t *inf);

typedef struct {
    bd_protocol_t protocol;
    /* The model (and optional version) the front end's route names; model NULL: the request
     * must name it in "model_name" (and may in "model_version"). With `body_names_model`,
     * names given both ways must agree; without it the request's own names are ignored. */
    const char *model;
    size_t model_len;
    const char *version;
    size_t version_len;
    bool body_names_model;
    /* The request: a JSON object, optionally followed by binary tensor data (header_len is
     * the JSON part's length; == len when there is none). Borrowed only during the call:
     * what the request keeps (binary tensors, a body decoded off the loop) is copied, unless
     * body_kept says the front end keeps these bytes valid and unchanged until done ran. */
    const char *body;
    size_t len;
    size_t header_len;
    bool body_kept;
    /* The body's content coding; identity: none. With gzip or deflate, body/len are the
     * compressed bytes, which must be kept (body_kept; else BD_EUNSUPPORTED). They are
     * inflated up to opts.offload_bytes on the owner thread and the rest on the decode
     * thread, each byte counted against opts.max_decode_bytes as it comes, to at most
     * max_body_bytes (0: opts.max_decode_bytes; past it BD_EBODYSIZE). header_len then counts
     * in the inflated body; SIZE_MAX: all of it. */
    bd_zip_coding_t coding;
    size_t max_body_bytes;
    /* The coding the client accepts for its reply: a reply large enough to be encoded on the
     * decode thread is compressed there too (bd_call_reply_coding); a small one is left to
     * the front end. */
    bd_zip_coding_t reply_coding;
    /* Set when the front end found the request's framing wrong before decoding (e.g. a bad
     * Inference-Header-Content-Length): it is answered and counted like a decode error,
     * after the model checks. */
    const bd_err_t *framing_err;
    /* Bytes of zeroed front-end state the call carries (bd_call_user); freed with it. */
    size_t user_size;
    /* On failure, the request's "id" when it could be read, for protocols that answer errors
     * by id. May be NULL. */
    bd_infer_id_t *err_id;
} bd_infer_args_t;

/* Start one request. On success returns 0 and *out: the call is owned by the infer layer
 * until `done` runs (exactly once, on the owner thread). On failure returns the code (never
 * calls done) with one sentence in err: BD_ENOTFOUND, BD_EUNAVAIL (not ready, circuit
 * breaker open), BD_EINVAL/BD_ETOOBIG (bad request, or a corrupt compressed body),
 * BD_EBODYSIZE (a compressed body that inflates past its limit), BD_EFULL (queue full, or too
 * many body bytes decoding), BD_ESHUTDOWN, BD_ENOMEM. A body over opts.offload_bytes (or a
 * compressed one that inflates past it) is decoded off the loop: its inflate, decode and model
 * errors then arrive through `done` (bd_call_status) instead. */
int bd_infer_start(bd_infer_t *inf, const bd_infer_args_t *a, bd_call_done_cb done, bd_call_t **out,
                   bd_err_t *err);

/* The call's a->user_size bytes of front-end state (16-byte aligned, zeroed at start). The
 * owner thread may fill them right after a successful start: done cannot run before the
 * owner's loop drains its mailbox. */
void *bd_call_user(bd_call_t *call);

/* The client went away: a call still queued leaves the queue (its done runs with
 * BD_ECANCELLED, later, from the mailbox); one already running finishes as usual. Until
 * done ran. */
void bd_call_cancel(bd_call_t *call);

/* 0, or the error code; *msg (may be NULL) gets the reason. After done. */
int bd_call_status(const bd_call_t *call, const char **msg);
/* The request's "id"; else the one bd_call_set_id gave; else NULL. Before done, a request
 * decoding off the loop has no id of its own yet. */
const char *bd_call_id(const bd_call_t *call);
/* An id (copied, at most 63 bytes) that the reply carries when the request has none. */
void bd_call_set_id(bd_call_t *call, const char *id);
/* Append the reply of a successful call to `out`: the KServe v2 response JSON, then the
 * binary outputs' bytes when the request asked for any; *header_len is the JSON part's length
 * when it did (even when those outputs hold no bytes), else 0: the reply is plain JSON. Returns 0,
 * BD_ENOMEM, or the call's own error code (with its message in err) when it failed. After done. */
int bd_call_encode(bd_call_t *call, bd_buf_t *out, size_t *header_len, bd_err_t *err);
/* After a successful bd_call_encode: the coding of what it appended. gzip or deflate when
 * the reply was encoded on the decode thread and compressed there as a->reply_coding asked;
 * *plain_len (may be NULL) then gets the uncompressed reply's length, in which header_len
 * counts. Identity otherwise (*plain_len untouched). */
bd_zip_coding_t bd_call_reply_coding(const bd_call_t *call, size_t *plain_len);
/* Release the model version and everything the call owns. After done. NULL is fine. */
void bd_call_free(bd_call_t *call);

/* The HTTP status code an error code gets (400, 401, 403, 404, 405, 413, 415, 429, 500, 503):
 * the one table every front end uses (WebSocket and Redis replies carry it as "status"). */
int bd_infer_http_status(int code);

/* ==== raw typed inputs ====================================================================
 * For front ends whose messages carry tensor bytes rather than KServe v2 JSON (the Redis
 * Streams ingest). The same model lookup, readiness check, validation against the model,
 * submit, completion through the owner's mailbox and outcome counting as bd_infer_start;
 * only the decode is replaced by the front end's already-typed inputs. */

typedef struct {
    const char *name; /* a model input's name, NUL-terminated; borrowed during the call */
    bd_dtype_t dtype; /* BD_DT_INVALID: the model's datatype for this input */
    /* ndim 0: exactly one row of the model's dims ([1, dims...] when the model batches; the
     * model's dims when it does not), which needs fixed dims. Otherwise the whole shape,
     * the batch dim included. */
    bd_shape_t shape;
    const void *data; /* little-endian, row-major; borrowed during the call (copied) */
    size_t byte_size; /* must equal elements(shape) * size(dtype) */
    /* BYTES: data is the contents of one element, without its length prefix (the copy adds
     * it; at most UINT32_MAX bytes), e.g. an image posted as a plain body. */
    bool element;
} bd_infer_raw_input_t;

typedef struct {
    bd_protocol_t protocol;
    const char *model; /* required */
    size_t model_len;
    const char *version; /* NULL or "": the highest ready version */
    size_t version_len;
    const bd_infer_raw_input_t *inputs;
    size_t n_inputs;
    size_t max_bytes; /* the inputs' bytes together may not pass this (BD_ETOOBIG); 0: none */
    size_t user_size; /* as bd_infer_args_t.user_size */
    /* NULL, or a malloc'd block holding every input's bytes back to back in order (each
     * inputs[i].data pointing into it; no `element` input): a call that starts (0 returned)
     * takes it over instead of copying the inputs; on any error it stays the caller's. */
    void *body;
    /* > 0: every model output comes back as its top `classification` classes (Triton's
     * classification extension), as parameters.classification asks in a JSON request. */
    size_t classification;
} bd_infer_raw_args_t;

/* Start one request from raw typed inputs. Returns and calls `done` exactly as
 * bd_infer_start (never offloaded: nothing is decoded). A missing model is BD_ENOTFOUND, a
 * model that is not ready BD_EUNAVAIL; an input whose byte count does not fill its shape, an
 * unknown or missing input, a datatype or shape the model does not take are BD_EINVAL (counted
 * `invalid` for the model); BD_ETOOBIG past max_bytes; BD_EFULL, BD_ESHUTDOWN as the scheduler
 * says. Owner thread. */
int bd_infer_start_raw(bd_infer_t *inf, const bd_infer_raw_args_t *a, bd_call_done_cb done,
                       bd_call_t **out, bd_err_t *err);

/* ==== a plain image body ==================================================================
 * POST /v2/models/{m}/infer with Content-Type image/jpeg or image/png: the body is one
 * encoded image for a model whose config.json has "preprocess"; it becomes one BYTES element
 * of that input and runs as bd_infer_start_raw runs it (the reply is bd_call_encode's usual
 * KServe v2 JSON). A model without preprocessing is BD_EINVAL naming what it takes. Owner
 * thread. */
typedef struct {
    bd_protocol_t protocol;
    const char *model;
    size_t model_len;
    const char *version; /* NULL or "": the highest ready version */
    size_t version_len;
    const void *data; /* the encoded image; borrowed during the call (copied) */
    size_t len;
    size_t classification; /* as bd_infer_raw_args_t.classification */
    size_t user_size;
} bd_infer_image_args_t;

int bd_infer_start_image(bd_infer_t *inf, const bd_infer_image_args_t *a, bd_call_done_cb done,
                         bd_call_t **out, bd_err_t *err);

/* After done, for a call that succeeded: every model output in config order (names,
 * datatypes, shapes with the batch dim, data), borrowed from the call until bd_call_free.
 * Returns how many; 0 for a call that failed. Owner thread. */
size_t bd_call_outputs(const bd_call_t *call, const bd_tensor_t **outputs);
/* The model and version that ran (or refused) the call; "" when none was found. */
const char *bd_call_model_name(const bd_call_t *call);
const char *bd_call_model_version(const bd_call_t *call);

#endif
