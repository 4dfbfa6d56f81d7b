/* hist: an HDR-style log-linear latency histogram (fixed memory, O(1) record).
 *
 * Values are unsigned integers in whatever unit the caller picks (ns or us). Values
 * below 256 are counted exactly; above, each power-of-two range [2^k, 2^(k+1)) is cut
 * into 128 equal slots, so a slot is at most 1/128 of its lowest value wide and the
 * value reported for it (the slot's midpoint, clamped to the exact min and max seen)
 * is within 0.4% of every value counted there. The largest trackable value is
 * MH_HIST_LIMIT (2^40 - 1: 100 s in ns fits with room); a histogram may set a lower
 * ceiling, and larger values are counted at the ceiling.
 *
 * Thread safety: none; give each thread its own histogram and merge them. */
#ifndef MH_CLIENT_HIST_H
#define MH_CLIENT_HIST_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"

#define MH_HIST_LIMIT    ((UINT64_C(1) << 40) - 1)
#define MH_HIST_SUB_BITS 7u /* 128 slots per power of two */
#define MH_HIST_SLOTS    ((40u - MH_HIST_SUB_BITS + 1u) << MH_HIST_SUB_BITS) /* 4352 */

struct mh_hist {
    uint64_t highest; /* ceiling: larger values are recorded as this */
    uint64_t count;
    uint64_t min, max; /* exact; min is UINT64_MAX while empty */
    double sum;        /* of the recorded (clamped) values, for the mean */
    uint64_t counts[MH_HIST_SLOTS];
};

/* mh_hist_init empties |h| and sets its ceiling. |highest| must be 1..MH_HIST_LIMIT.
 * Errors: MH_EINVAL. */
MH_MUST_USE int mh_hist_init(struct mh_hist *h, uint64_t highest);

/* mh_hist_reset empties |h|, keeping its ceiling. */
void mh_hist_reset(struct mh_hist *h);

/* mh_hist_record counts |v| once (values above the ceiling count as the ceiling).
 * O(1), no allocation. */
void mh_hist_record(struct mh_hist *h, uint64_t v);

/* mh_hist_merge adds every count of |src| into |dst|. Values of |src| above
 * |dst|'s ceiling count as that ceiling. */
void mh_hist_merge(struct mh_hist *dst, const struct mh_hist *src);

/* mh_hist_quantile returns the value at quantile |q| (0..1; clamped): the smallest
 * recorded value v such that at least q of the counts are <= v, to the histogram's
 * precision. q = 0 gives the exact min, q = 1 the exact max. 0 when empty. */
uint64_t mh_hist_quantile(const struct mh_hist *h, double q);

/* mh_hist_mean: the mean of the recorded values (0 when empty). */
double mh_hist_mean(const struct mh_hist *h);

/* mh_hist_max / mh_hist_min / mh_hist_count: exact; min and max are 0 when empty. */
uint64_t mh_hist_max(const struct mh_hist *h);
uint64_t mh_hist_min(const struct mh_hist *h);
uint64_t mh_hist_count(const struct mh_hist *h);

/* mh_hist_latency_json renders a histogram of nanoseconds as the benchmark tools'
 * "latency_us" object: {"p50", "p90", "p99", "p999", "max", "mean"} in microseconds
 * (max exact). A new reference, or NULL when out of memory. */
json_t *mh_hist_latency_json(const struct mh_hist *h);

#endif
