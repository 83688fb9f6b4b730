/* test_repo: config.json parsing (every key of src/repo/config.c, its defaults, and the exact
 * sentence for each wrong type, out-of-range value and unknown key) and the model repository
 * on a real temporary folder: version choice, unavailable models with their reasons, sorted
 * listing, lookups by name and version, and one request through a loaded sim model.
 *
 * Threads: the config tests are single-threaded. The repository test starts real scheduler
 * workers (the sim models); its completion callback runs on a worker and hands the request
 * back through a mutex and condition variable. The temporary folders are removed at the end
 * of each test; everything is freed, so the ASan build checks for leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "repo/repo.h"

/* ---- helpers --------------------------------------------------------------------------- */

static int cores_per(int instances)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int per = (int)(cores > 0 ? cores : 1) / instances;
    return per > 0 ? per : 1;
}

/* A config as repo.c prepares it: zeroed, name set (owned, so dispose can free it). */
static void cfg_init(bd_config_t *cfg, const char *model_path)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->model.name = strdup("m");
    assert_non_null(cfg->model.name);
    cfg->model.version = 1;
    if (model_path) {
        cfg->model.model_path = strdup(model_path);
        assert_non_null(cfg->model.model_path);
    }
}

static int parse(bd_config_t *cfg, const char *json, bd_err_t *err)
{
    cfg_init(cfg, NULL);
    memset(err, 0, sizeof *err);
    return bd_config_parse(cfg, json, json ? strlen(json) : 0, err);
}

/* `json` must fail with BD_EINVAL and exactly `msg`; the partial config is freed. */
static void expect_bad(const char *json, const char *msg)
{
    bd_config_t cfg;
    bd_err_t err;
    int rc = parse(&cfg, json, &err);
    if (rc != BD_EINVAL || err.code != BD_EINVAL || strcmp(err.msg, msg) != 0) {
        fail_msg("config %s\n  gave rc=%d code=%d msg=\"%s\"\n  expected \"%s\"", json, rc,
                 err.code, err.msg, msg);
    }
    bd_config_dispose(&cfg);
}

static void expect_defaults(const bd_config_t *cfg, int threads)
{
    assert_string_equal(cfg->model.backend, "onnxruntime");
    assert_int_equal(cfg->model.max_batch_size, BD_MAX_BATCH_UNSET);
    assert_true(cfg->sched.dynamic_batching);
    assert_int_equal(cfg->sched.max_queue_delay_us, 0);
    assert_int_equal(cfg->sched.max_queue_size, 1024);
    assert_int_equal(cfg->model.instances, 1);
    assert_int_equal(cfg->model.threads_per_instance, threads);
    assert_false(cfg->model.intra_op_spinning);
    assert_null(cfg->model.inputs);
    assert_int_equal(cfg->model.n_inputs, 0);
    assert_null(cfg->model.outputs);
    assert_int_equal(cfg->model.n_outputs, 0);
    assert_int_equal(cfg->model.sim.latency_us, 0);
    assert_int_equal(cfg->model.sim.per_item_us, 0);
    assert_true(cfg->model.sim.fail_rate == 0.0);
    assert_null(cfg->model.device);
    assert_false(cfg->sched.delay_auto);
    assert_int_equal(cfg->sched.priority_levels, 1);
    assert_int_equal(cfg->sched.default_priority_level, 1);
    for (int i = 0; i < BD_MAX_PRIORITY_LEVELS; i++) {
        assert_int_equal(cfg->sched.levels[i].max_queue_size, 1024);
        assert_int_equal(cfg->sched.levels[i].default_timeout_us, 0);
    }
    assert_int_equal(cfg->sched.n_preferred_batch_sizes, 0);
    assert_int_equal(cfg->sched.warmup.n_batch_sizes, 0);
    assert_int_equal(cfg->sched.warmup.count, 0);
    assert_int_equal(cfg->sched.circuit_breaker.consecutive_failures, 5);
    assert_int_equal(cfg->sched.circuit_breaker.cooldown_us, 2000000);
    assert_int_equal(cfg->version_policy.kind, BD_VERSIONS_LATEST);
    assert_int_equal(cfg->version_policy.latest, 1);
    assert_int_equal(cfg->version_policy.n_versions, 0);
}

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        fail_msg("cannot create %s: %s", path, strerror(errno));
    }
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[512];
    assert_true((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) < sizeof path);
    write_file(path, text, strlen(text));
}

static void make_dir(const char *dir, const char *name)
{
    char path[512];
    assert_true((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) < sizeof path);
    if (mkdir(path, 0755) != 0) {
        fail_msg("cannot create %s: %s", path, strerror(errno));
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    assert_int_equal(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* ---- config: defaults ------------------------------------------------------------------ */

static void test_config_defaults_without_file(void **state)
{
    (void)state;
    bd_config_t cfg;
    bd_err_t err;
    /* No model path: the "large model" rule, cores / instances. */
    assert_int_equal(parse(&cfg, NULL, &err), 0);
    expect_defaults(&cfg, cores_per(1));
    bd_config_dispose(&cfg);

    /* An empty object is the same as no file, and so is every default spelt out. */
    assert_int_equal(parse(&cfg, "{}", &err), 0);
    expect_defaults(&cfg, cores_per(1));
    bd_config_dispose(&cfg);
    assert_int_equal(parse(&cfg, "{\"intra_op_spinning\": false}", &err), 0);
    expect_defaults(&cfg, cores_per(1));
    bd_config_dispose(&cfg);
}

static void test_config_default_threads_follow_model_size(void **state)
{
    (void)state;
    char dir[] = "/tmp/bd_test_repo_cfg.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char small[256];
    char edge[256];
    char large[256];
    char missing[256];
    snprintf(small, sizeof small, "%s/small.onnx", dir);
    snprintf(edge, sizeof edge, "%s/edge.onnx", dir);
    snprintf(large, sizeof large, "%s/large.onnx", dir);
    snprintf(missing, sizeof missing, "%s/missing.onnx", dir);
    write_file(small, "0123456789", 10);
    /* Sparse files: the size is what counts. */
    write_file(edge, "", 0);
    assert_int_equal(truncate(edge, (1 << 20) - 1), 0);
    write_file(large, "", 0);
    assert_int_equal(truncate(large, 1 << 20), 0);

    struct {
        const char *path;
        const char *json;
        int threads;
    } cases[] = {
        {small, NULL, 1},
        {edge, NULL, 1},
        {large, NULL, cores_per(1)},
        {missing, NULL, cores_per(1)},
        {missing, "{\"instances\": 2}", cores_per(2)},
        {missing, "{\"instances\": 64}", cores_per(64)},
        {large, "{\"instances\": 3}", cores_per(3)},
        {small, "{\"instances\": 3}", 1},
        /* 0 means "pick for me"; any other value is kept whatever the model size. */
        {small, "{\"threads_per_instance\": 0}", 1},
        {large, "{\"threads_per_instance\": 0}", cores_per(1)},
        {small, "{\"threads_per_instance\": 7}", 7},
        {large, "{\"threads_per_instance\": 256}", 256},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bd_config_t cfg;
        cfg_init(&cfg, cases[i].path);
        bd_err_t err = {0};
        const char *j = cases[i].json;
        assert_int_equal(bd_config_parse(&cfg, j, j ? strlen(j) : 0, &err), 0);
        if (cfg.model.threads_per_instance != cases[i].threads) {
            fail_msg("case %zu (%s, %s): threads_per_instance %d, expected %d", i, cases[i].path,
                     j ? j : "no config", cfg.model.threads_per_instance, cases[i].threads);
        }
        bd_config_dispose(&cfg);
    }
    rm_tree(dir);
}

static void test_config_every_key(void **state)
{
    (void)state;
    const char *json =
        "{\"name\": \"m\", \"backend\": \"sim\", \"max_batch_size\": 32,\n"
        " \"dynamic_batching\": {\"max_queue_delay_us\": 500, \"max_queue_size\": 7,\n"
        "   \"priority_levels\": 3, \"default_priority_level\": 2,\n"
        "   \"default_timeout_us\": 1000, \"preferred_batch_sizes\": [4, 8, 16],\n"
        "   \"priority_queue_policy\": {\"1\": {\"max_queue_size\": 2,\n"
        "                                   \"default_timeout_us\": 50},\n"
        "                             \"3\": {\"max_queue_size\": 9}}},\n"
        " \"version_policy\": {\"specific\": [1, 3, 10]},\n"
        " \"warmup\": {\"batch_sizes\": [1, 8, 1], \"count\": 4},\n"
        " \"circuit_breaker\": {\"consecutive_failures\": 0, \"cooldown_us\": 1000},\n"
        " \"instances\": 3, \"threads_per_instance\": 2, \"intra_op_spinning\": true,\n"
        " \"inputs\": [{\"name\": \"INPUT0\", \"datatype\": \"FP32\", \"dims\": [16]},\n"
        "            {\"name\": \"B\", \"datatype\": \"INT64\", \"dims\": [-1, 2]}],\n"
        " \"outputs\": [{\"name\": \"OUTPUT0\", \"datatype\": \"FP32\", \"dims\": [16]},\n"
        "             {\"name\": \"OB\", \"datatype\": \"BOOL\", \"dims\": []}],\n"
        " \"sim\": {\"latency_us\": 2000, \"per_item_us\": 100, \"fail_rate\": 0.25},\n"
        " \"device\": \"cuda:1\"}";
    bd_config_t cfg;
    bd_err_t err;
    if (parse(&cfg, json, &err) != 0) {
        fail_msg("parse: %s", err.msg);
    }
    assert_string_equal(cfg.model.name, "m");
    assert_string_equal(cfg.model.backend, "sim");
    assert_int_equal(cfg.model.max_batch_size, 32);
    assert_true(cfg.sched.dynamic_batching);
    assert_int_equal(cfg.sched.max_queue_delay_us, 500);
    assert_int_equal(cfg.sched.max_queue_size, 7);
    assert_int_equal(cfg.model.instances, 3);
    assert_int_equal(cfg.model.threads_per_instance, 2);
    assert_true(cfg.model.intra_op_spinning);
    assert_int_equal(cfg.model.n_inputs, 2);
    assert_string_equal(cfg.model.inputs[0].name, "INPUT0");
    assert_int_equal(cfg.model.inputs[0].dtype, BD_DT_FP32);
    assert_int_equal(cfg.model.inputs[0].dims.ndim, 1);
    assert_int_equal(cfg.model.inputs[0].dims.dims[0], 16);
    assert_string_equal(cfg.model.inputs[1].name, "B");
    assert_int_equal(cfg.model.inputs[1].dtype, BD_DT_INT64);
    assert_int_equal(cfg.model.inputs[1].dims.ndim, 2);
    assert_int_equal(cfg.model.inputs[1].dims.dims[0], -1);
    assert_int_equal(cfg.model.inputs[1].dims.dims[1], 2);
    assert_int_equal(cfg.model.n_outputs, 2);
    assert_string_equal(cfg.model.outputs[0].name, "OUTPUT0");
    assert_int_equal(cfg.model.outputs[0].dtype, BD_DT_FP32);
    assert_int_equal(cfg.model.outputs[0].dims.ndim, 1);
    assert_int_equal(cfg.model.outputs[0].dims.dims[0], 16);
    assert_string_equal(cfg.model.outputs[1].name, "OB");
    assert_int_equal(cfg.model.outputs[1].dtype, BD_DT_BOOL);
    assert_int_equal(cfg.model.outputs[1].dims.ndim, 0);
    assert_int_equal(cfg.model.sim.latency_us, 2000);
    assert_int_equal(cfg.model.sim.per_item_us, 100);
    assert_true(cfg.model.sim.fail_rate == 0.25);
    assert_string_equal(cfg.model.device, "cuda:1");
    assert_false(cfg.sched.delay_auto);
    assert_int_equal(cfg.sched.priority_levels, 3);
    assert_int_equal(cfg.sched.default_priority_level, 2);
    assert_int_equal(cfg.sched.default_timeout_us, 1000);
    /* A level's policy overrides the batching-wide values, key by key. */
    assert_int_equal(cfg.sched.levels[0].max_queue_size, 2);
    assert_int_equal(cfg.sched.levels[0].default_timeout_us, 50);
    assert_int_equal(cfg.sched.levels[1].max_queue_size, 7);
    assert_int_equal(cfg.sched.levels[1].default_timeout_us, 1000);
    assert_int_equal(cfg.sched.levels[2].max_queue_size, 9);
    assert_int_equal(cfg.sched.levels[2].default_timeout_us, 1000);
    assert_int_equal(cfg.sched.n_preferred_batch_sizes, 3);
    assert_int_equal(cfg.sched.preferred_batch_sizes[0], 4);
    assert_int_equal(cfg.sched.preferred_batch_sizes[1], 8);
    assert_int_equal(cfg.sched.preferred_batch_sizes[2], 16);
    assert_int_equal(cfg.version_policy.kind, BD_VERSIONS_SPECIFIC);
    assert_int_equal(cfg.version_policy.n_versions, 3);
    assert_int_equal(cfg.version_policy.versions[0], 1);
    assert_int_equal(cfg.version_policy.versions[1], 3);
    assert_int_equal(cfg.version_policy.versions[2], 10);
    /* Warm-up sizes need not be sorted or unique. */
    assert_int_equal(cfg.sched.warmup.n_batch_sizes, 3);
    assert_int_equal(cfg.sched.warmup.batch_sizes[0], 1);
    assert_int_equal(cfg.sched.warmup.batch_sizes[1], 8);
    assert_int_equal(cfg.sched.warmup.batch_sizes[2], 1);
    assert_int_equal(cfg.sched.warmup.count, 4);
    assert_int_equal(cfg.sched.circuit_breaker.consecutive_failures, 0);
    assert_int_equal(cfg.sched.circuit_breaker.cooldown_us, 1000);
    bd_config_dispose(&cfg);
    assert_null(cfg.model.inputs);
    assert_null(cfg.model.device);
}

static void test_config_bounds_are_inclusive(void **state)
{
    (void)state;
    bd_config_t cfg;
    bd_err_t err;
    assert_int_equal(
        parse(&cfg,
              "{\"max_batch_size\": 4096, \"instances\": 64, "
              "\"dynamic_batching\": {\"max_queue_delay_us\": 60000000, "
              "\"max_queue_size\": 1000000}, "
              "\"sim\": {\"latency_us\": 60000000, \"per_item_us\": 60000000}, "
              "\"inputs\": [{\"name\": \"a\", \"datatype\": \"UINT64\", "
              "\"dims\": [1073741824, 1, 1, 1, 1, 1, 1]}], "
              "\"outputs\": [{\"name\": \"a\", \"datatype\": \"FP64\", \"dims\": [-1]}], "
              "\"device\": \"cpu\"}",
              &err),
        0);
    assert_int_equal(cfg.model.max_batch_size, 4096);
    assert_int_equal(cfg.model.instances, 64);
    assert_int_equal(cfg.sched.max_queue_delay_us, 60000000);
    assert_int_equal(cfg.sched.max_queue_size, 1000000);
    assert_int_equal(cfg.model.sim.latency_us, 60000000);
    assert_int_equal(cfg.model.sim.per_item_us, 60000000);
    assert_int_equal(cfg.model.inputs[0].dims.ndim, 7);
    assert_int_equal(cfg.model.inputs[0].dims.dims[0], 1 << 30);
    assert_int_equal(cfg.model.inputs[0].dtype, BD_DT_UINT64);
    /* An input and an output may share a name (Triton allows it too). */
    assert_string_equal(cfg.model.outputs[0].name, "a");
    assert_string_equal(cfg.model.device, "cpu");
    bd_config_dispose(&cfg);

    assert_int_equal(
        parse(&cfg,
              "{\"max_batch_size\": 0, \"instances\": 1, "
              "\"dynamic_batching\": {\"max_queue_delay_us\": 0, \"max_queue_size\": 1}}",
              &err),
        0);
    assert_int_equal(cfg.model.max_batch_size, 0);
    assert_int_equal(cfg.sched.max_queue_size, 1);
    bd_config_dispose(&cfg);
}

static void test_config_dynamic_batching_false_and_partial(void **state)
{
    (void)state;
    bd_config_t cfg;
    bd_err_t err;
    assert_int_equal(parse(&cfg, "{\"dynamic_batching\": false}", &err), 0);
    assert_false(cfg.sched.dynamic_batching);
    assert_int_equal(cfg.sched.max_queue_delay_us, 0);
    assert_int_equal(cfg.sched.max_queue_size, 1024);
    bd_config_dispose(&cfg);

    /* An empty object means on, with the defaults; one key keeps the other's default. */
    assert_int_equal(parse(&cfg, "{\"dynamic_batching\": {}}", &err), 0);
    assert_true(cfg.sched.dynamic_batching);
    assert_int_equal(cfg.sched.max_queue_delay_us, 0);
    assert_int_equal(cfg.sched.max_queue_size, 1024);
    bd_config_dispose(&cfg);
    assert_int_equal(parse(&cfg, "{\"dynamic_batching\": {\"max_queue_delay_us\": 250}}", &err), 0);
    assert_true(cfg.sched.dynamic_batching);
    assert_int_equal(cfg.sched.max_queue_delay_us, 250);
    assert_int_equal(cfg.sched.max_queue_size, 1024);
    bd_config_dispose(&cfg);
    assert_int_equal(parse(&cfg, "{\"dynamic_batching\": {\"max_queue_size\": 3}}", &err), 0);
    assert_int_equal(cfg.sched.max_queue_delay_us, 0);
    assert_int_equal(cfg.sched.max_queue_size, 3);
    bd_config_dispose(&cfg);
}

static void test_config_sim_backend_defaults(void **state)
{
    (void)state;
    bd_config_t cfg;
    bd_err_t err;
    /* sim without max_batch_size: 0 (no batch dim); with it: kept. */
    assert_int_equal(parse(&cfg, "{\"backend\": \"sim\"}", &err), 0);
    assert_string_equal(cfg.model.backend, "sim");
    assert_int_equal(cfg.model.max_batch_size, 0);
    bd_config_dispose(&cfg);
    assert_int_equal(parse(&cfg, "{\"backend\": \"sim\", \"max_batch_size\": 8}", &err), 0);
    assert_int_equal(cfg.model.max_batch_size, 8);
    bd_config_dispose(&cfg);
    /* onnxruntime leaves it unset for the backend to decide from the model. */
    assert_int_equal(parse(&cfg, "{\"backend\": \"onnxruntime\"}", &err), 0);
    assert_string_equal(cfg.model.backend, "onnxruntime");
    assert_int_equal(cfg.model.max_batch_size, BD_MAX_BATCH_UNSET);
    bd_config_dispose(&cfg);
    /* sim with only latency: per_item stays 0, and the reverse. */
    assert_int_equal(parse(&cfg, "{\"sim\": {\"latency_us\": 5}}", &err), 0);
    assert_int_equal(cfg.model.sim.latency_us, 5);
    assert_int_equal(cfg.model.sim.per_item_us, 0);
    bd_config_dispose(&cfg);
    assert_int_equal(parse(&cfg, "{\"sim\": {\"per_item_us\": 9}}", &err), 0);
    assert_int_equal(cfg.model.sim.latency_us, 0);
    assert_int_equal(cfg.model.sim.per_item_us, 9);
    bd_config_dispose(&cfg);
}

static void test_config_scheduling_key_variants(void **state)
{
    (void)state;
    bd_config_t cfg;
    bd_err_t err;
    assert_int_equal(
        parse(&cfg, "{\"dynamic_batching\": {\"max_queue_delay_us\": \"auto\"}}", &err), 0);
    assert_true(cfg.sched.delay_auto);
    assert_int_equal(cfg.sched.max_queue_delay_us, 0);
    bd_config_dispose(&cfg);

    /* default_priority_level defaults to the lowest level; levels copy max_queue_size. */
    assert_int_equal(parse(&cfg,
                           "{\"dynamic_batching\": {\"priority_levels\": 16, "
                           "\"max_queue_size\": 5, \"default_timeout_us\": 3600000000}}",
                           &err),
                     0);
    assert_int_equal(cfg.sched.priority_levels, 16);
    assert_int_equal(cfg.sched.default_priority_level, 16);
    for (int i = 0; i < BD_MAX_PRIORITY_LEVELS; i++) {
        assert_int_equal(cfg.sched.levels[i].max_queue_size, 5);
        assert_int_equal(cfg.sched.levels[i].default_timeout_us, 3600000000u);
    }
    bd_config_dispose(&cfg);

    /* 16 preferred sizes is the most; 4096 the largest. */
    assert_int_equal(parse(&cfg,
                           "{\"dynamic_batching\": {\"preferred_batch_sizes\": [1, 2, 3, 4, 5, 6, "
                           "7, 8, 9, 10, 11, 12, 13, 14, 15, 4096]}}",
                           &err),
                     0);
    assert_int_equal(cfg.sched.n_preferred_batch_sizes, 16);
    assert_int_equal(cfg.sched.preferred_batch_sizes[15], 4096);
    bd_config_dispose(&cfg);

    struct {
        const char *json;
        bd_version_kind_t kind;
        int latest;
        size_t n;
        int64_t first;
    } vp[] = {
        {"{\"version_policy\": {\"latest\": 2}}", BD_VERSIONS_LATEST, 2, 0, 0},
        {"{\"version_policy\": {\"latest\": {\"num_versions\": 64}}}", BD_VERSIONS_LATEST, 64, 0,
         0},
        {"{\"version_policy\": {\"all\": {}}}", BD_VERSIONS_ALL, 1, 0, 0},
        {"{\"version_policy\": {\"specific\": {\"versions\": [7]}}}", BD_VERSIONS_SPECIFIC, 1, 1,
         7},
        {"{\"version_policy\": {\"specific\": [999999999999999999]}}", BD_VERSIONS_SPECIFIC, 1, 1,
         999999999999999999LL},
    };
    for (size_t i = 0; i < sizeof vp / sizeof vp[0]; i++) {
        if (parse(&cfg, vp[i].json, &err) != 0) {
            fail_msg("%s: %s", vp[i].json, err.msg);
        }
        assert_int_equal(cfg.version_policy.kind, vp[i].kind);
        assert_int_equal(cfg.version_policy.latest, vp[i].latest);
        assert_int_equal(cfg.version_policy.n_versions, vp[i].n);
        if (vp[i].n) {
            assert_true(cfg.version_policy.versions[0] == vp[i].first);
        }
        bd_config_dispose(&cfg);
    }

    /* warmup count defaults to 1 once warm-up is configured. */
    assert_int_equal(parse(&cfg, "{\"warmup\": {\"batch_sizes\": [2]}}", &err), 0);
    assert_int_equal(cfg.sched.warmup.n_batch_sizes, 1);
    assert_int_equal(cfg.sched.warmup.batch_sizes[0], 2);
    assert_int_equal(cfg.sched.warmup.count, 1);
    bd_config_dispose(&cfg);

    /* A circuit breaker key left out keeps its default. */
    assert_int_equal(parse(&cfg, "{\"circuit_breaker\": {\"cooldown_us\": 3600000000}}", &err), 0);
    assert_int_equal(cfg.sched.circuit_breaker.consecutive_failures, 5);
    assert_int_equal(cfg.sched.circuit_breaker.cooldown_us, 3600000000u);
    bd_config_dispose(&cfg);
    assert_int_equal(
        parse(&cfg, "{\"circuit_breaker\": {\"consecutive_failures\": 1000000}}", &err), 0);
    assert_int_equal(cfg.sched.circuit_breaker.consecutive_failures, 1000000);
    assert_int_equal(cfg.sched.circuit_breaker.cooldown_us, 2000000);
    bd_config_dispose(&cfg);

    /* fail_rate takes integers and reals from 0 to 1. */
    assert_int_equal(parse(&cfg, "{\"sim\": {\"fail_rate\": 1}}", &err), 0);
    assert_true(cfg.model.sim.fail_rate == 1.0);
    bd_config_dispose(&cfg);
    assert_int_equal(parse(&cfg, "{\"sim\": {\"fail_rate\": 0.0}}", &err), 0);
    assert_true(cfg.model.sim.fail_rate == 0.0);
    bd_config_dispose(&cfg);
}

/* ---- config: errors -------------------------------------------------------------------- */

static void test_config_top_level_errors(void **state)
{
    (void)state;
    expect_bad("[]", "config.json: the top level must be an object");
    expect_bad("{\"max_batch_szie\": 8}", "config.json: unknown key 'max_batch_szie'");
    expect_bad("{\"Instances\": 1}", "config.json: unknown key 'Instances'");
    expect_bad("{\"name\": \"other\"}",
               "config.json: 'name' must equal the folder name 'm' when given");
    expect_bad("{\"name\": 5}", "config.json: 'name' must equal the folder name 'm' when given");
    expect_bad("{\"backend\": \"tensorrt\"}",
               "config.json: 'backend' must be \"onnxruntime\" or \"sim\"");
    expect_bad("{\"backend\": 1}", "config.json: 'backend' must be \"onnxruntime\" or \"sim\"");
    expect_bad("{\"backend\": null}", "config.json: 'backend' must be \"onnxruntime\" or \"sim\"");
    expect_bad("{\"device\": \"gpu\"}", "config.json: 'device' must be \"cpu\" or \"cuda:N\"");
    expect_bad("{\"device\": 0}", "config.json: 'device' must be \"cpu\" or \"cuda:N\"");
    expect_bad("{\"device\": \"CPU\"}", "config.json: 'device' must be \"cpu\" or \"cuda:N\"");
    expect_bad("{\"device\": \"cuda:\"}", "config.json: 'device' must be \"cpu\" or \"cuda:N\"");
    expect_bad("{\"device\": \"cuda:x\"}", "config.json: 'device' must be \"cpu\" or \"cuda:N\"");
}

static void test_config_integer_errors(void **state)
{
    (void)state;
    expect_bad("{\"max_batch_size\": \"8\"}", "config.json: 'max_batch_size' must be an integer");
    expect_bad("{\"max_batch_size\": 1.5}", "config.json: 'max_batch_size' must be an integer");
    expect_bad("{\"max_batch_size\": 4097}",
               "config.json: 'max_batch_size' is 4097; expected 0 to 4096");
    expect_bad("{\"max_batch_size\": -1}",
               "config.json: 'max_batch_size' is -1; expected 0 to 4096");
    expect_bad("{\"instances\": 0}", "config.json: 'instances' is 0; expected 1 to 64");
    expect_bad("{\"instances\": 65}", "config.json: 'instances' is 65; expected 1 to 64");
    expect_bad("{\"instances\": true}", "config.json: 'instances' must be an integer");
    expect_bad("{\"threads_per_instance\": 257}",
               "config.json: 'threads_per_instance' is 257; expected 0 to 256");
    expect_bad("{\"threads_per_instance\": -1}",
               "config.json: 'threads_per_instance' is -1; expected 0 to 256");
    expect_bad("{\"threads_per_instance\": null}",
               "config.json: 'threads_per_instance' must be an integer");
    expect_bad("{\"intra_op_spinning\": 1}",
               "config.json: 'intra_op_spinning' must be true or false");
    expect_bad("{\"intra_op_spinning\": \"on\"}",
               "config.json: 'intra_op_spinning' must be true or false");
    expect_bad("{\"max_batch_size\": 9223372036854775807}",
               "config.json: 'max_batch_size' is 9223372036854775807; expected 0 to 4096");
}

static void test_config_dynamic_batching_errors(void **state)
{
    (void)state;
    expect_bad("{\"dynamic_batching\": true}",
               "config.json: 'dynamic_batching' must be an object or false");
    expect_bad("{\"dynamic_batching\": 0}",
               "config.json: 'dynamic_batching' must be an object or false");
    expect_bad("{\"dynamic_batching\": null}",
               "config.json: 'dynamic_batching' must be an object or false");
    expect_bad("{\"dynamic_batching\": {\"max_queue_delay\": 1}}",
               "config.json: unknown key 'dynamic_batching.max_queue_delay'");
    expect_bad("{\"dynamic_batching\": {\"max_queue_delay_us\": 60000001}}",
               "config.json: 'dynamic_batching.max_queue_delay_us' is 60000001; expected 0 to "
               "60000000");
    expect_bad("{\"dynamic_batching\": {\"max_queue_delay_us\": -1}}",
               "config.json: 'dynamic_batching.max_queue_delay_us' is -1; expected 0 to 60000000");
    expect_bad("{\"dynamic_batching\": {\"max_queue_delay_us\": \"5\"}}",
               "config.json: 'dynamic_batching.max_queue_delay_us' must be an integer or "
               "\"auto\"");
    expect_bad("{\"dynamic_batching\": {\"max_queue_delay_us\": \"AUTO\"}}",
               "config.json: 'dynamic_batching.max_queue_delay_us' must be an integer or "
               "\"auto\"");
    expect_bad("{\"dynamic_batching\": {\"max_queue_delay_us\": 1.5}}",
               "config.json: 'dynamic_batching.max_queue_delay_us' must be an integer or "
               "\"auto\"");
    expect_bad("{\"dynamic_batching\": {\"max_queue_delay_us\": true}}",
               "config.json: 'dynamic_batching.max_queue_delay_us' must be an integer or "
               "\"auto\"");
    expect_bad("{\"dynamic_batching\": {\"max_queue_size\": 0}}",
               "config.json: 'dynamic_batching.max_queue_size' is 0; expected 1 to 1000000");
    expect_bad("{\"dynamic_batching\": {\"max_queue_size\": 1000001}}",
               "config.json: 'dynamic_batching.max_queue_size' is 1000001; expected 1 to 1000000");
    expect_bad("{\"dynamic_batching\": {\"max_queue_size\": 2.0}}",
               "config.json: 'dynamic_batching.max_queue_size' must be an integer");
}

static void test_config_sim_errors(void **state)
{
    (void)state;
    expect_bad("{\"sim\": 1}", "config.json: 'sim' must be an object");
    expect_bad("{\"sim\": false}", "config.json: 'sim' must be an object");
    expect_bad("{\"sim\": {\"latency\": 1}}", "config.json: unknown key 'sim.latency'");
    expect_bad("{\"sim\": {\"latency_us\": 60000001}}",
               "config.json: 'sim.latency_us' is 60000001; expected 0 to 60000000");
    expect_bad("{\"sim\": {\"per_item_us\": -5}}",
               "config.json: 'sim.per_item_us' is -5; expected 0 to 60000000");
    expect_bad("{\"sim\": {\"per_item_us\": \"5\"}}",
               "config.json: 'sim.per_item_us' must be an integer");
}

static void test_config_priority_errors(void **state)
{
    (void)state;
    expect_bad("{\"dynamic_batching\": {\"priority_levels\": 0}}",
               "config.json: 'dynamic_batching.priority_levels' is 0; expected 1 to 16");
    expect_bad("{\"dynamic_batching\": {\"priority_levels\": 17}}",
               "config.json: 'dynamic_batching.priority_levels' is 17; expected 1 to 16");
    expect_bad("{\"dynamic_batching\": {\"priority_levels\": \"2\"}}",
               "config.json: 'dynamic_batching.priority_levels' must be an integer");
    expect_bad("{\"dynamic_batching\": {\"priority_levels\": 2, \"default_priority_level\": 3}}",
               "config.json: 'dynamic_batching.default_priority_level' is 3; expected 1 to 2");
    expect_bad("{\"dynamic_batching\": {\"default_priority_level\": 2}}",
               "config.json: 'dynamic_batching.default_priority_level' is 2; expected 1 to 1");
    expect_bad("{\"dynamic_batching\": {\"default_priority_level\": 0}}",
               "config.json: 'dynamic_batching.default_priority_level' is 0; expected 1 to 1");
    expect_bad("{\"dynamic_batching\": {\"default_timeout_us\": 3600000001}}",
               "config.json: 'dynamic_batching.default_timeout_us' is 3600000001; expected 0 to "
               "3600000000");
    expect_bad(
        "{\"dynamic_batching\": {\"default_timeout_us\": -1}}",
        "config.json: 'dynamic_batching.default_timeout_us' is -1; expected 0 to 3600000000");

    const char *pq =
        "config.json: 'dynamic_batching.priority_queue_policy' must be an object keyed "
        "by priority level (\"1\", \"2\", ...)";
    expect_bad("{\"dynamic_batching\": {\"priority_queue_policy\": []}}", pq);
    expect_bad("{\"dynamic_batching\": {\"priority_queue_policy\": 1}}", pq);
    expect_bad(
        "{\"dynamic_batching\": {\"priority_queue_policy\": {\"2\": {}}}}",
        "config.json: dynamic_batching.priority_queue_policy key '2' must be a level from 1 to "
        "priority_levels (1)");
    expect_bad(
        "{\"dynamic_batching\": {\"priority_levels\": 3, "
        "\"priority_queue_policy\": {\"0\": {}}}}",
        "config.json: dynamic_batching.priority_queue_policy key '0' must be a level from 1 to "
        "priority_levels (3)");
    /* "01" would be a second spelling of level 1. */
    expect_bad(
        "{\"dynamic_batching\": {\"priority_levels\": 3, "
        "\"priority_queue_policy\": {\"01\": {}}}}",
        "config.json: dynamic_batching.priority_queue_policy key '01' must be a level from 1 to "
        "priority_levels (3)");
    expect_bad(
        "{\"dynamic_batching\": {\"priority_levels\": 3, "
        "\"priority_queue_policy\": {\"high\": {}}}}",
        "config.json: dynamic_batching.priority_queue_policy key 'high' must be a level from 1 to "
        "priority_levels (3)");
    expect_bad(
        "{\"dynamic_batching\": {\"priority_levels\": 3, "
        "\"priority_queue_policy\": {\"\": {}}}}",
        "config.json: dynamic_batching.priority_queue_policy key '' must be a level from 1 to "
        "priority_levels (3)");
    expect_bad(
        "{\"dynamic_batching\": {\"priority_levels\": 3, "
        "\"priority_queue_policy\": {\"1x\": {}}}}",
        "config.json: dynamic_batching.priority_queue_policy key '1x' must be a level from 1 to "
        "priority_levels (3)");
    expect_bad("{\"dynamic_batching\": {\"priority_levels\": 3, "
               "\"priority_queue_policy\": {\"99999999999999999999\": {}}}}",
               "config.json: dynamic_batching.priority_queue_policy key '99999999999999999999' "
               "must be a level "
               "from 1 to priority_levels (3)");
    expect_bad("{\"dynamic_batching\": {\"priority_queue_policy\": {\"1\": 5}}}",
               "config.json: 'dynamic_batching.priority_queue_policy.1' must be an object");
    expect_bad("{\"dynamic_batching\": {\"priority_queue_policy\": {\"1\": {\"size\": 1}}}}",
               "config.json: unknown key 'dynamic_batching.priority_queue_policy.1.size'");
    expect_bad("{\"dynamic_batching\": {\"priority_queue_policy\": {\"1\": "
               "{\"max_queue_size\": 0}}}}",
               "config.json: 'dynamic_batching.priority_queue_policy.1.max_queue_size' is 0; "
               "expected 1 to 1000000");
    expect_bad("{\"dynamic_batching\": {\"priority_levels\": 2, \"priority_queue_policy\": "
               "{\"2\": {\"default_timeout_us\": -1}}}}",
               "config.json: 'dynamic_batching.priority_queue_policy.2.default_timeout_us' is -1; "
               "expected 0 to 3600000000");
}

static void test_config_list_errors(void **state)
{
    (void)state;
    const char *pbs_n = "config.json: 'dynamic_batching.preferred_batch_sizes' must be an array of "
                        "1 to 16 integers";
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": []}}", pbs_n);
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": 8}}", pbs_n);
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": [1, 2, 3, 4, 5, 6, 7, 8, 9, "
               "10, 11, 12, 13, 14, 15, 16, 17]}}",
               pbs_n);
    const char *pbs_v = "config.json: 'dynamic_batching.preferred_batch_sizes' values must be "
                        "integers from 1 to 4096";
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": [0]}}", pbs_v);
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": [4097]}}", pbs_v);
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": [\"4\"]}}", pbs_v);
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": [2, 4.0]}}", pbs_v);
    const char *pbs_o = "config.json: 'dynamic_batching.preferred_batch_sizes' must be in "
                        "ascending order without repeats";
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": [4, 4]}}", pbs_o);
    expect_bad("{\"dynamic_batching\": {\"preferred_batch_sizes\": [8, 4]}}", pbs_o);

    expect_bad("{\"warmup\": 1}", "config.json: 'warmup' must be an object");
    expect_bad("{\"warmup\": {}}", "config.json: 'warmup.batch_sizes' is required");
    expect_bad("{\"warmup\": {\"count\": 2}}", "config.json: 'warmup.batch_sizes' is required");
    expect_bad("{\"warmup\": {\"batch_sizes\": [1], \"runs\": 1}}",
               "config.json: unknown key 'warmup.runs'");
    expect_bad("{\"warmup\": {\"batch_sizes\": [1], \"count\": 0}}",
               "config.json: 'warmup.count' is 0; expected 1 to 1000");
    expect_bad("{\"warmup\": {\"batch_sizes\": [1], \"count\": 1001}}",
               "config.json: 'warmup.count' is 1001; expected 1 to 1000");
    expect_bad("{\"warmup\": {\"batch_sizes\": []}}",
               "config.json: 'warmup.batch_sizes' must be an array of 1 to 16 integers");
    expect_bad("{\"warmup\": {\"batch_sizes\": [1, 0]}}",
               "config.json: 'warmup.batch_sizes' values must be integers from 1 to 4096");
}

static void test_config_version_policy_errors(void **state)
{
    (void)state;
    const char *vp = "config.json: 'version_policy' must be {\"latest\": N}, {\"all\": {}} or "
                     "{\"specific\": [versions]}";
    expect_bad("{\"version_policy\": 1}", vp);
    expect_bad("{\"version_policy\": \"latest\"}", vp);
    expect_bad("{\"version_policy\": {}}", vp);
    expect_bad("{\"version_policy\": {\"newest\": 1}}", vp);
    expect_bad("{\"version_policy\": {\"latest\": 1, \"all\": {}}}", vp);
    const char *lat = "config.json: 'version_policy.latest' must be an integer from 1 to 64";
    expect_bad("{\"version_policy\": {\"latest\": 0}}", lat);
    expect_bad("{\"version_policy\": {\"latest\": 65}}", lat);
    expect_bad("{\"version_policy\": {\"latest\": \"1\"}}", lat);
    expect_bad("{\"version_policy\": {\"latest\": {\"num_versions\": 0}}}",
               "config.json: 'version_policy.latest.num_versions' must be an integer from 1 to "
               "64");
    expect_bad("{\"version_policy\": {\"latest\": {}}}",
               "config.json: 'version_policy.latest.num_versions' must be an integer from 1 to "
               "64");
    expect_bad("{\"version_policy\": {\"latest\": {\"num\": 1}}}",
               "config.json: unknown key 'version_policy.latest.num'");
    expect_bad("{\"version_policy\": {\"latest\": {\"num_versions\": 1, \"x\": 2}}}",
               "config.json: unknown key 'version_policy.latest.x'");
    expect_bad("{\"version_policy\": {\"all\": 1}}",
               "config.json: 'version_policy.all' must be {}");
    expect_bad("{\"version_policy\": {\"all\": {\"x\": 1}}}",
               "config.json: 'version_policy.all' must be {}");
    const char *sp_n =
        "config.json: 'version_policy.specific' must be an array of 1 to 64 integers";
    expect_bad("{\"version_policy\": {\"specific\": []}}", sp_n);
    expect_bad("{\"version_policy\": {\"specific\": 3}}", sp_n);
    /* Triton's object forms name the key inside them. */
    expect_bad("{\"version_policy\": {\"specific\": {\"versions\": 3}}}",
               "config.json: 'version_policy.specific.versions' must be an array of 1 to 64 "
               "integers");
    expect_bad("{\"version_policy\": {\"specific\": {\"list\": [3]}}}",
               "config.json: unknown key 'version_policy.specific.list'");
    expect_bad("{\"version_policy\": {\"specific\": {\"versions\": [1], \"x\": 2}}}",
               "config.json: unknown key 'version_policy.specific.x'");
    expect_bad("{\"version_policy\": {\"specific\": [1000000000000000000]}}",
               "config.json: 'version_policy.specific' values must be integers from 1 to "
               "999999999999999999");
    expect_bad("{\"version_policy\": {\"specific\": [0]}}",
               "config.json: 'version_policy.specific' values must be integers from 1 to "
               "999999999999999999");
    expect_bad("{\"version_policy\": {\"specific\": [3, 2]}}",
               "config.json: 'version_policy.specific' must be in ascending order without "
               "repeats");
}

static void test_config_breaker_and_fail_rate_errors(void **state)
{
    (void)state;
    expect_bad("{\"circuit_breaker\": []}", "config.json: 'circuit_breaker' must be an object");
    expect_bad("{\"circuit_breaker\": {\"failures\": 1}}",
               "config.json: unknown key 'circuit_breaker.failures'");
    expect_bad("{\"circuit_breaker\": {\"consecutive_failures\": -1}}",
               "config.json: 'circuit_breaker.consecutive_failures' is -1; expected 0 to 1000000");
    expect_bad("{\"circuit_breaker\": {\"consecutive_failures\": 1000001}}",
               "config.json: 'circuit_breaker.consecutive_failures' is 1000001; expected 0 to "
               "1000000");
    expect_bad("{\"circuit_breaker\": {\"cooldown_us\": 999}}",
               "config.json: 'circuit_breaker.cooldown_us' is 999; expected 1000 to 3600000000");
    expect_bad("{\"circuit_breaker\": {\"cooldown_us\": 3600000001}}",
               "config.json: 'circuit_breaker.cooldown_us' is 3600000001; expected 1000 to "
               "3600000000");
    expect_bad("{\"circuit_breaker\": {\"cooldown_us\": 1e4}}",
               "config.json: 'circuit_breaker.cooldown_us' must be an integer");
    const char *fr = "config.json: 'sim.fail_rate' must be a number from 0 to 1";
    expect_bad("{\"sim\": {\"fail_rate\": 1.5}}", fr);
    expect_bad("{\"sim\": {\"fail_rate\": -0.1}}", fr);
    expect_bad("{\"sim\": {\"fail_rate\": \"0.5\"}}", fr);
    expect_bad("{\"sim\": {\"fail_rate\": null}}", fr);
    expect_bad("{\"sim\": {\"fail_rate\": 2}}", fr);
}

#define IO_OK "[{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": [4]}]"

static void test_config_io_errors(void **state)
{
    (void)state;
    expect_bad("{\"inputs\": {}, \"outputs\": " IO_OK "}",
               "config.json: 'inputs' must be an array");
    expect_bad("{\"inputs\": [], \"outputs\": " IO_OK "}",
               "config.json: 'inputs' must list 1 to 64 tensors");
    expect_bad("{\"inputs\": " IO_OK ", \"outputs\": \"Y\"}",
               "config.json: 'outputs' must be an array");
    expect_bad("{\"inputs\": [5], \"outputs\": " IO_OK "}",
               "config.json: 'inputs[0]' must be an object");
    expect_bad("{\"inputs\": " IO_OK ", \"outputs\": [{\"name\": \"Y\", \"datatype\": \"FP32\", "
               "\"dims\": [1]}, null]}",
               "config.json: 'outputs[1]' must be an object");
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": [1], "
               "\"shape\": [1]}], \"outputs\": " IO_OK "}",
               "config.json: unknown key 'inputs[0].shape'");
    expect_bad("{\"inputs\": [{\"datatype\": \"FP32\", \"dims\": [1]}], \"outputs\": " IO_OK "}",
               "config.json: 'inputs[0].name' must be a non-empty string");
    expect_bad("{\"inputs\": [{\"name\": \"\", \"datatype\": \"FP32\", \"dims\": [1]}], "
               "\"outputs\": " IO_OK "}",
               "config.json: 'inputs[0].name' must be a non-empty string");
    expect_bad("{\"inputs\": [{\"name\": 3, \"datatype\": \"FP32\", \"dims\": [1]}], "
               "\"outputs\": " IO_OK "}",
               "config.json: 'inputs[0].name' must be a non-empty string");
    const char *dt_msg = "config.json: 'inputs[0].datatype' must be one of BOOL, INT8, INT16, "
                         "INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP32, FP64, BYTES";
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP16\", \"dims\": [1]}], "
               "\"outputs\": " IO_OK "}",
               dt_msg);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"STRING\", \"dims\": [1]}], "
               "\"outputs\": " IO_OK "}",
               dt_msg);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"fp32\", \"dims\": [1]}], "
               "\"outputs\": " IO_OK "}",
               dt_msg);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"dims\": [1]}], \"outputs\": " IO_OK "}", dt_msg);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": 11, \"dims\": [1]}], "
               "\"outputs\": " IO_OK "}",
               dt_msg);
    const char *dims_arr = "config.json: 'inputs[0].dims' must be an array of at most 7 integers";
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\"}], \"outputs\": " IO_OK "}",
               dims_arr);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": 4}], "
               "\"outputs\": " IO_OK "}",
               dims_arr);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", "
               "\"dims\": [1, 1, 1, 1, 1, 1, 1, 1]}], \"outputs\": " IO_OK "}",
               dims_arr);
    const char *dims_val = "config.json: 'inputs[0].dims' values must be integers from 1 to "
                           "1073741824, or -1 (any size)";
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": [0]}], "
               "\"outputs\": " IO_OK "}",
               dims_val);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": [4, -2]}], "
               "\"outputs\": " IO_OK "}",
               dims_val);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": [1073741825]}], "
               "\"outputs\": " IO_OK "}",
               dims_val);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": [\"4\"]}], "
               "\"outputs\": " IO_OK "}",
               dims_val);
    expect_bad("{\"inputs\": [{\"name\": \"X\", \"datatype\": \"FP32\", \"dims\": [2.5]}], "
               "\"outputs\": " IO_OK "}",
               dims_val);
    /* The index in the message is the failing entry's. */
    expect_bad("{\"inputs\": " IO_OK ", \"outputs\": [{\"name\": \"A\", \"datatype\": \"INT8\", "
               "\"dims\": [1]}, {\"name\": \"B\", \"datatype\": \"INT8\", \"dims\": [0]}]}",
               "config.json: 'outputs[1].dims' values must be integers from 1 to 1073741824, or "
               "-1 (any size)");
}

static void test_config_io_too_many(void **state)
{
    (void)state;
    bd_buf_t b;
    bd_buf_init(&b);
    bd_buf_puts(&b, "{\"outputs\": " IO_OK ", \"inputs\": [");
    for (int i = 0; i < 65; i++) {
        bd_buf_printf(&b, "%s{\"name\": \"I%d\", \"datatype\": \"FP32\", \"dims\": [1]}",
                      i ? ", " : "", i);
    }
    bd_buf_puts(&b, "]}");
    expect_bad(b.data, "config.json: 'inputs' must list 1 to 64 tensors");
    /* 64 is the most allowed. */
    bd_buf_reset(&b);
    bd_buf_puts(&b, "{\"outputs\": " IO_OK ", \"inputs\": [");
    for (int i = 0; i < 64; i++) {
        bd_buf_printf(&b, "%s{\"name\": \"I%d\", \"datatype\": \"FP32\", \"dims\": [1]}",
                      i ? ", " : "", i);
    }
    bd_buf_puts(&b, "]}");
    bd_config_t cfg;
    bd_err_t err;
    assert_int_equal(parse(&cfg, b.data, &err), 0);
    assert_int_equal(cfg.model.n_inputs, 64);
    assert_string_equal(cfg.model.inputs[63].name, "I63");
    bd_config_dispose(&cfg);
    bd_buf_dispose(&b);
}

static void test_config_duplicate_names(void **state)
{
    (void)state;
    expect_bad("{\"inputs\": [{\"name\": \"A\", \"datatype\": \"FP32\", \"dims\": [1]}, "
               "{\"name\": \"B\", \"datatype\": \"FP32\", \"dims\": [1]}, "
               "{\"name\": \"A\", \"datatype\": \"INT8\", \"dims\": [2]}], \"outputs\": " IO_OK "}",
               "config.json: 'inputs' names 'A' twice");
    expect_bad("{\"inputs\": " IO_OK ", \"outputs\": [{\"name\": \"Y\", \"datatype\": \"FP32\", "
               "\"dims\": [1]}, {\"name\": \"Y\", \"datatype\": \"FP32\", \"dims\": [1]}]}",
               "config.json: 'outputs' names 'Y' twice");
}

static void test_config_inputs_without_outputs(void **state)
{
    (void)state;
    expect_bad("{\"inputs\": " IO_OK "}",
               "config.json: give both 'inputs' and 'outputs', or neither");
    expect_bad("{\"outputs\": " IO_OK "}",
               "config.json: give both 'inputs' and 'outputs', or neither");
    expect_bad("{\"backend\": \"sim\", \"inputs\": " IO_OK "}",
               "config.json: give both 'inputs' and 'outputs', or neither");
}

static void test_config_invalid_json(void **state)
{
    (void)state;
    bd_config_t cfg;
    bd_err_t err;
    const char *cases[][2] = {
        {"{", "config.json is not valid JSON: string or '}' expected near end of file (line 1)"},
        {"", "config.json is not valid JSON: '[' or '{' expected near end of file (line 1)"},
        /* Only an object or array may be the top level (jansson's default). */
        {"7", "config.json is not valid JSON: '[' or '{' expected near '7' (line 1)"},
        {"{\"instances\": 1,\n \"instances\": 2}",
         "config.json is not valid JSON: duplicate object key near '\"instances\"' (line 2)"},
        {"{\"a\": 1} x", "config.json is not valid JSON: end of file expected near 'x' (line 1)"},
        {"{\"a\": tru}", "config.json is not valid JSON: invalid token near 'tru' (line 1)"},
        /* An integer past int64 fails the parse itself; the sentence still names its key. */
        {"{\"instances\": 1,\n \"max_batch_size\" :\t1000000000000000000000000000000}",
         "config.json: 'max_batch_size' is an integer too far from 0 to read (line 2); "
         "docs/CONFIG.md gives its range"},
        {"{\"warmup\": {\"batch_sizes\": [1, 99999999999999999999]}}",
         "config.json: 'batch_sizes' is an integer too far from 0 to read (line 1); "
         "docs/CONFIG.md gives its range"},
        {"{\"instances\" : -99999999999999999999}",
         "config.json: 'instances' is an integer too far from 0 to read (line 1); "
         "docs/CONFIG.md gives its range"},
        /* A ':' in a string between key and number, or a key with an escaped quote: no key
         * is named rather than a wrong one. */
        {"{\"a\": [\"x:y\", 99999999999999999999]}",
         "config.json is not valid JSON: too big integer near '99999999999999999999' (line 1)"},
        {"{\"a\": [\":\", 99999999999999999999]}",
         "config.json is not valid JSON: too big integer near '99999999999999999999' (line 1)"},
        {"{\"a\\\"max_batch_size\": 99999999999999999999}",
         "config.json is not valid JSON: too big integer near '99999999999999999999' (line 1)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = parse(&cfg, cases[i][0], &err);
        if (rc != BD_EINVAL || err.code != BD_EINVAL || strcmp(err.msg, cases[i][1]) != 0) {
            fail_msg("json %zu gave rc=%d msg=\"%s\"; expected \"%s\"", i, rc, err.msg,
                     cases[i][1]);
        }
        bd_config_dispose(&cfg);
    }
    /* The length is honoured: bytes past it are not parsed. */
    const char *text = "{\"instances\": 2}garbage";
    assert_int_equal(parse(&cfg, NULL, &err), 0);
    bd_config_dispose(&cfg);
    cfg_init(&cfg, NULL);
    assert_int_equal(bd_config_parse(&cfg, text, 16, &err), 0);
    assert_int_equal(cfg.model.instances, 2);
    bd_config_dispose(&cfg);
    /* An embedded NUL inside the length is an error, not a silent end. */
    cfg_init(&cfg, NULL);
    assert_int_equal(bd_config_parse(&cfg, "{}\0{}", 5, &err), BD_EINVAL);
    assert_non_null(strstr(err.msg, "config.json is not valid JSON: "));
    bd_config_dispose(&cfg);
}

/* ---- repository ------------------------------------------------------------------------ */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bd_req_t *done;
    int calls;
} waiter_t;

static void on_done(bd_req_t *req, void *ctx)
{
    waiter_t *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->done = req;
    w->calls++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static bd_req_t *wait_done(waiter_t *w)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) != 0) {
            break;
        }
    }
    bd_req_t *r = w->done;
    pthread_mutex_unlock(&w->mu);
    return r;
}

static const char *alpha_cfg =
    "{\"backend\": \"sim\", \"max_batch_size\": 4,\n"
    " \"inputs\": [{\"name\": \"INPUT0\", \"datatype\": \"FP32\", \"dims\": [3]}],\n"
    " \"outputs\": [{\"name\": \"OUTPUT0\", \"datatype\": \"FP32\", \"dims\": [3]}],\n"
    " \"sim\": {\"latency_us\": 0, \"per_item_us\": 0}}\n";

static const char *beta_cfg =
    "{\"name\": \"beta\", \"backend\": \"sim\", \"dynamic_batching\": false, \"instances\": 2,\n"
    " \"inputs\": [{\"name\": \"A\", \"datatype\": \"INT32\", \"dims\": [2]},\n"
    "            {\"name\": \"B\", \"datatype\": \"UINT8\", \"dims\": [-1]}],\n"
    " \"outputs\": [{\"name\": \"A_OUT\", \"datatype\": \"INT32\", \"dims\": [2]},\n"
    "             {\"name\": \"B_OUT\", \"datatype\": \"UINT8\", \"dims\": [-1]}]}\n";

/* DIR/alpha   sim, versions 1 and 3 (+ a non-numeric folder and a numeric file: ignored)
 * DIR/badcfg  version 1, config.json with instances 0
 * DIR/beta    sim without batching, version 1
 * DIR/empty   config.json but no version folder
 * DIR/onnxbad version 1 with a garbage model.onnx, no config (onnxruntime)
 * plus a top-level file and a hidden folder, which are not models. */
static void make_repo(const char *dir)
{
    char p[512];
    make_dir(dir, "alpha");
    snprintf(p, sizeof p, "%s/alpha", dir);
    write_text(p, "config.json", alpha_cfg);
    make_dir(p, "1");
    make_dir(p, "3");
    make_dir(p, "latest");
    make_dir(p, "0x9");
    write_text(p, "7", "not a folder");

    make_dir(dir, "badcfg");
    snprintf(p, sizeof p, "%s/badcfg", dir);
    write_text(p, "config.json", "{\"backend\": \"sim\", \"instances\": 0}");
    make_dir(p, "1");

    make_dir(dir, "beta");
    snprintf(p, sizeof p, "%s/beta", dir);
    write_text(p, "config.json", beta_cfg);
    make_dir(p, "1");

    make_dir(dir, "empty");
    snprintf(p, sizeof p, "%s/empty", dir);
    write_text(p, "config.json", alpha_cfg);
    make_dir(p, "v1");
    make_dir(p, "01"); /* a leading zero: not a version folder (as in Triton) */

    make_dir(dir, "onnxbad");
    snprintf(p, sizeof p, "%s/onnxbad", dir);
    make_dir(p, "1");
    snprintf(p, sizeof p, "%s/onnxbad/1", dir);
    write_text(p, "model.onnx", "this is not an ONNX protobuf \x01\x02\x03\xff\xfe garbage");

    write_text(dir, "README", "not a model");
    make_dir(dir, ".hidden");
    snprintf(p, sizeof p, "%s/.hidden", dir);
    make_dir(p, "1");
}

static bd_model_t *find_ok(bd_repo_t *r, const char *name, const char *version)
{
    bd_model_t *m = NULL;
    bd_err_t err = {0};
    int rc = bd_repo_find(r, name, strlen(name), version, version ? strlen(version) : 0, &m, &err);
    if (rc != 0) {
        fail_msg("find %s/%s: %s", name, version ? version : "-", err.msg);
    }
    assert_non_null(m);
    return m;
}

static void expect_not_found(bd_repo_t *r, const char *name, size_t name_len, const char *version,
                             const char *msg)
{
    bd_model_t *m = (bd_model_t *)(uintptr_t)1;
    bd_err_t err = {0};
    assert_int_equal(
        bd_repo_find(r, name, name_len, version, version ? strlen(version) : 0, &m, &err),
        BD_ENOTFOUND);
    assert_int_equal(err.code, BD_ENOTFOUND);
    assert_string_equal(err.msg, msg);
    assert_ptr_equal(m, (bd_model_t *)(uintptr_t)1); /* untouched on failure */
}

static void test_repo_open_missing_dir(void **state)
{
    (void)state;
    bd_err_t err = {0};
    assert_null(bd_repo_open("/nonexistent/bd_test_repo", NULL, &err));
    assert_int_equal(err.code, BD_EIO);
    assert_string_equal(err.msg, "cannot read model repository '/nonexistent/bd_test_repo': No "
                                 "such file or directory");
}

static void test_repo_empty_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/bd_test_repo_empty.XXXXXX";
    assert_non_null(mkdtemp(dir));
    bd_err_t err = {0};
    bd_repo_t *r = bd_repo_open(dir, NULL, &err);
    assert_non_null(r);
    assert_int_equal(bd_repo_count(r), 0);
    assert_null(bd_repo_at(r, 0));
    expect_not_found(r, "m", 1, NULL, "unknown model 'm'");
    bd_repo_free(r);
    rm_tree(dir);
}

static void test_repo_models_versions_and_reasons(void **state)
{
    (void)state;
    bd_err_t err = {0};
    int ort_rc = bd_ort_init(NULL, NULL);
    assert_int_equal(ort_rc == 0, bd_ort_available());

    char dir[] = "/tmp/bd_test_repo.XXXXXX";
    assert_non_null(mkdtemp(dir));
    make_repo(dir);
    bd_metrics_t *metrics = bd_metrics_new();
    assert_non_null(metrics);
    bd_repo_opts_t opts = {.metrics = metrics};
    bd_repo_t *r = bd_repo_open(dir, &opts, &err);
    assert_non_null(r);

    /* Sorted by name; hidden folders and plain files are not models. */
    assert_int_equal(bd_repo_count(r), 5);
    static const char *const names[] = {"alpha", "badcfg", "beta", "empty", "onnxbad"};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(bd_model_name(bd_repo_at(r, i)), names[i]);
    }
    assert_null(bd_repo_at(r, 5));

    /* alpha: the highest numeric version folder is the one loaded. */
    bd_model_t *alpha = find_ok(r, "alpha", NULL);
    assert_ptr_equal(alpha, bd_repo_at(r, 0));
    assert_string_equal(bd_model_version(alpha), "3");
    assert_true(bd_model_ready(alpha));
    assert_string_equal(bd_model_reason(alpha), "");
    assert_string_equal(bd_model_platform(alpha), "batchd_sim");
    assert_non_null(bd_model_sched(alpha));
    assert_non_null(bd_model_metrics(alpha));
    const bd_model_config_t *acfg = bd_model_config(alpha);
    assert_non_null(acfg);
    assert_string_equal(acfg->name, "alpha");
    assert_int_equal(acfg->version, 3);
    char want[512];
    snprintf(want, sizeof want, "%s/alpha/3", dir);
    assert_string_equal(acfg->dir, want);
    snprintf(want, sizeof want, "%s/alpha/3/model.onnx", dir);
    assert_string_equal(acfg->model_path, want);
    assert_int_equal(acfg->max_batch_size, 4);
    /* No model file: the large-model default. */
    assert_int_equal(acfg->threads_per_instance, cores_per(1));
    assert_ptr_equal(find_ok(r, "alpha", "3"), alpha);
    assert_ptr_equal(find_ok(r, "alpha", ""), alpha);
    expect_not_found(r, "alpha", 5, "7", "model 'alpha' has no version '7'; it has 3");
    expect_not_found(r, "alpha", 5, "1", "model 'alpha' has no version '1'; it has 3");
    expect_not_found(r, "alpha", 5, "03", "model 'alpha' has no version '03'; it has 3");

    /* Lookups compare the whole name, by length. */
    expect_not_found(r, "nope", 4, NULL, "unknown model 'nope'");
    expect_not_found(r, "alphabet", 3, NULL, "unknown model 'alp'");
    expect_not_found(r, "alpha", 4, "3", "unknown model 'alph'");
    expect_not_found(r, "ALPHA", 5, NULL, "unknown model 'ALPHA'");
    expect_not_found(r, "", 0, NULL, "unknown model ''");

    /* beta: ready, no batching, two instances. */
    bd_model_t *beta = find_ok(r, "beta", "1");
    assert_true(bd_model_ready(beta));
    assert_string_equal(bd_model_version(beta), "1");
    assert_string_equal(bd_model_platform(beta), "batchd_sim");
    assert_false(bd_model_full_config(beta)->sched.dynamic_batching);
    assert_int_equal(bd_model_config(beta)->max_batch_size, 0);
    assert_int_equal(bd_model_config(beta)->instances, 2);

    /* badcfg: unavailable with the config error; its config exists (partly read). */
    bd_model_t *bad = find_ok(r, "badcfg", NULL);
    assert_false(bd_model_ready(bad));
    assert_null(bd_model_sched(bad));
    assert_string_equal(bd_model_reason(bad), "config.json: 'instances' is 0; expected 1 to 64");
    assert_string_equal(bd_model_version(bad), "1");
    assert_non_null(bd_model_config(bad));
    assert_string_equal(bd_model_platform(bad), "batchd_sim");

    /* empty: no numeric version folder ("v1" and "01" are not). */
    bd_model_t *empty = find_ok(r, "empty", NULL);
    assert_false(bd_model_ready(empty));
    assert_null(bd_model_sched(empty));
    snprintf(want, sizeof want,
             "no numeric version folder (such as %s/empty/1: 1 to 18 digits without a leading "
             "zero) was found",
             dir);
    assert_string_equal(bd_model_reason(empty), want);
    assert_string_equal(bd_model_version(empty), "");
    assert_null(bd_model_config(empty));
    assert_string_equal(bd_model_platform(empty), "onnxruntime_onnx");
    /* A version number gets the same answer: there is no version to tell apart. */
    assert_ptr_equal(find_ok(r, "empty", "1"), empty);
    expect_not_found(r, "empty", 5, "01", "model 'empty' has no version '01'; it has none");

    /* onnxbad: the backend's reason (or why ONNX Runtime is missing). */
    bd_model_t *onnx = find_ok(r, "onnxbad", NULL);
    assert_false(bd_model_ready(onnx));
    assert_null(bd_model_sched(onnx));
    assert_string_equal(bd_model_version(onnx), "1");
    assert_string_equal(bd_model_platform(onnx), "onnxruntime_onnx");
    const char *reason = bd_model_reason(onnx);
    if (bd_ort_available()) {
        snprintf(want, sizeof want, "cannot load model '%s/onnxbad/1/model.onnx': ", dir);
        if (strncmp(reason, want, strlen(want)) != 0 || strlen(reason) <= strlen(want)) {
            fail_msg("onnxbad reason \"%s\" does not start with \"%s\"", reason, want);
        }
    } else {
        assert_non_null(strstr(reason, "ONNX Runtime"));
        snprintf(want, sizeof want, "ONNX Runtime is unavailable: %s", bd_ort_unavailable_reason());
        assert_string_equal(reason, want);
    }

    /* One request through alpha's scheduler: two rows come back exactly. */
    waiter_t w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    bd_req_t *req = bd_req_new(0);
    assert_non_null(req);
    bd_tensor_t *in = bd_arena_calloc(&req->arena, 1, sizeof *in);
    float *x = bd_arena_alloc(&req->arena, 6 * sizeof(float));
    assert_non_null(in);
    assert_non_null(x);
    for (int k = 0; k < 6; k++) {
        x[k] = 0.5f * (float)k - 1.0f;
    }
    *in = (bd_tensor_t){.name = "INPUT0",
                        .dtype = BD_DT_FP32,
                        .shape = {2, {2, 3}},
                        .data = x,
                        .byte_size = 6 * sizeof(float)};
    req->in.inputs = in;
    req->in.n_inputs = 1;
    req->done = on_done;
    req->done_ctx = &w;
    if (bd_sched_submit(bd_model_sched(alpha), req, &err) != 0) {
        fail_msg("submit: %s", err.msg);
    }
    bd_req_t *got = wait_done(&w);
    assert_ptr_equal(got, req);
    assert_int_equal(req->status, 0);
    assert_string_equal(req->err.msg, "");
    assert_int_equal(req->rows, 2);
    assert_int_equal(req->n_outputs, 1);
    assert_string_equal(req->outputs[0].name, "OUTPUT0");
    assert_int_equal(req->outputs[0].dtype, BD_DT_FP32);
    assert_int_equal(req->outputs[0].shape.ndim, 2);
    assert_int_equal(req->outputs[0].shape.dims[0], 2);
    assert_int_equal(req->outputs[0].shape.dims[1], 3);
    assert_int_equal(req->outputs[0].byte_size, 24);
    const float *y = req->outputs[0].data;
    static const float expect[6] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
    assert_memory_equal(y, expect, sizeof expect);
    assert_true(req->end_us >= req->start_us && req->start_us >= req->arrival_us);
    assert_int_equal(bd_metrics_get_requests(bd_model_metrics(alpha), BD_OUTCOME_SUCCESS), 1);
    assert_int_equal(bd_metrics_get_items(bd_model_metrics(alpha)), 2);
    bd_req_free(req);

    /* After close, submits fail with BD_ESHUTDOWN and the caller keeps the request. */
    bd_repo_close(r);
    bd_req_t *late = bd_req_new(0);
    late->in.inputs = bd_arena_calloc(&late->arena, 1, sizeof(bd_tensor_t));
    late->in.inputs[0] = (bd_tensor_t){
        .name = "INPUT0", .dtype = BD_DT_FP32, .shape = {2, {1, 3}}, .data = x, .byte_size = 12};
    late->in.n_inputs = 1;
    late->done = on_done;
    late->done_ctx = &w;
    assert_int_equal(bd_sched_submit(bd_model_sched(alpha), late, &err), BD_ESHUTDOWN);
    bd_req_free(late);
    assert_int_equal(w.calls, 1);

    bd_repo_free(r);
    bd_metrics_free(metrics);
    rm_tree(dir);
}

/* Without ONNX Runtime an ONNX model is unavailable and says why; sim models still load. */
static void test_repo_onnx_model_without_runtime(void **state)
{
    (void)state;
    bd_ort_shutdown();
    bd_err_t err = {0};
    const char *bad = "/nonexistent/libonnxruntime.so.1";
    assert_int_equal(bd_ort_init(bad, &err), BD_EUNAVAIL);
    assert_false(bd_ort_available());

    char dir[] = "/tmp/bd_test_repo_noort.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[512];
    make_dir(dir, "onnx");
    snprintf(p, sizeof p, "%s/onnx", dir);
    make_dir(p, "2");
    snprintf(p, sizeof p, "%s/onnx/2", dir);
    write_text(p, "model.onnx", "garbage");
    make_dir(dir, "sim");
    snprintf(p, sizeof p, "%s/sim", dir);
    write_text(p, "config.json", alpha_cfg);
    make_dir(p, "1");

    bd_repo_t *r = bd_repo_open(dir, NULL, &err);
    assert_non_null(r);
    assert_int_equal(bd_repo_count(r), 2);
    bd_model_t *onnx = find_ok(r, "onnx", "2");
    assert_false(bd_model_ready(onnx));
    assert_string_equal(bd_model_reason(onnx),
                        "ONNX Runtime is unavailable: cannot load ONNX Runtime from "
                        "'/nonexistent/libonnxruntime.so.1': /nonexistent/libonnxruntime.so.1: "
                        "cannot open shared object file: No such file or directory");
    assert_string_equal(bd_model_platform(onnx), "onnxruntime_onnx");
    assert_non_null(bd_model_config(onnx));
    bd_model_t *sim = find_ok(r, "sim", NULL);
    assert_true(bd_model_ready(sim));
    assert_null(bd_model_metrics(sim)); /* no metrics registry given */
    bd_repo_free(r);
    rm_tree(dir);
    bd_ort_shutdown();
}

/* ---- live changes: version policies, load, reload, unload (repo.c's loader thread) ------ */

/* The tests play the event loop: they wait on the repository's notify descriptor and call
 * bd_repo_dispatch, which applies the loader's results and runs the load callbacks. */

typedef struct {
    int calls;
    int rc;
    char msg[BD_ERR_MSG_MAX];
} loaded_t;

static void on_loaded(void *ctx, int rc, const char *msg)
{
    loaded_t *l = ctx;
    l->calls++;
    l->rc = rc;
    snprintf(l->msg, sizeof l->msg, "%s", msg);
}

static void dispatch_until(bd_repo_t *r, const loaded_t *l, int calls)
{
    for (int i = 0; i < 3000 && l->calls < calls; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        bd_repo_dispatch(r);
    }
    assert_int_equal(l->calls, calls);
    assert_false(bd_repo_busy(r));
}

static void load_now(bd_repo_t *r, const char *name, loaded_t *l)
{
    bd_err_t err = {0};
    int before = l->calls;
    if (bd_repo_load(r, name, strlen(name), on_loaded, l, &err) != 0) {
        fail_msg("load %s: %s", name, err.msg);
    }
    assert_true(bd_repo_busy(r));
    dispatch_until(r, l, before + 1);
}

static void expect_index(bd_repo_t *r, bool ready_only, const char *want)
{
    bd_buf_t b;
    bd_buf_init(&b);
    bd_repo_index(r, ready_only, &b);
    assert_false(b.failed);
    if (strcmp(b.data, want) != 0) {
        fail_msg("index\n  got  %s\n  want %s", b.data, want);
    }
    bd_buf_dispose(&b);
}

/* Replace model `name`'s config.json with a sim config plus `extra` top-level keys. */
static void sim_rewrite(const char *dir, const char *name, const char *extra)
{
    char p[512], text[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(text, sizeof text,
             "{\"backend\": \"sim\", \"max_batch_size\": 4%s%s,\n"
             " \"inputs\": [{\"name\": \"INPUT0\", \"datatype\": \"FP32\", \"dims\": [3]}],\n"
             " \"outputs\": [{\"name\": \"OUTPUT0\", \"datatype\": \"FP32\", \"dims\": [3]}]}\n",
             extra ? ", " : "", extra ? extra : "");
    write_text(p, "config.json", text);
}

/* A sim model `name` with the given version folders and extra top-level config text. */
static void sim_versions(const char *dir, const char *name, const int *versions, size_t n,
                         const char *extra)
{
    char p[512];
    make_dir(dir, name);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    sim_rewrite(dir, name, extra);
    for (size_t i = 0; i < n; i++) {
        char v[24];
        snprintf(v, sizeof v, "%d", versions[i]);
        make_dir(p, v);
    }
}

static void rewrite_config(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_text(p, "config.json", text);
}

static void test_repo_version_policies(void **state)
{
    (void)state;
    char dir[] = "/tmp/bd_test_repo_vp.XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const int v123[] = {1, 2, 3};
    sim_versions(dir, "all", v123, 3, "\"version_policy\": {\"all\": {}}");
    sim_versions(dir, "dflt", v123, 3, NULL);
    sim_versions(dir, "lat2", v123, 3, "\"version_policy\": {\"latest\": 2}");
    sim_versions(dir, "spec", v123, 3, "\"version_policy\": {\"specific\": [1, 3, 5]}");
    bd_err_t err = {0};
    bd_repo_t *r = bd_repo_open(dir, NULL, &err);
    assert_non_null(r);
    assert_int_equal(bd_repo_count(r), 4);

    bd_model_t *vs[8];
    assert_int_equal(bd_repo_versions(r, "all", vs, 8), 3);
    assert_int_equal(bd_repo_versions(r, "dflt", vs, 8), 1);
    assert_string_equal(bd_model_version(vs[0]), "3");
    assert_int_equal(bd_repo_versions(r, "lat2", vs, 8), 2);
    assert_string_equal(bd_model_version(vs[0]), "2");
    assert_string_equal(bd_model_version(vs[1]), "3");
    assert_int_equal(bd_repo_versions(r, "nope", vs, 8), 0);
    /* cap 0 only counts */
    assert_int_equal(bd_repo_versions(r, "all", NULL, 0), 3);

    /* Without a version: the highest loaded one; each loaded version is its own object. */
    bd_model_t *l2 = find_ok(r, "lat2", "2");
    bd_model_t *l3 = find_ok(r, "lat2", NULL);
    assert_ptr_not_equal(l2, l3);
    assert_string_equal(bd_model_version(l3), "3");
    assert_true(bd_model_ready(l2) && bd_model_ready(l3));
    assert_ptr_not_equal(bd_model_sched(l2), bd_model_sched(l3));
    assert_int_equal(bd_model_config(l2)->version, 2);
    expect_not_found(r, "lat2", 4, "1", "model 'lat2' has no version '1'; it has 2, 3");

    /* specific: 1 and 3 load; 5 has no folder and says so; 3 is the default. */
    assert_string_equal(bd_model_version(find_ok(r, "spec", NULL)), "3");
    bd_model_t *s5 = find_ok(r, "spec", "5");
    assert_false(bd_model_ready(s5));
    char want[2048];
    snprintf(want, sizeof want,
             "version_policy.specific names version 5, but %s/spec/5 does not exist", dir);
    assert_string_equal(bd_model_reason(s5), want);
    expect_not_found(r, "spec", 4, "2",
                     "model 'spec' has no version '2'; it has 1, 3, 5 (unavailable)");

    snprintf(want, sizeof want,
             "[{\"name\":\"all\",\"version\":\"1\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"all\",\"version\":\"2\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"all\",\"version\":\"3\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"dflt\",\"version\":\"3\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"lat2\",\"version\":\"2\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"lat2\",\"version\":\"3\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"spec\",\"version\":\"1\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"spec\",\"version\":\"3\",\"state\":\"READY\",\"reason\":\"\"},"
             "{\"name\":\"spec\",\"version\":\"5\",\"state\":\"UNAVAILABLE\",\"reason\":"
             "\"version_policy.specific names version 5, but %s/spec/5 does not exist\"}]",
             dir);
    expect_index(r, false, want);
    bd_buf_t b;
    bd_buf_init(&b);
    bd_repo_index(r, true, &b);
    assert_null(strstr(b.data, "UNAVAILABLE"));
    assert_non_null(strstr(b.data, "{\"name\":\"spec\",\"version\":\"3\""));
    bd_buf_dispose(&b);
    bd_repo_free(r);
    rm_tree(dir);
}

static void test_repo_reload_swaps_after_load_and_keeps_old_alive(void **state)
{
    (void)state;
    char dir[] = "/tmp/bd_test_repo_rl.XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const int v1[] = {1};
    sim_versions(dir, "m", v1, 1, NULL);
    bd_err_t err = {0};
    bd_repo_t *r = bd_repo_open(dir, NULL, &err);
    assert_non_null(r);
    bd_model_t *old = find_ok(r, "m", NULL);
    assert_int_equal(bd_model_config(old)->max_batch_size, 4);
    bd_model_ref(old); /* as an in-flight request does */

    sim_versions(dir, "tmp", v1, 1, "\"instances\": 2");
    char from[600], to[600];
    snprintf(from, sizeof from, "%s/tmp/config.json", dir);
    snprintf(to, sizeof to, "%s/m/config.json", dir);
    assert_int_equal(rename(from, to), 0);
    loaded_t l = {0};
    assert_int_equal(bd_repo_load(r, "m", 1, on_loaded, &l, &err), 0);
    /* Nothing changes before the result is dispatched on the owner thread. */
    assert_ptr_equal(find_ok(r, "m", NULL), old);
    dispatch_until(r, &l, 1);
    assert_int_equal(l.rc, 0);
    bd_model_t *cur = find_ok(r, "m", NULL);
    assert_ptr_not_equal(cur, old);
    assert_true(bd_model_ready(cur));
    assert_int_equal(bd_model_config(cur)->instances, 2);
    /* The old version is out of service but alive while referenced: its queue refuses. */
    assert_false(bd_model_ready(old));
    assert_int_equal(bd_model_config(old)->instances, 1);
    bd_req_t *req = bd_req_new(0);
    float *x = bd_arena_calloc(&req->arena, 3, sizeof(float));
    req->in.inputs = bd_arena_calloc(&req->arena, 1, sizeof(bd_tensor_t));
    assert_non_null(x);
    assert_non_null(req->in.inputs);
    req->in.inputs[0] = (bd_tensor_t){
        .name = "INPUT0", .dtype = BD_DT_FP32, .shape = {2, {1, 3}}, .data = x, .byte_size = 12};
    req->in.n_inputs = 1;
    assert_int_equal(bd_sched_submit(bd_model_sched(old), req, &err), BD_ESHUTDOWN);
    bd_req_free(req);
    expect_index(r, false,
                 "[{\"name\":\"m\",\"version\":\"1\",\"state\":\"READY\",\"reason\":\"\"}]");
    bd_model_unref(old); /* the loader frees it now */

    /* A config that does not parse: the serving version stays, the reason says why. */
    rewrite_config(dir, "m", "{\"backend\": \"sim\", \"max_batch_size\": ");
    load_now(r, "m", &l);
    assert_int_equal(l.rc, BD_EINVAL);
    assert_string_equal(
        l.msg, "config.json is not valid JSON: unexpected token near end of file (line 1)");
    assert_ptr_equal(find_ok(r, "m", NULL), cur);
    assert_true(bd_model_ready(cur));
    assert_string_equal(bd_model_reason(cur),
                        "the last reload failed, so this version still serves: config.json is not "
                        "valid JSON: unexpected token near end of file (line 1)");

    /* A version that fails to load (sim without inputs): the old one of that number stays. */
    rewrite_config(dir, "m", "{\"backend\": \"sim\"}");
    load_now(r, "m", &l);
    assert_int_equal(l.rc, BD_EUNAVAIL);
    assert_string_equal(l.msg, "version 1: sim model: config.json must list \"inputs\" and "
                               "\"outputs\" (a sim model has no model file to read them from)");
    assert_ptr_equal(find_ok(r, "m", NULL), cur);
    assert_non_null(strstr(bd_model_reason(cur), "the last reload failed"));

    /* Fixed: swapped in, reason cleared. */
    sim_versions(dir, "tmp2", v1, 1, NULL);
    snprintf(from, sizeof from, "%s/tmp2/config.json", dir);
    assert_int_equal(rename(from, to), 0);
    load_now(r, "m", &l);
    assert_int_equal(l.rc, 0);
    bd_model_t *fixed = find_ok(r, "m", NULL);
    assert_ptr_not_equal(fixed, cur);
    assert_string_equal(bd_model_reason(fixed), "");

    /* A new version folder: latest 1 moves to it and version 1 is retired. */
    char p[512];
    snprintf(p, sizeof p, "%s/m", dir);
    make_dir(p, "2");
    load_now(r, "m", &l);
    assert_int_equal(l.rc, 0);
    assert_string_equal(bd_model_version(find_ok(r, "m", NULL)), "2");
    expect_not_found(r, "m", 1, "1", "model 'm' has no version '1'; it has 2");
    bd_repo_free(r);
    rm_tree(dir);
}

static void test_repo_unload_and_load_by_request(void **state)
{
    (void)state;
    char dir[] = "/tmp/bd_test_repo_ul.XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const int v1[] = {1};
    sim_versions(dir, "m", v1, 1, NULL);
    bd_err_t err = {0};
    bd_repo_t *r = bd_repo_open(dir, NULL, &err);
    assert_non_null(r);
    bd_model_t *old = find_ok(r, "m", NULL);
    bd_model_ref(old);
    assert_int_equal(bd_repo_unload(r, "m", 1, &err), 0);
    /* Still draining (a reference is held): UNLOADING. */
    expect_index(r, false,
                 "[{\"name\":\"m\",\"version\":\"1\",\"state\":\"UNLOADING\",\"reason\":"
                 "\"finishing the requests it had queued\"}]");
    bd_model_unref(old);
    const char *gone = "it is not loaded (unloaded through the repository API)";
    char want[512];
    snprintf(want, sizeof want, "[{\"name\":\"m\",\"state\":\"UNAVAILABLE\",\"reason\":\"%s\"}]",
             gone);
    expect_index(r, false, want);
    expect_index(r, true, "[]");
    bd_model_t *stub = find_ok(r, "m", NULL);
    assert_false(bd_model_ready(stub));
    assert_null(bd_model_sched(stub));
    assert_null(bd_model_config(stub));
    assert_string_equal(bd_model_version(stub), "");
    assert_string_equal(bd_model_reason(stub), gone);
    assert_ptr_equal(find_ok(r, "m", "1"), stub);
    assert_int_equal(bd_repo_count(r), 1);

    memset(&err, 0, sizeof err);
    assert_int_equal(bd_repo_unload(r, "zz", 2, &err), BD_ENOTFOUND);
    assert_string_equal(err.msg, "unknown model 'zz'");

    loaded_t l = {0};
    load_now(r, "m", &l);
    assert_int_equal(l.rc, 0);
    assert_true(bd_model_ready(find_ok(r, "m", "1")));

    /* An unload after a load was asked for wins when the load's result arrives. */
    assert_int_equal(bd_repo_load(r, "m", 1, on_loaded, &l, &err), 0);
    assert_int_equal(bd_repo_unload(r, "m", 1, &err), 0);
    expect_index(r, false, want); /* not LOADING: that load's result will be dropped */
    dispatch_until(r, &l, 2);
    assert_int_equal(l.rc, BD_EBUSY);
    assert_string_equal(l.msg, "model 'm' was unloaded while it loaded");
    assert_false(bd_model_ready(find_ok(r, "m", NULL)));

    /* A folder that does not exist: nothing is added. */
    load_now(r, "nofolder", &l);
    assert_int_equal(l.rc, BD_ENOTFOUND);
    assert_string_equal(l.msg, "the repository has no model folder 'nofolder'");
    assert_int_equal(bd_repo_count(r), 1);

    /* A folder added after start loads. */
    sim_versions(dir, "late", v1, 1, NULL);
    load_now(r, "late", &l);
    assert_int_equal(l.rc, 0);
    assert_int_equal(bd_repo_count(r), 2);
    assert_true(bd_model_ready(find_ok(r, "late", NULL)));

    /* Loads queue up to a bound (answers come only through dispatch, so nothing drains them
     * meanwhile): the 65th is refused at once with the reason. */
    loaded_t many = {0};
    for (int i = 0; i < 64; i++) {
        assert_int_equal(bd_repo_load(r, "late", 4, on_loaded, &many, &err), 0);
    }
    memset(&err, 0, sizeof err);
    assert_int_equal(bd_repo_load(r, "late", 4, on_loaded, &many, &err), BD_EFULL);
    assert_string_equal(err.msg, "64 model loads are already waiting; retry later");
    dispatch_until(r, &many, 64);
    assert_true(bd_model_ready(find_ok(r, "late", NULL)));

    /* Names that are not folder names. */
    static const char *const bad[] = {"",      ".hidden",   "..",      "a/b",
                                      "x\xff", "x\xc0\xaf", "del\x7f", "tab\t"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(bd_repo_load(r, bad[i], strlen(bad[i]), on_loaded, &l, &err), BD_EINVAL);
        assert_string_equal(err.msg,
                            "a model name must be a folder name of 1 to 255 bytes of UTF-8 "
                            "text, without control characters or '/' and not starting "
                            "with '.'");
    }
    assert_int_equal(bd_repo_load(r, "a\0b", 3, on_loaded, &l, &err), BD_EINVAL);

    /* After close: loads and unloads are refused. */
    bd_repo_close(r);
    assert_int_equal(bd_repo_load(r, "m", 1, on_loaded, &l, &err), BD_ESHUTDOWN);
    assert_string_equal(err.msg, "the server is shutting down");
    assert_int_equal(bd_repo_unload(r, "late", 4, &err), BD_ESHUTDOWN);
    assert_int_equal(l.calls, 4);
    bd_repo_free(r);
    rm_tree(dir);
}

/* bd_repo_ready's answer, its reason and its rows. */
static void expect_ready(bd_repo_t *r, bool ready, const char *why, const char *rows)
{
    bd_buf_t b;
    bd_buf_init(&b);
    char got[512] = "";
    assert_int_equal(bd_repo_ready(r, &b, got, sizeof got), ready);
    assert_false(b.failed);
    if (!ready && strcmp(got, why) != 0) {
        fail_msg("why\n  got  %s\n  want %s", got, why);
    }
    if (strcmp(b.data, rows) != 0) {
        fail_msg("rows\n  got  %s\n  want %s", b.data, rows);
    }
    bd_buf_dispose(&b);
}

static void test_repo_strict_readiness(void **state)
{
    (void)state;
    char dir[] = "/tmp/bd_test_repo_ready.XXXXXX";
    assert_non_null(mkdtemp(dir));
    bd_err_t err = {0};
    bd_repo_t *r = bd_repo_open(dir, NULL, &err);
    assert_non_null(r);
    expect_ready(r, false, "the repository has no model to serve", "[]");
    bd_repo_free(r);

    static const int v1[] = {1};
    sim_versions(dir, "good", v1, 1, NULL);
    sim_versions(dir, "m", v1, 1, "\"bogus\": 1");
    r = bd_repo_open(dir, NULL, &err);
    assert_non_null(r);
    const char *bad = "config.json: unknown key 'bogus'";
    char why[256], rows[512];
    snprintf(why, sizeof why, "model 'm' version 1 failed to load: %s", bad);
    snprintf(rows, sizeof rows,
             "[{\"name\":\"m\",\"version\":\"1\",\"state\":\"UNAVAILABLE\",\"reason\":\"%s\"}]",
             bad);
    expect_ready(r, false, why, rows);

    /* Unloaded on purpose: it does not count. */
    assert_int_equal(bd_repo_unload(r, "m", 1, &err), 0);
    expect_ready(r, true, "", "[]");

    /* Asked to load again: counts, as LOADING until the result is applied. */
    sim_rewrite(dir, "m", NULL);
    loaded_t l = {0};
    assert_int_equal(bd_repo_load(r, "m", 1, on_loaded, &l, &err), 0);
    expect_ready(r, false, "model 'm' is loading",
                 "[{\"name\":\"m\",\"state\":\"LOADING\",\"reason\":\"\"}]");
    dispatch_until(r, &l, 1);
    assert_int_equal(l.rc, 0);
    expect_ready(r, true, "", "[]");

    /* A reload that fails keeps the old version serving: still ready. */
    sim_rewrite(dir, "m", "\"bogus\": 2");
    load_now(r, "m", &l);
    assert_int_equal(l.rc, BD_EINVAL);
    expect_ready(r, true, "", "[]");

    /* Two not ready: the first is named, then how many more. */
    sim_versions(dir, "x", v1, 1, "\"bogus\": 3");
    sim_versions(dir, "y", NULL, 0, NULL); /* no version folder */
    load_now(r, "x", &l);
    load_now(r, "y", &l);
    bd_buf_t b;
    bd_buf_init(&b);
    assert_false(bd_repo_ready(r, &b, why, sizeof why));
    assert_string_equal(why, "model 'x' version 1 failed to load: config.json: unknown key "
                             "'bogus' (and 1 more not ready)");
    assert_non_null(strstr(b.data, "{\"name\":\"y\",\"state\":\"UNAVAILABLE\",\"reason\":"
                                   "\"no numeric version folder"));
    bd_buf_dispose(&b);
    bd_repo_free(r);
    rm_tree(dir);
}

int main(void)
{
    bd_log_set_level(BD_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_without_file),
        cmocka_unit_test(test_config_default_threads_follow_model_size),
        cmocka_unit_test(test_config_every_key),
        cmocka_unit_test(test_config_bounds_are_inclusive),
        cmocka_unit_test(test_config_dynamic_batching_false_and_partial),
        cmocka_unit_test(test_config_sim_backend_defaults),
        cmocka_unit_test(test_config_scheduling_key_variants),
        cmocka_unit_test(test_config_top_level_errors),
        cmocka_unit_test(test_config_integer_errors),
        cmocka_unit_test(test_config_dynamic_batching_errors),
        cmocka_unit_test(test_config_sim_errors),
        cmocka_unit_test(test_config_priority_errors),
        cmocka_unit_test(test_config_list_errors),
        cmocka_unit_test(test_config_version_policy_errors),
        cmocka_unit_test(test_config_breaker_and_fail_rate_errors),
        cmocka_unit_test(test_config_io_errors),
        cmocka_unit_test(test_config_io_too_many),
        cmocka_unit_test(test_config_duplicate_names),
        cmocka_unit_test(test_config_inputs_without_outputs),
        cmocka_unit_test(test_config_invalid_json),
        cmocka_unit_test(test_repo_open_missing_dir),
        cmocka_unit_test(test_repo_empty_dir),
        cmocka_unit_test(test_repo_models_versions_and_reasons),
        cmocka_unit_test(test_repo_onnx_model_without_runtime),
        cmocka_unit_test(test_repo_version_policies),
        cmocka_unit_test(test_repo_reload_swaps_after_load_and_keeps_old_alive),
        cmocka_unit_test(test_repo_unload_and_load_by_request),
        cmocka_unit_test(test_repo_strict_readiness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
