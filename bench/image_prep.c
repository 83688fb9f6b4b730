/* image_prep: what batchd's image preprocessing costs per image, on one thread, with no
 * server in the way: the JPEG/PNG decode alone (libturbojpeg / libspng through
 * bd_image_preprocess's own path is not split out, so the decode is timed with libturbojpeg
 * directly, with the same flags) and the whole bd_image_preprocess (decode, convert, resize,
 * normalize into an FP32 row). Prints one JSON line per file.
 *
 *   image_prep HEIGHT WIDTH SECONDS FILE...
 *
 * The spec is mobilenet-style: RGB, NCHW, stretch, scale 1/255, ImageNet mean and std. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#include "image/image.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Seconds per call of the JPEG decode to RGB alone (libturbojpeg, accurate DCT), or -1. */
static double jpeg_decode_s(const char *data, size_t len, double seconds)
{
    tjhandle tj = tjInitDecompress();
    int w, h, sub, cs;
    if (!tj || tjDecompressHeader3(tj, (const unsigned char *)data, (unsigned long)len, &w, &h,
                                   &sub, &cs) != 0) {
        if (tj) {
            tjDestroy(tj);
        }
        return -1;
    }
    unsigned char *rgb = malloc((size_t)w * (size_t)h * 3);
    long n = 0;
    double t0 = now_s(), t;
    do {
        tjDecompress2(tj, (const unsigned char *)data, (unsigned long)len, rgb, w, 0, h, TJPF_RGB,
                      TJFLAG_ACCURATEDCT);
        n++;
    } while ((t = now_s() - t0) < seconds);
    free(rgb);
    tjDestroy(tj);
    return t / (double)n;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: image_prep HEIGHT WIDTH SECONDS FILE...\n");
        return 2;
    }
    bd_image_spec_t spec = {.enabled = true,
                            .height = atoi(argv[1]),
                            .width = atoi(argv[2]),
                            .resize = BD_IMAGE_STRETCH,
                            .color = BD_IMAGE_RGB,
                            .layout = BD_IMAGE_NCHW,
                            .channels = 3,
                            .scale = 1.0f / 255.0f,
                            .mean = {0.485f, 0.456f, 0.406f},
                            .std = {0.229f, 0.224f, 0.225f}};
    snprintf(spec.input, sizeof spec.input, "input");
    double seconds = atof(argv[3]);
    float *row = malloc(bd_image_row_elems(&spec) * sizeof *row);
    bd_image_scratch_t *sc = bd_image_scratch_new();
    if (!row || !sc) {
        return 1;
    }
    for (int i = 4; i < argc; i++) {
        size_t len = 0;
        char *data = read_file(argv[i], &len);
        if (!data) {
            fprintf(stderr, "image_prep: cannot read %s\n", argv[i]);
            return 1;
        }
        bd_err_t err = {0};
        bd_image_info_t info = {0};
        if (bd_image_probe(data, len, false, 0, "input", SIZE_MAX, &info, &err) != 0) {
            fprintf(stderr, "image_prep: %s: %s\n", argv[i], err.msg);
            return 1;
        }
        long n = 0;
        double t0 = now_s(), t;
        do {
            if (bd_image_preprocess(&spec, data, len, "input", 0, sc, row, &err) != 0) {
                fprintf(stderr, "image_prep: %s: %s\n", argv[i], err.msg);
                return 1;
            }
            n++;
        } while ((t = now_s() - t0) < seconds);
        double total = t / (double)n;
        double decode = info.png ? -1 : jpeg_decode_s(data, len, seconds);
        printf("{\"file\": \"%s\", \"width\": %u, \"height\": %u, \"bytes\": %zu, "
               "\"preprocess_us\": %.1f, \"decode_us\": %.1f, \"resize_normalize_us\": %.1f}\n",
               argv[i], info.width, info.height, len, total * 1e6, decode * 1e6,
               decode >= 0 ? (total - decode) * 1e6 : -1.0);
        free(data);
    }
    bd_image_scratch_free(sc);
    free(row);
    return 0;
}
