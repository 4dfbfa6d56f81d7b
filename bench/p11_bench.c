/* p11-bench: the SoftHSM2 peer of the benchmark: PKCS#11 sign throughput and latency.
 *
 * Loads a PKCS#11 module with dlopen, logs in to the token with the given label,
 * generates one key pair (sensitive, non-extractable session objects) and lets T threads,
 * each with its own session, sign SHA-256 digests for a fixed duration: CKM_RSA_PKCS over
 * DigestInfo || digest for RS256, CKM_ECDSA over the digest for ES256 -- the same private
 * key work mhsm's Sign does. Latency per call goes into client/hist (the histogram
 * mhsm-bench uses), so the two tools' figures compare. JSON shape: see
 * /work/notes/contract6.md ("tool": "p11-bench", "target": "softhsm2").
 *
 * Exit status: 0 when the run completed (errors are counted), 1 when setup failed or no
 * call succeeded, 2 on usage errors. */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#include "client/hist.h"
#include "common/err.h"

#define MAX_THREADS 256
/* A thread that sees this many errors in a row stops: the module is not going to recover,
 * and spinning on a failing call would only burn the CPU the other threads measure on. */
#define MAX_ERR_RUN 1000

enum op { OP_RS256_2048, OP_ES256 };

struct opts {
    const char *module;
    const char *token_label;
    const char *pin;
    const char *op_name;
    enum op op;
    unsigned threads;
    double duration_s;
    double warmup_s;
    const char *json_path;
    const char *label;
};

struct shared {
    CK_FUNCTION_LIST_PTR f;
    CK_SLOT_ID slot;
    CK_OBJECT_HANDLE priv;
    enum op op;
    atomic_bool measuring; /* set after the warm-up: calls started later are counted */
    atomic_bool stop;
};

struct worker {
    pthread_t tid;
    struct shared *sh;
    struct mh_hist hist; /* nanoseconds */
    uint64_t ops;
    uint64_t errors;
    CK_RV first_err;   /* first failing return value, CKR_OK if none */
    const char *where; /* the call that returned first_err */
};

/* ------------------------------------------------------------------ CKR names */

#define CKR_NAMES(X)                                                                               \
    X(CKR_OK)                                                                                      \
    X(CKR_CANCEL)                                                                                  \
    X(CKR_HOST_MEMORY)                                                                             \
    X(CKR_SLOT_ID_INVALID)                                                                         \
    X(CKR_GENERAL_ERROR)                                                                           \
    X(CKR_FUNCTION_FAILED)                                                                         \
    X(CKR_ARGUMENTS_BAD)                                                                           \
    X(CKR_NO_EVENT)                                                                                \
    X(CKR_NEED_TO_CREATE_THREADS)                                                                  \
    X(CKR_CANT_LOCK)                                                                               \
    X(CKR_ATTRIBUTE_READ_ONLY)                                                                     \
    X(CKR_ATTRIBUTE_SENSITIVE)                                                                     \
    X(CKR_ATTRIBUTE_TYPE_INVALID)                                                                  \
    X(CKR_ATTRIBUTE_VALUE_INVALID)                                                                 \
    X(CKR_ACTION_PROHIBITED)                                                                       \
    X(CKR_DATA_INVALID)                                                                            \
    X(CKR_DATA_LEN_RANGE)                                                                          \
    X(CKR_DEVICE_ERROR)                                                                            \
    X(CKR_DEVICE_MEMORY)                                                                           \
    X(CKR_DEVICE_REMOVED)                                                                          \
    X(CKR_FUNCTION_CANCELED)                                                                       \
    X(CKR_FUNCTION_NOT_PARALLEL)                                                                   \
    X(CKR_FUNCTION_NOT_SUPPORTED)                                                                  \
    X(CKR_KEY_HANDLE_INVALID)                                                                      \
    X(CKR_KEY_SIZE_RANGE)                                                                          \
    X(CKR_KEY_TYPE_INCONSISTENT)                                                                   \
    X(CKR_KEY_FUNCTION_NOT_PERMITTED)                                                              \
    X(CKR_MECHANISM_INVALID)                                                                       \
    X(CKR_MECHANISM_PARAM_INVALID)                                                                 \
    X(CKR_OBJECT_HANDLE_INVALID)                                                                   \
    X(CKR_OPERATION_ACTIVE)                                                                        \
    X(CKR_OPERATION_NOT_INITIALIZED)                                                               \
    X(CKR_PIN_INCORRECT)                                                                           \
    X(CKR_PIN_INVALID)                                                                             \
    X(CKR_PIN_LEN_RANGE)                                                                           \
    X(CKR_PIN_EXPIRED)                                                                             \
    X(CKR_PIN_LOCKED)                                                                              \
    X(CKR_SESSION_CLOSED)                                                                          \
    X(CKR_SESSION_COUNT)                                                                           \
    X(CKR_SESSION_HANDLE_INVALID)                                                                  \
    X(CKR_SESSION_PARALLEL_NOT_SUPPORTED)                                                          \
    X(CKR_SESSION_READ_ONLY)                                                                       \
    X(CKR_SESSION_EXISTS)                                                                          \
    X(CKR_SIGNATURE_INVALID)                                                                       \
    X(CKR_SIGNATURE_LEN_RANGE)                                                                     \
    X(CKR_TEMPLATE_INCOMPLETE)                                                                     \
    X(CKR_TEMPLATE_INCONSISTENT)                                                                   \
    X(CKR_TOKEN_NOT_PRESENT)                                                                       \
    X(CKR_TOKEN_NOT_RECOGNIZED)                                                                    \
    X(CKR_TOKEN_WRITE_PROTECTED)                                                                   \
    X(CKR_USER_ALREADY_LOGGED_IN)                                                                  \
    X(CKR_USER_NOT_LOGGED_IN)                                                                      \
    X(CKR_USER_PIN_NOT_INITIALIZED)                                                                \
    X(CKR_USER_TYPE_INVALID)                                                                       \
    X(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)                                                          \
    X(CKR_USER_TOO_MANY_TYPES)                                                                     \
    X(CKR_RANDOM_SEED_NOT_SUPPORTED)                                                               \
    X(CKR_RANDOM_NO_RNG)                                                                           \
    X(CKR_DOMAIN_PARAMS_INVALID)                                                                   \
    X(CKR_CURVE_NOT_SUPPORTED)                                                                     \
    X(CKR_BUFFER_TOO_SMALL)                                                                        \
    X(CKR_CRYPTOKI_NOT_INITIALIZED)                                                                \
    X(CKR_CRYPTOKI_ALREADY_INITIALIZED)                                                            \
    X(CKR_MUTEX_BAD)                                                                               \
    X(CKR_MUTEX_NOT_LOCKED)                                                                        \
    X(CKR_PIN_TOO_WEAK)                                                                            \
    X(CKR_PUBLIC_KEY_INVALID)                                                                      \
    X(CKR_FUNCTION_REJECTED)

static const char *ckr_name(CK_RV rv)
{
    switch (rv) {
#define CKR_CASE_(n)                                                                               \
    case n:                                                                                        \
        return #n;
        CKR_NAMES(CKR_CASE_)
#undef CKR_CASE_
    default:
        return "CKR_(unknown)";
    }
}

static void ck_fail(const char *call, CK_RV rv)
{
    fprintf(stderr, "p11-bench: %s failed: %s (0x%lx)\n", call, ckr_name(rv), (unsigned long)rv);
}

/* ------------------------------------------------------------------ time */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_s(double s)
{
    if (s <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ usage */

static void usage(FILE *out)
{
    fprintf(out, "usage: p11-bench --module PATH --token-label LABEL --pin PIN\n"
                 "                 --op sign-rs256-2048|sign-es256 [--threads T] [--duration S]\n"
                 "                 [--warmup S] [--json FILE|-] [--label TEXT]\n"
                 "Signs SHA-256 digests through PKCS#11 with T threads (one session each) for S\n"
                 "seconds; prints ops/s and latency percentiles (microseconds).\n");
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        return MH_EINVAL;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longs[] = {
        {"module", required_argument, NULL, 'm'},
        {"token-label", required_argument, NULL, 't'},
        {"pin", required_argument, NULL, 'p'},
        {"op", required_argument, NULL, 'o'},
        {"threads", required_argument, NULL, 'T'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"json", required_argument, NULL, 'j'},
        {"label", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    double threads = 1;
    *o = (struct opts){.duration_s = 10, .warmup_s = 1, .label = ""};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->module = optarg;
            break;
        case 't':
            o->token_label = optarg;
            break;
        case 'p':
            o->pin = optarg;
            break;
        case 'o':
            o->op_name = optarg;
            break;
        case 'T':
            if (parse_double(optarg, 1, MAX_THREADS, &threads) != 0 ||
                threads != (double)(unsigned)threads) {
                fprintf(stderr, "p11-bench: --threads must be an integer in 1..%d\n", MAX_THREADS);
                return MH_EINVAL;
            }
            break;
        case 'd':
            if (parse_double(optarg, 0.001, 86400, &o->duration_s) != 0) {
                fprintf(stderr, "p11-bench: --duration must be seconds in (0, 86400]\n");
                return MH_EINVAL;
            }
            break;
        case 'w':
            if (parse_double(optarg, 0, 3600, &o->warmup_s) != 0) {
                fprintf(stderr, "p11-bench: --warmup must be seconds in [0, 3600]\n");
                return MH_EINVAL;
            }
            break;
        case 'j':
            o->json_path = optarg;
            break;
        case 'l':
            o->label = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return MH_EINVAL;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "p11-bench: unexpected argument '%s'\n", argv[optind]);
        return MH_EINVAL;
    }
    if (o->module == NULL || o->token_label == NULL || o->pin == NULL || o->op_name == NULL) {
        fprintf(stderr, "p11-bench: --module, --token-label, --pin and --op are required\n");
        return MH_EINVAL;
    }
    if (strcmp(o->op_name, "sign-rs256-2048") == 0) {
        o->op = OP_RS256_2048;
    } else if (strcmp(o->op_name, "sign-es256") == 0) {
        o->op = OP_ES256;
    } else {
        fprintf(stderr, "p11-bench: unknown --op '%s' (sign-rs256-2048 or sign-es256)\n",
                o->op_name);
        return MH_EINVAL;
    }
    if (strlen(o->token_label) > 32) {
        fprintf(stderr, "p11-bench: --token-label is longer than 32 bytes\n");
        return MH_EINVAL;
    }
    o->threads = (unsigned)threads;
    return 0;
}

/* ------------------------------------------------------------------ PKCS#11 setup */

static int load_module(const char *path, void **dl, CK_FUNCTION_LIST_PTR *f)
{
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (*dl == NULL) {
        fprintf(stderr, "p11-bench: dlopen %s: %s\n", path, dlerror());
        return MH_ENOTFOUND;
    }
    CK_C_GetFunctionList get = NULL;
    /* POSIX dlsym returns an object pointer; the cast through a union-free memcpy keeps
     * -Wpedantic's function/object pointer rule out of the way. */
    void *sym = dlsym(*dl, "C_GetFunctionList");
    if (sym == NULL) {
        fprintf(stderr, "p11-bench: %s has no C_GetFunctionList: %s\n", path, dlerror());
        goto err_after_dlopen;
    }
    memcpy(&get, &sym, sizeof(get));
    CK_RV rv = get(f);
    if (rv != CKR_OK) {
        ck_fail("C_GetFunctionList", rv);
        goto err_after_dlopen;
    }
    return 0;

err_after_dlopen:
    dlclose(*dl);
    *dl = NULL;
    return MH_EINVAL;
}

/* find_slot: the slot whose token label (blank-padded to 32 bytes) equals |label|. */
static int find_slot(CK_FUNCTION_LIST_PTR f, const char *label, CK_SLOT_ID *out)
{
    CK_ULONG n = 0;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv != CKR_OK) {
        ck_fail("C_GetSlotList", rv);
        return MH_EINVAL;
    }
    if (n == 0) {
        fprintf(stderr, "p11-bench: the module has no slot with a token\n");
        return MH_ENOTFOUND;
    }
    CK_SLOT_ID *slots = calloc(n, sizeof(*slots));
    if (slots == NULL) {
        return MH_ENOMEM;
    }
    int r = MH_ENOTFOUND;
    rv = f->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK) {
        ck_fail("C_GetSlotList", rv);
        r = MH_EINVAL;
        goto out;
    }
    char want[32];
    memset(want, ' ', sizeof(want));
    memcpy(want, label, strlen(label));
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) {
            continue;
        }
        if (memcmp(ti.label, want, sizeof(want)) == 0) {
            *out = slots[i];
            r = 0;
            goto out;
        }
    }
    fprintf(stderr, "p11-bench: no token labelled '%s'\n", label);
out:
    free(slots);
    return r;
}

/* generate_pair: one key pair as session objects of |s| (visible to every session of this
 * process while |s| stays open), private half sensitive and not extractable. */
static int generate_pair(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, enum op op,
                         CK_OBJECT_HANDLE *priv)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = 2048;
    CK_BYTE e65537[] = {0x01, 0x00, 0x01};
    /* DER OID 1.2.840.10045.3.1.7 (prime256v1) */
    CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_ATTRIBUTE rsa_pub[] = {
        {CKA_TOKEN, &no, sizeof(no)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_MODULUS_BITS, &bits, sizeof(bits)},
        {CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537)},
    };
    CK_ATTRIBUTE ec_pub[] = {
        {CKA_TOKEN, &no, sizeof(no)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_EC_PARAMS, p256, sizeof(p256)},
    };
    CK_ATTRIBUTE priv_t[] = {
        {CKA_TOKEN, &no, sizeof(no)},       {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SIGN, &yes, sizeof(yes)},      {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},
    };
    CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE *pub = rsa_pub;
    CK_ULONG npub = sizeof(rsa_pub) / sizeof(rsa_pub[0]);
    switch (op) {
    case OP_RS256_2048:
        break;
    case OP_ES256:
        mech.mechanism = CKM_EC_KEY_PAIR_GEN;
        pub = ec_pub;
        npub = sizeof(ec_pub) / sizeof(ec_pub[0]);
        break;
    default:
        return MH_EINVAL;
    }
    CK_OBJECT_HANDLE pubh = CK_INVALID_HANDLE;
    CK_RV rv = f->C_GenerateKeyPair(s, &mech, pub, npub, priv_t, sizeof(priv_t) / sizeof(priv_t[0]),
                                    &pubh, priv);
    if (rv != CKR_OK) {
        ck_fail("C_GenerateKeyPair", rv);
        return MH_ECRYPTO;
    }
    return 0;
}

/* ------------------------------------------------------------------ workers */

/* DER DigestInfo prefix of SHA-256 (RFC 8017 9.2 note 1): CKM_RSA_PKCS signs it || digest. */
static const CK_BYTE SHA256_DIGESTINFO[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                              0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                              0x01, 0x05, 0x00, 0x04, 0x20};

static void worker_error(struct worker *w, const char *where, CK_RV rv)
{
    w->errors++;
    if (w->first_err == CKR_OK) {
        w->first_err = rv;
        w->where = where;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    CK_FUNCTION_LIST_PTR f = sh->f;
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_RV rv = f->C_OpenSession(sh->slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) {
        worker_error(w, "C_OpenSession", rv);
        return NULL;
    }
    CK_BYTE input[sizeof(SHA256_DIGESTINFO) + 32];
    memcpy(input, SHA256_DIGESTINFO, sizeof(SHA256_DIGESTINFO));
    CK_BYTE *digest = input + sizeof(SHA256_DIGESTINFO);
    memset(digest, 0x5a, 32);
    CK_MECHANISM mech = {CKM_RSA_PKCS, NULL, 0};
    CK_BYTE *data = input;
    CK_ULONG data_len = sizeof(input);
    if (sh->op == OP_ES256) {
        mech.mechanism = CKM_ECDSA;
        data = digest;
        data_len = 32;
    }
    CK_BYTE sig[512];
    uint64_t n = 0;
    unsigned err_run = 0;
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        /* Vary the digest so no layer can cache an answer. */
        memcpy(digest, &n, sizeof(n));
        n++;
        bool counted = atomic_load_explicit(&sh->measuring, memory_order_relaxed);
        uint64_t t0 = now_ns();
        CK_ULONG sig_len = sizeof(sig);
        rv = f->C_SignInit(s, &mech, sh->priv);
        if (rv != CKR_OK) {
            if (counted) {
                worker_error(w, "C_SignInit", rv);
            }
            goto failed;
        }
        rv = f->C_Sign(s, data, data_len, sig, &sig_len);
        if (rv != CKR_OK) {
            if (counted) {
                worker_error(w, "C_Sign", rv);
            }
            goto failed;
        }
        if (counted) {
            uint64_t dt = now_ns() - t0;
            mh_hist_record(&w->hist, dt);
            w->ops++;
        }
        err_run = 0;
        continue;
    failed:
        if (++err_run >= MAX_ERR_RUN) {
            if (!counted) {
                worker_error(w, "C_Sign (warm-up)", rv);
            }
            break;
        }
    }
    f->C_CloseSession(s);
    return NULL;
}

/* ------------------------------------------------------------------ results */

/* q_us: the latency at quantile |q| in microseconds (the histogram counts nanoseconds). */
static double q_us(const struct mh_hist *h, double q)
{
    return (double)mh_hist_quantile(h, q) / 1000.0;
}

static int write_json(const struct opts *o, double elapsed, uint64_t ops, uint64_t errors,
                      json_t *errs_by, const struct mh_hist *h)
{
    double rate = elapsed > 0 ? (double)ops / elapsed : 0;
    json_t *per =
        json_pack("{s:I,s:I,s:f,s:o}", "ops", (json_int_t)ops, "errors", (json_int_t)errors,
                  "ops_per_s", rate, "latency_us", mh_hist_latency_json(h));
    json_t *doc = json_pack(
        "{s:s,s:i,s:s,s:s,s:s,s:[],s:i,s:i,s:i,s:i,s:f,s:f,s:I,s:I,s:O,s:f,s:o,s:{s:o}}", "tool",
        "p11-bench", "version", 1, "label", o->label, "target", "softhsm2", "module", o->module,
        "endpoints", "connections", 0, "streams", 1, "threads", (int)o->threads, "in_flight",
        (int)o->threads, "duration_s", elapsed, "warmup_s", o->warmup_s, "ops", (json_int_t)ops,
        "errors", (json_int_t)errors, "errors_by_status", errs_by, "ops_per_s", rate, "latency_us",
        mh_hist_latency_json(h), "per_op", o->op_name, per);
    if (doc == NULL) {
        fprintf(stderr, "p11-bench: cannot build the JSON result\n");
        return MH_ENOMEM;
    }
    int r = 0;
    if (strcmp(o->json_path, "-") == 0) {
        r = json_dumpf(doc, stdout, JSON_INDENT(2)) == 0 && fputc('\n', stdout) != EOF ? 0
                                                                                       : MH_EINVAL;
    } else if (json_dump_file(doc, o->json_path, JSON_INDENT(2)) != 0) {
        fprintf(stderr, "p11-bench: cannot write %s\n", o->json_path);
        r = MH_EINVAL;
    }
    json_decref(doc);
    return r;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    int status = 1;
    void *dl = NULL;
    struct shared sh = {.op = o.op};
    if (load_module(o.module, &dl, &sh.f) != 0) {
        return 1;
    }
    /* The threads below call into the module concurrently: let it use native locks. */
    CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
    CK_RV rv = sh.f->C_Initialize(&init);
    if (rv != CKR_OK) {
        ck_fail("C_Initialize", rv);
        goto err_after_dlopen;
    }
    if (find_slot(sh.f, o.token_label, &sh.slot) != 0) {
        goto err_after_init;
    }
    CK_SESSION_HANDLE s0 = CK_INVALID_HANDLE;
    rv = sh.f->C_OpenSession(sh.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s0);
    if (rv != CKR_OK) {
        ck_fail("C_OpenSession", rv);
        goto err_after_init;
    }
    rv = sh.f->C_Login(s0, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)o.pin, (CK_ULONG)strlen(o.pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        ck_fail("C_Login", rv);
        goto err_after_session;
    }
    if (generate_pair(sh.f, s0, o.op, &sh.priv) != 0) {
        goto err_after_session;
    }

    struct worker *ws = calloc(o.threads, sizeof(*ws));
    if (ws == NULL) {
        fprintf(stderr, "p11-bench: out of memory\n");
        goto err_after_session;
    }
    unsigned started = 0;
    for (unsigned i = 0; i < o.threads; i++) {
        ws[i].sh = &sh;
        if (mh_hist_init(&ws[i].hist, MH_HIST_LIMIT) != 0) {
            fprintf(stderr, "p11-bench: cannot set up a histogram\n");
            goto err_after_workers;
        }
    }
    for (; started < o.threads; started++) {
        int e = pthread_create(&ws[started].tid, NULL, worker_main, &ws[started]);
        if (e != 0) {
            fprintf(stderr, "p11-bench: pthread_create: %s\n", strerror(e));
            atomic_store(&sh.stop, true);
            goto err_after_threads;
        }
    }
    sleep_s(o.warmup_s);
    uint64_t t0 = now_ns();
    atomic_store(&sh.measuring, true);
    sleep_s(o.duration_s);
    atomic_store(&sh.stop, true);
    uint64_t t1 = now_ns();
    for (unsigned i = 0; i < started; i++) {
        pthread_join(ws[i].tid, NULL);
    }
    started = 0;
    double elapsed = (double)(t1 - t0) / 1e9;

    struct mh_hist *all = malloc(sizeof(*all));
    if (all == NULL || mh_hist_init(all, MH_HIST_LIMIT) != 0) {
        fprintf(stderr, "p11-bench: cannot set up a histogram\n");
        free(all);
        goto err_after_workers;
    }
    uint64_t ops = 0, errors = 0;
    json_t *errs_by = json_object();
    for (unsigned i = 0; i < o.threads; i++) {
        ops += ws[i].ops;
        errors += ws[i].errors;
        mh_hist_merge(all, &ws[i].hist);
        if (ws[i].first_err != CKR_OK) {
            const char *name = ckr_name(ws[i].first_err);
            json_t *c = json_object_get(errs_by, name);
            json_int_t prev = c ? json_integer_value(c) : 0;
            json_object_set_new(errs_by, name, json_integer(prev + (json_int_t)ws[i].errors));
            fprintf(stderr, "p11-bench: thread %u: %s failed: %s (%" PRIu64 " errors)\n", i,
                    ws[i].where, name, ws[i].errors);
        }
    }
    double rate = elapsed > 0 ? (double)ops / elapsed : 0;
    /* With --json - stdout carries the JSON alone; the summary line moves to stderr. */
    FILE *txt = o.json_path != NULL && strcmp(o.json_path, "-") == 0 ? stderr : stdout;
    fprintf(txt,
            "%-16s %10.1f ops/s  p50 %.1f  p90 %.1f  p99 %.1f  max %.1f us  errors %" PRIu64
            "  (softhsm2, %u threads, %.1f s)\n",
            o.op_name, rate, q_us(all, 0.5), q_us(all, 0.9), q_us(all, 0.99), q_us(all, 1.0),
            errors, o.threads, elapsed);
    status = ops > 0 ? 0 : 1;
    if (o.json_path != NULL && write_json(&o, elapsed, ops, errors, errs_by, all) != 0) {
        status = 1;
    }
    json_decref(errs_by);
    free(all);

err_after_threads:
    for (unsigned i = 0; i < started; i++) {
        pthread_join(ws[i].tid, NULL);
    }
err_after_workers:
    free(ws);
err_after_session:
    sh.f->C_CloseSession(s0);
err_after_init:
    sh.f->C_Finalize(NULL);
err_after_dlopen:
    dlclose(dl);
    return status;
}
