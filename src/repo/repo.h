/* repo: the model repository. Discovers DIR/<model>/<version>/ folders, reads each model's
 * optional config.json, loads the newest version through its backend, and starts its
 * scheduler. A model that fails to load stays listed, unavailable, with its reason; it never
 * takes the others down.
 *
 * Threads: bd_repo_open and bd_repo_free on the main thread. After open, the set of models is
 * fixed and read-only, so lookups (bd_repo_find, accessors) are safe from any thread without
 * a lock. */
#ifndef BD_REPO_H
#define BD_REPO_H

#include "backend/backend.h"
#include "core/core.h"
#include "metrics/metrics.h"
#include "sched/sched.h"

typedef struct bd_repo bd_repo_t;
typedef struct bd_model bd_model_t;

typedef struct {
    bd_metrics_t *metrics; /* borrowed, may be NULL */
} bd_repo_opts_t;

/* Scan `dir` and load every model in it. Returns NULL with err set only when `dir` itself
 * cannot be read; individual model failures are logged and kept as unavailable models. */
bd_repo_t *bd_repo_open(const char *dir, const bd_repo_opts_t *opts, bd_err_t *err);

/* Stop accepting requests on every model (submits fail with BD_ESHUTDOWN). */
void bd_repo_close(bd_repo_t *r);
/* Close, drain every scheduler (their completion callbacks run), unload, free. */
void bd_repo_free(bd_repo_t *r);

size_t bd_repo_count(const bd_repo_t *r);
bd_model_t *bd_repo_at(const bd_repo_t *r, size_t i);

/* Find a model by name and optional version ("" or NULL: the loaded one). Returns
 * BD_ENOTFOUND with "unknown model 'x'" or "model 'x' has no version 7; it has 1". The
 * result may be unavailable: check bd_model_ready. */
int bd_repo_find(const bd_repo_t *r, const char *name, size_t name_len, const char *version,
                 size_t version_len, bd_model_t **out, bd_err_t *err);

const char *bd_model_name(const bd_model_t *m);
/* The loaded version as text ("1"); the highest version folder when none loaded. */
const char *bd_model_version(const bd_model_t *m);
bool bd_model_ready(const bd_model_t *m);
/* Why the model is unavailable ("" when ready). */
const char *bd_model_reason(const bd_model_t *m);
/* NULL when the model failed before its config was read. */
const bd_model_config_t *bd_model_config(const bd_model_t *m);
/* NULL when not ready. */
bd_sched_t *bd_model_sched(const bd_model_t *m);
bd_model_metrics_t *bd_model_metrics(const bd_model_t *m);
/* "onnxruntime_onnx" or "batchd_sim". */
const char *bd_model_platform(const bd_model_t *m);

/* ---- config.json (config.c) ------------------------------------------------------------ */

/* Fill `cfg` (zeroed by the caller, name/version/dir set) from the JSON text of config.json
 * (`json` NULL: no file, defaults only). Unknown keys, wrong types and out-of-range values
 * fail with one sentence naming the key. Defaults: backend onnxruntime, max_batch_size
 * unset (the backend decides), dynamic batching on with max_queue_delay_us 0 and
 * max_queue_size 1024, instances 1, threads_per_instance 1 for a model file under 1 MiB and
 * cores / instances (at least 1) otherwise,
 * and for sim max_batch_size 0. */
int bd_config_parse(bd_model_config_t *cfg, const char *json, size_t len, bd_err_t *err);

#endif
