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
 * Threads: the owner thread, except on_sched_done (any thread; touches only the mailbox). */
#include "infer/infer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"
#include "tensor/tensor.h"

#define MAX_OUTPUTS 64

struct bd_infer {
    bd_repo_t *repo;
    bd_mailbox_t *mailbox;
    size_t inflight;
};

struct bd_call {
    bd_mail_t mail; /* posted once, by the scheduler's completion */
    bd_infer_t *inf;
    bd_model_t *model; /* referenced until bd_call_free */
    bd_req_t *req;     /* owns this call (it lives in req's arena) */
    bd_call_done_cb done;
    void *user; /* user_size bytes in the arena, or NULL */
};

bd_infer_t *bd_infer_new(bd_repo_t *repo, bd_mailbox_t *mailbox)
{
    bd_infer_t *inf = calloc(1, sizeof *inf);
    if (inf) {
        inf->repo = repo;
        inf->mailbox = mailbox;
    }
    return inf;
}

void bd_infer_free(bd_infer_t *inf)
{
    free(inf);
}

size_t bd_infer_inflight(const bd_infer_t *inf)
{
    return inf->inflight;
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

static void on_mail(bd_mail_t *mail)
{
    bd_call_t *c = BD_CONTAINER_OF(mail, bd_call_t, mail);
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

/* The model named by the route and/or the decoded request. */
static int resolve_model(bd_infer_t *inf, const bd_infer_args_t *a, const bd_infer_req_t *in,
                         bd_model_t **m, bd_err_t *err)
{
    if (!a->body_names_model) {
        return 0; /* found from the route before decoding */
    }
    if (*m) {
        int rc = check_ready(*m, err); /* after decoding, so the error carries the id */
        if (rc != 0) {
            return rc;
        }
        if (in->model_name && !names_equal(a->model, a->model_len, in->model_name)) {
            return bd_err_set(
                err, BD_EINVAL, "\"model_name\" is '%.64s' but this stream serves model '%.*s'",
                in->model_name, (int)(a->model_len > 64 ? 64 : a->model_len), a->model);
        }
        if (in->model_version && a->version_len &&
            !names_equal(a->version, a->version_len, in->model_version)) {
            return bd_err_set(err, BD_EINVAL,
                              "\"model_version\" is '%.24s' but this stream serves version '%.*s'",
                              in->model_version, (int)(a->version_len > 24 ? 24 : a->version_len),
                              a->version);
        }
        if (in->model_version && !a->version_len &&
            strcmp(in->model_version, bd_model_version(*m)) != 0) {
            /* The path named no version: the request may pick one of the model. */
            return find_ready(inf, a->model, a->model_len, in->model_version,
                              strlen(in->model_version), m, err);
        }
        return 0;
    }
    if (!in->model_name || !*in->model_name) {
        return bd_err_set(err, BD_EINVAL,
                          "the request does not name its model: set \"model_name\" (or use "
                          "/v2/models/{model}/stream)");
    }
    const char *v = in->model_version ? in->model_version : "";
    return find_ready(inf, in->model_name, strlen(in->model_name), v, strlen(v), m, err);
}

static void copy_err_id(const bd_infer_args_t *a, const char *id)
{
    if (a->err_id && a->err_id_cap) {
        snprintf(a->err_id, a->err_id_cap, "%s", id ? id : "");
    }
}

int bd_infer_start(bd_infer_t *inf, const bd_infer_args_t *a, bd_call_done_cb done, bd_call_t **out,
                   bd_err_t *err)
{
    copy_err_id(a, NULL);
    bd_model_t *m = NULL;
    int rc;
    if (a->model) {
        /* The route's model is found first (its metrics count what fails to decode); front
         * ends whose requests carry names (body_names_model) check readiness after decoding,
         * so their error replies carry the request's id. */
        rc = bd_repo_find(inf->repo, a->model, a->model_len, a->version, a->version_len, &m, err);
        if (rc == 0 && !a->body_names_model) {
            rc = check_ready(m, err);
        }
        if (rc != 0) {
            return rc;
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
    /* Decoded JSON data can take up to 8 bytes per 2 body bytes; bound the arena by that. */
    size_t len = a->len;
    size_t limit = len < (SIZE_MAX - (1u << 20)) / 8 ? len * 8 + (1u << 20) : SIZE_MAX;
    bd_req_t *r = bd_req_new(limit);
    bd_call_t *c = r ? bd_arena_calloc(&r->arena, 1, sizeof *c) : NULL;
    if (c && a->user_size && !(c->user = bd_arena_calloc(&r->arena, 1, a->user_size))) {
        c = NULL;
    }
    const char *body = a->body;
    if (c && a->header_len < len) {
        /* Binary tensors point into the body, which must outlive the front end's buffer. */
        r->body = malloc(len);
        if (r->body) {
            memcpy(r->body, a->body, len);
            r->body_len = len;
            body = r->body;
        }
    }
    if (!c || (a->header_len < len && !r->body)) {
        bd_req_free(r);
        return bd_err_set(err, BD_ENOMEM, "out of memory while reading the request");
    }
    bd_decode_limits_t limits = {0};
    rc = bd_infer_decode(body, len, a->header_len, &r->arena, &limits, &r->in, err);
    copy_err_id(a, r->in.id);
    if (rc == 0) {
        rc = resolve_model(inf, a, &r->in, &m, err);
        mm = m ? bd_model_metrics(m) : NULL;
    }
    if (rc != 0) {
        if (rc == BD_EINVAL || rc == BD_ETOOBIG) {
            bd_metrics_request(mm, a->protocol, BD_OUTCOME_INVALID);
        }
        bd_req_free(r);
        return rc;
    }
    c->inf = inf;
    c->model = m;
    c->req = r;
    c->done = done;
    c->mail.cb = on_mail;
    r->done = on_sched_done;
    r->done_ctx = c;
    r->protocol = a->protocol;
    rc = bd_sched_submit(bd_model_sched(m), r, err);
    if (rc != 0) {
        bd_req_free(r);
        return rc;
    }
    bd_model_ref(m);
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
    return call->req->in.id;
}

int bd_call_set_id(bd_call_t *call, const char *id)
{
    char *copy = bd_arena_strndup(&call->req->arena, id, strlen(id));
    if (!copy) {
        return BD_ENOMEM;
    }
    call->req->in.id = copy;
    return 0;
}

int bd_call_encode(bd_call_t *call, bd_buf_t *out, size_t *header_len, bd_err_t *err)
{
    bd_req_t *r = call->req;
    if (r->status != 0) {
        return bd_err_set(err, r->status, "%s", r->err.msg);
    }
    const bd_infer_req_t *in = &r->in;
    size_t n = in->n_outputs ? in->n_outputs : r->n_outputs;
    if (n > MAX_OUTPUTS) {
        return bd_err_set(err, BD_EINVAL, "a request may ask for at most %d outputs", MAX_OUTPUTS);
    }
    bd_output_enc_t enc[MAX_OUTPUTS];
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
    }
    if (bd_infer_encode(out, bd_model_name(call->model), bd_model_version(call->model), in->id, enc,
                        n, header_len) != 0 ||
        out->failed) {
        return bd_err_set(err, BD_ENOMEM, "out of memory while writing the reply");
    }
    return 0;
}

void bd_call_free(bd_call_t *call)
{
    if (!call) {
        return;
    }
    bd_model_unref(call->model);
    bd_req_free(call->req); /* frees the call too: it lives in the request's arena */
}
