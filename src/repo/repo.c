/* repo.c: discovers and loads the model repository (see repo.h).
 *
 * Every model folder becomes a bd_model_t, ready or not: a model that fails anywhere (bad
 * config, missing file, backend error, ONNX Runtime missing) keeps its reason for the
 * metadata and infer endpoints. Only the highest numeric version folder is loaded (a version
 * policy comes later). Loading runs on the main thread before the server listens; afterwards
 * the model set is immutable, so request threads read it without locks. */
#include "repo/repo.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX_BYTES (1u << 20)

struct bd_model {
    char *name;
    char version[24];
    bd_model_config_t cfg;
    bool has_cfg;
    const bd_backend_ops_t *ops;
    bd_backend_model_t *bm;
    bd_sched_t *sched;
    bd_model_metrics_t *metrics;
    char reason[BD_ERR_MSG_MAX];
};

struct bd_repo {
    bd_model_t **models;
    size_t n;
};

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) {
        snprintf(p, n, "%s/%s", a, b);
    }
    return p;
}

/* The highest all-digit version folder in `model_dir`, or 0 when there is none. */
static int64_t latest_version(const char *model_dir)
{
    DIR *d = opendir(model_dir);
    if (!d) {
        return 0;
    }
    int64_t best = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        size_t len = strlen(s);
        if (len == 0 || len > 18 || strspn(s, "0123456789") != len) {
            continue;
        }
        char *sub = path_join(model_dir, s);
        int64_t v = strtoll(s, NULL, 10);
        if (sub && is_dir(sub) && v > best) {
            best = v;
        }
        free(sub);
    }
    closedir(d);
    return best;
}

static int load_model(bd_model_t *m, const char *model_dir, bd_metrics_t *metrics, bd_err_t *err)
{
    int64_t version = latest_version(model_dir);
    if (version <= 0) {
        return bd_err_set(err, BD_ENOTFOUND, "no numeric version folder (such as %s/1) was found",
                          model_dir);
    }
    snprintf(m->version, sizeof m->version, "%lld", (long long)version);
    m->metrics = bd_metrics_model(metrics, m->name, m->version);

    bd_model_config_t *cfg = &m->cfg;
    m->has_cfg = true;
    cfg->name = strdup(m->name);
    cfg->version = version;
    cfg->dir = path_join(model_dir, m->version);
    cfg->model_path = cfg->dir ? path_join(cfg->dir, "model.onnx") : NULL;
    char *cfg_path = path_join(model_dir, "config.json");
    if (!cfg->name || !cfg->dir || !cfg->model_path || !cfg_path) {
        free(cfg_path);
        return bd_err_set(err, BD_ENOMEM, "out of memory");
    }
    char *json = NULL;
    size_t json_len = 0;
    struct stat st;
    if (stat(cfg_path, &st) == 0) {
        json = bd_read_file(cfg_path, CONFIG_MAX_BYTES, &json_len, err);
        if (!json) {
            free(cfg_path);
            return err ? err->code : BD_EIO;
        }
    }
    free(cfg_path);
    int rc = bd_config_parse(cfg, json, json_len, err);
    free(json);
    if (rc) {
        return rc;
    }
    m->ops = bd_backend_find(cfg->backend);
    if (strcmp(cfg->backend, "onnxruntime") == 0 && !bd_ort_available()) {
        return bd_err_set(err, BD_EUNAVAIL, "ONNX Runtime is unavailable: %s",
                          bd_ort_unavailable_reason());
    }
    if ((rc = m->ops->load(cfg, &m->bm, err))) {
        return rc;
    }
    bd_sched_opts_t opts = {.metrics = m->metrics};
    m->sched = bd_sched_new(cfg, m->ops, m->bm, &opts, err);
    if (!m->sched) {
        return err ? err->code : BD_EBACKEND;
    }
    return 0;
}

static int cmp_model(const void *a, const void *b)
{
    return strcmp((*(bd_model_t *const *)a)->name, (*(bd_model_t *const *)b)->name);
}

bd_repo_t *bd_repo_open(const char *dir, const bd_repo_opts_t *opts, bd_err_t *err)
{
    DIR *d = opendir(dir);
    if (!d) {
        bd_err_set(err, BD_EIO, "cannot read model repository '%s': %s", dir, strerror(errno));
        return NULL;
    }
    bd_repo_t *r = calloc(1, sizeof *r);
    size_t cap = 0;
    struct dirent *e;
    while (r && (e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char *model_dir = path_join(dir, e->d_name);
        if (!model_dir || !is_dir(model_dir)) {
            free(model_dir);
            continue;
        }
        if (r->n == cap) {
            cap = cap ? cap * 2 : 8;
            bd_model_t **grown = realloc(r->models, cap * sizeof *grown);
            if (!grown) {
                free(model_dir);
                break;
            }
            r->models = grown;
        }
        bd_model_t *m = calloc(1, sizeof *m);
        if (!m || !(m->name = strdup(e->d_name))) {
            free(m);
            free(model_dir);
            break;
        }
        r->models[r->n++] = m;
        free(model_dir);
    }
    closedir(d);
    if (!r) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    if (r->n) {
        qsort(r->models, r->n, sizeof *r->models, cmp_model);
    }
    for (size_t i = 0; i < r->n; i++) {
        bd_model_t *m = r->models[i];
        char *model_dir = path_join(dir, m->name);
        bd_err_t lerr = {0};
        uint64_t t0 = bd_now_us();
        int rc = model_dir ? load_model(m, model_dir, opts ? opts->metrics : NULL, &lerr)
                           : bd_err_set(&lerr, BD_ENOMEM, "out of memory");
        free(model_dir);
        if (rc) {
            snprintf(m->reason, sizeof m->reason, "%s", lerr.msg);
            BD_WARN("repo", "model=%s version=%s state=unavailable reason=\"%s\"", m->name,
                    m->version[0] ? m->version : "-", m->reason);
            continue;
        }
        BD_INFO("repo",
                "model=%s version=%s state=ready backend=%s max_batch_size=%d instances=%d "
                "threads_per_instance=%d load_ms=%.1f",
                m->name, m->version, m->cfg.backend, m->cfg.max_batch_size, m->cfg.instances,
                m->cfg.threads_per_instance, (double)(bd_now_us() - t0) / 1000.0);
    }
    return r;
}

void bd_repo_close(bd_repo_t *r)
{
    for (size_t i = 0; r && i < r->n; i++) {
        if (r->models[i]->sched) {
            bd_sched_close(r->models[i]->sched);
        }
    }
}

void bd_repo_free(bd_repo_t *r)
{
    if (!r) {
        return;
    }
    bd_repo_close(r);
    for (size_t i = 0; i < r->n; i++) {
        bd_model_t *m = r->models[i];
        bd_sched_free(m->sched);
        if (m->bm) {
            m->ops->unload(m->bm);
        }
        if (m->has_cfg) {
            bd_model_config_dispose(&m->cfg);
        }
        free(m->name);
        free(m);
    }
    free(r->models);
    free(r);
}

size_t bd_repo_count(const bd_repo_t *r)
{
    return r->n;
}

bd_model_t *bd_repo_at(const bd_repo_t *r, size_t i)
{
    return i < r->n ? r->models[i] : NULL;
}

int bd_repo_find(const bd_repo_t *r, const char *name, size_t name_len, const char *version,
                 size_t version_len, bd_model_t **out, bd_err_t *err)
{
    for (size_t i = 0; i < r->n; i++) {
        bd_model_t *m = r->models[i];
        if (strlen(m->name) != name_len || memcmp(m->name, name, name_len) != 0) {
            continue;
        }
        if (version && version_len &&
            (strlen(m->version) != version_len || memcmp(m->version, version, version_len))) {
            return bd_err_set(err, BD_ENOTFOUND, "model '%s' has no version '%.*s'; it has %s",
                              m->name, (int)(version_len > 64 ? 64 : version_len), version,
                              m->version[0] ? m->version : "none");
        }
        *out = m;
        return 0;
    }
    return bd_err_set(err, BD_ENOTFOUND, "unknown model '%.*s'",
                      (int)(name_len > 128 ? 128 : name_len), name);
}

const char *bd_model_name(const bd_model_t *m)
{
    return m->name;
}

const char *bd_model_version(const bd_model_t *m)
{
    return m->version;
}

bool bd_model_ready(const bd_model_t *m)
{
    return m->sched != NULL;
}

const char *bd_model_reason(const bd_model_t *m)
{
    return m->reason;
}

const bd_model_config_t *bd_model_config(const bd_model_t *m)
{
    return m->has_cfg ? &m->cfg : NULL;
}

bd_sched_t *bd_model_sched(const bd_model_t *m)
{
    return m->sched;
}

bd_model_metrics_t *bd_model_metrics(const bd_model_t *m)
{
    return m->metrics;
}

const char *bd_model_platform(const bd_model_t *m)
{
    return m->has_cfg && strcmp(m->cfg.backend, "sim") == 0 ? "batchd_sim" : "onnxruntime_onnx";
}
