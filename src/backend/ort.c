/* ort.c: the "onnxruntime" backend. ONNX Runtime is loaded with dlopen at run time
 * (bd_ort_init), so batchd builds and runs without it; the API table is declared by us in
 * ort_api.h and called slot by slot.
 *
 * - bd_ort_init: dlopen, OrtGetApiBase, GetApi(the library's own minor version, e.g. 29 for
 *   1.29, at most 30, down to BD_ORT_API_MIN), an env whose log is batchd's (ort_log), one
 *   CPU memory info. Slots newer
 *   than BD_ORT_API_MIN are called only when the bound version has them (ORT_HAS). A failure
 *   is kept as a sentence (bd_ort_unavailable_reason) so the server can say why ONNX models
 *   are unavailable.
 * - load: opens one session to read the model's inputs and outputs, fills or checks the
 *   config against them, and keeps that session for the first instance (so a model is read
 *   from disk once when it has one instance). It also records where ORT placed the nodes
 *   (cfg->placement: API 24+ reports each node's execution provider).
 * - "device": "cuda:N" appends the CUDA execution provider (append_cuda): the V2 options when
 *   the build has them, else the 1.6 options struct, with batchd's settings either way. ORT
 *   loads libonnxruntime_providers_cuda.so from beside libonnxruntime, and that needs the CUDA
 *   13 libraries and the driver's libcuda.so.1; every way this fails becomes one sentence that
 *   says what to do (cuda_failure). A batch is one Run with CPU tensors, so ORT copies each
 *   input to the GPU once per batch and the outputs back once per batch.
 * - instance_new: its own OrtSession and OrtRunOptions. run: wraps the caller's input
 *   buffers without copying, lets ORT allocate the outputs, and keeps those OrtValues in the
 *   instance until the next run or instance_free, which is what makes outputs[i].data valid.
 *
 * The library is opened RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE: bd_ort_shutdown releases
 * everything we created and dlcloses, but the code stays mapped. Unmapping ORT is not safe
 * (its static destructors and pool threads may still run at exit), and ORT keeps one small
 * global allocation for the process's life that LSan can only attribute (and tests/lsan.supp
 * suppress) while the module is still mapped.
 *
 * Every OrtStatus is read and released here; every ORT failure becomes BD_EBACKEND with
 * ORT's own message. Config mismatches are BD_EINVAL, element types batchd cannot carry
 * BD_EUNSUPPORTED, a missing model file BD_EIO.
 *
 * Threads: bd_ort_init/bd_ort_shutdown on the start-up thread, before any load and after
 * every unload (the global state `g` is then read-only). load/unload/instance_new/
 * instance_free on the model-managing thread; run on the instance's worker thread only.
 * Instances share the read-only model; each owns its session, run options and outputs. */
#include "backend/backend.h"
#include "backend/ort_api.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef BD_ORT_DEFAULT_LIB
#define BD_ORT_DEFAULT_LIB "libonnxruntime.so.1"
#endif
#define ORT_SONAME "libonnxruntime.so.1"
#define CUDA_PROVIDER "libonnxruntime_providers_cuda.so"
#define SHARED_PROVIDER "libonnxruntime_providers_shared.so"
#define GPU_SETUP_HINT                                                                             \
    "install the GPU build with `make setup GPU=1` and start batchd with --onnxruntime-lib "       \
    "third_party/onnxruntime-gpu/libonnxruntime.so.1"
#define NOT_INITIALISED "ONNX Runtime is not initialised (bd_ort_init was not called)"

/* Process-wide library state; written only by bd_ort_init/bd_ort_shutdown. */
static struct {
    void *lib;
    const bd_ort_slot_t *api;
    uint32_t api_version;
    OrtEnv *env;
    OrtMemoryInfo *cpu_mem;
    char version[32];
    char path[PATH_MAX];          /* the library file as loaded (absolute when known) */
    char dir[PATH_MAX];           /* its folder, where ORT looks for provider libraries */
    char cuda_provider[PATH_MAX]; /* <dir>/CUDA_PROVIDER when it and SHARED_PROVIDER exist */
    char reason[BD_ERR_MSG_MAX];
    atomic_int live_models; /* loaded models; shutdown refuses while any remain */
} g;

/* ---- helpers --------------------------------------------------------------------------- */

/* If `st` is an error: set err to "<prefix>: <ORT message>" (BD_EBACKEND), release `st`
 * and return BD_EBACKEND. NULL status: return 0. */
__attribute__((format(printf, 3, 4))) static int ort_check(OrtStatus *st, bd_err_t *err,
                                                           const char *fmt, ...)
{
    if (!st) {
        return 0;
    }
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    const char *msg = ORT_FN(g.api, GetErrorMessage)(st);
    bd_err_set(err, BD_EBACKEND, "%s: %s", prefix, msg && msg[0] ? msg : "(no message)");
    ORT_FN(g.api, ReleaseStatus)(st);
    if (err) { /* ORT's messages may hold line breaks and end with one: one line, no tail */
        size_t n = 0;
        for (char *p = err->msg; *p; p++) {
            *p = (unsigned char)*p < 0x20 ? ' ' : *p;
            n = *p != ' ' ? (size_t)(p - err->msg) + 1 : n;
        }
        err->msg[n] = '\0';
    }
    return BD_EBACKEND;
}

static const struct {
    int elem;
    bd_dtype_t dtype;
} elem_map[] = {
    {ORT_ELEM_FLOAT, BD_DT_FP32},    {ORT_ELEM_DOUBLE, BD_DT_FP64},
    {ORT_ELEM_BOOL, BD_DT_BOOL},     {ORT_ELEM_INT8, BD_DT_INT8},
    {ORT_ELEM_INT16, BD_DT_INT16},   {ORT_ELEM_INT32, BD_DT_INT32},
    {ORT_ELEM_INT64, BD_DT_INT64},   {ORT_ELEM_UINT8, BD_DT_UINT8},
    {ORT_ELEM_UINT16, BD_DT_UINT16}, {ORT_ELEM_UINT32, BD_DT_UINT32},
    {ORT_ELEM_UINT64, BD_DT_UINT64}, {ORT_ELEM_STRING, BD_DT_BYTES},
};

/* The bd dtype for an ORT element type; BD_DT_INVALID when batchd cannot carry it. */
static bd_dtype_t dtype_from_elem(int elem)
{
    for (size_t i = 0; i < sizeof elem_map / sizeof elem_map[0]; i++) {
        if (elem_map[i].elem == elem) {
            return elem_map[i].dtype;
        }
    }
    return BD_DT_INVALID;
}

static const char *elem_name(int elem, char *buf, size_t cap)
{
    static const char *names[] = {"UNDEFINED",  "FLOAT",   "UINT8",  "INT8",   "UINT16",
                                  "INT16",      "INT32",   "INT64",  "STRING", "BOOL",
                                  "FLOAT16",    "DOUBLE",  "UINT32", "UINT64", "COMPLEX64",
                                  "COMPLEX128", "BFLOAT16"};
    if (elem >= 0 && (size_t)elem < sizeof names / sizeof names[0]) {
        return names[elem];
    }
    snprintf(buf, cap, "element type %d", elem);
    return buf;
}

static const char *onnx_type_name(int t)
{
    switch (t) {
    case ONNX_TYPE_SEQUENCE:
        return "a sequence";
    case ONNX_TYPE_MAP:
        return "a map";
    case ONNX_TYPE_OPAQUE:
        return "an opaque value";
    case ONNX_TYPE_SPARSETENSOR:
        return "a sparse tensor";
    case ONNX_TYPE_OPTIONAL:
        return "an optional";
    default:
        return "of unknown type";
    }
}

/* ---- library --------------------------------------------------------------------------- */

static void set_reason(const bd_err_t *e)
{
    snprintf(g.reason, sizeof g.reason, "%s", e->msg);
}

static bool is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* g.path, g.dir and g.cuda_provider for the library that exports `sym`. ORT looks for its
 * provider libraries in the folder of the file name the loader reports (dladdr), symlinks not
 * resolved, so g.dir is that folder too (made absolute, not resolved). */
static void locate_library(void *sym, const char *used)
{
    Dl_info info;
    const char *file = dladdr(sym, &info) && info.dli_fname ? info.dli_fname : used;
    char cwd[PATH_MAX];
    int n = -1;
    if (file[0] != '/' && strchr(file, '/') && getcwd(cwd, sizeof cwd)) {
        n = snprintf(g.path, sizeof g.path, "%s/%s", cwd, file);
    }
    if (n < 0 || (size_t)n >= sizeof g.path) {
        snprintf(g.path, sizeof g.path, "%s", file);
    }
    const char *slash = strrchr(g.path, '/');
    if (slash) {
        snprintf(g.dir, sizeof g.dir, "%.*s", (int)(slash - g.path), g.path);
    } else {
        snprintf(g.dir, sizeof g.dir, ".");
    }
    char shared[PATH_MAX + 64];
    char cuda[PATH_MAX + 64];
    snprintf(shared, sizeof shared, "%s/%s", g.dir, SHARED_PROVIDER);
    snprintf(cuda, sizeof cuda, "%s/%s", g.dir, CUDA_PROVIDER);
    size_t len = strlen(cuda);
    if (is_file(shared) && is_file(cuda) && len < sizeof g.cuda_provider) {
        memcpy(g.cuda_provider, cuda, len + 1);
    }
}

/* The API version to ask for first: the library's minor version for "1.N.x" (ORT's API
 * version has tracked its minor release since 1.0), capped at what ort_api.h was checked
 * against. Asking a library for a version it lacks makes it print to stderr, so we avoid it. */
static uint32_t first_api_to_try(const char *version)
{
    unsigned major = 0;
    unsigned minor = 0;
    if (version && sscanf(version, "%u.%u", &major, &minor) == 2 && major == 1 &&
        minor >= BD_ORT_API_MIN && minor < BD_ORT_API_WANTED) {
        return minor;
    }
    return BD_ORT_API_WANTED;
}

/* ONNX Runtime writes an error line for every run that fails, and a client's input can make
 * every run fail (a Reshape that does not fit): its warnings and errors go through a bucket of
 * LOG_BURST lines refilled at one a second, and the line after a gap says how many were left
 * out. Loads (a few lines each, in a burst) pass whole. */
#define LOG_BURST 20
static struct {
    pthread_mutex_t mu;
    double tokens;
    uint64_t at_us;
    uint64_t dropped;
} log_limit = {PTHREAD_MUTEX_INITIALIZER, LOG_BURST, 0, 0};

/* Whether a warning or error may be written now; *dropped gets how many were not since the
 * last one that was. */
static bool log_allowed(uint64_t *dropped)
{
    uint64_t now = bd_now_us();
    pthread_mutex_lock(&log_limit.mu);
    double t = log_limit.tokens + (double)(now - log_limit.at_us) / 1e6;
    log_limit.tokens = t > LOG_BURST ? LOG_BURST : t;
    log_limit.at_us = now;
    bool ok = log_limit.tokens >= 1.0;
    if (ok) {
        log_limit.tokens -= 1.0;
        *dropped = log_limit.dropped;
        log_limit.dropped = 0;
    } else {
        log_limit.dropped++;
    }
    pthread_mutex_unlock(&log_limit.mu);
    return ok;
}

/* ONNX Runtime's own warnings and errors (a CUDA provider that failed to load, nodes placed
 * off the GPU, ...) as batchd log lines: its default logger writes coloured lines of another
 * format. Any thread: ORT logs from whichever thread called it. */
static void ort_log(void *param, int severity, const char *category, const char *logid,
                    const char *code_location, const char *message)
{
    (void)param;
    (void)category;
    (void)logid;
    int level = severity >= ORT_LOGGING_LEVEL_ERROR     ? BD_LOG_ERROR
                : severity == ORT_LOGGING_LEVEL_WARNING ? BD_LOG_WARN
                : severity == ORT_LOGGING_LEVEL_INFO    ? BD_LOG_INFO
                                                        : BD_LOG_DEBUG;
    const char *m = message ? message : "";
    size_t n = strlen(m);
    while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == '\r' || m[n - 1] == ' ')) {
        n--; /* its messages may end in a newline of their own */
    }
    uint64_t dropped = 0;
    if (level >= BD_LOG_WARN && level >= bd_log_level() && !log_allowed(&dropped)) {
        return;
    }
    char more[64] = "";
    if (dropped) {
        snprintf(more, sizeof more, " (%" PRIu64 " more such lines were not logged)", dropped);
    }
    bd_log(level, "onnxruntime", "%.*s where=%s%s", (int)(n < 850 ? n : 850), m,
           code_location ? code_location : "?", more);
}

int bd_ort_init(const char *path, bd_err_t *err)
{
    bd_err_t e = {0};
    if (g.lib) {
        int live = atomic_load(&g.live_models);
        if (live > 0) {
            return bd_err_set(err, BD_EINVAL,
                              "ONNX Runtime cannot be re-initialised while %d models are loaded",
                              live);
        }
        bd_ort_shutdown();
    }
    memset(&g, 0, sizeof g);

    /* ONNX Runtime 1.30's Linux build records usage events (model and graph names, a device
     * id) in ~/.cache/Microsoft, writes /tmp/mat-debug-<pid>.log and looks up Microsoft's
     * collector every few seconds to send them. A server does none of that unasked: off
     * unless the environment says otherwise (an empty value, as env files leave it, says
     * nothing: ONNX Runtime would take it as on). Set before the library starts (no other
     * thread runs yet). */
    const char *telemetry = getenv("ORT_DISABLE_TELEMETRY");
    if (!telemetry || !*telemetry) {
        setenv("ORT_DISABLE_TELEMETRY", "1", 1);
    }
    const char *used = path ? path : BD_ORT_DEFAULT_LIB;
    dlerror();
    void *lib = dlopen(used, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!lib && path) {
        const char *why = dlerror();
        bd_err_set(&e, BD_EUNAVAIL, "cannot load ONNX Runtime from '%s': %s", path,
                   why ? why : "unknown dlopen error");
        goto fail;
    }
    if (!lib) {
        char first[BD_ERR_MSG_MAX / 2];
        const char *why = dlerror();
        snprintf(first, sizeof first, "%s", why ? why : "unknown dlopen error");
        lib = dlopen(ORT_SONAME, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!lib) {
            why = dlerror();
            bd_err_set(&e, BD_EUNAVAIL,
                       "cannot load ONNX Runtime from '%s': %s (nor as '%s' on the loader's "
                       "path: %s)",
                       BD_ORT_DEFAULT_LIB, first, ORT_SONAME, why ? why : "unknown error");
            goto fail;
        }
        used = ORT_SONAME;
    }

    void *sym = dlsym(lib, "OrtGetApiBase");
    if (!sym) {
        bd_err_set(&e, BD_EUNAVAIL,
                   "cannot load ONNX Runtime from '%s': it does not export OrtGetApiBase", used);
        goto fail;
    }
    const bd_ort_api_base_t *base = ((bd_ort_get_api_base_fn)sym)();
    if (!base || !base->GetApi || !base->GetVersionString) {
        bd_err_set(&e, BD_EUNAVAIL,
                   "cannot load ONNX Runtime from '%s': OrtGetApiBase returned no API", used);
        goto fail;
    }
    const char *version = base->GetVersionString();
    for (uint32_t v = first_api_to_try(version); v >= BD_ORT_API_MIN; v--) {
        g.api = base->GetApi(v);
        if (g.api) {
            g.api_version = v;
            break;
        }
    }
    if (!g.api) {
        bd_err_set(&e, BD_EUNAVAIL,
                   "cannot load ONNX Runtime from '%s': version %s accepts none of API "
                   "versions %d..%d that batchd can use",
                   used, version ? version : "?", BD_ORT_API_MIN, BD_ORT_API_WANTED);
        goto fail;
    }
    snprintf(g.version, sizeof g.version, "%s", version ? version : "");

    if (ort_check(ORT_FN(g.api, CreateEnvWithCustomLogger)(ort_log, NULL, ORT_LOGGING_LEVEL_WARNING,
                                                           "batchd", &g.env),
                  &e, "cannot start ONNX Runtime from '%s': CreateEnv failed", used) != 0) {
        goto fail;
    }
    if (ort_check(
            ORT_FN(g.api, CreateCpuMemoryInfo)(OrtArenaAllocator, OrtMemTypeDefault, &g.cpu_mem),
            &e, "cannot start ONNX Runtime from '%s': CreateCpuMemoryInfo failed", used) != 0) {
        goto fail;
    }
    locate_library(sym, used);
    g.lib = lib;
    BD_INFO("backend", "onnxruntime loaded path=%s version=%s api=%u cuda_provider=%s", g.path,
            g.version, g.api_version, g.cuda_provider[0] ? "yes" : "no");
    return 0;

fail:
    if (g.api) {
        if (g.cpu_mem) {
            ORT_FN(g.api, ReleaseMemoryInfo)(g.cpu_mem);
        }
        if (g.env) {
            ORT_FN(g.api, ReleaseEnv)(g.env);
        }
    }
    if (lib) {
        dlclose(lib);
    }
    memset(&g, 0, sizeof g);
    set_reason(&e);
    char why[BD_LOG_TEXT_MAX];
    BD_WARN("backend", "onnxruntime unavailable reason=%s; ONNX models will not load",
            bd_log_quoted(why, sizeof why, e.msg));
    if (err) {
        *err = e;
    }
    return e.code;
}

const char *bd_ort_version(void)
{
    return g.lib ? g.version : NULL;
}

bool bd_ort_info(bd_ort_info_t *out)
{
    memset(out, 0, sizeof *out);
    if (!g.lib) {
        return false;
    }
    out->version = g.version;
    out->path = g.path;
    out->api_version = g.api_version;
    out->cuda_provider = g.cuda_provider[0] ? g.cuda_provider : NULL;
    return true;
}

bool bd_ort_available(void)
{
    return g.lib != NULL;
}

const char *bd_ort_unavailable_reason(void)
{
    if (g.lib) {
        return "";
    }
    return g.reason[0] ? g.reason : NOT_INITIALISED;
}

void bd_ort_shutdown(void)
{
    if (!g.lib) {
        return;
    }
    int live = atomic_load(&g.live_models);
    if (live > 0) {
        BD_ERROR("backend", "onnxruntime shutdown refused live_models=%d (unload them first)",
                 live);
        return;
    }
    ORT_FN(g.api, ReleaseMemoryInfo)(g.cpu_mem);
    ORT_FN(g.api, ReleaseEnv)(g.env);
    dlclose(g.lib);
    memset(&g, 0, sizeof g);
}

/* ---- model ----------------------------------------------------------------------------- */

/* One input or output as the model file declares it. */
typedef struct {
    char *name;      /* owned */
    int onnx_type;   /* ONNX_TYPE_* */
    int elem;        /* ORT_ELEM_* (tensors only) */
    bd_shape_t dims; /* full model shape, -1 for symbolic or unknown dims */
    bool used;       /* named by the config (duplicate check) */
} model_io_t;

struct bd_backend_model {
    char *path;              /* owned copy of cfg->model_path */
    OrtSessionOptions *opts; /* for each instance's session */
    OrtSession *spare;       /* the session load opened; the first instance_new takes it */
    int max_batch_size;
    size_t n_in;
    size_t n_out;
    char **in_names;  /* [n_in], config order, owned */
    char **out_names; /* [n_out], config order, owned */
    int *in_elem;     /* [n_in] */
    int *out_elem;    /* [n_out] */
};

struct bd_backend_instance {
    bd_backend_model_t *m; /* borrowed */
    int index;
    OrtSession *session;
    OrtRunOptions *run_opts;
    OrtValue **in_vals;  /* [n_in], only during run */
    OrtValue **out_vals; /* [n_out], the last run's outputs */
    /* [n_out]: a STRING output of the last run in batchd's BYTES layout (tensor.h), owned,
     * NULL for other outputs; freed with out_vals. */
    unsigned char **out_bytes;
};

static void free_model_io(model_io_t *io, size_t n)
{
    if (!io) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(io[i].name);
    }
    free(io);
}

static void free_names(char **names, size_t n)
{
    if (!names) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

static int read_model_io(OrtSession *s, bool output, size_t index, model_io_t *io, bd_err_t *err)
{
    const char *kind = output ? "output" : "input";
    OrtAllocator *alloc = NULL;
    int rc = ort_check(ORT_FN(g.api, GetAllocatorWithDefaultOptions)(&alloc), err,
                       "cannot get ONNX Runtime's default allocator");
    if (rc != 0) {
        return rc;
    }
    char *name = NULL;
    OrtStatus *st = output ? ORT_FN(g.api, SessionGetOutputName)(s, index, alloc, &name)
                           : ORT_FN(g.api, SessionGetInputName)(s, index, alloc, &name);
    rc = ort_check(st, err, "cannot read the name of model %s %zu", kind, index);
    if (rc != 0) {
        return rc;
    }
    io->name = strdup(name);
    ort_check(ORT_FN(g.api, AllocatorFree)(alloc, name), NULL, "AllocatorFree");
    if (!io->name) {
        return bd_err_set(err, BD_ENOMEM, "out of memory reading the model's %ss", kind);
    }

    OrtTypeInfo *ti = NULL;
    st = output ? ORT_FN(g.api, SessionGetOutputTypeInfo)(s, index, &ti)
                : ORT_FN(g.api, SessionGetInputTypeInfo)(s, index, &ti);
    rc = ort_check(st, err, "cannot read the type of model %s '%s'", kind, io->name);
    if (rc != 0) {
        return rc;
    }
    rc = ort_check(ORT_FN(g.api, GetOnnxTypeFromTypeInfo)(ti, &io->onnx_type), err,
                   "cannot read the type of model %s '%s'", kind, io->name);
    if (rc != 0 || io->onnx_type != ONNX_TYPE_TENSOR) {
        /* Not a tensor: recorded, and rejected only if the config uses it. */
        ORT_FN(g.api, ReleaseTypeInfo)(ti);
        return rc;
    }
    const OrtTensorTypeAndShapeInfo *tt = NULL; /* borrowed from ti */
    size_t ndim = 0;
    rc = ort_check(ORT_FN(g.api, CastTypeInfoToTensorInfo)(ti, &tt), err,
                   "cannot read the tensor type of model %s '%s'", kind, io->name);
    if (rc == 0) {
        rc = ort_check(ORT_FN(g.api, GetTensorElementType)(tt, &io->elem), err,
                       "cannot read the element type of model %s '%s'", kind, io->name);
    }
    if (rc == 0) {
        rc = ort_check(ORT_FN(g.api, GetDimensionsCount)(tt, &ndim), err,
                       "cannot read the shape of model %s '%s'", kind, io->name);
    }
    if (rc == 0 && ndim > BD_MAX_DIMS) {
        rc = bd_err_set(err, BD_EUNSUPPORTED,
                        "model %s '%s' has %zu dims; batchd supports at most %d", kind, io->name,
                        ndim, BD_MAX_DIMS);
    }
    if (rc == 0) {
        rc = ort_check(ORT_FN(g.api, GetDimensions)(tt, io->dims.dims, ndim), err,
                       "cannot read the shape of model %s '%s'", kind, io->name);
    }
    ORT_FN(g.api, ReleaseTypeInfo)(ti);
    if (rc != 0) {
        return rc;
    }
    io->dims.ndim = (int)ndim;
    for (size_t d = 0; d < ndim; d++) {
        if (io->dims.dims[d] < 0) {
            io->dims.dims[d] = -1; /* symbolic ("N") or unknown */
        }
    }
    return 0;
}

/* The tensor io `io` may be used: it is a tensor of a type batchd carries. */
static int check_usable(const char *kind, const model_io_t *io, bd_err_t *err)
{
    char buf[32];
    if (io->onnx_type != ONNX_TYPE_TENSOR) {
        return bd_err_set(err, BD_EUNSUPPORTED,
                          "model %s '%s' is %s, not a tensor; batchd serves tensors only", kind,
                          io->name, onnx_type_name(io->onnx_type));
    }
    if (dtype_from_elem(io->elem) == BD_DT_INVALID) {
        return bd_err_set(err, BD_EUNSUPPORTED,
                          "model %s '%s' has element type %s, which batchd cannot carry; "
                          "supported: BOOL, INT8/16/32/64, UINT8/16/32/64, FLOAT, DOUBLE, STRING",
                          kind, io->name, elem_name(io->elem, buf, sizeof buf));
    }
    return 0;
}

static bool dynamic_first_dim(const model_io_t *io)
{
    return io->onnx_type == ONNX_TYPE_TENSOR && io->dims.ndim >= 1 && io->dims.dims[0] == -1;
}

/* The model's dims as the config states them: without the batch dim when batching. */
static bd_shape_t config_dims(const model_io_t *io, int max_batch_size)
{
    bd_shape_t s = io->dims;
    if (max_batch_size > 0 && s.ndim >= 1) {
        memmove(s.dims, s.dims + 1, (size_t)(s.ndim - 1) * sizeof s.dims[0]);
        s.ndim--;
    }
    return s;
}

/* A config dim fits a model dim when they are equal or the model's is -1 (any size). */
static bool dims_compatible(const bd_shape_t *cfg, const bd_shape_t *model)
{
    if (cfg->ndim != model->ndim) {
        return false;
    }
    for (int d = 0; d < cfg->ndim; d++) {
        if (model->dims[d] != -1 && cfg->dims[d] != model->dims[d]) {
            return false;
        }
        if (cfg->dims[d] < -1) {
            return false;
        }
    }
    return true;
}

static void list_names(const model_io_t *io, size_t n, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < cap; i++) {
        int w = snprintf(buf + off, cap - off, "%s'%s'", i ? ", " : "", io[i].name);
        if (w < 0) {
            break;
        }
        off += (size_t)w;
    }
}

/* Fill (cfg had none) or check (cfg had some) one side of the config against the model.
 * `subset_ok`: the config may name fewer than the model has (outputs). Writes, in config
 * order, each entry's model index into idx_out (allocated, [*n_used]). */
static int match_io(const char *kind, bd_io_t *cfg_io, size_t n_cfg, model_io_t *mio,
                    size_t n_model, bool subset_ok, int max_batch_size, size_t **idx_out,
                    bd_err_t *err)
{
    char names[256];
    char a[96];
    char b[96];
    size_t n = n_cfg ? n_cfg : n_model;
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    if (!idx) {
        return bd_err_set(err, BD_ENOMEM, "out of memory matching the model's %ss", kind);
    }
    int rc = 0;
    if (n_cfg == 0) {
        for (size_t i = 0; i < n_model && rc == 0; i++) {
            rc = check_usable(kind, &mio[i], err);
            idx[i] = i;
        }
        goto done;
    }
    if (n_cfg > n_model || (!subset_ok && n_cfg != n_model)) {
        list_names(mio, n_model, names, sizeof names);
        rc = bd_err_set(err, BD_EINVAL, "config lists %zu %ss but the model has %zu (%s)", n_cfg,
                        kind, n_model, names);
        goto done;
    }
    for (size_t i = 0; i < n_cfg && rc == 0; i++) {
        const bd_io_t *c = &cfg_io[i];
        size_t j = 0;
        while (j < n_model && (!c->name || strcmp(c->name, mio[j].name) != 0)) {
            j++;
        }
        if (j == n_model) {
            list_names(mio, n_model, names, sizeof names);
            rc = bd_err_set(err, BD_EINVAL, "config %s '%s' is not one of the model's %ss (%s)",
                            kind, c->name ? c->name : "(null)", kind, names);
            break;
        }
        if (mio[j].used) {
            rc = bd_err_set(err, BD_EINVAL, "config lists %s '%s' twice; expected each once", kind,
                            c->name);
            break;
        }
        mio[j].used = true;
        idx[i] = j;
        rc = check_usable(kind, &mio[j], err);
        if (rc != 0) {
            break;
        }
        bd_dtype_t dt = dtype_from_elem(mio[j].elem);
        if (c->dtype != dt) {
            rc = bd_err_set(err, BD_EINVAL,
                            "%s '%s': config datatype %s does not match the "
                            "model's %s",
                            kind, c->name, bd_dtype_name(c->dtype), bd_dtype_name(dt));
            break;
        }
        bd_shape_t md = config_dims(&mio[j], max_batch_size);
        if (!dims_compatible(&c->dims, &md)) {
            rc = bd_err_set(err, BD_EINVAL,
                            "%s '%s': config dims %s do not match the model's "
                            "%s%s",
                            kind, c->name, bd_shape_str(&c->dims, a, sizeof a),
                            bd_shape_str(&md, b, sizeof b),
                            max_batch_size > 0 ? " (batch dim excluded)" : "");
            break;
        }
    }
done:
    if (rc != 0) {
        free(idx);
        return rc;
    }
    *idx_out = idx;
    return 0;
}

static void drop_cfg_io(bd_io_t **arr, size_t *count)
{
    for (size_t i = 0; *arr && i < *count; i++) {
        free((*arr)[i].name);
    }
    free(*arr);
    *arr = NULL;
    *count = 0;
}

/* Fill an empty config side from the model; on failure it is left empty again. */
static int fill_cfg_io(bd_io_t **arr, size_t *count, const model_io_t *mio, size_t n,
                       int max_batch_size)
{
    if (bd_model_config_alloc_io(arr, count, n) != 0) {
        return BD_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        (*arr)[i].name = strdup(mio[i].name);
        (*arr)[i].dtype = dtype_from_elem(mio[i].elem);
        (*arr)[i].dims = config_dims(&mio[i], max_batch_size);
        if (!(*arr)[i].name) {
            drop_cfg_io(arr, count);
            return BD_ENOMEM;
        }
    }
    return 0;
}

static void ort_unload(bd_backend_model_t *m)
{
    if (!m) {
        return;
    }
    if (m->spare) {
        ORT_FN(g.api, ReleaseSession)(m->spare);
    }
    if (m->opts) {
        ORT_FN(g.api, ReleaseSessionOptions)(m->opts);
    }
    free_names(m->in_names, m->n_in);
    free_names(m->out_names, m->n_out);
    free(m->in_elem);
    free(m->out_elem);
    free(m->path);
    free(m);
    atomic_fetch_sub(&g.live_models, 1);
}

/* ---- the CUDA execution provider ----------------------------------------------------- */

/* NULL or "cpu": *id = -1. "cuda:N": *id = N. Anything else: BD_EINVAL. */
static int parse_device(const char *dev, int *id, bd_err_t *err)
{
    *id = -1;
    if (!dev || strcmp(dev, "cpu") == 0) {
        return 0;
    }
    if (strncmp(dev, "cuda:", 5) != 0) {
        return bd_err_set(err, BD_EINVAL,
                          "device '%s' is not valid; expected \"cpu\" or \"cuda:N\"", dev);
    }
    char *end = NULL;
    errno = 0;
    long n = strtol(dev + 5, &end, 10);
    if (dev[5] < '0' || dev[5] > '9' || *end != '\0' || errno != 0 || n > INT_MAX) {
        return bd_err_set(err, BD_EINVAL,
                          "device '%s' is not valid; expected \"cpu\" or \"cuda:N\" with N a GPU "
                          "number",
                          dev);
    }
    *id = (int)n;
    return 0;
}

/* The first "libX.so[.N]" in `text` that is followed by ": cannot open shared object file"
 * (the loader's words for a library it could not find), copied into `name`. */
static bool missing_library(const char *text, char *name, size_t cap)
{
    const char *hit = text ? strstr(text, ": cannot open shared object file") : NULL;
    if (!hit) {
        return false;
    }
    const char *start = hit;
    while (start > text && !isspace((unsigned char)start[-1]) && start[-1] != '/' &&
           start[-1] != ':') {
        start--;
    }
    if (hit - start < 4 || strncmp(start, "lib", 3) != 0) {
        return false;
    }
    snprintf(name, cap, "%.*s", (int)(hit - start), start);
    return true;
}

/* The number after `key` in `text`, or -1. */
static long number_after(const char *text, const char *key)
{
    const char *p = text ? strstr(text, key) : NULL;
    if (!p) {
        return -1;
    }
    p += strlen(key);
    while (*p == ' ' || *p == '(') {
        p++;
    }
    return isdigit((unsigned char)*p) ? strtol(p, NULL, 10) : -1;
}

/* Why device `dev` (cuda:`id`) cannot be used, as one sentence that says what to do. `why` is
 * ONNX Runtime's message (NULL when there is none). It is read first for what only CUDA knows
 * (no GPU, an old driver, a device id past the last GPU); then the provider libraries beside
 * libonnxruntime are checked, and the CUDA provider is opened the way ORT opens it, so the
 * loader names the first library it lacks (ORT itself only logs that name). */
static int cuda_failure(const char *dev, int id, const char *why, bd_err_t *err)
{
    char lib[128];
    long count = -1;
    if (why && strstr(why, "no CUDA-capable device")) {
        return bd_err_set(
            err, BD_EUNAVAIL,
            "device %s needs an NVIDIA GPU and CUDA found none on this machine; check "
            "nvidia-smi, or serve the model with \"device\": \"cpu\"",
            dev);
    }
    if (why && strstr(why, "driver version is insufficient")) {
        return bd_err_set(err, BD_EUNAVAIL,
                          "device %s needs an NVIDIA driver for CUDA 13 and this one is older; "
                          "update the driver, or serve the model with \"device\": \"cpu\"",
                          dev);
    }
    if (why && (strstr(why, "Invalid device id") || strstr(why, "Invalid device ID") ||
                strstr(why, "invalid device ordinal"))) {
        count = number_after(why, "total number of devices");
        if (count < 0) {
            count = number_after(why, "0 (inclusive) and");
        }
        if (count > 0) {
            return bd_err_set(err, BD_EINVAL,
                              "device %s does not exist: CUDA sees %ld GPU%s here, numbered 0 to "
                              "%ld; set \"device\" in config.json to one of them",
                              dev, count, count == 1 ? "" : "s", count - 1);
        }
        return bd_err_set(err, BD_EINVAL,
                          "device %s does not exist: CUDA has no GPU %d here (see nvidia-smi); "
                          "set \"device\" in config.json to one it lists",
                          dev, id);
    }
    char path[PATH_MAX + 64];
    const char *absent = NULL;
    snprintf(path, sizeof path, "%s/%s", g.dir, SHARED_PROVIDER);
    if (!is_file(path)) {
        absent = SHARED_PROVIDER;
    }
    snprintf(path, sizeof path, "%s/%s", g.dir, CUDA_PROVIDER);
    if (!is_file(path)) {
        absent = CUDA_PROVIDER;
    }
    if (absent) {
        return bd_err_set(err, BD_EUNAVAIL,
                          "device %s needs ONNX Runtime's CUDA execution provider, but there is no "
                          "%s beside %s; " GPU_SETUP_HINT,
                          dev, absent, g.path);
    }
    dlerror();
    void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    const char *dl = h ? NULL : dlerror();
    if (h) {
        dlclose(h);
    }
    if ((dl && missing_library(dl, lib, sizeof lib)) || missing_library(why, lib, sizeof lib)) {
        if (strcmp(lib, "libcuda.so.1") == 0) {
            return bd_err_set(err, BD_EUNAVAIL,
                              "device %s needs libcuda.so.1, the NVIDIA driver's library, which is "
                              "not on the library path: this machine has no NVIDIA driver (or no "
                              "GPU); install the driver, or serve the model with \"device\": "
                              "\"cpu\"",
                              dev);
        }
        return bd_err_set(err, BD_EUNAVAIL,
                          "device %s needs %s, which is not on the library path; install CUDA 13 "
                          "and cuDNN 9 (or pip's nvidia-*-cu13 wheels) and add their lib folders "
                          "to LD_LIBRARY_PATH",
                          dev, lib);
    }
    if (dl) {
        return bd_err_set(err, BD_EUNAVAIL, "device %s is unavailable: cannot load %s: %s", dev,
                          path, dl);
    }
    return bd_err_set(err, BD_EUNAVAIL, "device %s is unavailable: %s", dev,
                      why && why[0] ? why : "ONNX Runtime gave no reason");
}

/* Does ORT's message `msg` speak of CUDA (rather than of the model)? */
static bool cuda_words(const char *msg)
{
    static const char *const words[] = {"cuda", "cudnn", "cublas", "curand",
                                        "cannot open shared object file"};
    for (size_t i = 0; msg && i < sizeof words / sizeof words[0]; i++) {
        if (strcasestr(msg, words[i])) {
            return true;
        }
    }
    return false;
}

/* cuda_failure with the message of `st` (released here). */
static int cuda_status(const char *dev, int id, OrtStatus *st, bd_err_t *err)
{
    const char *msg = ORT_FN(g.api, GetErrorMessage)(st);
    char why[BD_ERR_MSG_MAX];
    /* One line: ORT's messages may hold newlines (and a file:line prefix we keep). */
    size_t n = 0;
    for (const char *p = msg ? msg : ""; *p && n + 1 < sizeof why; p++) {
        why[n++] = *p == '\n' || *p == '\r' ? ' ' : *p;
    }
    why[n] = '\0';
    ORT_FN(g.api, ReleaseStatus)(st);
    return cuda_failure(dev, id, why, err);
}

/* Append the CUDA execution provider for GPU `id` with batchd's settings: the arena grows by
 * what is asked (kSameAsRequested: batch sizes vary, and doubling would strand memory), the
 * host<->device copies run on the compute stream (so a batch's input copy is ordered before
 * its kernels without extra syncs), and cuDNN picks convolution algorithms by heuristic (the
 * exhaustive search would re-run for every new batch size). The V2 options when the build has
 * them; builds without them (the 1.29 GPU build batchd installs) take the 1.6 struct. */
static int append_cuda(OrtSessionOptions *o, const char *dev, int id, bd_err_t *err)
{
    char id_str[16];
    snprintf(id_str, sizeof id_str, "%d", id);
    const char *keys[] = {"device_id", "arena_extend_strategy", "do_copy_in_default_stream",
                          "cudnn_conv_algo_search"};
    const char *values[] = {id_str, "kSameAsRequested", "1", "HEURISTIC"};
    OrtStatus *st = NULL;
    if (ORT_HAS(g.api_version, CreateCUDAProviderOptions) &&
        ORT_HAS(g.api_version, UpdateCUDAProviderOptions) &&
        ORT_HAS(g.api_version, SessionOptionsAppendExecutionProvider_CUDA_V2) &&
        ORT_HAS(g.api_version, ReleaseCUDAProviderOptions)) {
        OrtCUDAProviderOptionsV2 *co = NULL;
        st = ORT_FN(g.api, CreateCUDAProviderOptions)(&co);
        if (!st) {
            st = ORT_FN(g.api, UpdateCUDAProviderOptions)(co, keys, values,
                                                          sizeof keys / sizeof keys[0]);
            if (!st) {
                st = ORT_FN(g.api, SessionOptionsAppendExecutionProvider_CUDA_V2)(o, co);
            }
            ORT_FN(g.api, ReleaseCUDAProviderOptions)(co);
            if (st) {
                return cuda_status(dev, id, st, err);
            }
            BD_DEBUG("backend", "onnxruntime cuda device_id=%d options=v2", id);
            return 0;
        }
        /* "CUDA execution provider is not enabled in this build.": try the struct. */
        char why[BD_LOG_TEXT_MAX];
        BD_DEBUG("backend", "onnxruntime cuda options=v2 refused reason=%s",
                 bd_log_quoted(why, sizeof why, ORT_FN(g.api, GetErrorMessage)(st)));
        ORT_FN(g.api, ReleaseStatus)(st);
    }
    if (!ORT_HAS(g.api_version, SessionOptionsAppendExecutionProvider_CUDA)) {
        return bd_err_set(
            err, BD_EUNAVAIL,
            "device %s needs ONNX Runtime API 6 or newer, and %s offers %u; " GPU_SETUP_HINT, dev,
            g.path, g.api_version);
    }
    bd_ort_cuda_options_t co = {
        .device_id = id,
        .cudnn_conv_algo_search = 1, /* HEURISTIC */
        .gpu_mem_limit = SIZE_MAX,
        .arena_extend_strategy = 1, /* kSameAsRequested */
        .do_copy_in_default_stream = 1,
    };
    st = ORT_FN(g.api, SessionOptionsAppendExecutionProvider_CUDA)(o, &co);
    if (st) {
        return cuda_status(dev, id, st, err);
    }
    BD_DEBUG("backend", "onnxruntime cuda device_id=%d options=struct", id);
    return 0;
}

/* ---- sessions -------------------------------------------------------------------------- */

/* cfg->placement from the nodes ORT placed in session `s` (recorded because make_options
 * asked; API 24+). Counts stay -1 when the library cannot say. */
static void read_placement(OrtSession *s, bd_model_config_t *cfg, int cuda_id)
{
    snprintf(cfg->placement.device, sizeof cfg->placement.device, "%s",
             cuda_id >= 0 ? cfg->device : "cpu");
    snprintf(cfg->placement.provider, sizeof cfg->placement.provider, "%s",
             cuda_id >= 0 ? "CUDAExecutionProvider" : "CPUExecutionProvider");
    cfg->placement.nodes = -1;
    cfg->placement.cpu_nodes = -1;
    if (!ORT_HAS(g.api_version, Session_GetEpGraphAssignmentInfo) ||
        !ORT_HAS(g.api_version, EpAssignedSubgraph_GetEpName) ||
        !ORT_HAS(g.api_version, EpAssignedSubgraph_GetNodes)) {
        return;
    }
    const OrtEpAssignedSubgraph *const *sub = NULL;
    size_t n_sub = 0;
    bd_err_t e = {0};
    if (ort_check(ORT_FN(g.api, Session_GetEpGraphAssignmentInfo)(s, &sub, &n_sub), &e,
                  "node placement") != 0) {
        char why[BD_LOG_TEXT_MAX];
        BD_DEBUG("backend", "onnxruntime placement unknown reason=%s",
                 bd_log_quoted(why, sizeof why, e.msg));
        return;
    }
    size_t nodes = 0;
    size_t cpu = 0;
    for (size_t i = 0; i < n_sub; i++) {
        const char *ep = NULL;
        const OrtEpAssignedNode *const *list = NULL;
        size_t k = 0;
        if (ort_check(ORT_FN(g.api, EpAssignedSubgraph_GetEpName)(sub[i], &ep), &e,
                      "node placement") != 0 ||
            ort_check(ORT_FN(g.api, EpAssignedSubgraph_GetNodes)(sub[i], &list, &k), &e,
                      "node placement") != 0) {
            char why[BD_LOG_TEXT_MAX];
            BD_DEBUG("backend", "onnxruntime placement unknown reason=%s",
                     bd_log_quoted(why, sizeof why, e.msg));
            return;
        }
        nodes += k;
        cpu += ep && strcmp(ep, "CPUExecutionProvider") == 0 ? k : 0;
    }
    cfg->placement.nodes = nodes > INT_MAX ? INT_MAX : (int)nodes;
    cfg->placement.cpu_nodes = cpu > INT_MAX ? INT_MAX : (int)cpu;
}

static int make_options(const bd_model_config_t *cfg, OrtSessionOptions **out, bd_err_t *err)
{
    OrtSessionOptions *o = NULL;
    int rc = ort_check(ORT_FN(g.api, CreateSessionOptions)(&o), err,
                       "cannot create ONNX Runtime session options");
    if (rc != 0) {
        return rc;
    }
    int threads = cfg->threads_per_instance > 0 ? cfg->threads_per_instance : 1;
    if ((rc = ort_check(ORT_FN(g.api, SetIntraOpNumThreads)(o, threads), err,
                        "cannot set %d intra-op threads", threads)) != 0 ||
        (rc = ort_check(ORT_FN(g.api, SetInterOpNumThreads)(o, 1), err,
                        "cannot set inter-op threads")) != 0 ||
        (rc = ort_check(ORT_FN(g.api, SetSessionExecutionMode)(o, ORT_SEQUENTIAL), err,
                        "cannot set sequential execution")) != 0 ||
        (rc = ort_check(ORT_FN(g.api, SetSessionGraphOptimizationLevel)(o, ORT_ENABLE_ALL), err,
                        "cannot set graph optimization level")) != 0 ||
        (rc = ort_check(ORT_FN(g.api, AddSessionConfigEntry)(o, "session.intra_op.allow_spinning",
                                                             cfg->intra_op_spinning ? "1" : "0"),
                        err, "cannot set intra-op spinning")) != 0) {
        goto fail;
    }

    /* Spinning threads stop when a run ends: between batches they would only take the cores
     * from the event loop and the image decoders (docs/BENCHMARKS.md, "Spinning threads"). */
    if (cfg->intra_op_spinning &&
        (rc = ort_check(ORT_FN(g.api, AddSessionConfigEntry)(o, "session.force_spinning_stop", "1"),
                        err, "cannot ask ONNX Runtime to stop spinning after each run")) != 0) {
        goto fail;
    }

    /* Where each node runs, for cfg->placement (every session records it, a few bytes per
     * node; load reads it once, from its own session). */
    if (ORT_HAS(g.api_version, Session_GetEpGraphAssignmentInfo) &&
        (rc = ort_check(ORT_FN(g.api, AddSessionConfigEntry)(
                            o, "session.record_ep_graph_assignment_info", "1"),
                        err, "cannot ask ONNX Runtime to record node placement")) != 0) {
        goto fail;
    }

    int id = -1;
    if ((rc = parse_device(cfg->device, &id, err)) != 0 ||
        (id >= 0 && (rc = append_cuda(o, cfg->device, id, err)) != 0)) {
        goto fail;
    }
    *out = o;
    return 0;

fail:
    ORT_FN(g.api, ReleaseSessionOptions)(o);
    return rc;
}

static int ort_load(bd_model_config_t *cfg, bd_backend_model_t **out, bd_err_t *err)
{
    *out = NULL;
    if (!g.lib) {
        return bd_err_set(err, BD_EUNAVAIL, "ONNX Runtime is unavailable: %s",
                          bd_ort_unavailable_reason());
    }
    if (cfg->max_batch_size < BD_MAX_BATCH_UNSET) {
        return bd_err_set(err, BD_EINVAL, "max_batch_size %d is negative; expected >= 0",
                          cfg->max_batch_size);
    }
    if (!cfg->model_path) {
        return bd_err_set(err, BD_EINVAL, "no model file path given for the onnxruntime backend");
    }
    struct stat sb;
    if (stat(cfg->model_path, &sb) != 0) {
        return bd_err_set(err, BD_EIO, "cannot read model file '%s': %s", cfg->model_path,
                          strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        return bd_err_set(err, BD_EIO, "cannot read model file '%s': not a regular file",
                          cfg->model_path);
    }
    /* ONNX Runtime would say only "system error number 13" for a file it may not read. */
    int fd = open(cfg->model_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return bd_err_set(err, BD_EIO, "cannot read model file '%s': %s", cfg->model_path,
                          strerror(errno));
    }
    close(fd);

    bd_backend_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        return bd_err_set(err, BD_ENOMEM, "out of memory loading '%s'", cfg->model_path);
    }
    atomic_fetch_add(&g.live_models, 1); /* ort_unload undoes it on every path */
    model_io_t *min = NULL;
    model_io_t *mout = NULL;
    size_t n_min = 0;
    size_t n_mout = 0;
    size_t *in_idx = NULL;
    size_t *out_idx = NULL;
    const model_io_t *fixed = NULL; /* an io whose first dim is not dynamic */
    const char *fixed_kind = "input";
    int mbs = cfg->max_batch_size;
    bool filled_in = false;
    int cuda_id = -1;
    int rc;

    m->path = strdup(cfg->model_path);
    if (!m->path) {
        goto nomem;
    }
    if ((rc = make_options(cfg, &m->opts, err)) != 0) {
        goto fail;
    }
    (void)parse_device(cfg->device, &cuda_id, NULL); /* make_options checked it */
    OrtStatus *st = ORT_FN(g.api, CreateSession)(g.env, m->path, m->opts, &m->spare);
    if (st && cuda_id >= 0 && cuda_words(ORT_FN(g.api, GetErrorMessage)(st))) {
        rc = cuda_status(cfg->device, cuda_id, st, err); /* CUDA failed when the EP started */
        goto fail;
    }
    rc = ort_check(st, err, "cannot load model '%s'", m->path);
    if (rc != 0) {
        goto fail;
    }
    if ((rc = ort_check(ORT_FN(g.api, SessionGetInputCount)(m->spare, &n_min), err,
                        "cannot count the model's inputs")) != 0 ||
        (rc = ort_check(ORT_FN(g.api, SessionGetOutputCount)(m->spare, &n_mout), err,
                        "cannot count the model's outputs")) != 0) {
        goto fail;
    }
    if (n_min == 0 || n_mout == 0) {
        rc = bd_err_set(err, BD_EUNSUPPORTED,
                        "model '%s' has %zu inputs and %zu outputs; "
                        "expected at least one of each",
                        m->path, n_min, n_mout);
        goto fail;
    }
    if (n_min > BD_MAX_IO || n_mout > BD_MAX_IO) {
        rc = bd_err_set(err, BD_EUNSUPPORTED,
                        "model '%s' has %zu inputs and %zu outputs; batchd serves at most %d "
                        "of each",
                        m->path, n_min, n_mout, BD_MAX_IO);
        goto fail;
    }
    min = calloc(n_min, sizeof *min);
    mout = calloc(n_mout, sizeof *mout);
    if (!min || !mout) {
        goto nomem;
    }
    for (size_t i = 0; i < n_min; i++) {
        if ((rc = read_model_io(m->spare, false, i, &min[i], err)) != 0) {
            goto fail;
        }
    }
    for (size_t i = 0; i < n_mout; i++) {
        if ((rc = read_model_io(m->spare, true, i, &mout[i], err)) != 0) {
            goto fail;
        }
    }

    /* Batch dim: decided from every input and output the model has. */
    for (size_t i = 0; i < n_min && !fixed; i++) {
        fixed = dynamic_first_dim(&min[i]) ? NULL : &min[i];
    }
    for (size_t i = 0; i < n_mout && !fixed; i++) {
        fixed = dynamic_first_dim(&mout[i]) ? NULL : &mout[i];
        fixed_kind = "output";
    }
    if (mbs == BD_MAX_BATCH_UNSET) {
        mbs = fixed ? 0 : BD_DEFAULT_MAX_BATCH;
    } else if (mbs > 0 && fixed) {
        char s[96];
        rc = bd_err_set(err, BD_EINVAL,
                        "max_batch_size %d needs a dynamic first dim on every "
                        "input and output, but model %s '%s' has shape %s; expected "
                        "max_batch_size 0 for this model",
                        mbs, fixed_kind, fixed->name, bd_shape_str(&fixed->dims, s, sizeof s));
        goto fail;
    }

    if ((rc = match_io("input", cfg->inputs, cfg->n_inputs, min, n_min, false, mbs, &in_idx,
                       err)) != 0 ||
        (rc = match_io("output", cfg->outputs, cfg->n_outputs, mout, n_mout, true, mbs, &out_idx,
                       err)) != 0) {
        goto fail;
    }

    m->max_batch_size = mbs;
    m->n_in = cfg->n_inputs ? cfg->n_inputs : n_min;
    m->n_out = cfg->n_outputs ? cfg->n_outputs : n_mout;
    m->in_names = calloc(m->n_in, sizeof *m->in_names);
    m->out_names = calloc(m->n_out, sizeof *m->out_names);
    m->in_elem = calloc(m->n_in, sizeof *m->in_elem);
    m->out_elem = calloc(m->n_out, sizeof *m->out_elem);
    if (!m->in_names || !m->out_names || !m->in_elem || !m->out_elem) {
        goto nomem;
    }
    for (size_t i = 0; i < m->n_in; i++) {
        m->in_names[i] = strdup(min[in_idx[i]].name);
        m->in_elem[i] = min[in_idx[i]].elem;
        if (!m->in_names[i]) {
            goto nomem;
        }
    }
    for (size_t i = 0; i < m->n_out; i++) {
        m->out_names[i] = strdup(mout[out_idx[i]].name);
        m->out_elem[i] = mout[out_idx[i]].elem;
        if (!m->out_names[i]) {
            goto nomem;
        }
    }

    /* Everything checked: now complete the config (all or nothing). */
    if (cfg->n_inputs == 0) {
        if (fill_cfg_io(&cfg->inputs, &cfg->n_inputs, min, n_min, mbs) != 0) {
            goto nomem_cfg;
        }
        filled_in = true;
    }
    if (cfg->n_outputs == 0 &&
        fill_cfg_io(&cfg->outputs, &cfg->n_outputs, mout, n_mout, mbs) != 0) {
        goto nomem_cfg;
    }
    cfg->max_batch_size = mbs;
    read_placement(m->spare, cfg, cuda_id);
    free(in_idx);
    free(out_idx);
    free_model_io(min, n_min);
    free_model_io(mout, n_mout);
    BD_DEBUG("backend",
             "onnxruntime loaded model=%s inputs=%zu outputs=%zu max_batch_size=%d device=%s "
             "nodes=%d cpu_nodes=%d",
             m->path, m->n_in, m->n_out, mbs, cfg->placement.device, cfg->placement.nodes,
             cfg->placement.cpu_nodes);
    if (cuda_id >= 0) {
        BD_INFO("backend", "onnxruntime model=%s device=%s provider=%s nodes=%d cpu_nodes=%d",
                cfg->name ? cfg->name : m->path, cfg->device, cfg->placement.provider,
                cfg->placement.nodes, cfg->placement.cpu_nodes);
    }
    if (cuda_id >= 0 && cfg->placement.cpu_nodes > 0) {
        BD_WARN("backend",
                "onnxruntime model=%s device=%s cpu_nodes=%d nodes=%d note=\"%d of %d nodes fell "
                "back to the CPU: CUDA has no kernel for them, or ONNX Runtime keeps shape "
                "computations there\"",
                cfg->name ? cfg->name : m->path, cfg->device, cfg->placement.cpu_nodes,
                cfg->placement.nodes, cfg->placement.cpu_nodes, cfg->placement.nodes);
    }
    *out = m;
    return 0;

nomem_cfg:
    if (filled_in) {
        drop_cfg_io(&cfg->inputs, &cfg->n_inputs);
    }
nomem:
    rc = bd_err_set(err, BD_ENOMEM, "out of memory loading '%s'", cfg->model_path);
fail:
    free(in_idx);
    free(out_idx);
    free_model_io(min, n_min);
    free_model_io(mout, n_mout);
    ort_unload(m);
    return rc;
}

/* ---- instances and runs ---------------------------------------------------------------- */

static void release_values(OrtValue **v, size_t n)
{
    if (!v) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i]) {
            ORT_FN(g.api, ReleaseValue)(v[i]);
            v[i] = NULL;
        }
    }
}

static void free_out_bytes(bd_backend_instance_t *inst)
{
    for (size_t i = 0; inst->out_bytes && i < inst->m->n_out; i++) {
        free(inst->out_bytes[i]);
        inst->out_bytes[i] = NULL;
    }
}

static void ort_instance_free(bd_backend_instance_t *inst)
{
    if (!inst) {
        return;
    }
    release_values(inst->out_vals, inst->m->n_out);
    free_out_bytes(inst);
    free(inst->out_bytes);
    free(inst->out_vals);
    free(inst->in_vals);
    if (inst->run_opts) {
        ORT_FN(g.api, ReleaseRunOptions)(inst->run_opts);
    }
    if (inst->session) {
        ORT_FN(g.api, ReleaseSession)(inst->session);
    }
    free(inst);
}

static int ort_instance_new(bd_backend_model_t *m, int index, bd_backend_instance_t **out,
                            bd_err_t *err)
{
    *out = NULL;
    bd_backend_instance_t *inst = calloc(1, sizeof *inst);
    if (!inst) {
        return bd_err_set(err, BD_ENOMEM, "out of memory creating instance %d", index);
    }
    inst->m = m;
    inst->index = index;
    inst->in_vals = calloc(m->n_in, sizeof *inst->in_vals);
    inst->out_vals = calloc(m->n_out, sizeof *inst->out_vals);
    inst->out_bytes = calloc(m->n_out, sizeof *inst->out_bytes);
    if (!inst->in_vals || !inst->out_vals || !inst->out_bytes) {
        ort_instance_free(inst);
        return bd_err_set(err, BD_ENOMEM, "out of memory creating instance %d", index);
    }
    int rc = 0;
    if (m->spare) {
        inst->session = m->spare;
        m->spare = NULL;
    } else {
        rc = ort_check(ORT_FN(g.api, CreateSession)(g.env, m->path, m->opts, &inst->session), err,
                       "cannot open a session on '%s' for instance %d", m->path, index);
    }
    if (rc == 0) {
        rc = ort_check(ORT_FN(g.api, CreateRunOptions)(&inst->run_opts), err,
                       "cannot create run options for instance %d", index);
    }
    if (rc != 0) {
        ort_instance_free(inst);
        return rc;
    }
    *out = inst;
    return 0;
}

/* A STRING input: ORT keeps its own std::string per element, so the BYTES elements are
 * copied in, each into a buffer of its exact length (binary-safe, unlike FillStringTensor's
 * C strings). */
static int string_input(const bd_backend_model_t *m, size_t i, const bd_tensor_t *t, size_t count,
                        OrtValue **val, bd_err_t *err)
{
    if (!ORT_HAS(g.api_version, GetResizedStringTensorElementBuffer)) {
        return bd_err_set(err, BD_EBACKEND,
                          "run: input '%s' is a string tensor, which needs ONNX Runtime API 15 "
                          "(1.15) or newer; this library offers %u",
                          m->in_names[i], g.api_version);
    }
    if (bd_bytes_check(m->in_names[i], t->data, t->byte_size, count, err) != 0) {
        if (err) {
            err->code = BD_EBACKEND;
        }
        return BD_EBACKEND;
    }
    OrtAllocator *alloc = NULL;
    int rc = ort_check(ORT_FN(g.api, GetAllocatorWithDefaultOptions)(&alloc), err,
                       "run: no allocator for input '%s'", m->in_names[i]);
    if (rc == 0) {
        rc = ort_check(ORT_FN(g.api, CreateTensorAsOrtValue)(
                           alloc, t->shape.dims, (size_t)t->shape.ndim, ORT_ELEM_STRING, val),
                       err, "run: cannot create string input '%s'", m->in_names[i]);
    }
    const unsigned char *p = t->data;
    size_t off = 0;
    for (size_t k = 0; k < count && rc == 0; k++) {
        size_t len = (size_t)p[off] | (size_t)p[off + 1] << 8 | (size_t)p[off + 2] << 16 |
                     (size_t)p[off + 3] << 24;
        char *buf = NULL;
        rc = ort_check(ORT_FN(g.api, GetResizedStringTensorElementBuffer)(*val, k, len, &buf), err,
                       "run: cannot fill string input '%s'", m->in_names[i]);
        if (rc == 0 && len > 0) {
            memcpy(buf, p + off + BD_BYTES_PREFIX, len);
        }
        off += BD_BYTES_PREFIX + len;
    }
    if (rc != 0 && *val) {
        ORT_FN(g.api, ReleaseValue)(*val);
        *val = NULL;
    }
    return rc;
}

/* Check one caller tensor against the model's input i and wrap it without copying. */
static int wrap_input(const bd_backend_instance_t *inst, size_t i, const bd_tensor_t *t,
                      OrtValue **val, bd_err_t *err)
{
    const bd_backend_model_t *m = inst->m;
    static int64_t empty; /* a valid address for zero-byte tensors */
    bd_dtype_t want = dtype_from_elem(m->in_elem[i]);
    if (t->name && strcmp(t->name, m->in_names[i]) != 0) {
        return bd_err_set(err, BD_EBACKEND, "run: input %zu is '%s'; expected '%s'", i, t->name,
                          m->in_names[i]);
    }
    if (t->dtype != want) {
        return bd_err_set(err, BD_EBACKEND, "run: input '%s' is %s; expected %s", m->in_names[i],
                          bd_dtype_name(t->dtype), bd_dtype_name(want));
    }
    size_t count = 0;
    size_t bytes = 0;
    if (want == BD_DT_BYTES && t->shape.ndim >= 0 && t->shape.ndim <= BD_MAX_DIMS &&
        bd_shape_count(&t->shape, 0, &count, err) == 0) {
        return string_input(m, i, t, count, val, err);
    }
    if (t->shape.ndim < 0 || t->shape.ndim > BD_MAX_DIMS ||
        bd_shape_count(&t->shape, 0, &count, err) != 0 ||
        !bd_mul_size(count, bd_dtype_size(want), &bytes) || bytes != t->byte_size ||
        (bytes > 0 && !t->data)) {
        char s[96];
        return bd_err_set(err, BD_EBACKEND,
                          "run: input '%s' with shape %s has %zu bytes of data; expected the "
                          "shape's element count times %zu",
                          m->in_names[i], bd_shape_str(&t->shape, s, sizeof s), t->byte_size,
                          bd_dtype_size(want));
    }
    return ort_check(ORT_FN(g.api, CreateTensorWithDataAsOrtValue)(
                         g.cpu_mem, t->data ? t->data : (void *)&empty, bytes, t->shape.dims,
                         (size_t)t->shape.ndim, m->in_elem[i], val),
                     err, "run: cannot wrap input '%s'", m->in_names[i]);
}

/* A STRING output of the last run, copied into batchd's BYTES layout in inst->out_bytes[i]
 * (t's shape is set). ORT hands the strings back as one run of bytes plus offsets. */
static int string_output(const bd_backend_instance_t *inst, size_t i, bd_tensor_t *t, bd_err_t *err)
{
    const bd_backend_model_t *m = inst->m;
    OrtValue *v = inst->out_vals[i];
    size_t count = 0, total = 0, size = 0;
    if (bd_shape_count(&t->shape, 0, &count, err) != 0 ||
        !bd_mul_size(count, BD_BYTES_PREFIX, &size)) {
        return bd_err_set(err, BD_EBACKEND, "run: output '%s' has an impossible shape",
                          m->out_names[i]);
    }
    int rc = count ? ort_check(ORT_FN(g.api, GetStringTensorDataLength)(v, &total), err,
                               "run: cannot read string output '%s'", m->out_names[i])
                   : 0;
    size_t *offsets = NULL;
    unsigned char *out = NULL;
    if (rc == 0 && (!bd_add_size(size, total, &size) ||
                    !(offsets = malloc((count ? count : 1) * sizeof *offsets)) ||
                    !(out = malloc(size ? size : 1)))) {
        rc = bd_err_set(err, BD_EBACKEND, "run: out of memory for string output '%s'",
                        m->out_names[i]);
    }
    /* The content goes to the tail of `out`; each element then moves down behind its prefix,
     * in order, so no element is overwritten before it moved. */
    unsigned char *content = out ? out + (size - total) : NULL;
    if (rc == 0 && count > 0) {
        rc = ort_check(ORT_FN(g.api, GetStringTensorContent)(v, content, total, offsets, count),
                       err, "run: cannot read string output '%s'", m->out_names[i]);
    }
    size_t w = 0;
    for (size_t k = 0; k < count && rc == 0; k++) {
        size_t end = k + 1 < count ? offsets[k + 1] : total;
        if (offsets[k] > end || end > total || end - offsets[k] > UINT32_MAX) {
            rc = bd_err_set(err, BD_EBACKEND, "run: string output '%s' has bad offsets",
                            m->out_names[i]);
            break;
        }
        size_t len = end - offsets[k];
        memmove(out + w + BD_BYTES_PREFIX, content + offsets[k], len);
        for (int b = 0; b < BD_BYTES_PREFIX; b++) {
            out[w + (size_t)b] = (unsigned char)(len >> (8 * b));
        }
        w += BD_BYTES_PREFIX + len;
    }
    free(offsets);
    if (rc != 0) {
        free(out);
        return rc;
    }
    inst->out_bytes[i] = out;
    t->data = out;
    t->byte_size = w;
    return 0;
}

/* Describe output i of the last run into `t`. */
static int read_output(const bd_backend_instance_t *inst, size_t i, bd_tensor_t *t, bd_err_t *err)
{
    const bd_backend_model_t *m = inst->m;
    OrtValue *v = inst->out_vals[i];
    OrtTensorTypeAndShapeInfo *info = NULL;
    int rc = ort_check(ORT_FN(g.api, GetTensorTypeAndShape)(v, &info), err,
                       "run: cannot read output '%s'", m->out_names[i]);
    if (rc != 0) {
        return rc;
    }
    int elem = ORT_ELEM_UNDEFINED;
    size_t ndim = 0;
    memset(t, 0, sizeof *t);
    if ((rc = ort_check(ORT_FN(g.api, GetTensorElementType)(info, &elem), err,
                        "run: cannot read output '%s'", m->out_names[i])) == 0 &&
        (rc = ort_check(ORT_FN(g.api, GetDimensionsCount)(info, &ndim), err,
                        "run: cannot read output '%s'", m->out_names[i])) == 0) {
        if (ndim > BD_MAX_DIMS) {
            rc = bd_err_set(err, BD_EBACKEND, "run: output '%s' has %zu dims; at most %d",
                            m->out_names[i], ndim, BD_MAX_DIMS);
        } else {
            rc = ort_check(ORT_FN(g.api, GetDimensions)(info, t->shape.dims, ndim), err,
                           "run: cannot read output '%s'", m->out_names[i]);
        }
    }
    ORT_FN(g.api, ReleaseTensorTypeAndShapeInfo)(info);
    if (rc != 0) {
        return rc;
    }
    if (elem != m->out_elem[i]) {
        char a[32];
        char b[32];
        return bd_err_set(err, BD_EBACKEND, "run: output '%s' came back as %s; expected %s",
                          m->out_names[i], elem_name(elem, a, sizeof a),
                          elem_name(m->out_elem[i], b, sizeof b));
    }
    t->shape.ndim = (int)ndim;
    t->name = m->out_names[i];
    t->dtype = dtype_from_elem(elem);
    size_t count = 0;
    if (elem == ORT_ELEM_STRING) {
        return string_output(inst, i, t, err);
    }
    if (bd_shape_count(&t->shape, 0, &count, err) != 0 ||
        !bd_mul_size(count, bd_dtype_size(t->dtype), &t->byte_size)) {
        return bd_err_set(err, BD_EBACKEND, "run: output '%s' has an impossible shape",
                          m->out_names[i]);
    }
    return ort_check(ORT_FN(g.api, GetTensorMutableData)(v, &t->data), err,
                     "run: cannot read output '%s'", m->out_names[i]);
}

static int ort_run(bd_backend_instance_t *inst, const bd_tensor_t *inputs, size_t n_inputs,
                   bd_tensor_t *outputs, size_t n_outputs, const bd_backend_batch_t *batch,
                   bd_err_t *err)
{
    (void)batch; /* no request parameter means anything to an ONNX model */
    bd_backend_model_t *m = inst->m;
    release_values(inst->out_vals, m->n_out);
    free_out_bytes(inst);
    if (n_inputs != m->n_in || n_outputs != m->n_out) {
        return bd_err_set(err, BD_EBACKEND,
                          "run: got %zu inputs and %zu outputs; expected %zu and %zu", n_inputs,
                          n_outputs, m->n_in, m->n_out);
    }
    int rc = 0;
    for (size_t i = 0; i < n_inputs && rc == 0; i++) {
        rc = wrap_input(inst, i, &inputs[i], &inst->in_vals[i], err);
    }
    bool refused = false;
    if (rc == 0) {
        OrtStatus *st =
            ORT_FN(g.api, Run)(inst->session, inst->run_opts, (const char *const *)m->in_names,
                               (const OrtValue *const *)inst->in_vals, m->n_in,
                               (const char *const *)m->out_names, m->n_out, inst->out_vals);
        /* INVALID_ARGUMENT from inputs whose types and shapes the scheduler checked against
         * the model's: their values (an index past a Gather's table, say). */
        refused = st && ORT_FN(g.api, GetErrorCode)(st) == ORT_INVALID_ARGUMENT;
        rc = ort_check(st, err, "%s", refused ? "ONNX Runtime" : "run failed");
    }
    release_values(inst->in_vals, m->n_in);
    for (size_t i = 0; i < n_outputs && rc == 0; i++) {
        rc = read_output(inst, i, &outputs[i], err);
    }
    if (rc != 0) {
        release_values(inst->out_vals, m->n_out);
        free_out_bytes(inst);
        rc = refused ? BD_EINVAL : BD_EBACKEND;
        if (err) {
            err->code = rc;
        }
        return rc;
    }
    return 0;
}

const bd_backend_ops_t bd_backend_ort = {
    .name = "onnxruntime",
    .load = ort_load,
    .unload = ort_unload,
    .instance_new = ort_instance_new,
    .instance_free = ort_instance_free,
    .run = ort_run,
};
