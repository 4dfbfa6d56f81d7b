/* testutil: helpers shared by the unit tests: hex, temporary files, running the
 * openssl command line for cross-checks. Test code only. */
#ifndef MH_TEST_TESTUTIL_H
#define MH_TEST_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/buf.h"

/* Decodes the hex string |hex| (no separators) into |out|; aborts the test on
 * bad input. Returns the number of bytes. */
size_t tu_unhex(const char *hex, uint8_t *out, size_t cap);

/* A fresh private directory for this test process (under $MH_TEST_TMPDIR or
 * /tmp), removed at exit. The returned string is static. */
const char *tu_tmpdir(void);

/* Builds "<tmpdir>/<name>" into |out| (PATH_MAX). */
void tu_path(char *out, size_t cap, const char *name);

/* Reads "<tmpdir>/<name>" whole, appending to |out|; aborts the test on failure. */
void tu_read_tmp(const char *name, struct mh_buf *out);

/* An AES key from |hex| (32, 48 or 64 hex digits); aborts the test otherwise.
 * The caller frees it with mh_key_free. */
struct mh_key *tu_oct_key(const char *hex);

/* Writes / reads a whole file; abort the test on failure. */
void tu_write_file(const char *path, const void *p, size_t len);
void tu_read_file(const char *path, struct mh_buf *out);

/* Runs |cmd| through /bin/sh with stdout+stderr to a log; returns its exit
 * status (or -1). The command line is printed when it fails. */
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

/* Deterministic input mutation for parser robustness tests (a poor man's
 * fuzzer that runs everywhere, under ASan in CI). */
struct tu_rng {
    uint64_t s;
};
uint64_t tu_rng_next(struct tu_rng *r);
/* Replaces |out| with a mutation of |in|: bit flips, byte overwrites with
 * interesting values, truncation, insertion, deletion, chunk duplication, or
 * a splice of base64url/JSON punctuation. The kind is drawn from |r|. */
void tu_mutate(struct tu_rng *r, const uint8_t *in, size_t len, struct mh_buf *out);
