/* backend.c: the backend registry (name -> vtable) and the model configuration's memory.
 *
 * A bd_model_config_t owns its strings and io arrays; bd_model_config_dispose frees them and
 * leaves the struct reusable (pointers NULL, counts 0). The scalar fields stay as they were.
 *
 * Threads: bd_backend_find is pure; a config belongs to one thread at a time (the loader
 * fills it, then workers only read it). */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

const bd_backend_ops_t *bd_backend_find(const char *name)
{
    if (!name) {
        return NULL;
    }
    if (strcmp(name, bd_backend_ort.name) == 0) {
        return &bd_backend_ort;
    }
    if (strcmp(name, bd_backend_sim.name) == 0) {
        return &bd_backend_sim;
    }
    return NULL;
}

static void free_io(bd_io_t **arr, size_t *count)
{
    if (*arr) {
        for (size_t i = 0; i < *count; i++) {
            free((*arr)[i].name);
        }
    }
    free(*arr);
    *arr = NULL;
    *count = 0;
}

void bd_model_config_dispose(bd_model_config_t *cfg)
{
    if (!cfg) {
        return;
    }
    free(cfg->name);
    cfg->name = NULL;
    free(cfg->dir);
    cfg->dir = NULL;
    free(cfg->model_path);
    cfg->model_path = NULL;
    free(cfg->device);
    cfg->device = NULL;
    free_io(&cfg->inputs, &cfg->n_inputs);
    free_io(&cfg->outputs, &cfg->n_outputs);
}

int bd_model_config_alloc_io(bd_io_t **arr, size_t *count, size_t n)
{
    /* "Replacing none": an array already there is the caller's to free first. */
    *arr = NULL;
    *count = 0;
    if (n == 0) {
        return 0;
    }
    size_t bytes;
    if (!bd_mul_size(n, sizeof(bd_io_t), &bytes)) {
        return BD_ENOMEM;
    }
    bd_io_t *a = calloc(1, bytes);
    if (!a) {
        return BD_ENOMEM;
    }
    *arr = a;
    *count = n;
    return 0;
}
