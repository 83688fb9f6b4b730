/* test_image: the pieces of src/image that can be checked by hand: Pillow's bilinear resize
 * coefficients for a 2x shrink and a 2x enlargement (computed on paper below), base64, and
 * the header probe's refusals (magic, empty, truncated, oversized, CMYK) with their
 * sentences. Pixel results against Pillow itself are in tests/e2e/test_images.py.
 * Single-threaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

/* 4 -> 2: scale 2, support 2 (widened), kernel 5. Output 0 centres at 1.0 and spans inputs
 * 0..2 with raw weights 0.75, 0.75, 0.25 (at distances 0.25, 0.25, 0.75 after scaling by
 * 1/2), i.e. 3/7, 3/7, 1/7; output 1 mirrors it over inputs 1..3. In 22-bit fixed point,
 * rounded: 3/7 -> 1797559, 1/7 -> 599186. */
static void test_coeffs_shrink_by_two(void **state)
{
    (void)state;
    int bounds[4];
    int ks = 0;
    int32_t *k = bd_image_coeffs(4, 2, 0, 2, bounds, &ks);
    assert_non_null(k);
    assert_int_equal(ks, 5);
    assert_int_equal(bounds[0], 0);
    assert_int_equal(bounds[1], 3);
    assert_int_equal(bounds[2], 1);
    assert_int_equal(bounds[3], 3);
    assert_int_equal(k[0], 1797559);
    assert_int_equal(k[1], 1797559);
    assert_int_equal(k[2], 599186);
    assert_int_equal(k[3], 0);
    assert_int_equal(k[5], 599186);
    assert_int_equal(k[6], 1797559);
    assert_int_equal(k[7], 1797559);
    free(k);
}

/* 2 -> 4: scale 1/2, support 1, kernel 3. Output 0 centres at 0.25: only input 0 is in the
 * window (weight 1 after normalizing); output 1 centres at 0.75: inputs 0 and 1 at distances
 * 0.25 and 0.75, weights 0.75 and 0.25 (3145728 and 1048576 of 2^22). */
static void test_coeffs_enlarge_by_two(void **state)
{
    (void)state;
    int bounds[8];
    int ks = 0;
    int32_t *k = bd_image_coeffs(2, 4, 0, 4, bounds, &ks);
    assert_non_null(k);
    assert_int_equal(ks, 3);
    assert_int_equal(bounds[0], 0);
    assert_int_equal(bounds[1], 1);
    assert_int_equal(k[0], 1 << 22);
    assert_int_equal(bounds[2], 0);
    assert_int_equal(bounds[3], 2);
    assert_int_equal(k[3], 3145728);
    assert_int_equal(k[4], 1048576);
    /* The last output mirrors the first. */
    assert_int_equal(bounds[6], 1);
    assert_int_equal(bounds[7], 1);
    assert_int_equal(k[9], 1 << 22);
    free(k);
}

/* A window of outputs has the same coefficients as those outputs of the whole resize, also
 * of a resize far wider than memory could hold (shorter_side_crop of a 40000000x1 image to a
 * 224 high target is 8.96e9 wide; only its 224 centre outputs are computed). */
static void test_coeffs_window(void **state)
{
    (void)state;
    int all_b[2 * 40], win_b[2 * 7];
    int ks_all = 0, ks_win = 0;
    int32_t *all = bd_image_coeffs(13, 40, 0, 40, all_b, &ks_all);
    int32_t *win = bd_image_coeffs(13, 40, 17, 7, win_b, &ks_win);
    assert_non_null(all);
    assert_non_null(win);
    assert_int_equal(ks_win, ks_all);
    for (int i = 0; i < 7; i++) {
        assert_int_equal(win_b[2 * i], all_b[2 * (17 + i)]);
        assert_int_equal(win_b[2 * i + 1], all_b[2 * (17 + i) + 1]);
        assert_memory_equal(win + i * ks_win, all + (17 + i) * ks_all,
                            (size_t)ks_all * sizeof *all);
    }
    free(all);
    free(win);
    int b[2 * 224];
    int ks = 0;
    uint64_t rw = 8960000000ull;
    int32_t *k = bd_image_coeffs(40000000u, rw, (rw - 224) / 2, 224, b, &ks);
    assert_non_null(k);
    assert_int_equal(ks, 3); /* enlarging: support 1 */
    /* Output 4479999888 centres at 4479999888.5 * 40e6 / 8.96e9 = 19999999.502: its window
     * starts at input (int)(centre - 1 + 0.5), the image's middle. */
    assert_int_equal(b[0], 19999999);
    assert_in_range(b[1], 1, 2);
    free(k);
}

static void test_base64(void **state)
{
    (void)state;
    unsigned char out[16];
    size_t n = 0;
    assert_true(bd_base64_decode("aGVsbG8=", 8, out, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    assert_true(bd_base64_decode("aGk+Lw==", 8, out, &n));
    assert_int_equal(n, 4);
    assert_memory_equal(out, "hi>/", 4);
    assert_true(bd_base64_decode("", 0, out, &n));
    assert_int_equal(n, 0);
    assert_false(bd_base64_decode("aGVsbG8", 7, out, &n));  /* unpadded */
    assert_false(bd_base64_decode("aG=sbG8=", 8, out, &n)); /* padding inside */
    assert_false(bd_base64_decode("aGVs bG8", 8, out, &n)); /* whitespace */
    char inplace[] = "AAEC";
    assert_true(bd_base64_decode(inplace, 4, (unsigned char *)inplace, &n));
    assert_int_equal(n, 3);
    assert_memory_equal(inplace, "\x00\x01\x02", 3);
}

static void png_header(unsigned char *p, uint32_t w, uint32_t h)
{
    static const unsigned char head[16] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                           0,    0,   0,   13,  'I',  'H',  'D',  'R'};
    memcpy(p, head, 16);
    for (int i = 0; i < 4; i++) {
        p[16 + i] = (unsigned char)(w >> (24 - 8 * i));
        p[20 + i] = (unsigned char)(h >> (24 - 8 * i));
    }
    memset(p + 24, 0, 9);
    p[24] = 8;
    p[25] = 2;
}

static void test_probe_refusals(void **state)
{
    (void)state;
    bd_err_t err = {0};
    bd_image_info_t info;
    assert_int_equal(bd_image_probe("GIF89a", 6, false, 0, "image", SIZE_MAX, &info, &err),
                     BD_EINVAL);
    assert_string_equal(err.msg, "input 'image': not a JPEG or PNG image");
    assert_int_equal(bd_image_probe("", 0, false, 0, "image", 2, &info, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'image': image 2: the image is empty (0 bytes)");

    unsigned char png[33];
    png_header(png, 20000, 20000);
    assert_int_equal(bd_image_probe(png, sizeof png, false, 0, "image", 3, &info, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'image': image 3 is 20000x20000 pixels, more than the "
                                 "40000000 allowed (--max-image-pixels)");
    png_header(png, 640, 480);
    assert_int_equal(bd_image_probe(png, sizeof png, false, 0, "image", SIZE_MAX, &info, &err), 0);
    assert_true(info.png);
    assert_int_equal(info.width, 640);
    assert_int_equal(info.height, 480);
    assert_int_equal(bd_image_probe(png, 20, false, 0, "image", SIZE_MAX, &info, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'image': the PNG is truncated");

    /* SOI, an APP0 of 4 bytes, then SOF0 of a 4-component (CMYK) 8x6 frame. */
    static const unsigned char cmyk[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00,
                                         0x00, 0xff, 0xc0, 0x00, 0x14, 0x08, 0x00,
                                         0x06, 0x00, 0x08, 0x04, 0x01, 0x11, 0x00};
    assert_int_equal(bd_image_probe(cmyk, sizeof cmyk, false, 0, "image", SIZE_MAX, &info, &err),
                     BD_EINVAL);
    assert_non_null(strstr(err.msg, "CMYK"));
    /* Cut before the frame header: truncated, unless only a prefix was given. */
    assert_int_equal(bd_image_probe(cmyk, 8, false, 0, "image", SIZE_MAX, &info, &err), BD_EINVAL);
    assert_string_equal(err.msg, "input 'image': the JPEG is truncated");
    assert_int_equal(bd_image_probe(cmyk, 8, true, 0, "image", SIZE_MAX, &info, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coeffs_shrink_by_two),  cmocka_unit_test(test_coeffs_window),
        cmocka_unit_test(test_coeffs_enlarge_by_two), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_probe_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
