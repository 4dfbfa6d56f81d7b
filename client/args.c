#define _GNU_SOURCE
#include "client/args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/b64.h"

static const struct mh_args_flag *find_flag(const struct mh_args_flag *flags, const char *name,
                                            size_t len)
{
    for (const struct mh_args_flag *f = flags; f->name != NULL; f++) {
        if (strlen(f->name) == len && memcmp(f->name, name, len) == 0)
            return f;
    }
    return NULL;
}

static bool is_flag_word(const char *s)
{
    return s[0] == '-' && s[1] == '-' && s[2] != 0;
}

int mh_args_parse(int argc, char *const *argv, const struct mh_args_flag *flags,
                  struct mh_args *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    err[0] = 0;
    if (argc < 1)
        return 0;
    out->items = calloc((size_t)argc, sizeof *out->items);
    out->words = calloc((size_t)argc, sizeof *out->words);
    if (out->items == NULL || out->words == NULL)
        return MH_ENOMEM;
    for (int i = 1; i < argc; i++) {
        const char *w = argv[i];
        if (strcmp(w, "-h") == 0 || strcmp(w, "--help") == 0) {
            out->help = true;
            continue;
        }
        if (!is_flag_word(w)) {
            if (w[0] == '-') {
                snprintf(err, errlen, "unknown option '%s'", w);
                return MH_EINVAL;
            }
            out->words[out->n_words++] = w;
            continue;
        }
        const char *name = w + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const struct mh_args_flag *f = find_flag(flags, name, nlen);
        if (f == NULL) {
            snprintf(err, errlen, "unknown option '--%.*s'", (int)nlen, name);
            return MH_EINVAL;
        }
        switch (f->kind) {
        case MH_ARGS_BOOL:
            if (eq != NULL) {
                snprintf(err, errlen, "option '--%s' takes no value", f->name);
                return MH_EINVAL;
            }
            if (!mh_args_has(out, f->name))
                out->items[out->n_items++] = (struct mh_args_item){f->name, NULL};
            break;
        case MH_ARGS_VALUE: {
            const char *v;
            if (eq != NULL) {
                v = eq + 1;
            } else if (i + 1 < argc) {
                v = argv[++i];
            } else {
                snprintf(err, errlen, "option '--%s' needs a value", f->name);
                return MH_EINVAL;
            }
            if (mh_args_has(out, f->name)) {
                snprintf(err, errlen, "option '--%s' given more than once", f->name);
                return MH_EINVAL;
            }
            out->items[out->n_items++] = (struct mh_args_item){f->name, v};
            break;
        }
        case MH_ARGS_MULTI: {
            size_t before = out->n_items;
            if (eq != NULL)
                out->items[out->n_items++] = (struct mh_args_item){f->name, eq + 1};
            while (i + 1 < argc && !is_flag_word(argv[i + 1]) && strcmp(argv[i + 1], "-h") != 0)
                out->items[out->n_items++] = (struct mh_args_item){f->name, argv[++i]};
            if (out->n_items == before) {
                snprintf(err, errlen, "option '--%s' needs at least one value", f->name);
                return MH_EINVAL;
            }
            break;
        }
        default:
            return MH_EINVAL;
        }
    }
    return 0;
}

void mh_args_free(struct mh_args *a)
{
    free(a->items);
    free(a->words);
    memset(a, 0, sizeof *a);
}

const char *mh_args_get(const struct mh_args *a, const char *name)
{
    return mh_args_nth(a, name, 0);
}

bool mh_args_has(const struct mh_args *a, const char *name)
{
    for (size_t i = 0; i < a->n_items; i++) {
        if (strcmp(a->items[i].name, name) == 0)
            return true;
    }
    return false;
}

size_t mh_args_count(const struct mh_args *a, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < a->n_items; i++) {
        if (strcmp(a->items[i].name, name) == 0 && a->items[i].value != NULL)
            n++;
    }
    return n;
}

const char *mh_args_nth(const struct mh_args *a, const char *name, size_t idx)
{
    for (size_t i = 0; i < a->n_items; i++) {
        if (strcmp(a->items[i].name, name) == 0 && a->items[i].value != NULL) {
            if (idx == 0)
                return a->items[i].value;
            idx--;
        }
    }
    return NULL;
}

static bool in_list(const char *const *list, const char *name)
{
    for (size_t i = 0; list != NULL && list[i] != NULL; i++) {
        if (strcmp(list[i], name) == 0)
            return true;
    }
    return false;
}

int mh_args_check(const struct mh_args *a, const char *const *allowed, const char *const *global,
                  char *err, size_t errlen)
{
    for (size_t i = 0; i < a->n_items; i++) {
        const char *n = a->items[i].name;
        if (!in_list(allowed, n) && !in_list(global, n)) {
            snprintf(err, errlen, "option '--%s' does not apply to this command", n);
            return MH_EINVAL;
        }
    }
    return 0;
}

/* ---- value parsers ----------------------------------------------------- */

/* Reads exactly |n| decimal digits at |s|. */
static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return MH_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int mh_args_parse_time(const char *s, int64_t *out)
{
    size_t len = strlen(s);
    if (len >= 1 && len <= 12 && strspn(s, "0123456789") == len) {
        int64_t v = 0;
        for (size_t i = 0; i < len; i++)
            v = v * 10 + (s[i] - '0');
        *out = v;
        return 0;
    }
    /* YYYY-MM-DDTHH:MM:SSZ */
    if (len != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != 'Z')
        return MH_EINVAL;
    int y, mo, d, h, mi, se;
    MH_TRY(digits(s, 4, &y));
    MH_TRY(digits(s + 5, 2, &mo));
    MH_TRY(digits(s + 8, 2, &d));
    MH_TRY(digits(s + 11, 2, &h));
    MH_TRY(digits(s + 14, 2, &mi));
    MH_TRY(digits(s + 17, 2, &se));
    static const int MDAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59)
        return MH_EINVAL;
    int md = MDAYS[mo - 1] + (mo == 2 && is_leap(y) ? 1 : 0);
    if (d > md)
        return MH_EINVAL;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return MH_EINVAL;
    *out = (int64_t)t;
    return 0;
}

int mh_args_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 10 || strspn(s, "0123456789") != len || (len > 1 && s[0] == '0'))
        return MH_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (uint64_t)(s[i] - '0');
    if (v < min || v > max)
        return MH_EINVAL;
    *out = (uint32_t)v;
    return 0;
}

int mh_args_parse_bool(const char *s, bool *out)
{
    if (strcasecmp(s, "true") == 0) {
        *out = true;
        return 0;
    }
    if (strcasecmp(s, "false") == 0) {
        *out = false;
        return 0;
    }
    return MH_EINVAL;
}

int mh_args_decode_bytes(const char *s, struct mh_buf *out)
{
    size_t len = strlen(s);
    size_t pad = 0;
    while (pad < len && s[len - 1 - pad] == '=')
        pad++;
    /* Padding, when present, must complete a 4-character group, at most "==". */
    if (pad > 2 || (pad > 0 && len % 4 != 0))
        return MH_EBASE64;
    size_t n = len - pad;
    struct mh_buf tmp = {0};
    int rv = mh_buf_append(&tmp, s, n);
    if (rv < 0)
        return rv;
    for (size_t i = 0; i < n; i++) {
        if (tmp.data[i] == '+')
            tmp.data[i] = '-';
        else if (tmp.data[i] == '/')
            tmp.data[i] = '_';
        else if (tmp.data[i] == '=')
            rv = MH_EBASE64; /* padding in the middle */
    }
    if (rv == 0)
        rv = mh_b64url_decode((const char *)tmp.data, n, out);
    mh_buf_free(&tmp);
    return rv;
}

int mh_args_split_tag(const char *s, size_t *key_len, const char **value)
{
    const char *eq = strchr(s, '=');
    if (eq == NULL || eq == s)
        return MH_EINVAL;
    *key_len = (size_t)(eq - s);
    *value = eq + 1;
    return 0;
}
