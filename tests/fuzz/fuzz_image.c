/* fuzz_image.c: libFuzzer target for the image decoders (src/image): header probing, JPEG
 * and PNG decoding, resizing and normalization, and base64.
 *
 * The first byte picks the preprocessing (resize mode, color, layout, a target size up to
 * 16x16); the rest is the encoded image, copied to an exact-size buffer so a read past its
 * end is caught. Images are limited to 1M pixels so the fuzzer explores decoders rather
 * than memory. Each result is checked, not just survived: a failure carries BD_EINVAL or
 * BD_ENOMEM and an "input 'image': ..." sentence; a success leaves every output value finite.
 * Single-threaded; one scratch reused across inputs, as a worker reuses its own. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bd_image_scratch_t *scratch;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (!scratch && !(scratch = bd_image_scratch_new())) {
        abort();
    }
    uint8_t sel = data[0];
    size_t len = size - 1;
    unsigned char *img = malloc(len ? len : 1);
    if (!img) {
        return 0;
    }
    memcpy(img, data + 1, len);
    bd_image_spec_t spec = {.enabled = true,
                            .input = "image",
                            .height = 1 + (sel & 7) * 2,
                            .width = 1 + ((sel >> 3) & 7) * 2,
                            .resize = (sel & 0x40) ? BD_IMAGE_SHORTER_SIDE_CROP : BD_IMAGE_STRETCH,
                            .color = (bd_image_color_t)((sel >> 6) % 3),
                            .layout = (sel & 0x20) ? BD_IMAGE_NHWC : BD_IMAGE_NCHW,
                            .scale = 1.0f / 255,
                            .mean = {0.5f, 0.5f, 0.5f},
                            .std = {0.25f, 0.25f, 0.25f},
                            .max_pixels = 1u << 20};
    spec.channels = spec.color == BD_IMAGE_GRAY ? 1 : 3;
    size_t n = bd_image_row_elems(&spec);
    float *out = malloc(n * sizeof *out);
    if (!out) {
        free(img);
        return 0;
    }
    bd_err_t err = {0};
    bd_image_info_t info;
    int prc =
        bd_image_probe(img, len, (sel & 1) != 0, spec.max_pixels, "image", SIZE_MAX, &info, &err);
    if (prc != 0 && (prc != BD_EINVAL || strncmp(err.msg, "input 'image': ", 15) != 0)) {
        abort();
    }
    memset(&err, 0, sizeof err);
    int rc = bd_image_preprocess(&spec, img, len, "image", SIZE_MAX, scratch, out, &err);
    if (rc != 0) {
        if ((rc != BD_EINVAL && rc != BD_ENOMEM) || err.msg[0] == '\0') {
            abort();
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(out[i]) || out[i] < -2.0f - 1e-4f || out[i] > 2.0f + 1e-4f) {
                abort();
            }
        }
    }
    /* base64 of the same bytes: never writes past len / 4 * 3. */
    size_t dl = 0;
    unsigned char *dec = malloc(len / 4 * 3 + 1);
    if (dec) {
        if (bd_base64_decode((const char *)img, len, dec, &dl) && dl > len / 4 * 3) {
            abort();
        }
        free(dec);
    }
    free(out);
    free(img);
    return 0;
}
