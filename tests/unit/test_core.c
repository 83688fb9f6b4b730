/* test_core: the core helpers every module leans on, checked byte for byte: error messages
 * (set, prefix, truncation at BD_ERR_MSG_MAX), the growable buffer (growth, long printf, JSON
 * string escaping, the error object, steal, out-of-memory state), the arena (16-byte
 * alignment, the byte limit enforced exactly, overflow), checked size arithmetic, whole-file
 * reads (missing file, over the limit), the clock and the random number generator (known first
 * outputs, uniform in [0, 1)).
 *
 * Threads: single-threaded; the log test points stderr at a temporary file for a moment and
 * restores it. Every test frees what it allocates, so the ASan build checks for leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"

/* ---- errors ---------------------------------------------------------------------------- */

static void test_err_set_formats_and_returns_code(void **state)
{
    (void)state;
    bd_err_t err = {0};
    assert_int_equal(bd_err_set(&err, BD_EINVAL, "input '%s' has %d dims", "x", 3), BD_EINVAL);
    assert_int_equal(err.code, BD_EINVAL);
    assert_string_equal(err.msg, "input 'x' has 3 dims");
    /* A NULL err is allowed: the code still comes back. */
    assert_int_equal(bd_err_set(NULL, BD_EFULL, "ignored %d", 1), BD_EFULL);
}

static void test_err_set_truncates_at_msg_max(void **state)
{
    (void)state;
    char big[BD_ERR_MSG_MAX * 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    bd_err_t err;
    memset(&err, 0x55, sizeof err);
    assert_int_equal(bd_err_set(&err, BD_ETOOBIG, "%s", big), BD_ETOOBIG);
    assert_int_equal(err.code, BD_ETOOBIG);
    assert_int_equal(strlen(err.msg), BD_ERR_MSG_MAX - 1);
    assert_int_equal(err.msg[BD_ERR_MSG_MAX - 1], '\0');
    assert_memory_equal(err.msg, big, BD_ERR_MSG_MAX - 1);
}

static void test_err_prefix_keeps_code(void **state)
{
    (void)state;
    bd_err_t err = {0};
    bd_err_set(&err, BD_EBACKEND, "the run failed");
    bd_err_prefix(&err, "model '%s' instance %d: ", "mlp", 2);
    assert_int_equal(err.code, BD_EBACKEND);
    assert_string_equal(err.msg, "model 'mlp' instance 2: the run failed");
    /* Prefixing twice stacks. */
    bd_err_prefix(&err, "load: ");
    assert_string_equal(err.msg, "load: model 'mlp' instance 2: the run failed");
    assert_int_equal(err.code, BD_EBACKEND);
}

/* bd_err_prefix returns nothing: it used to return 0 for a NULL err, so a failure path
 * written `return bd_err_prefix(err, ...)` reported success to a caller that passed no err.
 * Callers now return the code they hold; prefixing NULL is a no-op that must not crash. */
static int fail_with_prefix(bd_err_t *err)
{
    int rc = bd_err_set(err, BD_EBACKEND, "the run failed");
    bd_err_prefix(err, "model '%s': ", "mlp");
    return rc;
}

static void test_err_prefix_null_err_keeps_the_failure(void **state)
{
    (void)state;
    bd_err_prefix(NULL, "x %d: ", 1);
    assert_int_equal(fail_with_prefix(NULL), BD_EBACKEND);
    bd_err_t err = {0};
    assert_int_equal(fail_with_prefix(&err), BD_EBACKEND);
    assert_int_equal(err.code, BD_EBACKEND);
    assert_string_equal(err.msg, "model 'mlp': the run failed");
}

static void test_err_prefix_truncates_at_msg_max(void **state)
{
    (void)state;
    char old[400];
    memset(old, 'o', sizeof old - 1);
    old[sizeof old - 1] = '\0';
    char pre[300];
    memset(pre, 'p', sizeof pre - 1);
    pre[sizeof pre - 1] = '\0';

    /* 299 + 399 bytes: the prefix is whole, the old message is cut to fit 511 bytes. */
    bd_err_t err = {0};
    bd_err_set(&err, BD_EIO, "%s", old);
    bd_err_prefix(&err, "%s", pre);
    assert_int_equal(err.code, BD_EIO);
    assert_int_equal(strlen(err.msg), BD_ERR_MSG_MAX - 1);
    assert_memory_equal(err.msg, pre, 299);
    assert_memory_equal(err.msg + 299, old, BD_ERR_MSG_MAX - 1 - 299);

    /* A prefix longer than the whole message leaves only (the start of) the prefix. */
    char huge[BD_ERR_MSG_MAX + 100];
    memset(huge, 'h', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    bd_err_set(&err, BD_EINVAL, "old");
    bd_err_prefix(&err, "%s", huge);
    assert_int_equal(err.code, BD_EINVAL);
    assert_int_equal(strlen(err.msg), BD_ERR_MSG_MAX - 1);
    assert_memory_equal(err.msg, huge, BD_ERR_MSG_MAX - 1);
    assert_null(strstr(err.msg, "old"));
}

static void test_strerror_names_every_code(void **state)
{
    (void)state;
    assert_string_equal(bd_strerror(BD_OK), "ok");
    assert_string_equal(bd_strerror(BD_EINVAL), "invalid argument");
    assert_string_equal(bd_strerror(BD_ENOTFOUND), "not found");
    assert_string_equal(bd_strerror(BD_ENOPATH), "no such path");
    assert_string_equal(bd_strerror(BD_EMETHOD), "method not allowed");
    assert_string_equal(bd_strerror(BD_EFULL), "queue full");
    assert_string_equal(bd_strerror(BD_ESHUTDOWN), "shutting down");
    assert_string_equal(bd_strerror(BD_EUNAVAIL), "unavailable");
    assert_string_equal(bd_strerror(BD_EBACKEND), "backend error");
    assert_string_equal(bd_strerror(BD_ENOMEM), "out of memory");
    assert_string_equal(bd_strerror(BD_ETOOBIG), "too large");
    assert_string_equal(bd_strerror(BD_EIO), "i/o error");
    assert_string_equal(bd_strerror(BD_EUNSUPPORTED), "unsupported");
    assert_string_equal(bd_strerror(BD_ETIMEOUT), "timed out");
    assert_string_equal(bd_strerror(BD_ECANCELLED), "cancelled");
    assert_string_equal(bd_strerror(BD_EBUSY), "busy");
    assert_string_equal(bd_strerror(BD_EAUTH), "unauthorized");
    assert_string_equal(bd_strerror(BD_EFORBIDDEN), "forbidden");
    assert_string_equal(bd_strerror(BD_ERATE), "rate limited");
    assert_string_equal(bd_strerror(BD_ENOTIMPL), "not implemented");
    assert_string_equal(bd_strerror(-99), "unknown error");
    assert_string_equal(bd_strerror(1), "unknown error");
}

/* ---- buffer ---------------------------------------------------------------------------- */

/* A log field's value: plain names as they are; anything that could read as more fields (a
 * space, '=', '"'), backslashes, bytes outside printable ASCII and the empty string quoted and
 * escaped; a long one cut inside its quotes. */
static void test_log_field(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(bd_log_field(b, sizeof b, "mobilenet_v2", 12), "mobilenet_v2");
    assert_string_equal(bd_log_field(b, sizeof b, "x state=ready", 13), "\"x state=ready\"");
    assert_string_equal(bd_log_field(b, sizeof b, "a\"b\\c", 5), "\"a\\\"b\\\\c\"");
    assert_string_equal(bd_log_field(b, sizeof b, "\xff\n", 2), "\"\\xff\\x0a\"");
    assert_string_equal(bd_log_field(b, sizeof b, "", 0), "\"\"");
    char big[100];
    memset(big, ' ', sizeof big);
    const char *s = bd_log_field(b, sizeof b, big, sizeof big);
    assert_int_equal(strlen(s), 28); /* the quotes and 26 spaces: no room for a 27th and \xNN */
    assert_int_equal(s[0], '"');
    assert_int_equal(s[27], '"');
}

/* A server's text for a terminal: printable text (UTF-8 included) as it is, a cut at a
 * character's boundary marked "..."; anything with a control byte (C0, DEL, C1, bad UTF-8)
 * quoted and escaped whole. */
static void test_text_shown(void **state)
{
    (void)state;
    char b[12];
    assert_true(bd_text_plain("caf\xc3\xa9 ok", 8));
    assert_false(bd_text_plain("a\x1b[2J", 5));
    assert_false(bd_text_plain("a\xc2\x9b", 3)); /* C1 CSI */
    assert_false(bd_text_plain("a\x7f", 2));
    assert_false(bd_text_plain("a\xff", 2));
    assert_string_equal(bd_text_shown(b, sizeof b, "model m", 7), "model m");
    assert_string_equal(bd_text_shown(b, sizeof b, NULL, 0), "?");
    assert_string_equal(bd_text_shown(b, sizeof b, "", 0), "");
    assert_string_equal(bd_text_shown(b, sizeof b, "0123456789ab", 12), "01234567...");
    /* "0123456" then a 2-byte character at 7..8: cut before it, not inside it */
    assert_string_equal(bd_text_shown(b, sizeof b, "0123456\xc3\xa9xyz", 12), "0123456...");
    assert_string_equal(bd_text_shown(b, sizeof b, "a\nb", 3), "\"a\\x0ab\"");
    /* a control byte past what fits is not looked at: the shown part is plain */
    assert_string_equal(bd_text_shown(b, sizeof b, "0123456789ab\x1b", 13), "01234567...");
}

/* Free text (a reason) is quoted even when it is one plain word, its quotes escaped. */
static void test_json_fault(void **state)
{
    (void)state;
    char buf[128];
    assert_string_equal(bd_json_fault(buf, sizeof buf,
                                      "\\u0000 is not allowed without "
                                      "JSON_ALLOW_NUL"),
                        "\\u0000 is not allowed in strings");
    assert_string_equal(bd_json_fault(buf, sizeof buf, "'[' or '{' expected near '\xef\xbb\xbf'"),
                        "a UTF-8 byte order mark (EF BB BF) is not allowed before the JSON");
    assert_string_equal(bd_json_fault(buf, sizeof buf, "unexpected token near 'x'"),
                        "unexpected token near 'x'");
    assert_string_equal(bd_json_fault(buf, 8, "unexpected token"), "unexpec");
}

static void test_log_quoted(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(bd_log_quoted(b, sizeof b, "failed"), "\"failed\"");
    assert_string_equal(bd_log_quoted(b, sizeof b, "unknown key \"x\" in config.json"),
                        "\"unknown key \\\"x\\\" in config.json\"");
    assert_string_equal(bd_log_quoted(b, sizeof b, ""), "\"\"");
}

static void test_buf_grows_by_doubling(void **state)
{
    (void)state;
    bd_buf_t b;
    bd_buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_false(b.failed);

    bd_buf_puts(&b, "ab");
    bd_buf_putc(&b, 'c');
    assert_int_equal(b.len, 3);
    assert_int_equal(b.cap, 256);
    assert_string_equal(b.data, "abc");

    char chunk[1000];
    for (size_t i = 0; i < sizeof chunk; i++) {
        chunk[i] = (char)('a' + i % 26);
    }
    bd_buf_append(&b, chunk, sizeof chunk);
    assert_int_equal(b.len, 1003);
    assert_int_equal(b.cap, 1024); /* 256 -> 512 -> 1024 holds 1003 + NUL */
    assert_memory_equal(b.data, "abc", 3);
    assert_memory_equal(b.data + 3, chunk, sizeof chunk);
    assert_int_equal(b.data[b.len], '\0');

    /* Exactly full (len + NUL == cap) does not grow; one more byte does. */
    bd_buf_append(&b, chunk, 20);
    assert_int_equal(b.len, 1023);
    assert_int_equal(b.cap, 1024);
    bd_buf_putc(&b, 'z');
    assert_int_equal(b.len, 1024);
    assert_int_equal(b.cap, 2048);
    assert_int_equal(b.data[1023], 'z');
    assert_int_equal(b.data[1024], '\0');

    bd_buf_append(&b, NULL, 0); /* a zero-length append is fine */
    assert_int_equal(b.len, 1024);

    bd_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 2048);
    assert_string_equal(b.data, "");
    bd_buf_dispose(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

static void test_buf_printf_longer_than_256(void **state)
{
    (void)state;
    char word[300];
    memset(word, 'w', sizeof word - 1);
    word[sizeof word - 1] = '\0';
    bd_buf_t b;
    bd_buf_init(&b);
    bd_buf_puts(&b, "<");
    bd_buf_printf(&b, "%s|%d|%s", word, 12345, "end");
    assert_false(b.failed);
    size_t want = 1 + 299 + 1 + 5 + 1 + 3;
    assert_int_equal(b.len, want);
    assert_int_equal(strlen(b.data), want);
    assert_int_equal(b.data[0], '<');
    assert_memory_equal(b.data + 1, word, 299);
    assert_string_equal(b.data + 300, "|12345|end");

    /* Short printfs go through the small path and append too. */
    bd_buf_printf(&b, "[%03d]", 7);
    assert_string_equal(b.data + want, "[007]");
    assert_int_equal(b.len, want + 5);

    /* Exactly 256 characters: the first length that does not fit the stack buffer. */
    bd_buf_reset(&b);
    bd_buf_printf(&b, "%.*s", 256,
                  "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
                  "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
                  "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
                  "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
                  "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz");
    assert_int_equal(b.len, 256);
    assert_int_equal(strlen(b.data), 256);
    assert_int_equal(b.data[255], 'v'); /* 255 % 26 == 21 -> 'v' */
    bd_buf_dispose(&b);
}

static void test_buf_json_string_escapes(void **state)
{
    (void)state;
    bd_buf_t b;
    bd_buf_init(&b);
    const char in[] = "a\"b\\c\n\t\r\x01\x1f\x7f/";
    bd_buf_json_string(&b, in, sizeof in - 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\t\\r\\u0001\\u001f\x7f/\"");

    /* UTF-8 passes through byte for byte. */
    bd_buf_reset(&b);
    const char utf8[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    bd_buf_json_string(&b, utf8, sizeof utf8 - 1);
    assert_string_equal(b.data, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");

    /* `n` counts: an embedded NUL is escaped, and nothing past n is read. */
    bd_buf_reset(&b);
    bd_buf_json_string(&b, "x\0y\"zzz", 4);
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.data, "\"x\\u0000y\\\"\"", 13); /* 12 bytes and the NUL */

    bd_buf_reset(&b);
    bd_buf_json_string(&b, "", 0);
    assert_string_equal(b.data, "\"\"");

    /* Every control character below 0x20 is escaped; none passes raw. */
    bd_buf_reset(&b);
    char ctl[32];
    for (int i = 0; i < 32; i++) {
        ctl[i] = (char)i;
    }
    bd_buf_json_string(&b, ctl, sizeof ctl);
    for (size_t i = 0; i < b.len; i++) {
        assert_true((unsigned char)b.data[i] >= 0x20);
    }
    assert_non_null(strstr(b.data, "\\u0000\\u0001"));
    assert_non_null(strstr(b.data, "\\u0008\\t\\n\\u000b\\u000c\\r\\u000e"));

    /* Bytes that do not start valid UTF-8 become U+FFFD, one each: a name cut inside a
     * character, a stray 0xff, an overlong encoding, a lone continuation byte. */
    bd_buf_reset(&b);
    const char bad[] = "caf\xc3 \xff \xc0\xaf \x80 \xe2\x82";
    bd_buf_json_string(&b, bad, sizeof bad - 1);
    assert_string_equal(b.data, "\"caf\\ufffd \\ufffd \\ufffd\\ufffd \\ufffd \\ufffd\\ufffd\"");
    bd_buf_dispose(&b);
}

static void test_buf_json_error_exact_bytes(void **state)
{
    (void)state;
    bd_buf_t b;
    bd_buf_init(&b);
    bd_buf_json_error(&b, "unknown model 'a\"b'\n");
    assert_string_equal(b.data, "{\"error\":\"unknown model 'a\\\"b'\\n\"}");
    assert_int_equal(b.len, strlen("{\"error\":\"unknown model 'a\\\"b'\\n\"}"));
    bd_buf_reset(&b);
    bd_buf_json_error(&b, "");
    assert_string_equal(b.data, "{\"error\":\"\"}");
    bd_buf_dispose(&b);
}

static void test_buf_steal_leaves_it_empty(void **state)
{
    (void)state;
    bd_buf_t b;
    bd_buf_init(&b);
    bd_buf_puts(&b, "hello");
    size_t len = 0;
    char *p = bd_buf_steal(&b, &len);
    assert_non_null(p);
    assert_int_equal(len, 5);
    assert_string_equal(p, "hello");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_false(b.failed);
    /* The buffer is usable again and independent of the stolen bytes. */
    bd_buf_puts(&b, "again");
    assert_string_equal(b.data, "again");
    assert_string_equal(p, "hello");
    free(p);
    bd_buf_dispose(&b);

    /* Stealing an empty buffer gives NULL and 0; len may be NULL. */
    bd_buf_init(&b);
    len = 9;
    assert_null(bd_buf_steal(&b, &len));
    assert_int_equal(len, 0);
    assert_null(bd_buf_steal(&b, NULL));
}

static void test_buf_reserve_overflow_marks_failed(void **state)
{
    (void)state;
    bd_buf_t b;
    bd_buf_init(&b);
    bd_buf_puts(&b, "ok");
    assert_int_equal(bd_buf_reserve(&b, SIZE_MAX), BD_ENOMEM);
    assert_true(b.failed);
    /* Once failed, appends are dropped (the contents are known to be incomplete). */
    bd_buf_puts(&b, "more");
    assert_int_equal(b.len, 2);
    assert_int_equal(bd_buf_reserve(&b, 1), BD_ENOMEM);
    /* reset clears the state. */
    bd_buf_reset(&b);
    assert_false(b.failed);
    bd_buf_puts(&b, "fresh");
    assert_string_equal(b.data, "fresh");
    bd_buf_dispose(&b);
}

/* ---- arena ----------------------------------------------------------------------------- */

static void test_arena_alignment_16(void **state)
{
    (void)state;
    bd_arena_t a;
    bd_arena_init(&a, 0);
    assert_null(a.head);
    assert_int_equal(a.used, 0);
    static const size_t sizes[] = {1, 3, 15, 16, 17, 31, 33, 100, 0, 2047, 2049, 5000, 7, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = bd_arena_alloc(&a, sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xab, sizes[i]); /* the whole size is writable (ASan checks) */
    }
    /* Two consecutive small pieces do not overlap: the second starts 16 bytes on. */
    char *x = bd_arena_alloc(&a, 5);
    char *y = bd_arena_alloc(&a, 5);
    assert_int_equal(y - x, 16);
    bd_arena_dispose(&a);
    assert_null(a.head);
    assert_int_equal(a.used, 0);
}

/* Memory the caller gives is the first chunk: small pieces come from it, a larger one opens
 * a chunk of the arena's own, and dispose frees only that (ASan and LSan check both). */
static void test_arena_init_in_uses_the_given_memory_first(void **state)
{
    (void)state;
    _Alignas(16) unsigned char mem[512];
    bd_arena_t a;
    bd_arena_init_in(&a, 0, mem, sizeof mem);
    assert_int_equal(a.used, sizeof mem);
    unsigned char *p = bd_arena_alloc(&a, 100);
    assert_true(p > mem && p + 100 <= mem + sizeof mem);
    unsigned char *q = bd_arena_alloc(&a, 1000); /* past what is left of mem */
    assert_non_null(q);
    assert_true(q + 1000 <= mem || q >= mem + sizeof mem);
    memset(q, 1, 1000);
    assert_true(a.used > sizeof mem + 1000);
    bd_arena_dispose(&a);
    assert_null(a.head);
    assert_int_equal(a.used, 0);

    /* Not used when misaligned, too small or over the limit: the arena starts empty. */
    bd_arena_init_in(&a, 0, mem + 1, sizeof mem - 1);
    assert_null(a.head);
    bd_arena_init_in(&a, 0, mem, 16);
    assert_null(a.head);
    bd_arena_init_in(&a, 256, mem, sizeof mem);
    assert_null(a.head);
    assert_int_equal(a.limit, 256);
}

static void test_fmt_u64_digits(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        const char *text;
    } cases[] = {
        {0, "0"}, {7, "7"}, {10, "10"}, {602112, "602112"}, {UINT64_MAX, "18446744073709551615"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[24];
        char *end = bd_fmt_u64(buf, cases[i].v);
        assert_int_equal(end - buf, strlen(cases[i].text));
        assert_memory_equal(buf, cases[i].text, strlen(cases[i].text));
    }
}

static void test_arena_limit_below_one_chunk_still_allocates(void **state)
{
    (void)state;
    bd_arena_t a;
    bd_arena_init(&a, 256);
    char *p = bd_arena_alloc(&a, 16);
    assert_non_null(p);
    assert_true(a.used <= 256);
    memset(p, 1, 16);
    assert_null(bd_arena_alloc(&a, 512)); /* past the limit */
    bd_arena_dispose(&a);
}

static void test_arena_limit_is_exact(void **state)
{
    (void)state;
    /* Learn the per-chunk overhead from an unlimited arena: the first small allocation
     * opens one 4096-byte chunk. */
    bd_arena_t probe;
    bd_arena_init(&probe, 0);
    assert_non_null(bd_arena_alloc(&probe, 1));
    assert_true(probe.used > 4096);
    size_t overhead = probe.used - 4096;
    assert_true(overhead <= 64);
    assert_int_equal(overhead % 16, 0);
    bd_arena_dispose(&probe);

    /* Room for exactly one small chunk plus one 8192-byte block. */
    size_t limit = (overhead + 4096) + (overhead + 8192);
    bd_arena_t a;
    bd_arena_init(&a, limit);
    assert_int_equal(a.limit, limit);
    char *small = bd_arena_alloc(&a, 1);
    assert_non_null(small);
    assert_int_equal(a.used, overhead + 4096);

    /* 16 bytes more than fits: refused, and nothing is counted. */
    assert_null(bd_arena_alloc(&a, 8192 + 1));
    assert_int_equal(a.used, overhead + 4096);
    /* A smaller request after the refusal still works, landing exactly on the limit. */
    char *big = bd_arena_alloc(&a, 8192);
    assert_non_null(big);
    memset(big, 1, 8192);
    assert_int_equal(a.used, limit);

    /* The first chunk's free space (4096 - 16) stays usable for small pieces. */
    char *more = bd_arena_alloc(&a, 4096 - 32);
    assert_non_null(more);
    memset(more, 2, 4096 - 32);
    char *last = bd_arena_alloc(&a, 16);
    assert_non_null(last);
    /* Now every chunk is full: even one byte would need a new chunk past the limit. */
    assert_null(bd_arena_alloc(&a, 1));
    assert_int_equal(a.used, limit);
    bd_arena_dispose(&a);
}

static void test_arena_strndup_and_calloc(void **state)
{
    (void)state;
    bd_arena_t a;
    bd_arena_init(&a, 0);
    char *s = bd_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    assert_int_equal((uintptr_t)s % 16, 0);
    char *e = bd_arena_strndup(&a, "abc", 0);
    assert_string_equal(e, "");
    /* Bytes past n are never read, and embedded NULs are copied as they are. */
    char *z = bd_arena_strndup(&a, "a\0b", 3);
    assert_memory_equal(z, "a\0b\0", 4);

    uint64_t *v = bd_arena_calloc(&a, 10, sizeof *v);
    assert_non_null(v);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(v[i], 0);
    }
    /* calloc over memory that held other bytes still zeroes it. */
    unsigned char *big = bd_arena_calloc(&a, 3000, 3);
    assert_non_null(big);
    for (size_t i = 0; i < 9000; i++) {
        assert_int_equal(big[i], 0);
    }
    bd_arena_dispose(&a);
}

static void test_arena_overflow_returns_null(void **state)
{
    (void)state;
    bd_arena_t a;
    bd_arena_init(&a, 0);
    assert_null(bd_arena_calloc(&a, SIZE_MAX / 2 + 1, 2));
    assert_null(bd_arena_calloc(&a, SIZE_MAX, SIZE_MAX));
    assert_null(bd_arena_calloc(&a, (SIZE_MAX >> 4) + 1, 16));
    assert_null(bd_arena_alloc(&a, SIZE_MAX));
    assert_null(bd_arena_alloc(&a, SIZE_MAX - 8));  /* rounding up overflows */
    assert_null(bd_arena_alloc(&a, SIZE_MAX - 40)); /* adding the chunk header overflows */
    assert_null(bd_arena_strndup(&a, "x", SIZE_MAX));
    assert_int_equal(a.used, 0);
    assert_null(a.head);
    /* The arena is fine afterwards. */
    assert_non_null(bd_arena_calloc(&a, 0, 8));
    assert_non_null(bd_arena_alloc(&a, 10));
    bd_arena_dispose(&a);
}

/* ---- checked arithmetic ---------------------------------------------------------------- */

static void test_size_arithmetic_overflow(void **state)
{
    (void)state;
    size_t r = 7;
    assert_true(bd_mul_size(3, 4, &r));
    assert_int_equal(r, 12);
    assert_true(bd_mul_size(SIZE_MAX, 1, &r));
    assert_true(r == SIZE_MAX);
    assert_true(bd_mul_size(SIZE_MAX / 2, 2, &r));
    assert_true(r == SIZE_MAX - 1);
    assert_true(bd_mul_size(0, SIZE_MAX, &r));
    assert_int_equal(r, 0);
    assert_false(bd_mul_size(SIZE_MAX / 2 + 1, 2, &r));
    assert_false(bd_mul_size(SIZE_MAX, 2, &r));
    assert_false(bd_mul_size((size_t)1 << 32, (size_t)1 << 32, &r));

    assert_true(bd_add_size(SIZE_MAX - 1, 1, &r));
    assert_true(r == SIZE_MAX);
    assert_true(bd_add_size(SIZE_MAX, 0, &r));
    assert_false(bd_add_size(SIZE_MAX, 1, &r));
    assert_false(bd_add_size(SIZE_MAX / 2 + 1, SIZE_MAX / 2 + 1, &r));
}

/* ---- files ----------------------------------------------------------------------------- */

static char *write_temp(const char *content, size_t n)
{
    char tmpl[] = "/tmp/bd_test_core.XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    char *p = strdup(tmpl);
    assert_non_null(p);
    return p;
}

/* Write `text` to dir/rel (its folders made first). */
static void put(const char *dir, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_memory_limit_from_cgroups(void **state)
{
    (void)state;
    char dir[] = "/tmp/bd_test_cg_XXXXXX";
    assert_non_null(mkdtemp(dir));
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t ram = (uint64_t)pages * (uint64_t)page;
    char proc[1100], root[1100];
    snprintf(proc, sizeof proc, "%s/cgroup", dir);
    snprintf(root, sizeof root, "%s/fs", dir);
    const char *from = NULL;

    /* Nothing to read: the RAM. */
    assert_int_equal(bd_memory_limit(root, proc, &from), ram);
    assert_string_equal(from, "ram");

    /* v2: the lowest of the cgroup's and its parents' memory.max ("max" is none). */
    put(dir, "cgroup", "0::/a/b\n");
    put(dir, "fs/a/b/memory.max", "max\n");
    put(dir, "fs/a/memory.max", "536870912\n");
    put(dir, "fs/memory.max", "1073741824\n");
    assert_int_equal(bd_memory_limit(root, proc, &from), 536870912);
    assert_string_equal(from, "cgroup");
    put(dir, "fs/a/b/memory.max", "268435456\n");
    assert_int_equal(bd_memory_limit(root, proc, &from), 268435456);

    /* v1: the memory controller's line and memory.limit_in_bytes ("no limit" is 2^63 less a
     * page); a v2 limit beside it still counts. */
    put(dir, "cgroup", "9:pids:/x\n4:cpu,memory:/c/d\n0::/\n");
    put(dir, "fs/memory/c/d/memory.limit_in_bytes", "9223372036854771712\n");
    put(dir, "fs/memory/c/memory.limit_in_bytes", "134217728\n");
    assert_int_equal(bd_memory_limit(root, proc, &from), 134217728);
    assert_string_equal(from, "cgroup");
    put(dir, "fs/memory/c/memory.limit_in_bytes", "9223372036854771712\n");
    assert_int_equal(bd_memory_limit(root, proc, &from), 1073741824); /* fs/memory.max */
    put(dir, "fs/memory.max", "max\n");
    assert_int_equal(bd_memory_limit(root, proc, &from), ram);
    assert_string_equal(from, "ram");

    /* A limit above the RAM is the RAM. */
    put(dir, "fs/memory.max", "1152921504606846975\n");
    assert_int_equal(bd_memory_limit(root, proc, &from), ram);

    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_read_file_missing(void **state)
{
    (void)state;
    bd_err_t err = {0};
    size_t len = 77;
    assert_null(bd_read_file("/nonexistent/bd_test/config.json", 100, &len, &err));
    assert_int_equal(err.code, BD_EIO);
    assert_string_equal(
        err.msg, "cannot open '/nonexistent/bd_test/config.json': No such file or directory");
    assert_int_equal(len, 77);
    assert_null(bd_read_file("/nonexistent/bd_test/config.json", 100, NULL, NULL));
}

static void test_read_file_limit(void **state)
{
    (void)state;
    char data[100];
    for (size_t i = 0; i < sizeof data; i++) {
        data[i] = (char)i; /* including a NUL: the length, not strlen, counts */
    }
    char *path = write_temp(data, sizeof data);

    bd_err_t err = {0};
    size_t len = 0;
    assert_null(bd_read_file(path, 99, &len, &err));
    assert_int_equal(err.code, BD_ETOOBIG);
    char want[256];
    snprintf(want, sizeof want, "file '%s' is larger than 99 bytes", path);
    assert_string_equal(err.msg, want);

    char *got = bd_read_file(path, 100, &len, &err);
    assert_non_null(got);
    assert_int_equal(len, 100);
    assert_memory_equal(got, data, 100);
    assert_int_equal(got[100], '\0');
    free(got);
    unlink(path);
    free(path);

    /* An empty file reads as "" with length 0. */
    path = write_temp("", 0);
    len = 5;
    got = bd_read_file(path, 0, &len, &err);
    assert_non_null(got);
    assert_int_equal(len, 0);
    assert_string_equal(got, "");
    free(got);
    unlink(path);
    free(path);
}

/* ---- clock ----------------------------------------------------------------------------- */

static void test_clock_real_is_monotonic(void **state)
{
    (void)state;
    bd_clock_t c = bd_clock_real();
    assert_non_null(c.now_us);
    uint64_t prev = bd_clock_now(&c);
    assert_true(prev > 0);
    for (int i = 0; i < 10000; i++) {
        uint64_t t = bd_clock_now(&c);
        assert_true(t >= prev);
        prev = t;
    }
    uint64_t t0 = bd_clock_now(&c);
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 2000000};
    nanosleep(&ts, NULL);
    uint64_t t1 = bd_clock_now(&c);
    assert_true(t1 - t0 >= 2000);
    /* The real clock is bd_now_us: both read CLOCK_MONOTONIC in microseconds. */
    uint64_t n = bd_now_us();
    assert_true(n >= t1 && n - t1 < 5000000);
}

/* ---- random numbers -------------------------------------------------------------------- */

/* The generator is xoshiro256** seeded through splitmix64: seeded bench runs and sim fault
 * patterns repeat across builds only if these first outputs never change (computed with an
 * independent implementation of both reference algorithms). */
static void test_rng_known_sequence(void **state)
{
    (void)state;
    static const uint64_t want0[3] = {0x99ec5f36cb75f2b4ULL, 0xbf6e1f784956452aULL,
                                      0x1a5f849d4933e6e0ULL};
    static const uint64_t want42[3] = {0x15780b2e0c2ec716ULL, 0x6104d9866d113a7eULL,
                                       0xae17533239e499a1ULL};
    bd_rng_t a, b;
    bd_rng_seed(&a, 0);
    bd_rng_seed(&b, 42);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(bd_rng_next_u64(&a), want0[i]);
        assert_int_equal(bd_rng_next_u64(&b), want42[i]);
    }
    /* The same seed gives the same sequence; uniform() takes the top 53 bits. */
    bd_rng_seed(&a, 42);
    assert_true(bd_rng_uniform(&a) == (double)(want42[0] >> 11) * 0x1.0p-53);
}

static void test_rng_uniform_in_unit_interval(void **state)
{
    (void)state;
    bd_rng_t r;
    bd_rng_seed(&r, 7);
    enum { N = 100000 };
    int buckets[10] = {0};
    double sum = 0;
    for (int i = 0; i < N; i++) {
        double u = bd_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
        buckets[(int)(u * 10)]++;
    }
    assert_true(sum / N > 0.49 && sum / N < 0.51);
    for (int i = 0; i < 10; i++) {
        assert_in_range(buckets[i], N / 10 - 600, N / 10 + 600);
    }
}

/* ---- logging --------------------------------------------------------------------------- */

/* Run `fn` with stderr pointed at a temp file; return what it wrote (owned). */
static char *capture_stderr(void (*fn)(void))
{
    char tmpl[] = "/tmp/bd_test_core_log.XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    size_t len = 0;
    char *out = bd_read_file(tmpl, 1 << 20, &len, NULL);
    assert_non_null(out);
    unlink(tmpl);
    return out;
}

static void log_some(void)
{
    bd_log_set_level(BD_LOG_WARN);
    BD_INFO("core", "hidden=1");
    BD_DEBUG("core", "hidden=2");
    BD_WARN("core", "event=shown n=%d", 3);
    char long_msg[2000];
    memset(long_msg, 'L', sizeof long_msg - 1);
    long_msg[sizeof long_msg - 1] = '\0';
    BD_ERROR("core", "%s", long_msg);
    bd_log_set_level(BD_LOG_INFO);
}

static void test_log_level_and_line_format(void **state)
{
    (void)state;
    int before = bd_log_level();
    char *out = capture_stderr(log_some);
    bd_log_set_level(before);
    assert_null(strstr(out, "hidden"));
    /* "<time> WARN core event=shown n=3\n", then one ERROR line cut to 1023 bytes + "\n". */
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    assert_int_equal(strlen(out), strlen("2026-01-01T00:00:00.000Z WARN core event=shown n=3"));
    assert_string_equal(out + 24, " WARN core event=shown n=3");
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[23], 'Z');
    char *second = nl + 1;
    assert_int_equal(strlen(second), 1023);
    assert_int_equal(second[1022], '\n');
    assert_memory_equal(second + 24, " ERROR core LLL", 15);
    free(out);
}

static void log_forged(void)
{
    /* What a client could put in a model name: a newline and a fake log line after it. */
    BD_WARN("repo", "model=%s", "x\n2026-01-01T00:00:00.000Z ERROR evil\x01\x7f\t");
}

static void test_log_escapes_control_characters(void **state)
{
    (void)state;
    char *out = capture_stderr(log_forged);
    assert_non_null(strchr(out, '\n'));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1); /* one line */
    assert_string_equal(out + 24, " WARN repo model=x\\x0a2026-01-01T00:00:00.000Z ERROR "
                                  "evil\\x01\\x7f\\x09\n");
    free(out);
}

static void log_utf8(void)
{
    /* Valid UTF-8 is kept; a stray byte, a cut sequence, an overlong form, a surrogate, a code
     * point past U+10FFFF and a C1 control (CSI) are escaped byte by byte. */
    BD_WARN("repo", "model=%s",
            "\xc3\xa9|\xf0\x9f\x98\x80|\xff|\xc3|\xe0\x80\xaf|\xed\xa0\x80|"
            "\xf4\x90\x80\x80|\xc2\x9b|\xc2\xa0");
}

static void test_log_escapes_invalid_utf8(void **state)
{
    (void)state;
    char *out = capture_stderr(log_utf8);
    assert_string_equal(out + 24, " WARN repo model=\xc3\xa9|\xf0\x9f\x98\x80|\\xff|\\xc3|"
                                  "\\xe0\\x80\\xaf|\\xed\\xa0\\x80|\\xf4\\x90\\x80\\x80|"
                                  "\\xc2\\x9b|\xc2\xa0\n");
    free(out);
}

static void test_hex_digits(void **state)
{
    (void)state;
    assert_int_equal(bd_hex_digit('0'), 0);
    assert_int_equal(bd_hex_digit('9'), 9);
    assert_int_equal(bd_hex_digit('a'), 10);
    assert_int_equal(bd_hex_digit('F'), 15);
    assert_int_equal(bd_hex_digit('g'), -1);
    assert_int_equal(bd_hex_digit('/'), -1);
    assert_int_equal(bd_hex4("00e9"), 0xe9);
    assert_int_equal(bd_hex4("D83D"), 0xd83d);
    assert_int_equal(bd_hex4("ffff"), 0xffff);
    assert_int_equal(bd_hex4("12x4"), -1);
}

/* Every byte bd_pct_byte yields from s, then how far it moved: "%41b%2" gives 'A', 'b', -1
 * (a '%' with one digit), '2'. */
static void test_pct_bytes(void **state)
{
    (void)state;
    const char s[] = "%41b+%2";
    const char *p = s, *end = s + sizeof s - 1;
    int want[] = {'A', 'b', '+', -1, '2'};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_true(p < end);
        assert_int_equal(bd_pct_byte(&p, end), want[i]);
    }
    assert_ptr_equal(p, end);
    /* An escape cut by the end is not read past it, and %00 is the byte 0. */
    const char t[] = "%4%00";
    p = t;
    assert_int_equal(bd_pct_byte(&p, t + 2), -1);
    assert_ptr_equal(p, t + 1);
    p = t + 2;
    assert_int_equal(bd_pct_byte(&p, t + 5), 0);
    assert_ptr_equal(p, t + 5);
    p = t + 2;
    assert_int_equal(bd_pct_byte(&p, t + 4), -1); /* "%0" at the end */
}

/* A query's pairs as sent, a raw '=' ending the name; names compared decoded. */
static void test_query_pairs(void **state)
{
    (void)state;
    const char q[] = "a=1&b&c%3Dd=x=y&&";
    size_t pos = 0, nl, vl;
    const char *name, *value;
    assert_true(bd_query_pair(q, strlen(q), &pos, &name, &nl, &value, &vl));
    assert_true(nl == 1 && name[0] == 'a' && vl == 1 && value[0] == '1');
    assert_true(bd_query_pair(q, strlen(q), &pos, &name, &nl, &value, &vl));
    assert_true(nl == 1 && name[0] == 'b' && value == NULL);
    assert_true(bd_query_pair(q, strlen(q), &pos, &name, &nl, &value, &vl));
    assert_true(nl == 5 && memcmp(name, "c%3Dd", 5) == 0);
    assert_true(vl == 3 && memcmp(value, "x=y", 3) == 0);
    assert_true(bd_query_pair(q, strlen(q), &pos, &name, &nl, &value, &vl));
    assert_true(nl == 0 && value == NULL); /* "&&" */
    assert_false(bd_query_pair(q, strlen(q), &pos, &name, &nl, &value, &vl));
    pos = 0;
    assert_false(bd_query_pair("", 0, &pos, &name, &nl, &value, &vl));
    assert_true(bd_pct_equal("c%3Dd", 5, "c=d"));
    assert_true(bd_pct_equal("classific%61tion", 16, "classification"));
    assert_false(bd_pct_equal("classificatio", 13, "classification"));
    assert_false(bd_pct_equal("classificationx", 15, "classification"));
    assert_false(bd_pct_equal("%zz", 3, "%zz"));
    assert_true(bd_pct_equal("", 0, ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_formats_and_returns_code),
        cmocka_unit_test(test_err_set_truncates_at_msg_max),
        cmocka_unit_test(test_err_prefix_keeps_code),
        cmocka_unit_test(test_err_prefix_null_err_keeps_the_failure),
        cmocka_unit_test(test_err_prefix_truncates_at_msg_max),
        cmocka_unit_test(test_strerror_names_every_code),
        cmocka_unit_test(test_log_field),
        cmocka_unit_test(test_text_shown),
        cmocka_unit_test(test_log_quoted),
        cmocka_unit_test(test_json_fault),
        cmocka_unit_test(test_buf_grows_by_doubling),
        cmocka_unit_test(test_buf_printf_longer_than_256),
        cmocka_unit_test(test_buf_json_string_escapes),
        cmocka_unit_test(test_buf_json_error_exact_bytes),
        cmocka_unit_test(test_buf_steal_leaves_it_empty),
        cmocka_unit_test(test_buf_reserve_overflow_marks_failed),
        cmocka_unit_test(test_arena_alignment_16),
        cmocka_unit_test(test_arena_limit_is_exact),
        cmocka_unit_test(test_arena_limit_below_one_chunk_still_allocates),
        cmocka_unit_test(test_arena_init_in_uses_the_given_memory_first),
        cmocka_unit_test(test_fmt_u64_digits),
        cmocka_unit_test(test_arena_strndup_and_calloc),
        cmocka_unit_test(test_arena_overflow_returns_null),
        cmocka_unit_test(test_size_arithmetic_overflow),
        cmocka_unit_test(test_memory_limit_from_cgroups),
        cmocka_unit_test(test_read_file_missing),
        cmocka_unit_test(test_read_file_limit),
        cmocka_unit_test(test_clock_real_is_monotonic),
        cmocka_unit_test(test_rng_known_sequence),
        cmocka_unit_test(test_rng_uniform_in_unit_interval),
        cmocka_unit_test(test_log_level_and_line_format),
        cmocka_unit_test(test_log_escapes_control_characters),
        cmocka_unit_test(test_log_escapes_invalid_utf8),
        cmocka_unit_test(test_hex_digits),
        cmocka_unit_test(test_pct_bytes),
        cmocka_unit_test(test_query_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
