/* tensor.c: datatypes and shapes (see tensor.h).
 *
 * One table maps each bd_dtype_t to its KServe v2 name and element size, so names, sizes and
 * the "supported" set cannot drift apart. Shapes are small fixed arrays; counting elements is
 * the one place that multiplies client-sized numbers, so it checks every step for overflow.
 *
 * BYTES buffers (4-byte little-endian length + bytes per element) are walked here and
 * nowhere else, so every reader checks each length against what remains in the same way.
 * Classification (Triton's extension) turns a numeric output into BYTES "score:index:label"
 * strings in a caller's arena.
 *
 * Threads: pure functions over caller-owned memory; any thread. Only bd_classify allocates
 * (in the caller's arena). */
#include "tensor/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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
    [BD_DT_FP64] = {"FP64", 8, true},        [BD_DT_BYTES] = {"BYTES", 0, true},
};

bd_dtype_t bd_dtype_from_name(const char *name)
{
    return name ? bd_dtype_from_chars(name, strlen(name)) : BD_DT_INVALID;
}

bd_dtype_t bd_dtype_from_chars(const char *s, size_t n)
{
    for (int i = BD_DT_INVALID + 1; s && n && i < BD_DT_COUNT_; i++) {
        const char *d = dtypes[i].name; /* the first letter rules out most before a compare */
        if (d[0] == s[0] && strlen(d) == n && memcmp(d, s, n) == 0) {
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

/* ---- BYTES ----------------------------------------------------------------------------- */

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool bd_bytes_skip(const void *data, size_t size, size_t n, size_t *off, size_t *bad, size_t *need,
                   size_t *left)
{
    const unsigned char *p = data;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t rem = size - at;
        if (rem < BD_BYTES_PREFIX) {
            *bad = i;
            *need = BD_BYTES_PREFIX;
            *left = rem;
            return false;
        }
        uint32_t len = get_le32(p + at);
        rem -= BD_BYTES_PREFIX;
        if (len > rem) {
            *bad = i;
            *need = len;
            *left = rem;
            return false;
        }
        at += BD_BYTES_PREFIX + len;
    }
    *off = at;
    return true;
}

int bd_bytes_check(const char *name, const void *data, size_t size, size_t count, bd_err_t *err)
{
    size_t off = 0, bad = 0, need = 0, left = 0;
    if (size > 0 && !data) {
        return bd_err_set(err, BD_EINVAL, "input '%.128s': the tensor has no data", name);
    }
    if (!bd_bytes_skip(data, size, count, &off, &bad, &need, &left)) {
        if (need == BD_BYTES_PREFIX && left < BD_BYTES_PREFIX && bad < count) {
            if (left == 0) {
                return bd_err_set(err, BD_EINVAL,
                                  "input '%.128s': binary BYTES data ends after %zu elements but "
                                  "the shape needs %zu",
                                  name, bad, count);
            }
            return bd_err_set(err, BD_EINVAL,
                              "input '%.128s': binary BYTES element %zu has a length prefix cut "
                              "to %zu of its 4 bytes",
                              name, bad, left);
        }
        /* At element 0 the likely mistake is data without the length prefixes (an image
         * file as it is), whose first 4 bytes read as a huge length. */
        return bd_err_set(err, BD_EINVAL,
                          "input '%.128s': binary BYTES element %zu says %zu bytes but only %zu "
                          "remain%s",
                          name, bad, need, left,
                          bad == 0 ? " (each element is a 4-byte little-endian length, then "
                                     "that many bytes)"
                                   : "");
    }
    if (off != size) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.128s': binary BYTES data has %zu bytes left over after the "
                          "%zu elements of its shape",
                          name, size - off, count);
    }
    return 0;
}

int bd_tensor_check_size(const bd_tensor_t *t, bd_err_t *err)
{
    char str[128];
    const char *name = t->name ? t->name : "";
    size_t count = 0, bytes = 0;
    if (bd_shape_count(&t->shape, 0, &count, NULL) != 0) {
        return bd_err_set(err, BD_EINVAL, "input '%.128s': shape %s is too large", name,
                          bd_shape_str(&t->shape, str, sizeof str));
    }
    if (t->dtype == BD_DT_BYTES) {
        return bd_bytes_check(name, t->data, t->byte_size, count, err);
    }
    if (!bd_mul_size(count, bd_dtype_size(t->dtype), &bytes) || bytes != t->byte_size) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.128s': expected %zu bytes of data for shape %s, got %zu", name,
                          bytes, bd_shape_str(&t->shape, str, sizeof str), t->byte_size);
    }
    if (bytes > 0 && !t->data) {
        return bd_err_set(err, BD_EINVAL, "input '%.128s': the tensor has no data", name);
    }
    return 0;
}

/* ---- classification -------------------------------------------------------------------- */

/* A class's score, widened for comparing: doubles hold every FP32/FP64 value and the ints up
 * to 2^53 exactly; 64-bit ints past that compare by their own value (i64/u64). */
typedef struct {
    double d;
    int64_t i;
    uint64_t u;
    size_t index;
} cls_t;

/* Whether a ranks before b. kind: 0 compares d, 1 i, 2 u. */
static bool cls_before(const cls_t *a, const cls_t *b, int kind)
{
    if (kind == 1 && a->i != b->i) {
        return a->i > b->i;
    }
    if (kind == 2 && a->u != b->u) {
        return a->u > b->u;
    }
    if (kind == 0) {
        bool an = isnan(a->d), bn = isnan(b->d);
        if (an != bn) {
            return bn; /* NaN last */
        }
        if (!an && a->d != b->d) {
            return a->d > b->d;
        }
    }
    return a->index < b->index;
}

static void cls_read(const bd_tensor_t *t, size_t at, cls_t *c)
{
    const unsigned char *p = (const unsigned char *)t->data + at * bd_dtype_size(t->dtype);
    union {
        int8_t i8;
        int16_t i16;
        int32_t i32;
        int64_t i64;
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;
        float f;
        double d;
    } v;
    memcpy(&v, p, bd_dtype_size(t->dtype));
    c->i = 0;
    c->u = 0;
    switch (t->dtype) {
    case BD_DT_BOOL:
        c->i = v.u8 != 0;
        break;
    case BD_DT_INT8:
        c->i = v.i8;
        break;
    case BD_DT_INT16:
        c->i = v.i16;
        break;
    case BD_DT_INT32:
        c->i = v.i32;
        break;
    case BD_DT_INT64:
        c->i = v.i64;
        break;
    case BD_DT_UINT8:
        c->u = v.u8;
        break;
    case BD_DT_UINT16:
        c->u = v.u16;
        break;
    case BD_DT_UINT32:
        c->u = v.u32;
        break;
    case BD_DT_UINT64:
        c->u = v.u64;
        break;
    case BD_DT_FP32:
        c->d = v.f;
        break;
    default:
        c->d = v.d;
        break;
    }
}

/* Restore the heap below `at` in h[0..n), whose root is its last-ranked entry. */
static void sift_down(cls_t *h, size_t n, size_t at, int kind)
{
    for (;;) {
        size_t worst = at, l = 2 * at + 1, r = l + 1;
        worst = l < n && cls_before(&h[worst], &h[l], kind) ? l : worst;
        worst = r < n && cls_before(&h[worst], &h[r], kind) ? r : worst;
        if (worst == at) {
            return;
        }
        cls_t tmp = h[at];
        h[at] = h[worst];
        h[worst] = tmp;
        at = worst;
    }
}

/* The k best of row[0..n) into best[0..k), best first: a heap of k whose root is the one a
 * better class replaces, then sorted out of it. O(n log k): an insertion sort was O(n k), and a
 * request asking for all 60,000 classes of its output held the loop for 5 s. */
static void top_k(const bd_tensor_t *t, size_t row0, size_t n, size_t k, int kind, cls_t *best)
{
    size_t have = 0;
    for (size_t j = 0; j < n; j++) {
        cls_t c;
        cls_read(t, row0 + j, &c);
        c.index = j;
        if (have < k) {
            size_t at = have++;
            while (at > 0 && cls_before(&best[(at - 1) / 2], &c, kind)) {
                best[at] = best[(at - 1) / 2];
                at = (at - 1) / 2;
            }
            best[at] = c;
        } else if (cls_before(&c, &best[0], kind)) {
            best[0] = c;
            sift_down(best, k, 0, kind);
        }
    }
    for (size_t end = have; end > 1; end--) { /* the last-ranked left goes last */
        cls_t tmp = best[0];
        best[0] = best[end - 1];
        best[end - 1] = tmp;
        sift_down(best, end - 1, 0, kind);
    }
}

/* `bytes`: what was counted before stopping. */
static int too_big(const char *name, size_t bytes, size_t limit, bd_err_t *err)
{
    return bd_err_set(err, BD_ETOOBIG,
                      "classification of output '%.128s' needs at least %zu bytes, which would "
                      "pass the request's memory limit of %zu bytes",
                      name, bytes, limit);
}

int bd_classify_check(const bd_tensor_t *in, size_t k, bool batched, size_t *classes_out,
                      bd_err_t *err)
{
    char str[128];
    const char *name = in->name ? in->name : "";
    bd_dtype_t dt = in->dtype;
    if (dt == BD_DT_BYTES || !bd_dtype_supported(dt)) {
        return bd_err_set(err, BD_EINVAL,
                          "output '%.128s' is %s; classification needs a numeric output", name,
                          bd_dtype_name(dt));
    }
    size_t count = 0;
    if (bd_shape_count(&in->shape, 0, &count, NULL) != 0 || (batched && in->shape.ndim < 1) ||
        count * bd_dtype_size(dt) != in->byte_size || (count && !in->data)) {
        return bd_err_set(err, BD_EINVAL, "output '%.128s' with shape %s cannot be classified",
                          name, bd_shape_str(&in->shape, str, sizeof str));
    }
    bd_shape_t cs = in->shape; /* the class dims: all but the batch dim */
    if (batched) {
        cs.ndim--;
        memmove(cs.dims, cs.dims + 1, (size_t)cs.ndim * sizeof cs.dims[0]);
    }
    size_t classes = 0;
    if (bd_shape_count(&cs, 0, &classes, NULL) != 0) {
        classes = 0;
    }
    if (k == 0 || k > classes) {
        return bd_err_set(err, BD_EINVAL,
                          "output '%.128s': classification asks for %zu classes but the output "
                          "has %zu",
                          name, k, classes);
    }
    if (classes_out) {
        *classes_out = classes;
    }
    return 0;
}

int bd_classify(const bd_tensor_t *in, size_t k, bool batched, const char *const *labels,
                size_t n_labels, bd_arena_t *arena, bd_tensor_t *out, bd_err_t *err)
{
    size_t classes = 0;
    int rc = bd_classify_check(in, k, batched, &classes, err);
    if (rc != 0) {
        return rc;
    }
    const char *name = in->name ? in->name : "";
    bd_dtype_t dt = in->dtype;
    size_t rows = batched ? (size_t)in->shape.dims[0] : 1;
    int kind = (dt == BD_DT_FP32 || dt == BD_DT_FP64)      ? 0
               : (dt >= BD_DT_UINT8 && dt <= BD_DT_UINT64) ? 2
                                                           : 1;
    /* What the request may still use (its arena's limit): the ranking's scratch, and the strings
     * at their shortest (a 4-byte length, one digit, ':', one digit), must fit before any work
     * is done; a k of millions over a 1-byte BOOL output asked 32 bytes a class before. */
    size_t room = !arena->limit                ? SIZE_MAX
                  : arena->limit > arena->used ? arena->limit - arena->used
                                               : 0;
    size_t least = rows * k * 7 > k * sizeof(cls_t) ? rows * k * 7 : k * sizeof(cls_t);
    if (least > room) {
        return too_big(name, least, arena->limit, err);
    }
    cls_t *best = malloc(k * sizeof *best);
    if (!best) {
        return bd_err_set(err, BD_ENOMEM, "out of memory classifying output '%.128s'", name);
    }
    /* Each string: score ("%f" of DBL_MAX is 316 characters), ':', index, ':', label; built
     * in a scratch buffer, then copied once into the arena at its exact size. */
    bd_buf_t text = {0};
    for (size_t r = 0; r < rows && text.len <= room; r++) {
        top_k(in, r * classes, classes, k, kind, best);
        for (size_t j = 0; j < k && text.len <= room; j++) { /* stops a string past room */
            char num[400];
            const cls_t *c = &best[j];
            if (kind == 0) {
                /* NaN without its sign ("-nan" is glibc's for some NaNs); inf, -inf as %f. */
                snprintf(num, sizeof num, "%f", isnan(c->d) ? NAN : c->d);
            } else if (kind == 1) {
                snprintf(num, sizeof num, "%lld", (long long)c->i);
            } else {
                snprintf(num, sizeof num, "%llu", (unsigned long long)c->u);
            }
            size_t nl = strlen(num);
            char idx[32];
            int il = snprintf(idx, sizeof idx, ":%zu", c->index);
            const char *label = c->index < n_labels && labels ? labels[c->index] : NULL;
            if (label && !label[0]) {
                label = NULL; /* an empty line: no label, as Triton does */
            }
            size_t ll = label ? strlen(label) : 0;
            size_t len = nl + (size_t)il + (label ? 1 + ll : 0);
            unsigned char pre[4] = {(unsigned char)len, (unsigned char)(len >> 8),
                                    (unsigned char)(len >> 16), (unsigned char)(len >> 24)};
            bd_buf_append(&text, pre, 4);
            bd_buf_append(&text, num, nl);
            bd_buf_append(&text, idx, (size_t)il);
            if (label) {
                bd_buf_putc(&text, ':');
                bd_buf_append(&text, label, ll);
            }
        }
    }
    free(best);
    if (text.len > room) {
        bd_buf_dispose(&text);
        return too_big(name, text.len, arena->limit, err);
    }
    if (text.failed) {
        bd_buf_dispose(&text);
        return bd_err_set(err, BD_ENOMEM, "out of memory classifying output '%.128s'", name);
    }
    void *data = text.len ? bd_arena_alloc(arena, text.len) : NULL;
    if (text.len && !data) {
        size_t n = text.len;
        bd_buf_dispose(&text);
        return arena->limit ? too_big(name, n, arena->limit, err)
                            : bd_err_set(err, BD_ENOMEM,
                                         "out of memory classifying output "
                                         "'%.128s'",
                                         name);
    }
    if (text.len) {
        memcpy(data, text.data, text.len);
    }
    memset(out, 0, sizeof *out);
    out->name = in->name;
    out->dtype = BD_DT_BYTES;
    out->shape.ndim = batched ? 2 : 1;
    out->shape.dims[0] = batched ? (int64_t)rows : (int64_t)k;
    out->shape.dims[1] = batched ? (int64_t)k : 0;
    out->data = data;
    out->byte_size = text.len;
    bd_buf_dispose(&text);
    return 0;
}
