/* repo: the model repository. Discovers DIR/<model>/<version>/ folders, reads each model's
 * optional config.json, loads the versions its version policy selects through their backend,
 * and starts one scheduler per loaded version. A model that fails to load stays listed,
 * unavailable, with its reason; it never takes the others down.
 *
 * Models change while the server runs: bd_repo_load and bd_repo_unload (the model repository
 * extension) and, with opts.poll_secs, a periodic rescan that loads added models, unloads
 * removed ones and reloads changed ones. Loading (backend load, sessions, warmup) runs on the
 * repository's own loader thread, which builds complete new version objects off the table;
 * the owner thread then swaps them in (bd_repo_dispatch), so a version is served only once it
 * loaded and warmed up. A replaced or unloaded version stops taking new requests at once,
 * finishes those already queued, and is freed on the loader thread once the last request
 * that referenced it was handed back (bd_model_unref).
 *
 * Threads: bd_repo_open, then every other function except bd_repo_notify_fd on ONE owner
 * thread (the server's event loop; the main thread before it runs): the model table is read and
 * changed only there, without locks. bd_repo_free on that thread after the loop ended. */
#ifndef BD_REPO_H
#define BD_REPO_H

#include "backend/backend.h"
#include "core/core.h"
#include "metrics/metrics.h"
#include "sched/sched.h"

typedef struct bd_repo bd_repo_t;
typedef struct bd_model bd_model_t;

/* ---- a model's configuration (config.json) ----------------------------------------------- */

#define BD_MAX_SPECIFIC_VERSIONS 64

typedef enum { BD_VERSIONS_LATEST = 0, BD_VERSIONS_ALL, BD_VERSIONS_SPECIFIC } bd_version_kind_t;

/* Which version folders of a model the repository loads (config.json's version_policy). */
typedef struct {
    bd_version_kind_t kind;
    int latest; /* BD_VERSIONS_LATEST: how many of the highest versions */
    int64_t versions[BD_MAX_SPECIFIC_VERSIONS]; /* BD_VERSIONS_SPECIFIC, ascending */
    size_t n_versions;
} bd_version_policy_t;

/* config.json's "redis" section: Redis Streams ingest for the model (src/ingest). Plain
 * values only (copied freely, nothing to free). Only `streams` is required. */
#define BD_REDIS_KEY_MAX 256
typedef struct {
    bool enabled;                       /* the section is there */
    char streams[BD_REDIS_KEY_MAX];     /* glob of input stream keys ("frames:*") */
    char group[BD_REDIS_KEY_MAX];       /* consumer group; default "batchd" */
    char results[BD_REDIS_KEY_MAX];     /* result stream; {stream} = the input's key */
    char dead_letter[BD_REDIS_KEY_MAX]; /* dead-letter stream; {stream} as in results */
    int64_t results_maxlen;             /* XADD MAXLEN ~ this; default 100000 */
    int read_count;                     /* XREADGROUP COUNT (per stream); default 32 */
    int block_ms;                       /* XREADGROUP BLOCK; default 100 */
    int64_t claim_idle_ms;              /* XAUTOCLAIM entries idle this long; default 30000 */
    int max_deliveries;                 /* delivered more often: dead-lettered; default 3 */
} bd_redis_config_t;

/* Everything config.json says about one model version, split by the module that acts on it:
 * the backend's part (which owns strings and io arrays), the scheduler's policy and the
 * repository's version policy. One thread at a time: the loader fills it, then it is
 * read-only while the version serves. */
typedef struct {
    bd_model_config_t model;
    bd_sched_policy_t sched;
    bd_version_policy_t version_policy;
    bd_redis_config_t redis;
} bd_config_t;

/* Free what cfg->model owns (not the struct itself); the struct is reusable after. */
void bd_config_dispose(bd_config_t *cfg);

typedef struct {
    bd_metrics_t *metrics;     /* borrowed, may be NULL */
    int poll_secs;             /* > 0: rescan the folder this often and apply what changed */
    uint64_t max_image_pixels; /* images with more pixels are refused; 0: the default */
    /* The owner thread's mailbox: loader results are posted there and applied when the owner
     * drains it. NULL: the repository makes its own, watched through bd_repo_notify_fd. */
    bd_mailbox_t *mailbox;
    /* Asked by bd_repo_open before each model version it loads: true stops loading (the server
     * was told to stop while starting); what was not loaded is left out. NULL: never. */
    bool (*stop_loading)(void);
} bd_repo_opts_t;

/* Scan `dir` and load every model in it (on the calling thread, before it returns), then
 * start the loader thread. Returns NULL with err set only when `dir` itself cannot be read
 * or a thread cannot start; individual model failures are logged and kept as unavailable
 * models. */
bd_repo_t *bd_repo_open(const char *dir, const bd_repo_opts_t *opts, bd_err_t *err);

/* Stop accepting requests on every model (submits fail with BD_ESHUTDOWN); loads asked for
 * from now on fail with BD_ESHUTDOWN and queued ones are answered so. */
void bd_repo_close(bd_repo_t *r);
/* Stop the loader thread, drain every scheduler (their completion callbacks run), unload,
 * free. Every request must have been handed back (bd_model_unref) before. */
void bd_repo_free(bd_repo_t *r);

/* Number of models (folders known to the table) and the default version of the i-th in
 * name order (what bd_repo_find gives without a version). */
size_t bd_repo_count(const bd_repo_t *r);
bd_model_t *bd_repo_at(const bd_repo_t *r, size_t i);

/* Find a model by name and optional version ("" or NULL: the highest loaded version; when
 * none is loaded, an unavailable version object whose reason says why, which a version number
 * also gets when the model has no version at all). Returns BD_ENOTFOUND with "unknown model
 * 'x'" or "model 'x' has no version '7'; it has 1, 3 (unavailable)". The result may be
 * unavailable: check bd_model_ready. The pointer is valid until the next call into the
 * repository returns to the event loop; hold a reference (bd_model_ref) to keep a ready one
 * longer. An unavailable one may be the model's stub, which a reference does not keep: a load
 * that finds the folder gone frees it with the model's entry. */
int bd_repo_find(const bd_repo_t *r, const char *name, size_t name_len, const char *version,
                 size_t version_len, bd_model_t **out, bd_err_t *err);

/* Every version object of model `name` in the table (ready or failed), ascending by version.
 * Writes at most `cap`; returns how many there are. */
size_t bd_repo_versions(const bd_repo_t *r, const char *name, bd_model_t **out, size_t cap);

/* Keep `m` alive (one per request submitted to its scheduler); unref when the request's
 * completion was handled. A version taken out of the table is freed (on the loader thread)
 * when its last reference goes. */
void bd_model_ref(bd_model_t *m);
void bd_model_unref(bd_model_t *m);

/* Called on the owner thread (from bd_repo_dispatch) when a load asked for with
 * bd_repo_load finished: rc 0, or an error code with `msg` saying why. */
typedef void (*bd_repo_done_cb)(void *ctx, int rc, const char *msg);

/* Load (or reload) model `name` on the loader thread with its current files and swap the
 * result in: versions that loaded replace the ones with the same number; a version that
 * failed keeps the old one of that number serving (its reason says the reload failed);
 * versions the policy no longer selects are unloaded. `done` runs once, later. Returns 0, or
 * BD_EINVAL (not a folder name), BD_ESHUTDOWN, BD_ENOMEM; `done` is then never called. */
int bd_repo_load(bd_repo_t *r, const char *name, size_t name_len, bd_repo_done_cb done, void *ctx,
                 bd_err_t *err);

/* Take every version of `name` out of service: new requests fail with "model 'x' is
 * unavailable: it is not loaded ..."; requests already queued finish. A load asked for
 * earlier and still running is discarded when it ends. BD_ENOTFOUND for an unknown model. */
int bd_repo_unload(bd_repo_t *r, const char *name, size_t name_len, bd_err_t *err);

/* Append the repository index as Triton's JSON array: one object per model version,
 * {"name","version","state","reason"}, state READY, UNAVAILABLE, LOADING or UNLOADING; a
 * model with no version object has no "version". `ready_only`: READY rows only. */
void bd_repo_index(const bd_repo_t *r, bool ready_only, bd_buf_t *out);

/* Strict readiness (Triton's --strict-readiness): true when the repository has a model to
 * serve and every version of every such model is READY as the index says it (loaded, warmed
 * up, its circuit breaker closed). A model unloaded through bd_repo_unload and not asked to
 * load since does not count; a model still loading does, as not ready; a version whose reload
 * failed while it keeps serving is READY. When not ready, `why` gets one sentence (the first
 * thing not ready, and how many more) and `rows` the JSON array of index rows of what is not
 * ready (bd_repo_index's shape; `rows` is appended to either way). */
bool bd_repo_ready(const bd_repo_t *r, bd_buf_t *rows, char *why, size_t cap);

/* For a repository with its own mailbox (opts.mailbox NULL): a descriptor that becomes
 * readable when loader results wait; the owner thread then calls bd_repo_dispatch, which
 * applies them (and runs bd_repo_done_cb callbacks). With a shared mailbox, its drain does
 * this. Never blocks. */
int bd_repo_notify_fd(const bd_repo_t *r);
void bd_repo_dispatch(bd_repo_t *r);
/* True while loads asked for with bd_repo_load have not been answered. */
bool bd_repo_busy(const bd_repo_t *r);

const char *bd_model_name(const bd_model_t *m);
/* The version as text ("1"); "" for a model with no version object. */
const char *bd_model_version(const bd_model_t *m);
bool bd_model_ready(const bd_model_t *m);
/* Why the model is unavailable; for a ready version, "" or why its last reload failed. */
const char *bd_model_reason(const bd_model_t *m);
/* The backend's part of the model's config (name, io, max_batch_size, ...); NULL when the
 * model failed before its config was read. */
const bd_model_config_t *bd_model_config(const bd_model_t *m);
/* The whole config.json of the version (scheduler and version policies too); NULL as for
 * bd_model_config. */
const bd_config_t *bd_model_full_config(const bd_model_t *m);
/* The lines of the model folder's labels.txt (read when the version loaded), for the
 * classification extension; NULL and *n = 0 when it has none. Valid while `m` is. */
const char *const *bd_model_labels(const bd_model_t *m, size_t *n);
/* NULL when not ready. */
bd_sched_t *bd_model_sched(const bd_model_t *m);
bd_model_metrics_t *bd_model_metrics(const bd_model_t *m);
/* "onnxruntime_onnx" or "batchd_sim". */
const char *bd_model_platform(const bd_model_t *m);

/* ---- config.json (config.c) ------------------------------------------------------------ */

/* Fill `cfg` (zeroed by the caller, cfg->model's name/version/dir set) from the JSON text of
 * config.json (`json` NULL: no file, defaults only). Unknown keys, wrong types and
 * out-of-range values fail with one sentence naming the key. Defaults: backend onnxruntime,
 * max_batch_size unset (the backend decides), dynamic batching on with max_queue_delay_us 0
 * and max_queue_size 1024, instances 1, threads_per_instance 1 for a model file under 1 MiB
 * and cores / instances (at least 1) otherwise, and for sim max_batch_size 0. On failure
 * cfg may hold part of what was read: bd_config_dispose it either way. */
int bd_config_parse(bd_config_t *cfg, const char *json, size_t len, bd_err_t *err);

#endif
