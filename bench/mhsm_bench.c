/* mhsm-bench: a gRPC load generator for mhsm (and etcd's KV.Put, for comparison).
 *
 * N connections x M in-flight calls, spread over T event-loop threads (client/rpc_async),
 * one operation or a weighted mix, fixed duration or count, latencies per successful
 * call in an HDR-style histogram (client/hist). The command line and the JSON are the
 * contract of issue 6 (docs: `mhsm-bench --help`). */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/etcd_kv.pb-c.h"
#include "client/hist.h"
#include "crypto/alg.h"
#include "client/rpc_async.h"
#include "client/rpc_client.h"
#include "mhsm/v1/crypto.pb-c.h"
#include "mhsm/v1/keys.pb-c.h"
#include "mhsm/v1/types.pb-c.h"

#define CALL_TIMEOUT_MS  30000u
#define SETUP_TIMEOUT_MS 120000u
#define UPDATE_POOL      64u
#define MAX_ENDPOINTS    16u
#define MAX_MIX          64u
#define NSTATUS          17      /* gRPC statuses 0..16 */
#define ST_VERIFY_FALSE  NSTATUS /* Verify answered valid = false */
#define NERR             (NSTATUS + 1)
#define HIST_HIGHEST_NS  UINT64_C(100000000000) /* 100 s */
#define DRAIN_MS         5000u

enum kind {
    K_SIGN,
    K_VERIFY,
    K_ENCRYPT,
    K_DECRYPT,
    K_WRAP,
    K_UNWRAP,
    K_GET,
    K_CREATE,
    K_UPDATE,
    K_PUT
};

enum keyk {
    KEY_NONE,
    KEY_RSA2048,
    KEY_RSA3072,
    KEY_RSA4096,
    KEY_P256,
    KEY_P384,
    KEY_P256K,
    KEY_AES256,
    KEY_AES128,
    KEY_COUNT
};

struct keyspec {
    const char *suffix;
    const char *kty;
    uint32_t size;
    const char *crv;
};

static const struct keyspec KEYS[KEY_COUNT] = {
    [KEY_NONE] = {NULL, NULL, 0, NULL},
    [KEY_RSA2048] = {"rsa2048", "RSA-HSM", 2048, NULL},
    [KEY_RSA3072] = {"rsa3072", "RSA-HSM", 3072, NULL},
    [KEY_RSA4096] = {"rsa4096", "RSA-HSM", 4096, NULL},
    [KEY_P256] = {"p256", "EC-HSM", 0, "P-256"},
    [KEY_P384] = {"p384", "EC-HSM", 0, "P-384"},
    [KEY_P256K] = {"p256k", "EC-HSM", 0, "P-256K"},
    [KEY_AES256] = {"aes256", "oct-HSM", 256, NULL},
    [KEY_AES128] = {"aes128", "oct-HSM", 128, NULL},
};

struct opdef {
    const char *name;
    enum kind kind;
    enum keyk key;
    const char *alg;
};

static const struct opdef OPS[] = {
    {"sign-rs256-2048", K_SIGN, KEY_RSA2048, "RS256"},
    {"sign-rs256-3072", K_SIGN, KEY_RSA3072, "RS256"},
    {"sign-rs256-4096", K_SIGN, KEY_RSA4096, "RS256"},
    {"sign-ps256-2048", K_SIGN, KEY_RSA2048, "PS256"},
    {"sign-es256", K_SIGN, KEY_P256, "ES256"},
    {"sign-es384", K_SIGN, KEY_P384, "ES384"},
    {"sign-es256k", K_SIGN, KEY_P256K, "ES256K"},
    {"verify-rs256-2048", K_VERIFY, KEY_RSA2048, "RS256"},
    {"verify-rs256-3072", K_VERIFY, KEY_RSA3072, "RS256"},
    {"verify-rs256-4096", K_VERIFY, KEY_RSA4096, "RS256"},
    {"verify-ps256-2048", K_VERIFY, KEY_RSA2048, "PS256"},
    {"verify-es256", K_VERIFY, KEY_P256, "ES256"},
    {"verify-es384", K_VERIFY, KEY_P384, "ES384"},
    {"verify-es256k", K_VERIFY, KEY_P256K, "ES256K"},
    {"encrypt-rsa-oaep-256-2048", K_ENCRYPT, KEY_RSA2048, "RSA-OAEP-256"},
    {"decrypt-rsa-oaep-256-2048", K_DECRYPT, KEY_RSA2048, "RSA-OAEP-256"},
    {"encrypt-a256gcm", K_ENCRYPT, KEY_AES256, "A256GCM"},
    {"decrypt-a256gcm", K_DECRYPT, KEY_AES256, "A256GCM"},
    {"encrypt-a128gcm", K_ENCRYPT, KEY_AES128, "A128GCM"},
    {"decrypt-a128gcm", K_DECRYPT, KEY_AES128, "A128GCM"},
    {"encrypt-a256cbcpad", K_ENCRYPT, KEY_AES256, "A256CBCPAD"},
    {"decrypt-a256cbcpad", K_DECRYPT, KEY_AES256, "A256CBCPAD"},
    {"wrap-a256kw", K_WRAP, KEY_AES256, "A256KW"},
    {"unwrap-a256kw", K_UNWRAP, KEY_AES256, "A256KW"},
    {"wrap-rsa-oaep-256-2048", K_WRAP, KEY_RSA2048, "RSA-OAEP-256"},
    {"unwrap-rsa-oaep-256-2048", K_UNWRAP, KEY_RSA2048, "RSA-OAEP-256"},
    {"get-key", K_GET, KEY_P256, NULL},
    {"create-aes256", K_CREATE, KEY_AES256, NULL},
    {"create-p256", K_CREATE, KEY_P256, NULL},
    {"create-rsa2048", K_CREATE, KEY_RSA2048, NULL},
    {"update-attributes", K_UPDATE, KEY_NONE, NULL},
    {"etcd-put", K_PUT, KEY_NONE, NULL},
};
#define NOPS (sizeof OPS / sizeof OPS[0])

/* One operation of the mix, with what its calls send. */
struct mixop {
    const struct opdef *def;
    uint32_t weight;
    const char *path;
    const ProtobufCMessageDescriptor *desc;
    uint8_t *req; /* packed request, for the ops whose request never changes */
    size_t req_len;
};

struct opts {
    const char *endpoints[MAX_ENDPOINTS];
    unsigned n_endpoints;
    char *endpoints_buf;
    const char *ca, *cert, *key;
    bool etcd;
    unsigned connections, streams, threads;
    struct mixop mix[MAX_MIX];
    unsigned n_mix;
    double duration;
    uint64_t count; /* 0: duration mode */
    double warmup;
    bool setup;
    const char *prefix;
    size_t payload;
    bool payload_set;
    const char *json;
    const char *label;
    bool quiet;
};

struct worker;

struct slot {
    struct worker *w;
    struct mh_async_conn *conn;
    unsigned index; /* global slot number (update-attributes key pool) */
    uint64_t rng;
    unsigned op;
    uint64_t t0;
    bool measured;
    bool busy;
};

struct opstat {
    struct mh_hist hist; /* ns */
    uint64_t ok;
    uint64_t err;
    uint64_t by_status[NERR];
};

struct worker {
    pthread_t th;
    unsigned id;
    struct mh_async_loop *loop;
    struct slot *slots;
    unsigned n_slots;
    unsigned n_conns;
    struct opstat *stats;       /* per mix op */
    _Atomic uint64_t ops, errs; /* measured, for the progress line */
    struct mh_async_conn **conns;
    uint64_t last_done; /* ns of the last counted completion */
    char err[256];
    int rv;
};

static struct opts O;
static uint64_t g_measure_start; /* ns, monotonic */
static uint64_t g_measure_end;   /* ns; duration mode */
static _Atomic uint64_t g_tickets;
static _Atomic uint64_t g_seq; /* names of create ops, keys of etcd-put */
static _Atomic bool g_stop;
static _Atomic unsigned g_workers_done;
static uint32_t g_weight_total;
static char g_runid[9];
static uint8_t *g_payload;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- usage ---------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: mhsm-bench --endpoints HOST:PORT[,HOST:PORT...] --ca FILE --cert FILE --key "
               "FILE\n"
               "                  [--target mhsm|etcd] [--connections N] [--streams M] [--threads "
               "T]\n"
               "                  [--op OP | --mix OP:W,OP:W...] [--duration SECONDS | --count N]\n"
               "                  [--warmup SECONDS] [--setup] [--key-prefix P] [--payload BYTES]\n"
               "                  [--json FILE|-] [--label TEXT] [--quiet]\n"
               "ops:");
    for (size_t i = 0; i < NOPS; i++)
        fprintf(f, "%s%s", i % 4 == 0 ? "\n  " : " ", OPS[i].name);
    fprintf(f, "\nWith --json -, the JSON goes to stdout and the text summary to stderr.\n"
               "Exit: 0 run completed (errors are counted), 1 nothing succeeded or setup "
               "failed, 2 usage error.\n");
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mhsm-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(mhsm-bench --help for usage)\n");
    va_end(ap);
    exit(2);
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        usage_error("%s: '%s' is not a whole number", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != 0)
        usage_error("%s: '%s' is not a whole number", opt, s);
    if (v < lo || v > hi)
        usage_error("%s: %s is out of range %llu..%llu", opt, s, (unsigned long long)lo,
                    (unsigned long long)hi);
    return v;
}

static double parse_secs(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    if ((s[0] < '0' || s[0] > '9') && s[0] != '.')
        usage_error("%s: '%s' is not a number of seconds", opt, s);
    double v = strtod(s, &end);
    if (errno != 0 || *end != 0 || v != v)
        usage_error("%s: '%s' is not a number of seconds", opt, s);
    if (v < lo || v > hi)
        usage_error("%s: %s is out of range %g..%g", opt, s, lo, hi);
    return v;
}

static const struct opdef *find_op(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPS; i++)
        if (strlen(OPS[i].name) == len && memcmp(OPS[i].name, name, len) == 0)
            return &OPS[i];
    return NULL;
}

static void add_mix(const char *name, size_t len, uint32_t weight)
{
    const struct opdef *d = find_op(name, len);
    if (d == NULL)
        usage_error("unknown op '%.*s'", (int)len, name);
    for (unsigned i = 0; i < O.n_mix; i++)
        if (O.mix[i].def == d)
            usage_error("op '%s' given twice in --mix", d->name);
    if (O.n_mix == MAX_MIX)
        usage_error("--mix: at most %u ops", MAX_MIX);
    O.mix[O.n_mix].def = d;
    O.mix[O.n_mix].weight = weight;
    O.n_mix++;
}

static void parse_mix(const char *s)
{
    const char *p = s;
    while (*p != 0) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        if (colon == NULL)
            usage_error("--mix: '%.*s' is not OP:WEIGHT", (int)len, p);
        char wbuf[16];
        size_t wl = len - (size_t)(colon - p) - 1;
        if (wl == 0 || wl >= sizeof wbuf)
            usage_error("--mix: '%.*s' has no valid weight", (int)len, p);
        memcpy(wbuf, colon + 1, wl);
        wbuf[wl] = 0;
        uint32_t w = (uint32_t)parse_u64("--mix weight", wbuf, 1, 1000000);
        add_mix(p, (size_t)(colon - p), w);
        if (comma == NULL)
            break;
        p = comma + 1;
        if (*p == 0)
            usage_error("--mix: trailing comma");
    }
    if (O.n_mix == 0)
        usage_error("--mix: no op given");
}

static void parse_endpoints(const char *s)
{
    O.endpoints_buf = strdup(s);
    if (O.endpoints_buf == NULL)
        abort();
    char *save = NULL;
    for (char *t = strtok_r(O.endpoints_buf, ",", &save); t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        if (O.n_endpoints == MAX_ENDPOINTS)
            usage_error("--endpoints: at most %u", MAX_ENDPOINTS);
        char host[256], port[8];
        if (mh_client_split_endpoint(t, host, sizeof host, port, sizeof port) < 0)
            usage_error("--endpoints: '%s' is not HOST:PORT", t);
        O.endpoints[O.n_endpoints++] = t;
    }
    if (O.n_endpoints == 0)
        usage_error("--endpoints: no endpoint given");
}

static void parse_args(int argc, char **argv)
{
    O.streams = 1;
    O.threads = 1;
    O.duration = 10;
    O.warmup = 1;
    O.prefix = "bench-";
    const char *op = NULL, *mix = NULL, *target = "mhsm";
    bool have_duration = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--setup") == 0) {
            O.setup = true;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            O.quiet = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0)
            usage_error("unexpected argument '%s'", a);
        static const char *const WITH_VALUE[] = {
            "--endpoints", "--ca",         "--cert",    "--key",  "--target",   "--connections",
            "--streams",   "--threads",    "--op",      "--mix",  "--duration", "--count",
            "--warmup",    "--key-prefix", "--payload", "--json", "--label",
        };
        bool known = false;
        for (size_t k = 0; k < sizeof WITH_VALUE / sizeof WITH_VALUE[0]; k++)
            known = known || strcmp(a, WITH_VALUE[k]) == 0;
        if (!known)
            usage_error("unknown option '%s'", a);
        if (i + 1 >= argc)
            usage_error("%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--endpoints") == 0)
            parse_endpoints(v);
        else if (strcmp(a, "--ca") == 0)
            O.ca = v;
        else if (strcmp(a, "--cert") == 0)
            O.cert = v;
        else if (strcmp(a, "--key") == 0)
            O.key = v;
        else if (strcmp(a, "--target") == 0)
            target = v;
        else if (strcmp(a, "--connections") == 0)
            O.connections = (unsigned)parse_u64(a, v, 1, 1024);
        else if (strcmp(a, "--streams") == 0)
            O.streams = (unsigned)parse_u64(a, v, 1, 10000);
        else if (strcmp(a, "--threads") == 0)
            O.threads = (unsigned)parse_u64(a, v, 1, 256);
        else if (strcmp(a, "--op") == 0)
            op = v;
        else if (strcmp(a, "--mix") == 0)
            mix = v;
        else if (strcmp(a, "--duration") == 0) {
            O.duration = parse_secs(a, v, 0.001, 86400);
            have_duration = true;
        } else if (strcmp(a, "--count") == 0)
            O.count = parse_u64(a, v, 1, UINT64_C(1000000000000));
        else if (strcmp(a, "--warmup") == 0)
            O.warmup = parse_secs(a, v, 0, 3600);
        else if (strcmp(a, "--key-prefix") == 0)
            O.prefix = v;
        else if (strcmp(a, "--payload") == 0) {
            O.payload = (size_t)parse_u64(a, v, 1, 1u << 20);
            O.payload_set = true;
        } else if (strcmp(a, "--json") == 0)
            O.json = v;
        else if (strcmp(a, "--label") == 0)
            O.label = v;
    }
    if (O.n_endpoints == 0)
        usage_error("--endpoints is required");
    if (O.ca == NULL || O.cert == NULL || O.key == NULL)
        usage_error("--ca, --cert and --key are required");
    if (strcmp(target, "mhsm") == 0)
        O.etcd = false;
    else if (strcmp(target, "etcd") == 0)
        O.etcd = true;
    else
        usage_error("--target: '%s' is neither mhsm nor etcd", target);
    if ((op != NULL) == (mix != NULL))
        usage_error(op == NULL ? "one of --op or --mix is required"
                               : "--op and --mix exclude each other");
    if (op != NULL)
        add_mix(op, strlen(op), 1);
    else
        parse_mix(mix);
    if (have_duration && O.count != 0)
        usage_error("--duration and --count exclude each other");
    size_t plen = strlen(O.prefix);
    if (plen == 0 || plen > 64 ||
        strspn(O.prefix, "0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ-") != plen)
        usage_error("--key-prefix: want 1..64 of [0-9a-zA-Z-]");
    for (unsigned i = 0; i < O.n_mix; i++) {
        bool is_etcd = O.mix[i].def->kind == K_PUT;
        if (is_etcd && !O.etcd)
            usage_error("op '%s' needs --target etcd", O.mix[i].def->name);
        if (!is_etcd && O.etcd)
            usage_error("op '%s' is not available with --target etcd", O.mix[i].def->name);
    }
    if (O.connections == 0)
        O.connections = O.n_endpoints;
    if (O.threads > O.connections)
        O.threads = O.connections; /* a thread without a connection would idle */
    if (!O.payload_set)
        O.payload = O.etcd ? 256 : 32;
}

/* ---- setup (blocking client) -------------------------------------------------------- */

static struct mh_client *g_sync;

/* A blocking call, retried a few times while the service is UNAVAILABLE (elections). */
static int sync_call(const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, int *status,
                     const char *what)
{
    for (int attempt = 0;; attempt++) {
        char *msg = NULL;
        int rv = mh_client_call(g_sync, path, req, desc, SETUP_TIMEOUT_MS, resp, status, &msg);
        if (rv < 0) {
            if (attempt < 10) {
                usleep(300000);
                continue;
            }
            fprintf(stderr, "mhsm-bench: setup: %s: %s\n", what, mh_client_errmsg(g_sync));
            return rv;
        }
        if (*status == MH_CLIENT_UNAVAILABLE && attempt < 10) {
            free(msg);
            usleep(300000);
            continue;
        }
        if (*status != 0 && *status != MH_CLIENT_NOT_FOUND)
            fprintf(stderr, "mhsm-bench: setup: %s: %s: %s\n", what, mh_client_status_name(*status),
                    msg != NULL ? msg : "");
        free(msg);
        return 0;
    }
}

static void key_name(char *out, size_t cap, const char *suffix)
{
    snprintf(out, cap, "%s%s", O.prefix, suffix);
}

/* Makes sure key |name| exists (creating it with |ks| under --setup). 0 or -1. */
static int ensure_key(const char *name, const struct keyspec *ks)
{
    if (!O.setup)
        return 0; /* assumed to exist: a missing key shows up as NOT_FOUND errors */
    Mhsm__V1__GetKeyRequest g = MHSM__V1__GET_KEY_REQUEST__INIT;
    g.name = (char *)name;
    ProtobufCMessage *resp = NULL;
    int st;
    char what[200];
    snprintf(what, sizeof what, "GetKey %s", name);
    if (sync_call("/mhsm.v1.Keys/GetKey", &g.base, &mhsm__v1__key_bundle__descriptor, &resp, &st,
                  what) < 0)
        return -1;
    mh_client_response_free(resp);
    if (st == 0)
        return 0;
    if (st != MH_CLIENT_NOT_FOUND)
        return -1;
    Mhsm__V1__CreateKeyRequest c = MHSM__V1__CREATE_KEY_REQUEST__INIT;
    c.name = (char *)name;
    c.kty = (char *)ks->kty;
    c.key_size = ks->size;
    c.crv = (char *)(ks->crv != NULL ? ks->crv : "");
    snprintf(what, sizeof what, "CreateKey %s", name);
    if (sync_call("/mhsm.v1.Keys/CreateKey", &c.base, &mhsm__v1__key_bundle__descriptor, &resp, &st,
                  what) < 0)
        return -1;
    mh_client_response_free(resp);
    return st == 0 ? 0 : -1;
}

/* The digest a signature algorithm signs, from the project's algorithm table. */
static size_t digest_len(const char *alg)
{
    return mh_md_len((enum mh_md)mh_alg_digest(mh_alg_from_name(alg, strlen(alg))));
}

static const uint8_t DIGEST[64] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static const uint8_t IV16[16] = {0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
                                 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42};
static uint8_t g_wrapme[32];

static int pack_into(struct mixop *m, const ProtobufCMessage *req)
{
    if (mh_async_pack(req, &m->req, &m->req_len) < 0) {
        fprintf(stderr, "mhsm-bench: out of memory\n");
        return -1;
    }
    return 0;
}

/* Builds the fixed request of |m|, calling the server when it needs material (a
 * signature to verify, a ciphertext to decrypt, a wrapped key). 0 or -1. */
static int prepare_op(struct mixop *m)
{
    const struct opdef *d = m->def;
    char name[128];
    if (d->key != KEY_NONE)
        key_name(name, sizeof name, KEYS[d->key].suffix);
    ProtobufCMessage *resp = NULL;
    int st;
    char what[200];
    snprintf(what, sizeof what, "preparing %s", d->name);
    switch (d->kind) {
    case K_SIGN:
    case K_VERIFY: {
        Mhsm__V1__SignRequest s = MHSM__V1__SIGN_REQUEST__INIT;
        s.name = name;
        s.alg = (char *)d->alg;
        s.digest.data = (uint8_t *)DIGEST;
        s.digest.len = digest_len(d->alg);
        m->path = "/mhsm.v1.Crypto/Sign";
        m->desc = &mhsm__v1__sign_response__descriptor;
        if (d->kind == K_SIGN)
            return pack_into(m, &s.base);
        if (sync_call("/mhsm.v1.Crypto/Sign", &s.base, &mhsm__v1__sign_response__descriptor, &resp,
                      &st, what) < 0 ||
            st != 0)
            return -1;
        Mhsm__V1__SignResponse *sr = (Mhsm__V1__SignResponse *)resp;
        Mhsm__V1__VerifyRequest v = MHSM__V1__VERIFY_REQUEST__INIT;
        v.name = name;
        v.alg = (char *)d->alg;
        v.digest = s.digest;
        v.signature = sr->signature;
        m->path = "/mhsm.v1.Crypto/Verify";
        m->desc = &mhsm__v1__verify_response__descriptor;
        int rv = pack_into(m, &v.base);
        mh_client_response_free(resp);
        return rv;
    }
    case K_ENCRYPT:
    case K_DECRYPT:
    case K_WRAP:
    case K_UNWRAP: {
        bool wrap = d->kind == K_WRAP || d->kind == K_UNWRAP;
        Mhsm__V1__KeyOperationRequest e = MHSM__V1__KEY_OPERATION_REQUEST__INIT;
        e.name = name;
        e.alg = (char *)d->alg;
        e.value.data = wrap ? g_wrapme : g_payload;
        e.value.len = wrap ? sizeof g_wrapme : O.payload;
        if (strstr(d->alg, "CBC") != NULL) {
            e.iv.data = (uint8_t *)IV16;
            e.iv.len = sizeof IV16;
        }
        const char *fwd = wrap ? "/mhsm.v1.Crypto/WrapKey" : "/mhsm.v1.Crypto/Encrypt";
        const char *back = wrap ? "/mhsm.v1.Crypto/UnwrapKey" : "/mhsm.v1.Crypto/Decrypt";
        m->desc = &mhsm__v1__key_operation_response__descriptor;
        if (d->kind == K_ENCRYPT || d->kind == K_WRAP) {
            m->path = fwd;
            return pack_into(m, &e.base);
        }
        if (sync_call(fwd, &e.base, &mhsm__v1__key_operation_response__descriptor, &resp, &st,
                      what) < 0 ||
            st != 0)
            return -1;
        Mhsm__V1__KeyOperationResponse *er = (Mhsm__V1__KeyOperationResponse *)resp;
        Mhsm__V1__KeyOperationRequest r = MHSM__V1__KEY_OPERATION_REQUEST__INIT;
        r.name = name;
        r.alg = (char *)d->alg;
        r.value = er->value;
        r.iv = er->iv.len > 0 ? er->iv : e.iv;
        r.tag = er->tag;
        r.aad = er->aad;
        m->path = back;
        int rv = pack_into(m, &r.base);
        mh_client_response_free(resp);
        return rv;
    }
    case K_GET: {
        Mhsm__V1__GetKeyRequest g = MHSM__V1__GET_KEY_REQUEST__INIT;
        g.name = name;
        m->path = "/mhsm.v1.Keys/GetKey";
        m->desc = &mhsm__v1__key_bundle__descriptor;
        return pack_into(m, &g.base);
    }
    case K_CREATE:
        m->path = "/mhsm.v1.Keys/CreateKey";
        m->desc = &mhsm__v1__key_bundle__descriptor;
        return 0;
    case K_UPDATE:
        m->path = "/mhsm.v1.Keys/UpdateKey";
        m->desc = &mhsm__v1__key_bundle__descriptor;
        return 0;
    case K_PUT:
        m->path = "/etcdserverpb.KV/Put";
        m->desc = &etcdserverpb__put_response__descriptor;
        return 0;
    default:
        return -1;
    }
}

static int run_setup(void)
{
    struct mh_client_config cc = {
        .endpoint = O.endpoints[0], .ca_file = O.ca, .cert_file = O.cert, .key_file = O.key};
    char eb[512];
    if (mh_client_new(&cc, &g_sync, eb, sizeof eb) < 0) {
        fprintf(stderr, "mhsm-bench: %s\n", eb);
        return -1;
    }
    int rv = 0;
    bool need[KEY_COUNT] = {false};
    bool need_pool = false;
    for (unsigned i = 0; i < O.n_mix; i++) {
        const struct opdef *d = O.mix[i].def;
        if (d->kind != K_CREATE && d->kind != K_PUT)
            need[d->key] = true;
        if (d->kind == K_UPDATE)
            need_pool = true;
    }
    for (int k = KEY_RSA2048; k < KEY_COUNT && rv == 0; k++) {
        if (!need[k])
            continue;
        char name[128];
        key_name(name, sizeof name, KEYS[k].suffix);
        rv = ensure_key(name, &KEYS[k]);
    }
    for (unsigned i = 0; need_pool && i < UPDATE_POOL && rv == 0; i++) {
        char suffix[16], name[128];
        snprintf(suffix, sizeof suffix, "u-%u", i);
        key_name(name, sizeof name, suffix);
        rv = ensure_key(name, &KEYS[KEY_AES256]);
    }
    for (unsigned i = 0; i < O.n_mix && rv == 0; i++)
        rv = prepare_op(&O.mix[i]);
    mh_client_free(g_sync);
    g_sync = NULL;
    return rv;
}

/* ---- the run -------------------------------------------------------------------------- */

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static unsigned pick_op(struct slot *s)
{
    if (O.n_mix == 1)
        return 0;
    uint32_t r = (uint32_t)(xorshift(&s->rng) % g_weight_total);
    for (unsigned i = 0; i < O.n_mix; i++) {
        if (r < O.mix[i].weight)
            return i;
        r -= O.mix[i].weight;
    }
    return O.n_mix - 1;
}

static void on_done(const struct mh_async_result *r, void *ud);

/* Submits the slot's next call; false when the slot has nothing more to do. */
static bool issue(struct slot *s)
{
    s->busy = false;
    if (atomic_load_explicit(&g_stop, memory_order_relaxed))
        return false;
    uint64_t t0 = now_ns();
    s->measured = t0 >= g_measure_start;
    if (O.count != 0 && s->measured &&
        atomic_fetch_add_explicit(&g_tickets, 1, memory_order_relaxed) >= O.count)
        return false;
    if (O.count == 0 && t0 >= g_measure_end)
        return false;
    s->op = pick_op(s);
    struct mixop *m = &O.mix[s->op];
    uint8_t *dyn = NULL;
    size_t dyn_len = 0;
    char name[160], val[24];
    int rv = 0;
    switch (m->def->kind) {
    case K_CREATE: {
        const struct keyspec *ks = &KEYS[m->def->key];
        Mhsm__V1__CreateKeyRequest c = MHSM__V1__CREATE_KEY_REQUEST__INIT;
        snprintf(name, sizeof name, "%sc-%s-%llu", O.prefix, g_runid,
                 (unsigned long long)atomic_fetch_add(&g_seq, 1));
        c.name = name;
        c.kty = (char *)ks->kty;
        c.key_size = ks->size;
        c.crv = (char *)(ks->crv != NULL ? ks->crv : "");
        rv = mh_async_pack(&c.base, &dyn, &dyn_len);
        break;
    }
    case K_UPDATE: {
        Mhsm__V1__UpdateKeyRequest u = MHSM__V1__UPDATE_KEY_REQUEST__INIT;
        Mhsm__V1__UpdateKeyRequest__TagsEntry e = MHSM__V1__UPDATE_KEY_REQUEST__TAGS_ENTRY__INIT;
        Mhsm__V1__UpdateKeyRequest__TagsEntry *ep = &e;
        snprintf(name, sizeof name, "%su-%u", O.prefix, s->index % UPDATE_POOL);
        snprintf(val, sizeof val, "%llu", (unsigned long long)atomic_fetch_add(&g_seq, 1));
        e.key = (char *)"n";
        e.value = val;
        u.name = name;
        u.replace_tags = true;
        u.n_tags = 1;
        u.tags = &ep;
        rv = mh_async_pack(&u.base, &dyn, &dyn_len);
        break;
    }
    case K_PUT: {
        Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
        int n = snprintf(name, sizeof name, "bench/%llu",
                         (unsigned long long)(atomic_fetch_add(&g_seq, 1) % 100000u));
        p.key.data = (uint8_t *)name;
        p.key.len = (size_t)n;
        p.value.data = g_payload;
        p.value.len = O.payload;
        rv = mh_async_pack(&p.base, &dyn, &dyn_len);
        break;
    }
    default:
        break;
    }
    if (rv < 0) {
        fprintf(stderr, "mhsm-bench: out of memory\n");
        exit(1);
    }
    s->t0 = now_ns();
    rv = mh_async_call(s->conn, m->path, dyn != NULL ? dyn : m->req,
                       dyn != NULL ? dyn_len : m->req_len, m->desc, CALL_TIMEOUT_MS, on_done, s);
    free(dyn);
    if (rv < 0) {
        fprintf(stderr, "mhsm-bench: cannot submit a call: %s\n", mh_strerror(rv));
        exit(1);
    }
    s->busy = true;
    return true;
}

static void on_done(const struct mh_async_result *r, void *ud)
{
    struct slot *s = ud;
    struct worker *w = s->w;
    uint64_t t1 = now_ns();
    bool counted = s->measured && (O.count != 0 || t1 <= g_measure_end);
    if (counted) {
        struct opstat *st = &w->stats[s->op];
        int code = r->status >= 0 && r->status < NSTATUS ? r->status : MH_CLIENT_UNKNOWN;
        if (code == 0 && O.mix[s->op].def->kind == K_VERIFY && r->resp != NULL &&
            !((const Mhsm__V1__VerifyResponse *)r->resp)->valid)
            code = ST_VERIFY_FALSE;
        w->last_done = t1;
        if (code == 0) {
            mh_hist_record(&st->hist, t1 - s->t0);
            st->ok++;
            atomic_fetch_add_explicit(&w->ops, 1, memory_order_relaxed);
        } else {
            st->err++;
            st->by_status[code]++;
            atomic_fetch_add_explicit(&w->errs, 1, memory_order_relaxed);
        }
    }
    (void)issue(s);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (unsigned i = 0; i < w->n_slots; i++)
        (void)issue(&w->slots[i]);
    uint64_t stop_at = 0;
    for (;;) {
        if (mh_async_loop_run_once(w->loop, 10) < 0) {
            snprintf(w->err, sizeof w->err, "epoll failed");
            w->rv = -1;
            break;
        }
        uint64_t now = now_ns();
        if (O.count == 0 && now >= g_measure_end)
            atomic_store(&g_stop, true);
        size_t inflight = mh_async_loop_inflight(w->loop);
        if (inflight == 0) {
            /* Every slot went idle: the count is used up, or the run is over. */
            bool any_busy = false;
            for (unsigned i = 0; i < w->n_slots && !any_busy; i++)
                any_busy = w->slots[i].busy;
            if (!any_busy)
                break;
        }
        if (atomic_load(&g_stop)) {
            /* Duration over: calls still running are not counted; give them a moment so
             * the servers are not left with a burst of resets, then leave. */
            if (O.count != 0 && stop_at == 0)
                stop_at = now + (uint64_t)DRAIN_MS * 1000000u;
            if (O.count == 0 && stop_at == 0)
                stop_at = now + 200u * 1000000u;
            if (now >= stop_at)
                break;
        }
    }
    atomic_fetch_add(&g_workers_done, 1);
    return NULL;
}

/* ---- report ------------------------------------------------------------------------------ */

static const char *err_name(int code)
{
    return code == ST_VERIFY_FALSE ? "VERIFY_FAILED" : mh_client_status_name(code);
}

static void print_line(FILE *f, const char *name, double secs, const struct mh_hist *h,
                       uint64_t errs)
{
    uint64_t n = mh_hist_count(h);
    fprintf(f, "%-26s %10.1f ops/s  p50 %9.1f  p90 %9.1f  p99 %9.1f  max %9.1f us  errors %llu\n",
            name, secs > 0 ? (double)n / secs : 0.0, (double)mh_hist_quantile(h, 0.5) / 1e3,
            (double)mh_hist_quantile(h, 0.9) / 1e3, (double)mh_hist_quantile(h, 0.99) / 1e3,
            (double)mh_hist_max(h) / 1e3, (unsigned long long)errs);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv);
    g_payload = malloc(O.payload);
    if (g_payload == NULL || RAND_bytes(g_payload, (int)O.payload) != 1 ||
        RAND_bytes(g_wrapme, sizeof g_wrapme) != 1)
        return 1;
    uint8_t rid[4];
    if (RAND_bytes(rid, sizeof rid) != 1)
        return 1;
    snprintf(g_runid, sizeof g_runid, "%02x%02x%02x%02x", rid[0], rid[1], rid[2], rid[3]);
    for (unsigned i = 0; i < O.n_mix; i++)
        g_weight_total += O.mix[i].weight;

    if (O.etcd) {
        for (unsigned i = 0; i < O.n_mix; i++)
            if (prepare_op(&O.mix[i]) < 0)
                return 1;
    } else if (run_setup() < 0) {
        fprintf(stderr, "mhsm-bench: setup failed\n");
        return 1;
    }

    struct mh_async_config ac = {.ca_file = O.ca, .cert_file = O.cert, .key_file = O.key};
    struct mh_async_tls *tls;
    char eb[512];
    if (mh_async_tls_new(&ac, &tls, eb, sizeof eb) < 0) {
        fprintf(stderr, "mhsm-bench: %s\n", eb);
        return 1;
    }
    struct worker *ws = calloc(O.threads, sizeof *ws);
    if (ws == NULL)
        return 1;
    for (unsigned t = 0; t < O.threads; t++) {
        struct worker *w = &ws[t];
        w->id = t;
        if (mh_async_loop_new(&w->loop) < 0)
            return 1;
        w->stats = calloc(O.n_mix, sizeof *w->stats);
        if (w->stats == NULL)
            return 1;
        for (unsigned i = 0; i < O.n_mix; i++)
            if (mh_hist_init(&w->stats[i].hist, HIST_HIGHEST_NS) < 0)
                return 1;
        unsigned nconn = O.connections / O.threads + (t < O.connections % O.threads);
        w->slots = calloc((size_t)nconn * O.streams, sizeof *w->slots);
        if (w->slots == NULL)
            return 1;
        w->conns = calloc(nconn, sizeof *w->conns);
        if (w->conns == NULL)
            return 1;
    }
    /* Connection i goes to endpoint i % E and thread i % T. */
    for (unsigned i = 0; i < O.connections; i++) {
        struct worker *w = &ws[i % O.threads];
        struct mh_async_conn *c;
        const char *ep = O.endpoints[i % O.n_endpoints];
        if (mh_async_conn_new(w->loop, tls, ep, &c, eb, sizeof eb) < 0) {
            fprintf(stderr, "mhsm-bench: %s\n", eb);
            return 1;
        }
        w->conns[w->n_conns++] = c;
        for (unsigned k = 0; k < O.streams; k++) {
            struct slot *s = &w->slots[w->n_slots++];
            s->w = w;
            s->conn = c;
            s->index = i * O.streams + k;
            s->rng = 0x9e3779b97f4a7c15ull * (s->index + 1);
        }
    }

    /* Connect (TLS handshakes included) before the clock starts, at most 10 s; a
     * connection that failed once is not waited for: its calls fail and are counted. */
    uint64_t connect_until = now_ns() + UINT64_C(10000000000);
    for (bool all = false; !all && now_ns() < connect_until;) {
        all = true;
        for (unsigned t = 0; t < O.threads; t++) {
            if (mh_async_loop_run_once(ws[t].loop, 0) < 0)
                return 1;
            for (unsigned i = 0; i < ws[t].n_conns; i++)
                all = all && (mh_async_conn_ready(ws[t].conns[i]) ||
                              mh_async_conn_failures(ws[t].conns[i]) > 0);
        }
        if (!all)
            usleep(1000);
    }
    uint64_t t_begin = now_ns();
    g_measure_start = t_begin + (uint64_t)(O.warmup * 1e9);
    g_measure_end = O.count != 0 ? UINT64_MAX : g_measure_start + (uint64_t)(O.duration * 1e9);
    for (unsigned t = 0; t < O.threads; t++)
        if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0) {
            fprintf(stderr, "mhsm-bench: cannot start a thread\n");
            return 1;
        }

    bool tty = isatty(2);
    uint64_t last_ops = 0, last_t = t_begin;
    while (atomic_load(&g_workers_done) < O.threads) {
        for (int i = 0; i < 20 && atomic_load(&g_workers_done) < O.threads; i++)
            usleep(50000);
        if (O.quiet || atomic_load(&g_workers_done) == O.threads)
            continue;
        uint64_t ops = 0, errs = 0, now = now_ns();
        for (unsigned t = 0; t < O.threads; t++) {
            ops += atomic_load_explicit(&ws[t].ops, memory_order_relaxed);
            errs += atomic_load_explicit(&ws[t].errs, memory_order_relaxed);
        }
        double rate = now > last_t ? (double)(ops - last_ops) * 1e9 / (double)(now - last_t) : 0;
        fprintf(stderr, "%s%7.1fs %s ops %llu  %.1f ops/s  errors %llu%s", tty ? "\r" : "",
                (double)(now - t_begin) / 1e9, now < g_measure_start ? "warmup" : "run   ",
                (unsigned long long)ops, rate, (unsigned long long)errs, tty ? "   " : "\n");
        last_ops = ops;
        last_t = now;
    }
    if (!O.quiet && tty)
        fprintf(stderr, "\n");
    uint64_t t_end = 0;
    for (unsigned t = 0; t < O.threads; t++) {
        pthread_join(ws[t].th, NULL);
        if (ws[t].last_done > t_end)
            t_end = ws[t].last_done;
    }

    /* Measured window: duration mode, the configured one; count mode, until the end. */
    double secs = O.count == 0
                      ? O.duration
                      : (double)(t_end > g_measure_start ? t_end - g_measure_start : 0) / 1e9;
    struct mh_hist *total = malloc(sizeof *total);
    struct opstat *per = calloc(O.n_mix, sizeof *per);
    if (total == NULL || per == NULL || mh_hist_init(total, HIST_HIGHEST_NS) < 0)
        return 1;
    uint64_t errs = 0, by_status[NERR] = {0};
    for (unsigned i = 0; i < O.n_mix; i++) {
        if (mh_hist_init(&per[i].hist, HIST_HIGHEST_NS) < 0)
            return 1;
        for (unsigned t = 0; t < O.threads; t++) {
            mh_hist_merge(&per[i].hist, &ws[t].stats[i].hist);
            per[i].err += ws[t].stats[i].err;
            for (int k = 0; k < NERR; k++) {
                per[i].by_status[k] += ws[t].stats[i].by_status[k];
                by_status[k] += ws[t].stats[i].by_status[k];
            }
        }
        mh_hist_merge(total, &per[i].hist);
        errs += per[i].err;
    }
    uint64_t ops = mh_hist_count(total);

    FILE *sf = O.json != NULL && strcmp(O.json, "-") == 0 ? stderr : stdout;
    for (unsigned i = 0; i < O.n_mix; i++)
        print_line(sf, O.mix[i].def->name, secs, &per[i].hist, per[i].err);
    if (O.n_mix > 1)
        print_line(sf, "total", secs, total, errs);
    for (int k = 0; k < NERR; k++)
        if (by_status[k] != 0)
            fprintf(sf, "  errors %s: %llu\n", err_name(k), (unsigned long long)by_status[k]);

    if (O.json != NULL) {
        json_t *j = json_object();
        json_t *eps = json_array();
        for (unsigned i = 0; i < O.n_endpoints; i++)
            json_array_append_new(eps, json_string(O.endpoints[i]));
        json_t *ebs = json_object();
        for (int k = 0; k < NERR; k++)
            if (by_status[k] != 0)
                json_object_set_new(ebs, err_name(k), json_integer((json_int_t)by_status[k]));
        json_t *perj = json_object();
        for (unsigned i = 0; i < O.n_mix; i++) {
            json_t *pe = json_object();
            for (int k = 0; k < NERR; k++)
                if (per[i].by_status[k] != 0)
                    json_object_set_new(pe, err_name(k),
                                        json_integer((json_int_t)per[i].by_status[k]));
            json_object_set_new(
                perj, O.mix[i].def->name,
                json_pack("{s:I,s:I,s:f,s:o,s:o}", "ops", (json_int_t)mh_hist_count(&per[i].hist),
                          "errors", (json_int_t)per[i].err, "ops_per_s",
                          secs > 0 ? (double)mh_hist_count(&per[i].hist) / secs : 0.0,
                          "errors_by_status", pe, "latency_us",
                          mh_hist_latency_json(&per[i].hist)));
        }
        json_object_set_new(j, "tool", json_string("mhsm-bench"));
        json_object_set_new(j, "version", json_integer(1));
        json_object_set_new(j, "label", json_string(O.label != NULL ? O.label : ""));
        json_object_set_new(j, "target", json_string(O.etcd ? "etcd" : "mhsm"));
        json_object_set_new(j, "endpoints", eps);
        json_object_set_new(j, "connections", json_integer(O.connections));
        json_object_set_new(j, "streams", json_integer(O.streams));
        json_object_set_new(j, "threads", json_integer(O.threads));
        json_object_set_new(j, "in_flight", json_integer((json_int_t)O.connections * O.streams));
        json_object_set_new(j, "duration_s", json_real(secs));
        json_object_set_new(j, "warmup_s", json_real(O.warmup));
        json_object_set_new(j, "ops", json_integer((json_int_t)ops));
        json_object_set_new(j, "errors", json_integer((json_int_t)errs));
        json_object_set_new(j, "errors_by_status", ebs);
        json_object_set_new(j, "ops_per_s", json_real(secs > 0 ? (double)ops / secs : 0.0));
        json_object_set_new(j, "latency_us", mh_hist_latency_json(total));
        json_object_set_new(j, "per_op", perj);
        if (O.count != 0)
            json_object_set_new(j, "count", json_integer((json_int_t)O.count));
        int jr;
        if (strcmp(O.json, "-") == 0) {
            jr = json_dumpf(j, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
            fputc('\n', stdout);
        } else {
            jr = json_dump_file(j, O.json, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        }
        json_decref(j);
        if (jr != 0) {
            fprintf(stderr, "mhsm-bench: cannot write %s\n", O.json);
            return 1;
        }
    }
    for (unsigned t = 0; t < O.threads; t++) {
        mh_async_loop_free(ws[t].loop);
        free(ws[t].slots);
        free(ws[t].stats);
        free(ws[t].conns);
    }
    mh_async_tls_free(tls);
    free(ws);
    free(per);
    free(total);
    for (unsigned i = 0; i < O.n_mix; i++)
        free(O.mix[i].req);
    free(g_payload);
    free(O.endpoints_buf);
    return ops == 0 ? 1 : 0;
}
