/* fuzz_decode.c: libFuzzer target for bd_infer_decode (and bd_infer_encode on what decodes).
 *
 * Input layout: the first 2 bytes (little-endian) give the JSON header length, clamped to the
 * rest of the input; the rest is the HTTP body, so the binary tail after the header is fuzzed
 * too. Decoded inputs are encoded back as outputs (alternately JSON and binary) and every
 * tensor invariant is checked, so a decoder that returns garbage fails as well as one that
 * crashes. BYTES inputs (JSON strings or the binary length-prefixed layout) must come out
 * as a buffer that walks as exactly the shape's elements (seeds: bytes_*). bd_infer_decode
 * (its fast path first) must also agree with the general decoder (bd_infer_decode_json): the
 * same code and message, or the same request.
 * Single-threaded; everything is freed per input (LeakSanitizer checks). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The two decoders' results, field by field (abort on any difference). */
static void check_same(int rc1, const bd_infer_req_t *a, const bd_err_t *e1, int rc2,
                       const bd_infer_req_t *b, const bd_err_t *e2)
{
    if (rc1 != rc2 || (rc1 != 0 && strcmp(e1->msg, e2->msg) != 0)) {
        abort();
    }
    if (rc1 != 0) {
        return;
    }
    if (!same_str(a->id, b->id) || !same_str(a->model_name, b->model_name) ||
        !same_str(a->model_version, b->model_version) || a->n_inputs != b->n_inputs ||
        a->n_outputs != b->n_outputs || a->binary_default != b->binary_default ||
        a->priority != b->priority || a->timeout_us != b->timeout_us ||
        a->n_params != b->n_params || a->json_text != b->json_text) {
        abort();
    }
    for (size_t i = 0; i < a->n_inputs; i++) {
        const bd_tensor_t *x = &a->inputs[i], *y = &b->inputs[i];
        if (strcmp(x->name, y->name) != 0 || x->dtype != y->dtype ||
            !bd_shape_equal(&x->shape, &y->shape) || x->byte_size != y->byte_size ||
            (x->byte_size && memcmp(x->data, y->data, x->byte_size) != 0)) {
            abort();
        }
    }
    for (size_t i = 0; i < a->n_outputs; i++) {
        const bd_output_req_t *x = &a->outputs[i], *y = &b->outputs[i];
        if (strcmp(x->name, y->name) != 0 || x->binary != y->binary ||
            x->classification != y->classification) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    size_t header_len = (size_t)data[0] | (size_t)data[1] << 8;
    size_t len = size - 2;
    if (header_len > len) {
        header_len = len;
    }
    /* An exact-size copy, so reads past the body are caught. */
    char *body = malloc(len ? len : 1);
    if (!body) {
        return 0;
    }
    memcpy(body, data + 2, len);

    bd_arena_t arena;
    bd_arena_init(&arena, 64u << 20);
    bd_decode_limits_t limits = {.max_elems_per_tensor = 1u << 20, .max_inputs = 0, .max_depth = 0};
    bd_infer_req_t req;
    bd_err_t err;
    int rc = bd_infer_decode(body, len, header_len, &arena, &limits, &req, &err);
    {
        bd_arena_t arena2;
        bd_arena_init(&arena2, 64u << 20);
        bd_infer_req_t req2;
        bd_err_t err2;
        int rc2 = bd_infer_decode_json(body, len, header_len, &arena2, &limits, &req2, &err2);
        check_same(rc, &req, &err, rc2, &req2, &err2);
        bd_arena_dispose(&arena2);
    }
    if (rc != 0) {
        if (rc != err.code || err.msg[0] == '\0' || req.inputs || req.n_inputs || req.params ||
            req.n_params) {
            abort();
        }
    } else {
        /* Kept parameters: bounded, named, typed, and findable by their name. */
        if (req.n_params > BD_MAX_PARAMS || (req.n_params > 0) != (req.params != NULL)) {
            abort();
        }
        for (size_t i = 0; i < req.n_params; i++) {
            const bd_param_t *p = &req.params[i];
            if (!p->name || p->kind < BD_PARAM_BOOL || p->kind > BD_PARAM_OTHER ||
                (p->kind == BD_PARAM_STRING && !p->v.s) ||
                bd_param_find(req.params, req.n_params, p->name) != p) {
                abort();
            }
        }
        bd_output_enc_t *outs = calloc(req.n_inputs, sizeof *outs);
        if (!outs) {
            abort();
        }
        size_t bin_total = 0;
        bool any_binary = false;
        for (size_t i = 0; i < req.n_inputs; i++) {
            const bd_tensor_t *t = &req.inputs[i];
            size_t count;
            /* BYTES: the data must walk as exactly count elements (tensor.h's layout). */
            if (!t->name || !bd_dtype_supported(t->dtype) ||
                bd_shape_count(&t->shape, 0, &count, NULL) != 0 ||
                (t->dtype != BD_DT_BYTES && count * bd_dtype_size(t->dtype) != t->byte_size) ||
                bd_tensor_check_size(t, NULL) != 0 || (t->byte_size && !t->data)) {
                abort();
            }
            if (t->dtype == BD_DT_BOOL) {
                for (size_t k = 0; k < t->byte_size; k++) {
                    /* JSON BOOL data is 0/1; binary BOOL bytes are the client's. */
                    const char *p = (const char *)t->data + k;
                    if ((p < body || p >= body + len) && *p != 0 && *p != 1) {
                        abort();
                    }
                }
            }
            outs[i].tensor = t;
            outs[i].binary = i % 2 == 1;
            if (outs[i].binary) {
                bin_total += t->byte_size;
                any_binary = true;
            }
        }
        bd_buf_t b;
        bd_buf_init(&b);
        size_t hlen = 0;
        /* hlen: the JSON part when any output is binary (even of 0 bytes), else 0. */
        if (bd_infer_encode(&b, "m", "1", req.id, outs, req.n_inputs, &hlen) != 0 ||
            (hlen != 0) != any_binary || (any_binary && hlen + bin_total != b.len)) {
            abort();
        }
        bd_buf_dispose(&b);
        free(outs);
    }
    bd_arena_dispose(&arena);
    free(body);
    return 0;
}
