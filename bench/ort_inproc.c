/* ort_inproc: run one ONNX model in-process through batchd's own onnxruntime backend, with
 * no server in the way, and print one JSON line of throughput and latency per call.
 *
 *   ort_inproc MODEL.onnx THREADS BATCH SECONDS [--device cpu|cuda:N] [--onnxruntime-lib PATH]
 *              [--intra-op-spinning on|off]
 *
 * The input is filled with a fixed pseudo-random pattern. Single-threaded driver; ONNX
 * Runtime uses THREADS intra-op threads, like a server instance with threads_per_instance;
 * they sleep while they wait for work unless --intra-op-spinning on (config.json's
 * intra_op_spinning; off by default, as in the server).
 * --device cuda:N runs it on GPU N with the CUDA execution provider, appended exactly as the
 * server appends it (the same backend code), so it needs --onnxruntime-lib pointing at a GPU
 * build; each call copies its input batch to the GPU and the outputs back, as a server
 * batch does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *device = "cpu";
    const char *lib = NULL;
    const char *spin = "off";
    bool bad = argc < 5;
    for (int i = 5; i < argc && !bad; i += 2) {
        if (i + 1 < argc && strcmp(argv[i], "--device") == 0) {
            device = argv[i + 1];
        } else if (i + 1 < argc && strcmp(argv[i], "--onnxruntime-lib") == 0) {
            lib = argv[i + 1];
        } else if (i + 1 < argc && strcmp(argv[i], "--intra-op-spinning") == 0 &&
                   (strcmp(argv[i + 1], "on") == 0 || strcmp(argv[i + 1], "off") == 0)) {
            spin = argv[i + 1];
        } else {
            bad = true;
        }
    }
    if (bad) {
        fprintf(stderr, "usage: ort_inproc MODEL.onnx THREADS BATCH SECONDS [--device cpu|cuda:N] "
                        "[--onnxruntime-lib PATH] [--intra-op-spinning on|off]\n");
        return 2;
    }
    int threads = atoi(argv[2]);
    int batch = atoi(argv[3]);
    double seconds = atof(argv[4]);
    bd_err_t err = {0};
    if (bd_ort_init(lib, &err) != 0) {
        fprintf(stderr, "ort_inproc: %s\n", err.msg);
        return 1;
    }
    bd_model_config_t cfg = {0};
    cfg.name = strdup("bench");
    cfg.model_path = strdup(argv[1]);
    snprintf(cfg.backend, sizeof cfg.backend, "onnxruntime");
    cfg.max_batch_size = BD_MAX_BATCH_UNSET;
    cfg.instances = 1;
    cfg.threads_per_instance = threads;
    cfg.intra_op_spinning = strcmp(spin, "on") == 0;
    cfg.device = strdup(device);
    bd_backend_model_t *bm = NULL;
    bd_backend_instance_t *inst = NULL;
    if (bd_backend_ort.load(&cfg, &bm, &err) != 0 ||
        bd_backend_ort.instance_new(bm, 0, &inst, &err) != 0) {
        fprintf(stderr, "ort_inproc: %s\n", err.msg);
        return 1;
    }
    bd_tensor_t in[16];
    bd_tensor_t out[16];
    size_t n_in = cfg.n_inputs < 16 ? cfg.n_inputs : 16;
    for (size_t i = 0; i < n_in; i++) {
        bd_io_t *io = &cfg.inputs[i];
        in[i] = (bd_tensor_t){.name = io->name, .dtype = io->dtype};
        in[i].shape.ndim = io->dims.ndim + 1;
        in[i].shape.dims[0] = batch;
        size_t count = (size_t)batch;
        for (int d = 0; d < io->dims.ndim; d++) {
            in[i].shape.dims[d + 1] = io->dims.dims[d] > 0 ? io->dims.dims[d] : 1;
            count *= (size_t)in[i].shape.dims[d + 1];
        }
        in[i].byte_size = count * bd_dtype_size(io->dtype);
        in[i].data = malloc(in[i].byte_size);
        unsigned char *p = in[i].data;
        for (size_t k = 0; k < in[i].byte_size; k++) {
            p[k] = (unsigned char)((k * 2654435761u) >> 24 & 0x3f);
        }
    }
    /* Warm up, then measure. */
    for (int w = 0; w < 3; w++) {
        bd_backend_ort.run(inst, in, n_in, out, cfg.n_outputs, NULL, &err);
    }
    size_t cap = 1 << 20;
    uint64_t *lat = malloc(cap * sizeof *lat);
    size_t calls = 0;
    uint64_t start = bd_now_us();
    uint64_t end = start + (uint64_t)(seconds * 1e6);
    uint64_t now = start;
    while (now < end && calls < cap) {
        uint64_t t0 = now;
        if (bd_backend_ort.run(inst, in, n_in, out, cfg.n_outputs, NULL, &err) != 0) {
            fprintf(stderr, "ort_inproc: %s\n", err.msg);
            return 1;
        }
        now = bd_now_us();
        lat[calls++] = now - t0;
    }
    qsort(lat, calls, sizeof *lat, cmp_u64);
    double elapsed = (double)(now - start) / 1e6;
    printf("{\"model\":\"%s\",\"device\":\"%s\",\"threads\":%d,\"intra_op_spinning\":%s,"
           "\"batch\":%d,\"calls\":%zu,"
           "\"calls_per_s\":%.1f,\"rows_per_s\":%.1f,\"p50_us\":%llu,\"p99_us\":%llu}\n",
           argv[1], device, threads, cfg.intra_op_spinning ? "true" : "false", batch, calls,
           (double)calls / elapsed, (double)calls * batch / elapsed,
           (unsigned long long)lat[calls / 2], (unsigned long long)lat[calls * 99 / 100]);
    for (size_t i = 0; i < n_in; i++) {
        free(in[i].data);
    }
    free(lat);
    bd_backend_ort.instance_free(inst);
    bd_backend_ort.unload(bm);
    bd_model_config_dispose(&cfg);
    bd_ort_shutdown();
    return 0;
}
