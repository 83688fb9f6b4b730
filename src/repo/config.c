/* config.c: parses a model's config.json into bd_config_t: the backend's part
 * (bd_model_config_t), the scheduler's policy and the version policy.
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
    json_object_foreach(obj, key, v)
    {
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
        return bd_err_set(err, BD_EINVAL, "config.json: '%s%s' is %lld; expected %lld to %lld",
                          where, key, (long long)x, (long long)lo, (long long)hi);
    }
    *out = x;
    return 0;
}

/* A JSON array of 1..max integers in [lo, hi], strictly ascending when `ascending`. */
static int get_int_list(json_t *v, const char *key, int64_t lo, int64_t hi, bool ascending,
                        int64_t *out, size_t max, size_t *n, bd_err_t *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > max) {
        return bd_err_set(err, BD_EINVAL, "config.json: '%s' must be an array of 1 to %zu integers",
                          key, max);
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: '%s' values must be integers from %lld to %lld", key,
                              (long long)lo, (long long)hi);
        }
        out[i] = json_integer_value(x);
        if (ascending && i > 0 && out[i] <= out[i - 1]) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: '%s' must be in ascending order without repeats", key);
        }
    }
    *n = json_array_size(v);
    return 0;
}

static int parse_io(json_t *arr, const char *key, bd_io_t **out, size_t *count, bd_err_t *err)
{
    if (!json_is_array(arr)) {
        return bd_err_set(err, BD_EINVAL, "config.json: '%s' must be an array", key);
    }
    size_t n = json_array_size(arr);
    if (n == 0 || n > BD_MAX_IO) {
        return bd_err_set(err, BD_EINVAL, "config.json: '%s' must list 1 to %d tensors", key,
                          BD_MAX_IO);
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
                              "INT64, UINT8, UINT16, UINT32, UINT64, FP32, FP64, BYTES",
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
                                  "config.json: '%sdims' values must be integers from 1 to "
                                  "1073741824, or -1 (any size)",
                                  where);
            }
            io->dims.dims[j] = json_integer_value(d);
        }
    }
    return 0;
}

static int parse_queue_policy(json_t *v, bd_sched_policy_t *pol, bd_err_t *err)
{
    if (!json_is_object(v)) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'dynamic_batching.priority_queue_policy' must be an object "
                          "keyed by priority level (\"1\", \"2\", ...)");
    }
    static const char *const allowed[] = {"max_queue_size", "default_timeout_us", NULL};
    const char *key;
    json_t *lv;
    json_object_foreach(v, key, lv)
    {
        char *end = NULL;
        long level = strtol(key, &end, 10);
        /* Plain digits only: "01", " 1" or "+1" would name a level twice. */
        if (!*key || *end || key[0] < '1' || key[0] > '9' || level < 1 ||
            level > pol->priority_levels) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: dynamic_batching.priority_queue_policy key '%s' must "
                              "be a level from 1 to priority_levels (%d)",
                              key, pol->priority_levels);
        }
        char where[64];
        snprintf(where, sizeof where, "dynamic_batching.priority_queue_policy.%ld.", level);
        if (!json_is_object(lv)) {
            return bd_err_set(err, BD_EINVAL, "config.json: '%.*s' must be an object",
                              (int)strlen(where) - 1, where);
        }
        bd_priority_level_t *l = &pol->levels[level - 1];
        int64_t qsize = (int64_t)l->max_queue_size;
        int64_t timeout = (int64_t)l->default_timeout_us;
        int rc = check_keys(lv, where, allowed, err);
        if (rc || (rc = get_int(lv, where, "max_queue_size", 1, 1000000, &qsize, err)) ||
            (rc = get_int(lv, where, "default_timeout_us", 0, 3600000000LL, &timeout, err))) {
            return rc;
        }
        l->max_queue_size = (size_t)qsize;
        l->default_timeout_us = (uint64_t)timeout;
    }
    return 0;
}

static int parse_batching(json_t *db, bd_sched_policy_t *pol, bd_err_t *err)
{
    if (json_is_false(db)) {
        pol->dynamic_batching = false;
        return 0;
    }
    if (!json_is_object(db)) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'dynamic_batching' must be an object or false");
    }
    static const char *const allowed[] = {"max_queue_delay_us",    "max_queue_size",
                                          "priority_levels",       "default_priority_level",
                                          "default_timeout_us",    "preferred_batch_sizes",
                                          "priority_queue_policy", NULL};
    const char *w = "dynamic_batching.";
    int rc = check_keys(db, w, allowed, err);
    if (rc) {
        return rc;
    }
    json_t *delay = json_object_get(db, "max_queue_delay_us");
    if (delay && !json_is_integer(delay)) {
        if (!json_is_string(delay) || strcmp(json_string_value(delay), "auto") != 0) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'dynamic_batching.max_queue_delay_us' must be an "
                              "integer or \"auto\"");
        }
        pol->delay_auto = true;
    } else {
        int64_t d = (int64_t)pol->max_queue_delay_us;
        if ((rc = get_int(db, w, "max_queue_delay_us", 0, 60000000, &d, err))) {
            return rc;
        }
        pol->max_queue_delay_us = (uint64_t)d;
    }
    int64_t qsize = (int64_t)pol->max_queue_size;
    int64_t levels = 1;
    int64_t def_level = -1;
    int64_t timeout = 0;
    if ((rc = get_int(db, w, "max_queue_size", 1, 1000000, &qsize, err)) ||
        (rc = get_int(db, w, "priority_levels", 1, BD_MAX_PRIORITY_LEVELS, &levels, err)) ||
        (rc = get_int(db, w, "default_timeout_us", 0, 3600000000LL, &timeout, err))) {
        return rc;
    }
    def_level = levels;
    if ((rc = get_int(db, w, "default_priority_level", 1, levels, &def_level, err))) {
        return rc;
    }
    pol->max_queue_size = (size_t)qsize;
    pol->priority_levels = (int)levels;
    pol->default_priority_level = (int)def_level;
    pol->default_timeout_us = (uint64_t)timeout;
    for (int i = 0; i < BD_MAX_PRIORITY_LEVELS; i++) {
        pol->levels[i].max_queue_size = pol->max_queue_size;
        pol->levels[i].default_timeout_us = (uint64_t)timeout;
    }
    json_t *v = json_object_get(db, "preferred_batch_sizes");
    if (v) {
        int64_t sizes[BD_MAX_LIST];
        size_t n = 0;
        if ((rc = get_int_list(v, "dynamic_batching.preferred_batch_sizes", 1, 4096, true, sizes,
                               BD_MAX_LIST, &n, err))) {
            return rc;
        }
        for (size_t i = 0; i < n; i++) {
            pol->preferred_batch_sizes[i] = (int)sizes[i];
        }
        pol->n_preferred_batch_sizes = n;
    }
    v = json_object_get(db, "priority_queue_policy");
    return v ? parse_queue_policy(v, pol, err) : 0;
}

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The key whose value holds byte `pos` of the JSON text s (the nearest `"key":` before it,
 * where a key can stand: after '{' or ','), for the parse error jansson reports without one
 * (an integer past int64); false when it cannot tell (a ':' inside a string between them, an
 * escaped or long key) rather than name a wrong one. */
static bool key_before(const char *s, size_t pos, char *out, size_t cap)
{
    size_t i = pos;
    while (i > 0 && s[i - 1] != ':') {
        i--;
    }
    while (i > 1 && json_space(s[i - 2])) {
        i--;
    }
    if (i < 3 || s[i - 2] != '"') {
        return false;
    }
    size_t end = i - 2; /* the key's closing quote */
    size_t start = end;
    while (start > 0 && s[start - 1] != '"' && s[start - 1] != '\\' && end - start < cap - 1) {
        start--;
    }
    size_t before = start > 0 ? start - 1 : 0; /* its opening quote */
    while (before > 0 && json_space(s[before - 1])) {
        before--;
    }
    if (start == 0 || s[start - 1] != '"' || start == end || before == 0 ||
        (s[before - 1] != '{' && s[before - 1] != ',')) {
        return false;
    }
    memcpy(out, s + start, end - start);
    out[end - start] = '\0';
    return true;
}

static int parse_version_policy(json_t *v, bd_version_policy_t *vp, bd_err_t *err)
{
    const char *msg = "config.json: 'version_policy' must be {\"latest\": N}, {\"all\": {}} or "
                      "{\"specific\": [versions]}";
    if (!json_is_object(v) || json_object_size(v) != 1) {
        return bd_err_set(err, BD_EINVAL, "%s", msg);
    }
    json_t *x;
    if ((x = json_object_get(v, "latest"))) {
        /* Triton's spelling {"latest": {"num_versions": N}} is accepted too. */
        static const char *const triton[] = {"num_versions", NULL};
        int rc = json_is_object(x) ? check_keys(x, "version_policy.latest.", triton, err) : 0;
        if (rc) {
            return rc;
        }
        json_t *n = json_is_object(x) ? json_object_get(x, "num_versions") : x;
        if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 64) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'version_policy.latest%s' must be an integer from 1 "
                              "to 64",
                              json_is_object(x) ? ".num_versions" : "");
        }
        vp->kind = BD_VERSIONS_LATEST;
        vp->latest = (int)json_integer_value(n);
        return 0;
    }
    if ((x = json_object_get(v, "all"))) {
        if (!json_is_object(x) || json_object_size(x) != 0) {
            return bd_err_set(err, BD_EINVAL, "config.json: 'version_policy.all' must be {}");
        }
        vp->kind = BD_VERSIONS_ALL;
        return 0;
    }
    if ((x = json_object_get(v, "specific"))) {
        static const char *const triton[] = {"versions", NULL};
        int rc = json_is_object(x) ? check_keys(x, "version_policy.specific.", triton, err) : 0;
        json_t *list = json_is_object(x) ? json_object_get(x, "versions") : x;
        int64_t vs[BD_MAX_SPECIFIC_VERSIONS];
        size_t n = 0;
        /* as version folders: 1 to 18 digits */
        const char *name =
            json_is_object(x) ? "version_policy.specific.versions" : "version_policy.specific";
        if (rc || (rc = get_int_list(list, name, 1, 999999999999999999LL, true, vs,
                                     BD_MAX_SPECIFIC_VERSIONS, &n, err))) {
            return rc;
        }
        vp->kind = BD_VERSIONS_SPECIFIC;
        memcpy(vp->versions, vs, n * sizeof vs[0]);
        vp->n_versions = n;
        return 0;
    }
    return bd_err_set(err, BD_EINVAL, "%s", msg);
}

static int parse_warmup(json_t *v, bd_sched_policy_t *pol, bd_err_t *err)
{
    static const char *const allowed[] = {"batch_sizes", "count", NULL};
    if (!json_is_object(v)) {
        return bd_err_set(err, BD_EINVAL, "config.json: 'warmup' must be an object");
    }
    int rc = check_keys(v, "warmup.", allowed, err);
    int64_t count = 1;
    int64_t sizes[BD_MAX_LIST];
    size_t n = 0;
    json_t *bs = json_object_get(v, "batch_sizes");
    if (rc || (rc = get_int(v, "warmup.", "count", 1, 1000, &count, err))) {
        return rc;
    }
    if (!bs) {
        return bd_err_set(err, BD_EINVAL, "config.json: 'warmup.batch_sizes' is required");
    }
    if ((rc =
             get_int_list(bs, "warmup.batch_sizes", 1, 4096, false, sizes, BD_MAX_LIST, &n, err))) {
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        pol->warmup.batch_sizes[i] = (int)sizes[i];
    }
    pol->warmup.n_batch_sizes = n;
    pol->warmup.count = (int)count;
    return 0;
}

static int parse_breaker(json_t *v, bd_sched_policy_t *pol, bd_err_t *err)
{
    static const char *const allowed[] = {"consecutive_failures", "cooldown_us", NULL};
    if (!json_is_object(v)) {
        return bd_err_set(err, BD_EINVAL, "config.json: 'circuit_breaker' must be an object");
    }
    int64_t n = pol->circuit_breaker.consecutive_failures;
    int64_t cool = (int64_t)pol->circuit_breaker.cooldown_us;
    int rc = check_keys(v, "circuit_breaker.", allowed, err);
    if (rc || (rc = get_int(v, "circuit_breaker.", "consecutive_failures", 0, 1000000, &n, err)) ||
        (rc = get_int(v, "circuit_breaker.", "cooldown_us", 1000, 3600000000LL, &cool, err))) {
        return rc;
    }
    pol->circuit_breaker.consecutive_failures = (int)n;
    pol->circuit_breaker.cooldown_us = (uint64_t)cool;
    return 0;
}

/* A string key of 1..BD_REDIS_KEY_MAX-1 bytes without NUL; absent keeps `out`. */
static int get_redis_str(json_t *obj, const char *key, char *out, bd_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        return 0;
    }
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    if (n == 0 || n >= BD_REDIS_KEY_MAX || strlen(json_string_value(v)) != n) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'redis.%s' must be a non-empty string of at most %d bytes",
                          key, BD_REDIS_KEY_MAX - 1);
    }
    memcpy(out, json_string_value(v), n + 1);
    return 0;
}

/* The "redis" section (Redis Streams ingest); defaults are set by bd_config_parse. */
static int parse_redis(json_t *v, bd_redis_config_t *rd, bd_err_t *err)
{
    static const char *const allowed[] = {
        "streams",  "group",         "results",        "results_maxlen", "read_count",
        "block_ms", "claim_idle_ms", "max_deliveries", "dead_letter",    NULL};
    if (!json_is_object(v)) {
        return bd_err_set(err, BD_EINVAL, "config.json: 'redis' must be an object");
    }
    if (!json_object_get(v, "streams")) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'redis.streams' is required: a stream key or a glob such "
                          "as \"frames:*\"");
    }
    int64_t maxlen = rd->results_maxlen;
    int64_t count = rd->read_count;
    int64_t block = rd->block_ms;
    int64_t idle = rd->claim_idle_ms;
    int64_t deliveries = rd->max_deliveries;
    const char *w = "redis.";
    int rc = check_keys(v, w, allowed, err);
    if (rc || (rc = get_redis_str(v, "streams", rd->streams, err)) ||
        (rc = get_redis_str(v, "group", rd->group, err)) ||
        (rc = get_redis_str(v, "results", rd->results, err)) ||
        (rc = get_redis_str(v, "dead_letter", rd->dead_letter, err)) ||
        (rc = get_int(v, w, "results_maxlen", 1, (int64_t)1 << 40, &maxlen, err)) ||
        (rc = get_int(v, w, "read_count", 1, 10000, &count, err)) ||
        (rc = get_int(v, w, "block_ms", 1, 60000, &block, err)) ||
        (rc = get_int(v, w, "claim_idle_ms", 10, 86400000, &idle, err)) ||
        (rc = get_int(v, w, "max_deliveries", 1, 1000000, &deliveries, err))) {
        return rc;
    }
    /* Results or dead letters written into the input stream itself would never be read
     * (result streams are not) and would stop the stream being read at all. */
    bool literal = strpbrk(rd->streams, "*?[\\") == NULL;
    const char *const out_keys[2] = {rd->results, rd->dead_letter};
    for (int i = 0; i < 2; i++) {
        if (strcmp(out_keys[i], "{stream}") == 0 ||
            (literal && strcmp(out_keys[i], rd->streams) == 0)) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'redis.%s' is '%s', the input stream itself; write "
                              "%s to another key, such as \"%s:{stream}\"",
                              i ? "dead_letter" : "results", out_keys[i],
                              i ? "dead letters" : "results", i ? "dead" : "results");
        }
        /* Keys made with it twice could not be told from input streams whose names hold the
         * template (they would be read back, their results named longer each time). */
        const char *at = strstr(out_keys[i], "{stream}");
        if (at && strstr(at + 1, "{stream}")) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'redis.%s' is '%s', which holds {stream} more than "
                              "once; it may hold it once, such as \"%s:{stream}\"",
                              i ? "dead_letter" : "results", out_keys[i], i ? "dead" : "results");
        }
    }
    rd->enabled = true;
    rd->results_maxlen = maxlen;
    rd->read_count = (int)count;
    rd->block_ms = (int)block;
    rd->claim_idle_ms = idle;
    rd->max_deliveries = (int)deliveries;
    return 0;
}

/* A JSON array of exactly `n` finite numbers (preprocess.image.mean / std). */
static int get_floats(json_t *img, const char *key, int n, bool positive, float *out, bd_err_t *err)
{
    json_t *v = json_object_get(img, key);
    if (!v) {
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) != (size_t)n) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'preprocess.image.%s' must be an array of %d number%s, one "
                          "per channel of color %s",
                          key, n, n == 1 ? "" : "s", n == 1 ? "GRAY" : "RGB or BGR");
    }
    for (int i = 0; i < n; i++) {
        json_t *x = json_array_get(v, (size_t)i);
        double d = json_is_number(x) ? json_number_value(x) : 0;
        if (!json_is_number(x) || !(d > -1e30 && d < 1e30) || (positive && !(d > 0))) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'preprocess.image.%s' values must be %s, of "
                              "magnitude below 1e30",
                              key, positive ? "positive numbers" : "numbers");
        }
        out[i] = (float)d;
    }
    return 0;
}

/* Key `key` of `img`, one of names[0..n): its index in *out (absent keeps *out). */
static int pick(json_t *img, const char *key, const char *const *names, int n, int *out,
                bd_err_t *err)
{
    json_t *v = json_object_get(img, key);
    if (!v) {
        return 0;
    }
    for (int i = 0; json_is_string(v) && i < n; i++) {
        if (strcmp(json_string_value(v), names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char list[128] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s\"%s\"",
                 i == 0       ? ""
                 : i + 1 == n ? " or "
                              : ", ",
                 names[i]);
    }
    return bd_err_set(err, BD_EINVAL, "config.json: 'preprocess.image.%s' must be %s", key, list);
}

/* The "preprocess" section: image decoding for one input (docs/CONFIG.md). */
static int parse_preprocess(json_t *v, bd_image_spec_t *im, bd_err_t *err)
{
    static const char *const keys[] = {"input", "image", NULL};
    static const char *const img_keys[] = {"size",  "resize", "color", "layout",
                                           "scale", "mean",   "std",   NULL};
    static const char *const resizes[] = {"stretch", "shorter_side_crop"};
    static const char *const colors[] = {"RGB", "BGR", "GRAY"};
    static const char *const layouts[] = {"NCHW", "NHWC"};
    if (!json_is_object(v)) {
        return bd_err_set(err, BD_EINVAL, "config.json: 'preprocess' must be an object");
    }
    int rc = check_keys(v, "preprocess.", keys, err);
    if (rc) {
        return rc;
    }
    json_t *in = json_object_get(v, "input");
    if (!json_is_string(in) || json_string_length(in) == 0 ||
        json_string_length(in) >= sizeof im->input) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'preprocess.input' is required: the name of the model "
                          "input the images feed (at most %zu bytes)",
                          sizeof im->input - 1);
    }
    snprintf(im->input, sizeof im->input, "%s", json_string_value(in));
    json_t *img = json_object_get(v, "image");
    if (!json_is_object(img)) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'preprocess.image' is required and must be an object");
    }
    if ((rc = check_keys(img, "preprocess.image.", img_keys, err))) {
        return rc;
    }
    json_t *size = json_object_get(img, "size");
    if (!json_is_array(size) || json_array_size(size) != 2 ||
        !json_is_integer(json_array_get(size, 0)) || !json_is_integer(json_array_get(size, 1)) ||
        json_integer_value(json_array_get(size, 0)) < 1 ||
        json_integer_value(json_array_get(size, 1)) < 1 ||
        json_integer_value(json_array_get(size, 0)) > BD_IMAGE_MAX_SIDE ||
        json_integer_value(json_array_get(size, 1)) > BD_IMAGE_MAX_SIDE) {
        return bd_err_set(err, BD_EINVAL,
                          "config.json: 'preprocess.image.size' %s [height, width], two integers "
                          "from 1 to %d",
                          size ? "must be" : "is required:", BD_IMAGE_MAX_SIDE);
    }
    im->height = (int)json_integer_value(json_array_get(size, 0));
    im->width = (int)json_integer_value(json_array_get(size, 1));
    int r = 0, c = 0, l = 0;
    if ((rc = pick(img, "resize", resizes, 2, &r, err)) ||
        (rc = pick(img, "color", colors, 3, &c, err)) ||
        (rc = pick(img, "layout", layouts, 2, &l, err))) {
        return rc;
    }
    im->resize = (bd_image_resize_t)r;
    im->color = (bd_image_color_t)c;
    im->layout = (bd_image_layout_t)l;
    im->channels = im->color == BD_IMAGE_GRAY ? 1 : 3;
    im->scale = 1.0f;
    json_t *sc = json_object_get(img, "scale");
    if (sc) {
        double d = json_is_number(sc) ? json_number_value(sc) : 0;
        if (!json_is_number(sc) || !(d > -1e30 && d < 1e30)) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'preprocess.image.scale' must be a number of "
                              "magnitude below 1e30");
        }
        im->scale = (float)d;
    }
    for (int i = 0; i < 3; i++) {
        im->mean[i] = 0.0f;
        im->std[i] = 1.0f;
    }
    if ((rc = get_floats(img, "mean", im->channels, false, im->mean, err)) ||
        (rc = get_floats(img, "std", im->channels, true, im->std, err))) {
        return rc;
    }
    im->enabled = true;
    return 0;
}

static int parse_root(json_t *root, bd_config_t *c, bd_err_t *err)
{
    bd_model_config_t *cfg = &c->model;
    static const char *const allowed[] = {"name",
                                          "backend",
                                          "max_batch_size",
                                          "dynamic_batching",
                                          "instances",
                                          "threads_per_instance",
                                          "intra_op_spinning",
                                          "inputs",
                                          "outputs",
                                          "sim",
                                          "device",
                                          "version_policy",
                                          "warmup",
                                          "circuit_breaker",
                                          "redis",
                                          "preprocess",
                                          NULL};
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
    if ((v = json_object_get(root, "intra_op_spinning"))) {
        if (!json_is_boolean(v)) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'intra_op_spinning' must be true or false");
        }
        cfg->intra_op_spinning = json_is_true(v);
    }
    if ((v = json_object_get(root, "dynamic_batching")) &&
        (rc = parse_batching(v, &c->sched, err))) {
        return rc;
    }
    if ((v = json_object_get(root, "version_policy")) &&
        (rc = parse_version_policy(v, &c->version_policy, err))) {
        return rc;
    }
    if ((v = json_object_get(root, "warmup")) && (rc = parse_warmup(v, &c->sched, err))) {
        return rc;
    }
    if ((v = json_object_get(root, "circuit_breaker")) && (rc = parse_breaker(v, &c->sched, err))) {
        return rc;
    }
    if ((v = json_object_get(root, "redis")) && (rc = parse_redis(v, &c->redis, err))) {
        return rc;
    }
    if ((v = json_object_get(root, "preprocess")) && (rc = parse_preprocess(v, &cfg->image, err))) {
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
        static const char *const sim_keys[] = {"latency_us", "per_item_us", "fail_rate", NULL};
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
        json_t *fr = json_object_get(v, "fail_rate");
        if (fr && (!json_is_number(fr) || json_number_value(fr) < 0 || json_number_value(fr) > 1)) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: 'sim.fail_rate' must be a number from 0 to 1");
        }
        cfg->sim.fail_rate = fr ? json_number_value(fr) : 0.0;
    }
    if ((v = json_object_get(root, "device"))) {
        const char *d = json_is_string(v) ? json_string_value(v) : "";
        bool cuda = strncmp(d, "cuda:", 5) == 0 && d[5] && strlen(d + 5) <= 3 &&
                    strspn(d + 5, "0123456789") == strlen(d + 5);
        if (strcmp(d, "cpu") != 0 && !cuda) {
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

void bd_config_dispose(bd_config_t *cfg)
{
    if (cfg) {
        bd_model_config_dispose(&cfg->model);
    }
}

int bd_config_parse(bd_config_t *c, const char *json, size_t len, bd_err_t *err)
{
    bd_model_config_t *cfg = &c->model;
    bd_sched_policy_t *pol = &c->sched;
    snprintf(cfg->backend, sizeof cfg->backend, "onnxruntime");
    cfg->max_batch_size = BD_MAX_BATCH_UNSET;
    cfg->instances = 1;
    cfg->threads_per_instance = 0;
    pol->dynamic_batching = true;
    pol->max_queue_delay_us = 0;
    pol->max_queue_size = 1024;
    pol->priority_levels = 1;
    pol->default_priority_level = 1;
    for (int i = 0; i < BD_MAX_PRIORITY_LEVELS; i++) {
        pol->levels[i].max_queue_size = pol->max_queue_size;
        pol->levels[i].default_timeout_us = 0;
    }
    pol->circuit_breaker.consecutive_failures = 5;
    pol->circuit_breaker.cooldown_us = 2000000;
    c->version_policy.kind = BD_VERSIONS_LATEST;
    c->version_policy.latest = 1;
    bd_redis_config_t *rd = &c->redis;
    snprintf(rd->group, sizeof rd->group, "batchd");
    snprintf(rd->results, sizeof rd->results, "results:{stream}");
    snprintf(rd->dead_letter, sizeof rd->dead_letter, "dead:{stream}");
    rd->results_maxlen = 100000;
    rd->read_count = 32;
    rd->block_ms = 100;
    rd->claim_idle_ms = 30000;
    rd->max_deliveries = 3;
    int rc = 0;
    if (json) {
        json_error_t jerr;
        json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
        char key[64];
        if (!root && strncmp(jerr.text, "too big ", 8) == 0 && /* integer, negative integer */
            key_before(json,
                       jerr.position >= 0 && (size_t)jerr.position < len ? (size_t)jerr.position
                                                                         : len,
                       key, sizeof key)) {
            return bd_err_set(err, BD_EINVAL,
                              "config.json: '%s' is an integer too far from 0 to read (line "
                              "%d); docs/CONFIG.md gives its range",
                              key, jerr.line);
        }
        if (!root) {
            char why[JSON_ERROR_TEXT_LENGTH + 64];
            return bd_err_set(err, BD_EINVAL, "config.json is not valid JSON: %s (line %d)",
                              bd_json_fault(why, sizeof why, jerr.text), jerr.line);
        }
        rc = parse_root(root, c, err);
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
