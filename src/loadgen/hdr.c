/* hdr.c: a lossless latency histogram in the style of HdrHistogram (Gil Tene's design, written
 * here from its description).
 *
 * Values are counted in buckets whose width doubles every power of two, each split into
 * `sub_count` linear sub-buckets (sub_count = the power of two that holds 2*10^digits). A
 * value v lands in a sub-bucket of width 2^b where v >= (sub_count/2) * 2^b, so any two
 * values reported alike differ by less than 1/(sub_count/2) of their size (3 digits: 2048
 * sub-buckets, error < 1/1024), and values below sub_count are exact. Counts are a flat
 * array: the first bucket holds sub_count slots, every later one the upper half only.
 *
 * Threads: one owner at a time; merge histograms from several threads after they stop. */
#include <stdlib.h>

#include "loadgen/loadgen.h"

struct bd_hdr {
    uint64_t highest;
    int digits;
    int sub_half_mag;   /* log2(sub_count / 2) */
    uint64_t sub_count; /* linear slots in the first bucket */
    uint64_t sub_mask;  /* sub_count - 1 */
    int bucket_count;
    size_t counts_len;
    uint64_t total;
    uint64_t min, max;
    uint64_t clamped;
    long double sum;
    uint64_t *counts;
};

static int bucket_index(const bd_hdr_t *h, uint64_t v)
{
    /* The position of the highest set bit of (v | mask), minus the bits a bucket spans. */
    int pow2ceil = 64 - __builtin_clzll(v | h->sub_mask);
    return pow2ceil - (h->sub_half_mag + 1);
}

static size_t counts_index(const bd_hdr_t *h, uint64_t v)
{
    int b = bucket_index(h, v);
    uint64_t sub = v >> b;
    return (((size_t)b + 1) << h->sub_half_mag) + (size_t)(sub - (h->sub_count >> 1));
}

/* The lowest value of slot i, and the slot's width. */
static void slot_range(const bd_hdr_t *h, size_t i, uint64_t *lo, uint64_t *width)
{
    uint64_t half = h->sub_count >> 1;
    int64_t b = (int64_t)(i >> h->sub_half_mag) - 1;
    uint64_t sub = (i & (half - 1)) + half;
    if (b < 0) {
        sub -= half;
        b = 0;
    }
    *lo = sub << b;
    *width = (uint64_t)1 << b;
}

bd_hdr_t *bd_hdr_new(uint64_t highest, int sig_digits)
{
    if (sig_digits < 1 || sig_digits > 5 || highest < 2) {
        return NULL;
    }
    bd_hdr_t *h = calloc(1, sizeof *h);
    if (!h) {
        return NULL;
    }
    uint64_t largest_exact = 2;
    for (int i = 0; i < sig_digits; i++) {
        largest_exact *= 10;
    }
    int mag = 0;
    while (((uint64_t)1 << mag) < largest_exact) {
        mag++;
    }
    h->digits = sig_digits;
    h->sub_half_mag = mag - 1;
    h->sub_count = (uint64_t)1 << mag;
    h->sub_mask = h->sub_count - 1;
    h->highest = highest;
    /* Buckets until the first one whose range passes `highest`. */
    int buckets = 1;
    uint64_t smallest_untrackable = h->sub_count;
    while (smallest_untrackable <= highest) {
        if (smallest_untrackable > UINT64_MAX / 2) {
            buckets++;
            break;
        }
        smallest_untrackable <<= 1;
        buckets++;
    }
    h->bucket_count = buckets;
    h->counts_len = ((size_t)buckets + 1) << h->sub_half_mag;
    h->counts = calloc(h->counts_len, sizeof *h->counts);
    if (!h->counts) {
        free(h);
        return NULL;
    }
    h->min = UINT64_MAX;
    return h;
}

void bd_hdr_free(bd_hdr_t *h)
{
    if (h) {
        free(h->counts);
        free(h);
    }
}

void bd_hdr_reset(bd_hdr_t *h)
{
    for (size_t i = 0; i < h->counts_len; i++) {
        h->counts[i] = 0;
    }
    h->total = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    h->clamped = 0;
    h->sum = 0;
}

void bd_hdr_record_n(bd_hdr_t *h, uint64_t value, uint64_t n)
{
    if (n == 0) {
        return;
    }
    if (value > h->highest) {
        value = h->highest;
        h->clamped += n;
    }
    h->counts[counts_index(h, value)] += n;
    h->total += n;
    h->sum += (long double)value * (long double)n;
    if (value < h->min) {
        h->min = value;
    }
    if (value > h->max) {
        h->max = value;
    }
}

void bd_hdr_record(bd_hdr_t *h, uint64_t value)
{
    bd_hdr_record_n(h, value, 1);
}

int bd_hdr_merge(bd_hdr_t *dst, const bd_hdr_t *src)
{
    if (dst->highest != src->highest || dst->digits != src->digits) {
        return BD_EINVAL;
    }
    for (size_t i = 0; i < src->counts_len; i++) {
        dst->counts[i] += src->counts[i];
    }
    if (src->total) {
        dst->total += src->total;
        dst->sum += src->sum;
        dst->clamped += src->clamped;
        if (src->min < dst->min) {
            dst->min = src->min;
        }
        if (src->max > dst->max) {
            dst->max = src->max;
        }
    }
    return 0;
}

uint64_t bd_hdr_percentile(const bd_hdr_t *h, double pct)
{
    if (h->total == 0) {
        return 0;
    }
    if (pct > 100.0) {
        pct = 100.0;
    }
    /* Nearest rank: ceil(pct/100 * n), at least 1. Computed in long double so that e.g. 99.9%
     * of 1000 is exactly 999, not 999.0000001 -> 1000. */
    long double want_f = (long double)pct / 100.0L * (long double)h->total;
    uint64_t want = (uint64_t)want_f;
    if ((long double)want < want_f - 1e-9L) {
        want++;
    }
    if (want == 0) {
        want = 1;
    }
    uint64_t seen = 0;
    for (size_t i = 0; i < h->counts_len; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t lo, width;
            slot_range(h, i, &lo, &width);
            uint64_t hi = lo + width - 1;
            if (hi > h->max) {
                hi = h->max;
            }
            if (hi < h->min) {
                hi = h->min;
            }
            return hi;
        }
    }
    return h->max;
}

uint64_t bd_hdr_count(const bd_hdr_t *h)
{
    return h->total;
}

uint64_t bd_hdr_min(const bd_hdr_t *h)
{
    return h->total ? h->min : 0;
}

uint64_t bd_hdr_max(const bd_hdr_t *h)
{
    return h->max;
}

double bd_hdr_mean(const bd_hdr_t *h)
{
    return h->total ? (double)(h->sum / (long double)h->total) : 0.0;
}

uint64_t bd_hdr_clamped(const bd_hdr_t *h)
{
    return h->clamped;
}

uint64_t bd_hdr_bucket_width(const bd_hdr_t *h, uint64_t value)
{
    if (value > h->highest) {
        value = h->highest;
    }
    return (uint64_t)1 << bucket_index(h, value);
}
