/* test_zip: content codings (src/zip). Compressed inputs are made with zlib itself, as the
 * RFCs describe them (gzip: RFC 1952; deflate: the zlib format, RFC 1950; raw deflate, RFC
 * 1951), not with the code under test; what bd_zip_deflate writes is read back with zlib.
 * Checked: exact round trips, the limit (stops one byte past it, never allocates more,
 * resumes), the input budget (empty stored blocks), corrupt, truncated and trailing bytes,
 * multi-member gzip and its cap, and the parsing of Content-Encoding and Accept-Encoding
 * (q-values, "*", identity).
 *
 * Threads: single-threaded. Every test frees what it allocates, so the ASan build checks for
 * leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "zip/zip.h"

/* ---- inputs made with zlib -------------------------------------------------------------- */

/* `in` compressed by zlib with windowBits `bits` (31: gzip, 15: zlib, -15: raw); owned. */
static unsigned char *zlib_compress(const void *in, size_t len, int bits, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, len) + 64;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

/* `in` inflated by zlib with windowBits `bits`; owned. */
static unsigned char *zlib_inflate(const void *in, size_t len, int bits, size_t max,
                                   size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(inflateInit2(&zs, bits), Z_OK);
    unsigned char *out = malloc(max);
    assert_non_null(out);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)max;
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    assert_int_equal(zs.avail_in, 0);
    *out_len = max - zs.avail_out;
    inflateEnd(&zs);
    return out;
}

/* Some text that compresses, n bytes. */
static char *sample(size_t n)
{
    char *s = malloc(n);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        s[i] = "{\"data\":[1.5, 2.25, -3.0]}"[i % 26] + (char)(i / 4096 % 3);
    }
    return s;
}

/* ---- inflating ---------------------------------------------------------------------------- */

static void check_round_trip(int bits, bd_zip_coding_t coding)
{
    size_t n = 300000, zlen = 0;
    char *plain = sample(n);
    unsigned char *z = zlib_compress(plain, n, bits, &zlen);
    bd_buf_t out;
    bd_buf_init(&out);
    bd_err_t err = {0};
    assert_int_equal(bd_zip_inflate(coding, z, zlen, n, &out, &err), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, plain, n);
    assert_true(out.cap <= n + 1);
    bd_buf_dispose(&out);
    free(z);
    free(plain);
}

static void test_inflate_gzip_exact(void **state)
{
    (void)state;
    check_round_trip(16 + MAX_WBITS, BD_ZIP_GZIP);
}

static void test_inflate_deflate_zlib_format_exact(void **state)
{
    (void)state;
    check_round_trip(MAX_WBITS, BD_ZIP_DEFLATE);
}

static void test_inflate_deflate_raw_stream_exact(void **state)
{
    (void)state;
    check_round_trip(-MAX_WBITS, BD_ZIP_DEFLATE);
}

static void test_inflate_appends_to_what_out_holds(void **state)
{
    (void)state;
    size_t zlen = 0;
    unsigned char *z = zlib_compress("world", 5, 16 + MAX_WBITS, &zlen);
    bd_buf_t out;
    bd_buf_init(&out);
    bd_buf_puts(&out, "hello ");
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, z, zlen, 100, &out, NULL), 0);
    assert_string_equal(out.data, "hello world");
    bd_buf_dispose(&out);
    free(z);
}

static void test_inflate_stops_one_byte_past_the_limit(void **state)
{
    (void)state;
    size_t n = 10u << 20, zlen = 0; /* 10 MiB of zeros: a ~10 KB zip bomb */
    char *zeros = calloc(1, n);
    unsigned char *z = zlib_compress(zeros, n, 16 + MAX_WBITS, &zlen);
    assert_true(zlen < 20000);
    bd_buf_t out;
    bd_buf_init(&out);
    bd_err_t err = {0};
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, z, zlen, 100000, &out, &err), BD_ETOOBIG);
    assert_int_equal(out.len, 100001);
    assert_true(out.cap <= 100001); /* never more than the limit + 1 byte */
    assert_non_null(strstr(err.msg, "more than 100000 bytes"));
    bd_buf_dispose(&out);
    free(z);
    free(zeros);
}

static void test_inflate_exactly_at_the_limit_is_fine(void **state)
{
    (void)state;
    size_t n = 5000, zlen = 0;
    char *plain = sample(n);
    unsigned char *z = zlib_compress(plain, n, MAX_WBITS, &zlen);
    bd_buf_t out;
    bd_buf_init(&out);
    assert_int_equal(bd_zip_inflate(BD_ZIP_DEFLATE, z, zlen, n, &out, NULL), 0);
    assert_int_equal(out.len, n);
    bd_buf_reset(&out);
    assert_int_equal(bd_zip_inflate(BD_ZIP_DEFLATE, z, zlen, n - 1, &out, NULL), BD_ETOOBIG);
    assert_int_equal(out.len, n);
    bd_buf_dispose(&out);
    free(z);
    free(plain);
}

static void test_reader_resumes_with_a_larger_limit(void **state)
{
    (void)state;
    size_t n = 3u << 20, zlen = 0;
    char *plain = sample(n);
    unsigned char *z = zlib_compress(plain, n, 16 + MAX_WBITS, &zlen);
    bd_zip_reader_t *r = bd_zip_reader_new(BD_ZIP_GZIP, z, zlen);
    assert_non_null(r);
    bd_buf_t out;
    bd_buf_init(&out);
    size_t limit = 1000;
    int rc, steps = 0;
    while ((rc = bd_zip_read(r, &out, limit, SIZE_MAX, NULL)) == BD_ETOOBIG) {
        assert_int_equal(out.len, limit + 1);
        assert_true(out.cap <= limit + 1);
        limit += 1u << 20;
        steps++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(steps, 3);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, plain, n);
    assert_int_equal(bd_zip_read_in(r), zlen);
    assert_int_equal(bd_zip_read(r, &out, limit, SIZE_MAX, NULL), 0); /* ended: stays ended */
    assert_int_equal(out.len, n);
    bd_zip_reader_free(r);
    bd_buf_dispose(&out);
    free(z);
    free(plain);
}

static void test_inflate_corrupt_is_einval(void **state)
{
    (void)state;
    size_t n = 20000, zlen = 0;
    char *plain = sample(n);
    unsigned char *z = zlib_compress(plain, n, 16 + MAX_WBITS, &zlen);
    bd_buf_t out;
    bd_buf_init(&out);
    bd_err_t err = {0};
    z[0] = 0x1e; /* not the gzip magic */
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, z, zlen, n, &out, &err), BD_EINVAL);
    assert_int_equal(err.code, BD_EINVAL);
    assert_string_equal(err.msg, "the gzip request body is corrupt (incorrect header check)");
    z[0] = 0x1f;
    z[zlen - 6] ^= 0xff; /* the CRC-32 in the trailer */
    bd_buf_reset(&out);
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, z, zlen, n, &out, &err), BD_EINVAL);
    assert_string_equal(err.msg, "the gzip request body is corrupt (incorrect data check)");
    /* a gzip body sent as deflate */
    z[zlen - 6] ^= 0xff;
    bd_buf_reset(&out);
    assert_int_equal(bd_zip_inflate(BD_ZIP_DEFLATE, z, zlen, n, &out, &err), BD_EINVAL);
    assert_non_null(strstr(err.msg, "the deflate request body is corrupt ("));
    bd_buf_dispose(&out);
    free(z);
    free(plain);
}

static void test_inflate_truncated_is_einval(void **state)
{
    (void)state;
    size_t n = 20000, zlen = 0;
    char *plain = sample(n);
    unsigned char *z = zlib_compress(plain, n, MAX_WBITS, &zlen);
    bd_buf_t out;
    bd_buf_init(&out);
    bd_err_t err = {0};
    size_t cuts[] = {0, 1, 2, zlen / 2, zlen - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        bd_buf_reset(&out);
        assert_int_equal(bd_zip_inflate(BD_ZIP_DEFLATE, z, cuts[i], n, &out, &err), BD_EINVAL);
        assert_string_equal(err.msg, "the deflate request body is truncated: it ends before its "
                                     "compressed data does");
    }
    bd_buf_dispose(&out);
    free(z);
    free(plain);
}

static void test_inflate_trailing_bytes_are_einval(void **state)
{
    (void)state;
    size_t zlen = 0;
    unsigned char *z = zlib_compress("{}", 2, MAX_WBITS, &zlen);
    unsigned char *more = malloc(zlen + 3);
    memcpy(more, z, zlen);
    memcpy(more + zlen, "abc", 3);
    bd_buf_t out;
    bd_buf_init(&out);
    bd_err_t err = {0};
    assert_int_equal(bd_zip_inflate(BD_ZIP_DEFLATE, more, zlen + 3, 100, &out, &err), BD_EINVAL);
    assert_string_equal(
        err.msg, "the deflate request body has 3 bytes after the end of its compressed data");
    bd_buf_dispose(&out);
    free(more);
    free(z);
}

static void test_inflate_gzip_members_concatenate(void **state)
{
    (void)state;
    size_t alen = 0, blen = 0;
    unsigned char *a = zlib_compress("hello ", 6, 16 + MAX_WBITS, &alen);
    unsigned char *b = zlib_compress("world", 5, 16 + MAX_WBITS, &blen);
    unsigned char *both = malloc(alen + blen);
    memcpy(both, a, alen);
    memcpy(both + alen, b, blen);
    bd_buf_t out;
    bd_buf_init(&out);
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, both, alen + blen, 100, &out, NULL), 0);
    assert_int_equal(out.len, 11);
    assert_memory_equal(out.data, "hello world", 11);
    bd_buf_dispose(&out);
    free(both);
    free(b);
    free(a);
}

/* A zlib-format stream (RFC 1950) of `blocks` empty non-final stored blocks (RFC 1951 §3.2.4:
 * a 3-bit header padded to a byte, LEN 0, NLEN 0xffff) and a final stored block holding
 * `data`, made by hand: zlib itself never writes empty blocks. Owned. */
static unsigned char *empty_stored_blocks(size_t blocks, const char *data, size_t *out_len)
{
    size_t n = strlen(data);
    size_t len = 2 + blocks * 5 + 5 + n + 4;
    unsigned char *z = malloc(len), *p = z;
    assert_non_null(z);
    *p++ = 0x78;
    *p++ = 0x01;
    for (size_t i = 0; i < blocks; i++, p += 5) {
        memcpy(p, "\x00\x00\x00\xff\xff", 5);
    }
    *p++ = 0x01; /* BFINAL, stored */
    *p++ = (unsigned char)(n & 0xff);
    *p++ = (unsigned char)(n >> 8);
    *p++ = (unsigned char)(~n & 0xff);
    *p++ = (unsigned char)((~n >> 8) & 0xff);
    memcpy(p, data, n);
    p += n;
    uLong a = adler32(adler32(0, Z_NULL, 0), (const Bytef *)data, (uInt)n);
    *p++ = (unsigned char)(a >> 24);
    *p++ = (unsigned char)(a >> 16);
    *p++ = (unsigned char)(a >> 8);
    *p++ = (unsigned char)a;
    *out_len = (size_t)(p - z);
    return z;
}

static void test_reader_stops_at_its_input_budget(void **state)
{
    (void)state;
    size_t zlen = 0;
    unsigned char *z = empty_stored_blocks(200000, "{\"a\": 1}", &zlen); /* ~1 MB */
    bd_zip_reader_t *r = bd_zip_reader_new(BD_ZIP_DEFLATE, z, zlen);
    assert_non_null(r);
    bd_buf_t out;
    bd_buf_init(&out);
    size_t budget = 64 * 1024, before = 0;
    int rc, calls = 0;
    /* The output limit alone never stops this stream: it inflates to 8 bytes. */
    while ((rc = bd_zip_read(r, &out, 100, budget, NULL)) == BD_ZIP_PAUSED) {
        size_t in = bd_zip_read_in(r);
        assert_true(in > before && in - before <= budget);
        assert_int_equal(out.len, 0);
        before = in;
        calls++;
    }
    assert_int_equal(rc, 0);
    assert_true(calls >= (int)(zlen / budget) - 1 && calls <= (int)(zlen / budget) + 1);
    assert_int_equal(out.len, 8);
    assert_memory_equal(out.data, "{\"a\": 1}", 8);
    assert_int_equal(bd_zip_read_in(r), zlen);
    bd_zip_reader_free(r);
    /* Without a budget it is one call, as bd_zip_inflate is. */
    bd_buf_reset(&out);
    assert_int_equal(bd_zip_inflate(BD_ZIP_DEFLATE, z, zlen, 100, &out, NULL), 0);
    assert_int_equal(out.len, 8);
    bd_buf_dispose(&out);
    free(z);
}

static void test_input_budget_and_output_limit_resume_together(void **state)
{
    (void)state;
    size_t n = 3u << 20, zlen = 0;
    char *plain = sample(n);
    unsigned char *z = zlib_compress(plain, n, MAX_WBITS, &zlen);
    bd_zip_reader_t *r = bd_zip_reader_new(BD_ZIP_DEFLATE, z, zlen);
    assert_non_null(r);
    bd_buf_t out;
    bd_buf_init(&out);
    size_t limit = 1u << 20, budget = zlen / 16;
    int rc, paused = 0, toobig = 0;
    while ((rc = bd_zip_read(r, &out, limit, budget, NULL)) == BD_ZIP_PAUSED || rc == BD_ETOOBIG) {
        if (rc == BD_ETOOBIG) {
            assert_int_equal(out.len, limit + 1);
            limit += 1u << 20;
            toobig++;
        } else {
            assert_true(out.len <= limit);
            paused++;
        }
    }
    assert_int_equal(rc, 0);
    assert_true(paused > 0 && toobig > 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, plain, n);
    bd_zip_reader_free(r);
    bd_buf_dispose(&out);
    free(z);
    free(plain);
}

/* `count` gzip members: count - 1 empty ones, then one holding "x". Owned. */
static unsigned char *gzip_members(size_t count, size_t *out_len)
{
    size_t elen = 0, xlen = 0;
    unsigned char *e = zlib_compress("", 0, 16 + MAX_WBITS, &elen);
    unsigned char *x = zlib_compress("x", 1, 16 + MAX_WBITS, &xlen);
    unsigned char *all = malloc((count - 1) * elen + xlen);
    assert_non_null(all);
    for (size_t i = 0; i + 1 < count; i++) {
        memcpy(all + i * elen, e, elen);
    }
    memcpy(all + (count - 1) * elen, x, xlen);
    *out_len = (count - 1) * elen + xlen;
    free(x);
    free(e);
    return all;
}

static void test_gzip_members_are_capped(void **state)
{
    (void)state;
    size_t len = 0;
    bd_buf_t out;
    bd_buf_init(&out);
    unsigned char *ok = gzip_members(BD_ZIP_MAX_MEMBERS, &len);
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, ok, len, 100, &out, NULL), 0);
    assert_int_equal(out.len, 1);
    assert_memory_equal(out.data, "x", 1);
    free(ok);
    bd_buf_reset(&out);
    bd_err_t err = {0};
    unsigned char *many = gzip_members(BD_ZIP_MAX_MEMBERS + 1, &len);
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, many, len, 100, &out, &err), BD_EINVAL);
    assert_string_equal(err.msg, "the gzip request body has more than 64 members; the server "
                                 "takes at most 64 (a gzip client sends one)");
    free(many);
    bd_buf_dispose(&out);
}

static void test_body_too_large_sentence(void **state)
{
    (void)state;
    bd_err_t err = {0};
    assert_int_equal(bd_zip_body_too_large(BD_ZIP_DEFLATE, 4096, "these bodies", &err),
                     BD_EBODYSIZE);
    assert_int_equal(err.code, BD_EBODYSIZE);
    assert_string_equal(err.msg, "the deflate request body inflates to more than 4096 bytes, "
                                 "the limit for these bodies");
}

static void test_inflate_empty_stream_gives_nothing(void **state)
{
    (void)state;
    size_t zlen = 0;
    unsigned char *z = zlib_compress("", 0, 16 + MAX_WBITS, &zlen);
    bd_buf_t out;
    bd_buf_init(&out);
    assert_int_equal(bd_zip_inflate(BD_ZIP_GZIP, z, zlen, 100, &out, NULL), 0);
    assert_int_equal(out.len, 0);
    bd_buf_dispose(&out);
    free(z);
}

/* ---- deflating ---------------------------------------------------------------------------- */

static void test_deflate_is_read_back_by_zlib(void **state)
{
    (void)state;
    size_t n = 200000;
    char *plain = sample(n);
    bd_zip_coding_t codings[] = {BD_ZIP_GZIP, BD_ZIP_DEFLATE};
    int bits[] = {16 + MAX_WBITS, MAX_WBITS};
    for (int i = 0; i < 2; i++) {
        bd_buf_t out;
        bd_buf_init(&out);
        assert_int_equal(bd_zip_deflate(codings[i], plain, n, &out, NULL), 0);
        assert_true(out.len < n / 4);
        if (codings[i] == BD_ZIP_GZIP) {
            assert_int_equal((unsigned char)out.data[0], 0x1f);
            assert_int_equal((unsigned char)out.data[1], 0x8b);
        } else {
            assert_int_equal(((unsigned char)out.data[0] << 8 | (unsigned char)out.data[1]) % 31,
                             0);
        }
        size_t back_len = 0;
        unsigned char *back = zlib_inflate(out.data, out.len, bits[i], n + 1, &back_len);
        assert_int_equal(back_len, n);
        assert_memory_equal(back, plain, n);
        free(back);
        bd_buf_dispose(&out);
    }
    free(plain);
}

static void test_deflate_empty_input(void **state)
{
    (void)state;
    bd_buf_t out;
    bd_buf_init(&out);
    assert_int_equal(bd_zip_deflate(BD_ZIP_GZIP, "", 0, &out, NULL), 0);
    size_t back_len = 1;
    unsigned char *back = zlib_inflate(out.data, out.len, 16 + MAX_WBITS, 1, &back_len);
    assert_int_equal(back_len, 0);
    free(back);
    bd_buf_dispose(&out);
}

/* ---- headers ------------------------------------------------------------------------------ */

static bd_zip_coding_t content(const char *v, int want_rc)
{
    bd_zip_coding_t c = (bd_zip_coding_t)99;
    bd_err_t err = {0};
    assert_int_equal(bd_zip_content_encoding(v, strlen(v), &c, &err), want_rc);
    return c;
}

static void test_content_encoding_values(void **state)
{
    (void)state;
    assert_int_equal(content("gzip", 0), BD_ZIP_GZIP);
    assert_int_equal(content("x-gzip", 0), BD_ZIP_GZIP);
    assert_int_equal(content("GZip", 0), BD_ZIP_GZIP);
    assert_int_equal(content("deflate", 0), BD_ZIP_DEFLATE);
    assert_int_equal(content(" deflate\t", 0), BD_ZIP_DEFLATE);
    assert_int_equal(content("identity", 0), BD_ZIP_IDENTITY);
    assert_int_equal(content("", 0), BD_ZIP_IDENTITY);
    assert_int_equal(content("identity, gzip", 0), BD_ZIP_GZIP);
    assert_int_equal(content("gzip,", 0), BD_ZIP_GZIP);
    content("br", BD_ECODING);
    content("compress", BD_ECODING);
    content("gzip, deflate", BD_ECODING);
    content("gzip, gzip", BD_ECODING);
    content("gzip;q=1", BD_ECODING);
    bd_zip_coding_t c;
    bd_err_t err = {0};
    assert_int_equal(bd_zip_content_encoding("br", 2, &c, &err), BD_ECODING);
    assert_string_equal(err.msg, "Content-Encoding 'br' is not supported; the server accepts "
                                 "request bodies as gzip, deflate or identity");
}

static bd_zip_coding_t accept(const char *v)
{
    return bd_zip_accept(v, strlen(v));
}

static void test_accept_encoding_values(void **state)
{
    (void)state;
    assert_int_equal(accept("gzip"), BD_ZIP_GZIP);
    assert_int_equal(accept("x-gzip"), BD_ZIP_GZIP);
    assert_int_equal(accept("deflate"), BD_ZIP_DEFLATE);
    assert_int_equal(accept("gzip, deflate"), BD_ZIP_GZIP);
    assert_int_equal(accept("deflate, gzip"), BD_ZIP_GZIP); /* equal q: gzip */
    assert_int_equal(accept("gzip, deflate, br, zstd"), BD_ZIP_GZIP);
    assert_int_equal(accept("deflate, gzip;q=0.5"), BD_ZIP_DEFLATE);
    assert_int_equal(accept("deflate;q=1.0, gzip;q=0.999"), BD_ZIP_DEFLATE);
    assert_int_equal(accept("gzip;q=0, deflate"), BD_ZIP_DEFLATE);
    assert_int_equal(accept("gzip; q=0 , deflate ; q=0.2"), BD_ZIP_DEFLATE);
    assert_int_equal(accept("GZIP;Q=1"), BD_ZIP_GZIP);
    assert_int_equal(accept("*"), BD_ZIP_GZIP);
    assert_int_equal(accept("*;q=0.3"), BD_ZIP_GZIP);
    assert_int_equal(accept("gzip;q=0, *"), BD_ZIP_DEFLATE);
    assert_int_equal(accept("gzip;q=0, deflate;q=0, *"), BD_ZIP_IDENTITY);
    assert_int_equal(accept("*;q=0"), BD_ZIP_IDENTITY);
    assert_int_equal(accept("gzip;q=0"), BD_ZIP_IDENTITY);
    assert_int_equal(accept("identity"), BD_ZIP_IDENTITY);
    assert_int_equal(accept("br"), BD_ZIP_IDENTITY);
    assert_int_equal(accept(""), BD_ZIP_IDENTITY);
    assert_int_equal(accept("identity;q=1, gzip;q=0.5"), BD_ZIP_IDENTITY);
    assert_int_equal(accept("identity;q=0.5, gzip;q=0.5"), BD_ZIP_GZIP);
    assert_int_equal(accept("identity;q=0, gzip;q=0.1"), BD_ZIP_GZIP);
    /* malformed q-values: the element is ignored */
    assert_int_equal(accept("gzip;q=2"), BD_ZIP_IDENTITY);
    assert_int_equal(accept("gzip;q=abc, deflate"), BD_ZIP_DEFLATE);
    assert_int_equal(accept("gzip;q=0.1234"), BD_ZIP_IDENTITY);
    assert_int_equal(accept("gzip;q="), BD_ZIP_IDENTITY);
    /* other parameters do not matter */
    assert_int_equal(accept("gzip;level=9"), BD_ZIP_GZIP);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(bd_zip_name(BD_ZIP_GZIP), "gzip");
    assert_string_equal(bd_zip_name(BD_ZIP_DEFLATE), "deflate");
    assert_string_equal(bd_zip_name(BD_ZIP_IDENTITY), "identity");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inflate_gzip_exact),
        cmocka_unit_test(test_inflate_deflate_zlib_format_exact),
        cmocka_unit_test(test_inflate_deflate_raw_stream_exact),
        cmocka_unit_test(test_inflate_appends_to_what_out_holds),
        cmocka_unit_test(test_inflate_stops_one_byte_past_the_limit),
        cmocka_unit_test(test_inflate_exactly_at_the_limit_is_fine),
        cmocka_unit_test(test_reader_resumes_with_a_larger_limit),
        cmocka_unit_test(test_inflate_corrupt_is_einval),
        cmocka_unit_test(test_inflate_truncated_is_einval),
        cmocka_unit_test(test_inflate_trailing_bytes_are_einval),
        cmocka_unit_test(test_inflate_gzip_members_concatenate),
        cmocka_unit_test(test_reader_stops_at_its_input_budget),
        cmocka_unit_test(test_input_budget_and_output_limit_resume_together),
        cmocka_unit_test(test_gzip_members_are_capped),
        cmocka_unit_test(test_body_too_large_sentence),
        cmocka_unit_test(test_inflate_empty_stream_gives_nothing),
        cmocka_unit_test(test_deflate_is_read_back_by_zlib),
        cmocka_unit_test(test_deflate_empty_input),
        cmocka_unit_test(test_content_encoding_values),
        cmocka_unit_test(test_accept_encoding_values),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
