#define _GNU_SOURCE
#include "testutil.h"

#include "crypto/key.h"

#include <errno.h>
#include <stdint.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[PATH_MAX];

static void rm_tmpdir(void)
{
    if (tmpdir[0] != 0 && getenv("MH_TEST_KEEP") == NULL) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

const char *tu_tmpdir(void)
{
    if (tmpdir[0] != 0)
        return tmpdir;
    const char *base = getenv("MH_TEST_TMPDIR");
    if (base == NULL || base[0] == 0)
        base = "/tmp";
    (void)mkdir(base, 0700);
    snprintf(tmpdir, sizeof tmpdir, "%s/mhtest.XXXXXX", base);
    if (mkdtemp(tmpdir) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", tmpdir, strerror(errno));
        abort();
    }
    atexit(rm_tmpdir);
    return tmpdir;
}

void tu_path(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", tu_tmpdir(), name);
    assert_true(n > 0 && (size_t)n < cap);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t tu_unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex);
    assert_int_equal(n % 2, 0);
    assert_true(n / 2 <= cap);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        assert_true(hi >= 0 && lo >= 0);
        out[i] = (uint8_t)(hi * 16 + lo);
    }
    return n / 2;
}

void tu_read_tmp(const char *name, struct mh_buf *out)
{
    char p[PATH_MAX];
    tu_path(p, sizeof p, name);
    tu_read_file(p, out);
}

struct mh_key *tu_oct_key(const char *hex)
{
    uint8_t k[32];
    size_t n = tu_unhex(hex, k, sizeof k);
    struct mh_key *key = NULL;
    assert_int_equal(mh_key_from_oct(k, n, &key), 0);
    return key;
}

void tu_write_file(const char *path, const void *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

void tu_read_file(const char *path, struct mh_buf *out)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(mh_buf_append(out, chunk, n), 0);
    assert_int_equal(fclose(f), 0);
}

int tu_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    char log[PATH_MAX], full[8192 + PATH_MAX + 32];
    tu_path(log, sizeof log, "sh.log");
    snprintf(full, sizeof full, "(%s) >'%s' 2>&1", cmd, log);
    int st = system(full);
    int rc = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
    if (rc != 0) {
        fprintf(stderr, "command exited %d: %s\n", rc, cmd);
        char show[PATH_MAX + 64];
        snprintf(show, sizeof show, "head -c 2000 '%s' >&2", log);
        if (system(show) != 0)
            fprintf(stderr, "(no log)\n");
    }
    return rc;
}

uint64_t tu_rng_next(struct tu_rng *r)
{
    /* xorshift64*: deterministic across runs and machines */
    uint64_t x = r->s ? r->s : 0x9e3779b97f4a7c15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static size_t below(struct tu_rng *r, size_t n)
{
    return n == 0 ? 0 : (size_t)(tu_rng_next(r) % n);
}

void tu_mutate(struct tu_rng *r, const uint8_t *in, size_t len, struct mh_buf *out)
{
    static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, '"', '{', '}',
                                          '[',  ']',  ',',  ':',  '.',  '=', '+', '/',
                                          '-',  '_',  '\\', 'A',  '0',  ' ', '\n'};
    static const char *const splices[] = {"\"\"",  "null", "[]",   "{}", "1e999",   "-1",
                                          "\"x\"", "AAAA", "====", "..", "\\u0000", "true"};
    out->len = 0;
    assert_int_equal(mh_buf_append(out, in, len), 0);
    int rounds = 1 + (int)below(r, 3);
    for (int i = 0; i < rounds; i++) {
        size_t n = out->len;
        switch (below(r, 8)) {
        case 0: /* flip a bit */
            if (n > 0)
                out->data[below(r, n)] ^= (uint8_t)(1u << below(r, 8));
            break;
        case 1: /* overwrite a byte */
            if (n > 0)
                out->data[below(r, n)] = interesting[below(r, sizeof interesting)];
            break;
        case 2: /* truncate */
            mh_buf_truncate(out, below(r, n + 1));
            break;
        case 3: { /* delete a range */
            if (n == 0)
                break;
            size_t at = below(r, n), cnt = 1 + below(r, n - at);
            memmove(out->data + at, out->data + at + cnt, n - at - cnt);
            out->len -= cnt;
            break;
        }
        case 4: { /* insert an interesting byte */
            uint8_t b = interesting[below(r, sizeof interesting)];
            size_t at = below(r, n + 1);
            assert_int_equal(mh_buf_append_u8(out, 0), 0);
            memmove(out->data + at + 1, out->data + at, n - at);
            out->data[at] = b;
            break;
        }
        case 5: { /* duplicate a chunk at the end */
            if (n == 0)
                break;
            size_t at = below(r, n), cnt = 1 + below(r, n - at < 64 ? n - at : 64);
            uint8_t tmp[64];
            memcpy(tmp, out->data + at, cnt);
            assert_int_equal(mh_buf_append(out, tmp, cnt), 0);
            break;
        }
        case 6: { /* splice a token in place of a range */
            const char *t = splices[below(r, sizeof splices / sizeof splices[0])];
            size_t tl = strlen(t), at = below(r, n + 1);
            size_t cnt = at < n ? below(r, (n - at < 16 ? n - at : 16) + 1) : 0;
            struct mh_buf tmp = {0};
            assert_int_equal(mh_buf_append(&tmp, out->data, at), 0);
            assert_int_equal(mh_buf_append(&tmp, t, tl), 0);
            assert_int_equal(mh_buf_append(&tmp, out->data + at + cnt, n - at - cnt), 0);
            out->len = 0;
            assert_int_equal(mh_buf_append(out, tmp.data, tmp.len), 0);
            mh_buf_free(&tmp);
            break;
        }
        default: /* random byte */
            if (n > 0)
                out->data[below(r, n)] = (uint8_t)tu_rng_next(r);
            break;
        }
    }
    if (out->data != NULL)
        out->data[out->len] = 0;
}
