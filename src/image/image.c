/* image.c: JPEG (libturbojpeg) and PNG (libspng) decoding, Pillow's antialiased bilinear
 * resize, and normalization into a model's FP32 row (see image.h).
 *
 * The resize follows the algorithm Pillow documents for Image.resize with a bilinear filter:
 * for each output index, the input window centred on (i + 0.5) * scale spans the filter's
 * support (1 for bilinear) widened by the scale when shrinking, so every input pixel under
 * the window contributes (antialiasing); the weights are normalized to sum 1, turned into
 * fixed point with 22 fraction bits (8-bit images), and applied first along rows (into an
 * 8-bit intermediate, rounded and clamped) and then along columns. A pass whose size does not
 * change is skipped, as Pillow skips it. shorter_side_crop computes only the coefficients of
 * the cropped window of the full resize: the same numbers, fewer of them (the full resize of
 * a 40000000x1 image to a height of 224 would be 9 billion wide).
 *
 * Threads: any; a scratch belongs to one thread at a time. Ownership: the scratch owns its
 * buffers and the TurboJPEG handle; everything else is the caller's. */
#include "image/image.h"

#include <math.h>
#include <spng.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#define PRECISION_BITS 22                     /* 32 - 8 - 2, as Pillow for 8-bit images */
#define SCRATCH_KEEP_BYTES ((size_t)64 << 20) /* larger buffers are freed after each image */
#define PNG_CACHE_LIMIT ((size_t)64 << 20)    /* libspng's limit for ancillary chunk data */

struct bd_image_scratch {
    tjhandle tj;        /* made at the first JPEG */
    unsigned char *pix; /* the decoded image, 8-bit interleaved */
    size_t pix_cap;
    unsigned char *tmp; /* the horizontal pass's output */
    size_t tmp_cap;
};

size_t bd_image_row_elems(const bd_image_spec_t *spec)
{
    return (size_t)spec->channels * (size_t)spec->height * (size_t)spec->width;
}

/* "input 'x': " then, for one of several images, "image 3: ", then the detail. */
static int fail(bd_err_t *err, int code, const char *input, size_t index, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(bd_err_t *err, int code, const char *input, size_t index, const char *fmt, ...)
{
    char detail[BD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (index == SIZE_MAX) {
        return bd_err_set(err, code, "input '%.64s': %s", input, detail);
    }
    return bd_err_set(err, code, "input '%.64s': image %zu: %s", input, index, detail);
}

static int too_many_pixels(bd_err_t *err, const char *input, size_t index, uint32_t w, uint32_t h,
                           uint64_t max)
{
    return bd_err_set(err, BD_EINVAL,
                      "input '%.64s': image %zu is %ux%u pixels, more than the %llu allowed "
                      "(--max-image-pixels)",
                      input, index == SIZE_MAX ? 0 : index, w, h, (unsigned long long)max);
}

static const unsigned char PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Walk the JPEG's markers to its frame header (SOFn). Returns 1 with the size and component
 * count, 0 when the data ends first, -1 when the marker structure is broken. */
static int jpeg_frame(const unsigned char *p, size_t len, uint32_t *w, uint32_t *h, int *comps)
{
    size_t i = 2; /* past SOI */
    for (;;) {
        while (i < len && p[i] != 0xff) {
            i++; /* bytes between segments: libjpeg skips them with a warning, so Pillow does */
        }
        while (i < len && p[i] == 0xff) {
            i++; /* fill bytes */
        }
        if (i >= len) {
            return 0;
        }
        unsigned m = p[i++];
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd7)) {
            continue; /* a stuffed FF 00 among bytes between segments (libjpeg skips it), or no
                       * length */
        }
        if (m == 0xd9 || m == 0xda) {
            return -1; /* EOI or a scan before any frame */
        }
        if (i + 2 > len) {
            return 0;
        }
        size_t seg = (size_t)p[i] << 8 | p[i + 1];
        if (seg < 2) {
            return -1;
        }
        bool sof = m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
        if (sof) {
            if (seg < 8) {
                return -1;
            }
            if (i + 8 > len) {
                return 0;
            }
            *h = (uint32_t)p[i + 3] << 8 | p[i + 4];
            *w = (uint32_t)p[i + 5] << 8 | p[i + 6];
            *comps = p[i + 7];
            return 1;
        }
        i += seg;
    }
}

int bd_image_probe(const void *data, size_t len, bool partial, uint64_t max_pixels,
                   const char *input, size_t index, bd_image_info_t *info, bd_err_t *err)
{
    const unsigned char *p = data;
    memset(info, 0, sizeof *info);
    if (max_pixels == 0) {
        max_pixels = BD_IMAGE_DEFAULT_MAX_PIXELS;
    }
    if (len == 0) {
        return fail(err, BD_EINVAL, input, index, "the image is empty (0 bytes)");
    }
    if (len >= 8 && memcmp(p, PNG_SIG, 8) == 0) {
        info->png = true;
        if (len < 33 || memcmp(p + 12, "IHDR", 4) != 0) {
            return fail(err, BD_EINVAL, input, index,
                        len < 33 ? "the PNG is truncated" : "the PNG has no IHDR header");
        }
        info->width = be32(p + 16);
        info->height = be32(p + 20);
        if (info->width == 0 || info->height == 0 || info->width > 0x7fffffffu ||
            info->height > 0x7fffffffu) {
            return fail(err, BD_EINVAL, input, index,
                        "the PNG header says %ux%u pixels; a PNG is 1 to 2147483647 pixels each "
                        "way",
                        info->width, info->height);
        }
    } else if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        int comps = 0;
        int rc = jpeg_frame(p, len, &info->width, &info->height, &comps);
        if (rc == 0 && partial) {
            return 0; /* the frame header is further on: the decode checks it */
        }
        if (rc <= 0) {
            return fail(err, BD_EINVAL, input, index,
                        rc == 0 ? "the JPEG is truncated" : "the JPEG's header cannot be read");
        }
        if (info->width == 0 || info->height == 0) {
            return fail(err, BD_EINVAL, input, index,
                        "the JPEG header says %ux%u pixels; an image is at least 1x1", info->width,
                        info->height);
        }
        if (comps == 4) {
            return fail(err, BD_EINVAL, input, index,
                        "CMYK JPEGs are not supported; send an RGB or grayscale image");
        }
        if (comps != 1 && comps != 3) {
            return fail(err, BD_EINVAL, input, index, "the JPEG has %d color components", comps);
        }
    } else {
        return fail(err, BD_EINVAL, input, index, "not a JPEG or PNG image");
    }
    if ((uint64_t)info->width * info->height > max_pixels) {
        return too_many_pixels(err, input, index, info->width, info->height, max_pixels);
    }
    return 0;
}

bd_image_scratch_t *bd_image_scratch_new(void)
{
    return calloc(1, sizeof(bd_image_scratch_t));
}

void bd_image_scratch_free(bd_image_scratch_t *sc)
{
    if (!sc) {
        return;
    }
    if (sc->tj) {
        tjDestroy(sc->tj);
    }
    free(sc->pix);
    free(sc->tmp);
    free(sc);
}

/* Every buffer has GROW_SLACK bytes past `need`: the SIMD horizontal pass reads a 3-byte
 * pixel as 4 bytes. */
#define GROW_SLACK 4
static bool grow(unsigned char **buf, size_t *cap, size_t need)
{
    if (*cap >= need) {
        return true;
    }
    free(*buf);
    *buf = malloc(need + GROW_SLACK);
    *cap = *buf ? need : 0;
    return *buf != NULL;
}

static void trim(bd_image_scratch_t *sc)
{
    if (sc->pix_cap > SCRATCH_KEEP_BYTES) {
        free(sc->pix);
        sc->pix = NULL;
        sc->pix_cap = 0;
    }
    if (sc->tmp_cap > SCRATCH_KEEP_BYTES) {
        free(sc->tmp);
        sc->tmp = NULL;
        sc->tmp_cap = 0;
    }
}

/* After a failed TurboJPEG call: its handle can keep the failed stream's state (the next
 * header then reads as 0x0 pixels), so it goes, and the next JPEG gets a fresh one. */
static int jpeg_failed(bd_image_scratch_t *sc, int rc)
{
    tjDestroy(sc->tj);
    sc->tj = NULL;
    return rc;
}

/* Whether libjpeg's message is one of its warnings about damage it decodes past, filling in
 * what it could not read ("Corrupt JPEG data: 3 extraneous bytes before marker 0xd9", "...:
 * premature end of data segment", "...: bad Huffman code"), as Pillow decodes them too. Its
 * error codes cannot say it: TurboJPEG keeps a warning's flag into the next call. */
static bool jpeg_benign(const char *why)
{
    return strncmp(why, "Corrupt JPEG data", 17) == 0;
}

/* Whether the JPEG ends with its EOI marker (some encoders pad it with zero bytes). One that
 * does not was cut off: libjpeg then often fails on what it finds missing ("missing SOS
 * marker", "Bogus Huffman table definition") rather than at the end of the data. */
static bool jpeg_ends(const unsigned char *p, size_t len)
{
    while (len > 2 && p[len - 1] == 0) {
        len--;
    }
    return len >= 4 && p[len - 2] == 0xff && p[len - 1] == 0xd9;
}

/* A JPEG libjpeg refused: truncated when it says so or when the file has no end marker; else
 * `what` with libjpeg's reason. */
static int jpeg_refused(bd_image_scratch_t *sc, const unsigned char *p, size_t len,
                        const char *what, const char *input, size_t index, bd_err_t *err)
{
    const char *why = tjGetErrorStr2(sc->tj);
    int rc = strstr(why, "Premature end")
                 ? fail(err, BD_EINVAL, input, index, "the JPEG is truncated")
             : !jpeg_ends(p, len)
                 ? fail(err, BD_EINVAL, input, index,
                        "the JPEG is truncated: it ends without its end marker (%s)", why)
                 : fail(err, BD_EINVAL, input, index, "%s (%s)", what, why);
    return jpeg_failed(sc, rc);
}

/* Decode into sc->pix as 8-bit RGB, or gray (*channels 1) when the JPEG is gray and `gray`
 * is wanted (its RGB would be three equal values whose luma is the value itself). */
static int decode_jpeg(bd_image_scratch_t *sc, const unsigned char *p, size_t len,
                       uint64_t max_pixels, bool gray, const char *input, size_t index, uint32_t *w,
                       uint32_t *h, int *channels, bd_err_t *err)
{
    if (!sc->tj && !(sc->tj = tjInitDecompress())) {
        return bd_err_set(err, BD_ENOMEM, "cannot start the JPEG decoder");
    }
    int iw = 0, ih = 0, subsamp = 0, cs = 0;
    /* A benign warning (bytes between segments, which libjpeg skips) still read the header; a
     * file that ends in it does not hold an image. */
    if (len > (unsigned long)-1 ||
        (tjDecompressHeader3(sc->tj, p, (unsigned long)len, &iw, &ih, &subsamp, &cs) != 0 &&
         (!jpeg_benign(tjGetErrorStr2(sc->tj)) || iw <= 0 || ih <= 0))) {
        return jpeg_refused(sc, p, len, "the JPEG's header cannot be read", input, index, err);
    }
    if (iw <= 0 || ih <= 0) {
        return fail(err, BD_EINVAL, input, index,
                    "the JPEG header says %dx%d pixels; an image is at least 1x1", iw, ih);
    }
    if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
        return fail(err, BD_EINVAL, input, index,
                    "CMYK JPEGs are not supported; send an RGB or grayscale image");
    }
    *w = (uint32_t)iw;
    *h = (uint32_t)ih;
    if ((uint64_t)*w * *h > max_pixels) {
        return too_many_pixels(err, input, index, *w, *h, max_pixels);
    }
    *channels = gray && cs == TJCS_GRAY ? 1 : 3;
    size_t bytes = (size_t)*w * *h * (size_t)*channels; /* bounded by max_pixels */
    if (!grow(&sc->pix, &sc->pix_cap, bytes)) {
        return fail(err, BD_ENOMEM, input, index,
                    "out of memory for the %zu bytes of a %ux%u JPEG's pixels (--max-image-pixels "
                    "bounds them)",
                    bytes, *w, *h);
    }
    int pf = *channels == 1 ? TJPF_GRAY : TJPF_RGB;
    if (tjDecompress2(sc->tj, p, (unsigned long)len, sc->pix, iw, 0, ih, pf,
                      TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS) != 0) {
        /* Pillow refuses a cut-off file but decodes past other recoverable damage, which
         * libjpeg fills in: every pixel is written. Anything else may have written none of
         * them, so it fails whatever tjGetErrorCode says (it can still report the warning
         * of the header read when decoding stopped at a fatal error). */
        if (jpeg_benign(tjGetErrorStr2(sc->tj))) {
            return jpeg_failed(sc, 0);
        }
        return jpeg_refused(sc, p, len, "the JPEG cannot be decoded", input, index, err);
    }
    return 0;
}

static int png_error(bd_err_t *err, const char *input, size_t index, int e)
{
    if (e == SPNG_EOF || e == SPNG_IO_EOF || e == SPNG_EIDAT_TOO_SHORT) {
        return fail(err, BD_EINVAL, input, index, "the PNG is truncated");
    }
    return fail(err, BD_EINVAL, input, index, "the PNG cannot be decoded (%s)", spng_strerror(e));
}

static int decode_png(bd_image_scratch_t *sc, const unsigned char *p, size_t len,
                      uint64_t max_pixels, const char *input, size_t index, uint32_t *w,
                      uint32_t *h, bd_err_t *err)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        return bd_err_set(err, BD_ENOMEM, "cannot start the PNG decoder");
    }
    int rc = 0;
    struct spng_ihdr ihdr;
    size_t bytes = 0;
    int e = spng_set_chunk_limits(ctx, len, PNG_CACHE_LIMIT);
    if (e == 0) {
        e = spng_set_png_buffer(ctx, p, len);
    }
    if (e == 0) {
        e = spng_get_ihdr(ctx, &ihdr);
    }
    if (e != 0) {
        rc = fail(err, BD_EINVAL, input, index, "the PNG's header cannot be read (%s)",
                  spng_strerror(e));
        goto out;
    }
    *w = ihdr.width;
    *h = ihdr.height;
    if ((uint64_t)*w * *h > max_pixels) {
        rc = too_many_pixels(err, input, index, *w, *h, max_pixels);
        goto out;
    }
    if ((e = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &bytes)) != 0) {
        rc = png_error(err, input, index, e);
        goto out;
    }
    if (!grow(&sc->pix, &sc->pix_cap, bytes)) {
        rc = fail(err, BD_ENOMEM, input, index,
                  "out of memory for the %zu bytes of a %ux%u PNG's pixels (--max-image-pixels "
                  "bounds them)",
                  bytes, *w, *h);
        goto out;
    }
    /* RGB8 expands palettes and gray, and drops alpha (and tRNS) without compositing. */
    e = spng_decode_image(ctx, sc->pix, bytes, SPNG_FMT_RGB8, 0);
    if (e == 0) {
        /* The image's last rows can end before its last IDAT chunk does: the rest of that chunk
         * and its CRC are only read here, with the chunks after it, up to IEND. Without this a
         * file cut in the last CRC, or with a wrong one, passed. */
        e = spng_decode_chunks(ctx);
    }
    if (e != 0) {
        rc = png_error(err, input, index, e);
    }
out:
    spng_ctx_free(ctx);
    return rc;
}

static double bilinear(double x)
{
    x = x < 0 ? -x : x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* The taps of one output pixel's window: the filter's support (1, widened by the scale when
 * shrinking) on both sides, and the centre. */
static uint64_t kernel_size(uint32_t in_size, uint64_t out_size)
{
    double scale = (double)in_size / (double)out_size;
    return (uint64_t)ceil(scale < 1.0 ? 1.0 : scale) * 2 + 1;
}

int32_t *bd_image_coeffs(uint32_t in_size, uint64_t out_size, uint64_t first, uint32_t count,
                         int *bounds, int *ksize)
{
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ks = (int)kernel_size(in_size, out_size);
    double *w = malloc((size_t)ks * sizeof *w);
    int32_t *k = calloc((size_t)count * (size_t)ks, sizeof *k);
    if (!w || !k) {
        free(w);
        free(k);
        return NULL;
    }
    for (uint32_t i = 0; i < count; i++) {
        double center = ((double)(first + i) + 0.5) * scale;
        double inv = 1.0 / filterscale;
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        lo = lo < 0 ? 0 : lo;
        hi = hi > (int)in_size ? (int)in_size : hi;
        int n = hi - lo;
        double sum = 0;
        for (int x = 0; x < n; x++) {
            w[x] = bilinear((x + lo - center + 0.5) * inv);
            sum += w[x];
        }
        for (int x = 0; x < n; x++) {
            double v = sum != 0 ? w[x] / sum : w[x];
            double f = v * (1 << PRECISION_BITS);
            k[(size_t)i * ks + x] = (int32_t)(v < 0 ? f - 0.5 : f + 0.5);
        }
        bounds[2 * i] = lo;
        bounds[2 * i + 1] = n;
    }
    free(w);
    *ksize = ks;
    return k;
}

static inline unsigned char clip8(int32_t v)
{
    v >>= PRECISION_BITS;
    return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* The normalized value of each 8-bit level, per output channel. */
static void make_lut(const bd_image_spec_t *spec, float lut[3][256])
{
    for (int c = 0; c < spec->channels; c++) {
        for (int v = 0; v < 256; v++) {
            lut[c][v] = ((float)v * spec->scale - spec->mean[c]) / spec->std[c];
        }
    }
}

/* Write pixel (x, y) of the final 8-bit image `px` (rows of `stride` bytes, `ch` channels,
 * ch == spec->channels) into `out` in the spec's layout and channel order. */
static void store_row(const bd_image_spec_t *spec, float lut[3][256], const unsigned char *row,
                      uint32_t y, float *out)
{
    uint32_t W = (uint32_t)spec->width, H = (uint32_t)spec->height;
    int C = spec->channels;
    bool bgr = spec->color == BD_IMAGE_BGR;
    for (int c = 0; c < C; c++) {
        int src = bgr ? 2 - c : c;
        const float *l = lut[c];
        if (spec->layout == BD_IMAGE_NCHW) {
            float *o = out + ((size_t)c * H + y) * W;
            for (uint32_t x = 0; x < W; x++) {
                o[x] = l[row[(size_t)x * C + src]];
            }
        } else {
            float *o = out + (size_t)y * W * C + c;
            for (uint32_t x = 0; x < W; x++) {
                o[(size_t)x * C] = l[row[(size_t)x * C + src]];
            }
        }
    }
}

/* The two passes of the resample, written so that the compiler vectorizes them (this file
 * is built with -O3): each output row of the vertical pass is a sum of whole input rows, and
 * the horizontal pass keeps the three channels of a pixel in three sums. The arithmetic is
 * Pillow's (32-bit sums of 8-bit samples times 22-bit coefficients), so results do not change. */
static void vertical(const unsigned char *rows, size_t stride, int n, const int32_t *k,
                     int32_t *restrict acc, unsigned char *restrict line)
{
    for (size_t i = 0; i < stride; i++) {
        acc[i] = 1 << (PRECISION_BITS - 1);
    }
    for (int j = 0; j < n; j++) {
        const unsigned char *restrict row = rows + (size_t)j * stride;
        int32_t kj = k[j];
        for (size_t i = 0; i < stride; i++) {
            acc[i] += row[i] * kj;
        }
    }
    for (size_t i = 0; i < stride; i++) {
        line[i] = clip8(acc[i]);
    }
}

typedef void (*horizontal3_fn)(const unsigned char *restrict src, unsigned char *restrict dst,
                               uint32_t W, const int *hb, const int32_t *hk, int hks);

static void horizontal3_c(const unsigned char *restrict src, unsigned char *restrict dst,
                          uint32_t W, const int *hb, const int32_t *hk, int hks)
{
    for (uint32_t x = 0; x < W; x++) {
        int lo = hb[2 * x], n = hb[2 * x + 1];
        const int32_t *k = hk + (size_t)x * hks;
        const unsigned char *s = src + (size_t)lo * 3;
        int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int j = 0; j < n; j++) {
            s0 += s[3 * j] * k[j];
            s1 += s[3 * j + 1] * k[j];
            s2 += s[3 * j + 2] * k[j];
        }
        dst[3 * x] = clip8(s0);
        dst[3 * x + 1] = clip8(s1);
        dst[3 * x + 2] = clip8(s2);
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
/* The same sums, a pixel's three channels (and one byte past them, ignored) in one SSE4.1
 * register: 32-bit products and sums as Pillow's, the clip by saturating packs. */
__attribute__((target("sse4.1"))) static void horizontal3_sse41(const unsigned char *restrict src,
                                                                unsigned char *restrict dst,
                                                                uint32_t W, const int *hb,
                                                                const int32_t *hk, int hks)
{
    for (uint32_t x = 0; x < W; x++) {
        int lo = hb[2 * x], n = hb[2 * x + 1];
        const int32_t *k = hk + (size_t)x * hks;
        const unsigned char *s = src + (size_t)lo * 3;
        __m128i acc = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
        for (int j = 0; j < n; j++) {
            int32_t px;
            memcpy(&px, s + 3 * j, 4);
            __m128i p = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(px));
            acc = _mm_add_epi32(acc, _mm_mullo_epi32(p, _mm_set1_epi32(k[j])));
        }
        __m128i v = _mm_srai_epi32(acc, PRECISION_BITS);
        v = _mm_packus_epi16(_mm_packs_epi32(v, v), v);
        int32_t out = _mm_cvtsi128_si32(v);
        memcpy(dst + 3 * x, &out, 3);
    }
}
#endif

static horizontal3_fn pick_horizontal3(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("sse4.1")) {
        return horizontal3_sse41;
    }
#endif
    return horizontal3_c;
}

/* Resize the decoded `ch`-channel image sc->pix (iw x ih) to rw x rh and keep the window
 * [x0, x0 + spec->width) x [y0, y0 + spec->height), normalized into `out`. */
static int resize_store(const bd_image_spec_t *spec, bd_image_scratch_t *sc, uint32_t iw,
                        uint32_t ih, int ch, uint64_t rw, uint64_t rh, uint64_t x0, uint64_t y0,
                        float *out, bd_err_t *err)
{
    uint32_t W = (uint32_t)spec->width, H = (uint32_t)spec->height;
    int *hb = NULL, *vb = NULL;
    int32_t *hk = NULL, *vk = NULL;
    int hks = 0, vks = 0;
    int rc = 0;
    float lut[3][256];
    make_lut(spec, lut);
    bool do_h = rw != iw, do_v = rh != ih;
    horizontal3_fn horizontal3 = pick_horizontal3();
    if ((do_h && (!(hb = malloc((size_t)W * 2 * sizeof *hb)) ||
                  !(hk = bd_image_coeffs(iw, rw, x0, W, hb, &hks)))) ||
        (do_v && (!(vb = malloc((size_t)H * 2 * sizeof *vb)) ||
                  !(vk = bd_image_coeffs(ih, rh, y0, H, vb, &vks))))) {
        rc = bd_err_set(err, BD_ENOMEM, "out of memory resizing an image");
        goto out;
    }
    /* Rows of the source the vertical pass reads (without it, rh == ih: y0 is a row). */
    uint32_t r0 = (uint32_t)y0, r1 = (uint32_t)y0 + H;
    if (do_v) {
        r0 = (uint32_t)vb[0];
        r1 = 0;
        for (uint32_t y = 0; y < H; y++) {
            uint32_t e = (uint32_t)(vb[2 * y] + vb[2 * y + 1]);
            r1 = e > r1 ? e : r1;
        }
    }
    /* Horizontal pass (or the crop alone) into tmp: rows r0..r1, W columns. */
    size_t tstride = (size_t)W * ch;
    if (!grow(&sc->tmp, &sc->tmp_cap, tstride * (r1 - r0))) {
        rc = bd_err_set(err, BD_ENOMEM, "out of memory resizing an image");
        goto out;
    }
    size_t istride = (size_t)iw * ch;
    for (uint32_t y = r0; y < r1; y++) {
        const unsigned char *src = sc->pix + (size_t)y * istride;
        unsigned char *dst = sc->tmp + (size_t)(y - r0) * tstride;
        if (!do_h) {
            memcpy(dst, src + (size_t)x0 * ch, tstride);
            continue;
        }
        if (ch == 3) {
            horizontal3(src, dst, W, hb, hk, hks);
        } else {
            for (uint32_t x = 0; x < W; x++) {
                int lo = hb[2 * x], n = hb[2 * x + 1];
                const int32_t *k = hk + (size_t)x * hks;
                for (int c = 0; c < ch; c++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    const unsigned char *s = src + (size_t)lo * ch + c;
                    for (int j = 0; j < n; j++) {
                        ss += s[(size_t)j * ch] * k[j];
                    }
                    dst[(size_t)x * ch + c] = clip8(ss);
                }
            }
        }
    }
    /* Vertical pass, one output row at a time, stored as it is made. */
    unsigned char *line = malloc(tstride ? tstride : 1);
    int32_t *acc = do_v ? malloc((tstride ? tstride : 1) * sizeof *acc) : NULL;
    if (!line || (do_v && !acc)) {
        free(line);
        free(acc);
        rc = bd_err_set(err, BD_ENOMEM, "out of memory resizing an image");
        goto out;
    }
    for (uint32_t y = 0; y < H; y++) {
        if (!do_v) {
            memcpy(line, sc->tmp + (size_t)(y0 + y - r0) * tstride, tstride);
        } else {
            int lo = vb[2 * y], n = vb[2 * y + 1];
            const int32_t *k = vk + (size_t)y * vks;
            vertical(sc->tmp + (size_t)((uint32_t)lo - r0) * tstride, tstride, n, k, acc, line);
        }
        store_row(spec, lut, line, y, out);
    }
    free(line);
    free(acc);
out:
    free(hb);
    free(vb);
    free(hk);
    free(vk);
    return rc;
}

/* The bytes resize_store allocates for an iw x ih image of ch channels resized to rw x rh,
 * of which the W x H window from (x0, y0) is kept: the horizontal pass's rows (those the
 * vertical pass reads, all of them when stretching a tall image to a short one), the two
 * coefficient tables (one window per output pixel, each as wide as the shrink factor), the
 * vertical pass's line. Without a bound a 16x2500000 PNG of 356 KB stretched to 224x224 took
 * 1.7 GB. */
static uint64_t resize_bytes(uint64_t W, uint64_t H, uint32_t iw, uint32_t ih, int ch, uint64_t rw,
                             uint64_t rh, uint64_t y0)
{
    uint64_t rows = H, bytes = 0;
    if (rh != ih) {
        double scale = (double)ih / (double)rh, support = scale < 1.0 ? 1.0 : scale;
        double lo = ((double)y0 + 0.5) * scale - support, hi = ((double)(y0 + H) - 0.5) * scale;
        hi += support + 1.0;
        lo = lo < 0 ? 0 : lo;
        hi = hi > ih ? ih : hi;
        rows = (uint64_t)(hi - lo) + 1;
        bytes += H * kernel_size(ih, rh) * sizeof(int32_t);
    }
    if (rw != iw) {
        bytes += W * kernel_size(iw, rw) * sizeof(int32_t);
    }
    return bytes + W * (uint64_t)ch * (rows + 1 + sizeof(int32_t));
}

int bd_image_preprocess(const bd_image_spec_t *spec, const void *data, size_t len,
                        const char *input, size_t index, bd_image_scratch_t *sc, float *out,
                        bd_err_t *err)
{
    uint64_t max = spec->max_pixels ? spec->max_pixels : BD_IMAGE_DEFAULT_MAX_PIXELS;
    bd_image_info_t info;
    int rc = bd_image_probe(data, len, false, max, input, index, &info, err);
    if (rc != 0) {
        return rc;
    }
    bool gray = spec->color == BD_IMAGE_GRAY;
    uint32_t iw = 0, ih = 0;
    int ch = 3;
    if (info.png) {
        rc = decode_png(sc, data, len, max, input, index, &iw, &ih, err);
    } else {
        rc = decode_jpeg(sc, data, len, max, gray, input, index, &iw, &ih, &ch, err);
    }
    if (rc == 0 && gray && ch == 3) {
        /* Pillow's convert("L"): ITU-R 601-2 luma in 16-bit fixed point, rounded. In place:
         * pixel i is written at i, read from 3i. */
        size_t n = (size_t)iw * ih;
        unsigned char *p = sc->pix;
        for (size_t i = 0; i < n; i++) {
            const unsigned char *q = p + 3 * i;
            p[i] = (unsigned char)((q[0] * 19595u + q[1] * 38470u + q[2] * 7471u + 0x8000u) >> 16);
        }
        ch = 1;
    }
    if (rc == 0) {
        uint64_t W = (uint64_t)spec->width, H = (uint64_t)spec->height;
        uint64_t rw = W, rh = H, x0 = 0, y0 = 0;
        if (spec->resize == BD_IMAGE_SHORTER_SIDE_CROP) {
            /* Scale so the image covers the target: the side that fits exactly is the target,
             * the other is round-half-up(side * factor); then crop the centre, the extra
             * pixels split with the odd one on the right or bottom. Both fit 64 bits: sides
             * are under 2^32 and targets at most BD_IMAGE_MAX_SIDE. */
            if (H * iw >= W * ih) {
                rh = H;
                rw = (iw * H * 2 + ih) / ((uint64_t)ih * 2);
                rw = rw < W ? W : rw;
            } else {
                rw = W;
                rh = (ih * W * 2 + iw) / ((uint64_t)iw * 2);
                rh = rh < H ? H : rh;
            }
            x0 = (rw - W) / 2;
            y0 = (rh - H) / 2;
        }
        /* The resize may take as much memory as the largest decoded image may, plus the
         * model's FP32 row (an upscale's rows are that wide) and 64 KiB. */
        uint64_t need = resize_bytes(W, H, iw, ih, ch, rw, rh, y0);
        uint64_t allowed = max * 3 + W * H * (uint64_t)ch * sizeof(float) + 65536;
        if (need > allowed) {
            rc = fail(err, BD_EINVAL, input, index,
                      "resizing a %ux%u image to %llux%llu would take %llu bytes of memory, "
                      "more than the %llu allowed (3 per --max-image-pixels pixel, plus the "
                      "model's input); send an image closer to the model's proportions",
                      iw, ih, (unsigned long long)W, (unsigned long long)H,
                      (unsigned long long)need, (unsigned long long)allowed);
        } else {
            rc = resize_store(spec, sc, iw, ih, ch, rw, rh, x0, y0, out, err);
        }
    }
    trim(sc);
    return rc;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

bool bd_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
    if (len % 4 != 0) {
        return false;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)in[i + j];
            if (c == '=' && i + 4 == len && j >= 2) {
                v[j] = 0;
                pad++;
                continue;
            }
            if (pad > 0 || (v[j] = b64val(c)) < 0) {
                return false;
            }
        }
        uint32_t t = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        out[o++] = (unsigned char)(t >> 16);
        if (pad < 2) {
            out[o++] = (unsigned char)(t >> 8);
        }
        if (pad < 1) {
            out[o++] = (unsigned char)t;
        }
    }
    *out_len = o;
    return true;
}
