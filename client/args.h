/* args: the mhsm CLI's command line: command words and --flags, and the parsers for values.
 *
 * Flags may appear anywhere among the command words ("mhsm --endpoint X key create
 * --name k"). A value flag takes the next argument whatever it looks like (so a
 * base64url value may start with '-'), or "--flag=value". A multi flag (--ops,
 * --tags, --sd-wrapping-keys) takes every following argument up to the next one that
 * starts with "--", and may be repeated; its values accumulate. A bool flag takes no
 * value. "-h" is "--help". Values are borrowed from argv, never copied.
 *
 * Thread safety: pure functions over caller-owned data. */
#ifndef MH_CLIENT_ARGS_H
#define MH_CLIENT_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

enum mh_args_kind { MH_ARGS_VALUE, MH_ARGS_MULTI, MH_ARGS_BOOL };

struct mh_args_flag {
    const char *name; /* without the leading "--" */
    enum mh_args_kind kind;
};

/* One occurrence of a flag value: a multi flag has one item per value, a bool flag
 * one item with value NULL. */
struct mh_args_item {
    const char *name;
    const char *value;
};

struct mh_args {
    /* The words that are not flags or flag values, in order: the command words, then
     * any operands (`audit verify FILE...`); the command decides how many it takes. */
    const char **words; /* owned array, borrowed strings */
    size_t n_words;
    struct mh_args_item *items; /* owned; free with mh_args_free */
    size_t n_items;
    bool help;
};

/* mh_args_parse splits argv[1..argc-1] by the flag table |flags| (terminated by a
 * NULL name). On error a one-line reason is written to |err|. Errors: MH_EINVAL
 * (unknown flag, missing value, a value flag given twice),
 * MH_ENOMEM. *out needs mh_args_free in every case. */
MH_MUST_USE int mh_args_parse(int argc, char *const *argv, const struct mh_args_flag *flags,
                              struct mh_args *out, char *err, size_t errlen);

void mh_args_free(struct mh_args *a);

/* The value of flag |name| (the first one), or NULL when absent or a bool flag. */
const char *mh_args_get(const struct mh_args *a, const char *name);
/* Whether flag |name| occurs. */
bool mh_args_has(const struct mh_args *a, const char *name);
/* Number of values of flag |name| and the i-th of them. */
size_t mh_args_count(const struct mh_args *a, const char *name);
const char *mh_args_nth(const struct mh_args *a, const char *name, size_t i);

/* mh_args_check verifies that every flag present is in |allowed| (NULL-terminated)
 * or in |global| (NULL-terminated). On error the first offending flag is named in
 * |err|. Errors: MH_EINVAL. */
MH_MUST_USE int mh_args_check(const struct mh_args *a, const char *const *allowed,
                              const char *const *global, char *err, size_t errlen);

/* ---- value parsers (all: MH_EINVAL on anything not exactly of the form) ---- */

/* Unix seconds (1..12 decimal digits) or "YYYY-MM-DDTHH:MM:SSZ" (UTC, 1970..9999,
 * fields range-checked, February 29 only in leap years). */
MH_MUST_USE int mh_args_parse_time(const char *s, int64_t *out);

/* Decimal in [min, max], no sign, no leading zeros beyond "0" itself. */
MH_MUST_USE int mh_args_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out);

/* "true" or "false" (any case). */
MH_MUST_USE int mh_args_parse_bool(const char *s, bool *out);

/* Binary input: base64url or standard base64, padded or not; no whitespace. The
 * bytes are appended to |out| (unchanged on error). Errors: MH_EBASE64, MH_ENOMEM. */
MH_MUST_USE int mh_args_decode_bytes(const char *s, struct mh_buf *out);

/* Splits "key=value" at the first '='; the key must be non-empty. *key_len is the
 * key's length, *value points into |s|. */
MH_MUST_USE int mh_args_split_tag(const char *s, size_t *key_len, const char **value);

#endif
