/* config.c: parses a model's config.json into bd_model_config_t.
 *
 * Strict on purpose: an unknown key, a wrong type or an out-of-range value fails the model's
 * load with a sentence naming the key, because a silently ignored typo ("max_batch_szie") is
 * worse than a model that refuses to start. Called on the main thread while the repository
 * loads; the result is read-only afterwards. */
#include "repo/repo.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef BD_MAX_BATCH_UNSET
#define BD_MAX_BATCH_UNSET (-1)
#endif

static bool key_in(const char *key, const char *const *allowed)
{
    for (size_t i = 0; allowed[i]; i++) {
        if (strcmp(key, allowed[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int check_keys(json_t *obj, const char *where, const char *const *allowed, bd_err_t *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        (void)v;
        if (!key_in(key, allowed)) {
            return bd_err_set(err, BD_EINVAL, "config.json: unknown key '%s%s'", where, key);
        }
    }
    return 0;
}

/* An integer key in [lo, hi]; absent keeps *out. */
static int get_int(json_t *obj, const char *where, const char *key, int64_t lo, int64_t hi,
                   int64_t *out, bd_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        return 0;
    }
    if (!json_is_integer(v)) {
        return bd_err_set(err, BD_EINVAL, "config.json: '%s%s' must be an integer", where, key);
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: '%s%s' is %lld; expected %lld to %lld", where, key,
                          (long long)x, (long long)lo, (long long)hi);
    }
    *out = x;
    return 0;
}

static int parse_io(json_t *arr, const char *key, bd_io_t **out, size_t *count, bd_err_t *err)
{
    if (!json_is_array(arr)) {
        return bd_err_set(err, BD_EINVAL, "config.json: '%s' must be an array", key);
    }
    size_t n = json_array_size(arr);
    if (n == 0 || n > 64) {
        return bd_err_set(err, BD_EINVAL, "config.json: '%s' must list 1 to 64 tensors", key);
    }
    if (bd_model_config_alloc_io(out, count, n) != 0) {
        return bd_err_set(err, BD_ENOMEM, "config.json: out of memory");
    }
    static const char *const allowed[] = {"name", "datatype", "dims", NULL};
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        char where[64];
        snprintf(where, sizeof where, "%s[%zu].", key, i);
        if (!json_is_object(t)) {
            return bd_err_set(err, BD_EINVAL, "config.json: '%s[%zu]' must be an object", key, i);
        }
        int rc = check_keys(t, where, allowed, err);
        if (rc) {
            return rc;
        }
        json_t *name = json_object_get(t, "name");
        json_t *dt = json_object_get(t, "datatype");
        json_t *dims = json_object_get(t, "dims");
        if (!json_is_string(name) || json_string_length(name) == 0) {
            return bd_err_set(err, BD_EINVAL, "config.json: '%sname' must be a non-empty string",
                              where);
        }
        bd_io_t *io = &(*out)[i];
        io->name = strdup(json_string_value(name));
        if (!io->name) {
            return bd_err_set(err, BD_ENOMEM, "config.json: out of memory");
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp((*out)[j].name, io->name) == 0) {
                return bd_err_set(err, BD_EINVAL, "config.json: '%s' names '%s' twice", key,
                                  io->name);
            }
        }
        io->dtype = json_is_string(dt) ? bd_dtype_from_name(json_string_value(dt)) : BD_DT_INVALID;
        if (!bd_dtype_supported(io->dtype)) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: '%sdatatype' must be one of BOOL, INT8, INT16, INT32, "
                              "INT64, UINT8, UINT16, UINT32, UINT64, FP32, FP64",
                              where);
        }
        if (!json_is_array(dims) || json_array_size(dims) > BD_MAX_DIMS - 1) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: '%sdims' must be an array of at most %d integers",
                              where, BD_MAX_DIMS - 1);
        }
        io->dims.ndim = (int)json_array_size(dims);
        for (size_t j = 0; j < json_array_size(dims); j++) {
            json_t *d = json_array_get(dims, j);
            if (!json_is_integer(d) || json_integer_value(d) < -1 || json_integer_value(d) == 0 ||
                json_integer_value(d) > (1 << 30)) {
                return bd_err_set(err, BD_EINVAL,
                                  "config.json: '%sdims' values must be positive integers or -1",
                                  where);
            }
            io->dims.dims[j] = json_integer_value(d);
        }
    }
    return 0;
}

static int parse_batching(json_t *db, bd_model_config_t *cfg, bd_err_t *err)
{
    if (json_is_false(db)) {
        cfg->dynamic_batching = false;
        return 0;
    }
    if (!json_is_object(db)) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'dynamic_batching' must be an object or false");
    }
    static const char *const allowed[] = {"max_queue_delay_us", "max_queue_size", NULL};
    int rc = check_keys(db, "dynamic_batching.", allowed, err);
    int64_t delay = (int64_t)cfg->max_queue_delay_us;
    int64_t qsize = (int64_t)cfg->max_queue_size;
    if (!rc) {
        rc = get_int(db, "dynamic_batching.", "max_queue_delay_us", 0, 60000000, &delay, err);
    }
    if (!rc) {
        rc = get_int(db, "dynamic_batching.", "max_queue_size", 1, 1000000, &qsize, err);
    }
    cfg->max_queue_delay_us = (uint64_t)delay;
    cfg->max_queue_size = (size_t)qsize;
    return rc;
}

static int parse_root(json_t *root, bd_model_config_t *cfg, bd_err_t *err)
{
    static const char *const allowed[] = {
        "name",    "backend", "max_batch_size", "dynamic_batching", "instances",
        "threads_per_instance", "inputs", "outputs", "sim", "device", NULL};
    if (!json_is_object(root)) {
        return bd_err_set(err, BD_EINVAL, "config.json: the top level must be an object");
    }
    int rc = check_keys(root, "", allowed, err);
    if (rc) {
        return rc;
    }
    json_t *v = json_object_get(root, "name");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), cfg->name) != 0)) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'name' must equal the folder name '%s' when given",
                          cfg->name);
    }
    v = json_object_get(root, "backend");
    if (v) {
        if (!json_is_string(v) || !bd_backend_find(json_string_value(v))) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'backend' must be \"onnxruntime\" or \"sim\"");
        }
        snprintf(cfg->backend, sizeof cfg->backend, "%s", json_string_value(v));
    }
    int64_t mbs = cfg->max_batch_size;
    int64_t inst = cfg->instances;
    int64_t threads = cfg->threads_per_instance;
    if ((rc = get_int(root, "", "max_batch_size", 0, 4096, &mbs, err)) ||
        (rc = get_int(root, "", "instances", 1, 64, &inst, err)) ||
        (rc = get_int(root, "", "threads_per_instance", 0, 256, &threads, err))) {
        return rc;
    }
    cfg->max_batch_size = (int)mbs;
    cfg->instances = (int)inst;
    cfg->threads_per_instance = (int)threads;
    if ((v = json_object_get(root, "dynamic_batching")) && (rc = parse_batching(v, cfg, err))) {
        return rc;
    }
    if ((v = json_object_get(root, "inputs")) &&
        (rc = parse_io(v, "inputs", &cfg->inputs, &cfg->n_inputs, err))) {
        return rc;
    }
    if ((v = json_object_get(root, "outputs")) &&
        (rc = parse_io(v, "outputs", &cfg->outputs, &cfg->n_outputs, err))) {
        return rc;
    }
    if ((cfg->n_inputs == 0) != (cfg->n_outputs == 0)) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: give both 'inputs' and 'outputs', or neither");
    }
    if ((v = json_object_get(root, "sim"))) {
        static const char *const sim_keys[] = {"latency_us", "per_item_us", NULL};
        if (!json_is_object(v)) {
            return bd_err_set(err, BD_EINVAL, "config.json: 'sim' must be an object");
        }
        int64_t lat = 0;
        int64_t per = 0;
        if ((rc = check_keys(v, "sim.", sim_keys, err)) ||
            (rc = get_int(v, "sim.", "latency_us", 0, 60000000, &lat, err)) ||
            (rc = get_int(v, "sim.", "per_item_us", 0, 60000000, &per, err))) {
            return rc;
        }
        cfg->sim.latency_us = (uint64_t)lat;
        cfg->sim.per_item_us = (uint64_t)per;
    }
    if ((v = json_object_get(root, "device"))) {
        const char *d = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(d, "cpu") != 0 && strncmp(d, "cuda:", 5) != 0) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'device' must be \"cpu\" or \"cuda:N\"");
        }
        cfg->device = strdup(d);
        if (!cfg->device) {
            return bd_err_set(err, BD_ENOMEM, "config.json: out of memory");
        }
    }
    return 0;
}

/* Intra-op threads when config.json does not say. A small model (under 1 MiB of ONNX, like
 * an MLP) runs each batch in microseconds, where waking a second ONNX Runtime thread costs
 * more than it saves and that thread competes with the event loop for the cores (measured:
 * mlp at concurrency 32 served 28K req/s with 2 threads, 54K with 1). A large model (a CNN)
 * shares the cores among its instances, so they never oversubscribe. */
static int default_threads(const bd_model_config_t *cfg)
{
    struct stat st;
    if (cfg->model_path && stat(cfg->model_path, &st) == 0 && st.st_size < (1 << 20)) {
        return 1;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int per = (int)(cores > 0 ? cores : 1) / cfg->instances;
    return per > 0 ? per : 1;
}

int bd_config_parse(bd_model_config_t *cfg, const char *json, size_t len, bd_err_t *err)
{
    snprintf(cfg->backend, sizeof cfg->backend, "onnxruntime");
    cfg->max_batch_size = BD_MAX_BATCH_UNSET;
    cfg->dynamic_batching = true;
    cfg->max_queue_delay_us = 0;
    cfg->max_queue_size = 1024;
    cfg->instances = 1;
    cfg->threads_per_instance = 0;
    int rc = 0;
    if (json) {
        json_error_t jerr;
        json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
            return bd_err_set(err, BD_EINVAL, "config.json is not valid JSON: %s (line %d)",
                              jerr.text, jerr.line);
        }
        rc = parse_root(root, cfg, err);
        json_decref(root);
    }
    if (!rc && cfg->threads_per_instance == 0) {
        cfg->threads_per_instance = default_threads(cfg);
    }
    if (!rc && strcmp(cfg->backend, "sim") == 0 && cfg->max_batch_size == BD_MAX_BATCH_UNSET) {
        cfg->max_batch_size = 0;
    }
    return rc;
}
