/* fuzz_gate: the parsers of src/gate on arbitrary bytes: an API key file, an Authorization
 * header value, a query string's api_key, and a --rate-limit value.
 *
 * Checks, besides ASan/UBSan: a parsed key file has 1..BD_GATE_MAX_KEYS keys, each line's key
 * finds its role again (the first field of every non-comment line), and an error names the
 * file and never contains the text of a line's first field (the key); a bearer token lies
 * inside the value and has no spaces; a decoded query value fits its buffer; a parsed rate is
 * within its bounds with burst >= 1. */
#include <stdlib.h>
#include <string.h>

#include "gate/gate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The line of text[0..n) that starts at pos: its first field, text[*s..*e) (after spaces and
 * tabs, up to a space, a tab or one of stops[0..n_stops)). Returns where the line ends. */
static size_t first_field(const char *text, size_t n, size_t pos, const char *stops, size_t n_stops,
                          size_t *s, size_t *e)
{
    const char *nl = memchr(text + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - text) : n;
    *s = pos;
    while (*s < end && (text[*s] == ' ' || text[*s] == '\t')) {
        (*s)++;
    }
    *e = *s;
    while (*e < end && text[*e] != ' ' && text[*e] != '\t' && !memchr(stops, text[*e], n_stops)) {
        (*e)++;
    }
    return end;
}

static void check_keys(const char *text, size_t n)
{
    bd_err_t err = {0};
    bd_gate_keys_t *k = bd_gate_keys_parse(text, n, "fuzz.keys", &err);
    if (!k) {
        if (!strstr(err.msg, "'fuzz.keys'")) {
            abort();
        }
        /* No line's first field of 12+ characters is quoted (a key never is). */
        for (size_t pos = 0, end, s, e; pos < n; pos = end + 1) {
            end = first_field(text, n, pos, "\r\0", 2, &s, &e);
            if (e - s >= 12 && text[s] != '#') {
                char field[BD_ERR_MSG_MAX];
                size_t len = e - s < sizeof field - 1 ? e - s : sizeof field - 1;
                memcpy(field, text + s, len);
                field[len] = '\0';
                if (strstr(err.msg, field)) {
                    abort();
                }
            }
        }
        return;
    }
    size_t count = bd_gate_keys_count(k);
    if (count == 0 || count > BD_GATE_MAX_KEYS ||
        bd_gate_keys_count_role(k, BD_GATE_ROLE_INFER) +
                bd_gate_keys_count_role(k, BD_GATE_ROLE_ADMIN) !=
            count) {
        abort();
    }
    /* Every key line's key is found again with a role. */
    for (size_t pos = 0, end, s, e; pos < n; pos = end + 1) {
        end = first_field(text, n, pos, "", 0, &s, &e);
        if (e > s && text[s] != '#' && !(e - s == 1 && text[s] == '\r')) {
            if (bd_gate_keys_lookup(k, text + s, e - s, NULL) == BD_GATE_ROLE_NONE) {
                abort();
            }
        }
    }
    bd_gate_keys_free(k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    check_keys(text, size);

    const char *key = NULL;
    size_t key_len = 0;
    if (bd_gate_bearer(text, size, &key, &key_len) == 0) {
        if (key < text || key + key_len > text + size || key_len == 0 ||
            memchr(key, ' ', key_len)) {
            abort();
        }
    }

    char buf[64];
    size_t n = 0;
    int found = bd_gate_query_param(text, size, "api_key", buf, sizeof buf, &n);
    if (found == 1 && n > sizeof buf) {
        abort();
    }

    char *s = malloc(size + 1);
    if (!s) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    double rps = 0, burst = 0;
    bd_err_t err;
    if (bd_gate_parse_rate(s, "--rate-limit", &rps, &burst, &err) == 0) {
        if (!(rps >= 0.001 && rps <= BD_GATE_MAX_RATE && burst >= 1 && burst <= BD_GATE_MAX_RATE)) {
            abort();
        }
    } else if (err.code != BD_EINVAL || !strstr(err.msg, "--rate-limit")) {
        abort();
    }
    free(s);
    return 0;
}
