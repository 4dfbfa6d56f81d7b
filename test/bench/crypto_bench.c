/* crypto-bench: throughput of crypto/ (sign, verify, RSA-OAEP-256 decrypt,
 * AES-256-GCM encrypt) on 1 and 2 threads, next to `openssl speed` run in the
 * same process lifetime for the same algorithms and thread counts.
 *
 *   crypto-bench [--seconds N] [--quick] [--no-openssl] [--filter SUBSTR] [--json FILE]
 *
 * Our figures are wall-clock: every thread counts operations from a common
 * start until the main thread says stop. `openssl speed` runs with -elapsed
 * (wall clock too, so both sides see the same machine load), -mr for parsable
 * output, and -multi T (T processes) for the 2-thread figures. Notes:
 *   - openssl speed has no secp256k1 test in 3.0: P-256K has no reference.
 *   - openssl speed 3.0 has no RSA decrypt test: the reference for
 *     RSA-OAEP-256 decrypt is rsa2048 sign, the same private-key operation.
 *   - AES-GCM is compared with `-aead` (fresh IV, AAD, tag per operation, as
 *     mh_encrypt does); ours also draws a random 96-bit IV per call. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/secret.h"
#include "crypto/alg.h"
#include "crypto/cipher.h"
#include "crypto/key.h"
#include "crypto/rand.h"
#include "crypto/sign.h"

#define MAX_THREADS 2

enum kind { K_SIGN, K_VERIFY, K_DECRYPT, K_GCM };

struct op {
    const char *name; /* row label */
    enum kind kind;
    enum mh_alg alg;
    struct mh_key *key;
    uint8_t digest[64];
    size_t digest_len;
    struct mh_buf input;  /* signature or ciphertext made at setup */
    size_t pt_len;        /* GCM plaintext length */
    const char *ref_name; /* openssl speed reference: which figure */
    double ref[MAX_THREADS + 1];
    double ours[MAX_THREADS + 1];
};

struct worker {
    pthread_t th;
    struct op *op;
    uint64_t count;
    double secs;
    int err;
};

static atomic_bool stop_flag;
static pthread_barrier_t start_barrier;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t gcm_pt[4096];

/* One operation; 0 or a negative code. */
static int run_once(struct op *op, struct mh_buf *scratch)
{
    int rv;
    switch (op->kind) {
    case K_SIGN:
        rv = mh_sign(op->key, op->alg, op->digest, op->digest_len, scratch);
        mh_buf_truncate(scratch, 0);
        return rv;
    case K_VERIFY:
        return mh_verify(op->key, op->alg, op->digest, op->digest_len, op->input.data,
                         op->input.len);
    case K_DECRYPT: {
        struct mh_secret pt = {0};
        rv = mh_decrypt(op->key, op->alg, NULL, op->input.data, op->input.len, &pt);
        mh_secret_free(&pt);
        return rv;
    }
    case K_GCM: {
        struct mh_cipher_result res;
        rv = mh_encrypt(op->key, op->alg, NULL, gcm_pt, op->pt_len, scratch, &res);
        mh_buf_truncate(scratch, 0);
        return rv;
    }
    default:
        return MH_EINVAL;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct mh_buf scratch = {0};
    /* warm-up outside the timed window: fills this thread's caches, as
     * openssl speed sets its contexts up before timing */
    w->err = run_once(w->op, &scratch);
    pthread_barrier_wait(&start_barrier);
    double t0 = now();
    uint64_t n = 0;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed) && w->err == 0) {
        w->err = run_once(w->op, &scratch);
        n++;
    }
    w->secs = now() - t0;
    w->count = n;
    mh_buf_free(&scratch);
    mh_sign_thread_cleanup();
    return NULL;
}

static double measure(struct op *op, int threads, double seconds)
{
    struct worker w[MAX_THREADS];
    memset(w, 0, sizeof w);
    atomic_store(&stop_flag, false);
    if (pthread_barrier_init(&start_barrier, NULL, (unsigned)threads + 1) != 0)
        abort();
    for (int i = 0; i < threads; i++) {
        w[i].op = op;
        if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
            abort();
    }
    pthread_barrier_wait(&start_barrier);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    atomic_store(&stop_flag, true);
    double total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].th, NULL);
        if (w[i].err != 0) {
            fprintf(stderr, "%s: %s\n", op->name, mh_errname(w[i].err));
            exit(1);
        }
        if (w[i].secs > 0)
            total += (double)w[i].count / w[i].secs;
    }
    pthread_barrier_destroy(&start_barrier);
    return total;
}

/* ---- openssl speed ---- */

struct speed {
    /* rsa: 2048/3072/4096; ec: 256/384/521; index [threads] */
    double rsa_sign[3][MAX_THREADS + 1], rsa_verify[3][MAX_THREADS + 1];
    double ec_sign[3][MAX_THREADS + 1], ec_verify[3][MAX_THREADS + 1];
    double gcm32[MAX_THREADS + 1], gcm4k[MAX_THREADS + 1];
};

static int rsa_index(long bits)
{
    return bits == 2048 ? 0 : bits == 3072 ? 1 : bits == 4096 ? 2 : -1;
}

static int ec_index(long bits)
{
    return bits == 256 ? 0 : bits == 384 ? 1 : bits == 521 ? 2 : -1;
}

/* Runs openssl speed with |args| and fills |sp| from its -mr lines that start
 * with "+F" (with -multi those are the sums over the child processes). */
static void run_speed(struct speed *sp, int threads, int seconds, const char *args, int bytes)
{
    char cmd[512], multi[32] = "";
    if (threads > 1)
        snprintf(multi, sizeof multi, "-multi %d", threads);
    snprintf(cmd, sizeof cmd, "openssl speed -mr -elapsed -seconds %d %s %s 2>/dev/null", seconds,
             multi, args);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        fprintf(stderr, "cannot run: %s\n", cmd);
        return;
    }
    char line[512];
    while (fgets(line, sizeof line, p) != NULL) {
        long idx, bits;
        double a, b;
        char name[64];
        if (sscanf(line, "+F2:%ld:%ld:%lf:%lf", &idx, &bits, &a, &b) == 4) {
            int i = rsa_index(bits);
            if (i >= 0) {
                sp->rsa_sign[i][threads] = a;
                sp->rsa_verify[i][threads] = b;
            }
        } else if (sscanf(line, "+F4:%ld:%ld:%lf:%lf", &idx, &bits, &a, &b) == 4) {
            int i = ec_index(bits);
            if (i >= 0) {
                sp->ec_sign[i][threads] = a;
                sp->ec_verify[i][threads] = b;
            }
        } else if (sscanf(line, "+F:%ld:%63[^:]:%lf", &idx, name, &a) == 3 && bytes > 0) {
            if (bytes == 32)
                sp->gcm32[threads] = a / 32;
            else
                sp->gcm4k[threads] = a / 4096;
        }
    }
    if (pclose(p) != 0)
        fprintf(stderr, "warning: '%s' failed\n", cmd);
}

/* ---- setup ---- */

static struct op ops[32];
static size_t n_ops;

static struct mh_key *gen(enum mh_kty kty, unsigned bits, enum mh_curve curve)
{
    struct mh_key *k;
    int rv = mh_key_generate(kty, bits, curve, &k);
    if (rv != 0) {
        fprintf(stderr, "keygen: %s\n", mh_errname(rv));
        exit(1);
    }
    return k;
}

static void must(int rv, const char *what)
{
    if (rv != 0) {
        fprintf(stderr, "%s: %s\n", what, mh_errname(rv));
        exit(1);
    }
}

static void add_sig_ops(const char *sname, const char *vname, struct mh_key *key, enum mh_alg alg,
                        const char *ref)
{
    struct op *s = &ops[n_ops++], *v = &ops[n_ops++];
    *s = (struct op){.name = sname, .kind = K_SIGN, .alg = alg, .key = key, .ref_name = ref};
    s->digest_len = mh_md_len((enum mh_md)mh_alg_digest(alg));
    must(mh_rand_bytes(s->digest, s->digest_len), "rand");
    *v = *s;
    v->name = vname;
    v->kind = K_VERIFY;
    must(mh_sign(key, alg, s->digest, s->digest_len, &v->input), "sign");
}

static void usage(void)
{
    fprintf(stderr, "usage: crypto-bench [--seconds N] [--quick] [--no-openssl] "
                    "[--filter SUBSTR] [--json FILE]\n");
    exit(2);
}

static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

int main(int argc, char **argv)
{
    int seconds = 2;
    bool quick = false, with_openssl = true;
    const char *json_path = NULL, *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atoi(argv[++i]);
            if (seconds < 1 || seconds > 600)
                usage();
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--no-openssl") == 0) {
            with_openssl = false;
        } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
            filter = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json_path = argv[++i];
        } else {
            usage();
        }
    }
    /* --quick is a smoke test: a tenth of a second per figure, no openssl. */
    double secs = quick ? 0.1 : (double)seconds;
    if (quick)
        with_openssl = false;

    setvbuf(stdout, NULL, _IOLBF, 0);
    must(mh_alg_init(), "mh_alg_init");
    struct mh_key *rsa2k = gen(MH_KTY_RSA, 2048, MH_CURVE_NONE);
    struct mh_key *rsa3k = gen(MH_KTY_RSA, 3072, MH_CURVE_NONE);
    struct mh_key *rsa4k = gen(MH_KTY_RSA, 4096, MH_CURVE_NONE);
    struct mh_key *p256 = gen(MH_KTY_EC, 0, MH_CURVE_P256);
    struct mh_key *p256k = gen(MH_KTY_EC, 0, MH_CURVE_P256K);
    struct mh_key *p384 = gen(MH_KTY_EC, 0, MH_CURVE_P384);
    struct mh_key *p521 = gen(MH_KTY_EC, 0, MH_CURVE_P521);
    struct mh_key *aes = gen(MH_KTY_OCT, 256, MH_CURVE_NONE);

    add_sig_ops("RS256 sign RSA-2048", "RS256 verify RSA-2048", rsa2k, MH_ALG_RS256, "rsa2048");
    add_sig_ops("PS256 sign RSA-2048", "PS256 verify RSA-2048", rsa2k, MH_ALG_PS256, "rsa2048");
    add_sig_ops("RS256 sign RSA-3072", "RS256 verify RSA-3072", rsa3k, MH_ALG_RS256, "rsa3072");
    add_sig_ops("RS256 sign RSA-4096", "RS256 verify RSA-4096", rsa4k, MH_ALG_RS256, "rsa4096");
    add_sig_ops("ES256 sign P-256", "ES256 verify P-256", p256, MH_ALG_ES256, "ecdsap256");
    add_sig_ops("ES256K sign P-256K", "ES256K verify P-256K", p256k, MH_ALG_ES256K, NULL);
    add_sig_ops("ES384 sign P-384", "ES384 verify P-384", p384, MH_ALG_ES384, "ecdsap384");
    add_sig_ops("ES512 sign P-521", "ES512 verify P-521", p521, MH_ALG_ES512, "ecdsap521");

    struct op *dec = &ops[n_ops++];
    *dec = (struct op){.name = "RSA-OAEP-256 decrypt RSA-2048",
                       .kind = K_DECRYPT,
                       .alg = MH_ALG_RSA_OAEP_256,
                       .key = rsa2k,
                       .ref_name = "rsa2048"};
    {
        struct mh_cipher_result res;
        uint8_t cek[32] = {0};
        must(mh_encrypt(rsa2k, MH_ALG_RSA_OAEP_256, NULL, cek, sizeof cek, &dec->input, &res),
             "oaep encrypt");
    }
    static const size_t gcm_sizes[] = {32, 4096};
    static const char *const gcm_names[] = {"A256GCM encrypt 32 B", "A256GCM encrypt 4 KiB"};
    for (size_t i = 0; i < 2; i++) {
        struct op *g = &ops[n_ops++];
        *g = (struct op){.name = gcm_names[i],
                         .kind = K_GCM,
                         .alg = MH_ALG_A256GCM,
                         .key = aes,
                         .pt_len = gcm_sizes[i],
                         .ref_name = "aes-256-gcm"};
    }

    double load0 = loadavg();
    /* openssl speed and our rows that compare with it run back to back, per
     * thread count, so both sides see the same machine load (other
     * processes on a small machine shift it by the minute). */
    static const struct {
        const char *ref, *args;
        int bytes;
    } groups[] = {
        {"rsa2048", "rsa2048", 0},
        {"rsa3072", "rsa3072", 0},
        {"rsa4096", "rsa4096", 0},
        {"ecdsap256", "ecdsap256", 0},
        {"ecdsap384", "ecdsap384", 0},
        {"ecdsap521", "ecdsap521", 0},
        {"aes-256-gcm", "-aead -evp aes-256-gcm -bytes 32", 32},
        {"aes-256-gcm", "-aead -evp aes-256-gcm -bytes 4096", 4096},
        {NULL, NULL, 0}, /* rows without a reference */
    };
    struct speed sp;
    memset(&sp, 0, sizeof sp);
    fprintf(stderr, "measuring %zu rows x %d thread counts, %.1f s each%s...\n", n_ops, MAX_THREADS,
            secs, with_openssl ? ", with openssl speed" : "");
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        for (int t = 1; t <= MAX_THREADS; t++) {
            bool any = false;
            for (size_t i = 0; i < n_ops; i++) {
                struct op *o = &ops[i];
                bool member = groups[g].ref == NULL
                                  ? o->ref_name == NULL
                                  : o->ref_name != NULL &&
                                        strcmp(o->ref_name, groups[g].ref) == 0 &&
                                        (o->kind != K_GCM || o->pt_len == (size_t)groups[g].bytes);
                if (!member || (filter != NULL && strstr(o->name, filter) == NULL))
                    continue;
                any = true;
                o->ours[t] = measure(o, t, secs);
            }
            if (any && with_openssl && groups[g].args != NULL)
                run_speed(&sp, t, seconds, groups[g].args, groups[g].bytes);
        }
    }
    if (with_openssl) {
        for (size_t i = 0; i < n_ops; i++) {
            struct op *o = &ops[i];
            if (o->ref_name == NULL)
                continue;
            for (int t = 1; t <= MAX_THREADS; t++) {
                int r = strncmp(o->ref_name, "rsa", 3) == 0 ? rsa_index(atol(o->ref_name + 3)) : -1;
                int e =
                    strncmp(o->ref_name, "ecdsap", 6) == 0 ? ec_index(atol(o->ref_name + 6)) : -1;
                bool sign = o->kind == K_SIGN || o->kind == K_DECRYPT;
                if (r >= 0)
                    o->ref[t] = sign ? sp.rsa_sign[r][t] : sp.rsa_verify[r][t];
                else if (e >= 0)
                    o->ref[t] = sign ? sp.ec_sign[e][t] : sp.ec_verify[e][t];
                else if (o->kind == K_GCM)
                    o->ref[t] = o->pt_len == 32 ? sp.gcm32[t] : sp.gcm4k[t];
            }
        }
    }
    double load1 = loadavg();

    printf("crypto-bench: %.1f s per figure, wall clock; openssl speed -elapsed%s\n", secs,
           with_openssl ? "" : " (skipped)");
    fflush(stderr);
    printf("%-31s %3s %12s %12s %7s  %s\n", "operation", "thr", "mhsm ops/s", "openssl ops/s",
           "ratio", "openssl reference");
    json_t *rows = json_array();
    for (size_t i = 0; i < n_ops; i++) {
        struct op *o = &ops[i];
        if (filter != NULL && strstr(o->name, filter) == NULL)
            continue;
        for (int t = 1; t <= MAX_THREADS; t++) {
            const char *ref = o->ref_name == NULL    ? "none (no secp256k1 in speed)"
                              : o->kind == K_DECRYPT ? "rsa2048 sign (same private op)"
                              : o->kind == K_GCM     ? "-aead -evp aes-256-gcm"
                                                     : o->ref_name;
            if (o->ref[t] > 0)
                printf("%-31s %3d %12.0f %13.0f %6.1f%%  %s\n", o->name, t, o->ours[t], o->ref[t],
                       100.0 * o->ours[t] / o->ref[t], ref);
            else
                printf("%-31s %3d %12.0f %13s %7s  %s\n", o->name, t, o->ours[t], "-", "-",
                       with_openssl ? ref : "");
            json_array_append_new(rows, json_pack("{s:s, s:i, s:f, s:f}", "op", o->name, "threads",
                                                  t, "ops", o->ours[t], "openssl", o->ref[t]));
        }
    }
    printf("load average (1 min) before/after: %.2f / %.2f on %ld CPUs\n", load0, load1,
           sysconf(_SC_NPROCESSORS_ONLN));
    if (json_path != NULL) {
        json_t *doc = json_pack("{s:f, s:f, s:f, s:o}", "seconds", secs, "load_before", load0,
                                "load_after", load1, "rows", rows);
        if (doc == NULL || json_dump_file(doc, json_path, JSON_INDENT(2)) != 0) {
            fprintf(stderr, "cannot write %s\n", json_path);
            return 1;
        }
        json_decref(doc);
    } else {
        json_decref(rows);
    }

    for (size_t i = 0; i < n_ops; i++)
        mh_buf_free(&ops[i].input);
    mh_key_free(rsa2k);
    mh_key_free(rsa3k);
    mh_key_free(rsa4k);
    mh_key_free(p256);
    mh_key_free(p256k);
    mh_key_free(p384);
    mh_key_free(p521);
    mh_key_free(aes);
    mh_sign_thread_cleanup();
    return 0;
}
