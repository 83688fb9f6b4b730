/* repo.c: the model repository (see repo.h): discovery, version policy, the model table,
 * the loader thread and the swap.
 *
 * Objects. An entry_t is one model folder known to the table; it holds its version objects
 * (bd_model_t, ascending by version number), each either READY (a running scheduler) or
 * UNAVAILABLE (a reason), and a stub version object returned when it has none (its reason
 * says why: unloaded, loading, a bad config.json). A version object is self-contained (its
 * own name, config, backend model, scheduler, metrics handle), so it can outlive its entry.
 *
 * Threads and ownership.
 * - Owner thread (the event loop; the main thread inside bd_repo_open): the table (entries,
 *   their version arrays, the retired list, every refcount) is read and changed only here,
 *   without locks. Each version object in the table holds one reference; every request
 *   submitted to its scheduler holds another (bd_model_ref/unref).
 * - Loader thread: takes ops from `todo` (under mu): LOAD builds complete new version
 *   objects for one model (config, backend load, bd_sched_new, which runs the warmup) off
 *   the table and puts the op on `done` (under mu, then posts the repository's mail to the
 *   owner's mailbox when it is not posted yet); FREE frees a
 *   retired version object (bd_sched_free joins its workers, so it never runs on the loop).
 *   In poll mode it also rescans the folder every poll_secs and makes LOAD ops for models
 *   whose files changed; `known` (the file signature it last loaded per model) is the
 *   loader's alone.
 * - The swap (apply_load, owner thread): the versions a LOAD built replace all of the
 *   model's versions at once, or, when one of them failed while the model serves, none (a
 *   reload is all or nothing). Replaced versions are retired: their scheduler is closed (new
 *   submits are refused, queued requests still run), they leave the table, and when their
 *   last reference goes they are handed to the loader to be freed. Requests find versions
 *   through the table on the owner thread, so no request can reach a retired version after
 *   the swap. */
#include "repo/repo.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (1u << 20)
#define LABELS_MAX_BYTES (64u << 20) /* labels.txt: far more than any class list needs */
#define MAX_VERSION_FOLDERS 4096
#define MAX_NAME_BYTES 255
/* Bounds on what clients can make the repository hold through the load endpoint. */
#define MAX_MODELS 4096      /* entries in the table (a load may name a folder not seen yet) */
#define MAX_PENDING_LOADS 64 /* load requests queued for the loader thread */

typedef struct entry entry_t;
typedef struct op op_t;

struct bd_model {
    char *name; /* owned */
    char version[24];
    int64_t vnum;
    bd_config_t cfg; /* the scheduler borrows cfg.model and copies cfg.sched */
    bool has_cfg;
    bool absent; /* version_policy.specific names it, but it has no folder */
    const bd_backend_ops_t *ops;
    bd_backend_model_t *bm;
    bd_sched_t *sched;
    bd_model_metrics_t *metrics;
    char *labels_text;   /* owned: labels.txt with each line's end made a NUL; NULL: none */
    const char **labels; /* owned array into labels_text, one per line */
    size_t n_labels;
    char reason[BD_ERR_MSG_MAX];
    /* --- owner thread ------------------------------------------------------------------ */
    bd_repo_t *repo;
    size_t refs;      /* the table's reference + one per request in flight */
    bool retired;     /* out of the table: closed, draining, freed at refs 0 */
    bool stub;        /* embedded in its entry; never refcounted or freed alone */
    bd_model_t *next; /* on repo->retired while retired; on repo->free_list when freeing */
};

struct entry {
    char *name;     /* owned */
    bd_model_t **v; /* ascending by vnum; each holds a table reference */
    size_t n, cap;
    bd_model_t stub; /* name borrowed from the entry; reason says why nothing is served */
    uint64_t gen;    /* bumped by every load or unload asked for */
    uint64_t unload_gen;
    int pending; /* loads asked for and not yet applied */
};

typedef enum { OP_LOAD } op_kind_t;

struct op {
    op_t *next;
    op_kind_t kind;
    char *name; /* owned */
    bool from_poll;
    uint64_t gen;
    bd_repo_done_cb done;
    void *done_ctx;
    /* results, written by the loader */
    int rc;
    char msg[BD_ERR_MSG_MAX];
    bool gone;        /* the model folder does not exist */
    bool no_versions; /* it has no version folder */
    bool cfg_failed;  /* config.json could not be read or parsed: out[0] says why */
    bd_model_t **out; /* new version objects (owned until applied) */
    size_t n_out;
};

typedef struct {
    char *name;
    uint64_t sig;
} known_t;

struct bd_repo {
    char *dir;
    bd_metrics_t *metrics;
    int poll_secs;
    uint64_t max_image_pixels;  /* opts.max_image_pixels, given to every image model */
    bool (*stop_loading)(void); /* opts.stop_loading, until bd_repo_open returns */
    /* --- owner thread ------------------------------------------------------------------ */
    entry_t **e; /* sorted by name */
    size_t n, cap;
    bd_model_t *retired;
    size_t pending; /* bd_repo_load ops not yet answered */
    bool closing;
    /* --- shared, under mu ---------------------------------------------------------------- */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    op_t *todo_head, *todo_tail;
    op_t *done_head, *done_tail;
    bool mail_posted; /* `mail` is in the mailbox: the owner will take done_* */
    bd_model_t *free_list;
    bool stop;             /* bd_repo_free: finish the frees, answer the loads, exit */
    bool shutting;         /* bd_repo_close: answer loads with BD_ESHUTDOWN */
    bd_mailbox_t *mailbox; /* the owner thread's; made here when opts gave none */
    bool own_mailbox;
    bd_mail_t mail;
    bool freeing; /* bd_repo_free: results are dropped, not applied */
    pthread_t loader;
    bool loader_started;
    /* --- loader thread (the opening thread before it starts) ---------------------------- */
    known_t *known;
    size_t n_known, cap_known;
    bd_buf_t bad_links; /* poll mode: the last scan's links to no folder, each name NUL-ended */
};

/* ---- files ------------------------------------------------------------------------------ */

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

/* A version number: 1..18 digits ("007" is 7; list_versions and bd_repo_find want none). */
static bool parse_version(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 18) {
        return false;
    }
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) { /* s need not end at len (a request's path) */
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return v > 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The version folders of `model_dir`, ascending: names of 1..18 digits without a leading
 * zero (Triton ignores "01" too; its files would be looked for under "1"). 0 when there are
 * none, or when the folder cannot be read or a version folder in it not looked at
 * (*read_errno says why; may be NULL). *not_dir (may be NULL): a version's name that is on a
 * file, when one is. */
static size_t list_versions(const char *model_dir, int64_t *out, size_t cap, int *read_errno,
                            int64_t *not_dir)
{
    DIR *d = opendir(model_dir);
    int failed = d ? 0 : errno; /* or why a version folder could not be looked at */
    if (!d) {
        if (read_errno) {
            *read_errno = failed;
        }
        return 0;
    }
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        int64_t v;
        if (e->d_name[0] == '0' || !parse_version(e->d_name, strlen(e->d_name), &v)) {
            continue;
        }
        char *sub = path_join(model_dir, e->d_name);
        struct stat st;
        if (sub && stat(sub, &st) == 0) {
            if (S_ISDIR(st.st_mode)) {
                out[n++] = v;
            } else if (not_dir) {
                *not_dir = v; /* a version's name on a file: worth naming when nothing is found */
            }
        } else if (sub && errno != ENOENT) {
            failed = errno; /* a folder without search permission lists but cannot be entered */
        }
        free(sub);
    }
    closedir(d);
    if (read_errno) {
        *read_errno = n == 0 ? failed : 0;
    }
    qsort(out, n, sizeof *out, cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || out[k - 1] != out[i]) {
            out[k++] = out[i];
        }
    }
    return k;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

static uint64_t fnv_stat(uint64_t h, const char *path)
{
    struct stat st;
    uint64_t f[5] = {0};
    if (path && stat(path, &st) == 0) {
        f[0] = 1;
        f[1] = (uint64_t)st.st_size;
        f[2] = (uint64_t)st.st_mtim.tv_sec;
        f[3] = (uint64_t)st.st_mtim.tv_nsec;
        f[4] = (uint64_t)st.st_ino;
    }
    return fnv(h, f, sizeof f);
}

/* What a model's load depends on: config.json and each version folder's model.onnx (kind,
 * size, modification time, inode). Equal signatures: nothing to reload. */
static uint64_t model_signature(const char *model_dir)
{
    uint64_t h = 1469598103934665603ull;
    char *cfg = path_join(model_dir, "config.json");
    h = fnv_stat(h, cfg);
    free(cfg);
    char *labels = path_join(model_dir, "labels.txt");
    h = fnv_stat(h, labels);
    free(labels);
    int64_t *vs = malloc(MAX_VERSION_FOLDERS * sizeof *vs);
    size_t n = vs ? list_versions(model_dir, vs, MAX_VERSION_FOLDERS, NULL, NULL) : 0;
    for (size_t i = 0; i < n; i++) {
        char num[24], sub[48];
        snprintf(num, sizeof num, "%lld", (long long)vs[i]);
        snprintf(sub, sizeof sub, "%s/model.onnx", num);
        char *p = path_join(model_dir, sub);
        h = fnv(h, &vs[i], sizeof vs[i]);
        h = fnv_stat(h, p);
        free(p);
    }
    free(vs);
    return h;
}

/* ---- version objects -------------------------------------------------------------------- */

static bd_model_t *model_new(const char *name, int64_t vnum)
{
    bd_model_t *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name))) {
        free(m);
        return NULL;
    }
    m->vnum = vnum;
    snprintf(m->version, sizeof m->version, "%lld", (long long)vnum);
    return m;
}

/* Drain and free a version object: joins its workers, so never on the event loop. */
static void model_free(bd_model_t *m)
{
    if (!m) {
        return;
    }
    bd_sched_free(m->sched);
    if (m->bm) {
        m->ops->unload(m->bm);
    }
    if (m->has_cfg) {
        bd_config_dispose(&m->cfg);
    }
    free(m->labels);
    free(m->labels_text);
    free(m->name);
    free(m);
}

/* Read <model_dir>/labels.txt, when there is one, into m->labels: one label per line (a
 * trailing '\r' dropped; the empty line after a final newline is not a label). Loader
 * thread, or the opening thread. */
static int load_labels(bd_model_t *m, const char *model_dir, bd_err_t *err)
{
    char *path = path_join(model_dir, "labels.txt");
    if (!path) {
        return bd_err_set(err, BD_ENOMEM, "out of memory");
    }
    /* O_NONBLOCK: a FIFO nobody writes to would hold the loader (and shutdown) for ever; it
     * is refused below as not a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        free(path);
        return e == ENOENT ? 0
                           : bd_err_set(err, BD_EIO, "cannot read labels.txt of model '%s': %s",
                                        m->name, strerror(e));
    }
    free(path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size > LABELS_MAX_BYTES) {
        fclose(f);
        return bd_err_set(err, BD_EINVAL,
                          "labels.txt of model '%s' is not a regular file of at most %u bytes",
                          m->name, LABELS_MAX_BYTES);
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    size_t got = text ? fread(text, 1, size, f) : 0;
    fclose(f);
    if (!text || got != size) {
        free(text);
        return bd_err_set(err, text ? BD_EIO : BD_ENOMEM, "cannot read labels.txt of model '%s'",
                          m->name);
    }
    text[size] = '\0';
    if (size >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) { /* a UTF-8 BOM is not label 0's */
        memmove(text, text + 3, size - 2);
        size -= 3;
    }
    size_t lines = 0;
    for (size_t i = 0; i < size; i++) {
        lines += text[i] == '\n';
    }
    lines += size > 0 && text[size - 1] != '\n';
    const char **labels = calloc(lines ? lines : 1, sizeof *labels);
    if (!labels) {
        free(text);
        return bd_err_set(err, BD_ENOMEM, "out of memory reading labels.txt of model '%s'",
                          m->name);
    }
    size_t n = 0;
    for (char *p = text; n < lines; n++) {
        char *nl = memchr(p, '\n', size - (size_t)(p - text));
        char *end = nl ? nl : text + size;
        if (end > p && end[-1] == '\r') {
            end[-1] = '\0';
        }
        *end = '\0';
        labels[n] = p;
        p = end + 1;
    }
    m->labels_text = text;
    m->labels = labels;
    m->n_labels = n;
    return 0;
}

/* Load one version: config (from `json`, shared by the versions), labels.txt, backend,
 * scheduler (which runs the warmup). Loader thread, or the opening thread. */
static int load_version(bd_repo_t *r, bd_model_t *m, const char *model_dir, const char *json,
                        size_t json_len, bd_err_t *err)
{
    m->metrics = bd_metrics_model(r->metrics, m->name, m->version);
    bd_model_config_t *cfg = &m->cfg.model;
    m->has_cfg = true;
    cfg->name = strdup(m->name);
    cfg->version = m->vnum;
    cfg->dir = path_join(model_dir, m->version);
    cfg->model_path = cfg->dir ? path_join(cfg->dir, "model.onnx") : NULL;
    if (!cfg->name || !cfg->dir || !cfg->model_path) {
        return bd_err_set(err, BD_ENOMEM, "out of memory");
    }
    int rc = bd_config_parse(&m->cfg, json, json_len, err);
    cfg->image.max_pixels = r->max_image_pixels;
    if (rc || (rc = load_labels(m, model_dir, err))) {
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
    m->sched = bd_sched_new(cfg, &m->cfg.sched, m->ops, m->bm, &opts, err);
    if (!m->sched) {
        return err && err->code ? err->code : BD_EBACKEND;
    }
    bd_metrics_model_info(r->metrics, m->metrics, cfg->placement.device, cfg->placement.provider);
    return 0;
}

static int op_add(op_t *op, bd_model_t *m)
{
    bd_model_t **grown = realloc(op->out, (op->n_out + 1) * sizeof *grown);
    if (!grown) {
        return BD_ENOMEM;
    }
    op->out = grown;
    op->out[op->n_out++] = m;
    return 0;
}

/* Which of the folders `vs` (ascending) the policy selects; writes them to `sel` and the
 * specific versions that have no folder to `missing`. */
static void select_versions(const bd_version_policy_t *vp, const int64_t *vs, size_t n,
                            int64_t *sel, size_t *n_sel, int64_t *missing, size_t *n_missing)
{
    *n_sel = 0;
    *n_missing = 0;
    switch (vp->kind) {
    case BD_VERSIONS_ALL:
        memcpy(sel, vs, n * sizeof *vs);
        *n_sel = n;
        break;
    case BD_VERSIONS_SPECIFIC:
        for (size_t i = 0; i < vp->n_versions; i++) {
            int64_t want = vp->versions[i];
            bool found = bsearch(&want, vs, n, sizeof *vs, cmp_i64) != NULL;
            if (found) {
                sel[(*n_sel)++] = want;
            } else {
                missing[(*n_missing)++] = want;
            }
        }
        break;
    default: {
        size_t k = (size_t)(vp->latest > 0 ? vp->latest : 1);
        size_t first = n > k ? n - k : 0;
        memcpy(sel, vs + first, (n - first) * sizeof *vs);
        *n_sel = n - first;
        break;
    }
    }
}

/* A version that loaded. One that did not is logged when its load is applied (apply_load),
 * where it is known whether it goes in as unavailable or a serving version is kept. */
static void log_ready(const bd_model_t *m, uint64_t t0)
{
    BD_INFO("repo",
            "model=%s version=%s state=ready backend=%s max_batch_size=%d instances=%d "
            "threads_per_instance=%d load_ms=%.1f",
            m->name, m->version, m->cfg.model.backend, m->cfg.model.max_batch_size,
            m->cfg.model.instances, m->cfg.model.threads_per_instance,
            (double)(bd_now_us() - t0) / 1000.0);
}

/* A version that failed and goes in as unavailable. Owner thread. */
static void log_unavailable(const bd_model_t *m)
{
    char why[BD_LOG_TEXT_MAX];
    BD_WARN("repo", "model=%s version=%s state=unavailable reason=%s", m->name, m->version,
            bd_log_quoted(why, sizeof why, m->reason));
}

/* Whether loading should stop before the next version: the server is stopping (a signal
 * while bd_repo_open loads, or bd_repo_close since). Loader thread or the opening thread. */
static bool stop_now(bd_repo_t *r)
{
    if (r->stop_loading && r->stop_loading()) {
        return true;
    }
    pthread_mutex_lock(&r->mu);
    bool shutting = r->shutting;
    pthread_mutex_unlock(&r->mu);
    return shutting;
}

/* Build every version the policy selects for model op->name into op->out, or say in
 * op->rc/msg why none can be built. Loader thread (or the opening thread). */
static void load_model(bd_repo_t *r, op_t *op)
{
    bd_err_t err = {0};
    char *mdir = path_join(r->dir, op->name);
    char *cfg_path = mdir ? path_join(mdir, "config.json") : NULL;
    int64_t *vs = malloc(3 * MAX_VERSION_FOLDERS * sizeof *vs);
    char *json = NULL;
    size_t json_len = 0;
    bd_config_t probe = {0};
    if (!mdir || !cfg_path || !vs) {
        op->rc = bd_err_set(&err, BD_ENOMEM, "out of memory");
        goto done;
    }
    if (!is_dir(mdir)) {
        op->gone = true;
        op->rc =
            bd_err_set(&err, BD_ENOTFOUND, "the repository has no model folder '%s'", op->name);
        goto done;
    }
    int64_t *sel = vs + MAX_VERSION_FOLDERS, *missing = vs + 2 * MAX_VERSION_FOLDERS;
    int read_errno = 0;
    int64_t not_dir = -1;
    size_t n = list_versions(mdir, vs, MAX_VERSION_FOLDERS, &read_errno, &not_dir);
    if (n == 0) {
        op->no_versions = true;
        op->rc = read_errno ? bd_err_set(&err, BD_EIO, "cannot read the model folder %s: %s", mdir,
                                         strerror(read_errno))
                 : not_dir > 0 ? bd_err_set(&err, BD_ENOTFOUND,
                                            "no numeric version folder was found: %s/%lld is a "
                                            "file, not a folder",
                                            mdir, (long long)not_dir)
                               : bd_err_set(&err, BD_ENOTFOUND,
                                            "no numeric version folder (such as %s/1: 1 to 18 "
                                            "digits without a leading zero) was found",
                                            mdir);
        goto done;
    } /* The policy is in config.json: parse it once, as the highest version's config, before
       * choosing the versions. When that fails, the highest version stands for the model, with
       * the reason and whatever of the config was read. */
    struct stat st;
    char num[24];
    snprintf(num, sizeof num, "%lld", (long long)vs[n - 1]);
    probe.model.name = strdup(op->name);
    probe.model.version = vs[n - 1];
    probe.model.dir = path_join(mdir, num);
    probe.model.model_path = probe.model.dir ? path_join(probe.model.dir, "model.onnx") : NULL;
    if (!probe.model.name || !probe.model.dir || !probe.model.model_path) {
        op->rc = bd_err_set(&err, BD_ENOMEM, "out of memory");
        goto done;
    }
    bool read_failed = stat(cfg_path, &st) == 0 &&
                       !(json = bd_read_file(cfg_path, CONFIG_MAX_BYTES, &json_len, &err));
    if (read_failed) {
        op->rc = err.code ? err.code : BD_EIO;
    } else {
        op->rc = bd_config_parse(&probe, json, json_len, &err);
    }
    if (op->rc) {
        op->cfg_failed = true;
        bd_model_t *m = model_new(op->name, vs[n - 1]);
        if (m && op_add(op, m) == 0) {
            snprintf(m->reason, sizeof m->reason, "%s", err.msg);
            if (!read_failed) {
                m->cfg = probe;
                m->has_cfg = true;
                memset(&probe, 0, sizeof probe);
            }
        } else {
            model_free(m);
        }
        goto done;
    }
    size_t n_sel, n_missing;
    select_versions(&probe.version_policy, vs, n, sel, &n_sel, missing, &n_missing);
    for (size_t i = 0; i < n_missing; i++) {
        bd_model_t *m = model_new(op->name, missing[i]);
        if (!m || op_add(op, m)) {
            model_free(m);
            op->rc = bd_err_set(&err, BD_ENOMEM, "out of memory");
            goto done;
        }
        m->absent = true;
        snprintf(m->reason, sizeof m->reason,
                 "version_policy.specific names version %s, but %s/%s does not exist", m->version,
                 mdir, m->version);
    }
    for (size_t i = 0; i < n_sel && !stop_now(r); i++) {
        bd_model_t *m = model_new(op->name, sel[i]);
        if (!m || op_add(op, m)) {
            model_free(m);
            op->rc = bd_err_set(&err, BD_ENOMEM, "out of memory");
            goto done;
        }
        m->repo = r;
        bd_err_t lerr = {0};
        uint64_t t0 = bd_now_us();
        if (load_version(r, m, mdir, json, json_len, &lerr)) {
            snprintf(m->reason, sizeof m->reason, "%s", lerr.msg);
        } else {
            log_ready(m, t0);
        }
    }
    if (op->n_out == 0 && stop_now(r)) {
        op->rc = bd_err_set(&err, BD_ESHUTDOWN, "the server is shutting down");
    } else if (op->n_out == 0) {
        op->rc = bd_err_set(&err, BD_ENOTFOUND, "the version policy selects no version folder");
    }
done:
    if (op->rc) {
        snprintf(op->msg, sizeof op->msg, "%s", err.msg);
    }
    bd_config_dispose(&probe); /* what it holds, also when a strdup above failed */
    free(json);
    free(vs);
    free(cfg_path);
    free(mdir);
}

/* ---- the table (owner thread) ----------------------------------------------------------- */

static entry_t *entry_find(const bd_repo_t *r, const char *name, size_t len, size_t *pos)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *en = r->e[mid]->name;
        size_t elen = strlen(en);
        int c = memcmp(en, name, elen < len ? elen : len);
        if (c == 0) {
            c = (elen > len) - (elen < len);
        }
        if (c == 0) {
            if (pos) {
                *pos = mid;
            }
            return r->e[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (pos) {
        *pos = lo;
    }
    return NULL;
}

static entry_t *entry_get(bd_repo_t *r, const char *name, size_t len)
{
    size_t pos;
    entry_t *e = entry_find(r, name, len, &pos);
    if (e) {
        return e;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        entry_t **grown = realloc(r->e, cap * sizeof *grown);
        if (!grown) {
            return NULL;
        }
        r->e = grown;
        r->cap = cap;
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->name = strndup(name, len))) {
        free(e);
        return NULL;
    }
    e->stub.name = e->name;
    e->stub.stub = true;
    e->stub.repo = r;
    memmove(r->e + pos + 1, r->e + pos, (r->n - pos) * sizeof *r->e);
    r->e[pos] = e;
    r->n++;
    return e;
}

static void entry_remove(bd_repo_t *r, entry_t *e)
{
    size_t pos;
    if (entry_find(r, e->name, strlen(e->name), &pos) != e) {
        return;
    }
    memmove(r->e + pos, r->e + pos + 1, (r->n - pos - 1) * sizeof *r->e);
    r->n--;
    free(e->v);
    free(e->name);
    free(e);
}

/* Hand a version object to the loader to be freed. */
static void post_free(bd_repo_t *r, bd_model_t *m)
{
    pthread_mutex_lock(&r->mu);
    m->next = r->free_list;
    r->free_list = m;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void retired_unlink(bd_repo_t *r, bd_model_t *m)
{
    for (bd_model_t **pp = &r->retired; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            m->next = NULL;
            return;
        }
    }
}

/* Take `m` out of service: new submits are refused, queued requests still run; freed when
 * its last reference goes. The caller removes it from its entry. */
static void retire(bd_repo_t *r, bd_model_t *m)
{
    if (m->sched) {
        bd_sched_close(m->sched);
    }
    m->retired = true;
    m->next = r->retired;
    r->retired = m;
    BD_INFO("repo", "model=%s version=%s state=unloading inflight=%zu", m->name, m->version,
            m->refs - 1);
    bd_model_unref(m);
}

static void entry_retire_all(bd_repo_t *r, entry_t *e)
{
    for (size_t i = 0; i < e->n; i++) {
        retire(r, e->v[i]);
    }
    e->n = 0;
}

static void set_stub_reason(entry_t *e, const char *reason)
{
    snprintf(e->stub.reason, sizeof e->stub.reason, "%s", reason);
}

static int entry_index_of(const entry_t *e, int64_t vnum)
{
    for (size_t i = 0; i < e->n; i++) {
        if (e->v[i]->vnum == vnum) {
            return (int)i;
        }
    }
    return -1;
}

/* Put `m` in `e` at its version's place; the table takes a reference. */
static int entry_insert(entry_t *e, bd_model_t *m)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        bd_model_t **grown = realloc(e->v, cap * sizeof *grown);
        if (!grown) {
            return BD_ENOMEM;
        }
        e->v = grown;
        e->cap = cap;
    }
    size_t i = e->n;
    while (i > 0 && e->v[i - 1]->vnum > m->vnum) {
        e->v[i] = e->v[i - 1];
        i--;
    }
    e->v[i] = m;
    e->n++;
    m->refs = 1;
    return 0;
}

static void discard_results(bd_repo_t *r, op_t *op)
{
    for (size_t i = 0; i < op->n_out; i++) {
        post_free(r, op->out[i]);
    }
    op->n_out = 0;
}

/* Swap the versions a LOAD built into the table (see the file comment). Returns the rc the
 * asker gets; `msg` the reason. */
static int apply_load(bd_repo_t *r, op_t *op, char *msg, size_t cap)
{
    entry_t *e = entry_find(r, op->name, strlen(op->name), NULL);
    if (!op->from_poll && e) {
        e->pending--;
    }
    if (r->closing) {
        discard_results(r, op);
        snprintf(msg, cap, "the server is shutting down");
        return BD_ESHUTDOWN;
    }
    if (e && !op->from_poll && op->gen < e->unload_gen) {
        discard_results(r, op);
        if (op->gone && e->n == 0 && e->pending == 0) {
            entry_remove(r, e); /* a load of a folder that is not there leaves nothing behind */
        }
        snprintf(msg, cap, "model '%s' was unloaded while it loaded", op->name);
        return BD_EBUSY;
    }
    if (op->gone) {
        /* The folder is gone: nothing of it is served any more. */
        if (e) {
            entry_retire_all(r, e);
            if (e->pending == 0) {
                entry_remove(r, e);
            } else {
                set_stub_reason(e, op->msg);
            }
        }
        if (op->from_poll) {
            BD_INFO("repo", "model=%s state=removed", op->name);
        }
        snprintf(msg, cap, "%s", op->msg);
        return op->rc;
    }
    if (!e && !(e = entry_get(r, op->name, strlen(op->name)))) {
        discard_results(r, op);
        snprintf(msg, cap, "out of memory");
        return BD_ENOMEM;
    }
    if (op->cfg_failed || (op->rc && op->n_out == 0)) {
        /* Nothing was built. A bad config keeps what is serving; no version folder at all
         * means there is nothing left to serve. */
        bool serving = false;
        char why[BD_LOG_TEXT_MAX];
        for (size_t i = 0; i < e->n; i++) {
            serving = serving || e->v[i]->sched;
        }
        if (serving && !op->no_versions) {
            for (size_t i = 0; i < e->n; i++) {
                if (e->v[i]->sched) {
                    snprintf(e->v[i]->reason, sizeof e->v[i]->reason,
                             "the last reload failed, so this version still serves: %.440s",
                             op->msg);
                }
            }
            BD_WARN("repo", "model=%s reload=failed kept=serving reason=%s", op->name,
                    bd_log_quoted(why, sizeof why, op->msg));
            discard_results(r, op);
        } else {
            entry_retire_all(r, e);
            set_stub_reason(e, op->msg);
            /* The failed version object (if any) shows the reason in the index. */
            for (size_t i = 0; i < op->n_out; i++) {
                op->out[i]->repo = r;
                log_unavailable(op->out[i]);
                if (entry_insert(e, op->out[i]) != 0) {
                    post_free(r, op->out[i]);
                }
            }
            if (op->n_out == 0) {
                BD_WARN("repo", "model=%s state=unavailable reason=%s", op->name,
                        bd_log_quoted(why, sizeof why, op->msg));
            }
            op->n_out = 0;
        }
        snprintf(msg, cap, "%s", op->msg);
        return op->rc;
    }
    /* A reload is all or nothing, as Triton's: when a version it built failed while the model
     * serves, every serving version stays as it was (a new version folder still being
     * copied must not take the model down) and nothing new goes in. A version
     * version_policy.specific names without a folder built nothing: it is reported, but does
     * not hold back the versions that did build (while it stays away, every reload would
     * fail). */
    bool serving = false, built = false;
    bd_model_t *failed = NULL, *absent = NULL;
    msg[0] = '\0';
    for (size_t i = 0; i < e->n; i++) {
        serving = serving || e->v[i]->sched;
    }
    for (size_t i = 0; i < op->n_out; i++) {
        bd_model_t *o = op->out[i];
        built = built || o->sched;
        if (!o->sched && o->absent) {
            absent = absent ? absent : o;
        } else if (!o->sched) {
            failed = failed ? failed : o;
        }
    }
    const bd_model_t *named = failed ? failed : absent;
    if (named) {
        snprintf(msg, cap, "version %s: %.440s", named->version, named->reason);
    }
    /* Nothing built at all (every version named is absent: config.json written before the
     * folder is renamed in) keeps what serves too. */
    if (serving && (failed || !built)) {
        for (size_t i = 0; i < e->n; i++) {
            if (e->v[i]->sched) {
                snprintf(e->v[i]->reason, sizeof e->v[i]->reason,
                         "the last reload failed, so this version still serves: %.440s", msg);
            }
        }
        char why[BD_LOG_TEXT_MAX];
        BD_WARN("repo", "model=%s reload=failed kept=serving reason=%s", op->name,
                bd_log_quoted(why, sizeof why, msg));
        discard_results(r, op);
        return BD_EUNAVAIL;
    }
    /* Retire the old versions and put the new ones in (failed ones as unavailable rows). */
    entry_retire_all(r, e);
    for (size_t i = 0; i < op->n_out; i++) {
        op->out[i]->repo = r;
        if (!op->out[i]->sched) {
            log_unavailable(op->out[i]);
        }
        if (entry_insert(e, op->out[i]) != 0) {
            /* Out of memory growing a handful of pointers: give the version up. */
            op->out[i]->refs = 1;
            retire(r, op->out[i]);
        }
    }
    op->n_out = 0;
    e->stub.reason[0] = '\0';
    return named ? BD_EUNAVAIL : 0;
}

/* The loader posted results (owner thread, from the mailbox): apply them in order. */
static void op_free(op_t *op);

static void on_mail(bd_mail_t *mail)
{
    bd_repo_t *r = BD_CONTAINER_OF(mail, bd_repo_t, mail);
    pthread_mutex_lock(&r->mu);
    op_t *list = r->done_head;
    r->done_head = r->done_tail = NULL;
    r->mail_posted = false;
    pthread_mutex_unlock(&r->mu);
    while (list) {
        op_t *op = list;
        list = op->next;
        char msg[BD_ERR_MSG_MAX];
        int rc = r->freeing ? BD_ESHUTDOWN : apply_load(r, op, msg, sizeof msg);
        if (!op->from_poll) {
            r->pending--;
        }
        if (op->done && !r->freeing) {
            op->done(op->done_ctx, rc, msg);
        }
        op_free(op);
    }
}

/* ---- the loader thread ------------------------------------------------------------------ */

static void post_done(bd_repo_t *r, op_t *op)
{
    pthread_mutex_lock(&r->mu);
    op->next = NULL;
    if (r->done_tail) {
        r->done_tail->next = op;
    } else {
        r->done_head = op;
    }
    r->done_tail = op;
    bool post = !r->mail_posted;
    r->mail_posted = true;
    pthread_mutex_unlock(&r->mu);
    if (post) {
        bd_mailbox_post(r->mailbox, &r->mail);
    }
}

static known_t *known_find(bd_repo_t *r, const char *name)
{
    for (size_t i = 0; i < r->n_known; i++) {
        if (strcmp(r->known[i].name, name) == 0) {
            return &r->known[i];
        }
    }
    return NULL;
}

static void known_set(bd_repo_t *r, const char *name, uint64_t sig)
{
    known_t *k = known_find(r, name);
    if (k) {
        k->sig = sig;
        return;
    }
    if (r->n_known == r->cap_known) {
        size_t cap = r->cap_known ? r->cap_known * 2 : 16;
        known_t *grown = realloc(r->known, cap * sizeof *grown);
        if (!grown) {
            return; /* forgotten: the next scan loads it again */
        }
        r->known = grown;
        r->cap_known = cap;
    }
    char *dup = strdup(name);
    if (dup) {
        r->known[r->n_known++] = (known_t){dup, sig};
    }
}

static void known_drop(bd_repo_t *r, const char *name)
{
    known_t *k = known_find(r, name);
    if (k) {
        free(k->name);
        *k = r->known[--r->n_known];
    }
}

static op_t *op_new(const char *name, size_t len)
{
    op_t *op = calloc(1, sizeof *op);
    if (op && !(op->name = strndup(name, len))) {
        free(op);
        op = NULL;
    }
    return op;
}

static void op_free(op_t *op)
{
    for (size_t i = 0; i < op->n_out; i++) {
        model_free(op->out[i]);
    }
    free(op->out);
    free(op->name);
    free(op);
}

/* Whether s[0..len) is UTF-8 text without control characters: a name that JSON replies, the
 * metrics' labels and the logs show as it is (two names that differ only in invalid bytes
 * would show as one). */
static bool name_text_ok(const char *s, size_t len)
{
    for (size_t i = 0, n = 0; i < len; i += n) {
        int32_t c = bd_utf8_decode((const unsigned char *)s + i, len - i, &n);
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    return true;
}

/* A model folder name: what readdir lists and a client may name. */
static bool folder_name_ok(const char *s, size_t len)
{
    return len > 0 && len <= MAX_NAME_BYTES && s[0] != '.' && !memchr(s, '/', len) &&
           name_text_ok(s, len);
}

/* Whether dir/name is a folder (or a link to one). A symbolic link that leads to no folder
 * (dangling, looping, or to a file), which would otherwise be skipped unseen, sets *bad_link
 * and is logged when `warn`. */
static bool model_folder(const char *dir, const char *name, bool warn, bool *bad_link)
{
    char *p = path_join(dir, name);
    struct stat st;
    int rc = p ? stat(p, &st) : -1;
    int why = errno;
    bool ok = rc == 0 && S_ISDIR(st.st_mode);
    *bad_link = !ok && p && lstat(p, &st) == 0 && S_ISLNK(st.st_mode);
    if (*bad_link && warn) {
        BD_WARN("repo", "model=%s skipped: a symbolic link to no folder (%s)", name,
                rc == 0 ? "not a folder" : strerror(why));
    }
    free(p);
    return ok;
}

/* Whether `name` is one of the NUL-ended names in `list`. */
static bool name_listed(const bd_buf_t *list, const char *name)
{
    for (size_t off = 0; off < list->len; off += strlen(list->data + off) + 1) {
        if (strcmp(list->data + off, name) == 0) {
            return true;
        }
    }
    return false;
}

/* Poll mode: load what is new or changed, report what is gone. Loader thread. */
static void scan(bd_repo_t *r)
{
    DIR *d = opendir(r->dir);
    if (!d) {
        BD_WARN("repo", "scan failed dir=%s reason=\"%s\"", r->dir, strerror(errno));
        return;
    }
    char **seen = NULL;
    size_t n_seen = 0, cap_seen = 0;
    struct dirent *de;
    bd_buf_t bad_links; /* this scan's: a link warned about once, again if it goes and returns */
    bd_buf_init(&bad_links);
    while ((de = readdir(d))) {
        bool bad_link = false;
        if (!folder_name_ok(de->d_name, strlen(de->d_name)) ||
            !model_folder(r->dir, de->d_name, !name_listed(&r->bad_links, de->d_name), &bad_link)) {
            if (bad_link) {
                bd_buf_append(&bad_links, de->d_name, strlen(de->d_name) + 1);
            }
            continue;
        }
        if (n_seen == cap_seen) {
            cap_seen = cap_seen ? cap_seen * 2 : 16;
            char **grown = realloc(seen, cap_seen * sizeof *grown);
            if (!grown) {
                break;
            }
            seen = grown;
        }
        seen[n_seen] = strdup(de->d_name);
        if (seen[n_seen]) {
            n_seen++;
        }
    }
    closedir(d);
    bd_buf_dispose(&r->bad_links);
    r->bad_links = bad_links;
    for (size_t i = 0; i < n_seen; i++) {
        char *mdir = path_join(r->dir, seen[i]);
        uint64_t sig = mdir ? model_signature(mdir) : 0;
        free(mdir);
        known_t *k = known_find(r, seen[i]);
        if (k && k->sig == sig) {
            continue;
        }
        op_t *op = op_new(seen[i], strlen(seen[i]));
        if (!op) {
            continue;
        }
        op->from_poll = true;
        BD_INFO("repo", "model=%s change=%s", seen[i], k ? "changed" : "added");
        load_model(r, op);
        known_set(r, seen[i], sig);
        post_done(r, op);
    }
    for (size_t i = r->n_known; i-- > 0;) {
        bool present = false;
        for (size_t j = 0; j < n_seen && !present; j++) {
            present = strcmp(seen[j], r->known[i].name) == 0;
        }
        if (!present) {
            op_t *op = op_new(r->known[i].name, strlen(r->known[i].name));
            if (op) {
                op->from_poll = true;
                load_model(r, op); /* finds the folder gone */
                post_done(r, op);
            }
            known_drop(r, r->known[i].name);
        }
    }
    for (size_t i = 0; i < n_seen; i++) {
        free(seen[i]);
    }
    free(seen);
}

static void *loader_main(void *arg)
{
    bd_repo_t *r = arg;
    uint64_t period_us = (uint64_t)r->poll_secs * 1000000u;
    uint64_t next_scan = r->poll_secs > 0 ? bd_now_us() + period_us : UINT64_MAX;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->free_list) {
            bd_model_t *list = r->free_list;
            r->free_list = NULL;
            pthread_mutex_unlock(&r->mu);
            while (list) {
                bd_model_t *m = list;
                list = m->next;
                if (m->retired) {
                    BD_INFO("repo", "model=%s version=%s state=unloaded", m->name, m->version);
                } else { /* a copy a failed or refused load built: the served one is untouched */
                    BD_DEBUG("repo", "model=%s version=%s state=discarded", m->name, m->version);
                }
                model_free(m);
            }
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (r->todo_head) {
            op_t *op = r->todo_head;
            r->todo_head = op->next;
            if (!r->todo_head) {
                r->todo_tail = NULL;
            }
            bool shutting = r->shutting || r->stop;
            pthread_mutex_unlock(&r->mu);
            if (shutting) {
                op->rc = BD_ESHUTDOWN;
                snprintf(op->msg, sizeof op->msg, "the server is shutting down");
            } else {
                char *mdir = path_join(r->dir, op->name);
                uint64_t sig = mdir ? model_signature(mdir) : 0;
                free(mdir);
                load_model(r, op);
                if (op->gone) {
                    known_drop(r, op->name);
                } else {
                    known_set(r, op->name, sig);
                }
            }
            post_done(r, op);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (r->stop) {
            break;
        }
        uint64_t now = bd_now_us();
        if (now >= next_scan && !r->shutting) {
            pthread_mutex_unlock(&r->mu);
            scan(r);
            next_scan = bd_now_us() + period_us;
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (next_scan == UINT64_MAX || r->shutting) {
            pthread_cond_wait(&r->cv, &r->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wait = next_scan - now;
            ts.tv_sec += (time_t)(wait / 1000000u);
            ts.tv_nsec += (long)(wait % 1000000u) * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- public: lifecycle ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

bd_repo_t *bd_repo_open(const char *dir, const bd_repo_opts_t *opts, bd_err_t *err)
{
    DIR *d = opendir(dir);
    if (!d) {
        bd_err_set(err, BD_EIO, "cannot read model repository '%s': %s", dir, strerror(errno));
        return NULL;
    }
    bd_repo_t *r = calloc(1, sizeof *r);
    char **names = NULL;
    size_t n = 0, cap = 0;
    bool oom = !r || !(r->dir = strdup(dir));
    struct dirent *e;
    while (!oom && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] != '.' && !name_text_ok(e->d_name, len)) {
            char q[BD_LOG_TEXT_MAX];
            BD_WARN("repo",
                    "folder=%s skipped: a model name must be UTF-8 text without control "
                    "characters",
                    bd_log_quoted(q, sizeof q, e->d_name));
        }
        bool bad_link = false;
        if (!folder_name_ok(e->d_name, len) || !model_folder(dir, e->d_name, true, &bad_link)) {
            if (bad_link) { /* warned: the first poll need not say it again */
                bd_buf_append(&r->bad_links, e->d_name, len + 1);
            }
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *grown);
            oom = !grown;
            if (oom) {
                break;
            }
            names = grown;
        }
        oom = !(names[n] = strdup(e->d_name));
        n += !oom;
    }
    closedir(d);
    if (oom) {
        for (size_t i = 0; i < n; i++) {
            free(names[i]);
        }
        free(names);
        if (r) {
            free(r->dir);
        }
        free(r);
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    r->metrics = opts ? opts->metrics : NULL;
    r->poll_secs = opts ? opts->poll_secs : 0;
    r->max_image_pixels = opts ? opts->max_image_pixels : 0;
    r->mailbox = opts ? opts->mailbox : NULL;
    r->stop_loading = opts ? opts->stop_loading : NULL;
    if (!r->mailbox) {
        r->mailbox = bd_mailbox_new(NULL);
        r->own_mailbox = true;
    }
    r->mail.cb = on_mail;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    if (n) {
        qsort(names, n, sizeof *names, cmp_str);
    }
    /* Load everything on this thread (the server is not listening yet), through the same
     * path the loader uses, then apply it to the table. */
    for (size_t i = 0; i < n; i++) {
        op_t *op = r->stop_loading && r->stop_loading() ? NULL : op_new(names[i], strlen(names[i]));
        if (op) {
            char *mdir = path_join(dir, names[i]);
            uint64_t sig = mdir ? model_signature(mdir) : 0;
            free(mdir);
            op->from_poll = true;
            load_model(r, op);
            known_set(r, names[i], sig);
            char msg[BD_ERR_MSG_MAX];
            apply_load(r, op, msg, sizeof msg);
            op_free(op);
        }
        free(names[i]);
    }
    free(names);
    r->stop_loading = NULL; /* the loader thread's loads are answered by the drain */
    if (!r->mailbox || pthread_create(&r->loader, NULL, loader_main, r) != 0) {
        bd_err_set(err, BD_EIO, "cannot start the model loader: %s", strerror(errno));
        bd_repo_free(r);
        return NULL;
    }
    r->loader_started = true;
    return r;
}

void bd_repo_close(bd_repo_t *r)
{
    if (!r) {
        return;
    }
    r->closing = true;
    pthread_mutex_lock(&r->mu);
    r->shutting = true;
    op_t *todo = r->todo_head; /* not started: answered now, not after the one running */
    r->todo_head = r->todo_tail = NULL;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    while (todo) {
        op_t *op = todo;
        todo = op->next;
        op->rc = BD_ESHUTDOWN;
        snprintf(op->msg, sizeof op->msg, "the server is shutting down");
        post_done(r, op);
    }
    for (size_t i = 0; i < r->n; i++) {
        for (size_t k = 0; k < r->e[i]->n; k++) {
            if (r->e[i]->v[k]->sched) {
                bd_sched_close(r->e[i]->v[k]->sched);
            }
        }
    }
}

void bd_repo_free(bd_repo_t *r)
{
    if (!r) {
        return;
    }
    bd_repo_close(r);
    if (r->loader_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->loader, NULL);
    }
    /* Results nobody will apply, versions nobody will free: all of it goes now. A result
     * the loader posted is still in the mailbox: drain it (on_mail drops it). */
    r->freeing = true;
    if (r->mailbox) {
        bd_mailbox_drain(r->mailbox);
    }
    for (op_t *op = r->done_head; op;) {
        op_t *next = op->next;
        op_free(op);
        op = next;
    }
    for (op_t *op = r->todo_head; op;) {
        op_t *next = op->next;
        op_free(op);
        op = next;
    }
    while (r->free_list) {
        bd_model_t *m = r->free_list;
        r->free_list = m->next;
        model_free(m);
    }
    while (r->retired) {
        bd_model_t *m = r->retired;
        r->retired = m->next;
        model_free(m);
    }
    for (size_t i = 0; i < r->n; i++) {
        entry_t *e = r->e[i];
        for (size_t k = 0; k < e->n; k++) {
            model_free(e->v[k]);
        }
        free(e->v);
        free(e->name);
        free(e);
    }
    free(r->e);
    for (size_t i = 0; i < r->n_known; i++) {
        free(r->known[i].name);
    }
    free(r->known);
    bd_buf_dispose(&r->bad_links);
    if (r->own_mailbox) {
        bd_mailbox_free(r->mailbox);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->dir);
    free(r);
}

/* ---- public: live changes (owner thread) ------------------------------------------------ */

int bd_repo_load(bd_repo_t *r, const char *name, size_t name_len, bd_repo_done_cb done, void *ctx,
                 bd_err_t *err)
{
    if (!folder_name_ok(name, name_len)) {
        return bd_err_set(err, BD_EINVAL,
                          "a model name must be a folder name of 1 to %d bytes of UTF-8 text, "
                          "without control characters or '/' and not starting with '.'",
                          MAX_NAME_BYTES);
    }
    if (r->closing) {
        return bd_err_set(err, BD_ESHUTDOWN, "the server is shutting down");
    }
    if (r->pending >= MAX_PENDING_LOADS) {
        return bd_err_set(err, BD_EFULL, "%d model loads are already waiting; retry later",
                          MAX_PENDING_LOADS);
    }
    if (r->n >= MAX_MODELS && !entry_find(r, name, name_len, NULL)) {
        return bd_err_set(err, BD_EFULL, "the repository already tracks %d models", MAX_MODELS);
    }
    op_t *op = op_new(name, name_len);
    entry_t *e = op ? entry_get(r, name, name_len) : NULL;
    if (!e) {
        if (op) {
            op_free(op);
        }
        return bd_err_set(err, BD_ENOMEM, "out of memory");
    }
    if (e->n == 0 && e->pending == 0) {
        set_stub_reason(e, "it is loading");
    }
    op->gen = ++e->gen;
    op->done = done;
    op->done_ctx = ctx;
    e->pending++;
    r->pending++;
    /* Debug: any client may ask for any name (the outcome is logged at info); quoted. */
    char shown[160];
    BD_DEBUG("repo", "model=%s load=requested", bd_log_field(shown, sizeof shown, name, name_len));
    pthread_mutex_lock(&r->mu);
    if (r->todo_tail) {
        r->todo_tail->next = op;
    } else {
        r->todo_head = op;
    }
    r->todo_tail = op;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int bd_repo_unload(bd_repo_t *r, const char *name, size_t name_len, bd_err_t *err)
{
    entry_t *e = entry_find(r, name, name_len, NULL);
    if (!e) {
        return bd_err_set(err, BD_ENOTFOUND, "unknown model '%.*s'",
                          (int)(name_len > 128 ? 128 : name_len), name);
    }
    if (r->closing) {
        return bd_err_set(err, BD_ESHUTDOWN, "the server is shutting down");
    }
    entry_retire_all(r, e);
    e->unload_gen = ++e->gen;
    set_stub_reason(e, "it is not loaded (unloaded through the repository API)");
    BD_INFO("repo", "model=%s state=unloaded_by_request", e->name);
    return 0;
}

int bd_repo_notify_fd(const bd_repo_t *r)
{
    return bd_mailbox_fd(r->mailbox);
}

void bd_repo_dispatch(bd_repo_t *r)
{
    bd_mailbox_drain(r->mailbox);
}

bool bd_repo_busy(const bd_repo_t *r)
{
    return r->pending > 0;
}

void bd_model_ref(bd_model_t *m)
{
    if (!m->stub) {
        m->refs++;
    }
}

void bd_model_unref(bd_model_t *m)
{
    if (m->stub || m->refs == 0) {
        return;
    }
    if (--m->refs == 0 && m->retired) {
        retired_unlink(m->repo, m);
        post_free(m->repo, m);
    }
}

/* ---- public: lookups (owner thread) ----------------------------------------------------- */

static bd_model_t *entry_default(entry_t *e)
{
    for (size_t i = e->n; i-- > 0;) {
        if (e->v[i]->sched) {
            return e->v[i];
        }
    }
    if (e->n > 0) {
        return e->v[e->n - 1];
    }
    if (!e->stub.reason[0]) {
        set_stub_reason(e, "it has no loaded version");
    }
    return &e->stub;
}

size_t bd_repo_count(const bd_repo_t *r)
{
    return r->n;
}

bd_model_t *bd_repo_at(const bd_repo_t *r, size_t i)
{
    return i < r->n ? entry_default(r->e[i]) : NULL;
}

int bd_repo_find(const bd_repo_t *r, const char *name, size_t name_len, const char *version,
                 size_t version_len, bd_model_t **out, bd_err_t *err)
{
    entry_t *e = entry_find(r, name, name_len, NULL);
    if (!e) {
        return bd_err_set(err, BD_ENOTFOUND, "unknown model '%.*s'",
                          (int)(name_len > 128 ? 128 : name_len), name);
    }
    if (!version || version_len == 0) {
        *out = entry_default(e);
        return 0;
    }
    int64_t v = 0;
    /* Versions are named as they print: "03" is not version 3. */
    bool canonical = version[0] != '0' && parse_version(version, version_len, &v);
    int k = canonical ? entry_index_of(e, v) : -1;
    if (k >= 0) {
        *out = e->v[k];
        return 0;
    }
    if (canonical && e->n == 0) {
        /* No version to tell apart (unloaded, never loaded, no version folder): the model's
         * reason, as for a request that names no version. */
        *out = entry_default(e);
        return 0;
    }
    char have[256] = "none";
    size_t len = 0;
    for (size_t i = 0; i < e->n && len + 40 < sizeof have; i++) {
        /* A version that failed to load (a `specific` one without its folder) is listed as
         * the index lists it, but said to be unavailable. */
        len += (size_t)snprintf(have + len, sizeof have - len, "%s%s%s", i ? ", " : "",
                                e->v[i]->version, e->v[i]->sched ? "" : " (unavailable)");
    }
    return bd_err_set(err, BD_ENOTFOUND, "model '%s' has no version '%.*s'; it has %s", e->name,
                      (int)(version_len > 64 ? 64 : version_len), version, have);
}

size_t bd_repo_versions(const bd_repo_t *r, const char *name, bd_model_t **out, size_t cap)
{
    entry_t *e = entry_find(r, name, strlen(name), NULL);
    if (!e) {
        return 0;
    }
    for (size_t i = 0; i < e->n && i < cap; i++) {
        out[i] = e->v[i];
    }
    return e->n;
}

/* Unloaded on purpose and not asked to load since: a load still running is discarded when it
 * ends, so the model is not loading. */
static bool entry_unloaded(const entry_t *e)
{
    return e->unload_gen != 0 && e->unload_gen == e->gen;
}

static void index_row(bd_buf_t *out, bool *first, const char *name, const char *version,
                      const char *state, const char *reason)
{
    bd_buf_puts(out, *first ? "{\"name\":" : ",{\"name\":");
    *first = false;
    bd_buf_json_string(out, name, strlen(name));
    if (version) {
        bd_buf_puts(out, ",\"version\":");
        bd_buf_json_string(out, version, strlen(version));
    }
    bd_buf_printf(out, ",\"state\":\"%s\",\"reason\":", state);
    bd_buf_json_string(out, reason, strlen(reason));
    bd_buf_putc(out, '}');
}

void bd_repo_index(const bd_repo_t *r, bool ready_only, bd_buf_t *out)
{
    bool first = true;
    bd_buf_putc(out, '[');
    for (size_t i = 0; i < r->n; i++) {
        entry_t *e = r->e[i];
        for (size_t k = 0; k < e->n; k++) {
            bd_model_t *m = e->v[k];
            char breaker[BD_ERR_MSG_MAX];
            bool up = m->sched && bd_sched_available(m->sched, breaker, sizeof breaker);
            if (ready_only && !up) {
                continue;
            }
            const char *state = up ? "READY" : "UNAVAILABLE";
            const char *reason = m->sched && !up ? breaker : m->reason;
            index_row(out, &first, e->name, m->version, state, reason);
        }
        if (ready_only) {
            continue;
        }
        /* Retired versions still finishing their requests, unless replaced. */
        bool draining = false;
        for (bd_model_t *m = r->retired; m; m = m->next) {
            if (strcmp(m->name, e->name) == 0 && entry_index_of(e, m->vnum) < 0) {
                index_row(out, &first, e->name, m->version, "UNLOADING",
                          "finishing the requests it had queued");
                draining = true;
            }
        }
        if (e->n == 0 && !draining) {
            bool loading = e->pending > 0 && !entry_unloaded(e);
            index_row(out, &first, e->name, NULL, loading ? "LOADING" : "UNAVAILABLE",
                      loading ? "" : entry_default(e)->reason);
        }
    }
    bd_buf_putc(out, ']');
}

/* One row of bd_repo_ready's list; the first one also says in `why` that the model (version)
 * `what` ("failed to load", "is loading") and the reason, or (`what` NULL) the reason alone,
 * when it is a sentence that names the model (the circuit breaker's). */
static void unready_row(bd_buf_t *rows, size_t *n, char *why, size_t cap, const char *name,
                        const char *version, const char *state, const char *what,
                        const char *reason)
{
    bool first = *n == 0;
    index_row(rows, &first, name, version, state, reason);
    if ((*n)++ > 0) {
        return;
    }
    if (what) {
        snprintf(why, cap, "model '%.200s'%s%s %s%s%.300s", name, version ? " version " : "",
                 version ? version : "", what, *reason ? ": " : "", reason);
    } else {
        snprintf(why, cap, "%.400s", reason);
    }
}

bool bd_repo_ready(const bd_repo_t *r, bd_buf_t *rows, char *why, size_t cap)
{
    size_t serving = 0, n = 0;
    bd_buf_putc(rows, '[');
    for (size_t i = 0; i < r->n; i++) {
        entry_t *e = r->e[i];
        if (e->n == 0 && entry_unloaded(e)) {
            continue;
        }
        serving++;
        if (e->n == 0) {
            bool loading = e->pending > 0;
            unready_row(rows, &n, why, cap, e->name, NULL, loading ? "LOADING" : "UNAVAILABLE",
                        loading ? "is loading" : "is unavailable",
                        loading ? "" : entry_default(e)->reason);
            continue;
        }
        for (size_t k = 0; k < e->n; k++) {
            bd_model_t *m = e->v[k];
            char breaker[BD_ERR_MSG_MAX];
            if (m->sched && bd_sched_available(m->sched, breaker, sizeof breaker)) {
                continue;
            }
            unready_row(rows, &n, why, cap, e->name, m->version, "UNAVAILABLE",
                        m->sched ? NULL : "failed to load", m->sched ? breaker : m->reason);
        }
    }
    bd_buf_putc(rows, ']');
    if (serving == 0) {
        snprintf(why, cap, "the repository has no model to serve");
        return false;
    }
    size_t len = strlen(why);
    if (n > 1 && len < cap) {
        snprintf(why + len, cap - len, " (and %zu more not ready)", n - 1);
    }
    return n == 0;
}

/* ---- public: accessors ------------------------------------------------------------------ */

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
    return m->sched != NULL && !m->retired;
}

const char *bd_model_reason(const bd_model_t *m)
{
    return m->reason;
}

const bd_model_config_t *bd_model_config(const bd_model_t *m)
{
    return m->has_cfg ? &m->cfg.model : NULL;
}

const bd_config_t *bd_model_full_config(const bd_model_t *m)
{
    return m->has_cfg ? &m->cfg : NULL;
}

const char *const *bd_model_labels(const bd_model_t *m, size_t *n)
{
    *n = m ? m->n_labels : 0;
    return m ? m->labels : NULL;
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
    return m->has_cfg && strcmp(m->cfg.model.backend, "sim") == 0 ? "batchd_sim"
                                                                  : "onnxruntime_onnx";
}
