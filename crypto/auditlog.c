#include "crypto/auditlog.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "common/b64.h"
#include "common/buf.h"
#include "crypto/alg.h"

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

int mh_auditlog_line_hash(const char *line, size_t len, char hex[MH_AUDITLOG_HASH_HEX + 1])
{
    uint8_t md[32];
    unsigned int mdlen = 0;
    MH_TRY(mh_alg_init());
    if (EVP_Digest(line, len, md, &mdlen, mh_alg_md(MH_MD_SHA256), NULL) != 1 || mdlen != 32) {
        ERR_clear_error();
        return MH_ECRYPTO;
    }
    mh_hex_encode(md, sizeof md, hex);
    return 0;
}

int mh_auditlog_checkpoint_message(uint64_t node_id, uint64_t seq, const char *prev_hash_hex,
                                   char *out, size_t cap)
{
    if (out == NULL || prev_hash_hex == NULL || cap < 128 ||
        strlen(prev_hash_hex) != MH_AUDITLOG_HASH_HEX)
        return MH_EINVAL;
    int n = snprintf(out, cap, "mhsm-audit-checkpoint-v1\n%" PRIu64 "\n%" PRIu64 "\n%s", node_id,
                     seq, prev_hash_hex);
    if (n < 0 || (size_t)n >= cap)
        return MH_EINVAL;
    return 0;
}

int mh_auditlog_signer_new(const struct mh_secret *seed, EVP_PKEY **out)
{
    if (seed == NULL || seed->len != 32 || out == NULL)
        return MH_EINVAL;
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed->data, seed->len);
    if (k == NULL) {
        ERR_clear_error();
        return MH_ECRYPTO;
    }
    *out = k;
    return 0;
}

int mh_auditlog_public_key(EVP_PKEY *key, uint8_t out[MH_AUDITLOG_PUBKEY_LEN])
{
    size_t len = MH_AUDITLOG_PUBKEY_LEN;
    if (key == NULL || EVP_PKEY_get_raw_public_key(key, out, &len) != 1 ||
        len != MH_AUDITLOG_PUBKEY_LEN) {
        ERR_clear_error();
        return MH_ECRYPTO;
    }
    return 0;
}

int mh_auditlog_sign(EVP_PKEY *key, const char *msg, uint8_t sig[MH_AUDITLOG_SIG_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return MH_ENOMEM;
    size_t len = MH_AUDITLOG_SIG_LEN;
    int rv = MH_ECRYPTO;
    if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
        EVP_DigestSign(ctx, sig, &len, (const unsigned char *)msg, strlen(msg)) == 1 &&
        len == MH_AUDITLOG_SIG_LEN)
        rv = 0;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return rv;
}

int mh_auditlog_verify_sig(const uint8_t pub[MH_AUDITLOG_PUBKEY_LEN], const char *msg,
                           const uint8_t *sig, size_t sig_len)
{
    if (sig == NULL || sig_len != MH_AUDITLOG_SIG_LEN)
        return MH_EAUTH;
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, MH_AUDITLOG_PUBKEY_LEN);
    if (k == NULL) {
        ERR_clear_error();
        return MH_ECRYPTO;
    }
    int rv = MH_ENOMEM;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        goto err_after_key;
    rv = MH_ECRYPTO;
    if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) != 1)
        goto err_after_ctx;
    /* Anything but 1 (bad signature, a malformed point) is a signature that failed. */
    rv = EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)msg, strlen(msg)) == 1
             ? 0
             : MH_EAUTH;
err_after_ctx:
    EVP_MD_CTX_free(ctx);
err_after_key:
    EVP_PKEY_free(k);
    ERR_clear_error();
    return rv;
}

/* Length of the well-formed UTF-8 sequence at |p| (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), 0 when it is not one. A NUL terminator
 * is never a continuation byte, so this never reads past the string. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

long mh_auditlog_json_string(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    /* Every write keeps one byte for the NUL. */
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 >= cap)                                                                          \
            return MH_ENOSPACE;                                                                    \
        out[o++] = (char)(ch);                                                                     \
    } while (0)
    PUT('"');
    while (*p != 0) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT(c);
            p++;
        } else if (c >= 0x20 && c < 0x7F) {
            PUT(c);
            p++;
        } else if (c < 0x80) {
            PUT('\\');
            switch (c) {
            case '\n':
                PUT('n');
                break;
            case '\r':
                PUT('r');
                break;
            case '\t':
                PUT('t');
                break;
            default:
                PUT('u');
                PUT('0');
                PUT('0');
                PUT(hex[c >> 4]);
                PUT(hex[c & 15]);
                break;
            }
            p++;
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                const char *r = "\\ufffd";
                while (*r != 0)
                    PUT(*r++);
                p++;
            } else {
                for (size_t i = 0; i < n; i++)
                    PUT(p[i]);
                p += n;
            }
        }
    }
    PUT('"');
#undef PUT
    out[o] = 0;
    return (long)o;
}

/* ---- verification --------------------------------------------------------- */

struct rec {
    json_t *root;
    uint64_t seq, node_id;
    const char *prev_hash;
    bool checkpoint;
    const char *signature, *public_key;
};

struct verifier {
    const char *const *paths;
    size_t n;
    const uint8_t *pub;
    char pub_hex[MH_AUDITLOG_PUBKEY_LEN * 2 + 1];
    struct mh_auditlog_report *r;
    bool have_prev, have_node, torn_before;
    uint64_t name_seq; /* first seq the current file's name promises; 0: none */
    uint64_t prev_seq, node_id;
    char prev_hash[MH_AUDITLOG_HASH_HEX + 1]; /* hash of the previous line */
    const char *prev_file;
    uint64_t prev_line;
};

static int fail(struct verifier *v, int rv, const char *file, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(struct verifier *v, int rv, const char *file, uint64_t line, const char *fmt, ...)
{
    va_list ap;
    v->r->bad_file = file;
    v->r->bad_line = line;
    va_start(ap, fmt);
    vsnprintf(v->r->reason, sizeof v->r->reason, fmt, ap);
    va_end(ap);
    return rv;
}

static bool is_hash_hex(const char *s)
{
    size_t i = 0;
    for (; s[i] != 0; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == MH_AUDITLOG_HASH_HEX;
}

static bool get_u64(json_t *o, const char *name, uint64_t min, uint64_t *out)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Parses one line (|len| bytes, no newline) into |r| (json_decref(r->root) after).
 * MH_EPROTO with |why| set when it is not a record. */
static int parse_line(const char *line, size_t len, struct rec *r, const char **why)
{
    memset(r, 0, sizeof *r);
    if (len == 0) {
        *why = "empty line";
        return MH_EPROTO;
    }
    if (len > MH_AUDITLOG_LINE_MAX) {
        *why = "line longer than the format allows";
        return MH_EPROTO;
    }
    json_error_t err;
    r->root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
    if (r->root == NULL) {
        *why = "not valid JSON";
        return MH_EPROTO;
    }
    if (!json_is_object(r->root)) {
        *why = "not a JSON object";
        goto bad;
    }
    if (!get_u64(r->root, "seq", 1, &r->seq)) {
        *why = "missing or invalid seq";
        goto bad;
    }
    if (!get_u64(r->root, "nodeId", 0, &r->node_id)) {
        *why = "missing or invalid nodeId";
        goto bad;
    }
    r->prev_hash = json_string_value(json_object_get(r->root, "prevHash"));
    if (r->prev_hash == NULL || !is_hash_hex(r->prev_hash)) {
        *why = "missing or invalid prevHash";
        goto bad;
    }
    const char *op = json_string_value(json_object_get(r->root, "operationName"));
    if (op == NULL) {
        *why = "missing operationName";
        goto bad;
    }
    r->checkpoint = strcmp(op, MH_AUDITLOG_CHECKPOINT) == 0;
    /* A signed line that stopped being a checkpoint would otherwise pass as an
     * unsigned record. */
    if (!r->checkpoint && (json_object_get(r->root, "signature") != NULL ||
                           json_object_get(r->root, "publicKey") != NULL)) {
        *why = "signature on a line that is not a checkpoint";
        goto bad;
    }
    if (r->checkpoint) {
        r->signature = json_string_value(json_object_get(r->root, "signature"));
        r->public_key = json_string_value(json_object_get(r->root, "publicKey"));
        if (r->signature == NULL || r->public_key == NULL) {
            *why = "checkpoint without signature or publicKey";
            goto bad;
        }
    }
    return 0;
bad:
    json_decref(r->root);
    r->root = NULL;
    return MH_EPROTO;
}

/* The one rendering of a checkpoint line (node/audit.c writes exactly these
 * bytes): every field of it is covered by the signature or fixed, so no byte
 * of a checkpoint can change unnoticed, even on the chain's last line. */
int mh_auditlog_checkpoint_line(uint64_t seq, const char *prev_hash, uint64_t node_id,
                                const char *sig_b64, const char *pub_hex, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "{\"seq\":%" PRIu64 ",\"prevHash\":\"%s\",\"nodeId\":%" PRIu64
                     ",\"category\":\"AuditEvent\",\"operationName\":\"" MH_AUDITLOG_CHECKPOINT
                     "\",\"signature\":\"%s\",\"publicKey\":\"%s\"}",
                     seq, prev_hash, node_id, sig_b64, pub_hex);
    return n < 0 || (size_t)n >= cap ? MH_ENOSPACE : 0;
}

/* 0 when |r| (whose line is |line|, |len| bytes) is a checkpoint signed by the
 * trusted key in canonical form; else MH_EAUTH with |why|. */
static int check_checkpoint(const struct verifier *v, const struct rec *r, const char *line,
                            size_t len, const char **why)
{
    char msg[160], canon[512];
    struct mh_buf sig = {0};
    int rv = MH_EAUTH;
    if (strcmp(r->public_key, v->pub_hex) != 0) {
        *why = "checkpoint names a different public key than the trusted one";
        return MH_EAUTH;
    }
    if (mh_b64url_decode(r->signature, strlen(r->signature), &sig) < 0 ||
        mh_auditlog_checkpoint_message(r->node_id, r->seq, r->prev_hash, msg, sizeof msg) < 0) {
        *why = "checkpoint signature is malformed";
        goto out;
    }
    if (mh_auditlog_verify_sig(v->pub, msg, sig.data, sig.len) != 0) {
        *why = "checkpoint signature does not verify with the trusted key";
        goto out;
    }
    if (mh_auditlog_checkpoint_line(r->seq, r->prev_hash, r->node_id, r->signature, r->public_key,
                                    canon, sizeof canon) < 0 ||
        strlen(canon) != len || memcmp(canon, line, len) != 0) {
        *why = "checkpoint line was altered (not in its signed form)";
        goto out;
    }
    rv = 0;
out:
    mh_buf_free(&sig);
    return rv;
}

/* The seq a file named audit-<20 digits>.jsonl starts with; 0 for other names. */
static uint64_t seq_of_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    if (strlen(base) != 6 + 20 + 6 || memcmp(base, "audit-", 6) != 0 ||
        strcmp(base + 26, ".jsonl") != 0)
        return 0;
    uint64_t seq = 0;
    for (size_t i = 6; i < 26; i++) {
        if (base[i] < '0' || base[i] > '9' || seq > (UINT64_MAX - 9) / 10)
            return 0;
        seq = seq * 10 + (uint64_t)(base[i] - '0');
    }
    return seq;
}

/* Reads one line; 1 with *len (newline stripped) and *torn, 0 at EOF, -errno. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t *len, bool *torn)
{
    errno = 0;
    ssize_t got = getline(buf, cap, f);
    if (got < 0) {
        if (ferror(f))
            return errno != 0 ? -errno : -EIO;
        return 0;
    }
    *len = (size_t)got;
    *torn = (*buf)[*len - 1] != '\n';
    if (!*torn)
        (*len)--;
    return 1;
}

/* The prevHash of the line after the current one (the rest of |f|, else the
 * first line of a later file): false when there is none or it does not parse. */
static bool next_prev_hash(const struct verifier *v, FILE *f, size_t file_idx,
                           char out[MH_AUDITLOG_HASH_HEX + 1])
{
    char *buf = NULL;
    size_t cap = 0, len = 0;
    bool torn = false, found = false;
    int got = read_line(f, &buf, &cap, &len, &torn);
    for (size_t j = file_idx + 1; got == 0 && j < v->n; j++) {
        FILE *g = fopen(v->paths[j], "rb");
        if (g == NULL)
            break;
        got = read_line(g, &buf, &cap, &len, &torn);
        fclose(g);
    }
    if (got == 1 && !torn) {
        struct rec r;
        const char *why;
        if (parse_line(buf, len, &r, &why) == 0) {
            memcpy(out, r.prev_hash, MH_AUDITLOG_HASH_HEX + 1);
            json_decref(r.root);
            found = true;
        }
    }
    free(buf);
    return found;
}

/* Checks one complete line (number |line_no| of file |idx|). */
static int check_line(struct verifier *v, FILE *f, size_t idx, uint64_t line_no, const char *line,
                      size_t len)
{
    const char *file = v->paths[idx], *why = NULL;
    struct rec r;
    char hash[MH_AUDITLOG_HASH_HEX + 1];
    int rv = parse_line(line, len, &r, &why);
    if (rv < 0)
        return fail(v, rv, file, line_no, "%s", why);
    uint64_t name_seq = v->name_seq;
    v->name_seq = 0;
    if (name_seq != 0 && r.seq != name_seq) {
        rv = fail(v, MH_EAUTH, file, line_no,
                  "seq %" PRIu64 " but the file name says its first record is seq %" PRIu64
                  " (a line was removed or inserted at the start)",
                  r.seq, name_seq);
        goto out;
    }
    if (v->have_prev && r.seq != v->prev_seq + 1) {
        if (v->torn_before)
            rv = fail(v, MH_EAUTH, file, line_no,
                      "seq %" PRIu64 " does not continue the chain after a torn line (expected "
                      "%" PRIu64 ")",
                      r.seq, v->prev_seq + 1);
        else
            rv = fail(v, MH_EAUTH, file, line_no,
                      "seq %" PRIu64 " breaks the chain: expected %" PRIu64
                      " (a line was removed, inserted or moved)",
                      r.seq, v->prev_seq + 1);
        goto out;
    }
    if (!v->have_prev && r.seq == 1 && strcmp(r.prev_hash, ZERO_HASH) != 0) {
        rv = fail(v, MH_EAUTH, file, line_no, "first record (seq 1) has a non-zero prevHash");
        goto out;
    }
    rv = mh_auditlog_line_hash(line, len, hash);
    if (rv < 0) {
        rv = fail(v, rv, file, line_no, "hash failed");
        goto out;
    }
    if (v->have_prev && strcmp(r.prev_hash, v->prev_hash) != 0) {
        /* Either the line before was altered, or this line's prevHash was. A signed
         * checkpoint vouches for its own prevHash; otherwise the next line tells:
         * it chains to this line as written only when this line is intact. */
        bool blame_self;
        if (r.checkpoint) {
            blame_self = check_checkpoint(v, &r, line, len, &why) != 0;
        } else {
            char next[MH_AUDITLOG_HASH_HEX + 1];
            blame_self = next_prev_hash(v, f, idx, next) && strcmp(next, hash) != 0;
        }
        if (blame_self)
            rv = fail(v, MH_EAUTH, file, line_no,
                      "record seq %" PRIu64 " was altered (its prevHash does not match the "
                      "line before, and the line after does not chain to it)",
                      r.seq);
        else
            rv = fail(v, MH_EAUTH, v->prev_file, v->prev_line,
                      "record seq %" PRIu64 " was altered (the next line's prevHash does not "
                      "match it)",
                      v->prev_seq);
        goto out;
    }
    if (v->have_node && r.node_id != v->node_id) {
        rv = fail(v, MH_EAUTH, file, line_no,
                  "nodeId %" PRIu64 " differs from the chain's nodeId %" PRIu64, r.node_id,
                  v->node_id);
        goto out;
    }
    if (r.checkpoint) {
        rv = check_checkpoint(v, &r, line, len, &why);
        if (rv < 0) {
            rv = fail(v, rv, file, line_no, "%s", why);
            goto out;
        }
        v->r->checkpoints++;
        v->r->last_checkpoint_seq = r.seq;
    }
    if (!v->have_prev)
        v->r->first_seq = r.seq;
    v->have_prev = v->have_node = true;
    v->torn_before = false;
    v->node_id = v->r->node_id = r.node_id;
    v->prev_seq = v->r->last_seq = r.seq;
    memcpy(v->prev_hash, hash, sizeof hash);
    v->prev_file = file;
    v->prev_line = line_no;
    v->r->records++;
    rv = 0;
out:
    json_decref(r.root);
    return rv;
}

int mh_auditlog_verify_files(const char *const *paths, size_t n,
                             const uint8_t pub[MH_AUDITLOG_PUBKEY_LEN],
                             struct mh_auditlog_report *report)
{
    if (report == NULL)
        return MH_EINVAL;
    memset(report, 0, sizeof *report);
    if (paths == NULL || n == 0 || pub == NULL)
        return MH_EINVAL;
    struct verifier v = {.paths = paths, .n = n, .pub = pub, .r = report};
    mh_hex_encode(pub, MH_AUDITLOG_PUBKEY_LEN, v.pub_hex);
    char *buf = NULL;
    size_t cap = 0;
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (f == NULL) {
            rv = -errno;
            (void)fail(&v, rv, paths[i], 0, "cannot open: %s", mh_strerror(rv));
            break;
        }
        uint64_t line_no = 0;
        v.name_seq = seq_of_name(paths[i]);
        for (;;) {
            size_t len = 0;
            bool torn = false;
            int got = read_line(f, &buf, &cap, &len, &torn);
            if (got < 0) {
                rv = fail(&v, got, paths[i], line_no + 1, "read failed: %s", mh_strerror(got));
                break;
            }
            if (got == 0)
                break;
            line_no++;
            if (torn) {
                /* A crash mid-write: harmless only when a later file goes on
                 * from the line before it (the next line's checks see to that). */
                if (i + 1 == n) {
                    rv = fail(&v, MH_EPROTO, paths[i], line_no,
                              "last line is incomplete (no newline) and no later file continues "
                              "the chain");
                    break;
                }
                v.torn_before = true;
                if (report->torn++ == 0) {
                    report->torn_file = paths[i];
                    report->torn_line = line_no;
                }
                continue;
            }
            rv = check_line(&v, f, i, line_no, buf, len);
            if (rv < 0)
                break;
        }
        fclose(f);
    }
    free(buf);
    if (rv == 0)
        report->unsigned_tail = report->records == 0 ? 0
                                : report->last_checkpoint_seq == 0
                                    ? report->records
                                    : report->last_seq - report->last_checkpoint_seq;
    return rv;
}
