/* image: JPEG and PNG decoding, Pillow-compatible antialiased bilinear resizing and
 * normalization of one encoded image straight into one row of a model's FP32 batch tensor.
 *
 * A model whose config.json declares "preprocess" (bd_image_spec_t) takes encoded images for
 * that input: the scheduler probes each image's header when a request is submitted
 * (bd_image_probe: cheap, no pixel buffer) and decodes it into the batch buffer when a worker
 * gathers the batch (bd_image_preprocess), never on an event loop.
 *
 * The pixels are what Pillow gives for Image.open(f).convert("RGB" or "L")
 * .resize((w, h), Image.BILINEAR): alpha dropped without compositing, palettes expanded, GRAY
 * as Pillow's integer luma of the 8-bit RGB values, JPEG through libjpeg-turbo's accurate DCT
 * and smooth chroma upsampling, and the resize as Pillow's separable convolution (horizontal
 * then vertical pass, the filter's support widened by the downscale factor, 8-bit
 * fixed-point coefficients, an 8-bit intermediate).
 *
 * Threads: pure functions over caller-owned memory; a bd_image_scratch_t belongs to one
 * thread at a time (a worker). */
#ifndef BD_IMAGE_H
#define BD_IMAGE_H

#include "core/core.h"

#define BD_IMAGE_DEFAULT_MAX_PIXELS 40000000u
#define BD_IMAGE_MAX_SIDE 65535 /* the largest size [h, w] config.json may ask for */

typedef enum { BD_IMAGE_STRETCH = 0, BD_IMAGE_SHORTER_SIDE_CROP } bd_image_resize_t;
typedef enum { BD_IMAGE_RGB = 0, BD_IMAGE_BGR, BD_IMAGE_GRAY } bd_image_color_t;
typedef enum { BD_IMAGE_NCHW = 0, BD_IMAGE_NHWC } bd_image_layout_t;

/* config.json's "preprocess" section (docs/CONFIG.md). Plain values: copied freely. */
typedef struct {
    bool enabled;
    char input[128]; /* the model input the images feed */
    int height, width;
    bd_image_resize_t resize;
    bd_image_color_t color;
    bd_image_layout_t layout;
    int channels; /* 3, or 1 for GRAY */
    float scale;
    float mean[3];
    float std[3];
    /* Images whose header says more pixels are refused before any pixel buffer exists
     * (batchd serve --max-image-pixels); 0: BD_IMAGE_DEFAULT_MAX_PIXELS. */
    uint64_t max_pixels;
} bd_image_spec_t;

/* Floats one image fills: channels * height * width. */
size_t bd_image_row_elems(const bd_image_spec_t *spec);

typedef struct {
    uint32_t width, height;
    bool png; /* else JPEG */
} bd_image_info_t;

/* Read the header of the encoded image data[0..len): format, width and height. Refuses
 * (BD_EINVAL, one sentence naming input `input` and, when `index` is not SIZE_MAX, the image's
 * index) what is not a JPEG or PNG, an empty image, a header that cannot be read, a CMYK
 * JPEG, and an image of more than `max_pixels` pixels (0: the default). When `partial`, data
 * is only the start of the file: a JPEG header that does not fit in it is not an error (then
 * width and height are 0). Allocates nothing the image sizes. Any thread. */
int bd_image_probe(const void *data, size_t len, bool partial, uint64_t max_pixels,
                   const char *input, size_t index, bd_image_info_t *info, bd_err_t *err);

/* Per-thread buffers for decoding and resizing, kept between images. */
typedef struct bd_image_scratch bd_image_scratch_t;
bd_image_scratch_t *bd_image_scratch_new(void);
void bd_image_scratch_free(bd_image_scratch_t *sc);

/* Decode the encoded image data[0..len), convert, resize and normalize it into `out`
 * (bd_image_row_elems floats, in spec->layout). Fails (BD_EINVAL with one sentence as
 * bd_image_probe; BD_ENOMEM) without touching more than `out`. Any thread, with its own
 * scratch. */
int bd_image_preprocess(const bd_image_spec_t *spec, const void *data, size_t len,
                        const char *input, size_t index, bd_image_scratch_t *sc, float *out,
                        bd_err_t *err);

/* Standard base64 (RFC 4648, "=" padding required when the length is not a multiple of 4, no
 * whitespace) from in[0..len) into out (at least len / 4 * 3 bytes); *out_len gets the
 * decoded length. False on anything else. May decode in place (out == in). */
bool bd_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len);

/* ---- internals, exposed for tests ---------------------------------------------------------
 * The resize coefficients for one axis (in_size -> out_size) as Pillow computes them for a
 * bilinear filter, for the `count` outputs from `first` on (a crop's window of a resize that
 * can be far larger than the image): for output first + i, bounds[2i] is the first input
 * index and bounds[2i+1] how many inputs follow, and coeffs[i * *ksize ..] their weights in
 * 8-bit fixed point (22 fraction bits). Returns the malloc'd coefficients (free them) or NULL
 * when out of memory; bounds must hold 2 * count ints. */
int32_t *bd_image_coeffs(uint32_t in_size, uint64_t out_size, uint64_t first, uint32_t count,
                         int *bounds, int *ksize);

#endif
