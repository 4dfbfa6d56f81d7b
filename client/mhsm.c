/* mhsm: the command-line client of mhsmd (command names follow `az keyvault`).
 *
 * Exit status: 0 success; 1 the server answered with an error ("error: STATUS: msg"), or
 * `audit verify` found a bad record or an unreadable log file; 2 usage or local file
 * error; 3 connection or TLS failure ("error: UNAVAILABLE: why"; for `audit verify`
 * without --public-key: the key could not be fetched). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/args.h"
#include "client/json_out.h"
#include "client/logverify.h"
#include "client/roledef.h"
#include "client/rpc_client.h"
#include "common/fsutil.h"
#include "common/buf.h"
#include "common/secret.h"
#include "crypto/rand.h"
#include "grpc/health/v1/health.pb-c.h"
#include "mhsm/v1/audit.pb-c.h"
#include "mhsm/v1/cluster.pb-c.h"
#include "mhsm/v1/crypto.pb-c.h"
#include "mhsm/v1/keys.pb-c.h"
#include "mhsm/v1/rbac.pb-c.h"
#include "mhsm/v1/security_domain.pb-c.h"

enum { EXIT_OK = 0, EXIT_SERVER = 1, EXIT_USAGE = 2, EXIT_CONN = 3 };

#define MAX_INPUT_FILE (16u * 1024u * 1024u)
#define MAX_LIST_PAGES 100000u
#define MAX_NODE_ID    1000000u

static const struct mh_args_flag FLAGS[] = {
    {"endpoint", MH_ARGS_VALUE},
    {"ca", MH_ARGS_VALUE},
    {"cert", MH_ARGS_VALUE},
    {"key", MH_ARGS_VALUE},
    {"output", MH_ARGS_VALUE},
    {"timeout", MH_ARGS_VALUE},
    {"name", MH_ARGS_VALUE},
    {"version", MH_ARGS_VALUE},
    {"kty", MH_ARGS_VALUE},
    {"size", MH_ARGS_VALUE},
    {"curve", MH_ARGS_VALUE},
    {"ops", MH_ARGS_MULTI},
    {"disabled", MH_ARGS_BOOL},
    {"enabled", MH_ARGS_VALUE},
    {"not-before", MH_ARGS_VALUE},
    {"expires", MH_ARGS_VALUE},
    {"tags", MH_ARGS_MULTI},
    {"pem-file", MH_ARGS_VALUE},
    {"pem-password", MH_ARGS_VALUE},
    {"jwk-file", MH_ARGS_VALUE},
    {"maxresults", MH_ARGS_VALUE},
    {"file", MH_ARGS_VALUE},
    {"algorithm", MH_ARGS_VALUE},
    {"value", MH_ARGS_VALUE},
    {"iv", MH_ARGS_VALUE},
    {"aad", MH_ARGS_VALUE},
    {"tag", MH_ARGS_VALUE},
    {"digest", MH_ARGS_VALUE},
    {"signature", MH_ARGS_VALUE},
    {"count", MH_ARGS_VALUE},
    {"sd-wrapping-keys", MH_ARGS_MULTI},
    {"sd-quorum", MH_ARGS_VALUE},
    {"security-domain-file", MH_ARGS_VALUE},
    {"retention-days", MH_ARGS_VALUE},
    {"id", MH_ARGS_VALUE},
    {"old-id", MH_ARGS_VALUE},
    {"new-id", MH_ARGS_VALUE},
    {"address", MH_ARGS_VALUE},
    {"role-name", MH_ARGS_VALUE},
    {"custom-role-only", MH_ARGS_BOOL},
    {"role-definition", MH_ARGS_VALUE},
    {"role", MH_ARGS_VALUE},
    {"assignee", MH_ARGS_VALUE},
    {"scope", MH_ARGS_VALUE},
    {"at-scope-only", MH_ARGS_BOOL},
    {"ids", MH_ARGS_MULTI},
    {"public-key", MH_ARGS_VALUE},
    {NULL, MH_ARGS_BOOL},
};

static const char *const GLOBAL_FLAGS[] = {"endpoint", "ca",      "cert", "key",
                                           "output",   "timeout", NULL};

static const char GLOBAL_HELP[] =
    "Global options (before or after the command words):\n"
    "  --endpoint HOST:PORT   server (env MHSM_ENDPOINT, default 127.0.0.1:8443)\n"
    "  --ca FILE              CA bundle the server must chain to (env MHSM_CA)\n"
    "  --cert FILE            client certificate, PEM (env MHSM_CERT)\n"
    "  --key FILE             client private key, PEM (env MHSM_KEY)\n"
    "  --output json|table    output format (default json)\n"
    "  --timeout SECONDS      deadline of each call (default 30), sent as grpc-timeout\n"
    "  --help, -h             this help\n"
    "Binary values: base64url or standard base64, padded or not. Times: Unix seconds\n"
    "or YYYY-MM-DDTHH:MM:SSZ.\n"
    "Exit status: 0 success, 1 error from the server, 2 usage error, 3 connection or TLS\n"
    "failure.\n";

struct ctx {
    struct mh_args args;
    struct mh_client_config cfg;
    struct mh_client *client;
    uint64_t timeout_ms;
    bool table;
    size_t n_used; /* command words; the words after them are operands */
};

struct command {
    const char *group; /* NULL for top-level commands; may be several words */
    const char *name;
    int (*run)(struct ctx *x);
    const char *const *flags;    /* allowed besides the global ones */
    const char *const *required; /* must be present */
    const char *synopsis;
    const char *summary;
};

/* ---- output helpers ------------------------------------------------------ */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

static int local_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int local_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* Prints a server-supplied text with control characters replaced: a hostile server
 * must not be able to drive the terminal. UTF-8 bytes pass unchanged. */
static void print_clean(FILE *f, const char *s)
{
    for (; *s != 0; s++) {
        unsigned char ch = (unsigned char)*s;
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
}

static int print_json(struct ctx *x, json_t *j)
{
    int rv = mh_json_out_print(j, x->table, stdout);
    json_decref(j);
    if (rv < 0) {
        fprintf(stderr, "error: cannot write the output: %s\n", mh_strerror(rv));
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int bad_response(int rv)
{
    fprintf(stderr, "error: INTERNAL: cannot render the server's response: %s\n", mh_strerror(rv));
    return EXIT_SERVER;
}

/* ---- the call ------------------------------------------------------------ */

/* Copies a server-supplied text into |out| with control characters replaced (as
 * print_clean does), cut to fit. */
static void clean_into(char *out, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s != NULL && *s != 0 && i + 1 < cap; s++, i++) {
        unsigned char ch = (unsigned char)*s;
        out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    out[i] = 0;
}

/* One call; |writing| calls are retried once with the same request (and request id)
 * when the server was unavailable or the connection dropped: the server applies a
 * request id at most once. Returns an exit status; *resp is set on EXIT_OK, else
 * |why| holds "STATUS: message" (cleaned) and nothing was printed. */
static int call_quiet(struct ctx *x, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *rd, bool writing, ProtobufCMessage **resp,
                      char *why, size_t whylen)
{
    why[0] = 0;
    if (x->client == NULL) {
        char reason[512];
        if (mh_client_new(&x->cfg, &x->client, reason, sizeof reason) < 0) {
            snprintf(why, whylen, "%s", reason);
            return EXIT_USAGE;
        }
    }
    for (int attempt = 0;; attempt++) {
        int status = 0;
        char *msg = NULL;
        int rv = mh_client_call(x->client, path, req, rd, x->timeout_ms, resp, &status, &msg);
        bool retry = writing && attempt == 0 &&
                     (rv == -ECONNRESET || (rv == 0 && status == MH_CLIENT_UNAVAILABLE));
        if (retry) {
            free(msg);
            struct timespec ts = {0, 200 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (rv < 0) {
            char m[512];
            clean_into(m, sizeof m, mh_client_errmsg(x->client));
            snprintf(why, whylen, "UNAVAILABLE: %s", m);
            return EXIT_CONN;
        }
        if (status != 0) {
            char m[4200];
            clean_into(m, sizeof m, msg != NULL ? msg : "");
            snprintf(why, whylen, "%s: %s", mh_client_status_name(status), m);
            free(msg);
            return EXIT_SERVER;
        }
        free(msg);
        return EXIT_OK;
    }
}

/* call_quiet, with the failure printed as "error: STATUS: message". */
static int call(struct ctx *x, const char *path, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *rd, bool writing, ProtobufCMessage **resp)
{
    char why[4400];
    int ex = call_quiet(x, path, req, rd, writing, resp, why, sizeof why);
    if (ex != EXIT_OK)
        fprintf(stderr, "error: %s\n", why);
    return ex;
}

static int new_request_id(char out[33])
{
    if (mh_rand_hex(out, 16) < 0)
        return local_error("cannot draw a request id");
    return EXIT_OK;
}

/* ---- local files ---------------------------------------------------------- */

/* Reads a whole file (at most MAX_INPUT_FILE) into a fresh secret, NUL-terminated
 * past len, read(2) straight into the secret so no stdio buffer keeps a copy. */
static int read_file_secret(const char *path, struct mh_secret *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return local_error("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size > MAX_INPUT_FILE) {
        close(fd);
        return local_error("%s is not a regular file of at most %u bytes", path, MAX_INPUT_FILE);
    }
    size_t size = (size_t)st.st_size;
    if (mh_secret_alloc(out, size + 1) < 0) {
        close(fd);
        return local_error("out of memory");
    }
    size_t got = 0;
    if (mh_fs_read_fd(fd, out->data, size, &got) < 0 || got != size) {
        close(fd);
        mh_secret_free(out);
        return local_error("cannot read %s (changed while reading?)", path);
    }
    close(fd);
    out->data[size] = 0;
    out->len = size; /* the NUL stays allocated past len */
    return EXIT_OK;
}

/* Text input that must not contain NUL (it goes into a proto3 string). */
static int read_text_secret(const char *path, struct mh_secret *out)
{
    int ex = read_file_secret(path, out);
    if (ex != EXIT_OK)
        return ex;
    if (memchr(out->data, 0, out->len) != NULL) {
        mh_secret_free(out);
        return local_error("%s is not a text file", path);
    }
    return EXIT_OK;
}

/* Creates |path| for writing, refusing to overwrite anything. */
static int create_excl(const char *path, int *fd)
{
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (*fd >= 0)
        return EXIT_OK;
    if (errno == EEXIST)
        return local_error("%s already exists; refusing to overwrite it", path);
    return local_error("cannot create %s: %s", path, strerror(errno));
}

static int write_close(int fd, const char *path, const uint8_t *p, size_t len)
{
    int ok = mh_fs_write_fd(fd, p, len) == 0 && fsync(fd) == 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok)
        return local_error("cannot write %s: %s", path, strerror(errno));
    return EXIT_OK;
}

/* ---- argument helpers -------------------------------------------------------- */

static int arg_u32(struct ctx *x, const char *flag, uint32_t *out)
{
    const char *v = mh_args_get(&x->args, flag);
    if (v == NULL)
        return EXIT_OK;
    if (mh_args_parse_u32(v, 0, UINT32_MAX, out) < 0)
        return usage_error("--%s needs a non-negative integer, not '%s'", flag, v);
    return EXIT_OK;
}

static int arg_bytes(struct ctx *x, const char *flag, struct mh_buf *out, ProtobufCBinaryData *pb)
{
    const char *v = mh_args_get(&x->args, flag);
    if (v == NULL)
        return EXIT_OK;
    if (mh_args_decode_bytes(v, out) < 0)
        return usage_error("--%s is not base64 or base64url", flag);
    pb->data = out->data;
    pb->len = out->len;
    return EXIT_OK;
}

struct attrs {
    Mhsm__V1__KeyAttributes a;
    Mhsm__V1__OptBool enabled;
    Mhsm__V1__OptInt64 nbf;
    Mhsm__V1__OptInt64 exp;
    bool any;
};

/* --disabled (create/import) or --enabled true|false (set-attributes), --not-before,
 * --expires. */
static int arg_attrs(struct ctx *x, struct attrs *at)
{
    mhsm__v1__key_attributes__init(&at->a);
    mhsm__v1__opt_bool__init(&at->enabled);
    mhsm__v1__opt_int64__init(&at->nbf);
    mhsm__v1__opt_int64__init(&at->exp);
    at->any = false;
    if (mh_args_has(&x->args, "disabled")) {
        at->enabled.value = 0;
        at->a.enabled = &at->enabled;
        at->any = true;
    }
    const char *v = mh_args_get(&x->args, "enabled");
    if (v != NULL) {
        bool b;
        if (mh_args_parse_bool(v, &b) < 0)
            return usage_error("--enabled takes true or false, not '%s'", v);
        at->enabled.value = b;
        at->a.enabled = &at->enabled;
        at->any = true;
    }
    static const char *const TIMES[] = {"not-before", "expires"};
    for (size_t i = 0; i < 2; i++) {
        v = mh_args_get(&x->args, TIMES[i]);
        if (v == NULL)
            continue;
        int64_t t;
        if (mh_args_parse_time(v, &t) < 0)
            return usage_error("--%s takes Unix seconds or YYYY-MM-DDTHH:MM:SSZ, not '%s'",
                               TIMES[i], v);
        Mhsm__V1__OptInt64 *o = i == 0 ? &at->nbf : &at->exp;
        o->value = t;
        if (i == 0)
            at->a.not_before = o;
        else
            at->a.expires = o;
        at->any = true;
    }
    return EXIT_OK;
}

/* --ops: the values borrowed from argv. */
static char **arg_ops(struct ctx *x, size_t *n)
{
    *n = mh_args_count(&x->args, "ops");
    char **ops = calloc(*n + 1, sizeof *ops);
    for (size_t i = 0; ops != NULL && i < *n; i++)
        ops[i] = (char *)mh_args_nth(&x->args, "ops", i);
    return ops;
}

/* Tag entries of every request map share one layout (base, key, value); |desc| is the
 * entry type. Keys are copied (they are cut out of "k=v"); values are borrowed. */
struct tags {
    ProtobufCMessage **ptrs;
    struct tag_entry {
        ProtobufCMessage base;
        char *key;
        char *value;
    } * entries;
    size_t n;
};

static void tags_free(struct tags *t)
{
    for (size_t i = 0; t->entries != NULL && i < t->n; i++)
        free(t->entries[i].key);
    free(t->entries);
    free(t->ptrs);
    memset(t, 0, sizeof *t);
}

static int arg_tags(struct ctx *x, const ProtobufCMessageDescriptor *desc, struct tags *t)
{
    memset(t, 0, sizeof *t);
    size_t n = mh_args_count(&x->args, "tags");
    if (n == 1 && mh_args_get(&x->args, "tags")[0] == 0)
        return EXIT_OK; /* --tags "" : no tags (set-attributes: remove them all) */
    t->entries = calloc(n + 1, sizeof *t->entries);
    t->ptrs = calloc(n + 1, sizeof *t->ptrs);
    if (t->entries == NULL || t->ptrs == NULL) {
        tags_free(t);
        return local_error("out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = mh_args_nth(&x->args, "tags", i);
        size_t klen;
        const char *val;
        if (mh_args_split_tag(s, &klen, &val) < 0) {
            tags_free(t);
            return usage_error("--tags takes NAME=VALUE pairs, not '%s'", s);
        }
        struct tag_entry *e = &t->entries[i];
        protobuf_c_message_init(desc, e);
        e->key = strndup(s, klen);
        e->value = (char *)val;
        t->ptrs[i] = &e->base;
        t->n = i + 1;
        if (e->key == NULL) {
            tags_free(t);
            return local_error("out of memory");
        }
    }
    return EXIT_OK;
}

/* ---- security domain ------------------------------------------------------- */

static int cmd_sd_download(struct ctx *x)
{
    Mhsm__V1__DownloadRequest req = MHSM__V1__DOWNLOAD_REQUEST__INIT;
    int ex = arg_u32(x, "sd-quorum", &req.quorum);
    if (ex == EXIT_OK)
        ex = arg_u32(x, "retention-days", &req.retention_days);
    if (ex != EXIT_OK)
        return ex;
    size_t n = mh_args_count(&x->args, "sd-wrapping-keys");
    struct mh_secret *pems = calloc(n + 1, sizeof *pems);
    char **strs = calloc(n + 1, sizeof *strs);
    if (pems == NULL || strs == NULL) {
        free(pems);
        free(strs);
        return local_error("out of memory");
    }
    size_t loaded = 0;
    for (; loaded < n && ex == EXIT_OK; loaded++) {
        ex = read_text_secret(mh_args_nth(&x->args, "sd-wrapping-keys", loaded), &pems[loaded]);
        strs[loaded] = (char *)pems[loaded].data;
    }
    req.n_certificates_pem = n;
    req.certificates_pem = strs;
    const char *path = mh_args_get(&x->args, "security-domain-file");
    int fd = -1;
    if (ex == EXIT_OK)
        ex = create_excl(path, &fd); /* before the call: never activate and then lose the SD */
    ProtobufCMessage *resp = NULL;
    if (ex == EXIT_OK) {
        ex = call(x, "/mhsm.v1.SecurityDomain/Download", &req.base,
                  &mhsm__v1__download_response__descriptor, true, &resp);
        if (ex != EXIT_OK) {
            close(fd);
            unlink(path);
        }
    }
    if (ex == EXIT_OK) {
        const Mhsm__V1__DownloadResponse *r = (const Mhsm__V1__DownloadResponse *)resp;
        ex = write_close(fd, path, (const uint8_t *)r->security_domain, strlen(r->security_domain));
    }
    mh_client_response_free(resp);
    for (size_t i = 0; i < loaded; i++)
        mh_secret_free(&pems[i]);
    free(pems);
    free(strs);
    if (ex != EXIT_OK)
        return ex;
    json_t *o = json_pack("{s:s}", "status", "Active");
    return o != NULL ? print_json(x, o) : local_error("out of memory");
}

static int cmd_sd_show(struct ctx *x)
{
    Mhsm__V1__GetStatusRequest req = MHSM__V1__GET_STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int ex = call(x, "/mhsm.v1.SecurityDomain/GetStatus", &req.base,
                  &mhsm__v1__get_status_response__descriptor, false, &resp);
    if (ex != EXIT_OK)
        return ex;
    const Mhsm__V1__GetStatusResponse *r = (const Mhsm__V1__GetStatusResponse *)resp;
    json_t *o = json_object();
    int rv = o != NULL ? 0 : MH_ENOMEM;
    if (rv == 0)
        rv = mh_json_out_set_str(o, "activationStatus", r->activation_status);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "message", r->message);
    if (rv == 0 && json_object_set_new(o, "retentionDays", json_integer(r->retention_days)) != 0)
        rv = MH_ENOMEM;
    mh_client_response_free(resp);
    if (rv < 0) {
        json_decref(o);
        return bad_response(rv);
    }
    return print_json(x, o);
}

/* ---- keys -------------------------------------------------------------------- */

static int print_bundle(struct ctx *x, ProtobufCMessage *resp)
{
    json_t *o = NULL;
    int rv = mh_json_out_key_bundle((const Mhsm__V1__KeyBundle *)resp, &o);
    mh_client_response_free(resp);
    return rv < 0 ? bad_response(rv) : print_json(x, o);
}

static int print_deleted_bundle(struct ctx *x, ProtobufCMessage *resp)
{
    json_t *o = NULL;
    int rv = mh_json_out_deleted_key_bundle((const Mhsm__V1__DeletedKeyBundle *)resp, &o);
    mh_client_response_free(resp);
    return rv < 0 ? bad_response(rv) : print_json(x, o);
}

static int cmd_key_create(struct ctx *x)
{
    Mhsm__V1__CreateKeyRequest req = MHSM__V1__CREATE_KEY_REQUEST__INIT;
    char rid[33];
    struct attrs at;
    struct tags tags = {0};
    int ex = new_request_id(rid);
    if (ex == EXIT_OK)
        ex = arg_u32(x, "size", &req.key_size);
    if (ex == EXIT_OK)
        ex = arg_attrs(x, &at);
    if (ex == EXIT_OK)
        ex = arg_tags(x, &mhsm__v1__create_key_request__tags_entry__descriptor, &tags);
    if (ex != EXIT_OK)
        return ex;
    req.name = (char *)mh_args_get(&x->args, "name");
    req.kty = (char *)mh_args_get(&x->args, "kty");
    if (mh_args_has(&x->args, "curve"))
        req.crv = (char *)mh_args_get(&x->args, "curve");
    char **ops = arg_ops(x, &req.n_key_ops);
    req.key_ops = ops;
    req.attributes = at.any ? &at.a : NULL;
    req.n_tags = tags.n;
    req.tags = (Mhsm__V1__CreateKeyRequest__TagsEntry **)tags.ptrs;
    req.request_id = rid;
    ProtobufCMessage *resp = NULL;
    if (ops == NULL)
        ex = local_error("out of memory");
    else
        ex = call(x, "/mhsm.v1.Keys/CreateKey", &req.base, &mhsm__v1__key_bundle__descriptor, true,
                  &resp);
    free(ops);
    tags_free(&tags);
    return ex == EXIT_OK ? print_bundle(x, resp) : ex;
}

static int cmd_key_import(struct ctx *x)
{
    const char *pem = mh_args_get(&x->args, "pem-file");
    const char *jwk = mh_args_get(&x->args, "jwk-file");
    if ((pem == NULL) == (jwk == NULL))
        return usage_error("give exactly one of --pem-file and --jwk-file");
    if (jwk != NULL && mh_args_has(&x->args, "pem-password"))
        return usage_error("--pem-password goes with --pem-file");
    Mhsm__V1__ImportKeyRequest req = MHSM__V1__IMPORT_KEY_REQUEST__INIT;
    char rid[33];
    struct attrs at;
    struct tags tags = {0};
    int ex = new_request_id(rid);
    if (ex == EXIT_OK)
        ex = arg_attrs(x, &at);
    if (ex == EXIT_OK)
        ex = arg_tags(x, &mhsm__v1__import_key_request__tags_entry__descriptor, &tags);
    if (ex != EXIT_OK)
        return ex;
    struct mh_secret material = {0};
    ex = read_text_secret(pem != NULL ? pem : jwk, &material);
    if (ex != EXIT_OK) {
        tags_free(&tags);
        return ex;
    }
    req.name = (char *)mh_args_get(&x->args, "name");
    if (pem != NULL) {
        req.material_case = MHSM__V1__IMPORT_KEY_REQUEST__MATERIAL_PEM;
        req.pem = (char *)material.data;
    } else {
        req.material_case = MHSM__V1__IMPORT_KEY_REQUEST__MATERIAL_JWK;
        req.jwk = (char *)material.data;
    }
    char *password = (char *)mh_args_get(&x->args, "pem-password");
    if (password != NULL)
        req.pem_password = password;
    char **ops = arg_ops(x, &req.n_key_ops);
    req.key_ops = ops;
    req.attributes = at.any ? &at.a : NULL;
    req.n_tags = tags.n;
    req.tags = (Mhsm__V1__ImportKeyRequest__TagsEntry **)tags.ptrs;
    req.request_id = rid;
    ProtobufCMessage *resp = NULL;
    if (ops == NULL)
        ex = local_error("out of memory");
    else
        ex = call(x, "/mhsm.v1.Keys/ImportKey", &req.base, &mhsm__v1__key_bundle__descriptor, true,
                  &resp);
    mh_secret_free(&material);
    if (password != NULL)
        mh_wipe(password, strlen(password)); /* our copy in argv, at least */
    free(ops);
    tags_free(&tags);
    return ex == EXIT_OK ? print_bundle(x, resp) : ex;
}

static int cmd_key_show(struct ctx *x)
{
    Mhsm__V1__GetKeyRequest req = MHSM__V1__GET_KEY_REQUEST__INIT;
    req.name = (char *)mh_args_get(&x->args, "name");
    if (mh_args_has(&x->args, "version"))
        req.version = (char *)mh_args_get(&x->args, "version");
    ProtobufCMessage *resp = NULL;
    int ex =
        call(x, "/mhsm.v1.Keys/GetKey", &req.base, &mhsm__v1__key_bundle__descriptor, false, &resp);
    return ex == EXIT_OK ? print_bundle(x, resp) : ex;
}

/* ListKeys, ListKeyVersions and ListDeletedKeys: follows next_page_token until the end
 * or until --maxresults items were collected. */
enum list_kind { LIST_KEYS, LIST_VERSIONS, LIST_DELETED };

static int list_common(struct ctx *x, enum list_kind kind)
{
    uint32_t max = 0;
    const char *mv = mh_args_get(&x->args, "maxresults");
    if (mv != NULL && mh_args_parse_u32(mv, 1, UINT32_MAX, &max) < 0)
        return usage_error("--maxresults needs a positive integer, not '%s'", mv);
    uint32_t page = max != 0 && max < 25 ? max : 0;
    json_t *arr = json_array();
    if (arr == NULL)
        return local_error("out of memory");
    char *token = strdup("");
    int ex = token != NULL ? EXIT_OK : local_error("out of memory");
    for (uint32_t pages = 0; ex == EXIT_OK; pages++) {
        if (pages == MAX_LIST_PAGES) {
            ex = local_error("the server sent more than %u pages", MAX_LIST_PAGES);
            break;
        }
        ProtobufCMessage *resp = NULL;
        if (kind == LIST_VERSIONS) {
            Mhsm__V1__ListKeyVersionsRequest req = MHSM__V1__LIST_KEY_VERSIONS_REQUEST__INIT;
            req.name = (char *)mh_args_get(&x->args, "name");
            req.max_results = page;
            req.page_token = token;
            ex = call(x, "/mhsm.v1.Keys/ListKeyVersions", &req.base,
                      &mhsm__v1__list_keys_response__descriptor, false, &resp);
        } else {
            Mhsm__V1__ListKeysRequest req = MHSM__V1__LIST_KEYS_REQUEST__INIT;
            req.max_results = page;
            req.page_token = token;
            if (kind == LIST_KEYS)
                ex = call(x, "/mhsm.v1.Keys/ListKeys", &req.base,
                          &mhsm__v1__list_keys_response__descriptor, false, &resp);
            else
                ex = call(x, "/mhsm.v1.Keys/ListDeletedKeys", &req.base,
                          &mhsm__v1__list_deleted_keys_response__descriptor, false, &resp);
        }
        if (ex != EXIT_OK)
            break;
        const char *next;
        int rv = 0;
        if (kind == LIST_DELETED) {
            const Mhsm__V1__ListDeletedKeysResponse *r =
                (const Mhsm__V1__ListDeletedKeysResponse *)resp;
            for (size_t i = 0; rv == 0 && i < r->n_items; i++) {
                json_t *o = NULL;
                rv = mh_json_out_deleted_key_item(r->items[i], &o);
                if (rv == 0 && json_array_append_new(arr, o) != 0)
                    rv = MH_ENOMEM;
            }
            next = r->next_page_token;
        } else {
            const Mhsm__V1__ListKeysResponse *r = (const Mhsm__V1__ListKeysResponse *)resp;
            for (size_t i = 0; rv == 0 && i < r->n_items; i++) {
                json_t *o = NULL;
                rv = mh_json_out_key_item(r->items[i], &o);
                if (rv == 0 && json_array_append_new(arr, o) != 0)
                    rv = MH_ENOMEM;
            }
            next = r->next_page_token;
        }
        bool done = next == NULL || next[0] == 0 || strcmp(next, token) == 0 ||
                    (max != 0 && json_array_size(arr) >= max);
        free(token);
        token = done ? NULL : strdup(next);
        mh_client_response_free(resp);
        if (rv < 0)
            ex = bad_response(rv);
        else if (done)
            break;
        else if (token == NULL)
            ex = local_error("out of memory");
    }
    free(token);
    if (ex != EXIT_OK) {
        json_decref(arr);
        return ex;
    }
    while (max != 0 && json_array_size(arr) > max)
        json_array_remove(arr, json_array_size(arr) - 1);
    return print_json(x, arr);
}

static int cmd_key_list(struct ctx *x)
{
    return list_common(x, LIST_KEYS);
}

static int cmd_key_list_versions(struct ctx *x)
{
    return list_common(x, LIST_VERSIONS);
}

static int cmd_key_list_deleted(struct ctx *x)
{
    return list_common(x, LIST_DELETED);
}

static int cmd_key_set_attributes(struct ctx *x)
{
    Mhsm__V1__UpdateKeyRequest req = MHSM__V1__UPDATE_KEY_REQUEST__INIT;
    char rid[33];
    struct attrs at;
    struct tags tags = {0};
    int ex = new_request_id(rid);
    if (ex == EXIT_OK)
        ex = arg_attrs(x, &at);
    if (ex == EXIT_OK)
        ex = arg_tags(x, &mhsm__v1__update_key_request__tags_entry__descriptor, &tags);
    if (ex != EXIT_OK)
        return ex;
    req.name = (char *)mh_args_get(&x->args, "name");
    if (mh_args_has(&x->args, "version"))
        req.version = (char *)mh_args_get(&x->args, "version");
    req.attributes = at.any ? &at.a : NULL;
    req.replace_tags = mh_args_has(&x->args, "tags");
    req.n_tags = tags.n;
    req.tags = (Mhsm__V1__UpdateKeyRequest__TagsEntry **)tags.ptrs;
    req.replace_key_ops = mh_args_has(&x->args, "ops");
    char **ops = arg_ops(x, &req.n_key_ops);
    req.key_ops = ops;
    req.request_id = rid;
    ProtobufCMessage *resp = NULL;
    if (ops == NULL)
        ex = local_error("out of memory");
    else
        ex = call(x, "/mhsm.v1.Keys/UpdateKey", &req.base, &mhsm__v1__key_bundle__descriptor, true,
                  &resp);
    free(ops);
    tags_free(&tags);
    return ex == EXIT_OK ? print_bundle(x, resp) : ex;
}

/* The KeyNameRequest calls. */
static int name_call(struct ctx *x, const char *path, const ProtobufCMessageDescriptor *rd,
                     bool writing, ProtobufCMessage **resp)
{
    Mhsm__V1__KeyNameRequest req = MHSM__V1__KEY_NAME_REQUEST__INIT;
    char rid[33];
    req.name = (char *)mh_args_get(&x->args, "name");
    if (writing) {
        int ex = new_request_id(rid);
        if (ex != EXIT_OK)
            return ex;
        req.request_id = rid;
    }
    return call(x, path, &req.base, rd, writing, resp);
}

static int cmd_key_delete(struct ctx *x)
{
    ProtobufCMessage *resp = NULL;
    int ex = name_call(x, "/mhsm.v1.Keys/DeleteKey", &mhsm__v1__deleted_key_bundle__descriptor,
                       true, &resp);
    return ex == EXIT_OK ? print_deleted_bundle(x, resp) : ex;
}

static int cmd_key_show_deleted(struct ctx *x)
{
    ProtobufCMessage *resp = NULL;
    int ex = name_call(x, "/mhsm.v1.Keys/GetDeletedKey", &mhsm__v1__deleted_key_bundle__descriptor,
                       false, &resp);
    return ex == EXIT_OK ? print_deleted_bundle(x, resp) : ex;
}

static int cmd_key_recover(struct ctx *x)
{
    ProtobufCMessage *resp = NULL;
    int ex = name_call(x, "/mhsm.v1.Keys/RecoverDeletedKey", &mhsm__v1__key_bundle__descriptor,
                       true, &resp);
    return ex == EXIT_OK ? print_bundle(x, resp) : ex;
}

static int cmd_key_rotate(struct ctx *x)
{
    ProtobufCMessage *resp = NULL;
    int ex =
        name_call(x, "/mhsm.v1.Keys/RotateKey", &mhsm__v1__key_bundle__descriptor, true, &resp);
    return ex == EXIT_OK ? print_bundle(x, resp) : ex;
}

static int cmd_key_purge(struct ctx *x)
{
    ProtobufCMessage *resp = NULL;
    int ex = name_call(x, "/mhsm.v1.Keys/PurgeDeletedKey",
                       &mhsm__v1__purge_deleted_key_response__descriptor, true, &resp);
    mh_client_response_free(resp);
    return ex; /* like az: nothing on stdout */
}

static int cmd_key_backup(struct ctx *x)
{
    const char *path = mh_args_get(&x->args, "file");
    int fd;
    int ex = create_excl(path, &fd);
    if (ex != EXIT_OK)
        return ex;
    ProtobufCMessage *resp = NULL;
    ex = name_call(x, "/mhsm.v1.Keys/BackupKey", &mhsm__v1__backup_key_response__descriptor, false,
                   &resp);
    if (ex != EXIT_OK) {
        close(fd);
        unlink(path);
        return ex;
    }
    const Mhsm__V1__BackupKeyResponse *r = (const Mhsm__V1__BackupKeyResponse *)resp;
    ex = write_close(fd, path, r->value.data, r->value.len);
    if (ex != EXIT_OK)
        unlink(path);
    mh_client_response_free(resp);
    return ex; /* like az: nothing on stdout */
}

static int cmd_key_restore(struct ctx *x)
{
    Mhsm__V1__RestoreKeyRequest req = MHSM__V1__RESTORE_KEY_REQUEST__INIT;
    char rid[33];
    int ex = new_request_id(rid);
    if (ex != EXIT_OK)
        return ex;
    struct mh_secret blob = {0};
    ex = read_file_secret(mh_args_get(&x->args, "file"), &blob);
    if (ex != EXIT_OK)
        return ex;
    req.value.data = blob.data;
    req.value.len = blob.len;
    req.request_id = rid;
    ProtobufCMessage *resp = NULL;
    ex = call(x, "/mhsm.v1.Keys/RestoreKey", &req.base, &mhsm__v1__key_bundle__descriptor, true,
              &resp);
    mh_secret_free(&blob);
    return ex == EXIT_OK ? print_bundle(x, resp) : ex;
}

/* ---- crypto ------------------------------------------------------------------- */

static int key_operation(struct ctx *x, const char *path)
{
    Mhsm__V1__KeyOperationRequest req = MHSM__V1__KEY_OPERATION_REQUEST__INIT;
    struct mh_buf value = {0}, iv = {0}, aad = {0}, tag = {0};
    int ex = arg_bytes(x, "value", &value, &req.value);
    if (ex == EXIT_OK)
        ex = arg_bytes(x, "iv", &iv, &req.iv);
    if (ex == EXIT_OK)
        ex = arg_bytes(x, "aad", &aad, &req.aad);
    if (ex == EXIT_OK)
        ex = arg_bytes(x, "tag", &tag, &req.tag);
    req.name = (char *)mh_args_get(&x->args, "name");
    if (mh_args_has(&x->args, "version"))
        req.version = (char *)mh_args_get(&x->args, "version");
    req.alg = (char *)mh_args_get(&x->args, "algorithm");
    ProtobufCMessage *resp = NULL;
    if (ex == EXIT_OK)
        ex = call(x, path, &req.base, &mhsm__v1__key_operation_response__descriptor, false, &resp);
    mh_buf_free(&value);
    mh_buf_free(&iv);
    mh_buf_free(&aad);
    mh_buf_free(&tag);
    if (ex != EXIT_OK)
        return ex;
    const Mhsm__V1__KeyOperationResponse *r = (const Mhsm__V1__KeyOperationResponse *)resp;
    json_t *o = json_object();
    int rv = o != NULL ? 0 : MH_ENOMEM;
    if (rv == 0)
        rv = mh_json_out_set_str(o, "kid", r->kid);
    if (rv == 0)
        rv = mh_json_out_set_b64url(o, "result", r->value.data, r->value.len);
    if (rv == 0 && r->iv.len > 0)
        rv = mh_json_out_set_b64url(o, "iv", r->iv.data, r->iv.len);
    if (rv == 0 && r->tag.len > 0)
        rv = mh_json_out_set_b64url(o, "tag", r->tag.data, r->tag.len);
    if (rv == 0 && r->aad.len > 0)
        rv = mh_json_out_set_b64url(o, "aad", r->aad.data, r->aad.len);
    mh_client_response_free(resp);
    if (rv < 0) {
        json_decref(o);
        return bad_response(rv);
    }
    return print_json(x, o);
}

static int cmd_key_encrypt(struct ctx *x)
{
    return key_operation(x, "/mhsm.v1.Crypto/Encrypt");
}

static int cmd_key_decrypt(struct ctx *x)
{
    return key_operation(x, "/mhsm.v1.Crypto/Decrypt");
}

static int cmd_key_wrap(struct ctx *x)
{
    return key_operation(x, "/mhsm.v1.Crypto/WrapKey");
}

static int cmd_key_unwrap(struct ctx *x)
{
    return key_operation(x, "/mhsm.v1.Crypto/UnwrapKey");
}

static int cmd_key_sign(struct ctx *x)
{
    Mhsm__V1__SignRequest req = MHSM__V1__SIGN_REQUEST__INIT;
    struct mh_buf digest = {0};
    int ex = arg_bytes(x, "digest", &digest, &req.digest);
    req.name = (char *)mh_args_get(&x->args, "name");
    if (mh_args_has(&x->args, "version"))
        req.version = (char *)mh_args_get(&x->args, "version");
    req.alg = (char *)mh_args_get(&x->args, "algorithm");
    ProtobufCMessage *resp = NULL;
    if (ex == EXIT_OK)
        ex = call(x, "/mhsm.v1.Crypto/Sign", &req.base, &mhsm__v1__sign_response__descriptor, false,
                  &resp);
    mh_buf_free(&digest);
    if (ex != EXIT_OK)
        return ex;
    const Mhsm__V1__SignResponse *r = (const Mhsm__V1__SignResponse *)resp;
    json_t *o = json_object();
    int rv = o != NULL ? 0 : MH_ENOMEM;
    if (rv == 0)
        rv = mh_json_out_set_str(o, "kid", r->kid);
    if (rv == 0)
        rv = mh_json_out_set_b64url(o, "signature", r->signature.data, r->signature.len);
    mh_client_response_free(resp);
    if (rv < 0) {
        json_decref(o);
        return bad_response(rv);
    }
    return print_json(x, o);
}

static int cmd_key_verify(struct ctx *x)
{
    Mhsm__V1__VerifyRequest req = MHSM__V1__VERIFY_REQUEST__INIT;
    struct mh_buf digest = {0}, sig = {0};
    int ex = arg_bytes(x, "digest", &digest, &req.digest);
    if (ex == EXIT_OK)
        ex = arg_bytes(x, "signature", &sig, &req.signature);
    req.name = (char *)mh_args_get(&x->args, "name");
    if (mh_args_has(&x->args, "version"))
        req.version = (char *)mh_args_get(&x->args, "version");
    req.alg = (char *)mh_args_get(&x->args, "algorithm");
    ProtobufCMessage *resp = NULL;
    if (ex == EXIT_OK)
        ex = call(x, "/mhsm.v1.Crypto/Verify", &req.base, &mhsm__v1__verify_response__descriptor,
                  false, &resp);
    mh_buf_free(&digest);
    mh_buf_free(&sig);
    if (ex != EXIT_OK)
        return ex;
    bool valid = ((const Mhsm__V1__VerifyResponse *)resp)->valid;
    mh_client_response_free(resp);
    json_t *o = json_pack("{s:b}", "isValid", valid);
    return o != NULL ? print_json(x, o) : local_error("out of memory");
}

/* ---- cluster (operators) --------------------------------------------------------- */

/* --FLAG: a raft id 1..MAX_NODE_ID; *out unchanged when the flag is absent. */
static int arg_node_id(struct ctx *x, const char *flag, uint64_t *out)
{
    const char *v = mh_args_get(&x->args, flag);
    if (v == NULL)
        return EXIT_OK;
    uint32_t id;
    if (mh_args_parse_u32(v, 1, MAX_NODE_ID, &id) < 0)
        return usage_error("--%s takes a raft id 1..%u, not '%s'", flag, MAX_NODE_ID, v);
    *out = id;
    return EXIT_OK;
}

/* --address: the new node's raft address, HOST:PORT. */
static int arg_raft_address(struct ctx *x, char **out)
{
    const char *v = mh_args_get(&x->args, "address");
    char host[128], port[8];
    if (mh_client_split_endpoint(v, host, sizeof host, port, sizeof port) < 0)
        return usage_error("--address takes the node's raft address HOST:PORT, not '%s'", v);
    *out = (char *)v;
    return EXIT_OK;
}

/* Every cluster method answers with the answering node's status. */
static int print_cluster_status(struct ctx *x, ProtobufCMessage *resp, uint64_t want_leader)
{
    const Mhsm__V1__ClusterStatusResponse *r = (const Mhsm__V1__ClusterStatusResponse *)resp;
    if (want_leader != 0 && r->leader_id == 0)
        fputs("note: no leader known yet after the transfer; see `mhsm cluster status`\n", stderr);
    else if (want_leader != 0 && r->leader_id != want_leader)
        fprintf(stderr, "note: the leader is now node %llu, not node %llu (raft chose)\n",
                (unsigned long long)r->leader_id, (unsigned long long)want_leader);
    json_t *o = NULL;
    int rv = mh_json_out_cluster_status(r, &o);
    mh_client_response_free(resp);
    if (rv < 0)
        return bad_response(rv);
    if (!x->table)
        return print_json(x, o);
    rv = mh_json_out_print_cluster_table(o, stdout);
    json_decref(o);
    if (rv < 0) {
        fprintf(stderr, "error: cannot write the output: %s\n", mh_strerror(rv));
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Membership changes are not retried: a second ADD after an unknown outcome would
 * only say ALREADY_EXISTS; the operator checks `mhsm cluster status` instead. */
static int cluster_call(struct ctx *x, const char *method, const ProtobufCMessage *req,
                        uint64_t want_leader)
{
    ProtobufCMessage *resp = NULL;
    int ex = call(x, method, req, &mhsm__v1__cluster_status_response__descriptor, false, &resp);
    if (ex != EXIT_OK)
        return ex;
    return print_cluster_status(x, resp, want_leader);
}

static int cmd_cluster_status(struct ctx *x)
{
    Mhsm__V1__ClusterStatusRequest req = MHSM__V1__CLUSTER_STATUS_REQUEST__INIT;
    return cluster_call(x, "/mhsm.v1.Cluster/Status", &req.base, 0);
}

static int cmd_cluster_transfer(struct ctx *x)
{
    Mhsm__V1__TransferLeadershipRequest req = MHSM__V1__TRANSFER_LEADERSHIP_REQUEST__INIT;
    int ex = arg_node_id(x, "id", &req.id);
    if (ex != EXIT_OK)
        return ex;
    return cluster_call(x, "/mhsm.v1.Cluster/TransferLeadership", &req.base, req.id);
}

static int cmd_cluster_add(struct ctx *x)
{
    Mhsm__V1__AddNodeRequest req = MHSM__V1__ADD_NODE_REQUEST__INIT;
    int ex = arg_node_id(x, "id", &req.id);
    if (ex == EXIT_OK)
        ex = arg_raft_address(x, &req.address);
    if (ex != EXIT_OK)
        return ex;
    return cluster_call(x, "/mhsm.v1.Cluster/AddNode", &req.base, 0);
}

static int cmd_cluster_remove(struct ctx *x)
{
    Mhsm__V1__RemoveNodeRequest req = MHSM__V1__REMOVE_NODE_REQUEST__INIT;
    int ex = arg_node_id(x, "id", &req.id);
    if (ex != EXIT_OK)
        return ex;
    return cluster_call(x, "/mhsm.v1.Cluster/RemoveNode", &req.base, 0);
}

static int cmd_cluster_replace(struct ctx *x)
{
    Mhsm__V1__ReplaceNodeRequest req = MHSM__V1__REPLACE_NODE_REQUEST__INIT;
    int ex = arg_node_id(x, "old-id", &req.old_id);
    if (ex == EXIT_OK)
        ex = arg_node_id(x, "new-id", &req.new_id);
    if (ex == EXIT_OK)
        ex = arg_raft_address(x, &req.new_address);
    if (ex != EXIT_OK)
        return ex;
    if (req.old_id == req.new_id)
        return usage_error("--new-id must differ from --old-id (a replacement gets a new raft id)");
    return cluster_call(x, "/mhsm.v1.Cluster/ReplaceNode", &req.base, 0);
}

/* ---- misc ----------------------------------------------------------------------- */

static int cmd_random(struct ctx *x)
{
    Mhsm__V1__GetRandomBytesRequest req = MHSM__V1__GET_RANDOM_BYTES_REQUEST__INIT;
    int ex = arg_u32(x, "count", &req.count);
    ProtobufCMessage *resp = NULL;
    if (ex == EXIT_OK)
        ex = call(x, "/mhsm.v1.Keys/GetRandomBytes", &req.base,
                  &mhsm__v1__get_random_bytes_response__descriptor, false, &resp);
    if (ex != EXIT_OK)
        return ex;
    const Mhsm__V1__GetRandomBytesResponse *r = (const Mhsm__V1__GetRandomBytesResponse *)resp;
    json_t *o = json_object();
    int rv =
        o != NULL ? mh_json_out_set_b64url(o, "value", r->value.data, r->value.len) : MH_ENOMEM;
    mh_client_response_free(resp);
    if (rv < 0) {
        json_decref(o);
        return bad_response(rv);
    }
    return print_json(x, o);
}

static int cmd_health(struct ctx *x)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int ex = call(x, "/grpc.health.v1.Health/Check", &req.base,
                  &grpc__health__v1__health_check_response__descriptor, false, &resp);
    if (ex != EXIT_OK)
        return ex;
    int status = (int)((const Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    mh_client_response_free(resp);
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
        &grpc__health__v1__health_check_response__serving_status__descriptor, status);
    json_t *o = json_pack("{s:s}", "status", ev != NULL ? ev->name : "UNKNOWN");
    return o != NULL ? print_json(x, o) : local_error("out of memory");
}

/* ---- role definitions and assignments (az keyvault role ...) ------------------------ */

static int print_rows(struct ctx *x, json_t *arr, const struct mh_json_out_column *cols,
                      size_t n_cols)
{
    if (!x->table)
        return print_json(x, arr);
    int rv = mh_json_out_print_columns(arr, cols, n_cols, stdout);
    json_decref(arr);
    if (rv < 0) {
        fprintf(stderr, "error: cannot write the output: %s\n", mh_strerror(rv));
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int print_role_definition(struct ctx *x, ProtobufCMessage *resp)
{
    json_t *o = NULL;
    int rv = mh_json_out_role_definition((const Mhsm__V1__RoleDefinition *)resp, &o);
    mh_client_response_free(resp);
    return rv < 0 ? bad_response(rv) : print_json(x, o);
}

static int print_role_assignment(struct ctx *x, ProtobufCMessage *resp)
{
    json_t *o = NULL;
    int rv = mh_json_out_role_assignment((const Mhsm__V1__RoleAssignment *)resp, &o);
    mh_client_response_free(resp);
    return rv < 0 ? bad_response(rv) : print_json(x, o);
}

static const struct mh_json_out_column DEF_COLS[] = {
    {"NAME", "name"}, {"ROLE-NAME", "roleName"}, {"TYPE", "roleType"}};
static const struct mh_json_out_column ASSIGN_COLS[] = {
    {"NAME", "name"}, {"ROLE-NAME", "roleName"}, {"PRINCIPAL", "principalId"}, {"SCOPE", "scope"}};

/* ListRoleDefinitions (one page: the server answers every definition at once) into a
 * JSON array, optionally only custom roles. */
static int list_role_definitions(struct ctx *x, const char *role_name, bool custom_only,
                                 json_t **out)
{
    Mhsm__V1__ListRoleDefinitionsRequest req = MHSM__V1__LIST_ROLE_DEFINITIONS_REQUEST__INIT;
    req.scope = (char *)"/";
    if (role_name != NULL)
        req.role_name = (char *)role_name;
    ProtobufCMessage *resp = NULL;
    int ex = call(x, "/mhsm.v1.AccessControl/ListRoleDefinitions", &req.base,
                  &mhsm__v1__list_role_definitions_response__descriptor, false, &resp);
    if (ex != EXIT_OK)
        return ex;
    const Mhsm__V1__ListRoleDefinitionsResponse *r =
        (const Mhsm__V1__ListRoleDefinitionsResponse *)resp;
    json_t *arr = json_array();
    int rv = arr != NULL ? 0 : MH_ENOMEM;
    for (size_t i = 0; rv == 0 && i < r->n_items; i++) {
        json_t *o = NULL;
        rv = mh_json_out_role_definition(r->items[i], &o);
        if (rv < 0)
            break;
        const char *type = json_string_value(json_object_get(o, "roleType"));
        if (custom_only && (type == NULL || strcmp(type, "CustomRole") != 0)) {
            json_decref(o);
            continue;
        }
        if (json_array_append_new(arr, o) != 0)
            rv = MH_ENOMEM;
    }
    mh_client_response_free(resp);
    if (rv < 0) {
        json_decref(arr);
        return bad_response(rv);
    }
    *out = arr;
    return EXIT_OK;
}

static int cmd_role_def_list(struct ctx *x)
{
    json_t *arr = NULL;
    int ex = list_role_definitions(x, mh_args_get(&x->args, "role-name"),
                                   mh_args_has(&x->args, "custom-role-only"), &arr);
    if (ex != EXIT_OK)
        return ex;
    return print_rows(x, arr, DEF_COLS, sizeof DEF_COLS / sizeof DEF_COLS[0]);
}

/* --name GUID or --role-name NAME (exactly one): the definition's GUID, malloc'ed. */
static int role_def_guid(struct ctx *x, char **guid)
{
    const char *name = mh_args_get(&x->args, "name");
    const char *role_name = mh_args_get(&x->args, "role-name");
    if ((name == NULL) == (role_name == NULL))
        return usage_error("give exactly one of --name GUID and --role-name NAME");
    if (name != NULL) {
        *guid = strdup(name);
        return *guid != NULL ? EXIT_OK : local_error("out of memory");
    }
    if (role_name[0] == 0)
        return usage_error("--role-name needs a role name");
    json_t *arr = NULL;
    int ex = list_role_definitions(x, role_name, false, &arr);
    if (ex != EXIT_OK)
        return ex;
    const char *found = NULL;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *rn = json_string_value(json_object_get(o, "roleName"));
        if (rn != NULL && strcasecmp(rn, role_name) == 0) {
            found = json_string_value(json_object_get(o, "name"));
            break;
        }
    }
    *guid = found != NULL ? strdup(found) : NULL;
    json_decref(arr);
    if (found == NULL) {
        fputs("error: NOT_FOUND: no role definition is named '", stderr);
        print_clean(stderr, role_name);
        fputs("'\n", stderr);
        return EXIT_SERVER;
    }
    return *guid != NULL ? EXIT_OK : local_error("out of memory");
}

static int get_role_definition(struct ctx *x, const char *guid, ProtobufCMessage **resp)
{
    Mhsm__V1__RoleDefinitionRequest req = MHSM__V1__ROLE_DEFINITION_REQUEST__INIT;
    req.scope = (char *)"/";
    req.name = (char *)guid;
    return call(x, "/mhsm.v1.AccessControl/GetRoleDefinition", &req.base,
                &mhsm__v1__role_definition__descriptor, false, resp);
}

static int cmd_role_def_show(struct ctx *x)
{
    char *guid = NULL;
    int ex = role_def_guid(x, &guid);
    if (ex != EXIT_OK)
        return ex;
    ProtobufCMessage *resp = NULL;
    ex = get_role_definition(x, guid, &resp);
    free(guid);
    return ex == EXIT_OK ? print_role_definition(x, resp) : ex;
}

static int cmd_role_def_delete(struct ctx *x)
{
    char *guid = NULL;
    char rid[33];
    int ex = role_def_guid(x, &guid);
    if (ex != EXIT_OK)
        return ex;
    Mhsm__V1__RoleDefinitionRequest req = MHSM__V1__ROLE_DEFINITION_REQUEST__INIT;
    req.scope = (char *)"/";
    req.name = guid;
    req.request_id = rid;
    ProtobufCMessage *resp = NULL;
    ex = new_request_id(rid);
    if (ex == EXIT_OK)
        ex = call(x, "/mhsm.v1.AccessControl/DeleteRoleDefinition", &req.base,
                  &mhsm__v1__role_definition__descriptor, true, &resp);
    free(guid);
    return ex == EXIT_OK ? print_role_definition(x, resp) : ex;
}

/* create and update: --role-definition JSON|@FILE in az's format (client/roledef.h). */
static int role_def_set(struct ctx *x, bool update)
{
    const char *v = mh_args_get(&x->args, "role-definition");
    struct mh_secret file = {0};
    const char *text = v;
    if (v[0] == '@') {
        int ex = read_text_secret(v + 1, &file);
        if (ex != EXIT_OK)
            return ex;
        text = (const char *)file.data;
    }
    struct mh_roledef d;
    char err[256];
    int rv = mh_roledef_parse(text, update, &d, err, sizeof err);
    mh_secret_free(&file);
    if (rv < 0) {
        mh_roledef_free(&d);
        if (rv == MH_ENOMEM)
            return local_error("out of memory");
        return usage_error("--role-definition: %s", err);
    }
    char rid[33];
    int ex = new_request_id(rid);
    ProtobufCMessage *resp = NULL;
    /* PUT would create a missing role: update must only change an existing one. */
    if (ex == EXIT_OK && update) {
        ex = get_role_definition(x, d.req.name, &resp);
        mh_client_response_free(resp);
        resp = NULL;
    }
    d.req.scope = (char *)"/";
    d.req.request_id = rid;
    if (ex == EXIT_OK)
        ex = call(x, "/mhsm.v1.AccessControl/SetRoleDefinition", &d.req.base,
                  &mhsm__v1__role_definition__descriptor, true, &resp);
    mh_roledef_free(&d);
    return ex == EXIT_OK ? print_role_definition(x, resp) : ex;
}

static int cmd_role_def_create(struct ctx *x)
{
    return role_def_set(x, false);
}

static int cmd_role_def_update(struct ctx *x)
{
    return role_def_set(x, true);
}

static int arg_guid(struct ctx *x, const char *flag)
{
    const char *v = mh_args_get(&x->args, flag);
    if (v != NULL && !mh_roledef_is_guid(v))
        return usage_error("--%s takes a GUID (8-4-4-4-12 hex digits), not '%s'", flag, v);
    return EXIT_OK;
}

static int cmd_role_assign_create(struct ctx *x)
{
    Mhsm__V1__CreateRoleAssignmentRequest req = MHSM__V1__CREATE_ROLE_ASSIGNMENT_REQUEST__INIT;
    char rid[33];
    int ex = arg_guid(x, "name");
    if (ex == EXIT_OK)
        ex = new_request_id(rid);
    if (ex != EXIT_OK)
        return ex;
    const char *scope = mh_args_get(&x->args, "scope");
    req.scope = (char *)(scope != NULL ? scope : "/");
    if (mh_args_has(&x->args, "name"))
        req.name = (char *)mh_args_get(&x->args, "name");
    req.role_definition_id = (char *)mh_args_get(&x->args, "role");
    req.principal_id = (char *)mh_args_get(&x->args, "assignee");
    req.request_id = rid;
    ProtobufCMessage *resp = NULL;
    ex = call(x, "/mhsm.v1.AccessControl/CreateRoleAssignment", &req.base,
              &mhsm__v1__role_assignment__descriptor, true, &resp);
    return ex == EXIT_OK ? print_role_assignment(x, resp) : ex;
}

/* Whether assignment |o| has role |r|: its role name, full role definition id or that
 * id's GUID (case-insensitive, as Azure compares them). */
static bool role_matches(const json_t *o, const char *r)
{
    const char *rn = json_string_value(json_object_get(o, "roleName"));
    const char *id = json_string_value(json_object_get(o, "roleDefinitionId"));
    if (rn != NULL && strcasecmp(rn, r) == 0)
        return true;
    if (id == NULL)
        return false;
    const char *slash = strrchr(id, '/');
    return strcasecmp(id, r) == 0 || (slash != NULL && strcasecmp(slash + 1, r) == 0);
}

/* ListRoleAssignments, every page, into a JSON array; |role| (optional) filters here. */
static int list_assignments(struct ctx *x, const char *scope, const char *principal,
                            bool at_scope_only, const char *role, json_t **out)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return local_error("out of memory");
    char *token = strdup("");
    int ex = token != NULL ? EXIT_OK : local_error("out of memory");
    for (uint32_t pages = 0; ex == EXIT_OK; pages++) {
        if (pages == MAX_LIST_PAGES) {
            ex = local_error("the server sent more than %u pages", MAX_LIST_PAGES);
            break;
        }
        Mhsm__V1__ListRoleAssignmentsRequest req = MHSM__V1__LIST_ROLE_ASSIGNMENTS_REQUEST__INIT;
        if (scope != NULL)
            req.scope = (char *)scope;
        if (principal != NULL)
            req.principal_id = (char *)principal;
        req.at_scope_only = at_scope_only;
        req.page_token = token;
        ProtobufCMessage *resp = NULL;
        ex = call(x, "/mhsm.v1.AccessControl/ListRoleAssignments", &req.base,
                  &mhsm__v1__list_role_assignments_response__descriptor, false, &resp);
        if (ex != EXIT_OK)
            break;
        const Mhsm__V1__ListRoleAssignmentsResponse *r =
            (const Mhsm__V1__ListRoleAssignmentsResponse *)resp;
        int rv = 0;
        for (size_t i = 0; rv == 0 && i < r->n_items; i++) {
            json_t *o = NULL;
            rv = mh_json_out_role_assignment(r->items[i], &o);
            if (rv == 0 && role != NULL && !role_matches(o, role)) {
                json_decref(o);
                continue;
            }
            if (rv == 0 && json_array_append_new(arr, o) != 0)
                rv = MH_ENOMEM;
        }
        const char *next = r->next_page_token;
        bool done = next == NULL || next[0] == 0 || strcmp(next, token) == 0;
        free(token);
        token = done ? NULL : strdup(next);
        mh_client_response_free(resp);
        if (rv < 0)
            ex = bad_response(rv);
        else if (done)
            break;
        else if (token == NULL)
            ex = local_error("out of memory");
    }
    free(token);
    if (ex != EXIT_OK) {
        json_decref(arr);
        return ex;
    }
    *out = arr;
    return EXIT_OK;
}

static int cmd_role_assign_list(struct ctx *x)
{
    json_t *arr = NULL;
    int ex = list_assignments(x, mh_args_get(&x->args, "scope"), mh_args_get(&x->args, "assignee"),
                              mh_args_has(&x->args, "at-scope-only"), mh_args_get(&x->args, "role"),
                              &arr);
    if (ex != EXIT_OK)
        return ex;
    return print_rows(x, arr, ASSIGN_COLS, sizeof ASSIGN_COLS / sizeof ASSIGN_COLS[0]);
}

static int cmd_role_assign_show(struct ctx *x)
{
    Mhsm__V1__RoleAssignmentRequest req = MHSM__V1__ROLE_ASSIGNMENT_REQUEST__INIT;
    req.name = (char *)mh_args_get(&x->args, "name");
    ProtobufCMessage *resp = NULL;
    int ex = call(x, "/mhsm.v1.AccessControl/GetRoleAssignment", &req.base,
                  &mhsm__v1__role_assignment__descriptor, false, &resp);
    return ex == EXIT_OK ? print_role_assignment(x, resp) : ex;
}

/* Deletes one assignment (by GUID or full id) and appends what was deleted to |arr|. */
static int delete_assignment(struct ctx *x, const char *name, const char *scope, json_t *arr)
{
    Mhsm__V1__RoleAssignmentRequest req = MHSM__V1__ROLE_ASSIGNMENT_REQUEST__INIT;
    char rid[33];
    int ex = new_request_id(rid);
    if (ex != EXIT_OK)
        return ex;
    req.name = (char *)name;
    if (scope != NULL)
        req.scope = (char *)scope;
    req.request_id = rid;
    ProtobufCMessage *resp = NULL;
    ex = call(x, "/mhsm.v1.AccessControl/DeleteRoleAssignment", &req.base,
              &mhsm__v1__role_assignment__descriptor, true, &resp);
    if (ex != EXIT_OK)
        return ex;
    json_t *o = NULL;
    int rv = mh_json_out_role_assignment((const Mhsm__V1__RoleAssignment *)resp, &o);
    mh_client_response_free(resp);
    if (rv == 0 && json_array_append_new(arr, o) != 0)
        rv = MH_ENOMEM;
    return rv < 0 ? bad_response(rv) : EXIT_OK;
}

static int cmd_role_assign_delete(struct ctx *x)
{
    bool by_name = mh_args_has(&x->args, "name");
    bool by_ids = mh_args_has(&x->args, "ids");
    bool by_match = mh_args_has(&x->args, "role") || mh_args_has(&x->args, "assignee") ||
                    mh_args_has(&x->args, "scope");
    if ((int)by_name + (int)by_ids + (int)by_match != 1)
        return usage_error("give one of --name GUID, --ids ID ..., or --role ROLE --assignee "
                           "PRINCIPAL --scope SCOPE");
    if (by_match && (!mh_args_has(&x->args, "role") || !mh_args_has(&x->args, "assignee")))
        return usage_error("deleting by match needs --role and --assignee (and --scope, "
                           "default \"/\")");
    json_t *deleted = json_array();
    int ex = EXIT_OK;
    if (deleted == NULL)
        return local_error("out of memory");
    if (by_name) {
        ex = delete_assignment(x, mh_args_get(&x->args, "name"), NULL, deleted);
    } else if (by_ids) {
        size_t n = mh_args_count(&x->args, "ids");
        for (size_t i = 0; ex == EXIT_OK && i < n; i++)
            ex = delete_assignment(x, mh_args_nth(&x->args, "ids", i), NULL, deleted);
    } else {
        const char *scope = mh_args_get(&x->args, "scope");
        if (scope == NULL)
            scope = "/";
        json_t *matches = NULL;
        ex = list_assignments(x, scope, mh_args_get(&x->args, "assignee"), true,
                              mh_args_get(&x->args, "role"), &matches);
        size_t i;
        json_t *o;
        json_array_foreach(ex == EXIT_OK ? matches : NULL, i, o)
        {
            /* at_scope_only already asks for exactly this scope; check it anyway: a
             * wider delete than asked for cannot be undone. */
            const char *s = json_string_value(json_object_get(o, "scope"));
            const char *name = json_string_value(json_object_get(o, "name"));
            if (s == NULL || strcmp(s, scope) != 0 || name == NULL)
                continue;
            ex = delete_assignment(x, name, scope, deleted);
            if (ex != EXIT_OK)
                break;
        }
        json_decref(matches);
        if (ex == EXIT_OK && json_array_size(deleted) == 0) {
            fputs("error: NOT_FOUND: no role assignment matches\n", stderr);
            ex = EXIT_SERVER;
        }
    }
    if (ex != EXIT_OK) {
        json_decref(deleted);
        return ex;
    }
    return print_json(x, deleted);
}

static int cmd_whoami(struct ctx *x)
{
    Mhsm__V1__WhoAmIRequest req = MHSM__V1__WHO_AM_IREQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int ex = call(x, "/mhsm.v1.AccessControl/WhoAmI", &req.base,
                  &mhsm__v1__who_am_iresponse__descriptor, false, &resp);
    if (ex != EXIT_OK)
        return ex;
    json_t *o = NULL;
    int rv = mh_json_out_whoami((const Mhsm__V1__WhoAmIResponse *)resp, &o);
    mh_client_response_free(resp);
    if (rv < 0)
        return bad_response(rv);
    if (!x->table)
        return print_json(x, o);
    rv = mh_json_out_print_whoami_table(o, stdout);
    json_decref(o);
    if (rv < 0) {
        fprintf(stderr, "error: cannot write the output: %s\n", mh_strerror(rv));
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* ---- audit ------------------------------------------------------------------------ */

static int cmd_audit_key(struct ctx *x)
{
    Mhsm__V1__GetAuditKeyRequest req = MHSM__V1__GET_AUDIT_KEY_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int ex = call(x, "/mhsm.v1.Audit/GetAuditKey", &req.base,
                  &mhsm__v1__get_audit_key_response__descriptor, false, &resp);
    if (ex != EXIT_OK)
        return ex;
    json_t *o = NULL;
    int rv = mh_json_out_audit_key((const Mhsm__V1__GetAuditKeyResponse *)resp, &o);
    mh_client_response_free(resp);
    return rv < 0 ? bad_response(rv) : print_json(x, o);
}

static int cmd_audit_verify(struct ctx *x)
{
    size_t first = x->n_used;
    size_t n = x->args.n_words - first;
    if (n == 0)
        return usage_error("name at least one audit log FILE");
    uint8_t pub[MH_AUDITLOG_PUBKEY_LEN];
    const char *pk = mh_args_get(&x->args, "public-key");
    if (pk != NULL) {
        char err[512];
        int rv = mh_logverify_parse_key(pk, pub, err, sizeof err);
        if (rv == MH_EINVAL && pk[0] != '@')
            return usage_error("%s", err);
        if (rv < 0)
            return local_error("%s", err);
    } else {
        Mhsm__V1__GetAuditKeyRequest req = MHSM__V1__GET_AUDIT_KEY_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        char why[4400];
        int ex = call_quiet(x, "/mhsm.v1.Audit/GetAuditKey", &req.base,
                            &mhsm__v1__get_audit_key_response__descriptor, false, &resp, why,
                            sizeof why);
        const Mhsm__V1__GetAuditKeyResponse *r = (const Mhsm__V1__GetAuditKeyResponse *)resp;
        if (ex == EXIT_OK && r->public_key.len != MH_AUDITLOG_PUBKEY_LEN)
            snprintf(why, sizeof why, "the server sent a public key of %zu bytes, not %d",
                     r->public_key.len, MH_AUDITLOG_PUBKEY_LEN);
        else if (ex == EXIT_OK)
            memcpy(pub, r->public_key.data, MH_AUDITLOG_PUBKEY_LEN);
        bool ok = ex == EXIT_OK && r->public_key.len == MH_AUDITLOG_PUBKEY_LEN;
        mh_client_response_free(resp);
        if (!ok) {
            fprintf(stderr,
                    "error: cannot fetch the audit public key from %s: %s\n"
                    "hint: give the key with --public-key HEX|@FILE (`mhsm audit key` prints "
                    "it)\n",
                    x->cfg.endpoint, why);
            return EXIT_CONN;
        }
    }
    return mh_logverify_run(&x->args.words[first], n, pub, x->table, stdout, stderr);
}

/* ---- the command table ---------------------------------------------------------- */

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NONE   ((const char *const[]){NULL})

static const struct command COMMANDS[] = {
    {"security-domain", "download", cmd_sd_download,
     L("sd-wrapping-keys", "sd-quorum", "security-domain-file", "retention-days"),
     L("sd-wrapping-keys", "sd-quorum", "security-domain-file"),
     "--sd-wrapping-keys C1.pem C2.pem C3.pem ... --sd-quorum M --security-domain-file FILE "
     "[--retention-days N]",
     "Activate the HSM: create its security domain, split among the certificates' owners\n"
     "(3..10 RSA certificates, quorum 2..10), and write it to FILE (never overwritten).\n"
     "Prints {\"status\":\"Active\"}."},
    {"security-domain", "show", cmd_sd_show, NONE, NONE, "",
     "Show the activation status: {\"activationStatus\",\"message\",\"retentionDays\"}."},
    {"key", "create", cmd_key_create,
     L("name", "kty", "size", "curve", "ops", "disabled", "not-before", "expires", "tags"),
     L("name", "kty"),
     "--name NAME --kty RSA-HSM|EC-HSM|oct-HSM [--size BITS] [--curve P-256|P-256K|P-384|P-521] "
     "[--ops OP ...] [--disabled] [--not-before T] [--expires T] [--tags K=V ...]",
     "Create a key, or a new version of an existing one. Prints the KeyBundle."},
    {"key", "import", cmd_key_import,
     L("name", "pem-file", "pem-password", "jwk-file", "ops", "disabled", "not-before", "expires",
       "tags"),
     L("name"),
     "--name NAME (--pem-file FILE [--pem-password P] | --jwk-file FILE) [--ops OP ...] "
     "[--disabled] [--not-before T] [--expires T] [--tags K=V ...]",
     "Import a private key (PEM/PKCS#8 or a private JWK). Prints the KeyBundle."},
    {"key", "show", cmd_key_show, L("name", "version"), L("name"), "--name NAME [--version V]",
     "Show a key's public part and attributes (latest version unless --version)."},
    {"key", "list", cmd_key_list, L("maxresults"), NONE, "[--maxresults N]",
     "List keys (follows pages; at most N items). Prints an array of KeyItems."},
    {"key", "list-versions", cmd_key_list_versions, L("name", "maxresults"), L("name"),
     "--name NAME [--maxresults N]", "List the versions of a key. Prints an array of KeyItems."},
    {"key", "set-attributes", cmd_key_set_attributes,
     L("name", "version", "enabled", "not-before", "expires", "tags", "ops"), L("name"),
     "--name NAME [--version V] [--enabled true|false] [--not-before T] [--expires T] "
     "[--tags K=V ...] [--ops OP ...]",
     "Update a key version's attributes; --tags and --ops replace the current ones\n"
     "(--tags \"\" removes every tag). Prints the KeyBundle."},
    {"key", "delete", cmd_key_delete, L("name"), L("name"), "--name NAME",
     "Soft-delete a key (all versions). Prints the DeletedKeyBundle."},
    {"key", "recover", cmd_key_recover, L("name"), L("name"), "--name NAME",
     "Recover a soft-deleted key. Prints the KeyBundle."},
    {"key", "purge", cmd_key_purge, L("name"), L("name"), "--name NAME",
     "Permanently delete a soft-deleted key. Prints nothing."},
    {"key", "show-deleted", cmd_key_show_deleted, L("name"), L("name"), "--name NAME",
     "Show a soft-deleted key. Prints the DeletedKeyBundle."},
    {"key", "list-deleted", cmd_key_list_deleted, L("maxresults"), NONE, "[--maxresults N]",
     "List soft-deleted keys. Prints an array of DeletedKeyItems."},
    {"key", "rotate", cmd_key_rotate, L("name"), L("name"), "--name NAME",
     "Create a new version with the same parameters. Prints the KeyBundle."},
    {"key", "backup", cmd_key_backup, L("name", "file"), L("name", "file"),
     "--name NAME --file FILE",
     "Write an opaque backup of every version of a key to FILE (never overwritten)."},
    {"key", "restore", cmd_key_restore, L("file"), L("file"), "--file FILE",
     "Restore a key from a backup file. Prints the KeyBundle."},
    {"key", "encrypt", cmd_key_encrypt,
     L("name", "version", "algorithm", "value", "iv", "aad", "tag"),
     L("name", "algorithm", "value"),
     "--name NAME [--version V] --algorithm ALG --value B64 [--iv B64] [--aad B64]",
     "Encrypt. Prints {\"kid\",\"result\"[,\"iv\",\"tag\",\"aad\"]}."},
    {"key", "decrypt", cmd_key_decrypt,
     L("name", "version", "algorithm", "value", "iv", "aad", "tag"),
     L("name", "algorithm", "value"),
     "--name NAME [--version V] --algorithm ALG --value B64 [--iv B64] [--aad B64] [--tag B64]",
     "Decrypt. Prints {\"kid\",\"result\"}."},
    {"key", "wrap", cmd_key_wrap, L("name", "version", "algorithm", "value", "iv", "aad", "tag"),
     L("name", "algorithm", "value"), "--name NAME [--version V] --algorithm ALG --value B64",
     "Wrap a key. Prints {\"kid\",\"result\"}."},
    {"key", "unwrap", cmd_key_unwrap,
     L("name", "version", "algorithm", "value", "iv", "aad", "tag"),
     L("name", "algorithm", "value"), "--name NAME [--version V] --algorithm ALG --value B64",
     "Unwrap a key. Prints {\"kid\",\"result\"}."},
    {"key", "sign", cmd_key_sign, L("name", "version", "algorithm", "digest"),
     L("name", "algorithm", "digest"), "--name NAME [--version V] --algorithm ALG --digest B64",
     "Sign a digest. Prints {\"kid\",\"signature\"}."},
    {"key", "verify", cmd_key_verify, L("name", "version", "algorithm", "digest", "signature"),
     L("name", "algorithm", "digest", "signature"),
     "--name NAME [--version V] --algorithm ALG --digest B64 --signature B64",
     "Verify a signature over a digest. Prints {\"isValid\":true|false}."},
    {"cluster", "status", cmd_cluster_status, NONE, NONE, "",
     "Show the answering node's view of the cluster (operators only).\n"
     "State, leader, term, commit/applied/last index, whether it serves (and why not),\n"
     "and every member with its role and last contact."},
    {"cluster", "transfer", cmd_cluster_transfer, L("id"), NONE, "[--id N]",
     "Move the leadership to another voter (operators only).\n"
     "To voter N, or one the leader picks. Best effort: prints the status afterwards,\n"
     "with a note on stderr when raft chose another node."},
    {"cluster", "add", cmd_cluster_add, L("id", "address"), L("id", "address"),
     "--id N --address HOST:PORT",
     "Add a node to the cluster (operators only).\n"
     "Node N must run with [raft] join = true and listen for peers on HOST:PORT; it is\n"
     "added as spare, caught up, then promoted to voter. Prints the status."},
    {"cluster", "remove", cmd_cluster_remove, L("id"), L("id"), "--id N",
     "Remove a node from the cluster (operators only). Prints the status."},
    {"cluster", "replace", cmd_cluster_replace, L("old-id", "new-id", "address"),
     L("old-id", "new-id", "address"), "--old-id N --new-id M --address HOST:PORT",
     "Replace a node by a new one (operators only).\n"
     "Adds node M at HOST:PORT (spare, catch up, voter), then removes node N. Prints the\n"
     "status; on failure says which step failed."},
    {"role definition", "list", cmd_role_def_list, L("role-name", "custom-role-only"), NONE,
     "[--role-name NAME] [--custom-role-only]",
     "List role definitions (built-in roles first, then custom roles by name).\n"
     "Prints an array of {\"id\",\"name\",\"type\",\"roleName\",\"description\",\"roleType\",\n"
     "\"permissions\":[{\"actions\",\"notActions\",\"dataActions\",\"notDataActions\"}],\n"
     "\"assignableScopes\"}; --output table: NAME ROLE-NAME TYPE."},
    {"role definition", "show", cmd_role_def_show, L("name", "role-name"), NONE,
     "(--name GUID | --role-name NAME)", "Show one role definition."},
    {"role definition", "create", cmd_role_def_create, L("role-definition"), L("role-definition"),
     "--role-definition JSON|@FILE",
     "Create a custom role (or replace the one its \"name\" GUID names). JSON as az takes it:\n"
     "{\"roleName\",\"description\",\"dataActions\":[...],\"notDataActions\":[...],\"actions\":[],"
     "\n"
     "\"notActions\":[],\"name\" (optional GUID),\"assignableScopes\" (optional, [\"/\"])}, or "
     "the\n"
     "object `role definition show` prints, or Azure's {\"properties\":{...\"permissions\"}}.\n"
     "Unknown members are refused. Prints the definition."},
    {"role definition", "update", cmd_role_def_update, L("role-definition"), L("role-definition"),
     "--role-definition JSON|@FILE",
     "Change an existing custom role; the JSON (as for create) must carry its \"name\" GUID.\n"
     "Prints the definition."},
    {"role definition", "delete", cmd_role_def_delete, L("name", "role-name"), NONE,
     "(--name GUID | --role-name NAME)",
     "Delete a custom role (not while assigned). Prints the deleted definition."},
    {"role assignment", "create", cmd_role_assign_create, L("role", "assignee", "scope", "name"),
     L("role", "assignee"), "--role ROLE --assignee PRINCIPAL [--scope SCOPE] [--name GUID]",
     "Assign a role to a principal at a scope.\n"
     "ROLE: a role name (\"Managed HSM Crypto User\"), its GUID or full id. PRINCIPAL: a\n"
     "principal id as `mhsm whoami` prints it (spiffe://... or spki:<hex>). SCOPE: \"/\"\n"
     "(default), \"/keys\" or \"/keys/NAME\". Prints {\"id\",\"name\",\"type\",\"scope\",\n"
     "\"roleDefinitionId\",\"principalId\",\"roleName\"}."},
    {"role assignment", "list", cmd_role_assign_list,
     L("scope", "assignee", "role", "at-scope-only"), NONE,
     "[--scope SCOPE] [--assignee PRINCIPAL] [--role ROLE] [--at-scope-only]",
     "List role assignments (every page). --at-scope-only: only those at exactly SCOPE;\n"
     "--role: by role name, GUID or id. --output table: NAME ROLE-NAME PRINCIPAL SCOPE."},
    {"role assignment", "show", cmd_role_assign_show, L("name"), L("name"), "--name GUID",
     "Show one role assignment."},
    {"role assignment", "delete", cmd_role_assign_delete,
     L("name", "ids", "role", "assignee", "scope"), NONE,
     "(--name GUID | --ids ID ... | --role ROLE --assignee PRINCIPAL [--scope SCOPE])",
     "Delete role assignments: one by GUID, several by id, or every assignment of ROLE to\n"
     "PRINCIPAL at exactly SCOPE (default \"/\"; none matching is an error). Prints an array\n"
     "of the deleted assignments."},
    {NULL, "whoami", cmd_whoami, NONE, NONE, "",
     "The caller's principal id as the HSM sees it, and what it may do. Prints\n"
     "{\"principalId\",\"nodeId\",\"dataActions\",\"keyScopes\"}; --output table: the principal\n"
     "id, then one data action per line."},
    {"audit", "key", cmd_audit_key, NONE, NONE, "",
     "The audit log's public key (Ed25519, the same on every node). Prints\n"
     "{\"publicKey\" (hex),\"nodeId\",\"directory\"}. Keep it apart from the logs: it is what\n"
     "`mhsm audit verify --public-key` trusts."},
    {"audit", "verify", cmd_audit_verify, L("public-key"), NONE,
     "[--public-key HEX|@FILE] FILE ...",
     "Check audit log files: the hash chain, seqs and checkpoint signatures, in file-name\n"
     "order (audit-<seq>.jsonl sorts in chain order). Without --public-key the key is\n"
     "fetched from --endpoint (that trusts the server; prefer a key kept elsewhere).\n"
     "Prints {\"ok\":true,\"files\",\"records\",\"checkpoints\",\"firstSeq\",\"lastSeq\",\n"
     "\"lastCheckpointSeq\",\"unsignedTail\",\"nodeId\"} (warning on stderr if records follow\n"
     "the last checkpoint) or, exit 1, {\"ok\":false,\"file\",\"line\",\"reason\"} naming the\n"
     "first bad record."},
    {NULL, "random", cmd_random, L("count"), L("count"), "--count N",
     "Random bytes from the HSM (1..128). Prints {\"value\"}."},
    {NULL, "health", cmd_health, NONE, NONE, "",
     "The server's gRPC health status. Prints {\"status\"}."},
};

#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void full_name(const struct command *c, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", c->group != NULL ? c->group : "", c->group != NULL ? " " : "",
             c->name);
}

static void print_command_help(FILE *f, const struct command *c)
{
    char full[64];
    full_name(c, full, sizeof full);
    fprintf(f, "usage: mhsm %s %s\n\n%s\n\n%s", full, c->synopsis, c->summary, GLOBAL_HELP);
}

/* How many of the words of |a| (from the first) spell the space-separated words of
 * |path|, in order: all of path's words (*whole set), or fewer when a's words end
 * first. 0 at the first mismatch. */
static size_t match_words(const char *path, const struct mh_args *a, bool *whole)
{
    size_t i = 0;
    const char *p = path;
    *whole = false;
    while (*p != 0) {
        const char *sp = strchr(p, ' ');
        size_t len = sp != NULL ? (size_t)(sp - p) : strlen(p);
        if (i == a->n_words)
            return i;
        if (strlen(a->words[i]) != len || memcmp(a->words[i], p, len) != 0)
            return 0;
        i++;
        p += len + (sp != NULL ? 1 : 0);
    }
    *whole = true;
    return i;
}

/* |prefix|: "" for every command, else the group words ("role definition"). */
static void print_top_help(FILE *f, const char *prefix)
{
    fprintf(f, "usage: mhsm%s%s COMMAND [options]\n\nCommands:\n", prefix[0] ? " " : "", prefix);
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const struct command *c = &COMMANDS[i];
        char full[64];
        full_name(c, full, sizeof full);
        if (plen > 0 && (strncmp(full, prefix, plen) != 0 || full[plen] != ' '))
            continue;
        const char *nl = strchr(c->summary, '\n');
        int len = nl != NULL ? (int)(nl - c->summary) : (int)strlen(c->summary);
        fprintf(f, "  %-28s %.*s\n", full, len, c->summary);
    }
    fprintf(f, "\n'mhsm COMMAND --help' describes a command.\n\n%s", GLOBAL_HELP);
}

/* Whether the words of |a| (at least one) are the first words of some command group. */
static bool is_group_prefix(const struct mh_args *a)
{
    for (size_t i = 0; a->n_words > 0 && i < N_COMMANDS; i++) {
        bool whole;
        if (COMMANDS[i].group != NULL && match_words(COMMANDS[i].group, a, &whole) == a->n_words)
            return true;
    }
    return false;
}

static const struct command *find_command(const struct mh_args *a, size_t *used)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char full[64];
        full_name(&COMMANDS[i], full, sizeof full);
        bool whole;
        size_t n = match_words(full, a, &whole);
        if (n > 0 && whole) {
            *used = n;
            return &COMMANDS[i];
        }
    }
    return NULL;
}

static int setup(struct ctx *x)
{
    const char *ep = mh_args_get(&x->args, "endpoint");
    if (ep == NULL)
        ep = getenv("MHSM_ENDPOINT");
    x->cfg.endpoint = ep != NULL && ep[0] != 0 ? ep : "127.0.0.1:8443";
    static const char *const FILES[][2] = {
        {"ca", "MHSM_CA"}, {"cert", "MHSM_CERT"}, {"key", "MHSM_KEY"}};
    const char *vals[3];
    for (size_t i = 0; i < 3; i++) {
        vals[i] = mh_args_get(&x->args, FILES[i][0]);
        if (vals[i] == NULL)
            vals[i] = getenv(FILES[i][1]);
        if (vals[i] != NULL && vals[i][0] == 0)
            vals[i] = NULL;
    }
    x->cfg.ca_file = vals[0];
    x->cfg.cert_file = vals[1];
    x->cfg.key_file = vals[2];
    char host[256], port[8];
    if (mh_client_split_endpoint(x->cfg.endpoint, host, sizeof host, port, sizeof port) < 0)
        return usage_error("--endpoint takes HOST:PORT, not '%s'", x->cfg.endpoint);
    const char *out = mh_args_get(&x->args, "output");
    if (out != NULL && strcmp(out, "json") != 0 && strcmp(out, "table") != 0)
        return usage_error("--output takes json or table, not '%s'", out);
    x->table = out != NULL && strcmp(out, "table") == 0;
    uint32_t secs = 30;
    const char *t = mh_args_get(&x->args, "timeout");
    if (t != NULL && mh_args_parse_u32(t, 1, 99999999u, &secs) < 0)
        return usage_error("--timeout takes whole seconds (1..99999999), not '%s'", t);
    x->timeout_ms = (uint64_t)secs * 1000u;
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    struct ctx x = {0};
    char err[256];
    int ex;
    /* A server that drops the connection must give an error, not kill us (rpc_client.h). */
    signal(SIGPIPE, SIG_IGN);
    if (mh_args_parse(argc, argv, FLAGS, &x.args, err, sizeof err) < 0) {
        ex = usage_error("%s", err);
        goto out;
    }
    size_t used = 0;
    const struct command *cmd = find_command(&x.args, &used);
    if (cmd == NULL && (x.args.n_words == 0 || is_group_prefix(&x.args))) {
        char prefix[64] = "";
        for (size_t i = 0; i < x.args.n_words; i++)
            snprintf(prefix + strlen(prefix), sizeof prefix - strlen(prefix), "%s%s",
                     i > 0 ? " " : "", x.args.words[i]);
        print_top_help(x.args.help ? stdout : stderr, prefix);
        ex = x.args.help ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (cmd == NULL) {
        char words[192] = "";
        for (size_t i = 0; i < x.args.n_words && i < 3; i++)
            snprintf(words + strlen(words), sizeof words - strlen(words), "%s%s", i > 0 ? " " : "",
                     x.args.words[i]);
        ex = usage_error("unknown command '%s'", words);
        goto out;
    }
    if (x.args.help) {
        print_command_help(stdout, cmd);
        ex = EXIT_OK;
        goto out;
    }
    x.n_used = used;
    /* Only `audit verify` takes operands (its FILEs). */
    if (x.args.n_words > used && cmd->run != cmd_audit_verify) {
        ex = usage_error("unexpected argument '%s'", x.args.words[used]);
        goto out;
    }
    if (mh_args_check(&x.args, cmd->flags, GLOBAL_FLAGS, err, sizeof err) < 0) {
        ex = usage_error("%s", err);
        goto out;
    }
    for (size_t i = 0; cmd->required[i] != NULL; i++) {
        if (!mh_args_has(&x.args, cmd->required[i])) {
            ex = usage_error("missing --%s", cmd->required[i]);
            goto out;
        }
    }
    ex = setup(&x);
    if (ex == EXIT_OK)
        ex = cmd->run(&x);
out:
    mh_client_free(x.client);
    mh_args_free(&x.args);
    return ex;
}
