/* test_gate: src/gate with a fake clock. The key-file parser (comments, blank lines, roles, every
 * kind of bad line, and that no error message ever contains a key), lookups (both roles,
 * unknown keys, lengths, the hash identity), the Authorization and query parsers, the
 * --rate-limit syntax, and the token buckets: burst, refill, fractional rates and fractional
 * tokens kept, Retry-After rounding, separate buckets per caller, the cap and the eviction of
 * refilled and least recently used buckets. Single-threaded; no test waits on real time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gate/gate.h"

/* ---- fake clock ---------------------------------------------------------------------------- */

static uint64_t fake_now_us(void *ctx)
{
    return *(uint64_t *)ctx;
}

static bd_clock_t fake_clock(uint64_t *now)
{
    return (bd_clock_t){fake_now_us, now};
}

/* ---- key files ----------------------------------------------------------------------------- */

static bd_gate_keys_t *parse(const char *text, bd_err_t *err)
{
    return bd_gate_keys_parse(text, strlen(text), "keys.txt", err);
}

static bd_gate_role_t role_of(const bd_gate_keys_t *k, const char *key)
{
    return bd_gate_keys_lookup(k, key, strlen(key), NULL);
}

static void test_keys_roles_comments_and_blanks(void **state)
{
    (void)state;
    bd_err_t err = {0};
    bd_gate_keys_t *k = parse("# batchd keys\n"
                              "\n"
                              "   \t \n"
                              "alpha-key-0001 infer\n"
                              "  # an indented comment\n"
                              "beta-key-0002\tadmin   # the operator\r\n"
                              "gamma-key-0003   infer\n"
                              "delta-key-0004 admin",
                              &err);
    assert_non_null(k);
    assert_int_equal(bd_gate_keys_count(k), 4);
    assert_int_equal(bd_gate_keys_count_role(k, BD_GATE_ROLE_INFER), 2);
    assert_int_equal(bd_gate_keys_count_role(k, BD_GATE_ROLE_ADMIN), 2);
    assert_int_equal(role_of(k, "alpha-key-0001"), BD_GATE_ROLE_INFER);
    assert_int_equal(role_of(k, "beta-key-0002"), BD_GATE_ROLE_ADMIN);
    assert_int_equal(role_of(k, "gamma-key-0003"), BD_GATE_ROLE_INFER);
    assert_int_equal(role_of(k, "delta-key-0004"), BD_GATE_ROLE_ADMIN);
    /* Unknown keys, prefixes, extensions, case, and what the comments said are not keys. */
    assert_int_equal(role_of(k, "alpha-key-000"), BD_GATE_ROLE_NONE);
    assert_int_equal(role_of(k, "alpha-key-00011"), BD_GATE_ROLE_NONE);
    assert_int_equal(role_of(k, "ALPHA-KEY-0001"), BD_GATE_ROLE_NONE);
    assert_int_equal(role_of(k, "#"), BD_GATE_ROLE_NONE);
    assert_int_equal(role_of(k, "infer"), BD_GATE_ROLE_NONE);
    assert_int_equal(bd_gate_keys_lookup(k, "", 0, NULL), BD_GATE_ROLE_NONE);
    /* A key with a NUL in it is not the key before the NUL. */
    assert_int_equal(bd_gate_keys_lookup(k, "alpha-key-0001\0x", 16, NULL), BD_GATE_ROLE_NONE);
    bd_gate_keys_free(k);
}

static void test_keys_identity_is_the_hash(void **state)
{
    (void)state;
    bd_err_t err = {0};
    bd_gate_keys_t *k = parse("k1-aaaaaaaa infer\nk2-bbbbbbbb admin\n", &err);
    assert_non_null(k);
    bd_gate_id_t a, a2, b, x;
    assert_int_equal(bd_gate_keys_lookup(k, "k1-aaaaaaaa", 11, &a), BD_GATE_ROLE_INFER);
    assert_int_equal(bd_gate_keys_lookup(k, "k1-aaaaaaaa", 11, &a2), BD_GATE_ROLE_INFER);
    assert_int_equal(bd_gate_keys_lookup(k, "k2-bbbbbbbb", 11, &b), BD_GATE_ROLE_ADMIN);
    assert_int_equal(bd_gate_keys_lookup(k, "nope", 4, &x), BD_GATE_ROLE_NONE);
    assert_memory_equal(a.b, a2.b, sizeof a.b);
    assert_memory_not_equal(a.b, b.b, sizeof a.b);
    /* The identity holds no plaintext: the key's bytes are not in it. */
    assert_null(memmem(a.b, sizeof a.b, "k1-a", 4));
    assert_int_equal(bd_gate_keys_role_of(k, &a), BD_GATE_ROLE_INFER);
    assert_int_equal(bd_gate_keys_role_of(k, &b), BD_GATE_ROLE_ADMIN);
    assert_int_equal(bd_gate_keys_role_of(k, &x), BD_GATE_ROLE_NONE);
    bd_gate_keys_free(k);
}

/* A bad file: NULL, BD_EINVAL, a message naming the file and `line`, containing `want`, and
 * never the secret. */
static void expect_bad(const char *text, size_t line, const char *want, const char *secret)
{
    bd_err_t err = {0};
    bd_gate_keys_t *k = bd_gate_keys_parse(text, strlen(text), "/etc/batchd/keys.txt", &err);
    assert_null(k);
    assert_int_equal(err.code, BD_EINVAL);
    char where[64];
    snprintf(where, sizeof where, "'/etc/batchd/keys.txt' line %zu:", line);
    if (!strstr(err.msg, where) || !strstr(err.msg, want)) {
        fail_msg("message '%s' lacks '%s' or '%s'", err.msg, where, want);
    }
    if (secret && strstr(err.msg, secret)) {
        fail_msg("message '%s' shows the key", err.msg);
    }
}

static void test_keys_bad_lines(void **state)
{
    (void)state;
    expect_bad("good-key-1 infer\nsecret-key-2\n", 2, "has no role", "secret-key-2");
    expect_bad("secret-key-1 reader\n", 1, "role must be 'infer' or 'admin'", "secret-key-1");
    expect_bad("secret-key-1 Admin\n", 1, "role must be 'infer' or 'admin'", "secret-key-1");
    /* Fields swapped: the "role" is the key and must not be quoted either. */
    expect_bad("# c\n\nadmin secret-key-3\n", 3, "role must be 'infer' or 'admin'", "secret-key-3");
    expect_bad("secret-key-4 infer extra\n", 1, "more fields", "secret-key-4");
    expect_bad("good-key-1 infer\ngood-key-2 admin\nsecret-key-5 infer\nsecret-key-5 admin\n", 4,
               "repeats the key of line 3", "secret-key-5");
    expect_bad("secr\x01t-key infer\n", 1, "not printable ASCII", "secr");
    expect_bad("s\xc3\xa9"
               "cret-key infer\n",
               1, "not printable ASCII", "cret-key");
    char longer[BD_GATE_MAX_KEY_BYTES + 32];
    memset(longer, 'k', BD_GATE_MAX_KEY_BYTES + 1);
    strcpy(longer + BD_GATE_MAX_KEY_BYTES + 1, " infer\n");
    expect_bad(longer, 1, "longer than 256 characters", "kkkkkkkk");
    /* Exactly the maximum is fine. */
    longer[BD_GATE_MAX_KEY_BYTES] = ' ';
    strcpy(longer + BD_GATE_MAX_KEY_BYTES + 1, "admin\n");
    bd_err_t err = {0};
    bd_gate_keys_t *k = bd_gate_keys_parse(longer, strlen(longer), "f", &err);
    assert_non_null(k);
    bd_gate_keys_free(k);
}

static void test_keys_empty_file_and_too_many(void **state)
{
    (void)state;
    const char *empties[] = {"", "\n\n", "# only a comment\n   \n# another\n"};
    for (size_t i = 0; i < 3; i++) {
        bd_err_t err = {0};
        assert_null(parse(empties[i], &err));
        assert_int_equal(err.code, BD_EINVAL);
        assert_non_null(strstr(err.msg, "'keys.txt' has no keys"));
    }
    size_t n = BD_GATE_MAX_KEYS + 1;
    char *text = malloc(n * 32);
    assert_non_null(text);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        w += (size_t)sprintf(text + w, "key-%06zu infer\n", i);
    }
    bd_err_t err = {0};
    assert_null(bd_gate_keys_parse(text, w, "keys.txt", &err));
    assert_non_null(strstr(err.msg, "line 1025: more than 1024 keys"));
    /* One fewer fits. */
    bd_gate_keys_t *k =
        bd_gate_keys_parse(text, w - strlen("key-001024 infer\n"), "keys.txt", &err);
    assert_non_null(k);
    assert_int_equal(bd_gate_keys_count(k), BD_GATE_MAX_KEYS);
    assert_int_equal(role_of(k, "key-001023"), BD_GATE_ROLE_INFER);
    bd_gate_keys_free(k);
    free(text);
}

static void test_keys_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_gate_keysXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "file-key-1 admin\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    bd_err_t err = {0};
    bd_gate_keys_t *k = bd_gate_keys_load(path, &err);
    assert_non_null(k);
    assert_int_equal(role_of(k, "file-key-1"), BD_GATE_ROLE_ADMIN);
    bd_gate_keys_free(k);
    unlink(path);
    assert_null(bd_gate_keys_load(path, &err));
    assert_int_equal(err.code, BD_EIO);
    assert_non_null(strstr(err.msg, "cannot read the API key file"));
    assert_non_null(strstr(err.msg, path));
}

/* ---- the gate: reload keeps the old keys on failure ------------------------------------------ */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A SIGHUP's reload as the server does it, the read on one thread and the apply on another,
 * here in a row. */
static int reload(bd_gate_t *g, bd_err_t *err)
{
    bd_gate_keys_t *k = bd_gate_keys_load(bd_gate_keys_path(g), err);
    return bd_gate_reload_apply(g, k, err);
}

static void test_gate_reload(void **state)
{
    (void)state;
    char path[] = "/tmp/test_gate_reloadXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "old-key-1 infer\n");
    uint64_t now = 0;
    bd_err_t err = {0};
    bd_gate_opts_t o = {.keys_path = path};
    bd_gate_t *g = bd_gate_new(&o, fake_clock(&now), &err);
    assert_non_null(g);
    assert_true(bd_gate_keys_on(g));
    assert_false(bd_gate_limits_on(g));
    assert_false(bd_gate_metrics_auth(g));
    bd_gate_who_t who, ws;
    assert_int_equal(bd_gate_authenticate(g, "old-key-1", 9, &who), 0);
    assert_int_equal(who.role, BD_GATE_ROLE_INFER);
    ws = who; /* a WebSocket opened with the old key */
    assert_int_equal(bd_gate_authenticate(g, "new-key-1", 9, &who), -1);

    write_file(path, "old-key-1 infer\nbroken line here\n");
    assert_int_not_equal(reload(g, &err), 0);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_int_equal(bd_gate_authenticate(g, "old-key-1", 9, &who), 0); /* kept */
    assert_true(bd_gate_still_valid(g, &ws));

    write_file(path, "new-key-1 admin\n");
    assert_int_equal(reload(g, &err), 0);
    assert_int_equal(bd_gate_authenticate(g, "new-key-1", 9, &who), 0);
    assert_int_equal(who.role, BD_GATE_ROLE_ADMIN);
    assert_int_equal(bd_gate_authenticate(g, "old-key-1", 9, &who), -1);
    assert_false(bd_gate_still_valid(g, &ws));
    assert_int_equal(ws.role, BD_GATE_ROLE_NONE);

    unlink(path);
    assert_int_equal(reload(g, &err), BD_EIO); /* gone: keeps new-key-1 */
    assert_int_equal(bd_gate_authenticate(g, "new-key-1", 9, &who), 0);
    bd_gate_free(g);

    /* A bad file at start fails the gate with the file's error. */
    write_file(path, "k infer\nk2 writer\n");
    o.metrics_auth = true;
    assert_null(bd_gate_new(&o, fake_clock(&now), &err));
    assert_non_null(strstr(err.msg, "line 2: the role must be"));
    unlink(path);

    /* No keys: no reload, everything anonymous. */
    bd_gate_opts_t none = {0};
    g = bd_gate_new(&none, fake_clock(&now), &err);
    assert_non_null(g);
    assert_false(bd_gate_keys_on(g));
    assert_null(bd_gate_keys_path(g)); /* the server reloads nothing */
    uint64_t retry = 0;
    bd_gate_anonymous(NULL, &who);
    for (int i = 0; i < 100; i++) {
        assert_true(bd_gate_take(g, &who, &retry, &err)); /* no limits */
    }
    bd_gate_free(g);
}

/* ---- what clients send ---------------------------------------------------------------------- */

static void expect_bearer(const char *value, const char *want)
{
    const char *key = NULL;
    size_t n = 0;
    int rc = bd_gate_bearer(value, strlen(value), &key, &n);
    if (!want) {
        if (rc != -1) {
            fail_msg("'%s' was taken as a bearer token", value);
        }
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(key, want, n);
}

static void test_bearer(void **state)
{
    (void)state;
    expect_bearer("Bearer abc123", "abc123");
    expect_bearer("bearer abc123", "abc123");
    expect_bearer("BEARER   abc.def-_~+/=", "abc.def-_~+/=");
    expect_bearer("Bearer abc ", "abc");
    expect_bearer("Bearer", NULL);
    expect_bearer("Bearer ", NULL);
    expect_bearer("Bearer    ", NULL);
    expect_bearer("Basic dXNlcjpwYXNz", NULL);
    expect_bearer("Bearerabc", NULL);
    expect_bearer("Bearer abc def", NULL);
    expect_bearer("abc123", NULL);
    expect_bearer("", NULL);
}

static void test_query_param(void **state)
{
    (void)state;
    char buf[16];
    size_t n = 0;
    const char *q = "x=1&api_key=ab%2Fc%3d&api_key=second";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), 1);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "ab/c=", 5);
    q = "api_key=a+b%2B";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), 1);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "a+b+", 4);
    q = "api_key=";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), 1);
    assert_int_equal(n, 0);
    q = "my_api_key=zz&api_keyx=1";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), 0);
    assert_int_equal(bd_gate_query_param("", 0, "api_key", buf, sizeof buf, &n), 0);
    q = "api_key=%zz";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), -1);
    q = "api_key=%4";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), -1);
    q = "api_key=0123456789abcdefX";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), -1);
    q = "api_key=0123456789abcdef";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), 1);
    assert_int_equal(n, 16);
    /* The name is compared decoded, as ?classification's is; one without '=' is no value. */
    q = "api_key&api%5Fkey=k1";
    assert_int_equal(bd_gate_query_param(q, strlen(q), "api_key", buf, sizeof buf, &n), 1);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "k1", 2);
}

static void expect_rate(const char *s, double rps, double burst)
{
    double r = -1, b = -1;
    bd_err_t err = {0};
    if (bd_gate_parse_rate(s, "--rate-limit", &r, &b, &err) != 0) {
        fail_msg("'%s' refused: %s", s, err.msg);
    }
    assert_true(r == rps);
    assert_true(b == burst);
}

static void test_parse_rate(void **state)
{
    (void)state;
    expect_rate("5", 5, 5);
    expect_rate("5:5", 5, 5);
    expect_rate("5:20", 5, 20);
    expect_rate("2.5", 2.5, 2.5);
    expect_rate("0.5", 0.5, 1); /* a burst below one token could never pass */
    expect_rate("0.001:3", 0.001, 3);
    expect_rate("1000000:1000000", 1000000, 1000000);
    const char *bad[] = {"",      "0",   "-1",    "abc",     "5:",        ":5",    "5:0",
                         "5:0.5", "5:x", "5:5:5", "1e3",     "0x10",      " 5",    "5 ",
                         "inf",   "nan", "5;5",   "2000000", "5:2000000", "0.0009"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double r, b;
        bd_err_t err = {0};
        if (bd_gate_parse_rate(bad[i], "--rate-limit", &r, &b, &err) == 0) {
            fail_msg("'%s' was accepted", bad[i]);
        }
        assert_int_equal(err.code, BD_EINVAL);
        assert_non_null(strstr(err.msg, "--rate-limit must be RPS or RPS:BURST"));
    }
}

/* ---- token buckets --------------------------------------------------------------------------- */

static bd_gate_id_t id_of(uint8_t n)
{
    bd_gate_id_t id;
    memset(&id, 0, sizeof id);
    id.b[0] = 4;
    id.b[4] = n;
    return id;
}

/* n takes in a row at the current time; returns how many were allowed, and the last retry. */
static int take_n(bd_gate_limiter_t *l, const bd_gate_id_t *id, int n, uint64_t *retry)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        ok += bd_gate_limiter_take(l, id, retry);
    }
    return ok;
}

static void test_bucket_burst_and_refill(void **state)
{
    (void)state;
    uint64_t now = 1000000;
    bd_gate_limiter_t *l = bd_gate_limiter_new(5, 5, 0, fake_clock(&now));
    assert_non_null(l);
    bd_gate_id_t a = id_of(1);
    uint64_t retry = 0;
    /* Starts full: five at once, the sixth refused with Retry-After 1 (0.2 s rounded up). */
    assert_int_equal(take_n(l, &a, 5, &retry), 5);
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    assert_int_equal(retry, 1);
    /* 199 ms later: 0.995 tokens, still refused. */
    now += 199000;
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    assert_int_equal(retry, 1);
    /* At 200 ms: exactly one token (what was refused took nothing). */
    now += 1000;
    assert_true(bd_gate_limiter_take(l, &a, &retry));
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    /* A long pause refills to the burst and no further. */
    now += 60 * 1000000ull;
    assert_int_equal(take_n(l, &a, 7, &retry), 5);
    /* The clock going backwards never adds tokens. */
    now -= 5000000;
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    bd_gate_limiter_free(l);
}

static void test_bucket_burst_larger_than_rate(void **state)
{
    (void)state;
    uint64_t now = 0;
    bd_gate_limiter_t *l = bd_gate_limiter_new(2, 10, 0, fake_clock(&now));
    bd_gate_id_t a = id_of(1);
    uint64_t retry = 0;
    assert_int_equal(take_n(l, &a, 12, &retry), 10);
    now += 1000000; /* one second: two tokens */
    assert_int_equal(take_n(l, &a, 3, &retry), 2);
    bd_gate_limiter_free(l);
}

static void test_bucket_fractional_rate_and_retry_after(void **state)
{
    (void)state;
    uint64_t now = 0;
    /* 0.25 per second, burst 1: one now, the next after 4 s. */
    bd_gate_limiter_t *l = bd_gate_limiter_new(0.25, 1, 0, fake_clock(&now));
    bd_gate_id_t a = id_of(1);
    uint64_t retry = 0;
    assert_true(bd_gate_limiter_take(l, &a, &retry));
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    assert_int_equal(retry, 4);
    now += 1500000; /* 0.375 tokens: 2.5 s to go, rounded up to 3 */
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    assert_int_equal(retry, 3);
    now += 1500000; /* 0.75: 1 s exactly */
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    assert_int_equal(retry, 1);
    now += 999999; /* a microsecond short: still at least 1 */
    assert_false(bd_gate_limiter_take(l, &a, &retry));
    assert_int_equal(retry, 1);
    now += 1;
    assert_true(bd_gate_limiter_take(l, &a, &retry));
    bd_gate_limiter_free(l);

    /* Fractional tokens add up across refills: 1/3 per second, three 1 s steps make one. */
    now = 0;
    l = bd_gate_limiter_new(1.0 / 3.0, 1, 0, fake_clock(&now));
    assert_true(bd_gate_limiter_take(l, &a, &retry));
    for (int i = 0; i < 2; i++) {
        now += 1000000;
        assert_false(bd_gate_limiter_take(l, &a, &retry));
    }
    assert_int_equal(retry, 1); /* 1/3 token left to wait for: 1 s */
    now += 1000000;
    assert_true(bd_gate_limiter_take(l, &a, &retry));
    bd_gate_limiter_free(l);

    /* 1.5 per second: 5 ms steps never reach a token before 666.7 ms. */
    now = 0;
    l = bd_gate_limiter_new(1.5, 1, 0, fake_clock(&now));
    assert_true(bd_gate_limiter_take(l, &a, &retry));
    int refused = 0;
    while (!bd_gate_limiter_take(l, &a, &retry)) {
        refused++;
        now += 5000;
    }
    assert_true(now >= 666667 && now <= 670000);
    assert_int_equal(refused, 134);
    bd_gate_limiter_free(l);
}

static void test_buckets_are_per_caller(void **state)
{
    (void)state;
    uint64_t now = 0;
    bd_gate_limiter_t *l = bd_gate_limiter_new(1, 2, 0, fake_clock(&now));
    bd_gate_id_t a = id_of(1), b = id_of(2);
    uint64_t retry = 0;
    assert_int_equal(take_n(l, &a, 3, &retry), 2);
    assert_int_equal(take_n(l, &b, 3, &retry), 2);
    assert_int_equal(bd_gate_limiter_buckets(l), 2);
    bd_gate_limiter_free(l);

    /* Addresses: each its own bucket; an IPv4-mapped IPv6 address is its IPv4 address. */
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.2.3", &v4.sin_addr);
    struct sockaddr_in6 mapped = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &mapped.sin6_addr);
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr);
    bd_gate_who_t w4, wm, w6, wother;
    bd_gate_anonymous((struct sockaddr *)&v4, &w4);
    bd_gate_anonymous((struct sockaddr *)&mapped, &wm);
    bd_gate_anonymous((struct sockaddr *)&v6, &w6);
    v4.sin_port = htons(9); /* the port does not matter */
    inet_pton(AF_INET, "10.1.2.4", &v4.sin_addr);
    bd_gate_anonymous((struct sockaddr *)&v4, &wother);
    /* IPv6 per /64: another address in 2001:db8::/64 is the same caller, one in the next /64
     * is not. */
    bd_gate_who_t w6same, w6next;
    inet_pton(AF_INET6, "2001:db8::ffff:1234", &v6.sin6_addr);
    bd_gate_anonymous((struct sockaddr *)&v6, &w6same);
    inet_pton(AF_INET6, "2001:db8:0:1::1", &v6.sin6_addr);
    bd_gate_anonymous((struct sockaddr *)&v6, &w6next);
    assert_memory_equal(w6.id.b, w6same.id.b, sizeof w6.id.b);
    assert_memory_not_equal(w6.id.b, w6next.id.b, sizeof w6.id.b);
    assert_memory_equal(w4.id.b, wm.id.b, sizeof w4.id.b);
    assert_memory_not_equal(w4.id.b, w6.id.b, sizeof w4.id.b);
    assert_memory_not_equal(w4.id.b, wother.id.b, sizeof w4.id.b);
    assert_int_equal(w4.role, BD_GATE_ROLE_NONE);

    uint64_t now2 = 0;
    bd_err_t err = {0};
    bd_gate_opts_t o = {.rps = 1, .burst = 1};
    bd_gate_t *g = bd_gate_new(&o, fake_clock(&now2), &err);
    assert_non_null(g);
    assert_true(bd_gate_limits_on(g));
    assert_true(bd_gate_take(g, &w4, &retry, &err));
    assert_false(bd_gate_take(g, &wm, &retry, &err)); /* the same address */
    assert_int_equal(err.code, BD_ERATE);
    assert_string_equal(err.msg, "too many requests: this client address is over its rate limit "
                                 "(--rate-limit); retry in 1 s");
    assert_true(bd_gate_take(g, &w6, &retry, &err));
    assert_true(bd_gate_take(g, &wother, &retry, &err));
    bd_gate_free(g);
}

static void test_buckets_are_bounded(void **state)
{
    (void)state;
    uint64_t now = 0;
    /* Four buckets at most, 1 token per second, burst 2. */
    bd_gate_limiter_t *l = bd_gate_limiter_new(1, 2, 4, fake_clock(&now));
    uint64_t retry = 0;
    /* A flood of 1000 callers: the table never holds more than 4. */
    for (int i = 0; i < 1000; i++) {
        bd_gate_id_t id = id_of((uint8_t)(i % 250));
        id.b[5] = (uint8_t)(i / 250);
        assert_true(bd_gate_limiter_take(l, &id, &retry)); /* each new one starts full */
        assert_true(bd_gate_limiter_buckets(l) <= 4);
    }
    assert_int_equal(bd_gate_limiter_buckets(l), 4);
    bd_gate_limiter_free(l);

    /* Eviction takes the least recently used bucket, not one in use. */
    now = 0;
    l = bd_gate_limiter_new(1, 2, 2, fake_clock(&now));
    bd_gate_id_t a = id_of(1), b = id_of(2), c = id_of(3);
    assert_int_equal(take_n(l, &a, 2, &retry), 2); /* a empty */
    now += 10000;
    assert_true(bd_gate_limiter_take(l, &b, &retry)); /* b has 1 left */
    now += 10000;
    assert_false(bd_gate_limiter_take(l, &a, &retry)); /* a used again: b is the oldest */
    assert_true(bd_gate_limiter_take(l, &c, &retry));  /* full table: b gives way */
    assert_int_equal(bd_gate_limiter_buckets(l), 2);
    assert_false(bd_gate_limiter_take(l, &a, &retry)); /* a kept its empty bucket */
    bd_gate_limiter_free(l);

    /* Buckets that refilled completely are dropped as the table is used. */
    now = 0;
    l = bd_gate_limiter_new(10, 2, 100, fake_clock(&now));
    for (uint8_t i = 0; i < 10; i++) {
        bd_gate_id_t id = id_of(i);
        assert_true(bd_gate_limiter_take(l, &id, &retry));
    }
    assert_int_equal(bd_gate_limiter_buckets(l), 10);
    now += 60000; /* 0.6 tokens back: each still has 1.6, under the burst of 2 */
    bd_gate_id_t z = id_of(200);
    assert_true(bd_gate_limiter_take(l, &z, &retry));
    assert_int_equal(bd_gate_limiter_buckets(l), 11);
    now += 1000000;                                   /* everyone is full again */
    assert_true(bd_gate_limiter_take(l, &z, &retry)); /* drops the two oldest */
    assert_int_equal(bd_gate_limiter_buckets(l), 9);
    for (int i = 0; i < 5; i++) {
        now += 200000;
        assert_true(bd_gate_limiter_take(l, &z, &retry)); /* each take drops two idle ones */
    }
    assert_int_equal(bd_gate_limiter_buckets(l), 1); /* z itself, made again */
    bd_gate_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_roles_comments_and_blanks),
        cmocka_unit_test(test_keys_identity_is_the_hash),
        cmocka_unit_test(test_keys_bad_lines),
        cmocka_unit_test(test_keys_empty_file_and_too_many),
        cmocka_unit_test(test_keys_load_file),
        cmocka_unit_test(test_gate_reload),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_query_param),
        cmocka_unit_test(test_parse_rate),
        cmocka_unit_test(test_bucket_burst_and_refill),
        cmocka_unit_test(test_bucket_burst_larger_than_rate),
        cmocka_unit_test(test_bucket_fractional_rate_and_retry_after),
        cmocka_unit_test(test_buckets_are_per_caller),
        cmocka_unit_test(test_buckets_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
