/* backend: the small vtable every model backend implements, the model configuration it
 * reads and completes, and the two backends: "onnxruntime" (ONNX Runtime's C API, loaded
 * with dlopen at run time) and "sim" (a synthetic model for tests and capacity planning:
 * output i is a copy of input i, a batch of n takes latency_us + n * per_item_us).
 *
 * Lifecycle: bd_backend_find(name) -> ops; ops->load(cfg) once per model version (loader
 * thread) -> bd_backend_model_t; ops->instance_new once per instance (loader thread); then
 * ops->run on that instance's worker thread only; instance_free, unload at shutdown after
 * the workers joined.
 *
 * Threads: load/unload/instance_new/instance_free on the thread that manages models; run on
 * the instance's own worker thread. Instances of one model run concurrently. */
#ifndef BD_BACKEND_H
#define BD_BACKEND_H

#include "core/core.h"
#include "image/image.h"
#include "tensor/tensor.h"

/* The most inputs, and the most outputs, a model may have (config.json's lists, and what a
 * model file declares). */
#define BD_MAX_IO 64

/* One input or output as the model declares it. With max_batch_size > 0, `dims` excludes
 * the batch dimension (as in Triton). -1 in dims: any size. */
typedef struct {
    char *name; /* owned by the config */
    bd_dtype_t dtype;
    bd_shape_t dims;
} bd_io_t;

/* max_batch_size when config.json did not say: the onnxruntime backend's load sets it to
 * BD_DEFAULT_MAX_BATCH when every input and output has a dynamic first dim (symbolic or
 * -1), else 0; the sim backend sets it to 0. */
#define BD_MAX_BATCH_UNSET (-1)
#define BD_DEFAULT_MAX_BATCH 64

/* What a backend needs to load and run one model version. The scheduler's policy
 * (bd_sched_policy_t, sched.h) and the repository's version policy (repo.h) live with their
 * modules; the repository parses all three from config.json. */
typedef struct {
    char *name; /* owned */
    int64_t version;
    char *dir;                /* owned: the version folder, e.g. models/mlp/1 */
    char *model_path;         /* owned: <dir>/model.onnx (unused by sim) */
    char backend[32];         /* "onnxruntime" or "sim" */
    int max_batch_size;       /* 0: the model has no batch dimension; requests run alone */
    int instances;            /* worker threads, each with its own session */
    int threads_per_instance; /* intra-op threads per session */
    bool intra_op_spinning;   /* those threads spin while they wait for work (ONNX Runtime's
                                 own default); false: they sleep at once */
    bd_io_t *inputs;          /* owned array; may be NULL/0 before load: the backend fills it in */
    size_t n_inputs;
    bd_io_t *outputs;
    size_t n_outputs;
    struct {
        uint64_t latency_us;
        uint64_t per_item_us;
        double fail_rate; /* share of batches that fail, 0..1 */
    } sim;
    char *device; /* owned; NULL or "cpu" or "cuda:N" */
    /* Where the loaded model runs, filled in by load (zeroed until then). */
    struct {
        char device[16];   /* "cpu" or "cuda:N" */
        char provider[32]; /* "CPUExecutionProvider", "CUDAExecutionProvider"; sim: "sim" */
        int nodes;         /* graph nodes ONNX Runtime placed; -1: the library cannot say */
        int cpu_nodes;     /* of those, on the CPU (a CUDA model's fallback); -1: unknown */
    } placement;
    /* config.json's "preprocess": the input named image.input (the model's FP32 tensor,
     * as `inputs` lists it) is offered to clients as BYTES, one encoded image per row, and
     * decoded into the batch by the scheduler's workers (image.h). */
    bd_image_spec_t image;
} bd_model_config_t;

/* Free everything the config owns (not the struct itself). */
void bd_model_config_dispose(bd_model_config_t *cfg);
/* Allocate `n` zeroed io entries into cfg->inputs/outputs (replacing none). BD_ENOMEM. */
int bd_model_config_alloc_io(bd_io_t **arr, size_t *count, size_t n);

typedef struct bd_backend_model bd_backend_model_t;       /* backend-defined */
typedef struct bd_backend_instance bd_backend_instance_t; /* backend-defined */

/* One request's share of a batch: its rows and what it asked the backend for. */
typedef struct {
    size_t row0;              /* its first row in the batch (0 when the model does not batch) */
    size_t rows;              /* its rows (1 when the model does not batch) */
    const char *id;           /* the request's id, or NULL */
    const bd_param_t *params; /* its request-level parameters (bd_infer_req_t.params) */
    size_t n_params;
} bd_backend_req_t;

/* The requests a run serves, in row order. Borrowed for the duration of run only. */
typedef struct {
    const bd_backend_req_t *reqs;
    size_t n_reqs;
} bd_backend_batch_t;

typedef struct {
    const char *name;
    /* Load a model version. Fills cfg->inputs/outputs from the model file when the config
     * gave none, and checks them against the file when it did; checks that max_batch_size
     * is consistent with the model's first dimension. Returns 0 and *out (owned by the
     * caller, freed with unload), or an error code with the reason in err. */
    int (*load)(bd_model_config_t *cfg, bd_backend_model_t **out, bd_err_t *err);
    void (*unload)(bd_backend_model_t *m);
    /* One session per instance; index is 0..instances-1. */
    int (*instance_new)(bd_backend_model_t *m, int index, bd_backend_instance_t **out,
                        bd_err_t *err);
    void (*instance_free)(bd_backend_instance_t *inst);
    /* Run one batch. inputs[i] matches cfg->inputs[i] (name, dtype) with shape
     * [rows, dims...] (or the request's own shape when max_batch_size == 0), data
     * contiguous. `batch` lists the requests whose rows these are, with their parameters;
     * NULL when the run serves no request (warmup, tests). On success outputs[i]
     * (i < cfg->n_outputs, in config order) is filled with name, dtype, shape (first dim =
     * rows when batching) and data owned by the instance, valid until the next run or
     * instance_free. Returns 0; BD_EINVAL when the model refuses the input values (not
     * their types or shapes: the scheduler checked those), after which the scheduler runs
     * the batch's requests again one at a time so that a request refused alone fails alone
     * (400); or BD_EBACKEND. err is set with either. */
    int (*run)(bd_backend_instance_t *inst, const bd_tensor_t *inputs, size_t n_inputs,
               bd_tensor_t *outputs, size_t n_outputs, const bd_backend_batch_t *batch,
               bd_err_t *err);
    /* Optional (NULL: any parameters are fine). Check one request's parameters before it is
     * queued, so one this backend would misread fails alone (BD_EINVAL, one sentence) rather
     * than its batch. Parameters the backend does not know are not its business. Any
     * thread; must not block. */
    int (*check_params)(const bd_backend_model_t *m, const bd_param_t *params, size_t n_params,
                        bd_err_t *err);
} bd_backend_ops_t;

/* "onnxruntime" or "sim"; NULL for an unknown name. */
const bd_backend_ops_t *bd_backend_find(const char *name);

extern const bd_backend_ops_t bd_backend_sim;
extern const bd_backend_ops_t bd_backend_ort;

/* ---- ONNX Runtime library -------------------------------------------------------------- */

/* Load libonnxruntime from `path` (NULL: BD_ORT_DEFAULT_LIB, then "libonnxruntime.so.1" on
 * the loader's path) and bind the highest API version the library offers (its minor release:
 * 1.29 offers 29), at most 30 and at least 5.
 * Call once at start-up, before any load. Returns 0, or an error whose message says why
 * ONNX models are unavailable; the sim backend works either way. */
int bd_ort_init(const char *path, bd_err_t *err);
/* "1.30.0", or NULL when not initialised. */
const char *bd_ort_version(void);
/* The loaded library: its file, the API version bound, and the CUDA execution provider
 * library beside it (libonnxruntime_providers_cuda.so, which ONNX Runtime loads from the
 * directory of libonnxruntime) or NULL when there is none. false when not initialised.
 * Strings are valid until bd_ort_shutdown. */
typedef struct {
    const char *version;
    const char *path;
    unsigned api_version;
    const char *cuda_provider;
} bd_ort_info_t;
bool bd_ort_info(bd_ort_info_t *out);
bool bd_ort_available(void);
/* Why it is unavailable (the bd_ort_init error), or "" when available. */
const char *bd_ort_unavailable_reason(void);
/* dlclose and forget; for shutdown and tests. */
void bd_ort_shutdown(void);

#endif
