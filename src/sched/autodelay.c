/* autodelay.c: the learner behind "max_queue_delay_us": "auto" (see sched_internal.h for the
 * rule and docs/ARCHITECTURE.md for why).
 *
 * It keeps two things: an exponentially weighted least-squares fit of the batch cost curve
 * t(n) = a + b*n over the batches the scheduler ran, and an exponentially weighted mean of the
 * gap between arrivals. Both are a handful of doubles updated in O(1), so the scheduler can
 * feed them under its mutex on every submit and every batch.
 *
 * Threads: none of its own; the owning scheduler's mutex guards a bd_sched_auto_t. */
#include "sched/sched_internal.h"

#include <math.h>

void bd_sched_auto_arrival(bd_sched_auto_t *a, uint64_t now_us)
{
    if (a->arrivals > 0 && now_us >= a->last_arrival_us) {
        double gap = (double)(now_us - a->last_arrival_us);
        a->gap_us = a->arrivals == 1 ? gap : a->gap_us + (gap - a->gap_us) / 8.0;
        a->last_gap_us = gap;
    }
    a->last_arrival_us = now_us;
    a->arrivals++;
}

void bd_sched_auto_batch(bd_sched_auto_t *a, size_t rows, uint64_t cost_us)
{
    double n = (double)rows;
    double t = (double)cost_us;
    a->w = a->w * BD_AUTO_DECAY + 1.0;
    a->sn = a->sn * BD_AUTO_DECAY + n;
    a->st = a->st * BD_AUTO_DECAY + t;
    a->snn = a->snn * BD_AUTO_DECAY + n * n;
    a->snt = a->snt * BD_AUTO_DECAY + n * t;
    a->batches++;
}

bool bd_sched_auto_fit(const bd_sched_auto_t *a, double *fixed_us, double *per_item_us)
{
    if (a->batches < BD_AUTO_MIN_BATCHES || a->w <= 0) {
        return false;
    }
    /* var(n) * w^2; below a quarter row of spread the slope is not determined. */
    double d = a->w * a->snn - a->sn * a->sn;
    if (d < 0.25 * a->w * a->w) {
        return false;
    }
    double b = (a->w * a->snt - a->sn * a->st) / d;
    double mean_n = a->sn / a->w;
    double mean_t = a->st / a->w;
    if (b < 0) {
        b = 0; /* noise: bigger batches are never cheaper; all of the cost is fixed */
    }
    double fixed = mean_t - b * mean_n;
    if (fixed < 0) {
        fixed = 0;
        b = mean_n > 0 ? mean_t / mean_n : 0;
    }
    *fixed_us = fixed;
    *per_item_us = b;
    return true;
}

double bd_sched_auto_gap(const bd_sched_auto_t *a, uint64_t now_us)
{
    if (a->arrivals < 2) {
        return 0;
    }
    double since = now_us > a->last_arrival_us ? (double)(now_us - a->last_arrival_us) : 0;
    return since > a->gap_us ? since : a->gap_us;
}

uint64_t bd_sched_auto_hold_until(const bd_sched_auto_t *a, size_t rows, size_t max_rows,
                                  int instances, uint64_t oldest_arrival_us, uint64_t now_us,
                                  size_t *target_rows)
{
    double fixed;
    double per;
    if (target_rows) {
        *target_rows = rows;
    }
    if (rows == 0 || rows >= max_rows || !bd_sched_auto_fit(a, &fixed, &per)) {
        return 0;
    }
    double g = bd_sched_auto_gap(a, now_us);
    double n = (double)rows;
    double cost = fixed + per * n;
    if (g <= 0 || g >= fixed || cost <= 0) {
        return 0;
    }
    if (fixed / cost < BD_AUTO_MIN_FIXED_SHARE) {
        return 0;
    }
    if (cost / (n * g * (double)(instances > 0 ? instances : 1)) < BD_AUTO_MIN_LOAD) {
        return 0;
    }
    /* The pace now: inside a burst the newest gap is far below the average. */
    double pace = a->last_gap_us > 0 && a->last_gap_us < g ? a->last_gap_us : g;
    /* The epsilon keeps a fit of 1999.9999 us from losing a whole request to rounding. */
    double target = 1.0 + floor(fixed / pace + 1e-6);
    if (per > 0) {
        double by_share = floor(3.0 * fixed / per + 1e-6);
        target = by_share < target ? by_share : target;
    }
    if (target > (double)max_rows) {
        target = (double)max_rows;
    }
    if (n >= target) {
        return 0;
    }
    if (target_rows) {
        *target_rows = (size_t)target;
    }
    uint64_t hold =
        fixed < (double)BD_AUTO_MAX_HOLD_US ? (uint64_t)llround(fixed) : BD_AUTO_MAX_HOLD_US;
    uint64_t until = oldest_arrival_us + hold;
    double quiet = 2.0 * pace > BD_AUTO_MIN_QUIET_US ? 2.0 * pace : BD_AUTO_MIN_QUIET_US;
    uint64_t burst_over = a->last_arrival_us + (uint64_t)llround(quiet);
    if (burst_over < until) {
        until = burst_over;
    }
    return until > now_us ? until : 0;
}
