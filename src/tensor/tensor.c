/* tensor.c: datatypes and shapes (see tensor.h).
 *
 * One table maps each bd_dtype_t to its KServe v2 name and element size, so names, sizes and
 * the "supported" set cannot drift apart. Shapes are small fixed arrays; counting elements is
 * the one place that multiplies client-sized numbers, so it checks every step for overflow.
 *
 * Threads: pure functions over caller-owned memory; any thread. Nothing here allocates. */
#include "tensor/tensor.h"

#include <stdio.h>
#include <string.h>

/* ---- datatypes ------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
    bool supported;
} dtypes[BD_DT_COUNT_] = {
    [BD_DT_INVALID] = {"INVALID", 0, false}, [BD_DT_BOOL] = {"BOOL", 1, true},
    [BD_DT_UINT8] = {"UINT8", 1, true},      [BD_DT_UINT16] = {"UINT16", 2, true},
    [BD_DT_UINT32] = {"UINT32", 4, true},    [BD_DT_UINT64] = {"UINT64", 8, true},
    [BD_DT_INT8] = {"INT8", 1, true},        [BD_DT_INT16] = {"INT16", 2, true},
    [BD_DT_INT32] = {"INT32", 4, true},      [BD_DT_INT64] = {"INT64", 8, true},
    [BD_DT_FP16] = {"FP16", 2, false},       [BD_DT_FP32] = {"FP32", 4, true},
    [BD_DT_FP64] = {"FP64", 8, true},        [BD_DT_BYTES] = {"BYTES", 0, false},
};

bd_dtype_t bd_dtype_from_name(const char *name)
{
    if (!name) {
        return BD_DT_INVALID;
    }
    for (int i = BD_DT_INVALID + 1; i < BD_DT_COUNT_; i++) {
        if (strcmp(name, dtypes[i].name) == 0) {
            return (bd_dtype_t)i;
        }
    }
    return BD_DT_INVALID;
}

const char *bd_dtype_name(bd_dtype_t dt)
{
    if ((int)dt <= BD_DT_INVALID || (int)dt >= BD_DT_COUNT_) {
        return "INVALID";
    }
    return dtypes[dt].name;
}

size_t bd_dtype_size(bd_dtype_t dt)
{
    if ((int)dt <= BD_DT_INVALID || (int)dt >= BD_DT_COUNT_) {
        return 0;
    }
    return dtypes[dt].size;
}

bool bd_dtype_supported(bd_dtype_t dt)
{
    if ((int)dt <= BD_DT_INVALID || (int)dt >= BD_DT_COUNT_) {
        return false;
    }
    return dtypes[dt].supported;
}

/* ---- shapes ---------------------------------------------------------------------------- */

int bd_shape_count(const bd_shape_t *s, size_t max_elems, size_t *count, bd_err_t *err)
{
    char str[256];
    if (s->ndim < 0 || s->ndim > BD_MAX_DIMS) {
        return bd_err_set(err, BD_EINVAL, "shape has %d dims; 0 to %d are supported", s->ndim,
                          BD_MAX_DIMS);
    }
    size_t n = 1;
    bool overflow = false;
    for (int i = 0; i < s->ndim; i++) {
        if (s->dims[i] < 0) {
            return bd_err_set(err, BD_EINVAL, "shape %s has a negative dim",
                              bd_shape_str(s, str, sizeof str));
        }
        /* Keep multiplying after an overflow only to notice a zero dim, which makes the
         * product 0 whatever the other dims are. */
        if ((uint64_t)s->dims[i] > SIZE_MAX || !bd_mul_size(n, (size_t)s->dims[i], &n)) {
            overflow = true;
            n = 1;
        }
    }
    if (overflow && n != 0) {
        return bd_err_set(err, BD_EINVAL, "shape %s has too many elements",
                          bd_shape_str(s, str, sizeof str));
    }
    if (overflow) {
        n = 0;
    }
    if (max_elems && n > max_elems) {
        return bd_err_set(err, BD_EINVAL, "shape %s has %zu elements, more than the limit of %zu",
                          bd_shape_str(s, str, sizeof str), n, max_elems);
    }
    *count = n;
    return 0;
}

const char *bd_shape_str(const bd_shape_t *s, char *buf, size_t cap)
{
    if (cap == 0) {
        return buf;
    }
    size_t off = 0;
    buf[0] = '\0';
    int ndim = s->ndim < 0 ? 0 : s->ndim > BD_MAX_DIMS ? BD_MAX_DIMS : s->ndim;
    for (int i = -1; i <= ndim && off < cap; i++) {
        int n;
        if (i < 0) {
            n = snprintf(buf + off, cap - off, "[");
        } else if (i == ndim) {
            n = snprintf(buf + off, cap - off, "]");
        } else {
            n = snprintf(buf + off, cap - off, "%s%lld", i ? "," : "", (long long)s->dims[i]);
        }
        if (n < 0) {
            break;
        }
        off += (size_t)n;
    }
    buf[cap - 1] = '\0';
    return buf;
}

bool bd_shape_equal(const bd_shape_t *a, const bd_shape_t *b)
{
    if (a->ndim != b->ndim || a->ndim < 0 || a->ndim > BD_MAX_DIMS) {
        return false;
    }
    for (int i = 0; i < a->ndim; i++) {
        if (a->dims[i] != b->dims[i]) {
            return false;
        }
    }
    return true;
}

/* ---- request parameters ---------------------------------------------------------------- */

const bd_param_t *bd_param_find(const bd_param_t *params, size_t n, const char *name)
{
    for (size_t i = 0; params && name && i < n; i++) {
        if (params[i].name && strcmp(params[i].name, name) == 0) {
            return &params[i];
        }
    }
    return NULL;
}
