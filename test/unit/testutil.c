#define _GNU_SOURCE
#include "testutil.h"

#include <errno.h>
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
