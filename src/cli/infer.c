/* infer.c: `batchd infer` (send one request, print the reply readably) and `batchd inspect`
 * (a model's inputs, outputs, shapes, datatypes and batch dimension, from a server's metadata
 * or from a model.onnx loaded with the ONNX Runtime backend). Both are plain blocking
 * clients: one connection with "Connection: close" per request (loadgen's bd_lg_http_request),
 * through TLS (OpenSSL) for an https:// URL: TLS 1.2 or newer, the server's certificate checked
 * against --cacert or the system's CAs and against the URL's host name or address. Main thread
 * only.
 *
 * Exit status: 0 on success, 1 when the server or the connection failed (the server's error
 * sentence is printed on stderr, as is why a file does not fit the model's input), 2 for bad
 * flags (a file named by a flag that cannot be read, or a lone --image that is no JPEG or PNG,
 * included). */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "loadgen/loadgen.h"

#define MAX_FILE_BYTES ((size_t)1 << 30)
#define MAX_REPLY_BYTES ((size_t)1 << 30)

/* A JSON string (it may hold NULs) from a server, as a terminal line may show it
 * (bd_text_shown); "?" for anything else. */
static const char *shown_json(char *buf, size_t cap, json_t *v)
{
    const char *s = json_string_value(v);
    return bd_text_shown(buf, cap, s, s ? json_string_length(v) : 0);
}

/* The server's {"error": "..."} sentence, or the status and body. Returns 1. */
static int report_http_error(const char *cmd, const bd_lg_reply_t *r)
{
    json_t *root = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    json_t *msg = json_object_get(root, "error");
    char buf[4096];
    if (json_is_string(msg)) {
        fprintf(stderr, "batchd %s: %s\n", cmd, shown_json(buf, sizeof buf, msg));
    } else {
        fprintf(stderr, "batchd %s: the server answered %d: %s\n", cmd, r->status,
                r->body.len ? bd_text_shown(buf, BD_TEXT_SNIPPET, r->body.data, r->body.len)
                            : "(empty body)");
    }
    if (r->status == 401) {
        fprintf(stderr, "batchd %s: a key goes with --api-key or BATCHD_API_KEY\n", cmd);
    }
    json_decref(root);
    return 1;
}

/* GET the model's metadata; prints the error and returns NULL when it fails. */
static json_t *get_metadata(const char *cmd, const bd_lg_target_t *t, uint64_t timeout_us,
                            int *exit_code)
{
    char path[1024];
    bd_lg_model_path(t, path, sizeof path);
    bd_lg_reply_t r = {0};
    bd_buf_init(&r.body);
    bd_err_t err = {0};
    json_t *root = NULL;
    *exit_code = 1;
    if (bd_lg_http_request(t, "GET", path, "", NULL, 0, timeout_us, MAX_REPLY_BYTES, &r, &err) !=
        0) {
        fprintf(stderr, "batchd %s: %s\n", cmd, err.msg);
    } else if (r.status != 200) {
        report_http_error(cmd, &r);
    } else {
        root = json_loadb(r.body.data, r.body.len, 0, NULL);
        if (!json_is_object(root)) {
            fprintf(stderr, "batchd %s: the metadata of model '%s' is not a JSON object\n", cmd,
                    t->model);
            json_decref(root);
            root = NULL;
        }
    }
    bd_buf_dispose(&r.body);
    return root;
}

/* ---- printing a reply ------------------------------------------------------------------ */

static void print_shape(FILE *f, json_t *shape)
{
    size_t i;
    json_t *v;
    fputc('[', f);
    json_array_foreach(shape, i, v)
    {
        fprintf(f, i ? ",%lld" : "%lld", (long long)json_integer_value(v));
    }
    fputc(']', f);
}

/* A BYTES element as one word of an output line: as it is when it is printable ASCII without
 * spaces, quotes or backslashes, else quoted with other bytes as \xNN (as the server's log
 * writes what clients send), so that a server's bytes cannot move the cursor or split the
 * line, and elements stay apart. */
static void print_text(const char *s, size_t n)
{
    size_t cap = n > (SIZE_MAX - 8) / 4 ? 0 : n * 4 + 8;
    char *buf = cap ? malloc(cap) : NULL;
    if (!buf) {
        printf("?");
        return;
    }
    fputs(bd_log_field(buf, cap, s, n), stdout);
    free(buf);
}

/* One classification string "<score>:<index>[:<label>]" as a table line. */
static void print_class(size_t rank, const char *s, size_t n)
{
    if (!bd_text_plain(s, n)) {
        printf("%-4zu  ", rank);
        print_text(s, n);
        printf("\n");
        return;
    }
    const char *c1 = memchr(s, ':', n);
    const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(s + n - c1 - 1)) : NULL;
    if (!c1) {
        printf("%-4zu  %.*s\n", rank, (int)n, s);
        return;
    }
    int score_len = (int)(c1 - s);
    int index_len = (int)((c2 ? c2 : s + n) - c1 - 1);
    int label_len = c2 ? (int)(s + n - c2 - 1) : 0;
    printf("%-4zu  %-10.*s  %-5.*s  %.*s\n", rank, score_len, s, index_len, c1 + 1, label_len,
           c2 ? c2 + 1 : "");
}

typedef struct {
    const char *p; /* next element */
    size_t left;
} bytes_iter_t;

/* The next BYTES element of a binary section, or false. */
static bool next_bytes(bytes_iter_t *it, const char **s, size_t *n)
{
    if (it->left < 4) {
        return false;
    }
    uint32_t len;
    memcpy(&len, it->p, 4);
    if (len > it->left - 4) {
        return false;
    }
    *s = it->p + 4;
    *n = len;
    it->p += 4 + (size_t)len;
    it->left -= 4 + (size_t)len;
    return true;
}

static void print_binary_value(bd_dtype_t dt, const char *p)
{
    switch (dt) {
    case BD_DT_BOOL:
        printf("%s", *p ? "true" : "false");
        break;
    case BD_DT_UINT8:
        printf("%u", (unsigned)(unsigned char)*p);
        break;
    case BD_DT_INT8:
        printf("%d", (int)(signed char)*p);
        break;
    case BD_DT_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        printf("%u", (unsigned)v);
        break;
    }
    case BD_DT_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        printf("%d", (int)v);
        break;
    }
    case BD_DT_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        printf("%lu", (unsigned long)v);
        break;
    }
    case BD_DT_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        printf("%ld", (long)v);
        break;
    }
    case BD_DT_UINT64: {
        uint64_t v;
        memcpy(&v, p, 8);
        printf("%llu", (unsigned long long)v);
        break;
    }
    case BD_DT_INT64: {
        int64_t v;
        memcpy(&v, p, 8);
        printf("%lld", (long long)v);
        break;
    }
    case BD_DT_FP32: {
        float v;
        memcpy(&v, p, 4);
        printf("%.9g", (double)v);
        break;
    }
    case BD_DT_FP64: {
        double v;
        memcpy(&v, p, 8);
        printf("%.17g", v);
        break;
    }
    default:
        printf("?");
        break;
    }
}

/* One JSON element of an output of datatype `dt`: FP64 with the 17 digits that read back
 * exactly, an integer past int64 as the text quote_big_ints kept. */
static void print_json_value(json_t *v, bd_dtype_t dt)
{
    if (json_is_integer(v)) {
        printf("%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        printf(dt == BD_DT_FP64 ? "%.17g" : "%.9g", json_real_value(v));
    } else if (json_is_string(v)) {
        print_text(json_string_value(v), json_string_length(v));
    } else if (json_is_boolean(v)) {
        printf("%s", json_is_true(v) ? "true" : "false");
    } else if (json_is_null(v)) {
        printf("null"); /* a NaN or infinity in JSON (--binary shows which) */
    } else {
        printf("?");
    }
}

/* jansson refuses a whole document over one integer past int64 (a UINT64 output's
 * 18446744073709551615): a copy of the reply's JSON with each such number quoted, so that it
 * is read as its text, or NULL when there is none (or no memory: jansson then says why). */
static char *quote_big_ints(const char *s, size_t n, size_t *out_len)
{
    bd_buf_t b;
    bd_buf_init(&b);
    size_t done = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        if (in_str) {
            if (s[i] == '\\') {
                i++; /* the escaped character, '"' included */
            } else {
                in_str = s[i] != '"';
            }
            continue;
        }
        if (s[i] == '"') {
            in_str = true;
            continue;
        }
        if (s[i] != '-' && (s[i] < '0' || s[i] > '9')) {
            continue;
        }
        size_t end = i + (s[i] == '-'), digits;
        while (end < n && s[end] >= '0' && s[end] <= '9') {
            end++;
        }
        digits = end - i - (s[i] == '-');
        bool integer = end == n || !strchr(".eE", s[end]);
        /* int64 has 19 digits: compare a 19-digit number's text with the limit's. */
        const char *lim = s[i] == '-' ? "9223372036854775808" : "9223372036854775807";
        if (integer && (digits > 19 || (digits == 19 && memcmp(s + end - 19, lim, 19) > 0))) {
            bd_buf_append(&b, s + done, i - done);
            bd_buf_putc(&b, '"');
            bd_buf_append(&b, s + i, end - i);
            bd_buf_putc(&b, '"');
            done = end;
        }
        while (end < n && strchr("0123456789.eE+-", s[end])) {
            end++; /* the rest of a real's text */
        }
        i = end - 1;
    }
    if (done == 0 || b.failed) {
        bd_buf_dispose(&b);
        return NULL;
    }
    bd_buf_append(&b, s + done, n - done);
    return b.failed ? (bd_buf_dispose(&b), NULL) : bd_buf_steal(&b, out_len);
}

/* Flatten nested JSON data into `flat`. */
static void flatten(json_t *v, json_t *flat)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            flatten(e, flat);
        }
    } else {
        json_array_append(flat, v);
    }
}

/* The elements of an output's binary data: SIZE_MAX when its datatype is unknown (nothing
 * is printed then, and nothing checked). */
static size_t count_binary(bd_dtype_t dt, const char *bin, size_t nbin)
{
    if (dt == BD_DT_BYTES) {
        bytes_iter_t it = {bin, nbin};
        const char *s;
        size_t n, have = 0;
        while (next_bytes(&it, &s, &n)) {
            have++;
        }
        return it.left ? SIZE_MAX - 1 : have; /* bytes after the last element: a partial one */
    }
    size_t size = bd_dtype_size(dt);
    return !size ? SIZE_MAX : nbin % size ? SIZE_MAX - 1 /* never a shape's count */ : nbin / size;
}

/* Whether `have` values are what the reply's shape says (a broken server's shape is not
 * printed over values it does not hold). */
static bool values_fill_shape(json_t *shape, size_t have)
{
    size_t want = 1, i;
    json_t *d;
    json_array_foreach(shape, i, d)
    {
        json_int_t v = json_integer_value(d);
        if (!json_is_integer(d) || v < 0 || !bd_mul_size(want, (size_t)v, &want)) {
            return false;
        }
    }
    return have == SIZE_MAX || (json_is_array(shape) && have == want);
}

/* Print the reply of a 200: every output, classification outputs as tables. */
static int print_reply(const bd_lg_reply_t *r, bool classification)
{
    size_t hlen = r->header_len >= 0 && (size_t)r->header_len <= r->body.len ? (size_t)r->header_len
                                                                             : r->body.len;
    json_error_t jerr;
    size_t qlen = 0;
    char *quoted = quote_big_ints(r->body.data, hlen, &qlen);
    /* BYTES elements may hold NULs (\u0000), as requests' may. */
    json_t *root = quoted ? json_loadb(quoted, qlen, JSON_ALLOW_NUL, &jerr)
                          : json_loadb(r->body.data, hlen, JSON_ALLOW_NUL, &jerr);
    free(quoted);
    json_t *outputs = json_object_get(root, "outputs");
    char body[BD_TEXT_SNIPPET];
    bd_text_shown(body, sizeof body, r->body.data, hlen);
    if (!root) {
        char why[JSON_ERROR_TEXT_LENGTH + 64];
        fprintf(stderr, "batchd infer: the reply is not JSON (%s): %s\n",
                bd_json_fault(why, sizeof why, jerr.text), body);
        return 1;
    }
    if (!json_is_array(outputs)) {
        fprintf(stderr, "batchd infer: the reply has no \"outputs\" array: %s\n", body);
        json_decref(root);
        return 1;
    }
    json_t *model = json_object_get(root, "model_name");
    json_t *version = json_object_get(root, "model_version");
    if (json_is_string(model)) {
        char mb[256], vb[256];
        printf("model %s", shown_json(mb, sizeof mb, model));
        if (json_is_string(version)) {
            printf(" version %s", shown_json(vb, sizeof vb, version));
        }
        printf("\n");
    }
    const char *bin = r->body.data + hlen;
    size_t bin_left = r->body.len - hlen;
    size_t i;
    json_t *out;
    int rc = 0;
    json_array_foreach(outputs, i, out)
    {
        char nb[256], db[64];
        const char *name = shown_json(nb, sizeof nb, json_object_get(out, "name"));
        const char *dtn = json_string_value(json_object_get(out, "datatype"));
        const char *dt_shown = shown_json(db, sizeof db, json_object_get(out, "datatype"));
        json_t *shape = json_object_get(out, "shape");
        bd_dtype_t dt = bd_dtype_from_name(dtn ? dtn : "");
        json_t *bsize = json_object_get(json_object_get(out, "parameters"), "binary_data_size");
        size_t nbin = 0;
        if (json_is_integer(bsize)) {
            nbin = (size_t)json_integer_value(bsize);
            if (nbin > bin_left) {
                fprintf(stderr, "batchd infer: output '%s' has less binary data than it says\n",
                        name);
                rc = 1;
                break;
            }
        }
        /* The elements, as JSON values or as binary. */
        json_t *flat = json_array();
        if (!json_is_integer(bsize)) {
            flatten(json_object_get(out, "data"), flat);
        }
        size_t ndim = json_array_size(shape);
        size_t values =
            json_is_integer(bsize) ? count_binary(dt, bin, nbin) : json_array_size(flat);
        if (classification && dt == BD_DT_BYTES) {
            size_t k = ndim ? (size_t)json_integer_value(json_array_get(shape, ndim - 1)) : 0;
            size_t rows = ndim >= 2 ? (size_t)json_integer_value(json_array_get(shape, 0)) : 1;
            bytes_iter_t it = {bin, nbin};
            /* The classes the reply holds must be the ones its shape says: a broken server's
             * shape alone must not make this print forever. */
            size_t have = values;
            if (have == SIZE_MAX - 1) {
                fprintf(stderr, "batchd infer: output '%s' holds bytes after its last class\n",
                        name);
                json_decref(flat);
                rc = 1;
                break;
            }
            if (k == 0 || rows > have / k || rows * k != have) {
                fprintf(stderr,
                        "batchd infer: output '%s' holds %zu classes, but its shape says %zu "
                        "rows of %zu\n",
                        name, have, rows, k);
                json_decref(flat);
                rc = 1;
                break;
            }
            for (size_t row = 0; row < rows; row++) {
                if (rows > 1) {
                    printf("output %s row %zu: top %zu classes\n", name, row, k);
                } else {
                    printf("output %s: top %zu classes\n", name, k);
                }
                printf("%-4s  %-10s  %-5s  %s\n", "rank", "score", "index", "label");
                for (size_t j = 0; j < k; j++) {
                    const char *s = NULL;
                    size_t n = 0;
                    if (json_is_integer(bsize)) {
                        if (!next_bytes(&it, &s, &n)) {
                            break;
                        }
                    } else {
                        json_t *e = json_array_get(flat, row * k + j);
                        s = json_string_value(e);
                        n = s ? json_string_length(e) : 0;
                    }
                    print_class(j + 1, s ? s : "", n);
                }
            }
        } else if (!values_fill_shape(shape, values)) {
            fprintf(stderr, "batchd infer: output '%s' holds ", name);
            if (values == SIZE_MAX - 1) {
                fprintf(stderr, "%zu bytes of %s, not whole values", nbin, dt_shown);
            } else {
                fprintf(stderr, "%zu value%s", values, values == 1 ? "" : "s");
            }
            fprintf(stderr, ", but its shape is ");
            print_shape(stderr, shape);
            fprintf(stderr, "\n");
            json_decref(flat);
            rc = 1;
            break;
        } else {
            printf("output %s %s ", name, dt_shown);
            print_shape(stdout, shape);
            printf(":");
            if (!json_is_integer(bsize)) {
                size_t j;
                json_t *e;
                json_array_foreach(flat, j, e)
                {
                    printf(" ");
                    print_json_value(e, dt);
                }
            } else if (dt == BD_DT_BYTES) {
                bytes_iter_t it = {bin, nbin};
                const char *s;
                size_t n;
                while (next_bytes(&it, &s, &n)) {
                    printf(" ");
                    print_text(s, n);
                }
            } else if (bd_dtype_size(dt) > 0) {
                for (size_t off = 0; off + bd_dtype_size(dt) <= nbin; off += bd_dtype_size(dt)) {
                    printf(" ");
                    print_binary_value(dt, bin + off);
                }
            }
            printf("\n");
        }
        json_decref(flat);
        bin += nbin;
        bin_left -= nbin;
    }
    json_decref(root);
    return rc;
}

/* ---- batchd infer ---------------------------------------------------------------------- */

typedef struct {
    const char *url, *model, *version, *json, *cacert, *api_key;
    bd_cli_list_t images, inputs, shapes;
    int64_t classification;
    bool binary;
    uint64_t timeout_us;
} infer_opts_t;

#define IOFF(f) offsetof(infer_opts_t, f)
static const bd_cli_opt_t iopts[] = {
    BD_CLI_SERVER_OPTS(infer_opts_t),
    {"--image", BD_CLI_LIST, IOFF(images), NULL, 0, 0, NULL,
     "a JPEG or PNG file (repeatable: several go as one request, one image per row)"},
    {"--input", BD_CLI_LIST, IOFF(inputs), NULL, 0, 0, NULL,
     "NAME=FILE raw little-endian bytes of one input (repeatable; one per input)"},
    {"--shape", BD_CLI_LIST, IOFF(shapes), NULL, 0, 0, NULL,
     "[NAME:]D1,D2,... dims of an --input with variable dims, batch dim excluded (repeatable)"},
    {"--json", BD_CLI_STR, IOFF(json), NULL, 0, 0, NULL, "post this JSON request file as is"},
    {"--classification", BD_CLI_INT, IOFF(classification), "0", 0, 65536, NULL,
     "ask every output for its top K classes and print them as a table (0: no)"},
    {"--binary", BD_CLI_BOOL, IOFF(binary), NULL, 0, 0, NULL,
     "binary tensors (Triton's extension) for inputs and outputs instead of JSON"},
    {"--timeout", BD_CLI_DUR, IOFF(timeout_us), "60s", 0.001, 86400, NULL,
     "how long the whole request may take: connecting, sending and the reply"},
};
static const bd_cli_cmd_t infer_cmd = {
    .usage =
        "usage: batchd infer --url http[s]://HOST:PORT[/PREFIX] --model M [--model-version V]\n"
        "       (--image FILE [--image FILE]... | --input NAME=FILE [--input NAME=FILE]...\n"
        "        [--shape [NAME:]D1,D2,...]... | --json FILE)\n"
        "       [--classification K (not with --json)] [--binary]\n"
        "       [--cacert FILE] [--api-key KEY] [--timeout 60s]\n",
    .opts = iopts,
    .n_opts = sizeof iopts / sizeof iopts[0],
};

bool bd_cli_cacert_loads(const char *cmd, const char *path)
{
    bd_err_t err = {0};
    if (!bd_cli_cacert_ok(cmd, path)) {
        return false;
    }
    if (path && bd_lg_tls_check_cacert(path, &err) != 0) { /* a bad file is a bad flag: 2 */
        fprintf(stderr, "batchd %s: %s\n", cmd, err.msg);
        return false;
    }
    return true;
}

static const char *image_type(const char *d, size_t n)
{
    if (n >= 3 && (unsigned char)d[0] == 0xFF && (unsigned char)d[1] == 0xD8 &&
        (unsigned char)d[2] == 0xFF) {
        return "image/jpeg";
    }
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) {
        return "image/png";
    }
    return NULL;
}

static void base64(bd_buf_t *b, const unsigned char *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)d[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= d[i + 2];
        }
        char q[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        bd_buf_append(b, q, 4);
    }
}

/* ,"outputs":[{"name":..,"parameters":{"classification":K}},..] for every output in `meta`. */
static void outputs_clause(bd_buf_t *b, json_t *meta, int64_t k)
{
    bd_buf_puts(b, ",\"outputs\":[");
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(meta, "outputs"), i, o)
    {
        const char *name = json_string_value(json_object_get(o, "name"));
        bd_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        bd_buf_json_string(b, name ? name : "", name ? strlen(name) : 0);
        bd_buf_printf(b, ",\"parameters\":{\"classification\":%lld}}", (long long)k);
    }
    bd_buf_putc(b, ']');
}

/* Several images (or --binary): one JSON or binary request with a BYTES input. */
static int build_images_request(const infer_opts_t *o, json_t *meta, char **files, size_t *lens,
                                bd_buf_t *body, size_t *header_len)
{
    json_t *inputs = json_object_get(meta, "inputs");
    const char *name = NULL;
    size_t ndim = 1;
    size_t i;
    json_t *in;
    json_array_foreach(inputs, i, in)
    {
        const char *dt = json_string_value(json_object_get(in, "datatype"));
        if (dt && strcmp(dt, "BYTES") == 0) {
            name = json_string_value(json_object_get(in, "name"));
            ndim = json_array_size(json_object_get(in, "shape"));
            break;
        }
    }
    if (!name) {
        fprintf(stderr,
                "batchd infer: model '%s' has no BYTES input to send images to (does its "
                "config.json have a \"preprocess\" section?)\n",
                o->model);
        return -1;
    }
    size_t n = o->images.n;
    bd_buf_t bin;
    bd_buf_init(&bin);
    bd_buf_puts(body, "{\"inputs\":[{\"name\":");
    bd_buf_json_string(body, name, strlen(name));
    bd_buf_printf(body, ",\"datatype\":\"BYTES\",\"shape\":[%zu%s]", n, ndim >= 2 ? ",1" : "");
    if (o->binary) {
        size_t total = 0;
        for (size_t k = 0; k < n; k++) {
            uint32_t l = (uint32_t)lens[k];
            bd_buf_append(&bin, &l, 4);
            bd_buf_append(&bin, files[k], lens[k]);
            total += 4 + lens[k];
        }
        bd_buf_printf(body, ",\"parameters\":{\"binary_data_size\":%zu}}]", total);
        bd_buf_puts(body, ",\"parameters\":{\"binary_data_output\":true}");
    } else {
        bd_buf_puts(body, ",\"data\":[");
        for (size_t k = 0; k < n; k++) {
            bd_buf_puts(body, k ? ",\"" : "\"");
            base64(body, (const unsigned char *)files[k], lens[k]);
            bd_buf_putc(body, '"');
        }
        bd_buf_puts(body, "]}]");
    }
    if (o->classification > 0) {
        outputs_clause(body, meta, o->classification);
    }
    bd_buf_putc(body, '}');
    *header_len = body->len;
    bd_buf_append(body, bin.data ? bin.data : "", bin.len);
    bool failed = bin.failed;
    bd_buf_dispose(&bin);
    if (failed || body->failed) {
        fprintf(stderr, "batchd infer: out of memory building the request\n");
        return -1;
    }
    return 0;
}

#define INPUT_NAME_MAX 128 /* bytes of an --input NAME, with its NUL */

/* Whether --input `s` is NAME=FILE with a NAME that fits INPUT_NAME_MAX. */
static bool input_spec_ok(const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s || eq - s >= INPUT_NAME_MAX || !eq[1]) {
        fprintf(stderr, "batchd infer: --input must be NAME=FILE, got '%s'\n", s);
        return false;
    }
    return true;
}

/* --input NAME=FILE: the loadgen's request builder (metadata datatypes and shapes, --shape's
 * o->shapes.n parsed `shapes` for variable dims, JSON or binary), then the classification outputs
 * spliced into its JSON header. Returns 0, or the exit status: 2 for a file that cannot be
 * read, 1 for one that does not fit the model's input. */
static int build_inputs_request(const infer_opts_t *o, const bd_lg_shape_opt_t *shapes,
                                bd_lg_target_t *t, json_t *meta, bd_buf_t *body, size_t *header_len)
{
    static bd_lg_file_opt_t files[BD_CLI_LIST_MAX];
    static char names[BD_CLI_LIST_MAX][INPUT_NAME_MAX];
    for (size_t i = 0; i < o->inputs.n; i++) {
        const char *s = o->inputs.v[i];
        const char *eq = strchr(s, '='); /* input_spec_ok said it is there */
        memcpy(names[i], s, (size_t)(eq - s));
        names[i][eq - s] = '\0';
        files[i].name = names[i];
        files[i].path = eq + 1;
    }
    size_t i;
    json_t *in;
    json_array_foreach(json_object_get(meta, "inputs"), i, in)
    {
        const char *name = json_string_value(json_object_get(in, "name"));
        bool found = false;
        for (size_t k = 0; k < o->inputs.n && name; k++) {
            found = found || strcmp(names[k], name) == 0;
        }
        if (!found) {
            char nb[256];
            shown_json(nb, sizeof nb, json_object_get(in, "name"));
            fprintf(stderr, "batchd infer: model '%s' needs input '%s' (--input %s=FILE)\n",
                    o->model, nb, name ? nb : "NAME");
            return 1;
        }
    }
    char *text = json_dumps(meta, JSON_COMPACT);
    bd_lg_request_opts_t ro = {.batch = 1,
                               .binary = o->binary,
                               .files = files,
                               .n_files = o->inputs.n,
                               .shapes = shapes,
                               .n_shapes = o->shapes.n};
    bd_err_t err = {0};
    int rc = text ? bd_lg_build_request(t, text, strlen(text), &ro, &err)
                  : bd_err_set(&err, BD_ENOMEM, "out of memory");
    free(text);
    if (rc != 0) {
        /* The builder is the load generator's; its sentences name bench's flag. */
        const char *flag = "--data-file ";
        bool named = strncmp(err.msg, flag, strlen(flag)) == 0;
        fprintf(stderr, "batchd infer: %s%s\n", named ? "--input " : "",
                named ? err.msg + strlen(flag) : err.msg);
        return err.code == BD_EIO ? 2 : 1;
    }
    const char *b = strstr(t->request, "\r\n\r\n") + 4;
    size_t blen = t->body_len;
    size_t hlen = blen;
    const char *ih = strstr(t->request, "Inference-Header-Content-Length: ");
    if (ih && ih < b) {
        hlen = (size_t)strtoull(ih + strlen("Inference-Header-Content-Length: "), NULL, 10);
    }
    /* The JSON header ends with '}': insert the outputs before it. */
    bd_buf_append(body, b, hlen - 1);
    if (o->classification > 0) {
        outputs_clause(body, meta, o->classification);
    }
    bd_buf_putc(body, '}');
    *header_len = body->len;
    bd_buf_append(body, b + hlen, blen - hlen);
    if (body->failed) {
        fprintf(stderr, "batchd infer: out of memory building the request\n");
        return 1;
    }
    return 0;
}

int bd_cli_infer(int argc, char **argv)
{
    static infer_opts_t o;
    memset(&o, 0, sizeof o);
    bd_err_t err = {0};
    int prc = bd_cli_parse(&infer_cmd, argc, argv, &o, stdout, &err);
    if (prc == BD_CLI_HELP) {
        return 0;
    }
    if (prc != 0) {
        fprintf(stderr, "batchd infer: %s\n", err.msg);
        return 2;
    }
    if (!o.url || !o.model) {
        fprintf(stderr, "batchd infer: --url and --model are required (see --help)\n");
        return 2;
    }
    if (!bd_cli_model_ok("infer", o.model)) {
        return 2;
    }
    int kinds = (o.images.n > 0) + (o.inputs.n > 0) + (o.json != NULL);
    if (kinds != 1) {
        fprintf(stderr, "batchd infer: give one of --image, --input or --json (see --help)\n");
        return 2;
    }
    for (size_t i = 0; i < o.inputs.n; i++) {
        if (!input_spec_ok(o.inputs.v[i])) {
            return 2;
        }
        size_t n = (size_t)(strchr(o.inputs.v[i], '=') - o.inputs.v[i]) + 1; /* "NAME=" */
        for (size_t k = 0; k < i; k++) {
            if (strncmp(o.inputs.v[k], o.inputs.v[i], n) == 0) {
                fprintf(stderr, "batchd infer: --input %.*s is given twice; give each input once\n",
                        (int)n - 1, o.inputs.v[i]);
                return 2;
            }
        }
    }
    static bd_lg_shape_opt_t shapes[BD_CLI_LIST_MAX];
    static char shape_names[BD_CLI_LIST_MAX][INPUT_NAME_MAX];
    if (o.shapes.n > 0 && o.inputs.n == 0) {
        fprintf(stderr, "batchd infer: --shape goes with --input (an image's size is its own, "
                        "a --json file gives its shapes)\n");
        return 2;
    }
    for (size_t i = 0; i < o.shapes.n; i++) {
        if (bd_lg_parse_shape(o.shapes.v[i], &shapes[i], shape_names[i], INPUT_NAME_MAX) != 0) {
            fprintf(stderr,
                    "batchd infer: --shape must be [NAME:]D1,D2,... with dims >= 0, got '%s'\n",
                    o.shapes.v[i]);
            return 2;
        }
    }
    if (o.json && o.classification > 0) {
        fprintf(stderr, "batchd infer: --classification goes with --image or --input; a --json "
                        "file asks for classes with \"parameters\": {\"classification\": K}\n");
        return 2;
    }
    static bd_lg_target_t t;
    memset(&t, 0, sizeof t);
    if (bd_lg_parse_url(o.url, &t, &err) != 0) {
        fprintf(stderr, "batchd infer: %s\n", err.msg);
        return 2;
    }
    t.cacert = o.cacert;
    if (!bd_cli_api_key_ok("infer", o.api_key) || !bd_cli_cacert_loads("infer", o.cacert)) {
        return 2;
    }
    t.api_key = o.api_key;
    snprintf(t.model, sizeof t.model, "%s", o.model);
    snprintf(t.version, sizeof t.version, "%s", o.version ? o.version : "");

    /* A file named by a flag that cannot be read, or is not what the flag takes, is a bad
     * flag (exit 2), as bench's --data-file is. */
    int code = 2;
    static char *files[BD_CLI_LIST_MAX];
    static size_t lens[BD_CLI_LIST_MAX];
    memset(files, 0, sizeof files);
    json_t *meta = NULL;
    bd_buf_t body, headers;
    bd_buf_init(&body);
    bd_buf_init(&headers);
    bd_lg_reply_t r = {0};
    bd_buf_init(&r.body);
    char path[1024];
    bd_lg_model_path(&t, path, sizeof path);
    size_t plen = strlen(path);
    snprintf(path + plen, sizeof path - plen, "/infer");
    const char *ctype = "application/json";
    size_t header_len = 0;
    bool binary_body = false;

    for (size_t i = 0; i < o.images.n; i++) {
        files[i] = bd_read_file(o.images.v[i], MAX_FILE_BYTES, &lens[i], &err);
        if (!files[i]) {
            fprintf(stderr, "batchd infer: %s\n", err.msg);
            goto done;
        }
    }
    if (o.images.n == 1 && !o.binary) {
        /* A plain image body. */
        ctype = image_type(files[0], lens[0]);
        if (!ctype) {
            fprintf(stderr, "batchd infer: %s is not a JPEG or PNG file\n", o.images.v[0]);
            goto done;
        }
        if (o.classification > 0) {
            plen = strlen(path);
            snprintf(path + plen, sizeof path - plen, "?classification=%lld",
                     (long long)o.classification);
        }
        bd_buf_append(&body, files[0], lens[0]);
    } else if (o.json) {
        size_t n = 0;
        char *d = bd_read_file(o.json, MAX_FILE_BYTES, &n, &err);
        if (!d) {
            fprintf(stderr, "batchd infer: %s\n", err.msg);
            goto done;
        }
        bd_buf_append(&body, d, n);
        free(d);
    } else {
        meta = get_metadata("infer", &t, o.timeout_us, &code);
        if (!meta) {
            goto done;
        }
        int rc = o.images.n ? build_images_request(&o, meta, files, lens, &body, &header_len) != 0
                            : build_inputs_request(&o, shapes, &t, meta, &body, &header_len);
        if (rc != 0) {
            code = rc;
            goto done;
        }
        binary_body = o.binary;
    }
    code = 1;
    if (binary_body) {
        ctype = "application/octet-stream";
        bd_buf_printf(&headers, "Inference-Header-Content-Length: %zu\r\n", header_len);
    }
    bd_buf_printf(&headers, "Content-Type: %s\r\n", ctype);
    if (body.failed || headers.failed) {
        fprintf(stderr, "batchd infer: out of memory building the request\n");
        goto done;
    }
    if (bd_lg_http_request(&t, "POST", path, headers.data, body.data ? body.data : "", body.len,
                           o.timeout_us, MAX_REPLY_BYTES, &r, &err) != 0) {
        fprintf(stderr, "batchd infer: %s\n", err.msg);
        goto done;
    }
    if (r.status != 200) {
        code = report_http_error("infer", &r);
        goto done;
    }
    code = print_reply(&r, o.classification > 0);
done:
    for (size_t i = 0; i < o.images.n; i++) {
        free(files[i]);
    }
    json_decref(meta);
    bd_buf_dispose(&body);
    bd_buf_dispose(&headers);
    bd_buf_dispose(&r.body);
    bd_lg_target_dispose(&t);
    return code;
}

/* ---- batchd inspect -------------------------------------------------------------------- */

typedef struct {
    const char *url, *model, *version, *ort_lib, *cacert, *api_key;
    uint64_t timeout_us;
} inspect_opts_t;

#define NOFF(f) offsetof(inspect_opts_t, f)
static const bd_cli_opt_t nopts[] = {
    {"--url", BD_CLI_STR, NOFF(url), NULL, 0, 0, NULL, "server, http[s]://HOST:PORT[/prefix]"},
    {"--model", BD_CLI_STR, NOFF(model), NULL, 0, 0, NULL, "model name (with --url)"},
    {"--model-version", BD_CLI_STR, NOFF(version), NULL, 0, 0, NULL,
     "model version (default: the server's)"},
    BD_CLI_API_KEY_OPT(inspect_opts_t),
    BD_CLI_CACERT_OPT(inspect_opts_t),
    {"--onnxruntime-lib", BD_CLI_STR, NOFF(ort_lib), NULL, 0, 0, "BATCHD_ONNXRUNTIME_LIB",
     "libonnxruntime.so.1 to read a model file with (default: the one batchd was built with)"},
    {"--timeout", BD_CLI_DUR, NOFF(timeout_us), "30s", 0.001, 86400, NULL,
     "how long to wait for the server"},
};
static const bd_cli_cmd_t inspect_cmd = {
    .usage =
        "usage: batchd inspect --url http[s]://HOST:PORT[/PREFIX] --model M [--model-version V]\n"
        "                      [--cacert FILE] [--api-key KEY] [--timeout 30s]\n"
        "       batchd inspect PATH/model.onnx [--onnxruntime-lib PATH]\n",
    .opts = nopts,
    .n_opts = sizeof nopts / sizeof nopts[0],
};

/* One input or output: its name (a server's or a model file's, shown escaped when it holds
 * control bytes), datatype and dims. */
static void print_io_line(const char *name, const char *dt, const int64_t *dims, int ndim,
                          bool batch)
{
    char nb[256];
    printf("  %-20s %-6s [", bd_text_shown(nb, sizeof nb, name, strlen(name)), dt);
    int k = 0;
    if (batch) {
        printf("-1");
        k++;
    }
    for (int j = 0; j < ndim; j++, k++) {
        printf(k ? ",%lld" : "%lld", (long long)dims[j]);
    }
    printf("]\n");
}

static void print_batch_line(bool batched, long long mbs)
{
    if (!batched) {
        printf("batch dimension: none (max_batch_size 0: each request runs alone)\n");
    } else if (mbs > 0) {
        printf("batch dimension: the first dim (-1) of every input and output, up to %lld "
               "rows\n",
               mbs);
    } else {
        printf("batch dimension: the first dim (-1) of every input and output\n");
    }
}

static int inspect_file(const inspect_opts_t *o, const char *path)
{
    bd_err_t err = {0};
    bd_log_set_level(BD_LOG_WARN); /* no "loaded" lines around the answer */
    if (bd_ort_init(o->ort_lib, &err) != 0) {
        fprintf(stderr, "batchd inspect: ONNX Runtime is unavailable: %s\n", err.msg);
        return 1;
    }
    bd_model_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = strdup("model");
    cfg.model_path = strdup(path);
    cfg.dir = strdup(".");
    snprintf(cfg.backend, sizeof cfg.backend, "onnxruntime");
    cfg.max_batch_size = BD_MAX_BATCH_UNSET;
    cfg.instances = 1;
    cfg.threads_per_instance = 1;
    cfg.version = 1;
    int code = 1;
    bd_backend_model_t *m = NULL;
    if (!cfg.name || !cfg.model_path || !cfg.dir) {
        fprintf(stderr, "batchd inspect: out of memory\n");
    } else if (bd_backend_ort.load(&cfg, &m, &err) != 0) {
        fprintf(stderr, "batchd inspect: %s\n", err.msg);
    } else {
        bool batched = cfg.max_batch_size > 0;
        printf("model file: %s\n", path);
        printf("platform: onnxruntime_onnx\n");
        if (batched) {
            printf("batch dimension: the first dim (-1) of every input and output is dynamic "
                   "(served with max_batch_size %d unless config.json says otherwise)\n",
                   cfg.max_batch_size);
        } else {
            print_batch_line(false, 0);
        }
        printf("inputs:\n");
        for (size_t i = 0; i < cfg.n_inputs; i++) {
            print_io_line(cfg.inputs[i].name, bd_dtype_name(cfg.inputs[i].dtype),
                          cfg.inputs[i].dims.dims, cfg.inputs[i].dims.ndim, batched);
        }
        printf("outputs:\n");
        for (size_t i = 0; i < cfg.n_outputs; i++) {
            print_io_line(cfg.outputs[i].name, bd_dtype_name(cfg.outputs[i].dtype),
                          cfg.outputs[i].dims.dims, cfg.outputs[i].dims.ndim, batched);
        }
        bd_backend_ort.unload(m);
        code = 0;
    }
    bd_model_config_dispose(&cfg);
    bd_ort_shutdown();
    return code;
}

static void print_meta_ios(json_t *arr)
{
    size_t i;
    json_t *io;
    json_array_foreach(arr, i, io)
    {
        char db[64];
        const char *name = json_string_value(json_object_get(io, "name"));
        const char *dt = shown_json(db, sizeof db, json_object_get(io, "datatype"));
        int64_t dims[BD_MAX_DIMS];
        int ndim = 0;
        size_t j;
        json_t *v;
        json_array_foreach(json_object_get(io, "shape"), j, v)
        {
            if (ndim < BD_MAX_DIMS) {
                dims[ndim++] = json_integer_value(v);
            }
        }
        print_io_line(name ? name : "?", dt, dims, ndim, false);
    }
}

static int inspect_url(const inspect_opts_t *o)
{
    static bd_lg_target_t t;
    memset(&t, 0, sizeof t);
    bd_err_t err = {0};
    if (bd_lg_parse_url(o->url, &t, &err) != 0) {
        fprintf(stderr, "batchd inspect: %s\n", err.msg);
        return 2;
    }
    t.cacert = o->cacert;
    if (!bd_cli_api_key_ok("inspect", o->api_key) || !bd_cli_cacert_loads("inspect", o->cacert)) {
        return 2;
    }
    t.api_key = o->api_key;
    snprintf(t.model, sizeof t.model, "%s", o->model);
    snprintf(t.version, sizeof t.version, "%s", o->version ? o->version : "");
    int code = 1;
    json_t *meta = get_metadata("inspect", &t, o->timeout_us, &code);
    if (!meta) {
        return code;
    }
    json_t *name = json_object_get(meta, "name");
    json_t *platform = json_object_get(meta, "platform");
    char buf[256];
    printf("model: %s\n", json_is_string(name) ? shown_json(buf, sizeof buf, name) : o->model);
    if (json_is_string(platform)) {
        printf("platform: %s\n", shown_json(buf, sizeof buf, platform));
    }
    json_t *versions = json_object_get(meta, "versions");
    if (json_is_array(versions)) {
        printf("versions:");
        size_t i;
        json_t *v;
        json_array_foreach(versions, i, v)
        {
            printf(" %s", shown_json(buf, sizeof buf, v));
        }
        printf("\n");
    }
    json_t *mbs = json_object_get(meta, "max_batch_size");
    bool all_lead_var = true;
    size_t i;
    json_t *in;
    json_array_foreach(json_object_get(meta, "inputs"), i, in)
    {
        json_t *shape = json_object_get(in, "shape");
        if (json_array_size(shape) == 0 || json_integer_value(json_array_get(shape, 0)) != -1) {
            all_lead_var = false;
        }
    }
    long long m = json_is_integer(mbs) ? (long long)json_integer_value(mbs) : -1;
    print_batch_line(m > 0 || (m < 0 && all_lead_var), m);
    printf("inputs:\n");
    print_meta_ios(json_object_get(meta, "inputs"));
    printf("outputs:\n");
    print_meta_ios(json_object_get(meta, "outputs"));
    json_decref(meta);
    return 0;
}

int bd_cli_inspect(int argc, char **argv)
{
    static inspect_opts_t o;
    memset(&o, 0, sizeof o);
    /* A model file: the first argument, or the last one when it names a .onnx file. */
    const char *path = NULL;
    static char *args[256];
    int n = 0;
    for (int i = 0; i < argc && n < 256; i++) {
        size_t l = strlen(argv[i]);
        bool is_path = i > 0 && !path && argv[i][0] != '-' &&
                       (i == 1 || (l > 5 && strcmp(argv[i] + l - 5, ".onnx") == 0 &&
                                   strncmp(argv[i - 1], "--", 2) != 0));
        if (is_path) {
            path = argv[i];
        } else {
            args[n++] = argv[i];
        }
    }
    bd_err_t err = {0};
    int prc = bd_cli_parse(&inspect_cmd, n, args, &o, stdout, &err);
    if (prc == BD_CLI_HELP) {
        return 0;
    }
    if (prc != 0) {
        fprintf(stderr, "batchd inspect: %s\n", err.msg);
        return 2;
    }
    if (path && !o.url && !o.model) {
        return inspect_file(&o, path);
    }
    if (!bd_cli_model_ok("inspect", o.model)) {
        return 2;
    }
    if (!path && o.url && o.model) {
        return inspect_url(&o);
    }
    fprintf(stderr, "batchd inspect: give --url and --model, or a model file (see --help)\n");
    return 2;
}
