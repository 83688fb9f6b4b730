/* codec.c: the KServe v2 infer request decoder and response encoder (see tensor.h).
 *
 * Decoding: one scan of the JSON header body[0..header_len) finds each input's "data" array
 * and checks nesting depth; jansson then parses the header with every "data" array replaced
 * by a short marker string, so its temporary tree holds only the request's skeleton (names,
 * shapes, parameters), never one node per tensor value. Each "data" array is read straight
 * from the header text into an arena buffer of the tensor's datatype; binary inputs (Triton's
 * extension) point into body[header_len..len). The tree is freed before returning, so on
 * success the request borrows only `body` and `arena`, and a large JSON body costs its text
 * plus its tensors. Request-level parameters other than binary_data_output, priority and
 * timeout are not judged here: they are copied, typed, into the arena (bd_param_t) for the
 * backend to read.
 *
 * Traps that shape the decoder:
 * - Depth. jansson recurses once per nesting level and stops only at 2048, so the scan
 *   rejects nesting deeper than limits->max_depth before jansson sees it, and bounds the
 *   values the tree may hold (MAX_TREE_VALUES). Our own recursion over nested "data" is
 *   bounded by the shape's ndim (at most BD_MAX_DIMS).
 * - Big integers. jansson holds integers as long long and rejects larger literals outright,
 *   yet parameters may carry them and must be answered as a wrong type, not a parse error.
 *   The scan wraps each such literal outside "data" into the string "\u0000<digits>", and
 *   replaces "data" arrays by "\u0000@<n>"; jansson parses with JSON_ALLOW_NUL, and the scan
 *   rejects \u0000 in client strings, so no marker can be forged. Inside "data" integers are
 *   read to 64 bits of magnitude (UINT64 needs up to 2^64-1).
 * - Positions. jansson's error positions are in the edited text; they are mapped back to the
 *   header's own line and column.
 *
 * BYTES (layout in tensor.h: 4-byte little-endian length + bytes per element): JSON strings
 * in "data" are decoded here with their escapes (\uXXXX, surrogate pairs) and UTF-8 checked
 * as jansson would, into an arena buffer sized by the prefixes plus the data's text (decoding
 * never grows text); \u0000 is allowed there, since jansson never reads "data". Binary BYTES
 * inputs keep pointing into the body once every element's length was checked against what
 * remains. Replies write BYTES as JSON strings (bytes that are not UTF-8 as U+FFFD) or, in
 * binary, as the buffer itself.
 *
 * Encoding writes JSON by hand into a bd_buf_t: no tree, numbers formatted straight into the
 * buffer in blocks. FP32 values are printed exactly as "%.9g" would, but without snprintf for
 * the common range (see fmt_f32); FP64 uses snprintf except for integral values.
 *
 * Threads: pure functions over caller-owned memory; any thread. */
#include "tensor/tensor.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_DEPTH 64
#define DEFAULT_MAX_INPUTS 64
#define NAME_SHOWN 128 /* longest name quoted in an error message */
#define SHAPE_STR 256

/* ---- small helpers --------------------------------------------------------------------- */

static int shown(const char *s)
{
    size_t n = strlen(s);
    return n > NAME_SHOWN ? NAME_SHOWN : (int)n;
}

/* A string marking an integer literal jansson cannot hold (see the file comment). */
static bool is_bigint(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 1 && json_string_value(v)[0] == '\0' &&
           json_string_value(v)[1] != '@';
}

/* The value of a JSON string, or NULL when `v` is not a (real, non-marker) string. */
static const char *str_value(const json_t *v, size_t *len)
{
    if (!json_is_string(v) || is_bigint(v)) {
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

/* A non-negative JSON integer that fits int64. */
static bool get_uint(const json_t *v, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return false;
    }
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* What is wrong with a value get_uint refused, to follow its field's name: an integer past
 * int64 is one, only too large. */
static const char *uint_fault(const json_t *v)
{
    return is_bigint(v) && json_string_value(v)[1] != '-'
               ? " is past 9223372036854775807, the largest accepted"
               : " must be a non-negative integer";
}

/* ---- the header scan ------------------------------------------------------------------- */

/* One replacement in the text jansson reads (see the file comment): an input's "data" array,
 * replaced by the marker string "\u0000@<index of this edit>", or an integer literal past
 * int64, wrapped into the marker string "\u0000<literal>". */
typedef struct {
    size_t start, end; /* the header's bytes [start, end) */
    bool data;
} edit_t;

typedef struct {
    const char *s; /* the JSON header */
    size_t n;
    bool split;    /* binary data follows it (its length was given) */
    edit_t *edits; /* in header order */
    size_t n_edits, cap;
} scan_t;

/* Values (containers, scalars) the tree may hold: requests have a few dozen; every number of
 * a tensor lives in "data", which is not counted. This bounds the tree's memory. */
#define MAX_TREE_VALUES 65536
/* The scan tracks roles down to an input object: root {, "inputs" [, input {. */
#define ROLE_LEVELS 3

enum { ROLE_OTHER, ROLE_ROOT, ROLE_INPUTS, ROLE_INPUT };
enum { KEY_OTHER, KEY_INPUTS, KEY_DATA };

static bool is_num_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Line (1-based) and column (characters, as jansson counts them) of header byte `pos`. */
static void line_col(const char *s, size_t pos, int *line, int *col)
{
    *line = 1;
    *col = 0;
    for (size_t i = 0; i < pos; i++) {
        if (s[i] == '\n') {
            ++*line;
            *col = 0;
        } else if (((unsigned char)s[i] & 0xC0) != 0x80) {
            ++*col;
        }
    }
}

/* Said of bytes after the JSON object: binary tensors sent without the header's length, or
 * (`split`: a length was given) with a length longer than the JSON. */
static const char *after_the_object(bool split)
{
    return split ? "; the JSON ends before the length given for it (Inference-Header-Content-"
                   "Length, or a WebSocket binary frame's 4-byte prefix)"
                 : "; binary tensor data after the JSON needs the JSON's length alone (not the "
                   "whole body's) in the Inference-Header-Content-Length header, or over "
                   "WebSocket in a binary frame's 4-byte prefix";
}

/* A NUL the scan refuses at header byte `at`: a \u0000 escape (`escape`) or a raw byte, after
 * the top-level value (`after`: what after_the_object says follows) or inside it. */
static int nul_error(const char *s, size_t at, bool escape, const char *after, bd_err_t *err)
{
    int line, col;
    line_col(s, at + 1, &line, &col);
    return bd_err_set(err, BD_EINVAL, "request body is not valid JSON: %s (line %d, column %d)%s",
                      escape ? "\\u0000 is not allowed in strings"
                             : "a NUL byte is not allowed there",
                      line, col, after);
}

/* Skip the string opening at s[i]; returns the index past its closing quote (n when it has
 * none). A \u0000 escape fails unless `allow_nul`: no client string jansson reads may look
 * like a marker. Strings inside an input's "data" (which jansson never reads) allow it: a
 * BYTES element may hold a NUL byte. */
static int skip_string(const char *s, size_t n, size_t *i, bool allow_nul, bd_err_t *err)
{
    size_t k = *i + 1;
    for (; k < n && s[k] != '"'; k++) {
        if (s[k] == '\\') {
            if (!allow_nul && n - k > 5 && memcmp(s + k + 1, "u0000", 5) == 0) {
                return nul_error(s, k, true, "", err);
            }
            k++;
        }
    }
    *i = k < n ? k + 1 : n;
    return 0;
}

/* Whether the JSON string s[0..n) (quotes excluded, escapes as written) equals `want`. */
static bool key_is(const char *s, size_t n, const char *want)
{
    size_t w = strlen(want), j = 0;
    for (size_t i = 0; i < n; i++, j++) {
        char c = s[i];
        if (c == '\\' && i + 1 < n) {
            c = s[++i];
            if (c == 'u' && n - i > 4) {
                unsigned v = 0;
                for (int d = 1; d <= 4; d++) {
                    char h = s[i + d];
                    v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                }
                c = v < 0x80 ? (char)v : '\0';
                i += 4;
            }
        }
        if (j >= w || c != want[j]) {
            return false;
        }
    }
    return j == w;
}

static int depth_error(int max_depth, bd_err_t *err)
{
    return bd_err_set(err, BD_EINVAL, "request JSON nests deeper than the limit of %d levels",
                      max_depth);
}

/* The container opening at s[*i] at nesting `depth` (counting it): *i moves past its close
 * (or to n when it is never closed, which jansson then reports). */
static int skip_container(const char *s, size_t n, size_t *i, int depth, int max_depth,
                          bool allow_nul, bd_err_t *err)
{
    int base = depth - 1;
    size_t k = *i + 1;
    while (k < n && depth > base) {
        char c = s[k];
        if (c == '"') {
            int rc = skip_string(s, n, &k, allow_nul, err);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                return depth_error(max_depth, err);
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
        k++;
    }
    *i = k;
    return 0;
}

/* Whether the integer literal s[0..n) (optional '-', digits) fits in int64. */
static bool literal_fits_int64(const char *s, size_t n)
{
    bool neg = n > 0 && s[0] == '-';
    if (neg) {
        s++;
        n--;
    }
    while (n > 1 && s[0] == '0') {
        s++;
        n--;
    }
    const char *lim = neg ? "9223372036854775808" : "9223372036854775807";
    if (n != 19) {
        return n < 19;
    }
    return memcmp(s, lim, 19) <= 0;
}

static int add_edit(scan_t *sc, size_t start, size_t end, bool data, bd_err_t *err)
{
    if (sc->n_edits == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 8;
        edit_t *e = realloc(sc->edits, cap * sizeof *e);
        if (!e) {
            return bd_err_set(err, BD_ENOMEM, "out of memory parsing the request JSON");
        }
        sc->edits = e;
        sc->cap = cap;
    }
    sc->edits[sc->n_edits++] = (edit_t){start, end, data};
    return 0;
}

/* One pass over the header without building anything: nesting past max_depth, \u0000 in
 * strings and too many values fail; each input's "data" array and each integer literal past
 * int64 become an edit. Malformed JSON is left for jansson to report. */
static int scan_header(scan_t *sc, int max_depth, bd_err_t *err)
{
    const char *s = sc->s;
    size_t n = sc->n;
    /* Per open container down to ROLE_LEVELS: its role, whether it is an object, whether it
     * waits for a key, and what the last key names. Index 0 is the top level. */
    unsigned char role[ROLE_LEVELS + 1] = {0}, key[ROLE_LEVELS + 1] = {0};
    bool obj[ROLE_LEVELS + 1] = {0}, want_key[ROLE_LEVELS + 1] = {0};
    int depth = 0;
    size_t values = 0;
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        int lv = depth <= ROLE_LEVELS ? depth : -1; /* the open container, when tracked */
        if (c == '\0') {
            /* jansson's reader would take it for the end of its input, after a number or
             * true/false/null, and go on past it. */
            return nul_error(s, i, false,
                             depth == 0 && values > 0 ? after_the_object(sc->split) : "", err);
        }
        if (is_ws(c) || c == ':') {
            i++;
            continue;
        }
        if (c == ',') {
            if (lv >= 0) {
                want_key[lv] = obj[lv];
                key[lv] = KEY_OTHER;
            }
            i++;
            continue;
        }
        if (c == ']' || c == '}') {
            depth -= depth > 0;
            i++;
            continue;
        }
        if (lv >= 0 && want_key[lv] && c == '"') {
            size_t start = i;
            int rc = skip_string(s, n, &i, false, err);
            if (rc != 0) {
                return rc;
            }
            const char *k = s + start + 1;
            size_t kn = i - start >= 2 ? i - start - 2 : 0;
            key[lv] = role[lv] == ROLE_ROOT && key_is(k, kn, "inputs")  ? KEY_INPUTS
                      : role[lv] == ROLE_INPUT && key_is(k, kn, "data") ? KEY_DATA
                                                                        : KEY_OTHER;
            want_key[lv] = false;
            continue;
        }
        /* A value starts. */
        if (lv >= 0 && role[lv] == ROLE_INPUT && key[lv] == KEY_DATA && c == '[') {
            size_t start = i;
            int rc = skip_container(s, n, &i, depth + 1, max_depth, true, err);
            if (rc != 0 || (rc = add_edit(sc, start, i, true, err)) != 0) {
                return rc;
            }
            continue;
        }
        if (++values > MAX_TREE_VALUES) {
            return bd_err_set(err, BD_EINVAL,
                              "request JSON has more than %d values outside the inputs' \"data\"",
                              MAX_TREE_VALUES);
        }
        if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                return depth_error(max_depth, err);
            }
            if (depth <= ROLE_LEVELS) {
                unsigned char r = ROLE_OTHER;
                if (depth == 1) {
                    r = c == '{' ? ROLE_ROOT : ROLE_OTHER;
                } else if (role[lv] == ROLE_ROOT && key[lv] == KEY_INPUTS && c == '[') {
                    r = ROLE_INPUTS;
                } else if (role[lv] == ROLE_INPUTS && c == '{') {
                    r = ROLE_INPUT;
                }
                role[depth] = r;
                obj[depth] = want_key[depth] = c == '{';
                key[depth] = KEY_OTHER;
            }
            i++;
        } else if (c == '"') {
            int rc = skip_string(s, n, &i, false, err);
            if (rc != 0) {
                return rc;
            }
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t start = i;
            bool integer = true;
            for (i++; i < n && is_num_char(s[i]); i++) {
                integer = integer && s[i] >= '0' && s[i] <= '9';
            }
            /* Only a literal RFC 8259 allows (no leading zero) is wrapped: jansson refuses
             * the others, which it would never see inside the marker. */
            size_t d = start + (s[start] == '-');
            bool lead_zero = d + 1 < i && s[d] == '0';
            if (integer && !lead_zero && !literal_fits_int64(s + start, i - start)) {
                int rc = add_edit(sc, start, i, false, err);
                if (rc != 0) {
                    return rc;
                }
            }
        } else {
            for (i++; i < n && s[i] >= 'a' && s[i] <= 'z'; i++) {
            }
        }
    }
    return 0;
}

/* jansson reads the header through this, with the edits applied. */
typedef struct {
    const scan_t *sc;
    size_t pos;  /* next header byte */
    size_t next; /* next edit */
    int phase;   /* inside a big-integer edit: 1 the literal comes, 2 the closing quote */
    const char *seg;
    size_t seg_len;
    char mark[32];
} reader_t;

static int data_mark(char *buf, size_t cap, size_t edit)
{
    return snprintf(buf, cap, "\"\\u0000@%zu\"", edit);
}

static bool next_segment(reader_t *r)
{
    const scan_t *sc = r->sc;
    const edit_t *e = r->next < sc->n_edits ? &sc->edits[r->next] : NULL;
    if (r->phase == 1) {
        r->seg = sc->s + e->start;
        r->seg_len = e->end - e->start;
        r->phase = 2;
    } else if (r->phase == 2) {
        r->seg = "\"";
        r->seg_len = 1;
        r->phase = 0;
        r->pos = e->end;
        r->next++;
    } else if (e && r->pos == e->start && e->data) {
        r->seg = r->mark;
        r->seg_len = (size_t)data_mark(r->mark, sizeof r->mark, r->next);
        r->pos = e->end;
        r->next++;
    } else if (e && r->pos == e->start) {
        r->seg = "\"\\u0000";
        r->seg_len = 7;
        r->phase = 1;
    } else {
        size_t end = e ? e->start : sc->n;
        if (r->pos >= end) {
            return false;
        }
        r->seg = sc->s + r->pos;
        r->seg_len = end - r->pos;
        r->pos = end;
    }
    return true;
}

static size_t read_header(void *buf, size_t cap, void *data)
{
    reader_t *r = data;
    size_t done = 0;
    while (done < cap && (r->seg_len > 0 || next_segment(r))) {
        size_t k = cap - done < r->seg_len ? cap - done : r->seg_len;
        memcpy((char *)buf + done, r->seg, k);
        r->seg += k;
        r->seg_len -= k;
        done += k;
    }
    return done;
}

/* The header byte that jansson's stream offset `pos` came from. */
static size_t header_pos(const scan_t *sc, size_t pos)
{
    long long shift = 0; /* stream offset - header offset, past the edits so far */
    for (size_t k = 0; k < sc->n_edits; k++) {
        const edit_t *e = &sc->edits[k];
        long long at = (long long)e->start + shift;
        if ((long long)pos < at) {
            break;
        }
        size_t len = e->end - e->start;
        size_t repl = e->data ? (size_t)data_mark(NULL, 0, k) : len + 8;
        if ((long long)pos < at + (long long)repl) {
            return e->start;
        }
        shift += (long long)repl - (long long)len;
    }
    return (size_t)((long long)pos - shift);
}

static int parse_header(scan_t *sc, int max_depth, json_t **root, bd_err_t *err)
{
    /* An image posted without its type (or with one like image/jpg) would read "unable to
     * decode byte 0x89": say what it is and how to send it. */
    bool png = sc->n >= 4 && memcmp(sc->s, "\x89PNG", 4) == 0;
    if (png || (sc->n >= 3 && memcmp(sc->s, "\xff\xd8\xff", 3) == 0)) {
        return bd_err_set(err, BD_EINVAL,
                          "request body is not valid JSON: it is a %s image; post an image with "
                          "Content-Type: %s to a model that has image preprocessing",
                          png ? "PNG" : "JPEG", png ? "image/png" : "image/jpeg");
    }
    int rc = scan_header(sc, max_depth, err);
    if (rc != 0) {
        return rc;
    }
    json_error_t jerr;
    reader_t r = {.sc = sc};
    *root = json_load_callback(read_header, &r, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!*root) {
        if (json_error_code(&jerr) == json_error_out_of_memory) {
            return bd_err_set(err, BD_ENOMEM, "out of memory parsing the request JSON");
        }
        int line = jerr.line, col = jerr.column;
        if (sc->n_edits && jerr.position >= (int)sc->edits[0].start) {
            line_col(sc->s, header_pos(sc, (size_t)jerr.position), &line, &col);
        }
        bool after = strncmp(jerr.text, "end of file expected", 20) == 0;
        char why[JSON_ERROR_TEXT_LENGTH + 64];
        return bd_err_set(err, BD_EINVAL,
                          "request body is not valid JSON: %s (line %d, column %d)%s",
                          bd_json_fault(why, sizeof why, jerr.text), line, col,
                          after ? after_the_object(sc->split) : "");
    }
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return bd_err_set(err, BD_EINVAL, "request body must be a JSON object");
    }
    return 0;
}

/* The edit whose marker `v` is: an input's "data" array. NULL when `v` is anything else. */
static const edit_t *data_span(const scan_t *sc, const json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) < 3 || json_string_value(v)[0] != '\0' ||
        json_string_value(v)[1] != '@') {
        return NULL;
    }
    size_t k = strtoul(json_string_value(v) + 2, NULL, 10);
    return k < sc->n_edits && sc->edits[k].data ? &sc->edits[k] : NULL;
}

/* ---- JSON data -> tensor buffer -------------------------------------------------------- */

/* Values of an input's "data" are read straight from the header text, never as a tree. */
typedef enum { SV_INT, SV_REAL, SV_BOOL, SV_NULL, SV_STRING, SV_OBJECT } sv_kind_t;

/* One scalar of "data". Integers keep sign and magnitude (`over`: past 2^64-1); reals their
 * double; both their text (in the header) for messages. */
typedef struct {
    sv_kind_t kind;
    bool neg, over, b;
    uint64_t mag;
    double d;
    const char *text;
    size_t len;
} sv_t;

typedef struct {
    bd_tensor_t *t;
    const char *name;
    const char *s; /* the header; the data array is s[i..) */
    size_t n;
    size_t i;    /* the cursor */
    size_t next; /* flat index of the next value */
    unsigned char *dst;
    size_t off; /* BYTES: where the next element goes in dst (elements vary in size) */
    size_t path[BD_MAX_DIMS]; /* indices of the nested walk, for messages */
    bd_err_t *err;
} data_ctx_t;

static const char *type_word(const sv_t *v)
{
    static const char *const words[] = {"a number", "a number", "a boolean",
                                        "null",     "a string", "an object"};
    return words[v->kind];
}

/* The number `v` as text for an error message: as the client wrote it (a double would show
 * 0.99999999999999999999 as 1), cut after 64 characters. */
static const char *num_text(const sv_t *v, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.*s%s", v->len <= 64 ? (int)v->len : 64, v->text,
             v->len <= 64 ? "" : "...");
    return buf;
}

static void skip_ws(data_ctx_t *c)
{
    while (c->i < c->n && is_ws(c->s[c->i])) {
        c->i++;
    }
}

static int syntax_error(data_ctx_t *c, const char *what)
{
    int line, col;
    line_col(c->s, c->i, &line, &col);
    size_t k = 0;
    while (k < 16 && c->i + k < c->n && !is_ws(c->s[c->i + k])) {
        k++;
    }
    return bd_err_set(c->err, BD_EINVAL,
                      "request body is not valid JSON: %s in the data of input '%.*s' near "
                      "'%.*s' (line %d, column %d)",
                      what, shown(c->name), c->name, (int)k, c->s + c->i, line, col + 1);
}

/* Skip one value of any kind; c->i ends past it. */
static int skip_value(data_ctx_t *c)
{
    size_t start = c->i;
    char ch = c->i < c->n ? c->s[c->i] : '\0';
    if (ch == '"') {
        return skip_string(c->s, c->n, &c->i, true, c->err);
    }
    if (ch == '[' || ch == '{') {
        return skip_container(c->s, c->n, &c->i, 1, INT_MAX, true, c->err);
    }
    for (char x; c->i < c->n && !is_ws(x = c->s[c->i]) && x != ',' && x != ']' && x != '}';) {
        c->i++;
    }
    return c->i > start ? 0 : syntax_error(c, "a value is missing");
}

/* After an entry: past the ',' (true) or the closing ']' (false). */
static int next_entry(data_ctx_t *c, bool *more)
{
    skip_ws(c);
    char ch = c->i < c->n ? c->s[c->i] : '\0';
    if (ch != ',' && ch != ']') {
        return syntax_error(c, "',' or ']' expected");
    }
    c->i++;
    *more = ch == ',';
    skip_ws(c);
    return 0;
}

/* The entries of the array at c->i: how many, whether the first is an array, and in *mixed
 * the index of the first entry that is an array when the first is not (*count when none is).
 * The cursor stays where it was. */
static int count_entries(data_ctx_t *c, size_t *count, bool *first_array, size_t *mixed)
{
    size_t at = c->i, n = 0;
    int rc = 0;
    c->i++;
    skip_ws(c);
    *first_array = c->i < c->n && c->s[c->i] == '[';
    *mixed = SIZE_MAX;
    if (c->i < c->n && c->s[c->i] == ']') {
        c->i = at;
        *count = 0;
        *mixed = 0;
        return 0;
    }
    for (bool more = true; more && rc == 0; n++) {
        if (!*first_array && *mixed == SIZE_MAX && c->s[c->i] == '[') {
            *mixed = n;
        }
        if ((rc = skip_value(c)) == 0) {
            rc = next_entry(c, &more);
        }
    }
    c->i = at;
    *count = n;
    *mixed = *mixed == SIZE_MAX ? n : *mixed;
    return rc;
}

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* v's literal read by strtod into *d, or by strtof into *f: it is not NUL-terminated in the
 * header, so they read a copy. */
static int read_literal(data_ctx_t *c, const sv_t *v, double *d, float *f)
{
    char small[64];
    char *copy = v->len < sizeof small ? small : malloc(v->len + 1);
    if (!copy) {
        return bd_err_set(c->err, BD_ENOMEM, "out of memory parsing the request JSON");
    }
    memcpy(copy, v->text, v->len);
    copy[v->len] = '\0';
    if (d) {
        *d = strtod(copy, NULL);
    } else {
        *f = strtof(copy, NULL);
    }
    if (copy != small) {
        free(copy);
    }
    return 0;
}

/* A JSON number at c->i, strictly as RFC 8259 writes it. Reals whose digits fit 2^53 and
 * whose power of ten is exact in a double (|e| <= 22) are one multiplication or division, so
 * correctly rounded as strtod would; the rest go to strtod. */
static int read_number(data_ctx_t *c, sv_t *v)
{
    const char *s = c->s;
    size_t i = c->i, n = c->n;
    v->neg = s[i] == '-';
    i += v->neg;
    if (i >= n || !(s[i] >= '0' && s[i] <= '9')) {
        return syntax_error(c, "invalid number");
    }
    bool integer = true;
    uint64_t digits = 0; /* all significant digits, integer and fraction, while they fit */
    int n_digits = 0, frac = 0;
    v->mag = 0;
    v->over = false;
    if (s[i] == '0') {
        i++;
    } else {
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            unsigned d = (unsigned)(s[i] - '0');
            v->over = v->over || v->mag > (UINT64_MAX - d) / 10;
            v->mag = v->mag * 10 + d;
            n_digits++;
        }
    }
    digits = v->mag;
    if (i < n && s[i] == '.') {
        integer = false;
        size_t d0 = ++i;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (n_digits < 19) {
                digits = digits * 10 + (unsigned)(s[i] - '0');
                n_digits += digits != 0;
                frac++;
            } else {
                n_digits = 99; /* too many digits for the fast path */
            }
        }
        if (i == d0) {
            return syntax_error(c, "invalid number");
        }
    }
    int exp = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        integer = false;
        bool eneg = i + 1 < n && s[i + 1] == '-';
        i += i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-') ? 2 : 1;
        size_t d0 = i;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            exp = exp < 10000 ? exp * 10 + (s[i] - '0') : exp;
        }
        if (i == d0) {
            return syntax_error(c, "invalid number");
        }
        exp = eneg ? -exp : exp;
    }
    v->text = s + c->i;
    v->len = i - c->i;
    c->i = i;
    v->kind = integer ? SV_INT : SV_REAL;
    if (integer && !v->over) {
        v->d = v->neg ? -(double)v->mag : (double)v->mag;
        return 0;
    }
    int e10 = exp - frac;
    if (!integer && n_digits <= 19 && digits <= ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22) {
        double d = (double)digits;
        d = e10 < 0 ? d / pow10_exact[-e10] : d * pow10_exact[e10];
        v->d = v->neg ? -d : d;
        return 0;
    }
    return read_literal(c, v, &v->d, NULL);
}

/* One non-array value at c->i. */
static int read_scalar(data_ctx_t *c, sv_t *v)
{
    static const struct {
        const char *word;
        sv_kind_t kind;
        bool b;
    } lits[] = {{"true", SV_BOOL, true}, {"false", SV_BOOL, false}, {"null", SV_NULL, false}};
    char ch = c->i < c->n ? c->s[c->i] : '\0';
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        return read_number(c, v);
    }
    if (ch == '"' || ch == '{') {
        v->kind = ch == '"' ? SV_STRING : SV_OBJECT;
        v->text = c->s + c->i;
        size_t start = c->i;
        int rc = skip_value(c);
        v->len = c->i - start;
        if (rc == 0 && ch == '"' && (v->len < 2 || c->s[c->i - 1] != '"')) {
            c->i = start;
            return syntax_error(c, "unterminated string");
        }
        return rc;
    }
    for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
        size_t len = strlen(lits[k].word);
        if (c->n - c->i >= len && memcmp(c->s + c->i, lits[k].word, len) == 0) {
            v->kind = lits[k].kind;
            v->b = lits[k].b;
            c->i += len;
            return 0;
        }
    }
    return syntax_error(c, "invalid value");
}

enum { INT_OK, INT_NOT_NUMBER, INT_FRACTION, INT_RANGE };

/* The real literal t[0..len) (read_number checked its syntax) as an integer, exactly: from
 * its digits and power of ten, not from the double, which keeps 17 digits
 * (0.99999999999999999999 reads 1.0, 9007199254740993.0 reads 2^53). INT_FRACTION when a
 * digit right of the point is not zero, INT_RANGE past a 64-bit magnitude. */
static int real_int(const char *t, size_t len, bool *neg, uint64_t *mag)
{
    size_t i = t[0] == '-';
    size_t int_start = i;
    while (i < len && t[i] >= '0' && t[i] <= '9') {
        i++;
    }
    size_t int_end = i, frac_start = i, frac_end = i;
    if (i < len && t[i] == '.') {
        for (frac_start = ++i; i < len && t[i] >= '0' && t[i] <= '9'; i++) {
        }
        frac_end = i;
    }
    long long exp = 0;
    if (i < len && (t[i] == 'e' || t[i] == 'E')) {
        bool eneg = t[++i] == '-';
        for (i += t[i] == '-' || t[i] == '+'; i < len; i++) {
            /* Capped past any literal's digit count (a body is under 2^34 bytes), so the
             * point still lands past every digit. */
            exp = exp < 100000000000LL ? exp * 10 + (t[i] - '0') : exp;
        }
        exp = eneg ? -exp : exp;
    }
    /* The digits left of the point once the exponent moved it; the rest must be zeros. */
    long long point = (long long)(int_end - int_start) + exp, at = 0;
    uint64_t m = 0;
    bool over = false;
    for (int part = 0; part < 2; part++) {
        size_t from = part ? frac_start : int_start, to = part ? frac_end : int_end;
        for (size_t k = from; k < to; k++, at++) {
            unsigned d = (unsigned)(t[k] - '0');
            if (at >= point && d != 0) {
                return INT_FRACTION;
            }
            if (at < point) {
                over = over || m > (UINT64_MAX - d) / 10;
                m = m * 10 + d;
            }
        }
    }
    for (; at < point && m != 0 && !over; at++) { /* the zeros the exponent adds */
        over = m > UINT64_MAX / 10;
        m *= 10;
    }
    *neg = t[0] == '-' && m != 0;
    *mag = m;
    return over ? INT_RANGE : INT_OK;
}

/* Read `v` as an integer: sign and magnitude. INT_RANGE: beyond a 64-bit magnitude. */
static int get_int(const sv_t *v, bool *neg, uint64_t *mag)
{
    if (v->kind == SV_INT) {
        *neg = v->neg && v->mag != 0;
        *mag = v->mag;
        return v->over ? INT_RANGE : INT_OK;
    }
    return v->kind == SV_REAL ? real_int(v->text, v->len, neg, mag) : INT_NOT_NUMBER;
}

static int value_error(data_ctx_t *c, const sv_t *v, size_t index, const char *what)
{
    char num[96];
    return bd_err_set(c->err, BD_EINVAL, "input '%.*s': value %s at index %zu %s", shown(c->name),
                      c->name, num_text(v, num, sizeof num), index, what);
}

static int put_int(data_ctx_t *c, const sv_t *v, size_t index)
{
    bd_dtype_t dt = c->t->dtype;
    const char *dn = bd_dtype_name(dt);
    bool neg = false;
    uint64_t mag = 0;
    char what[64];
    int kind = get_int(v, &neg, &mag);
    if (kind == INT_NOT_NUMBER) {
        return bd_err_set(c->err, BD_EINVAL,
                          "input '%.*s': value at index %zu is %s; %s data must be integers",
                          shown(c->name), c->name, index, type_word(v), dn);
    }
    if (kind == INT_FRACTION) {
        snprintf(what, sizeof what, "is not an integer, as %s needs", dn);
        return value_error(c, v, index, what);
    }
    size_t size = bd_dtype_size(dt);
    bool is_signed = dt >= BD_DT_INT8 && dt <= BD_DT_INT64;
    unsigned bits = (unsigned)size * 8;
    uint64_t max_pos = is_signed ? ((uint64_t)1 << (bits - 1)) - 1
                                 : (bits == 64 ? UINT64_MAX : ((uint64_t)1 << bits) - 1);
    uint64_t max_neg = is_signed ? (uint64_t)1 << (bits - 1) : 0;
    if (kind == INT_RANGE || (neg ? mag > max_neg : mag > max_pos)) {
        snprintf(what, sizeof what, "is out of range for %s", dn);
        return value_error(c, v, index, what);
    }
    /* Two's complement of the magnitude, truncated to the element: little-endian bytes. */
    uint64_t raw = neg ? (uint64_t)0 - mag : mag;
    unsigned char *p = c->dst + index * size;
    for (size_t k = 0; k < size; k++) {
        p[k] = (unsigned char)(raw >> (8 * k));
    }
    return 0;
}

static size_t utf8_encode(uint32_t cp, unsigned char *w)
{
    if (cp < 0x80) {
        w[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        w[0] = (unsigned char)(0xC0 | (cp >> 6));
        w[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        w[0] = (unsigned char)(0xE0 | (cp >> 12));
        w[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        w[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    w[0] = (unsigned char)(0xF0 | (cp >> 18));
    w[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    w[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    w[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string error at header byte `at` of the data of the current input. */
static int string_error(data_ctx_t *c, size_t at, const char *what)
{
    c->i = at;
    return syntax_error(c, what);
}

/* Decode the JSON string v (its text, quotes included) into w, as jansson reads strings:
 * escapes (\uXXXX and surrogate pairs into UTF-8), UTF-8 checked, raw control characters
 * refused. The decoded bytes never outnumber the text's, which sized w. */
static int decode_string(data_ctx_t *c, const sv_t *v, unsigned char *w, size_t *out_len)
{
    const char *s = v->text + 1;
    size_t n = v->len - 2, o = 0;
    size_t base = (size_t)(s - c->s);
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x20) {
            return string_error(c, base + i, "a control character in a string");
        }
        if (b >= 0x80) {
            size_t len;
            if (bd_utf8_decode((const unsigned char *)s + i, n - i, &len) < 0) {
                return string_error(c, base + i, "invalid UTF-8 in a string");
            }
            memcpy(w + o, s + i, len);
            o += len;
            i += len;
            continue;
        }
        if (b != '\\') {
            w[o++] = b;
            i++;
            continue;
        }
        if (i + 1 >= n) {
            return string_error(c, base + i, "invalid escape in a string");
        }
        char e = s[i + 1];
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *hit = e ? strchr(from, e) : NULL;
        if (hit) {
            w[o++] = (unsigned char)to[hit - from];
            i += 2;
            continue;
        }
        int32_t cp = e == 'u' && n - i >= 6 ? bd_hex4(s + i + 2) : -1;
        if (cp < 0) {
            return string_error(c, base + i, "invalid escape in a string");
        }
        i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return string_error(c, base + i - 6, "a lone low surrogate escape in a string");
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            int32_t lo = n - i >= 6 && s[i] == '\\' && s[i + 1] == 'u' ? bd_hex4(s + i + 2) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                return string_error(c, base + i - 6,
                                    "a high surrogate escape not followed by a low one in a "
                                    "string");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
        o += utf8_encode((uint32_t)cp, w + o);
    }
    *out_len = o;
    return 0;
}

/* One BYTES element: the string's bytes after their 4-byte length, at c->off. */
static int put_bytes(data_ctx_t *c, const sv_t *v, size_t index)
{
    if (v->kind != SV_STRING) {
        return bd_err_set(c->err, BD_EINVAL,
                          "input '%.*s': value at index %zu is %s; BYTES data must be strings",
                          shown(c->name), c->name, index, type_word(v));
    }
    size_t len = 0;
    unsigned char *p = c->dst + c->off;
    int rc = decode_string(c, v, p + BD_BYTES_PREFIX, &len);
    if (rc != 0) {
        return rc;
    }
    /* len < the header's length, which Inference-Header-Content-Length bounds to far below
     * 4 GiB in practice; still, refuse what the prefix cannot say. */
    if (len > UINT32_MAX) {
        return bd_err_set(c->err, BD_ETOOBIG,
                          "input '%.*s': value at index %zu is longer than 4 GiB", shown(c->name),
                          c->name, index);
    }
    for (int k = 0; k < BD_BYTES_PREFIX; k++) {
        p[k] = (unsigned char)(len >> (8 * k));
    }
    c->off += BD_BYTES_PREFIX + len;
    return 0;
}

/* The float nearest the number v, into *out; an error when it is out of FP32's range (from
 * FLT_MAX and half an ulp up, which rounds to infinity). Rounding v's double again is right
 * except where that double lies exactly halfway between two floats (or at the range's edge):
 * the number may have been just above or below it, and rounding twice goes the wrong way
 * (1.00000005960464478 reads as 1 + 2^-24, then as 1; it is nearer 1 + 2^-23). There strtof
 * reads the text. */
static int to_fp32(data_ctx_t *c, const sv_t *v, size_t index, float *out)
{
    const double edge = 0x1.ffffffp127; /* FLT_MAX + half an ulp */
    double d = v->d;
    if (isinf(d) || fabs(d) > edge) {
        return value_error(c, v, index, "is out of range for FP32");
    }
    bool tie = fabs(d) == edge;
    float f = tie ? 0.0f : (float)d;
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    /* A midpoint between two floats has at least its low 28 mantissa bits clear (a float has
     * 23 of the double's 52): nearly every value is settled by that test alone. */
    if (!tie && (bits & 0x0fffffffu) == 0 && (double)f != d) {
        float g = nextafterf(f, d > (double)f ? INFINITY : -INFINITY);
        tie = ((double)f + (double)g) / 2 == d;
    }
    if (tie) {
        int rc = read_literal(c, v, NULL, &f);
        if (rc != 0) {
            return rc;
        }
        if (isinf(f)) {
            return value_error(c, v, index, "is out of range for FP32");
        }
    }
    *out = f;
    return 0;
}

static int put_value(data_ctx_t *c, const sv_t *v, size_t index)
{
    bd_dtype_t dt = c->t->dtype;
    switch (dt) {
    case BD_DT_BYTES:
        return put_bytes(c, v, index);
    case BD_DT_BOOL:
        if (v->kind != SV_BOOL) {
            return bd_err_set(c->err, BD_EINVAL,
                              "input '%.*s': value at index %zu is %s; BOOL data must be true "
                              "or false",
                              shown(c->name), c->name, index, type_word(v));
        }
        c->dst[index] = v->b ? 1 : 0;
        return 0;
    case BD_DT_FP32:
    case BD_DT_FP64:
        if (v->kind != SV_INT && v->kind != SV_REAL) {
            return bd_err_set(c->err, BD_EINVAL,
                              "input '%.*s': value at index %zu is %s; %s data must be numbers",
                              shown(c->name), c->name, index, type_word(v), bd_dtype_name(dt));
        }
        if (dt == BD_DT_FP64) {
            if (isinf(v->d)) {
                return value_error(c, v, index, "is out of range for FP64");
            }
            memcpy(c->dst + index * 8, &v->d, 8);
        } else {
            float f = 0.0f;
            int rc = to_fp32(c, v, index, &f);
            if (rc != 0) {
                return rc;
            }
            memcpy(c->dst + index * 4, &f, 4);
        }
        return 0;
    default:
        return put_int(c, v, index);
    }
}

static void path_str(const data_ctx_t *c, int depth, char *buf, size_t cap)
{
    size_t off = (size_t)snprintf(buf, cap, "data");
    for (int i = 0; i < depth && off < cap; i++) {
        off += (size_t)snprintf(buf + off, cap - off, "[%zu]", c->path[i]);
    }
}

static int nest_error(data_ctx_t *c, int depth, const char *what)
{
    char path[160];
    char shape[SHAPE_STR];
    path_str(c, depth, path, sizeof path);
    return bd_err_set(c->err, BD_EINVAL, "input '%.*s': nested data does not match shape %s: %s %s",
                      shown(c->name), c->name, bd_shape_str(&c->t->shape, shape, sizeof shape),
                      path, what);
}

/* The array at c->i sits at nesting level `depth` (< ndim) and must hold dims[depth]
 * entries. Recursion is bounded by ndim <= BD_MAX_DIMS. With c->dst NULL only the structure
 * is checked. */
static int walk_nested(data_ctx_t *c, int depth)
{
    const bd_shape_t *s = &c->t->shape;
    size_t n, mixed;
    bool first_array;
    char what[96];
    int rc = count_entries(c, &n, &first_array, &mixed); /* walked below: mixing is named there */
    if (rc != 0) {
        return rc;
    }
    if ((uint64_t)n != (uint64_t)s->dims[depth]) {
        snprintf(what, sizeof what, "has %zu entries, expected %lld", n, (long long)s->dims[depth]);
        return nest_error(c, depth, what);
    }
    c->i++;
    skip_ws(c);
    bool more = n > 0;
    for (size_t i = 0; more; i++) {
        bool array = c->s[c->i] == '[';
        c->path[depth] = i;
        if (depth + 1 < s->ndim) {
            if (!array) {
                snprintf(what, sizeof what, "should be an array of %lld entries",
                         (long long)s->dims[depth + 1]);
                return nest_error(c, depth + 1, what);
            }
            rc = walk_nested(c, depth + 1);
        } else if (array) {
            return nest_error(c, depth + 1, "should be a value, not an array");
        } else if (c->dst) {
            sv_t v;
            if ((rc = read_scalar(c, &v)) == 0) {
                rc = put_value(c, &v, c->next++);
            }
        } else {
            rc = skip_value(c);
        }
        if (rc != 0 || (rc = next_entry(c, &more)) != 0) {
            return rc;
        }
    }
    if (n == 0) {
        c->i++; /* the empty array's ']' */
    }
    return 0;
}

/* Flat data of n values (count_entries found no array among them). */
static int decode_flat(data_ctx_t *c, size_t n)
{
    c->i++;
    skip_ws(c);
    bool more = n > 0;
    for (size_t i = 0; more; i++) {
        sv_t v;
        int rc = read_scalar(c, &v);
        if (rc != 0 || (rc = put_value(c, &v, i)) != 0 || (rc = next_entry(c, &more)) != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- request decoding ------------------------------------------------------------------ */

/* An arena allocation failed: over the request's memory limit (the client's doing) or out of
 * memory. The arena does not say which, so judge by the limit with a chunk's slack. */
static int alloc_error(bd_arena_t *arena, size_t n, const char *what, bd_err_t *err)
{
    size_t need = n > 4096 ? n : 4096;
    if (arena->limit && (!bd_add_size(arena->used, need + 64, &need) || need > arena->limit)) {
        return bd_err_set(err, BD_ETOOBIG,
                          "%s needs %zu bytes, which would pass the request's memory limit of "
                          "%zu bytes",
                          what, n, arena->limit);
    }
    return bd_err_set(err, BD_ENOMEM, "out of memory allocating %zu bytes for %s", n, what);
}

static char *arena_str(bd_arena_t *arena, const char *s, size_t n, bd_err_t *err, int *rc)
{
    char *p = bd_arena_strndup(arena, s, n);
    if (!p) {
        *rc = alloc_error(arena, n + 1, "a name", err);
    }
    return p;
}

/* An input's or output's parameters may not ask for Triton's shared-memory extension: its
 * data would be taken from, or written to, a region batchd never reads. */
static int no_shared_memory(const json_t *params, const char *kind, const char *name, bd_err_t *err)
{
    static const char *const keys[] = {"shared_memory_region", "shared_memory_byte_size",
                                       "shared_memory_offset"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (json_object_get(params, keys[i])) {
            return bd_err_set(err, BD_EINVAL,
                              "%s '%.*s': parameters.%s asks for Triton's shared-memory "
                              "extension, which batchd does not support; send the data in the "
                              "request (\"data\" or a binary tensor) and read it from the reply",
                              kind, shown(name), name, keys[i]);
        }
    }
    return 0;
}

/* Keep parameters.<key> = `v` in *p (see bd_param_t). Returns 0 or the arena's error. */
static int keep_param(const char *key, const json_t *v, bd_arena_t *arena, bd_param_t *p,
                      bd_err_t *err)
{
    int rc = 0;
    size_t len;
    const char *s;
    if (json_is_boolean(v)) {
        p->kind = BD_PARAM_BOOL;
        p->v.b = json_is_true(v);
    } else if (json_is_integer(v)) {
        p->kind = BD_PARAM_INT;
        p->v.i = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) || is_bigint(v)) {
        p->kind = BD_PARAM_DOUBLE;
        p->v.d = is_bigint(v) ? strtod(json_string_value(v) + 1, NULL) : json_number_value(v);
    } else if ((s = str_value(v, &len))) {
        p->kind = BD_PARAM_STRING;
        if (!(p->v.s = arena_str(arena, s, len, err, &rc))) {
            return rc;
        }
    } else {
        p->kind = BD_PARAM_OTHER;
    }
    p->name = arena_str(arena, key, strlen(key), err, &rc);
    return rc;
}

/* The request-level parameters: the three the codec interprets into their fields, the
 * others kept generically in out->params (see bd_param_t). */
static int decode_params(const json_t *root, bd_arena_t *arena, bd_infer_req_t *out, bd_err_t *err)
{
    const json_t *params = json_object_get(root, "parameters");
    if (!params) {
        return 0;
    }
    if (!json_is_object(params)) {
        return bd_err_set(err, BD_EINVAL, "\"parameters\" must be an object");
    }
    size_t n = json_object_size(params);
    if (n > BD_MAX_PARAMS) {
        return bd_err_set(err, BD_EINVAL, "\"parameters\" has %zu entries; at most %d are allowed",
                          n, BD_MAX_PARAMS);
    }
    const json_t *v = json_object_get(params, "binary_data_output");
    if (v) {
        if (!json_is_boolean(v)) {
            return bd_err_set(err, BD_EINVAL,
                              "parameters.binary_data_output must be true or false");
        }
        out->binary_default = json_is_true(v);
    }
    int64_t i;
    v = json_object_get(params, "priority");
    if (v) {
        if (!get_uint(v, &i)) {
            return bd_err_set(err, BD_EINVAL, "parameters.priority%s", uint_fault(v));
        }
        out->priority = i;
    }
    v = json_object_get(params, "timeout");
    if (v) {
        if (!get_uint(v, &i)) {
            return bd_err_set(err, BD_EINVAL, "parameters.timeout%s (microseconds)", uint_fault(v));
        }
        out->timeout_us = (uint64_t)i;
    }
    bd_param_t *kept = NULL;
    size_t n_kept = 0;
    const char *key;
    json_t *x;
    json_object_foreach((json_t *)params, key, x)
    {
        if (strcmp(key, "binary_data_output") == 0 || strcmp(key, "priority") == 0 ||
            strcmp(key, "timeout") == 0) {
            continue;
        }
        if (!kept && !(kept = bd_arena_calloc(arena, n, sizeof *kept))) {
            return alloc_error(arena, n * sizeof *kept, "the request's parameters", err);
        }
        int rc = keep_param(key, x, arena, &kept[n_kept++], err);
        if (rc != 0) {
            return rc;
        }
    }
    out->params = kept;
    out->n_params = n_kept;
    return 0;
}

static int decode_shape(const json_t *in, bd_tensor_t *t, bd_err_t *err)
{
    const char *name = t->name;
    const json_t *shape = json_object_get(in, "shape");
    if (!shape) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s' has no \"shape\"", shown(name), name);
    }
    if (!json_is_array(shape)) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s': \"shape\" must be an array of integers",
                          shown(name), name);
    }
    size_t ndim = json_array_size(shape);
    if (ndim > BD_MAX_DIMS) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.*s': shape has %zu dims; at most %d are supported", shown(name),
                          name, ndim, BD_MAX_DIMS);
    }
    t->shape.ndim = (int)ndim;
    for (size_t d = 0; d < ndim; d++) {
        if (!get_uint(json_array_get(shape, d), &t->shape.dims[d])) {
            return bd_err_set(err, BD_EINVAL, "input '%.*s': shape entry %zu%s", shown(name), name,
                              d, uint_fault(json_array_get(shape, d)));
        }
    }
    return 0;
}

/* Decode inputs[i] into t. Binary inputs get their size in *binary_size (data set later). */
static int decode_input(const json_t *in, size_t i, const scan_t *sc, bd_tensor_t *t,
                        size_t *binary_size, bd_arena_t *arena, const bd_decode_limits_t *limits,
                        bd_err_t *err)
{
    int rc = 0;
    char shape[SHAPE_STR];
    if (!json_is_object(in)) {
        return bd_err_set(err, BD_EINVAL, "inputs[%zu] must be an object", i);
    }
    const json_t *v = json_object_get(in, "name");
    size_t len;
    const char *s = str_value(v, &len);
    if (!v) {
        return bd_err_set(err, BD_EINVAL, "inputs[%zu] has no \"name\"", i);
    }
    if (!s || len == 0) {
        return bd_err_set(err, BD_EINVAL, "inputs[%zu]: \"name\" must be a non-empty string", i);
    }
    if (!(t->name = arena_str(arena, s, len, err, &rc))) {
        return rc;
    }
    const char *name = t->name;

    v = json_object_get(in, "datatype");
    s = str_value(v, &len);
    if (!v) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s' has no \"datatype\"", shown(name), name);
    }
    if (!s) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s': \"datatype\" must be a string",
                          shown(name), name);
    }
    t->dtype = bd_dtype_from_chars(s, len);
    if (t->dtype == BD_DT_INVALID) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s': unknown datatype '%.32s'", shown(name),
                          name, s);
    }
    if (!bd_dtype_supported(t->dtype)) {
        return bd_err_set(err, BD_EUNSUPPORTED, "input '%.*s': datatype %s is not supported",
                          shown(name), name, bd_dtype_name(t->dtype));
    }

    if ((rc = decode_shape(in, t, err)) != 0) {
        return rc;
    }
    size_t count;
    /* BYTES: at least its length prefixes; the real size comes with the data. */
    bool bytes = t->dtype == BD_DT_BYTES;
    size_t esize = bytes ? BD_BYTES_PREFIX : bd_dtype_size(t->dtype);
    if (bd_shape_count(&t->shape, 0, &count, NULL) != 0 ||
        !bd_mul_size(count, esize, &t->byte_size)) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s': shape %s has too many elements",
                          shown(name), name, bd_shape_str(&t->shape, shape, sizeof shape));
    }
    if (limits->max_elems_per_tensor && count > limits->max_elems_per_tensor) {
        return bd_err_set(err, BD_ETOOBIG,
                          "input '%.*s': shape %s has %zu elements, more than the limit of %zu",
                          shown(name), name, bd_shape_str(&t->shape, shape, sizeof shape), count,
                          limits->max_elems_per_tensor);
    }

    const json_t *params = json_object_get(in, "parameters");
    const json_t *bsize = NULL;
    if (params) {
        if (!json_is_object(params)) {
            return bd_err_set(err, BD_EINVAL, "input '%.*s': \"parameters\" must be an object",
                              shown(name), name);
        }
        if ((rc = no_shared_memory(params, "input", name, err)) != 0) {
            return rc;
        }
        bsize = json_object_get(params, "binary_data_size");
    }
    const json_t *data = json_object_get(in, "data");
    if (bsize) {
        int64_t n;
        if (!get_uint(bsize, &n)) {
            return bd_err_set(err, BD_EINVAL, "input '%.*s': parameters.binary_data_size%s",
                              shown(name), name, uint_fault(bsize));
        }
        if (data) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%.*s' has both \"data\" and parameters.binary_data_size",
                              shown(name), name);
        }
        if (bytes && (uint64_t)n < (uint64_t)t->byte_size) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%.*s': binary_data_size is %lld but shape %s of BYTES needs "
                              "at least %zu bytes (a 4-byte length per element)",
                              shown(name), name, (long long)n,
                              bd_shape_str(&t->shape, shape, sizeof shape), t->byte_size);
        }
        if (bytes && (uint64_t)n > SIZE_MAX) {
            return bd_err_set(err, BD_EINVAL, "input '%.*s': binary_data_size %lld is too large",
                              shown(name), name, (long long)n);
        }
        if (bytes) {
            t->byte_size = (size_t)n; /* checked against the tail, then element by element */
        } else if ((uint64_t)n != (uint64_t)t->byte_size) {
            return bd_err_set(err, BD_EINVAL,
                              "input '%.*s': binary_data_size is %lld but shape %s of %s needs "
                              "%zu bytes",
                              shown(name), name, (long long)n,
                              bd_shape_str(&t->shape, shape, sizeof shape), bd_dtype_name(t->dtype),
                              t->byte_size);
        }
        *binary_size = t->byte_size;
        return 0;
    }
    if (!data) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.*s' has neither \"data\" nor parameters.binary_data_size",
                          shown(name), name);
    }
    const edit_t *span = data_span(sc, data);
    if (!span) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s': \"data\" must be an array", shown(name),
                          name);
    }
    /* Check the amount of data before allocating for the shape's (client-chosen) size: flat
     * data must hold exactly `count` values, and nested data cannot hold more values than
     * its text has bytes, so a larger shape only needs its mismatch found. */
    data_ctx_t c = {.t = t, .name = name, .s = sc->s, .n = span->end, .i = span->start, .err = err};
    size_t n, mixed;
    bool first_array;
    if ((rc = count_entries(&c, &n, &first_array, &mixed)) != 0) {
        return rc;
    }
    if (mixed < n) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.*s': data mixes arrays and values at index %zu; give it "
                          "flat or nested exactly as shape %s",
                          shown(name), name, mixed, bd_shape_str(&t->shape, shape, sizeof shape));
    }
    bool nested = t->shape.ndim >= 2 && n > 0 && first_array;
    if (first_array && !nested) {
        return bd_err_set(err, BD_EINVAL,
                          "input '%.*s': data is nested deeper than shape %s, which has %d "
                          "dim%s; give its %zu value%s flat",
                          shown(name), name, bd_shape_str(&t->shape, shape, sizeof shape),
                          t->shape.ndim, t->shape.ndim == 1 ? "" : "s", count,
                          count == 1 ? "" : "s");
    }
    if (!nested && n != count) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s': expected %zu values for shape %s, got %zu",
                          shown(name), name, count, bd_shape_str(&t->shape, shape, sizeof shape),
                          n);
    }
    if (nested && count > span->end - span->start) {
        if ((rc = walk_nested(&c, 0)) != 0) {
            return rc;
        }
        c.i = span->start;
    }
    /* BYTES: the prefixes plus at most the data text's bytes (decoding never grows text).
     * count <= the text's length here (flat: n == count values were counted in it; nested:
     * a larger count failed the walk above), so the sum cannot overflow in practice; it is
     * checked anyway. */
    size_t cap = t->byte_size;
    if (bytes && !bd_add_size(cap, span->end - span->start, &cap)) {
        return bd_err_set(err, BD_EINVAL, "input '%.*s': shape %s has too many elements",
                          shown(name), name, bd_shape_str(&t->shape, shape, sizeof shape));
    }
    if (!(c.dst = bd_arena_alloc(arena, cap ? cap : 1))) {
        char what[NAME_SHOWN + 32];
        snprintf(what, sizeof what, "input '%.*s'", shown(name), name);
        return alloc_error(arena, cap, what, err);
    }
    t->data = c.dst;
    rc = nested ? walk_nested(&c, 0) : decode_flat(&c, n);
    if (bytes) {
        t->byte_size = c.off;
    }
    return rc;
}

static int decode_inputs(const json_t *root, const scan_t *sc, const char *body, size_t len,
                         bd_arena_t *arena, const bd_decode_limits_t *limits, bd_infer_req_t *out,
                         bd_err_t *err)
{
    const json_t *inputs = json_object_get(root, "inputs");
    if (!inputs) {
        return bd_err_set(err, BD_EINVAL, "request has no \"inputs\"");
    }
    if (!json_is_array(inputs)) {
        return bd_err_set(err, BD_EINVAL, "\"inputs\" must be an array");
    }
    size_t n = json_array_size(inputs);
    size_t max = limits->max_inputs ? limits->max_inputs : DEFAULT_MAX_INPUTS;
    if (n == 0) {
        return bd_err_set(err, BD_EINVAL, "\"inputs\" must not be empty");
    }
    if (n > max) {
        return bd_err_set(err, BD_ETOOBIG, "request has %zu inputs; at most %zu are allowed", n,
                          max);
    }
    /* Binary sizes are kept apart from the tensors until the tail is checked. */
    size_t *bin = bd_arena_calloc(arena, n, sizeof *bin);
    out->inputs = bd_arena_calloc(arena, n, sizeof *out->inputs);
    if (!bin || !out->inputs) {
        return alloc_error(arena, n * (sizeof *bin + sizeof *out->inputs), "the input list", err);
    }
    out->n_inputs = n;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        bd_tensor_t *t = &out->inputs[i];
        int rc = decode_input(json_array_get(inputs, i), i, sc, t, &bin[i], arena, limits, err);
        if (rc != 0) {
            return rc;
        }
        if (t->dtype == BD_DT_BYTES && bin[i] == 0 && i < 64) {
            out->json_text |= (uint64_t)1 << i;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(out->inputs[j].name, t->name) == 0) {
                return bd_err_set(err, BD_EINVAL, "input '%.*s' appears more than once",
                                  shown(t->name), t->name);
            }
        }
        if (!bd_add_size(total, bin[i], &total)) {
            total = SIZE_MAX;
        }
    }
    size_t header_len = sc->n;
    size_t tail = len - header_len;
    if (total != tail) {
        if (total == SIZE_MAX) {
            return bd_err_set(err, BD_EINVAL,
                              "binary inputs take more bytes than can be addressed but %zu "
                              "bytes follow the %zu-byte JSON header",
                              tail, header_len);
        }
        return bd_err_set(err, BD_EINVAL,
                          "binary inputs take %zu bytes but %zu bytes follow the %zu-byte JSON "
                          "header%s",
                          total, tail, header_len,
                          tail == 0 ? " (with no length given for the JSON, the whole body is "
                                      "the JSON header: give it in Inference-Header-Content-"
                                      "Length, or over WebSocket send a binary frame)"
                                    : "");
    }
    size_t off = header_len;
    for (size_t i = 0; i < n; i++) {
        bd_tensor_t *t = &out->inputs[i];
        if (t->data == NULL) {
            /* The body is the request's, like the arena; tensors are mutable in general. */
            t->data = (void *)(uintptr_t)(body + off);
            off += bin[i];
            size_t count = 0;
            int rc = 0;
            if (t->dtype == BD_DT_BYTES &&
                ((rc = bd_shape_count(&t->shape, 0, &count, err)) != 0 ||
                 (rc = bd_bytes_check(t->name, t->data, t->byte_size, count, err)) != 0)) {
                return rc;
            }
        }
    }
    return 0;
}

static int decode_outputs(const json_t *root, bd_arena_t *arena, const bd_decode_limits_t *limits,
                          bd_infer_req_t *out, bd_err_t *err)
{
    const json_t *outputs = json_object_get(root, "outputs");
    if (!outputs) {
        return 0;
    }
    if (!json_is_array(outputs)) {
        return bd_err_set(err, BD_EINVAL, "\"outputs\" must be an array");
    }
    size_t n = json_array_size(outputs);
    size_t max = limits->max_inputs ? limits->max_inputs : DEFAULT_MAX_INPUTS;
    if (n == 0) {
        return 0;
    }
    if (n > max) {
        return bd_err_set(err, BD_ETOOBIG, "request asks for %zu outputs; at most %zu are allowed",
                          n, max);
    }
    out->outputs = bd_arena_calloc(arena, n, sizeof *out->outputs);
    if (!out->outputs) {
        return alloc_error(arena, n * sizeof *out->outputs, "the output list", err);
    }
    out->n_outputs = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(outputs, i);
        bd_output_req_t *r = &out->outputs[i];
        if (!json_is_object(o)) {
            return bd_err_set(err, BD_EINVAL, "outputs[%zu] must be an object", i);
        }
        const json_t *v = json_object_get(o, "name");
        size_t len;
        const char *s = str_value(v, &len);
        if (!v) {
            return bd_err_set(err, BD_EINVAL, "outputs[%zu] has no \"name\"", i);
        }
        if (!s || len == 0) {
            return bd_err_set(err, BD_EINVAL, "outputs[%zu]: \"name\" must be a non-empty string",
                              i);
        }
        int rc = 0;
        if (!(r->name = arena_str(arena, s, len, err, &rc))) {
            return rc;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(out->outputs[j].name, r->name) == 0) {
                return bd_err_set(err, BD_EINVAL, "output '%.*s' is requested more than once",
                                  shown(r->name), r->name);
            }
        }
        r->binary = out->binary_default;
        const json_t *params = json_object_get(o, "parameters");
        if (!params) {
            continue;
        }
        if (!json_is_object(params)) {
            return bd_err_set(err, BD_EINVAL, "output '%.*s': \"parameters\" must be an object",
                              shown(r->name), r->name);
        }
        rc = no_shared_memory(params, "output", r->name, err);
        if (rc != 0) {
            return rc;
        }
        v = json_object_get(params, "binary_data");
        if (v) {
            if (!json_is_boolean(v)) {
                return bd_err_set(err, BD_EINVAL,
                                  "output '%.*s': parameters.binary_data must be true or false",
                                  shown(r->name), r->name);
            }
            r->binary = json_is_true(v);
        }
        v = json_object_get(params, "classification");
        if (v) {
            int64_t k = 0;
            if (!get_uint(v, &k) || k == 0) {
                return bd_err_set(err, BD_EINVAL,
                                  "output '%.*s': parameters.classification must be a positive "
                                  "integer (the number of classes to return)",
                                  shown(r->name), r->name);
            }
            r->classification = (uint64_t)k > SIZE_MAX ? SIZE_MAX : (size_t)k;
        }
    }
    return 0;
}

/* The optional string member `key` of the request object, copied into the arena. */
static int opt_string(const json_t *root, const char *key, bd_arena_t *arena, const char **out,
                      bd_err_t *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v) {
        return 0;
    }
    size_t n;
    const char *s = str_value(v, &n);
    if (!s) {
        return bd_err_set(err, BD_EINVAL, "\"%s\" must be a string", key);
    }
    int rc = 0;
    *out = arena_str(arena, s, n, err, &rc);
    return *out ? 0 : rc;
}

/* ---- the fast path ---------------------------------------------------------------------
 * Most requests are a small header naming binary inputs (Triton's binary extension): for
 * those, one pass over the text without a tree. fast_decode takes only a strict subset and
 * says "not mine" (FAST_NO) for anything else, before it has touched `arena` or `out`; the
 * general decoder above then decides, with its messages. The subset: an object with "id",
 * "model_name", "model_version" (strings without escapes or non-ASCII bytes), "parameters"
 * ({"binary_data_output": bool} at most), "inputs" (1..max objects with "name", "datatype"
 * (not BYTES), "shape" (plain integers) and "parameters": {"binary_data_size": N}, N equal to
 * the shape's bytes, the sizes adding up to the tail) and "outputs" (objects with "name" and
 * "parameters": {"binary_data": bool} at most); no key twice, no other key. Whatever it
 * accepts, the general decoder decodes to the same request (fuzz_decode checks). */

#define FAST_NO 1 /* not in the subset: use the general decoder */

typedef struct {
    const char *s;
    size_t n, i;
} fast_t;

typedef struct {
    const char *p;
    size_t n;
} fast_str_t;

typedef struct {
    fast_str_t name;
    bd_dtype_t dtype;
    bd_shape_t shape;
    size_t size;
} fast_input_t;

typedef struct {
    fast_str_t name;
    int binary; /* -1: parameters.binary_data_output decides */
} fast_output_t;

static inline void fast_ws(fast_t *f)
{
    size_t i = f->i;
    while (i < f->n && is_ws(f->s[i])) {
        i++;
    }
    f->i = i;
}

/* Skip whitespace, then take `c`. */
static inline bool fast_take(fast_t *f, char c)
{
    fast_ws(f);
    if (f->i < f->n && f->s[f->i] == c) {
        f->i++;
        return true;
    }
    return false;
}

/* The bytes a fast string ends at (1): its quote, and what it may not hold (a backslash, a
 * control character, anything past printable ASCII). */
static const unsigned char fast_string_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* 0x70 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x90 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xa0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xb0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xc0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xd0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xe0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xf0 */
};

/* A string of printable ASCII without escapes. */
static bool fast_string(fast_t *f, fast_str_t *out)
{
    if (!fast_take(f, '"')) {
        return false;
    }
    const unsigned char *p = (const unsigned char *)f->s + f->i, *q = p;
    const unsigned char *end = (const unsigned char *)f->s + f->n;
    while (q < end && !fast_string_stop[*q]) {
        q++;
    }
    if (q == end || *q != '"') {
        return false;
    }
    out->p = (const char *)p;
    out->n = (size_t)(q - p);
    f->i += out->n + 1;
    return true;
}

/* A non-negative integer literal of at most 15 digits, no leading zero. */
static bool fast_uint(fast_t *f, int64_t *out)
{
    fast_ws(f);
    size_t start = f->i;
    int64_t v = 0;
    while (f->i < f->n && f->s[f->i] >= '0' && f->s[f->i] <= '9' && f->i - start < 15) {
        v = v * 10 + (f->s[f->i++] - '0');
    }
    size_t digits = f->i - start;
    if (digits == 0 || (digits > 1 && f->s[start] == '0') ||
        (f->i < f->n && (is_num_char(f->s[f->i])))) {
        return false;
    }
    *out = v;
    return true;
}

static bool fast_bool(fast_t *f, bool *out)
{
    fast_ws(f);
    if (f->n - f->i >= 4 && memcmp(f->s + f->i, "true", 4) == 0) {
        f->i += 4;
        *out = true;
    } else if (f->n - f->i >= 5 && memcmp(f->s + f->i, "false", 5) == 0) {
        f->i += 5;
        *out = false;
    } else {
        return false;
    }
    return f->i >= f->n || !is_num_char(f->s[f->i]);
}

/* Inline, with `want` a literal: the length and the compare are constants (no calls). */
static inline bool fast_key_is(const fast_str_t *k, const char *want)
{
    size_t n = strlen(want);
    return k->n == n && memcmp(k->p, want, n) == 0;
}

/* Walk the members of an object: *first on entry for the opening brace. Returns 1 with the
 * next key (the colon taken), 0 at the closing brace, -1 when malformed. */
static int fast_member(fast_t *f, bool *first, fast_str_t *key)
{
    if (*first) {
        *first = false;
        if (!fast_take(f, '{')) {
            return -1;
        }
        if (fast_take(f, '}')) {
            return 0;
        }
    } else if (fast_take(f, '}')) {
        return 0;
    } else if (!fast_take(f, ',')) {
        return -1;
    }
    return fast_string(f, key) && fast_take(f, ':') ? 1 : -1;
}

/* {"<key>": bool} or {} (seen: whether the key came). */
static bool fast_bool_params(fast_t *f, const char *key, bool *seen, bool *value)
{
    bool first = true;
    fast_str_t k;
    int m;
    *seen = false;
    while ((m = fast_member(f, &first, &k)) == 1) {
        if (!fast_key_is(&k, key) || *seen || !fast_bool(f, value)) {
            return false;
        }
        *seen = true;
    }
    return m == 0;
}

static bool fast_shape(fast_t *f, bd_shape_t *shape)
{
    shape->ndim = 0;
    if (!fast_take(f, '[')) {
        return false;
    }
    if (fast_take(f, ']')) {
        return true;
    }
    do {
        if (shape->ndim == BD_MAX_DIMS || !fast_uint(f, &shape->dims[shape->ndim])) {
            return false;
        }
        shape->ndim++;
    } while (fast_take(f, ','));
    return fast_take(f, ']');
}

static bool fast_input(fast_t *f, const bd_decode_limits_t *limits, fast_input_t *in)
{
    bool first = true, has_name = false, has_type = false, has_shape = false, has_size = false;
    fast_str_t k, type = {0};
    int64_t size = -1;
    int m;
    while ((m = fast_member(f, &first, &k)) == 1) {
        if (fast_key_is(&k, "name") && !has_name) {
            has_name = fast_string(f, &in->name) && in->name.n > 0;
            if (!has_name) {
                return false;
            }
        } else if (fast_key_is(&k, "datatype") && !has_type) {
            has_type = fast_string(f, &type);
            if (!has_type) {
                return false;
            }
        } else if (fast_key_is(&k, "shape") && !has_shape) {
            has_shape = fast_shape(f, &in->shape);
            if (!has_shape) {
                return false;
            }
        } else if (fast_key_is(&k, "parameters") && !has_size) {
            bool pfirst = true;
            fast_str_t pk;
            int pm;
            while ((pm = fast_member(f, &pfirst, &pk)) == 1) {
                if (!fast_key_is(&pk, "binary_data_size") || has_size || !fast_uint(f, &size)) {
                    return false;
                }
                has_size = true;
            }
            if (pm != 0 || !has_size) {
                return false;
            }
        } else {
            return false;
        }
    }
    if (m != 0 || !has_name || !has_type || !has_shape || !has_size) {
        return false;
    }
    in->dtype = bd_dtype_from_chars(type.p, type.n);
    size_t count;
    if (in->dtype == BD_DT_INVALID || in->dtype == BD_DT_BYTES || !bd_dtype_supported(in->dtype) ||
        bd_shape_count(&in->shape, 0, &count, NULL) != 0 ||
        !bd_mul_size(count, bd_dtype_size(in->dtype), &in->size) ||
        (limits->max_elems_per_tensor && count > limits->max_elems_per_tensor)) {
        return false;
    }
    return (uint64_t)size == (uint64_t)in->size;
}

static bool fast_output(fast_t *f, fast_output_t *o)
{
    bool first = true, has_name = false, has_params = false;
    fast_str_t k;
    int m;
    o->binary = -1;
    while ((m = fast_member(f, &first, &k)) == 1) {
        if (fast_key_is(&k, "name") && !has_name) {
            has_name = fast_string(f, &o->name) && o->name.n > 0;
            if (!has_name) {
                return false;
            }
        } else if (fast_key_is(&k, "parameters") && !has_params) {
            bool seen, v;
            if (!fast_bool_params(f, "binary_data", &seen, &v)) {
                return false;
            }
            has_params = true;
            o->binary = seen ? v : -1;
        } else {
            return false;
        }
    }
    return m == 0 && has_name;
}

static bool fast_same_name(const fast_str_t *a, const fast_str_t *b)
{
    return a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
}

/* 0 (decoded into out), FAST_NO, or an arena error (BD_ENOMEM / BD_ETOOBIG). */
static int fast_decode(const char *body, size_t len, size_t header_len, bd_arena_t *arena,
                       const bd_decode_limits_t *limits, bd_infer_req_t *out, bd_err_t *err)
{
    static const bd_decode_limits_t no_limits = {0, 0, 0};
    limits = limits ? limits : &no_limits;
    if (header_len > len) {
        return FAST_NO;
    }
    size_t max = limits->max_inputs ? limits->max_inputs : DEFAULT_MAX_INPUTS;
    fast_input_t ins[DEFAULT_MAX_INPUTS];
    fast_output_t outs[DEFAULT_MAX_INPUTS];
    size_t n_in = 0, n_out = 0;
    bool has_in = false, has_out = false, has_params = false, binary_default = false;
    fast_str_t strs[3] = {{0}}; /* id, model_name, model_version */
    bool has_str[3] = {false, false, false};
    max = max < DEFAULT_MAX_INPUTS ? max : DEFAULT_MAX_INPUTS;
    if (limits->max_depth > 0 && limits->max_depth < 4) {
        return FAST_NO; /* the subset nests 4 deep: let the general decoder refuse it */
    }

    fast_t f = {.s = body, .n = header_len};
    bool first = true;
    fast_str_t k;
    int m;
    while ((m = fast_member(&f, &first, &k)) == 1) {
        int which = fast_key_is(&k, "id")              ? 0
                    : fast_key_is(&k, "model_name")    ? 1
                    : fast_key_is(&k, "model_version") ? 2
                                                       : -1;
        if (which >= 0) {
            if (has_str[which] || !fast_string(&f, &strs[which])) {
                return FAST_NO;
            }
            has_str[which] = true;
        } else if (fast_key_is(&k, "parameters") && !has_params) {
            bool seen;
            if (!fast_bool_params(&f, "binary_data_output", &seen, &binary_default)) {
                return FAST_NO;
            }
            has_params = true;
        } else if (fast_key_is(&k, "inputs") && !has_in) {
            has_in = true;
            if (!fast_take(&f, '[')) {
                return FAST_NO;
            }
            do {
                if (n_in == max || !fast_input(&f, limits, &ins[n_in])) {
                    return FAST_NO;
                }
                n_in++;
            } while (fast_take(&f, ','));
            if (!fast_take(&f, ']')) {
                return FAST_NO;
            }
        } else if (fast_key_is(&k, "outputs") && !has_out) {
            has_out = true;
            if (!fast_take(&f, '[')) {
                return FAST_NO;
            }
            if (!fast_take(&f, ']')) {
                do {
                    if (n_out == max || !fast_output(&f, &outs[n_out])) {
                        return FAST_NO;
                    }
                    n_out++;
                } while (fast_take(&f, ','));
                if (!fast_take(&f, ']')) {
                    return FAST_NO;
                }
            }
        } else {
            return FAST_NO;
        }
    }
    fast_ws(&f);
    if (m != 0 || f.i != header_len || n_in == 0) {
        return FAST_NO;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_in; i++) {
        for (size_t j = 0; j < i; j++) {
            if (fast_same_name(&ins[i].name, &ins[j].name)) {
                return FAST_NO;
            }
        }
        if (!bd_add_size(total, ins[i].size, &total)) {
            return FAST_NO;
        }
    }
    for (size_t i = 0; i < n_out; i++) {
        for (size_t j = 0; j < i; j++) {
            if (fast_same_name(&outs[i].name, &outs[j].name)) {
                return FAST_NO;
            }
        }
    }
    if (total != len - header_len) {
        return FAST_NO;
    }

    /* In the subset: build the request, as the general decoder would. */
    int rc = 0;
    memset(out, 0, sizeof *out);
    const char **dst[3] = {&out->id, &out->model_name, &out->model_version};
    for (int i = 0; i < 3; i++) {
        if (has_str[i] && !(*dst[i] = arena_str(arena, strs[i].p, strs[i].n, err, &rc))) {
            return rc;
        }
    }
    out->binary_default = binary_default;
    out->inputs = bd_arena_calloc(arena, n_in, sizeof *out->inputs);
    if (!out->inputs) {
        return alloc_error(arena, n_in * sizeof *out->inputs, "the input list", err);
    }
    out->n_inputs = n_in;
    size_t off = header_len;
    for (size_t i = 0; i < n_in; i++) {
        bd_tensor_t *t = &out->inputs[i];
        if (!(t->name = arena_str(arena, ins[i].name.p, ins[i].name.n, err, &rc))) {
            return rc;
        }
        t->dtype = ins[i].dtype;
        t->shape = ins[i].shape;
        t->byte_size = ins[i].size;
        t->data = (void *)(uintptr_t)(body + off);
        off += ins[i].size;
    }
    if (n_out > 0) {
        out->outputs = bd_arena_calloc(arena, n_out, sizeof *out->outputs);
        if (!out->outputs) {
            return alloc_error(arena, n_out * sizeof *out->outputs, "the output list", err);
        }
        out->n_outputs = n_out;
    }
    for (size_t i = 0; i < n_out; i++) {
        bd_output_req_t *r = &out->outputs[i];
        if (!(r->name = arena_str(arena, outs[i].name.p, outs[i].name.n, err, &rc))) {
            return rc;
        }
        r->binary = outs[i].binary < 0 ? binary_default : outs[i].binary == 1;
    }
    return 0;
}

/* A request that failed to decode: zero but for the names read before the error (front ends
 * answer errors by id, and count them against the model the body names). */
static void keep_names(bd_infer_req_t *out)
{
    bd_infer_req_t kept = {
        .id = out->id, .model_name = out->model_name, .model_version = out->model_version};
    *out = kept;
}

int bd_infer_decode(const char *body, size_t len, size_t header_len, bd_arena_t *arena,
                    const bd_decode_limits_t *limits, bd_infer_req_t *out, bd_err_t *err)
{
    int rc = fast_decode(body, len, header_len, arena, limits, out, err);
    if (rc != FAST_NO) {
        if (rc != 0) {
            keep_names(out); /* as the general decoder does */
        }
        return rc;
    }
    return bd_infer_decode_json(body, len, header_len, arena, limits, out, err);
}

int bd_infer_decode_json(const char *body, size_t len, size_t header_len, bd_arena_t *arena,
                         const bd_decode_limits_t *limits, bd_infer_req_t *out, bd_err_t *err)
{
    static const bd_decode_limits_t no_limits = {0, 0, 0};
    memset(out, 0, sizeof *out);
    if (!limits) {
        limits = &no_limits;
    }
    if (header_len > len) {
        return bd_err_set(err, BD_EINVAL,
                          "Inference-Header-Content-Length is %zu but the body has only %zu bytes",
                          header_len, len);
    }
    if (header_len == 0 && len > 0) {
        return bd_err_set(err, BD_EINVAL,
                          "the JSON header's length is 0 (Inference-Header-Content-Length, or a "
                          "WebSocket binary frame's 4-byte prefix): Triton's raw binary request, "
                          "a body of one input's bytes alone, is not supported; send the JSON "
                          "header first, its inputs with binary_data_size");
    }
    int max_depth = limits->max_depth > 0 ? limits->max_depth : DEFAULT_MAX_DEPTH;
    json_t *root = NULL;
    scan_t sc = {.s = body, .n = header_len, .split = header_len < len};
    int rc = parse_header(&sc, max_depth, &root, err);
    if (rc != 0) {
        free(sc.edits);
        return rc;
    }
    if ((rc = opt_string(root, "id", arena, &out->id, err)) != 0 ||
        (rc = opt_string(root, "model_name", arena, &out->model_name, err)) != 0 ||
        (rc = opt_string(root, "model_version", arena, &out->model_version, err)) != 0 ||
        (rc = decode_params(root, arena, out, err)) != 0 ||
        (rc = decode_inputs(root, &sc, body, len, arena, limits, out, err)) != 0 ||
        (rc = decode_outputs(root, arena, limits, out, err)) != 0) {
        goto fail;
    }
    json_decref(root);
    free(sc.edits);
    return 0;

fail:
    json_decref(root);
    free(sc.edits);
    keep_names(out);
    return rc;
}

/* ---- number formatting ----------------------------------------------------------------- */

/* Longest text of one element: "-2.2250738585072014e-308" is 24 bytes; plus a comma. */
#define ELEM_MAX 26
#define BLOCK 4096

static char *fmt_i64(char *w, int64_t v)
{
    if (v < 0) {
        *w++ = '-';
        return bd_fmt_u64(w, (uint64_t)0 - (uint64_t)v);
    }
    return bd_fmt_u64(w, (uint64_t)v);
}

static const double pow10_tab[] = {1e0, 1e1, 1e2, 1e3,  1e4,  1e5,  1e6,
                                   1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13};

/* A float zero: "0", and "-0.0" for negative zero, which JSON readers that take "-0" for
 * the integer 0 (Python's json, jansson) would read as +0. */
static char *put_zero(char *w, double d)
{
    if (signbit(d)) {
        memcpy(w, "-0.0", 4);
        return w + 4;
    }
    *w = '0';
    return w + 1;
}

/* Exactly what snprintf "%.9g" writes for f (but for negative zero, put_zero). For |f| in [1e-4,
 * 1e9), where %g uses fixed notation, the digits come from a = |f| * 10^k with k <= 12: a float has
 * 24 significant bits and 5^12 < 2^28, so the product is exact in a double, and rounding it to an
 * integer (ties to even, as glibc rounds the exact decimal value) gives the 9 digits %.9g prints.
 */
static char *fmt_f32(char *w, float f)
{
    double d = f;
    if (isnan(d) || isinf(d)) {
        memcpy(w, "null", 4);
        return w + 4;
    }
    if (d == 0) {
        return put_zero(w, d);
    }
    if (signbit(d)) {
        *w++ = '-';
        d = -d;
    }
    if (d < 1e9 && d == (double)(uint64_t)d) {
        return bd_fmt_u64(w, (uint64_t)d);
    }
    if (d >= 1e-4 && d < 1e9) {
        double y4 = d * 1e4; /* exact: 24 + 10 bits */
        int e = 0;
        while (e < 12 && y4 >= pow10_tab[e + 1]) {
            e++;
        }
        int x = e - 4; /* decimal exponent of d */
        double r = nearbyint(d * pow10_tab[8 - x]);
        if (r < 1e9) {
            char dig[9];
            uint64_t n = (uint64_t)r;
            for (int i = 8; i >= 0; i--) {
                dig[i] = (char)('0' + n % 10);
                n /= 10;
            }
            int last = 8;
            while (last > 0 && dig[last] == '0') {
                last--;
            }
            if (x >= 0) {
                memcpy(w, dig, (size_t)x + 1);
                w += x + 1;
                if (last > x) {
                    *w++ = '.';
                    memcpy(w, dig + x + 1, (size_t)(last - x));
                    w += last - x;
                }
            } else {
                *w++ = '0';
                *w++ = '.';
                for (int i = 0; i < -x - 1; i++) {
                    *w++ = '0';
                }
                memcpy(w, dig, (size_t)last + 1);
                w += last + 1;
            }
            return w;
        }
    }
    return w + snprintf(w, ELEM_MAX, "%.9g", d);
}

static char *fmt_f64(char *w, double d)
{
    if (isnan(d) || isinf(d)) {
        memcpy(w, "null", 4);
        return w + 4;
    }
    if (d == 0) {
        return put_zero(w, d);
    }
    if (fabs(d) < 1e17 && d == trunc(d)) {
        if (signbit(d)) {
            *w++ = '-';
            d = -d;
        }
        return bd_fmt_u64(w, (uint64_t)d);
    }
    return w + snprintf(w, ELEM_MAX, "%.17g", d);
}

/* Values are read with memcpy: binary tensors may sit unaligned in a body. */
#define FORMAT_LOOP(type, fmt_call)                                                                \
    for (size_t k = 0; k < n; k++) {                                                               \
        type x;                                                                                    \
        memcpy(&x, p + (i + k) * sizeof x, sizeof x);                                              \
        if (i + k) {                                                                               \
            *w++ = ',';                                                                            \
        }                                                                                          \
        w = fmt_call;                                                                              \
    }

static void put_data(bd_buf_t *b, const bd_tensor_t *t, size_t count)
{
    const unsigned char *p = t->data;
    if (t->dtype == BD_DT_BYTES) {
        /* check_output walked the layout: every length fits. */
        size_t off = 0;
        for (size_t i = 0; i < count; i++) {
            uint32_t len = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 |
                           (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 24;
            if (i) {
                bd_buf_putc(b, ',');
            }
            bd_buf_json_string(b, (const char *)p + off + BD_BYTES_PREFIX, len);
            off += BD_BYTES_PREFIX + len;
        }
        return;
    }
    for (size_t i = 0; i < count; i += BLOCK) {
        size_t n = count - i < BLOCK ? count - i : BLOCK;
        if (bd_buf_reserve(b, n * ELEM_MAX) != 0) {
            return;
        }
        char *w = b->data + b->len;
        switch (t->dtype) {
        case BD_DT_BOOL:
            for (size_t k = 0; k < n; k++) {
                if (i + k) {
                    *w++ = ',';
                }
                if (p[i + k]) {
                    memcpy(w, "true", 4);
                    w += 4;
                } else {
                    memcpy(w, "false", 5);
                    w += 5;
                }
            }
            break;
        case BD_DT_UINT8:
            FORMAT_LOOP(uint8_t, bd_fmt_u64(w, x)) break;
        case BD_DT_UINT16:
            FORMAT_LOOP(uint16_t, bd_fmt_u64(w, x)) break;
        case BD_DT_UINT32:
            FORMAT_LOOP(uint32_t, bd_fmt_u64(w, x)) break;
        case BD_DT_UINT64:
            FORMAT_LOOP(uint64_t, bd_fmt_u64(w, x)) break;
        case BD_DT_INT8:
            FORMAT_LOOP(int8_t, fmt_i64(w, x)) break;
        case BD_DT_INT16:
            FORMAT_LOOP(int16_t, fmt_i64(w, x)) break;
        case BD_DT_INT32:
            FORMAT_LOOP(int32_t, fmt_i64(w, x)) break;
        case BD_DT_INT64:
            FORMAT_LOOP(int64_t, fmt_i64(w, x)) break;
        case BD_DT_FP32:
            FORMAT_LOOP(float, fmt_f32(w, x)) break;
        case BD_DT_FP64:
            FORMAT_LOOP(double, fmt_f64(w, x)) break;
        default:
            break; /* excluded by check_output */
        }
        b->len = (size_t)(w - b->data);
        b->data[b->len] = '\0';
    }
}

/* ---- response encoding ----------------------------------------------------------------- */

/* A caller's broken tensor (bad dtype, size not matching the shape) is refused before
 * anything is written. */
static int check_output(const bd_output_enc_t *o, size_t *count)
{
    const bd_tensor_t *t = o->tensor;
    size_t bytes;
    if (!t || !t->name ||
        (o->binary ? t->dtype == BD_DT_INVALID || (int)t->dtype >= BD_DT_COUNT_
                   : !bd_dtype_supported(t->dtype))) {
        return BD_EINVAL;
    }
    if (bd_shape_count(&t->shape, 0, count, NULL) != 0) {
        return BD_EINVAL;
    }
    size_t esize = bd_dtype_size(t->dtype);
    if (esize && (!bd_mul_size(*count, esize, &bytes) || bytes != t->byte_size)) {
        return BD_EINVAL;
    }
    if (t->dtype == BD_DT_BYTES && bd_bytes_check("", t->data, t->byte_size, *count, NULL) != 0) {
        return BD_EINVAL;
    }
    if (t->byte_size && !t->data) {
        return BD_EINVAL;
    }
    return 0;
}

static void put_str(bd_buf_t *b, const char *s)
{
    bd_buf_json_string(b, s, strlen(s));
}

int bd_infer_encode(bd_buf_t *out, const char *model_name, const char *model_version,
                    const char *id, const bd_output_enc_t *outputs, size_t n_outputs,
                    size_t *header_len)
{
    size_t count;
    for (size_t i = 0; i < n_outputs; i++) {
        if (check_output(&outputs[i], &count) != 0) {
            return BD_EINVAL;
        }
    }
    size_t start = out->len;
    char num[24];
    bd_buf_puts(out, "{\"model_name\":");
    put_str(out, model_name ? model_name : "");
    if (model_version) {
        bd_buf_puts(out, ",\"model_version\":");
        put_str(out, model_version);
    }
    if (id) {
        bd_buf_puts(out, ",\"id\":");
        put_str(out, id);
    }
    bd_buf_puts(out, ",\"outputs\":[");
    for (size_t i = 0; i < n_outputs; i++) {
        const bd_tensor_t *t = outputs[i].tensor;
        bd_buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
        put_str(out, t->name);
        bd_buf_puts(out, ",\"datatype\":\"");
        bd_buf_puts(out, bd_dtype_name(t->dtype));
        bd_buf_puts(out, "\",\"shape\":[");
        for (int d = 0; d < t->shape.ndim; d++) {
            if (d) {
                bd_buf_putc(out, ',');
            }
            bd_buf_append(out, num, (size_t)(fmt_i64(num, t->shape.dims[d]) - num));
        }
        if (outputs[i].binary) {
            bd_buf_puts(out, "],\"parameters\":{\"binary_data_size\":");
            bd_buf_append(out, num, (size_t)(bd_fmt_u64(num, t->byte_size) - num));
            bd_buf_puts(out, "}}");
        } else {
            bd_buf_puts(out, "],\"data\":[");
            bd_shape_count(&t->shape, 0, &count, NULL);
            put_data(out, t, count);
            bd_buf_puts(out, "]}");
        }
    }
    bd_buf_puts(out, "]}");
    size_t json_len = out->len - start;
    bool binary = false;
    for (size_t i = 0; i < n_outputs; i++) {
        if (outputs[i].binary) {
            bd_buf_append(out, outputs[i].tensor->data, outputs[i].tensor->byte_size);
            binary = true;
        }
    }
    if (out->failed) {
        return BD_ENOMEM;
    }
    if (header_len) {
        *header_len = binary ? json_len : 0;
    }
    return 0;
}
