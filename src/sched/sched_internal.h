/* sched_internal.h: pieces of the scheduler that its own files and tests/unit/test_sched.c
 * share, not part of the module's contract (other modules include only sched/sched.h).
 *
 * The adaptive delay ("max_queue_delay_us": "auto") is a small pure learner so that it can be
 * tested with synthetic costs and a fake clock: the scheduler feeds it every arrival and
 * every executed batch (under its mutex) and asks it whether an under-full batch should be
 * held. Threads: a bd_sched_auto_t belongs to one scheduler and is only touched under that
 * scheduler's mutex. */
#ifndef BD_SCHED_INTERNAL_H
#define BD_SCHED_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Batches to see before the cost fit is trusted, and the weight each older batch keeps
 * (0.95: the fit follows roughly the last 20 batches, so it tracks a model whose cost
 * drifts, e.g. after a warm-up or under CPU contention). */
#define BD_AUTO_MIN_BATCHES 8
#define BD_AUTO_DECAY 0.95
/* Never hold a batch longer than this, whatever the fit says (a safety bound). */
#define BD_AUTO_MAX_HOLD_US 100000u
/* Hold only when at least this share of the batch's cost is the fixed per-call part (below
 * it, merging more requests saves too little to be worth any waiting)... */
#define BD_AUTO_MIN_FIXED_SHARE 0.25
/* ...and the instance is at least this busy running batches of the current size (below it
 * there is spare capacity, so nothing is gained by making a request wait). */
#define BD_AUTO_MIN_LOAD 0.5
/* The shortest pause in arrivals that counts as "the burst is over". */
#define BD_AUTO_MIN_QUIET_US 100.0

typedef struct {
    /* Exponentially weighted least-squares sums of (n, t) over executed batches. */
    double w, sn, st, snn, snt;
    uint64_t batches;
    /* Arrivals: an exponentially weighted mean of the gap between requests (1/8 weight for
     * the newest gap). */
    double gap_us;
    double last_gap_us; /* the newest gap alone: the pace inside a burst */
    uint64_t last_arrival_us;
    uint64_t arrivals;
} bd_sched_auto_t;

/* A request arrived at `now_us` (clock values never decrease). */
void bd_sched_auto_arrival(bd_sched_auto_t *a, uint64_t now_us);
/* A batch of `rows` rows took `cost_us` in the backend. */
void bd_sched_auto_batch(bd_sched_auto_t *a, size_t rows, uint64_t cost_us);
/* The fitted cost curve t(n) = fixed + per_item * n (both >= 0). False while the fit is not
 * determined yet (fewer than BD_AUTO_MIN_BATCHES batches, or every batch the same size). */
bool bd_sched_auto_fit(const bd_sched_auto_t *a, double *fixed_us, double *per_item_us);
/* The expected gap between arrivals at `now_us`: the weighted mean gap, or the time since the
 * last arrival when that is longer (so a load that stopped is noticed at once). 0 when fewer
 * than two requests arrived. */
double bd_sched_auto_gap(const bd_sched_auto_t *a, uint64_t now_us);

/* Decide for a batch of `rows` rows that could run now (rows < max_rows) and whose oldest
 * request arrived at `oldest_arrival_us`. Returns 0 to run it now, or the clock time until
 * which it should wait for more requests; *target_rows (may be NULL) gets the batch size
 * worth waiting for (the scheduler runs the batch as soon as it has that many rows).
 *
 * With fixed cost a, per-item cost b, expected gap g between arrivals and `instances`
 * instances, it holds only when all of these are true:
 *   - the fit is determined;
 *   - g < a: the next request is expected sooner than the fixed cost that merging it into
 *     this batch saves;
 *   - a / (a + b*rows) >= BD_AUTO_MIN_FIXED_SHARE: the fixed part matters at this size (a
 *     model whose cost is linear in n, like a CNN on a CPU, never waits);
 *   - (a + b*rows) / (rows * g * instances) >= BD_AUTO_MIN_LOAD: running batches this small
 *     would keep the instances busy (at low load a lone request is not held);
 *   - rows < target = min(max_rows, 1 + a/p, 3a/b), with p = min(g, the newest gap): the
 *     size the requests expected within one fixed cost reach at the current pace (inside a
 *     burst that pace is far faster than the average), and beyond which the fixed share
 *     drops under 25%.
 * It then holds until oldest_arrival_us + min(a, BD_AUTO_MAX_HOLD_US) (waiting longer than one
 * fixed cost cannot pay for itself), or until no request came for max(2p,
 * BD_AUTO_MIN_QUIET_US) after the last one, whichever is first: when a burst ends, its batch
 * goes at once instead of being cut into pieces by a target sized for the average gap. */
uint64_t bd_sched_auto_hold_until(const bd_sched_auto_t *a, size_t rows, size_t max_rows,
                                  int instances, uint64_t oldest_arrival_us, uint64_t now_us,
                                  size_t *target_rows);

#endif
