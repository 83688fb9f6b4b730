/* infer.c: the shared infer layer (see infer.h).
 *
 * A call lives in its scheduler request's arena, so freeing the request frees the call. From
 * a successful bd_infer_start until its done callback runs, the call is the scheduler's: the
 * owner thread touches it only through bd_call_cancel. The scheduler's completion hook runs
 * on whatever thread finished the request (a worker, the timer thread, the canceller); it
 * only posts the call's mail to the owner's mailbox, whose drain runs done on the owner
 * thread. Each call holds a reference on its model version until bd_call_free, so a version
 * that a reload or an unload took out of the table stays alive until its last request was
 * answered.
 *
 * A compressed body (args.coding) is inflated on the owner thread up to offload_bytes of
 * output and LOOP_INFLATE_IN of input (empty stored blocks or gzip members inflate to nothing,
 * so the output limit alone does not bound the work); one that goes on is handed to the
 * decode thread with its zip reader, which inflates the rest a step at a time, counting each
 * step in decoding_bytes (shared with that thread, under mu) before it inflates it, then
 * decodes as for any large body. A reply the decode thread encodes it also compresses when
 * the client asked (args.reply_coding).
 *
 * Threads: the owner thread, except on_sched_done (any thread; touches only the mailbox) and
 * the decode thread's work on the calls handed to it. The one field both touch while a call is
 * on the decode thread is `cancelled`, an atomic: the owner sets it (bd_call_cancel), the
 * decode thread reads it between inflate steps and stops early. */
#include "infer/infer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"
#include "tensor/tensor.h"

#define MAX_OUTPUTS 64

/* Models one loop turn may submit to held; past them, submits wake their workers at once. */
#define HELD_MODELS 8

struct bd_infer {
    bd_repo_t *repo;
    bd_mailbox_t *mailbox;
    bd_infer_opts_t opts;
    size_t inflight; /* owner thread */
    /* group_submits: the models submitted to since the last bd_infer_flush (referenced) */
    bd_model_t *held[HELD_MODELS];
    size_t n_held;
    /* Bodies handed to the decode thread and not back, and what compressed ones inflated
     * there so far (under mu: the decode thread adds as it inflates). */
    size_t decoding_bytes;
    /* the decode thread */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bd_list_t queue; /* bd_call_t.qlink, under mu */
    bool stop;       /* under mu */
};

/* A compressed body inflates on the decode thread in steps of this many bytes of output (each
 * counted in decoding_bytes before it is inflated) or of input, whichever comes first; the
 * call's cancelled flag is read between steps. */
#define INFLATE_STEP (1u << 20)
#define INFLATE_LEAST (64u << 10) /* a step smaller than this waits for room (BD_EFULL) */
/* The owner thread (an event loop) consumes at most this much of a compressed body's input. */
#define LOOP_INFLATE_IN (256u * 1024)

struct bd_call {
    bd_mail_t mail; /* posted by the decode thread, then by the scheduler's completion */
    bd_infer_t *inf;
    bd_model_t *model; /* referenced while set; released by bd_call_free */
    bd_req_t *req;     /* owns this call (it lives in req's arena) */
    bd_call_done_cb done;
    void *user; /* user_size bytes in the arena, or NULL */
    /* The route, kept (in the arena) for a decode that finishes later. */
    bd_protocol_t protocol;
    bool body_names_model;
    const char *rmodel, *rversion; /* NULL / "" when the route names none */
    size_t rmodel_len, rversion_len;
    size_t header_len;
    const char *body; /* what the decode thread reads: r->body, or the front end's kept body */
    size_t body_len;
    size_t held;     /* bytes counted in inf->decoding_bytes for it while it decodes */
    size_t zlen;     /* a compressed body's length (the front end counts it in the budget) */
    size_t budgeted; /* what it holds once inflated and decoded, in opts.budget until freed */
    /* A compressed body that inflates on the decode thread: the reader (over the front end's
     * kept bytes), what it inflated so far, its limit, and how much of `held` that may take. */
    bd_zip_reader_t *zip;
    bd_zip_coding_t coding;
    bd_buf_t plain;
    size_t max_plain;
    size_t plain_held;
    size_t zip_limit;             /* the output limit of the reader's last read */
    int zip_rc;                   /* and what it returned: BD_ETOOBIG or BD_ZIP_PAUSED */
    bd_zip_coding_t reply_coding; /* what the client accepts */
    bd_zip_coding_t reply_coded;  /* what a reply encoded on the decode thread is in */
    size_t reply_plain_len;       /* and its length before that */
    bool decoding; /* on the decode thread: the owner touches nothing but these flags */
    bool encoding; /* on the decode thread for its reply, likewise */
    bool raw;      /* bd_infer_start_raw: the front end reads the outputs, never a reply */
    /* The client left while it was decoding or encoding: set by the owner thread, read by the
     * decode thread too. */
    atomic_bool cancelled;
    /* Outputs asked for with parameters.classification, made at the first encode (arena,
     * one per requested output; name NULL until made). */
    bd_tensor_t *classified;
    /* A large reply, encoded on the decode thread before done runs (encoded set). */
    bool encoded;
    int reply_rc;
    bd_err_t reply_err;
    bd_buf_t reply;
    size_t reply_hlen;
    bd_list_t qlink;
    char assigned_id[64]; /* bd_call_set_id: used when the request has no id */
};

static void *decode_main(void *arg);

bd_infer_t *bd_infer_new(bd_repo_t *repo, bd_mailbox_t *mailbox, const bd_infer_opts_t *opts)
{
    bd_infer_t *inf = calloc(1, sizeof *inf);
    if (!inf) {
        return NULL;
    }
    inf->repo = repo;
    inf->mailbox = mailbox;
    inf->opts = *opts;
    bd_list_init(&inf->queue);
    pthread_mutex_init(&inf->mu, NULL);
    pthread_cond_init(&inf->cv, NULL);
    if (pthread_create(&inf->thread, NULL, decode_main, inf) != 0) {
        bd_infer_free(inf);
        return NULL;
    }
    inf->thread_started = true;
    return inf;
}

void bd_infer_free(bd_infer_t *inf)
{
    if (!inf) {
        return;
    }
    bd_infer_flush(inf);
    if (inf->thread_started) {
        pthread_mutex_lock(&inf->mu);
        inf->stop = true;
        pthread_cond_signal(&inf->cv);
        pthread_mutex_unlock(&inf->mu);
        pthread_join(inf->thread, NULL);
    }
    pthread_cond_destroy(&inf->cv);
    pthread_mutex_destroy(&inf->mu);
    free(inf);
}

size_t bd_infer_inflight(const bd_infer_t *inf)
{
    return inf->inflight;
}

void bd_infer_flush(bd_infer_t *inf)
{
    if (inf->n_held == 0) {
        return;
    }
    /* A batch run here posts its answers without a wake-up; they run below, in this turn. */
    bd_mailbox_hold(inf->mailbox);
    for (size_t i = 0; i < inf->n_held; i++) {
        bd_sched_t *s = bd_model_sched(inf->held[i]);
        if (inf->opts.inline_max_ns) {
            bd_sched_run_inline(s, inf->opts.inline_max_ns);
        }
        bd_sched_kick(s);
        bd_model_unref(inf->held[i]);
    }
    inf->n_held = 0;
    bd_mailbox_drain_held(inf->mailbox);
}

int bd_infer_http_status(int code)
{
    switch (code) {
    case 0:
        return 200;
    case BD_EINVAL:
    case BD_ENOTFOUND:
    case BD_ETOOBIG:
    case BD_EUNSUPPORTED:
        return 400;
    case BD_ENOPATH:
        return 404;
    case BD_EMETHOD:
        return 405;
    case BD_EAUTH:
        return 401;
    case BD_EFORBIDDEN:
        return 403;
    case BD_ERATE:
        return 429;
    case BD_EBODYSIZE:
        return 413;
    case BD_ECODING:
        return 415;
    case BD_ENOTIMPL:
        return 501;
    case BD_EFULL:
    case BD_ETIMEOUT:
    case BD_ESHUTDOWN:
    case BD_EUNAVAIL:
    case BD_ECANCELLED:
        return 503;
    default:
        return 500;
    }
}

/* ---- completion ------------------------------------------------------------------------- */

static bool reply_is_large(bd_call_t *c);
static void on_encoded(bd_mail_t *mail);

static void on_mail(bd_mail_t *mail)
{
    bd_call_t *c = BD_CONTAINER_OF(mail, bd_call_t, mail);
    bd_infer_t *inf = c->inf;
    if (c->req->status == 0 && !c->raw && reply_is_large(c)) {
        /* Encoding a large JSON reply would hold up the loop: the decode thread writes it,
         * and done runs when it is back. */
        c->encoding = true;
        c->mail.cb = on_encoded;
        pthread_mutex_lock(&inf->mu);
        bd_list_push_back(&inf->queue, &c->qlink);
        pthread_cond_signal(&inf->cv);
        pthread_mutex_unlock(&inf->mu);
        return;
    }
    inf->inflight--;
    c->done(c);
}

static void on_encoded(bd_mail_t *mail)
{
    bd_call_t *c = BD_CONTAINER_OF(mail, bd_call_t, mail);
    c->encoding = false;
    c->encoded = true;
    c->inf->inflight--;
    c->done(c);
}

/* The scheduler's completion hook: any thread. */
static void on_sched_done(bd_req_t *req, void *ctx)
{
    bd_call_t *c = ctx;
    (void)req;
    bd_mailbox_post(c->inf->mailbox, &c->mail);
}

/* ---- start ------------------------------------------------------------------------------ */

static int check_ready(const bd_model_t *m, bd_err_t *err)
{
    if (!bd_model_ready(m)) {
        return bd_err_set(err, BD_EUNAVAIL, "model '%s' is unavailable: %s", bd_model_name(m),
                          bd_model_reason(m));
    }
    return 0;
}

static int find_ready(bd_infer_t *inf, const char *name, size_t name_len, const char *version,
                      size_t version_len, bd_model_t **out, bd_err_t *err)
{
    int rc = bd_repo_find(inf->repo, name, name_len, version, version_len, out, err);
    return rc != 0 ? rc : check_ready(*out, err);
}

static bool names_equal(const char *a, size_t a_len, const char *b)
{
    return strlen(b) == a_len && memcmp(a, b, a_len) == 0;
}

/* The model for a decoded request: the route's (found again now: a decode off the loop may
 * have taken a while, and a reload may have swapped the version in between) and/or the one
 * the request names. On success *m is referenced. */
static int resolve_model(bd_infer_t *inf, bd_call_t *c, bd_model_t **m, bd_err_t *err)
{
    const bd_infer_req_t *in = &c->req->in;
    int rc;
    *m = NULL;
    if (c->rmodel) {
        rc =
            bd_repo_find(inf->repo, c->rmodel, c->rmodel_len, c->rversion, c->rversion_len, m, err);
        if (rc == 0) {
            rc = check_ready(*m, err);
        }
        if (rc == 0 && c->body_names_model) {
            if (in->model_name && !names_equal(c->rmodel, c->rmodel_len, in->model_name)) {
                rc = bd_err_set(
                    err, BD_EINVAL, "\"model_name\" is '%.64s' but this stream serves model '%.*s'",
                    in->model_name, (int)(c->rmodel_len > 64 ? 64 : c->rmodel_len), c->rmodel);
            } else if (in->model_version && c->rversion_len &&
                       !names_equal(c->rversion, c->rversion_len, in->model_version)) {
                rc =
                    bd_err_set(err, BD_EINVAL,
                               "\"model_version\" is '%.24s' but this stream serves version '%.*s'",
                               in->model_version,
                               (int)(c->rversion_len > 24 ? 24 : c->rversion_len), c->rversion);
            } else if (in->model_version && !c->rversion_len &&
                       strcmp(in->model_version, bd_model_version(*m)) != 0) {
                /* The path named no version: the request may pick one of the model. */
                rc = find_ready(inf, c->rmodel, c->rmodel_len, in->model_version,
                                strlen(in->model_version), m, err);
            }
        }
    } else if (!in->model_name || !*in->model_name) {
        rc = bd_err_set(err, BD_EINVAL,
                        "the request does not name its model: set \"model_name\" (or use "
                        "/v2/models/{model}/stream)");
    } else {
        const char *v = in->model_version ? in->model_version : "";
        rc = find_ready(inf, in->model_name, strlen(in->model_name), v, strlen(v), m, err);
    }
    if (rc == 0) {
        bd_model_ref(*m);
    }
    return rc;
}

/* Whether a decode that failed with `rc` is the client's request at fault (a 400 or, for a
 * body that inflates too far, 413): counted with outcome invalid. */
static bool decode_invalid(int rc)
{
    return rc == BD_EINVAL || rc == BD_ETOOBIG || rc == BD_EBODYSIZE || rc == BD_EUNSUPPORTED;
}

/* The metrics an invalid request counts in: `mm`, the route's model's, or when the route
 * names none, those of the ready model the body names (NULL: none, uncounted). Owner
 * thread; the model is not kept (its metrics are counted at once). */
static bd_model_metrics_t *invalid_metrics(bd_infer_t *inf, bd_model_metrics_t *mm, bool routed,
                                           const bd_infer_req_t *in)
{
    bd_model_t *m = NULL;
    bd_err_t ignored = {0};
    if (mm || routed || !in->model_name) {
        return mm;
    }
    const char *v = in->model_version ? in->model_version : "";
    return find_ready(inf, in->model_name, strlen(in->model_name), v, strlen(v), &m, &ignored) == 0
               ? bd_model_metrics(m)
               : NULL;
}

static void copy_err_id(const bd_infer_args_t *a, const char *id)
{
    if (a->err_id) {
        a->err_id->found = false;
        if (id) {
            bd_buf_reset(&a->err_id->text);
            bd_buf_puts(&a->err_id->text, id);
            a->err_id->found = !a->err_id->text.failed;
        }
    }
}

/* Swap the call's model reference for `m` (referenced or NULL). */
static void hold_model(bd_call_t *c, bd_model_t *m)
{
    if (c->model) {
        bd_model_unref(c->model);
    }
    c->model = m;
}

/* A decoded request (c->req->in filled, status 0): resolve its model and queue it. On
 * failure returns the code with err set; the call is then not queued. Owner thread. */
static int submit(bd_infer_t *inf, bd_call_t *c, bd_err_t *err)
{
    bd_req_t *r = c->req;
    bd_model_t *m = NULL;
    int rc = resolve_model(inf, c, &m, err);
    if (rc != 0) {
        if (rc == BD_EINVAL && c->model) {
            bd_metrics_request(bd_model_metrics(c->model), c->protocol, BD_OUTCOME_INVALID);
        }
        return rc;
    }
    hold_model(c, m);
    c->mail.cb = on_mail;
    r->done = on_sched_done;
    r->done_ctx = c;
    r->protocol = c->protocol;
    bd_sched_t *s = bd_model_sched(m);
    size_t i = 0;
    while (i < inf->n_held && inf->held[i] != m) {
        i++;
    }
    if (!inf->opts.group_submits || i == HELD_MODELS) {
        return bd_sched_submit(s, r, err);
    }
    rc = bd_sched_submit_held(s, r, err);
    if (rc == 0 && i == inf->n_held) {
        bd_model_ref(m); /* until the flush kicks its scheduler */
        inf->held[inf->n_held++] = m;
        if (inf->n_held == 1 && inf->opts.on_held) {
            inf->opts.on_held(inf->opts.on_held_ctx);
        }
    }
    return rc;
}

/* ---- the decode thread ------------------------------------------------------------------ */

static int encode_reply(bd_call_t *call, bd_buf_t *out, size_t *header_len, bd_err_t *err);

/* Decoded JSON data can take up to 8 bytes per 2 body bytes; the arena is bounded by that. */
static size_t arena_limit(size_t body_len)
{
    return body_len < (SIZE_MAX - (1u << 20)) / 8 ? body_len * 8 + (1u << 20) : SIZE_MAX;
}

/* Count up to `*n` more bytes in decoding_bytes, as many as --max-decode-bytes leaves room
 * for, and at least `least` (<= *n): false when there is not that much room; else *n says how
 * many were counted. *busy says what was counted before. Any thread. */
static bool hold_decode(bd_infer_t *inf, size_t *n, size_t least, size_t *busy)
{
    pthread_mutex_lock(&inf->mu);
    size_t b = inf->decoding_bytes;
    size_t room = b < inf->opts.max_decode_bytes ? inf->opts.max_decode_bytes - b : 0;
    bool ok = room >= least;
    if (ok) {
        *n = *n < room ? *n : room;
        inf->decoding_bytes = b + *n;
    }
    pthread_mutex_unlock(&inf->mu);
    *busy = b;
    return ok;
}

static void release_decode(bd_infer_t *inf, size_t n)
{
    pthread_mutex_lock(&inf->mu);
    inf->decoding_bytes -= n;
    pthread_mutex_unlock(&inf->mu);
}

static int body_too_large(bd_zip_coding_t coding, size_t max, bd_err_t *err)
{
    return bd_zip_body_too_large(coding, max, "request bodies (--max-body-bytes)", err);
}

/* A compressed body that alone, its compressed bytes with what it inflated to, would pass
 * --max-decode-bytes (set as low as --max-body-bytes): no retry can help, so 413, not the
 * 503 of a server busy with other bodies. */
static int decode_too_large(const bd_infer_t *inf, size_t need, bd_err_t *err)
{
    return bd_err_set(err, BD_EBODYSIZE,
                      "the request body needs %zu bytes to decode (compressed and inflated "
                      "together), more than the server decodes at once (--max-decode-bytes %zu)",
                      need, inf->opts.max_decode_bytes);
}

/* What a request's own connection may hold besides its body (its head, bytes pipelined
 * after it) while it still counts as the only request held. */
#define ALONE_BYTES ((size_t)64 << 10)

/* A compressed request decoded: what it holds now (the inflated body its binary tensors point
 * into, the decoded ones in its arena) goes into opts.budget, where its front end counted
 * only the compressed bytes; 0, or BD_EFULL when that would take the budget past its max
 * while other requests are held (a lone one passes, however large). Owner thread. */
static int budget_inflated(bd_infer_t *inf, bd_call_t *c, bd_err_t *err)
{
    bd_budget_t *b = inf->opts.budget;
    bd_req_t *r = c->req;
    size_t n = (r->body ? r->body_len : 0) + r->arena.used;
    if (!b) {
        return 0;
    }
    size_t others = b->used > c->zlen ? b->used - c->zlen : 0;
    if (b->max && others > ALONE_BYTES && (others > b->max || n > b->max - others)) {
        return bd_err_set(err, BD_EFULL,
                          "the server holds %zu bytes of requests and this compressed one holds "
                          "%zu once inflated and decoded, past --max-buffered-bytes (%zu); retry "
                          "shortly",
                          others, n, b->max);
    }
    b->used += n;
    c->budgeted = n;
    return 0;
}

/* A compressed body that inflates to nothing (empty stored blocks, empty gzip members), on
 * the owner thread or the decode thread alike. */
#define EMPTY_ONCE_INFLATED "the request body is empty once inflated; expected a JSON infer request"

/* Inflate the rest of a compressed body (the owner thread did the first offload_bytes, or
 * stopped at LOOP_INFLATE_IN of input): INFLATE_STEP bytes at a time, each step's room
 * counted in decoding_bytes before it is inflated, so a zip bomb stops at its limit
 * (BD_EBODYSIZE) or at --max-decode-bytes (BD_EFULL) having allocated at most that; a step
 * also ends after INFLATE_STEP bytes of input, and a cancelled call stops there
 * (BD_ECANCELLED). Then the request owns the inflated body. The bytes stay counted until
 * on_decoded. Decode thread. */
static int inflate_rest(bd_infer_t *inf, bd_call_t *c, bd_err_t *err)
{
    bd_req_t *r = c->req;
    int rc = c->zip_rc;
    size_t next = c->zip_limit;
    while (rc == BD_ETOOBIG || rc == BD_ZIP_PAUSED) {
        if (atomic_load(&c->cancelled)) {
            rc = bd_err_set(err, BD_ECANCELLED,
                            "the request was cancelled while its body was inflated");
            break;
        }
        if (rc == BD_ETOOBIG) {
            /* The reader stopped one byte past `next`: a larger limit resumes it. */
            if (next >= c->max_plain) {
                rc = body_too_large(c->coding, c->max_plain, err);
                break;
            }
            next = c->max_plain - next > INFLATE_STEP ? next + INFLATE_STEP : c->max_plain;
        }
        /* The step's room; with less left under --max-decode-bytes, what is left (a body
         * that fits inflates to its end), but not in crumbs. */
        size_t more = next + 1 > c->plain_held ? next + 1 - c->plain_held : 0;
        size_t least = more < INFLATE_LEAST ? more : INFLATE_LEAST;
        size_t busy = 0;
        if (!hold_decode(inf, &more, least, &busy)) {
            rc = busy <= c->held /* nobody else's bytes */
                     ? decode_too_large(inf, c->held + least, err)
                     : bd_err_set(err, BD_EFULL,
                                  "the server is decoding %zu bytes of request bodies (%zu of "
                                  "them this one's, compressed and inflated so far); inflating "
                                  "it further would pass the limit of %zu (--max-decode-bytes)",
                                  busy, c->held, inf->opts.max_decode_bytes);
            break;
        }
        c->held += more;
        c->plain_held += more;
        if (c->plain_held - 1 < next) {
            next = c->plain_held - 1; /* a smaller step than asked for */
        }
        rc = bd_zip_read(c->zip, &c->plain, next, INFLATE_STEP, err);
    }
    bd_zip_reader_free(c->zip);
    c->zip = NULL;
    if (rc == 0 && c->plain.len == 0) {
        rc = bd_err_set(err, BD_EINVAL, EMPTY_ONCE_INFLATED);
    }
    if (rc != 0) {
        bd_buf_dispose(&c->plain);
        return rc;
    }
    r->body = bd_buf_steal(&c->plain, &r->body_len);
    c->body = r->body;
    c->body_len = r->body_len;
    c->header_len = c->header_len == SIZE_MAX ? c->body_len : c->header_len;
    r->arena.limit = arena_limit(c->body_len);
    return 0;
}

/* A reply encoded here is compressed here too when the client asked and it is worth it; out
 * of memory, it goes out as it is. Decode thread. */
static void compress_reply(bd_call_t *c)
{
    if (c->reply_coding == BD_ZIP_IDENTITY || c->reply.len <= BD_ZIP_MIN_BYTES) {
        return;
    }
    bd_buf_t z;
    bd_buf_init(&z);
    if (bd_zip_deflate(c->reply_coding, c->reply.data, c->reply.len, &z, NULL) != 0) {
        bd_buf_dispose(&z);
        return;
    }
    c->reply_plain_len = c->reply.len;
    bd_buf_dispose(&c->reply);
    c->reply = z;
    c->reply_coded = c->reply_coding;
}

/* Large bodies are decoded here, and large JSON replies encoded, so one big JSON body never
 * stalls the loop. */
static void *decode_main(void *arg)
{
    bd_infer_t *inf = arg;
    pthread_mutex_lock(&inf->mu);
    for (;;) {
        while (bd_list_empty(&inf->queue) && !inf->stop) {
            pthread_cond_wait(&inf->cv, &inf->mu);
        }
        if (bd_list_empty(&inf->queue)) {
            break; /* stopping, and nothing is left */
        }
        bd_list_t *n = bd_list_first(&inf->queue);
        bd_list_unlink(n);
        pthread_mutex_unlock(&inf->mu);
        bd_call_t *c = BD_CONTAINER_OF(n, bd_call_t, qlink);
        bd_req_t *r = c->req;
        if (c->encoding) {
            c->reply_rc = encode_reply(c, &c->reply, &c->reply_hlen, &c->reply_err);
            if (c->reply_rc == 0) {
                compress_reply(c);
            }
        } else {
            r->status = c->zip ? inflate_rest(inf, c, &r->err) : 0;
            if (r->status == 0) {
                bd_decode_limits_t limits = {0};
                r->status = bd_infer_decode(c->body, c->body_len, c->header_len, &r->arena, &limits,
                                            &r->in, &r->err);
            }
            if (c->header_len == c->body_len) {
                free(r->body); /* all JSON: the tensors are in the arena now */
                r->body = NULL;
            }
        }
        bd_mailbox_post(inf->mailbox, &c->mail);
        pthread_mutex_lock(&inf->mu);
    }
    pthread_mutex_unlock(&inf->mu);
    return NULL;
}

/* A decode came back (owner thread): queue the request, or finish the call with the error. */
static void on_decoded(bd_mail_t *mail)
{
    bd_call_t *c = BD_CONTAINER_OF(mail, bd_call_t, mail);
    bd_infer_t *inf = c->inf;
    bd_req_t *r = c->req;
    c->decoding = false;
    release_decode(inf, c->held);
    bd_model_metrics_t *mm = c->model ? bd_model_metrics(c->model) : NULL;
    bd_err_t err = {0};
    int rc = r->status;
    if (rc != 0 && rc != BD_ECANCELLED) {
        err = r->err;
        if (decode_invalid(rc)) {
            mm = invalid_metrics(inf, mm, c->rmodel != NULL, &r->in);
            bd_metrics_request(mm, c->protocol, BD_OUTCOME_INVALID);
        } else if (rc == BD_EFULL) { /* inflating passed --max-decode-bytes */
            bd_metrics_request(mm, c->protocol, BD_OUTCOME_REJECTED);
        }
    } else if (atomic_load(&c->cancelled)) { /* BD_ECANCELLED: inflate_rest stopped early */
        bd_model_t *m = NULL;
        if (resolve_model(inf, c, &m, NULL) == 0) {
            hold_model(c, m); /* the model it was for counts the cancel */
            mm = bd_model_metrics(m);
        }
        if (rc == BD_ECANCELLED) {
            err = r->err;
        } else {
            rc = bd_err_set(&err, BD_ECANCELLED, "the request was cancelled while it was decoded");
        }
        bd_metrics_request(mm, c->protocol, BD_OUTCOME_CANCELLED);
    } else if (c->zlen && (rc = budget_inflated(inf, c, &err)) != 0) {
        bd_metrics_request(mm, c->protocol, BD_OUTCOME_REJECTED);
        bd_metrics_http_buffer_full_add(inf->opts.metrics);
    } else if ((rc = submit(inf, c, &err)) == 0) {
        return; /* queued: the scheduler's completion comes through the mailbox later */
    }
    r->status = rc;
    r->err = err;
    inf->inflight--;
    c->done(c);
}

/* ---- start ------------------------------------------------------------------------------ */

/* Inflate a compressed body on the owner thread up to offload_bytes of output and
 * LOOP_INFLATE_IN of input. 0 with *zip NULL when it ended there (all of it in `plain`), or
 * with *zip set (the reader, stopped one byte past *limit, or paused at the input budget:
 * *zip_rc says which) when the rest is for the decode thread; BD_EINVAL (corrupt, truncated,
 * too many gzip members), BD_EBODYSIZE, BD_ENOMEM with err, `plain` then empty. */
static int inflate_start(bd_infer_t *inf, const bd_infer_args_t *a, size_t max_plain,
                         bd_buf_t *plain, bd_zip_reader_t **zip, size_t *limit, int *zip_rc,
                         bd_err_t *err)
{
    size_t here = inf->opts.offload_bytes < max_plain ? inf->opts.offload_bytes : max_plain;
    bd_zip_reader_t *z = bd_zip_reader_new(a->coding, a->body, a->len);
    int rc = z ? bd_zip_read(z, plain, here, LOOP_INFLATE_IN, err)
               : bd_err_set(err, BD_ENOMEM, "out of memory while inflating the request body");
    if ((rc == BD_ETOOBIG && here < max_plain) || rc == BD_ZIP_PAUSED) {
        *zip = z;
        *limit = here;
        *zip_rc = rc;
        return 0;
    }
    bd_zip_reader_free(z);
    if (rc == BD_ETOOBIG) {
        rc = body_too_large(a->coding, max_plain, err);
    }
    if (rc != 0) {
        bd_buf_dispose(plain);
    }
    return rc;
}

int bd_infer_start(bd_infer_t *inf, const bd_infer_args_t *a, bd_call_done_cb done, bd_call_t **out,
                   bd_err_t *err)
{
    copy_err_id(a, NULL);
    bd_model_t *m = NULL;
    int rc;
    if (a->model) {
        /* The route's model is found first (its metrics count what fails to decode); front
         * ends whose requests carry names (body_names_model) learn that it is missing or not
         * ready after decoding (resolve_model finds it again), so their error replies carry
         * the request's id. */
        rc = bd_repo_find(inf->repo, a->model, a->model_len, a->version, a->version_len, &m, err);
        if (rc == 0) {
            rc = check_ready(m, err);
        }
        if (rc != 0 && !a->body_names_model) {
            return rc;
        }
        if (rc != 0) {
            /* Not kept: a model without a ready version may be a stub, which no reference
             * keeps alive while the body decodes (a load that finds the folder gone frees it). */
            m = NULL;
        }
    }
    bd_model_metrics_t *mm = m ? bd_model_metrics(m) : NULL;
    if (a->body == NULL || a->len == 0) {
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
        return bd_err_set(err, BD_EINVAL,
                          "the request body is empty; expected a JSON infer request");
    }
    if (a->framing_err) {
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
        return bd_err_set(err, a->framing_err->code, "%s", a->framing_err->msg);
    }
    /* A compressed body: inflated here up to offload_bytes (a small one entirely); a longer
     * one goes on inflating on the decode thread (zip set). */
    bd_buf_t plain;
    bd_buf_init(&plain);
    bd_zip_reader_t *zip = NULL;
    size_t zip_limit = 0;
    int zip_rc = 0;
    size_t max_plain = a->max_body_bytes ? a->max_body_bytes : inf->opts.max_decode_bytes;
    if (a->coding != BD_ZIP_IDENTITY) {
        rc = a->body_kept ? inflate_start(inf, a, max_plain, &plain, &zip, &zip_limit, &zip_rc, err)
                          : bd_err_set(err, BD_EUNSUPPORTED,
                                       "a compressed request body must be kept while it inflates");
        if (rc == 0 && !zip && plain.len == 0) {
            bd_buf_dispose(&plain);
            rc = bd_err_set(err, BD_EINVAL, EMPTY_ONCE_INFLATED);
        }
        if (rc != 0) {
            if (rc == BD_EINVAL || rc == BD_EBODYSIZE) {
                bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
            }
            return rc;
        }
    }
    size_t len = a->coding != BD_ZIP_IDENTITY ? plain.len : a->len;
    size_t header_len = a->header_len == SIZE_MAX && !zip ? len : a->header_len;
    bool offload = zip || len > inf->opts.offload_bytes;
    /* Counted while off the loop: the body; for one still inflating, the compressed bytes and
     * the room of what inflated so far (inflate_rest counts the rest as it goes). */
    size_t held = zip ? a->len + plain.cap : len;
    size_t busy = 0;
    if (offload && !hold_decode(inf, &held, held, &busy)) {
        bd_buf_dispose(&plain);
        bd_zip_reader_free(zip);
        if (busy == 0) {
            bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
            return decode_too_large(inf, held, err);
        }
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_REJECTED);
        return bd_err_set(err, BD_EFULL,
                          "the server is decoding %zu bytes of request bodies already; a body of "
                          "%zu bytes would pass the limit of %zu (--max-decode-bytes)",
                          busy, held, inf->opts.max_decode_bytes);
    }
    bd_req_t *r = bd_req_new(arena_limit(len));
    bd_call_t *c = r ? bd_arena_calloc(&r->arena, 1, sizeof *c) : NULL;
    if (c && a->user_size && !(c->user = bd_arena_calloc(&r->arena, 1, a->user_size))) {
        c = NULL;
    }
    if (c && a->model &&
        (!(c->rmodel = bd_arena_strndup(&r->arena, a->model, a->model_len)) ||
         !(c->rversion =
               bd_arena_strndup(&r->arena, a->version ? a->version : "", a->version_len)))) {
        c = NULL;
    }
    const char *body = a->body;
    bool copy = !a->body_kept && (offload || header_len < len);
    if (c && copy) {
        /* Binary tensors point into the body, and a decode off the loop reads it later: it
         * must outlive the front end's buffer. */
        r->body = malloc(len);
        if (r->body) {
            memcpy(r->body, a->body, len);
            r->body_len = len;
            body = r->body;
        }
    }
    if (!c || (copy && !r->body)) {
        bd_req_free(r);
        bd_buf_dispose(&plain);
        bd_zip_reader_free(zip);
        if (offload) {
            release_decode(inf, held);
        }
        return bd_err_set(err, BD_ENOMEM, "out of memory while reading the request");
    }
    if (a->coding != BD_ZIP_IDENTITY && !zip) {
        /* Inflated here: the request owns it (binary tensors point into it). */
        r->body = bd_buf_steal(&plain, &r->body_len);
        body = r->body;
    }
    c->inf = inf;
    c->req = r;
    c->done = done;
    c->protocol = a->protocol;
    c->body_names_model = a->body_names_model;
    c->rmodel_len = a->model ? a->model_len : 0;
    c->rversion_len = a->model ? a->version_len : 0;
    c->header_len = header_len;
    c->body = body;
    c->body_len = len;
    c->reply_coding = a->reply_coding;
    c->zlen = a->coding != BD_ZIP_IDENTITY ? a->len : 0;
    if (offload) {
        if (m) {
            bd_model_ref(m); /* for the metrics of a decode that fails */
            c->model = m;
        }
        c->held = held;
        if (zip) {
            c->zip = zip;
            c->coding = a->coding;
            c->plain = plain;
            c->max_plain = max_plain;
            c->plain_held = plain.cap;
            c->zip_limit = zip_limit;
            c->zip_rc = zip_rc;
            c->body = NULL;
            c->body_len = 0;
        }
        c->decoding = true;
        c->mail.cb = on_decoded;
        inf->inflight++;
        pthread_mutex_lock(&inf->mu);
        bd_list_push_back(&inf->queue, &c->qlink);
        pthread_cond_signal(&inf->cv);
        pthread_mutex_unlock(&inf->mu);
        *out = c;
        return 0;
    }
    bd_decode_limits_t limits = {0};
    rc = bd_infer_decode(body, len, header_len, &r->arena, &limits, &r->in, err);
    if (rc == 0 && c->zlen && (rc = budget_inflated(inf, c, err)) != 0) {
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_REJECTED);
    } else if (rc == 0) {
        c->model = m ? (bd_model_ref(m), m) : NULL; /* attributes a model mismatch */
        rc = submit(inf, c, err);
    } else if (decode_invalid(rc)) {
        mm = invalid_metrics(inf, mm, a->model != NULL, &r->in);
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
    }
    if (rc != 0) {
        copy_err_id(a, r->in.id);
        bd_call_free(c);
        return rc;
    }
    inf->inflight++;
    *out = c;
    return 0;
}

/* ---- after submit ----------------------------------------------------------------------- */

void *bd_call_user(bd_call_t *call)
{
    return call->user;
}

void bd_call_cancel(bd_call_t *call)
{
    if (call->decoding || call->encoding) {
        /* on_decoded finishes it instead of queueing it; inflate_rest stops at its next step */
        atomic_store(&call->cancelled, true);
        return;
    }
    int rc = bd_sched_cancel(bd_model_sched(call->model), call->req);
    BD_DEBUG("infer", "client_gone model=%s cancelled=%s", bd_model_name(call->model),
             rc == 0 ? "yes" : "no (running)");
}

int bd_call_status(const bd_call_t *call, const char **msg)
{
    if (msg) {
        *msg = call->req->status ? call->req->err.msg : "";
    }
    return call->req->status;
}

const char *bd_call_id(const bd_call_t *call)
{
    /* While it decodes, the request is the decode thread's: its own id is not known yet. */
    const char *id = call->decoding ? NULL : call->req->in.id;
    return id ? id : call->assigned_id[0] ? call->assigned_id : NULL;
}

void bd_call_set_id(bd_call_t *call, const char *id)
{
    snprintf(call->assigned_id, sizeof call->assigned_id, "%s", id);
}

/* Output `t` as classification `k` asked (Triton's extension), made once into the call's
 * arena. The owner thread, or the decode thread while the call is there. */
static int classify_output(bd_call_t *call, size_t i, size_t k, const bd_tensor_t *t,
                           const bd_tensor_t **out, bd_err_t *err)
{
    bd_req_t *r = call->req;
    if (!call->classified &&
        !(call->classified = bd_arena_calloc(&r->arena, r->in.n_outputs, sizeof(bd_tensor_t)))) {
        return bd_err_set(err, BD_ENOMEM, "out of memory while classifying the outputs");
    }
    bd_tensor_t *c = &call->classified[i];
    if (!c->name) {
        size_t n_labels = 0;
        const char *const *labels = bd_model_labels(call->model, &n_labels);
        const bd_model_config_t *cfg = bd_model_config(call->model);
        bool batched = cfg && cfg->max_batch_size > 0;
        int rc = bd_classify(t, k, batched, labels, n_labels, &r->arena, c, err);
        if (rc != 0) {
            memset(c, 0, sizeof *c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

/* The outputs a successful call's reply carries, as the request asked; `classify`: with the
 * classification the request asked for (else the model's own tensors, for size estimates). */
static int select_outputs(bd_call_t *call, bd_output_enc_t *enc, size_t *n_out, bool classify,
                          bd_err_t *err)
{
    const bd_req_t *r = call->req;
    const bd_infer_req_t *in = &r->in;
    size_t n = in->n_outputs ? in->n_outputs : r->n_outputs;
    if (n > MAX_OUTPUTS) {
        return bd_err_set(err, BD_EINVAL, "a request may ask for at most %d outputs", MAX_OUTPUTS);
    }
    for (size_t i = 0; i < n; i++) {
        if (!in->n_outputs) {
            enc[i] = (bd_output_enc_t){&r->outputs[i], in->binary_default};
            continue;
        }
        enc[i] = (bd_output_enc_t){NULL, in->outputs[i].binary};
        for (size_t k = 0; k < r->n_outputs; k++) {
            if (strcmp(r->outputs[k].name, in->outputs[i].name) == 0) {
                enc[i].tensor = &r->outputs[k];
            }
        }
        if (!enc[i].tensor) { /* validated at submit; kept as a broken-invariant guard */
            return bd_err_set(err, BD_EINVAL, "a requested output is not produced by the model");
        }
        size_t k = in->outputs[i].classification;
        int rc =
            classify && k ? classify_output(call, i, k, enc[i].tensor, &enc[i].tensor, err) : 0;
        if (rc != 0) {
            return rc;
        }
    }
    *n_out = n;
    return 0;
}

/* Whether the reply's JSON outputs are large enough to be encoded off the loop: their text
 * takes a few bytes per tensor byte (so each counts 4 against offload_bytes). */
static bool reply_is_large(bd_call_t *c)
{
    bd_output_enc_t enc[MAX_OUTPUTS];
    size_t n = 0, bytes = 0;
    if (select_outputs(c, enc, &n, false, NULL) != 0) {
        return false;
    }
    /* A reply to be compressed counts its binary bytes too: deflate costs more than the
     * encode, and on the loop it would hold everyone up. */
    bool zip = c->reply_coding != BD_ZIP_IDENTITY;
    for (size_t i = 0; i < n; i++) {
        size_t b = enc[i].tensor->byte_size;
        bytes += enc[i].binary ? (zip ? b / 4 : 0) : b;
    }
    return bytes > c->inf->opts.offload_bytes / 4;
}

/* The owner thread, or the decode thread while the call is there. */
static int encode_reply(bd_call_t *call, bd_buf_t *out, size_t *header_len, bd_err_t *err)
{
    bd_output_enc_t enc[MAX_OUTPUTS];
    size_t n = 0;
    int rc = select_outputs(call, enc, &n, true, err);
    if (rc != 0) {
        return rc;
    }
    if (bd_infer_encode(out, bd_model_name(call->model), bd_model_version(call->model),
                        bd_call_id(call), enc, n, header_len) != 0 ||
        out->failed) {
        return bd_err_set(err, BD_ENOMEM, "out of memory while writing the reply");
    }
    return 0;
}

int bd_call_encode(bd_call_t *call, bd_buf_t *out, size_t *header_len, bd_err_t *err)
{
    bd_req_t *r = call->req;
    if (r->status != 0) {
        bd_err_set(err, r->status, "%s", r->err.msg);
        if (err) {
            err->retry_after_s = r->err.retry_after_s;
        }
        return r->status;
    }
    if (!call->encoded) {
        return encode_reply(call, out, header_len, err);
    }
    if (call->reply_rc != 0) {
        *err = call->reply_err;
        return call->reply_rc;
    }
    *header_len = call->reply_hlen;
    if (out->len == 0) {
        /* Hand the encoded reply over; the call frees what `out` held. */
        bd_buf_t held = *out;
        *out = call->reply;
        call->reply = held;
        return 0;
    }
    bd_buf_append(out, call->reply.data, call->reply.len);
    return out->failed ? bd_err_set(err, BD_ENOMEM, "out of memory while writing the reply") : 0;
}

bd_zip_coding_t bd_call_reply_coding(const bd_call_t *call, size_t *plain_len)
{
    if (!call->encoded || call->reply_rc != 0 || call->reply_coded == BD_ZIP_IDENTITY) {
        return BD_ZIP_IDENTITY;
    }
    if (plain_len) {
        *plain_len = call->reply_plain_len;
    }
    return call->reply_coded;
}

void bd_call_free(bd_call_t *call)
{
    if (!call) {
        return;
    }
    if (call->model) {
        bd_model_unref(call->model);
    }
    if (call->budgeted) {
        call->inf->opts.budget->used -= call->budgeted;
    }
    bd_buf_dispose(&call->reply);
    bd_zip_reader_free(call->zip);
    bd_buf_dispose(&call->plain);
    bd_req_free(call->req); /* frees the call too: it lives in the request's arena */
}

/* ==== raw typed inputs (bd_infer_start_raw; see infer.h) ====================================
 * Kept apart from the KServe paths above: it builds the decoded request (r->in) from the
 * front end's typed inputs and then joins them at submit(), so lookup, readiness, validation,
 * completion and counting are the same code. The bytes are copied into one block the request
 * owns (r->body), as binary tensors are. Owner thread. */

#define RAW_MAX_INPUTS 64
#define RAW_ARENA_BYTES (1u << 20)

static const bd_io_t *raw_model_input(const bd_model_config_t *cfg, const char *name)
{
    for (size_t i = 0; cfg && i < cfg->n_inputs; i++) {
        if (strcmp(cfg->inputs[i].name, name) == 0) {
            return &cfg->inputs[i];
        }
    }
    return NULL;
}

/* Fill in what the front end left to the model (datatype, one row's shape) and check that
 * the bytes fill the shape exactly. The scheduler's validation checks the rest. */
static int raw_input(const bd_model_config_t *cfg, const bd_infer_raw_input_t *in, const void *data,
                     size_t byte_size, bd_tensor_t *t, bd_err_t *err)
{
    const bd_io_t *io = raw_model_input(cfg, in->name);
    if (!io && (in->dtype == BD_DT_INVALID || in->shape.ndim == 0)) {
        return bd_err_set(err, BD_EINVAL, "model '%s' has no input named '%.64s'", cfg->name,
                          in->name);
    }
    /* The input `preprocess` feeds takes encoded images (BYTES, one per row), as its
     * metadata says, unless the front end sends the decoded tensor's datatype. */
    bool image = io && cfg->image.enabled && strcmp(cfg->image.input, io->name) == 0;
    t->dtype = in->dtype != BD_DT_INVALID ? in->dtype : image ? BD_DT_BYTES : io->dtype;
    if (io && !image && bd_sched_check_dtype(io, t->dtype, err) != 0) {
        return BD_EINVAL; /* said before the byte count, which its size would get wrong */
    }
    if (!bd_dtype_supported(t->dtype)) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.64s': datatype %s cannot be sent as raw bytes; expected one "
                          "of BOOL, INT8..INT64, UINT8..UINT64, FP32, FP64, BYTES",
                          in->name, bd_dtype_name(t->dtype));
    }
    char buf[128];
    if (in->shape.ndim == 0 && image && t->dtype == BD_DT_BYTES) {
        t->shape = (bd_shape_t){.ndim = 1, .dims = {1}}; /* one image */
    } else if (in->shape.ndim == 0) {
        bool batched = cfg->max_batch_size > 0;
        if (io->dims.ndim + (batched ? 1 : 0) > BD_MAX_DIMS) {
            return bd_err_set(err, BD_EINVAL, "input '%.64s' has too many dims", in->name);
        }
        t->shape.ndim = 0;
        if (batched) {
            t->shape.dims[t->shape.ndim++] = 1;
        }
        for (int i = 0; i < io->dims.ndim; i++) {
            if (io->dims.dims[i] < 0) {
                return bd_err_set(err, BD_EINVAL,
                                  "input '%.64s' has variable dims %s; the entry must give its "
                                  "shape",
                                  in->name, bd_shape_str(&io->dims, buf, sizeof buf));
            }
            t->shape.dims[t->shape.ndim++] = io->dims.dims[i];
        }
    } else {
        t->shape = in->shape;
    }
    size_t count = 0;
    size_t want = 0;
    int rc = bd_shape_count(&t->shape, SIZE_MAX, &count, err);
    if (rc != 0) {
        return rc;
    }
    if (t->dtype == BD_DT_BYTES) {
        /* Serialized elements (tensor.h): they must be exactly the shape's count. */
        t->byte_size = byte_size;
        return bd_bytes_check(in->name, data, byte_size, count, err);
    }
    if (!bd_mul_size(count, bd_dtype_size(t->dtype), &want) || want != byte_size) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.64s': %zu bytes do not fill shape %s of %s; expected %zu bytes",
                          in->name, byte_size, bd_shape_str(&t->shape, buf, sizeof buf),
                          bd_dtype_name(t->dtype), want);
    }
    t->byte_size = want;
    return 0;
}

/* The bytes input `in` takes in the request's body: one element gets its length prefix. */
static size_t raw_len(const bd_infer_raw_input_t *in)
{
    size_t n;
    return in->element ? (bd_add_size(in->byte_size, BD_BYTES_PREFIX, &n) ? n : SIZE_MAX)
                       : in->byte_size;
}

/* bd_infer_start_raw once the ready model `m` was found. */
static int start_raw(bd_infer_t *inf, bd_model_t *m, const bd_infer_raw_args_t *a,
                     bd_call_done_cb done, bd_call_t **out, bd_err_t *err)
{
    const char *v = a->version ? a->version : "";
    size_t vlen = a->version ? a->version_len : 0;
    int rc = 0;
    bd_model_metrics_t *mm = bd_model_metrics(m);
    const bd_model_config_t *cfg = bd_model_config(m);
    size_t total = 0;
    bool adopt = a->body != NULL; /* the inputs lie back to back in a->body */
    for (size_t i = 0; i < a->n_inputs; i++) {
        adopt = adopt && !a->inputs[i].element &&
                (const char *)a->inputs[i].data == (const char *)a->body + total;
        if (!bd_add_size(total, raw_len(&a->inputs[i]), &total)) {
            total = SIZE_MAX;
        }
    }
    if (a->n_inputs > RAW_MAX_INPUTS) {
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
        return bd_err_set(err, BD_EINVAL, "a request may carry at most %d inputs, got %zu",
                          RAW_MAX_INPUTS, a->n_inputs);
    }
    if (a->max_bytes && total > a->max_bytes) {
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
        return bd_err_set(err, BD_ETOOBIG,
                          "the inputs are %zu bytes together, over the limit of %zu bytes", total,
                          a->max_bytes);
    }
    bd_req_t *r = bd_req_new(RAW_ARENA_BYTES);
    bd_call_t *c = r ? bd_arena_calloc(&r->arena, 1, sizeof *c) : NULL;
    if (c && a->user_size && !(c->user = bd_arena_calloc(&r->arena, 1, a->user_size))) {
        c = NULL;
    }
    bd_tensor_t *ts = c && a->n_inputs ? bd_arena_calloc(&r->arena, a->n_inputs, sizeof *ts) : NULL;
    if (c && ((a->n_inputs && !ts) ||
              !(c->rmodel = bd_arena_strndup(&r->arena, a->model, a->model_len)) ||
              !(c->rversion = bd_arena_strndup(&r->arena, v, vlen)))) {
        c = NULL;
    }
    if (c && total > 0 && !adopt && !(r->body = malloc(total))) {
        c = NULL;
    }
    if (!c) {
        bd_req_free(r);
        return bd_err_set(err, BD_ENOMEM, "out of memory while reading the request");
    }
    if (adopt) {
        r->body = a->body;
    }
    r->body_len = total;
    c->inf = inf;
    c->req = r;
    c->done = done;
    c->protocol = a->protocol;
    c->raw = true;
    c->rmodel_len = a->model_len;
    c->rversion_len = vlen;
    bd_model_ref(m); /* attributes what fails below to the model */
    c->model = m;
    size_t off = 0;
    for (size_t i = 0; i < a->n_inputs && rc == 0; i++) {
        const bd_infer_raw_input_t *in = &a->inputs[i];
        ts[i].name = bd_arena_strndup(&r->arena, in->name, strlen(in->name));
        if (!ts[i].name) {
            rc = bd_err_set(err, BD_ENOMEM, "out of memory while reading the request");
            break;
        }
        size_t len = raw_len(in);
        unsigned char *at = r->body ? (unsigned char *)r->body + off : NULL; /* none: all empty */
        unsigned char *dst = at;
        if (in->element) {
            uint32_t n = (uint32_t)in->byte_size;
            dst[0] = (unsigned char)n, dst[1] = (unsigned char)(n >> 8);
            dst[2] = (unsigned char)(n >> 16), dst[3] = (unsigned char)(n >> 24);
            dst += BD_BYTES_PREFIX;
        }
        if (in->byte_size > 0 && !adopt) {
            memcpy(dst, in->data, in->byte_size);
        }
        rc = raw_input(cfg, in, at, len, &ts[i], err);
        ts[i].data = at;
        off += len;
    }
    if (rc == BD_EINVAL) {
        bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
    }
    if (rc == 0 && a->classification > 0) {
        bd_output_req_t *outs =
            cfg->n_outputs ? bd_arena_calloc(&r->arena, cfg->n_outputs, sizeof *outs) : NULL;
        if (cfg->n_outputs && !outs) {
            rc = bd_err_set(err, BD_ENOMEM, "out of memory while reading the request");
        }
        for (size_t i = 0; rc == 0 && i < cfg->n_outputs; i++) {
            outs[i].name = cfg->outputs[i].name;
            outs[i].classification = a->classification;
        }
        r->in.outputs = outs;
        r->in.n_outputs = cfg->n_outputs;
    }
    if (rc == 0) {
        r->in.inputs = ts;
        r->in.n_inputs = a->n_inputs;
        rc = submit(inf, c, err);
    }
    if (rc != 0) {
        if (adopt) {
            r->body = NULL; /* still the caller's */
        }
        bd_call_free(c);
        return rc;
    }
    inf->inflight++;
    *out = c;
    return 0;
}

int bd_infer_start_raw(bd_infer_t *inf, const bd_infer_raw_args_t *a, bd_call_done_cb done,
                       bd_call_t **out, bd_err_t *err)
{
    bd_model_t *m = NULL;
    int rc = find_ready(inf, a->model, a->model_len, a->version ? a->version : "",
                        a->version ? a->version_len : 0, &m, err);
    return rc != 0 ? rc : start_raw(inf, m, a, done, out, err);
}

int bd_infer_start_image(bd_infer_t *inf, const bd_infer_image_args_t *a, bd_call_done_cb done,
                         bd_call_t **out, bd_err_t *err)
{
    bd_model_t *m = NULL;
    int rc = find_ready(inf, a->model, a->model_len, a->version ? a->version : "",
                        a->version ? a->version_len : 0, &m, err);
    if (rc != 0) {
        return rc;
    }
    const bd_model_config_t *cfg = bd_model_config(m);
    if (!cfg->image.enabled) {
        bd_metrics_request(bd_model_metrics(m), a->protocol, BD_OUTCOME_INVALID);
        char takes[160] = "", dims[96];
        size_t w = 0;
        for (size_t i = 0; i < cfg->n_inputs && w < sizeof takes; i++) {
            int k = snprintf(takes + w, sizeof takes - w, "%s'%.40s' %s %s", i ? ", " : "",
                             cfg->inputs[i].name, bd_dtype_name(cfg->inputs[i].dtype),
                             bd_shape_str(&cfg->inputs[i].dims, dims, sizeof dims));
            w += k > 0 ? (size_t)k : 0;
        }
        return bd_err_set(err, BD_EINVAL,
                          "model '%s' takes no images (its config.json has no \"preprocess\"); "
                          "send a KServe v2 JSON infer request with its inputs (%s)",
                          bd_model_name(m), takes);
    }
    if (a->len > UINT32_MAX) {
        bd_metrics_request(bd_model_metrics(m), a->protocol, BD_OUTCOME_INVALID);
        return bd_err_set(err, BD_ETOOBIG, "an image may be at most %u bytes", UINT32_MAX);
    }
    bd_infer_raw_input_t in = {.name = cfg->image.input,
                               .dtype = BD_DT_BYTES,
                               .shape = {.ndim = 1, .dims = {1}},
                               .data = a->data,
                               .byte_size = a->len,
                               .element = true};
    bd_infer_raw_args_t ra = {.protocol = a->protocol,
                              .model = a->model,
                              .model_len = a->model_len,
                              .version = a->version,
                              .version_len = a->version_len,
                              .inputs = &in,
                              .n_inputs = 1,
                              .classification = a->classification,
                              .user_size = a->user_size};
    return start_raw(inf, m, &ra, done, out, err);
}

size_t bd_call_outputs(const bd_call_t *call, const bd_tensor_t **outputs)
{
    if (call->req->status != 0) {
        *outputs = NULL;
        return 0;
    }
    *outputs = call->req->outputs;
    return call->req->n_outputs;
}

const char *bd_call_model_name(const bd_call_t *call)
{
    return call->model ? bd_model_name(call->model) : "";
}

const char *bd_call_model_version(const bd_call_t *call)
{
    return call->model ? bd_model_version(call->model) : "";
}
