#include "client/hist.h"

#include <string.h>

#define SUB_COUNT (1u << MH_HIST_SUB_BITS) /* 128 */

/* Slot layout: v < 256 is slot v. Otherwise, with s = msb(v) - 7 (>= 1), v >> s lies
 * in [128, 256) and the slot is s * 128 + (v >> s): each shift level adds 128 slots
 * of width 2^s, contiguous with the exact range below. */
static unsigned slot_of(uint64_t v)
{
    if (v < 2u * SUB_COUNT)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned s = msb - MH_HIST_SUB_BITS;
    return s * SUB_COUNT + (unsigned)(v >> s);
}

/* Lowest value of |slot| and its width. */
static void slot_range(unsigned slot, uint64_t *lo, uint64_t *width)
{
    if (slot < 2u * SUB_COUNT) {
        *lo = slot;
        *width = 1;
        return;
    }
    unsigned s = slot / SUB_COUNT - 1u;
    uint64_t top = slot - s * SUB_COUNT; /* in [128, 256) */
    *lo = top << s;
    *width = UINT64_C(1) << s;
}

int mh_hist_init(struct mh_hist *h, uint64_t highest)
{
    if (highest == 0 || highest > MH_HIST_LIMIT)
        return MH_EINVAL;
    h->highest = highest;
    mh_hist_reset(h);
    return 0;
}

void mh_hist_reset(struct mh_hist *h)
{
    memset(h->counts, 0, sizeof h->counts);
    h->count = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    h->sum = 0;
}

static void record_n(struct mh_hist *h, uint64_t v, uint64_t n)
{
    if (v > h->highest)
        v = h->highest;
    h->counts[slot_of(v)] += n;
    h->count += n;
    h->sum += (double)v * (double)n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void mh_hist_record(struct mh_hist *h, uint64_t v)
{
    record_n(h, v, 1);
}

void mh_hist_merge(struct mh_hist *dst, const struct mh_hist *src)
{
    if (src->count == 0)
        return;
    if (src->max <= dst->highest) {
        /* Same layout, nothing clamps: add slot by slot and carry the exact extremes. */
        for (unsigned i = 0; i < MH_HIST_SLOTS; i++)
            dst->counts[i] += src->counts[i];
        dst->count += src->count;
        dst->sum += src->sum;
        if (src->min < dst->min)
            dst->min = src->min;
        if (src->max > dst->max)
            dst->max = src->max;
        return;
    }
    for (unsigned i = 0; i < MH_HIST_SLOTS; i++) {
        if (src->counts[i] == 0)
            continue;
        uint64_t lo, w;
        slot_range(i, &lo, &w);
        record_n(dst, lo, src->counts[i]);
    }
}

uint64_t mh_hist_quantile(const struct mh_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (!(q > 0.0))
        return h->min;
    if (q >= 1.0)
        return h->max;
    /* Rank of the wanted value, 1-based: ceil(q * count), at least 1. */
    double r = q * (double)h->count;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < MH_HIST_SLOTS; i++) {
        seen += h->counts[i];
        if (seen < rank)
            continue;
        uint64_t lo, w;
        slot_range(i, &lo, &w);
        uint64_t v = lo + (w - 1) / 2;
        if (v < h->min)
            v = h->min;
        if (v > h->max)
            v = h->max;
        return v;
    }
    return h->max;
}

double mh_hist_mean(const struct mh_hist *h)
{
    return h->count == 0 ? 0.0 : h->sum / (double)h->count;
}

uint64_t mh_hist_max(const struct mh_hist *h)
{
    return h->max;
}

uint64_t mh_hist_min(const struct mh_hist *h)
{
    return h->count == 0 ? 0 : h->min;
}

uint64_t mh_hist_count(const struct mh_hist *h)
{
    return h->count;
}

json_t *mh_hist_latency_json(const struct mh_hist *h)
{
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "p50", (double)mh_hist_quantile(h, 0.5) / 1e3,
                     "p90", (double)mh_hist_quantile(h, 0.9) / 1e3, "p99",
                     (double)mh_hist_quantile(h, 0.99) / 1e3, "p999",
                     (double)mh_hist_quantile(h, 0.999) / 1e3, "max", (double)mh_hist_max(h) / 1e3,
                     "mean", mh_hist_mean(h) / 1e3);
}
