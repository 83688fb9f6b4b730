/* request.c: turns a model's metadata (GET /v2/models/{m}) into the one infer request the
 * generator sends again and again: the inputs' names, datatypes and shapes (batch dim from
 * --batch, variable dims from --shape), their data (zeros, seeded random values, or a raw
 * file), as JSON tensors or Triton's binary tensor extension, with the HTTP head in front.
 *
 * The batch dim: batchd's metadata says max_batch_size; Triton's and KServe's do not, and
 * mark the batch dim as -1 in every input's shape, so without max_batch_size a leading -1 on
 * every input is taken as the batch dim.
 *
 * Threads: called once on the main thread before any level runs; the target it fills is
 * read-only afterwards. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loadgen/loadgen_internal.h"

#define MAX_ELEMS_PER_INPUT ((size_t)1 << 30)

void bd_lg_target_dispose(bd_lg_target_t *t)
{
    free(t->request);
    t->request = NULL;
    t->request_len = 0;
}

static const bd_lg_shape_opt_t *find_shape(const bd_lg_request_opts_t *ro, const char *name,
                                           size_t n_inputs)
{
    for (size_t i = 0; i < ro->n_shapes; i++) {
        const char *n = ro->shapes[i].name;
        if ((n && strcmp(n, name) == 0) || (!n && n_inputs == 1)) {
            return &ro->shapes[i];
        }
    }
    return NULL;
}

static const bd_lg_file_opt_t *find_file(const bd_lg_request_opts_t *ro, const char *name,
                                         size_t n_inputs)
{
    for (size_t i = 0; i < ro->n_files; i++) {
        const char *n = ro->files[i].name;
        if ((n && strcmp(n, name) == 0) || (!n && n_inputs == 1)) {
            return &ro->files[i];
        }
    }
    return NULL;
}

/* Read the inputs from the metadata into t->inputs (dims without the batch dim). */
static int read_metadata(bd_lg_target_t *t, json_t *root, bd_err_t *err)
{
    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0) {
        return bd_err_set(err, BD_EINVAL,
                          "model '%s': the metadata has no \"inputs\" array of tensors", t->model);
    }
    if (json_array_size(inputs) > BD_LG_MAX_INPUTS) {
        return bd_err_set(err, BD_EINVAL, "model '%s' has %zu inputs; at most %d are supported",
                          t->model, json_array_size(inputs), BD_LG_MAX_INPUTS);
    }
    json_t *mbs = json_object_get(root, "max_batch_size");
    t->max_batch_size = json_is_integer(mbs) ? json_integer_value(mbs) : -1;
    bool all_lead_var = true;
    size_t i;
    json_t *in;
    json_array_foreach(inputs, i, in)
    {
        bd_lg_input_desc_t *d = &t->inputs[i];
        const char *name = json_string_value(json_object_get(in, "name"));
        const char *dt = json_string_value(json_object_get(in, "datatype"));
        json_t *shape = json_object_get(in, "shape");
        if (!name || !dt || !json_is_array(shape) || strlen(name) >= sizeof d->name ||
            strlen(dt) >= sizeof d->datatype) {
            return bd_err_set(err, BD_EINVAL,
                              "model '%s': metadata input %zu needs a \"name\", a \"datatype\" "
                              "and a \"shape\" array",
                              t->model, i);
        }
        strcpy(d->name, name);
        strcpy(d->datatype, dt);
        if (json_array_size(shape) > BD_MAX_DIMS) {
            return bd_err_set(err, BD_EINVAL, "input '%s' has %zu dims; at most %d are supported",
                              name, json_array_size(shape), BD_MAX_DIMS);
        }
        d->shape.ndim = (int)json_array_size(shape);
        for (int k = 0; k < d->shape.ndim; k++) {
            json_t *v = json_array_get(shape, (size_t)k);
            if (!json_is_integer(v) || json_integer_value(v) < -1) {
                return bd_err_set(err, BD_EINVAL,
                                  "input '%s': metadata shape entries must be integers >= -1",
                                  name);
            }
            d->shape.dims[k] = json_integer_value(v);
        }
        if (d->shape.ndim == 0 || d->shape.dims[0] != -1) {
            all_lead_var = false;
        }
    }
    t->n_inputs = json_array_size(inputs);
    t->batched = t->max_batch_size > 0 || (t->max_batch_size < 0 && all_lead_var);
    if (t->batched) {
        for (size_t k = 0; k < t->n_inputs; k++) {
            bd_shape_t *s = &t->inputs[k].shape;
            if (s->ndim == 0) {
                return bd_err_set(err, BD_EINVAL, "input '%s' has no dims but the model batches",
                                  t->inputs[k].name);
            }
            memmove(s->dims, s->dims + 1, sizeof s->dims[0] * (size_t)(s->ndim - 1));
            s->ndim--;
        }
    }
    return 0;
}

static int apply_shapes(bd_lg_target_t *t, const bd_lg_request_opts_t *ro, bd_err_t *err)
{
    for (size_t i = 0; i < ro->n_shapes; i++) {
        const char *n = ro->shapes[i].name;
        bool found = false;
        for (size_t k = 0; k < t->n_inputs; k++) {
            found = found || (n && strcmp(n, t->inputs[k].name) == 0);
        }
        if (!found && (n || t->n_inputs != 1)) {
            return bd_err_set(err, BD_EINVAL,
                              n ? "--shape names input '%s', which model '%s' does not have"
                                : "--shape without a name%s needs a model with one input; "
                                  "model '%s' has several (use --shape NAME:DIMS)",
                              n ? n : "", t->model);
        }
    }
    for (size_t k = 0; k < t->n_inputs; k++) {
        bd_lg_input_desc_t *d = &t->inputs[k];
        const bd_lg_shape_opt_t *so = find_shape(ro, d->name, t->n_inputs);
        char want[96], got[96];
        if (so) {
            bool ok = so->shape.ndim == d->shape.ndim;
            for (int j = 0; ok && j < d->shape.ndim; j++) {
                ok = so->shape.dims[j] >= 0 &&
                     (d->shape.dims[j] == -1 || d->shape.dims[j] == so->shape.dims[j]);
            }
            if (!ok) {
                return bd_err_set(err, BD_EINVAL,
                                  "--shape %s:%s does not fit input '%s' of shape %s%s", d->name,
                                  bd_shape_str(&so->shape, got, sizeof got) + 0, d->name,
                                  bd_shape_str(&d->shape, want, sizeof want),
                                  t->batched ? " (batch dim excluded)" : "");
            }
            d->shape = so->shape;
        }
        for (int j = 0; j < d->shape.ndim; j++) {
            if (d->shape.dims[j] < 0) {
                return bd_err_set(err, BD_EINVAL,
                                  "input '%s' has variable dims %s%s; give them with --shape "
                                  "%s:D1,D2,...",
                                  d->name, bd_shape_str(&d->shape, want, sizeof want),
                                  t->batched ? " (batch dim excluded)" : "", d->name);
            }
        }
    }
    return 0;
}

/* "[NAME:]D1,D2" -> shape option. The last ':' splits (names may not contain one). */
int bd_lg_parse_shape(const char *s, bd_lg_shape_opt_t *so, char *name, size_t cap)
{
    const char *colon = strrchr(s, ':');
    const char *dims = colon ? colon + 1 : s;
    so->name = NULL;
    if (colon) {
        size_t n = (size_t)(colon - s);
        if (n == 0 || n >= cap) {
            return -1;
        }
        memcpy(name, s, n);
        name[n] = '\0';
        so->name = name;
    }
    so->shape.ndim = 0;
    const char *p = dims;
    while (*p) {
        char *end = NULL;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || (*end && *end != ',') || so->shape.ndim >= BD_MAX_DIMS) {
            return -1;
        }
        so->shape.dims[so->shape.ndim++] = v;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* One input's bytes for the whole request (rows = batch). */
static char *input_bytes(const bd_lg_input_desc_t *d, bd_dtype_t dt, size_t row_bytes, int64_t rows,
                         const bd_lg_request_opts_t *ro, size_t n_inputs, bd_rng_t *rng,
                         size_t *total, bd_err_t *err)
{
    size_t all;
    if (!bd_mul_size(row_bytes, (size_t)rows, &all)) {
        bd_err_set(err, BD_EINVAL, "input '%s' is too large", d->name);
        return NULL;
    }
    char *buf = calloc(all ? all : 1, 1);
    if (!buf) {
        bd_err_set(err, BD_ENOMEM, "out of memory for %zu bytes of input '%s'", all, d->name);
        return NULL;
    }
    *total = all;
    const bd_lg_file_opt_t *fo = find_file(ro, d->name, n_inputs);
    if (fo) {
        /* Its size first, so that a file of the wrong size (too large ones too) is told the
         * sizes the request takes; a missing one gets bd_read_file's sentence. */
        struct stat st;
        size_t flen =
            stat(fo->path, &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size : row_bytes;
        char *fdata = NULL;
        if (flen == row_bytes || flen == all) {
            fdata = bd_read_file(fo->path, all + 1, &flen, err);
        }
        if (fdata && flen != row_bytes && flen != all) { /* it changed meanwhile */
            free(fdata);
            fdata = NULL;
        }
        if (!fdata && flen != row_bytes && flen != all) {
            if (rows == 1) {
                bd_err_set(err, BD_EINVAL, "--data-file %s has %zu bytes; input '%s' needs %zu",
                           fo->path, flen, d->name, row_bytes);
            } else {
                bd_err_set(err, BD_EINVAL,
                           "--data-file %s has %zu bytes; input '%s' needs %zu (one row) or %zu "
                           "(all %lld rows)",
                           fo->path, flen, d->name, row_bytes, all, (long long)rows);
            }
        }
        if (!fdata) {
            free(buf);
            return NULL;
        }
        for (size_t off = 0; off < all; off += flen) {
            memcpy(buf + off, fdata, flen);
        }
        free(fdata);
        return buf;
    }
    if (ro->data != BD_LG_DATA_RANDOM) {
        return buf;
    }
    size_t esz = bd_dtype_size(dt);
    for (size_t off = 0; off < all; off += esz) {
        double u = bd_rng_uniform(rng);
        uint64_t small = bd_rng_next_u64(rng) % 100; /* fits every integer type */
        switch (dt) {
        case BD_DT_FP32: {
            float f = (float)u;
            memcpy(buf + off, &f, 4);
            break;
        }
        case BD_DT_FP64:
            memcpy(buf + off, &u, 8);
            break;
        case BD_DT_BOOL:
            buf[off] = (char)(small & 1);
            break;
        default: /* little-endian integers: the low bytes carry the value */
            memcpy(buf + off, &small, esz);
            break;
        }
    }
    return buf;
}

/* Whether a JSON request can carry input `name`'s bytes as they are: no NaN or infinity
 * (JSON has no such numbers) and BOOL bytes 0 or 1 (what the binary form takes). */
static int json_can_carry(const char *name, bd_dtype_t dt, const char *data, size_t bytes,
                          bd_err_t *err)
{
    size_t esz = bd_dtype_size(dt);
    for (size_t off = 0, i = 0; off < bytes; off += esz, i++) {
        double v = 0;
        if (dt == BD_DT_BOOL && (unsigned char)data[off] > 1) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%s': element %zu is byte %u; a BOOL element is 0 or 1", name,
                              i, (unsigned)(unsigned char)data[off]);
        }
        if (dt == BD_DT_FP32) {
            float f;
            memcpy(&f, data + off, 4);
            v = f;
        } else if (dt == BD_DT_FP64) {
            memcpy(&v, data + off, 8);
        }
        if (!isfinite(v)) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%s': element %zu is %s, which JSON cannot carry; send the "
                              "request with --binary",
                              name, i,
                              isnan(v) ? "NaN"
                              : v > 0  ? "infinity"
                                       : "-infinity");
        }
    }
    return 0;
}

static void json_values(bd_buf_t *b, bd_dtype_t dt, const char *data, size_t bytes)
{
    size_t esz = bd_dtype_size(dt);
    bd_buf_putc(b, '[');
    for (size_t off = 0; off < bytes; off += esz) {
        if (off) {
            bd_buf_putc(b, ',');
        }
        const char *p = data + off;
        switch (dt) {
        case BD_DT_BOOL:
            bd_buf_puts(b, *p ? "true" : "false");
            break;
        case BD_DT_FP32: {
            float f;
            memcpy(&f, p, 4);
            bd_buf_printf(b, "%.9g", (double)f); /* finite: json_can_carry */
            break;
        }
        case BD_DT_FP64: {
            double f;
            memcpy(&f, p, 8);
            bd_buf_printf(b, "%.17g", f);
            break;
        }
        case BD_DT_INT8:
            bd_buf_printf(b, "%d", (int)*(const int8_t *)p);
            break;
        case BD_DT_UINT8:
            bd_buf_printf(b, "%u", (unsigned)*(const uint8_t *)p);
            break;
        case BD_DT_INT16: {
            int16_t v;
            memcpy(&v, p, 2);
            bd_buf_printf(b, "%d", (int)v);
            break;
        }
        case BD_DT_UINT16: {
            uint16_t v;
            memcpy(&v, p, 2);
            bd_buf_printf(b, "%u", (unsigned)v);
            break;
        }
        case BD_DT_INT32: {
            int32_t v;
            memcpy(&v, p, 4);
            bd_buf_printf(b, "%ld", (long)v);
            break;
        }
        case BD_DT_UINT32: {
            uint32_t v;
            memcpy(&v, p, 4);
            bd_buf_printf(b, "%lu", (unsigned long)v);
            break;
        }
        case BD_DT_INT64: {
            int64_t v;
            memcpy(&v, p, 8);
            bd_buf_printf(b, "%lld", (long long)v);
            break;
        }
        default: {
            uint64_t v;
            memcpy(&v, p, 8);
            bd_buf_printf(b, "%llu", (unsigned long long)v);
            break;
        }
        }
    }
    bd_buf_putc(b, ']');
}

int bd_lg_build_request(bd_lg_target_t *t, const char *meta, size_t meta_len,
                        const bd_lg_request_opts_t *ro, bd_err_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(meta, meta_len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return bd_err_set(err, BD_EINVAL, "model '%s': the metadata is not a JSON object (%s)",
                          t->model, jerr.text);
    }
    int rc = read_metadata(t, root, err);
    json_decref(root);
    if (rc) {
        return rc;
    }
    int64_t batch = ro->batch > 0 ? ro->batch : 1;
    if (!t->batched && batch != 1) {
        return bd_err_set(err, BD_EINVAL,
                          "model '%s' does not batch (max_batch_size 0), so --batch must be 1, "
                          "got %lld",
                          t->model, (long long)batch);
    }
    if (t->max_batch_size > 0 && batch > t->max_batch_size) {
        return bd_err_set(err, BD_EINVAL, "--batch %lld is above model '%s''s max_batch_size %lld",
                          (long long)batch, t->model, (long long)t->max_batch_size);
    }
    rc = apply_shapes(t, ro, err);
    if (rc) {
        return rc;
    }
    for (size_t i = 0; i < ro->n_files; i++) {
        const char *n = ro->files[i].name;
        if (!n && t->n_inputs != 1) {
            return bd_err_set(err, BD_EINVAL,
                              "--data-file without a name needs a model with one input; model "
                              "'%s' has %zu (use --data-file NAME=PATH)",
                              t->model, t->n_inputs);
        }
        bool found = !n;
        for (size_t k = 0; k < t->n_inputs && !found; k++) {
            found = strcmp(n, t->inputs[k].name) == 0;
        }
        if (!found) {
            return bd_err_set(err, BD_EINVAL,
                              "--data-file names input '%s', which model '%s' does not have", n,
                              t->model);
        }
        for (size_t k = 0; k < i; k++) {
            const char *m = ro->files[k].name;
            if ((!m && !n) || (m && n && strcmp(m, n) == 0) || (t->n_inputs == 1 && (!m || !n))) {
                return bd_err_set(err, BD_EINVAL,
                                  "--data-file gives input '%s' twice; give each input once",
                                  n ? n : t->inputs[0].name);
            }
        }
    }

    bd_rng_t rng;
    bd_rng_seed(&rng, ro->seed);
    bd_buf_t body, bin;
    bd_buf_init(&body);
    bd_buf_init(&bin);
    rc = 0;
    bd_buf_puts(&body, "{\"inputs\":[");
    for (size_t k = 0; k < t->n_inputs && rc == 0; k++) {
        bd_lg_input_desc_t *d = &t->inputs[k];
        bd_dtype_t dt = bd_dtype_from_name(d->datatype);
        if (!bd_dtype_supported(dt) || dt == BD_DT_BYTES) {
            rc = bd_err_set(err, BD_EINVAL,
                            "input '%s' has datatype %s, which batchd cannot send as raw or "
                            "generated values (BOOL, INT*, UINT*, FP32, FP64 only)%s",
                            d->name, d->datatype,
                            dt == BD_DT_BYTES ? "; an image input takes batchd infer --image FILE"
                                              : "");
            break;
        }
        size_t row_elems, row_bytes, bytes = 0;
        rc = bd_shape_count(&d->shape, MAX_ELEMS_PER_INPUT, &row_elems, err);
        if (rc || !bd_mul_size(row_elems, bd_dtype_size(dt), &row_bytes)) {
            rc = rc ? rc : bd_err_set(err, BD_EINVAL, "input '%s' is too large", d->name);
            break;
        }
        if (t->batched) {
            memmove(d->shape.dims + 1, d->shape.dims,
                    sizeof d->shape.dims[0] * (size_t)d->shape.ndim);
            d->shape.dims[0] = batch;
            d->shape.ndim++;
        }
        char *data = input_bytes(d, dt, row_bytes, t->batched ? batch : 1, ro, t->n_inputs, &rng,
                                 &bytes, err);
        if (!data) {
            rc = err ? err->code : BD_EINVAL;
            break;
        }
        bd_buf_puts(&body, k ? ",{\"name\":" : "{\"name\":");
        bd_buf_json_string(&body, d->name, strlen(d->name));
        bd_buf_printf(&body, ",\"datatype\":\"%s\",\"shape\":[", d->datatype);
        for (int j = 0; j < d->shape.ndim; j++) {
            bd_buf_printf(&body, j ? ",%lld" : "%lld", (long long)d->shape.dims[j]);
        }
        bd_buf_puts(&body, "]");
        if (ro->binary) {
            bd_buf_printf(&body, ",\"parameters\":{\"binary_data_size\":%zu}}", bytes);
            bd_buf_append(&bin, data, bytes);
        } else if ((rc = json_can_carry(d->name, dt, data, bytes, err)) == 0) {
            bd_buf_puts(&body, ",\"data\":");
            json_values(&body, dt, data, bytes);
            bd_buf_putc(&body, '}');
        }
        free(data);
        if (rc != 0) {
            break;
        }
    }
    bd_buf_puts(&body, ro->binary ? "],\"parameters\":{\"binary_data_output\":true}}" : "]}");
    size_t header_len = body.len;
    bd_buf_append(&body, bin.data ? bin.data : "", bin.len);
    if (rc == 0 && (body.failed || bin.failed)) {
        rc = bd_err_set(err, BD_ENOMEM, "out of memory building the request body");
    }
    if (rc == 0) {
        bd_buf_t req;
        bd_buf_init(&req);
        bool v6 = strchr(t->host, ':') != NULL;
        char path[1024];
        bd_lg_model_path(t, path, sizeof path);
        bd_buf_printf(&req, "POST %s%s/infer HTTP/1.1\r\nHost: %s%s%s:%s\r\n", t->prefix, path,
                      v6 ? "[" : "", t->host, v6 ? "]" : "", t->port);
        bd_buf_printf(&req, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                      ro->binary ? "application/octet-stream" : "application/json", body.len);
        if (t->api_key) {
            bd_buf_printf(&req, "Authorization: Bearer %s\r\n", t->api_key);
        }
        if (ro->binary) {
            bd_buf_printf(&req, "Inference-Header-Content-Length: %zu\r\n", header_len);
        }
        bd_buf_puts(&req, "\r\n");
        bd_buf_append(&req, body.data, body.len);
        if (req.failed) {
            bd_buf_dispose(&req);
            rc = bd_err_set(err, BD_ENOMEM, "out of memory building the request");
        } else {
            free(t->request);
            t->body_len = body.len;
            t->request = bd_buf_steal(&req, &t->request_len);
        }
    }
    bd_buf_dispose(&body);
    bd_buf_dispose(&bin);
    return rc;
}
