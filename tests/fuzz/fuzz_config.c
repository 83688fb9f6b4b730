/* fuzz_config.c: libFuzzer target for bd_config_parse (a model's config.json).
 *
 * The input is the JSON text, copied to an exact-size buffer so a read past its end is
 * caught. After each parse the result is checked, not just survived: a failure must carry
 * its code and a "config.json..." sentence; a success must leave a config that every later
 * stage may trust (bounds, defaults, io lists, policies). Everything the parse allocated is
 * freed with bd_config_dispose, so LeakSanitizer catches leaks on error paths too.
 * Single-threaded. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_io(const bd_io_t *io, size_t n)
{
    if ((n == 0) != (io == NULL) || n > 64) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (!io[i].name || !io[i].name[0] || !bd_dtype_supported(io[i].dtype) ||
            io[i].dims.ndim < 0 || io[i].dims.ndim > BD_MAX_DIMS - 1) {
            abort();
        }
        for (int d = 0; d < io[i].dims.ndim; d++) {
            int64_t v = io[i].dims.dims[d];
            if (v != -1 && (v < 1 || v > (1 << 30))) {
                abort();
            }
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(io[i].name, io[j].name) == 0) {
                abort();
            }
        }
    }
}

static void check_ok(const bd_config_t *c)
{
    if (strcmp(c->model.backend, "onnxruntime") != 0 && strcmp(c->model.backend, "sim") != 0) {
        abort();
    }
    if (c->model.max_batch_size < BD_MAX_BATCH_UNSET || c->model.max_batch_size > 4096 ||
        (strcmp(c->model.backend, "sim") == 0 && c->model.max_batch_size < 0)) {
        abort();
    }
    if (c->model.instances < 1 || c->model.instances > 64 || c->model.threads_per_instance < 1 ||
        c->model.threads_per_instance > 256) {
        abort();
    }
    if (c->sched.max_queue_delay_us > 60000000u || c->sched.max_queue_size < 1 ||
        c->sched.max_queue_size > 1000000u ||
        (c->sched.delay_auto && c->sched.max_queue_delay_us != 0)) {
        abort();
    }
    if (c->sched.priority_levels < 1 || c->sched.priority_levels > BD_MAX_PRIORITY_LEVELS ||
        c->sched.default_priority_level < 1 ||
        c->sched.default_priority_level > c->sched.priority_levels) {
        abort();
    }
    for (int i = 0; i < BD_MAX_PRIORITY_LEVELS; i++) {
        if (c->sched.levels[i].max_queue_size < 1 || c->sched.levels[i].max_queue_size > 1000000u ||
            c->sched.levels[i].default_timeout_us > 3600000000u) {
            abort();
        }
    }
    if (c->sched.n_preferred_batch_sizes > BD_MAX_LIST) {
        abort();
    }
    for (size_t i = 0; i < c->sched.n_preferred_batch_sizes; i++) {
        int v = c->sched.preferred_batch_sizes[i];
        if (v < 1 || v > 4096 || (i > 0 && v <= c->sched.preferred_batch_sizes[i - 1])) {
            abort();
        }
    }
    if (c->sched.warmup.n_batch_sizes > BD_MAX_LIST ||
        (c->sched.warmup.n_batch_sizes > 0 &&
         (c->sched.warmup.count < 1 || c->sched.warmup.count > 1000))) {
        abort();
    }
    for (size_t i = 0; i < c->sched.warmup.n_batch_sizes; i++) {
        if (c->sched.warmup.batch_sizes[i] < 1 || c->sched.warmup.batch_sizes[i] > 4096) {
            abort();
        }
    }
    if (c->sched.circuit_breaker.consecutive_failures < 0 ||
        c->sched.circuit_breaker.consecutive_failures > 1000000 ||
        c->sched.circuit_breaker.cooldown_us < 1000 ||
        c->sched.circuit_breaker.cooldown_us > 3600000000u) {
        abort();
    }
    switch (c->version_policy.kind) {
    case BD_VERSIONS_LATEST:
        if (c->version_policy.latest < 1 || c->version_policy.latest > 64) {
            abort();
        }
        break;
    case BD_VERSIONS_ALL:
        break;
    case BD_VERSIONS_SPECIFIC:
        if (c->version_policy.n_versions < 1 ||
            c->version_policy.n_versions > BD_MAX_SPECIFIC_VERSIONS) {
            abort();
        }
        for (size_t i = 0; i < c->version_policy.n_versions; i++) {
            int64_t v = c->version_policy.versions[i];
            if (v < 1 || (i > 0 && v <= c->version_policy.versions[i - 1])) {
                abort();
            }
        }
        break;
    default:
        abort();
    }
    if (c->model.sim.latency_us > 60000000u || c->model.sim.per_item_us > 60000000u ||
        !(c->model.sim.fail_rate >= 0.0 && c->model.sim.fail_rate <= 1.0)) {
        abort();
    }
    if (c->model.device && strcmp(c->model.device, "cpu") != 0 &&
        strncmp(c->model.device, "cuda:", 5) != 0) {
        abort();
    }
    if ((c->model.n_inputs == 0) != (c->model.n_outputs == 0)) {
        abort();
    }
    check_io(c->model.inputs, c->model.n_inputs);
    check_io(c->model.outputs, c->model.n_outputs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = malloc(size ? size : 1);
    if (!json) {
        return 0;
    }
    if (size) {
        memcpy(json, data, size);
    }
    bd_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.model.name = strdup("m"); /* a "name" key must equal the folder name */
    if (!cfg.model.name) {
        free(json);
        return 0;
    }
    cfg.model.version = 1;
    bd_err_t err;
    memset(&err, 0, sizeof err);
    int rc = bd_config_parse(&cfg, json, size, &err);
    if (rc != 0) {
        if (rc != err.code || (rc != BD_EINVAL && rc != BD_ENOMEM) ||
            strncmp(err.msg, "config.json", 11) != 0 || strlen(err.msg) >= BD_ERR_MSG_MAX) {
            abort();
        }
    } else {
        if (err.code != 0 || err.msg[0] != '\0') {
            abort();
        }
        check_ok(&cfg);
    }
    bd_config_dispose(&cfg);
    free(json);
    return 0;
}
