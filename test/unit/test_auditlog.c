#include "testutil.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/b64.h"
#include "crypto/auditlog.h"

/* ---- a writer built from the module's writer-side helpers ---------------- */

#define MAXL 48
#define LCAP 1024

struct logb {
    char lines[MAXL][LCAP];
    size_t n;
    uint64_t seq, node;
    char prev[MH_AUDITLOG_HASH_HEX + 1];
};

static void seed_of(uint8_t fill, struct mh_secret *s)
{
    assert_int_equal(mh_secret_alloc(s, 32), 0);
    for (size_t i = 0; i < 32; i++)
        s->data[i] = (uint8_t)(fill + i);
}

static EVP_PKEY *signer(uint8_t fill, uint8_t pub[MH_AUDITLOG_PUBKEY_LEN])
{
    struct mh_secret s = {0};
    EVP_PKEY *k = NULL;
    seed_of(fill, &s);
    assert_int_equal(mh_auditlog_signer_new(&s, &k), 0);
    mh_secret_free(&s);
    if (pub != NULL)
        assert_int_equal(mh_auditlog_public_key(k, pub), 0);
    return k;
}

static void logb_init(struct logb *b, uint64_t first_seq, uint64_t node)
{
    memset(b, 0, sizeof *b);
    b->seq = first_seq;
    b->node = node;
    memset(b->prev, '0', MH_AUDITLOG_HASH_HEX);
}

static void logb_push(struct logb *b, const char *line)
{
    assert_true(b->n < MAXL);
    assert_true(strlen(line) < LCAP);
    strcpy(b->lines[b->n++], line);
    assert_int_equal(mh_auditlog_line_hash(line, strlen(line), b->prev), 0);
    b->seq++;
}

static void logb_rec(struct logb *b, const char *op, const char *who)
{
    char id[256], line[LCAP];
    assert_true(mh_auditlog_json_string(who, id, sizeof id) > 0);
    snprintf(line, sizeof line,
             "{\"seq\":%" PRIu64 ",\"prevHash\":\"%s\",\"nodeId\":%" PRIu64
             ",\"time\":\"2024-05-01T10:00:00.000Z\",\"category\":\"AuditEvent\","
             "\"operationName\":\"%s\",\"resultType\":\"Success\",\"identity\":{\"claim\":{"
             "\"oid\":%s}}}",
             b->seq, b->prev, b->node, op, id);
    logb_push(b, line);
}

/* The checkpoint rendering node/audit.c writes (crypto/auditlog.c checks it). */
static void logb_cp(struct logb *b, EVP_PKEY *key, const uint8_t *claimed_pub)
{
    char msg[160], pub_hex[65], line[LCAP];
    uint8_t sig[MH_AUDITLOG_SIG_LEN], pub[MH_AUDITLOG_PUBKEY_LEN];
    struct mh_buf s = {0};
    assert_int_equal(mh_auditlog_checkpoint_message(b->node, b->seq, b->prev, msg, sizeof msg), 0);
    assert_int_equal(mh_auditlog_sign(key, msg, sig), 0);
    assert_int_equal(mh_b64url_encode(sig, sizeof sig, &s), 0);
    assert_int_equal(mh_auditlog_public_key(key, pub), 0);
    mh_hex_encode(claimed_pub != NULL ? claimed_pub : pub, MH_AUDITLOG_PUBKEY_LEN, pub_hex);
    snprintf(line, sizeof line,
             "{\"seq\":%" PRIu64 ",\"prevHash\":\"%s\",\"nodeId\":%" PRIu64
             ",\"category\":\"AuditEvent\",\"operationName\":\"AuditCheckpoint\","
             "\"signature\":\"%s\",\"publicKey\":\"%s\"}",
             b->seq, b->prev, b->node, (const char *)s.data, pub_hex);
    mh_buf_free(&s);
    logb_push(b, line);
}

/* 30 lines: records, a checkpoint every 7th line, and a checkpoint last. */
static void build_standard(struct logb *b, EVP_PKEY *key)
{
    logb_init(b, 1, 3);
    for (int i = 1; i <= 29; i++) {
        if (i % 7 == 0)
            logb_cp(b, key, NULL);
        else
            logb_rec(b, i % 2 ? "KeySign" : "KeyCreate",
                     i % 3 ? "spiffe://mhsm/app" : "x\"y\n\xff");
    }
    logb_cp(b, key, NULL);
}

static int case_no;

/* Writes |lines| into files (file k starts at line starts[k]); names follow the
 * first seq given in |seqs| (or "f<k>.jsonl" when seqs is NULL). */
static size_t write_files(char lines[][LCAP], size_t n, const size_t *starts, size_t nfiles,
                          const uint64_t *seqs, char paths[][PATH_MAX], const char *tail)
{
    char dir[1024], name[64];
    snprintf(name, sizeof name, "case%d", case_no++);
    tu_path(dir, sizeof dir, name);
    assert_int_equal(mkdir(dir, 0700), 0);
    for (size_t k = 0; k < nfiles; k++) {
        if (seqs != NULL)
            snprintf(paths[k], PATH_MAX, "%s/audit-%020" PRIu64 ".jsonl", dir, seqs[k]);
        else
            snprintf(paths[k], PATH_MAX, "%s/f%zu.jsonl", dir, k);
        FILE *f = fopen(paths[k], "wb");
        assert_non_null(f);
        size_t end = k + 1 < nfiles ? starts[k + 1] : n;
        for (size_t i = starts[k]; i < end; i++)
            fprintf(f, "%s\n", lines[i]);
        if (tail != NULL && k + 1 == nfiles)
            fputs(tail, f);
        fclose(f);
    }
    return nfiles;
}

static int verify1(char lines[][LCAP], size_t n, const uint8_t *pub, struct mh_auditlog_report *r,
                   const char *tail, char path[PATH_MAX])
{
    static const size_t start0 = 0;
    static const uint64_t seq1 = 1;
    /* static: the report points into the paths it was given */
    static char paths[1][PATH_MAX];
    write_files(lines, n, &start0, 1, &seq1, paths, tail);
    strcpy(path, paths[0]);
    const char *p[1] = {paths[0]};
    return mh_auditlog_verify_files(p, 1, pub, r);
}

static void expect_bad(char lines[][LCAP], size_t n, const uint8_t *pub, int rv, uint64_t line,
                       const char *what, size_t pos)
{
    struct mh_auditlog_report r;
    char path[PATH_MAX];
    int got = verify1(lines, n, pub, &r, NULL, path);
    if (got != rv || r.bad_line != line || r.bad_file == NULL || strcmp(r.bad_file, path) != 0)
        fail_msg("%s at line %zu: got rv=%d line=%" PRIu64 " (%s), want rv=%d line=%" PRIu64, what,
                 pos, got, r.bad_line, r.reason, rv, line);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_ed25519_rfc8032(void **state)
{
    (void)state;
    /* RFC 8032 section 7.1, TEST 1 (empty message). */
    struct mh_secret seed = {0};
    uint8_t pub[32], want_pub[32], sig[64], want_sig[64];
    assert_int_equal(mh_secret_alloc(&seed, 32), 0);
    tu_unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", seed.data, 32);
    tu_unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", want_pub, 32);
    tu_unhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc"
             "61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
             want_sig, 64);
    EVP_PKEY *k = NULL;
    assert_int_equal(mh_auditlog_signer_new(&seed, &k), 0);
    assert_int_equal(mh_auditlog_public_key(k, pub), 0);
    assert_memory_equal(pub, want_pub, 32);
    assert_int_equal(mh_auditlog_sign(k, "", sig), 0);
    assert_memory_equal(sig, want_sig, 64);
    assert_int_equal(mh_auditlog_verify_sig(pub, "", sig, 64), 0);
    assert_int_equal(mh_auditlog_verify_sig(pub, "x", sig, 64), MH_EAUTH);
    assert_int_equal(mh_auditlog_verify_sig(pub, "", sig, 63), MH_EAUTH);
    sig[10] ^= 1;
    assert_int_equal(mh_auditlog_verify_sig(pub, "", sig, 64), MH_EAUTH);
    EVP_PKEY_free(k);
    seed.len = 31;
    assert_int_equal(mh_auditlog_signer_new(&seed, &k), MH_EINVAL);
    seed.len = 32;
    mh_secret_free(&seed);
}

static void test_hash_and_message(void **state)
{
    (void)state;
    char hex[65], msg[128];
    assert_int_equal(mh_auditlog_line_hash("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(mh_auditlog_checkpoint_message(7, 42, hex, msg, sizeof msg), 0);
    assert_string_equal(msg, "mhsm-audit-checkpoint-v1\n7\n42\nba7816bf8f01cfea414140de5dae2223b00"
                             "361a396177a9cb410ff61f20015ad");
    assert_int_equal(mh_auditlog_checkpoint_message(7, 42, hex, msg, 127), MH_EINVAL);
    assert_int_equal(mh_auditlog_checkpoint_message(7, 42, "abc", msg, sizeof msg), MH_EINVAL);
}

static void test_json_string_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } v[] = {
        {"", "\"\""},
        {"abc", "\"abc\""},
        {"a\"b\\c", "\"a\\\"b\\\\c\""},
        {"\n\r\t\x01\x1f\x7f", "\"\\n\\r\\t\\u0001\\u001f\\u007f\""},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91",
         "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91\""},
        {"\xff", "\"\\ufffd\""},
        {"\xc3", "\"\\ufffd\""},
        {"\xc0\xaf", "\"\\ufffd\\ufffd\""},                       /* overlong '/' */
        {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},            /* surrogate */
        {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* > U+10FFFF */
        {"\xe2\x82", "\"\\ufffd\\ufffd\""},
        {"</script>", "\"</script>\""},
    };
    char out[128];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        long n = mh_auditlog_json_string(v[i].in, out, sizeof out);
        assert_int_equal(n, (long)strlen(v[i].out));
        assert_string_equal(out, v[i].out);
        /* Every smaller buffer is refused, never overrun. */
        for (size_t cap = 0; cap <= (size_t)n; cap++)
            assert_int_equal(mh_auditlog_json_string(v[i].in, out, cap), MH_ENOSPACE);
        assert_int_equal(mh_auditlog_json_string(v[i].in, out, (size_t)n + 1), n);
    }
}

/* Random bytes: the output always parses as one JSON string; valid UTF-8 input
 * comes back unchanged. */
static void test_json_string_fuzz(void **state)
{
    (void)state;
    struct tu_rng rng = {42};
    char in[64], out[64 * 6 + 3];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)(tu_rng_next(&rng) % 63);
        for (size_t i = 0; i < len; i++) {
            uint64_t x = tu_rng_next(&rng);
            /* Bias toward interesting bytes: ASCII, controls, UTF-8 lead/cont. */
            static const uint8_t pick[] = {'"',  '\\', 0x01, 0x1f, 0x7f, 0x80, 0xbf, 0xc2,
                                           0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xff, 'a'};
            in[i] = (char)(x & 1 ? pick[(x >> 8) % sizeof pick] : (uint8_t)(x >> 16));
            if (in[i] == 0)
                in[i] = 'z';
        }
        in[len] = 0;
        long n = mh_auditlog_json_string(in, out, sizeof out);
        assert_true(n >= 2);
        assert_int_equal(strlen(out), (size_t)n);
        for (long i = 0; i < n; i++)
            assert_true((unsigned char)out[i] >= 0x20);
        char doc[sizeof out + 2];
        snprintf(doc, sizeof doc, "[%s]", out);
        json_error_t err;
        json_t *j = json_loads(doc, 0, &err);
        if (j == NULL)
            fail_msg("escaped output does not parse: %s", err.text);
        assert_true(json_is_string(json_array_get(j, 0)));
        /* jansson accepts only valid UTF-8; if the input was valid it round-trips. */
        json_t *orig = json_stringn(in, len);
        if (orig != NULL)
            assert_string_equal(json_string_value(json_array_get(j, 0)), in);
        json_decref(orig);
        json_decref(j);
    }
}

static void test_verify_ok(void **state)
{
    (void)state;
    uint8_t pub[32];
    EVP_PKEY *k = signer(1, pub);
    static struct logb b;
    build_standard(&b, k);
    struct mh_auditlog_report r;
    char path[PATH_MAX];
    assert_int_equal(verify1(b.lines, b.n, pub, &r, NULL, path), 0);
    assert_int_equal(r.records, 30);
    assert_int_equal(r.checkpoints, 5);
    assert_int_equal(r.first_seq, 1);
    assert_int_equal(r.last_seq, 30);
    assert_int_equal(r.last_checkpoint_seq, 30);
    assert_int_equal(r.unsigned_tail, 0);
    assert_int_equal(r.node_id, 3);
    assert_null(r.bad_file);
    /* Unsigned tail reported. */
    logb_rec(&b, "KeyGet", "spiffe://mhsm/app");
    logb_rec(&b, "KeyGet", "spiffe://mhsm/app");
    assert_int_equal(verify1(b.lines, b.n, pub, &r, NULL, path), 0);
    assert_int_equal(r.unsigned_tail, 2);
    assert_int_equal(r.last_checkpoint_seq, 30);
    /* A different trusted key fails at the first checkpoint (line 7). */
    uint8_t other[32];
    EVP_PKEY *k2 = signer(9, other);
    assert_int_equal(verify1(b.lines, b.n, other, &r, NULL, path), MH_EAUTH);
    assert_int_equal(r.bad_line, 7);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k);
}

static void test_tamper_bytes(void **state)
{
    (void)state;
    uint8_t pub[32];
    EVP_PKEY *k = signer(1, pub);
    static struct logb b;
    static char copy[MAXL][LCAP];
    build_standard(&b, k);
    for (size_t l = 0; l < b.n; l++) {
        size_t len = strlen(b.lines[l]);
        for (size_t pos = l % 5; pos < len; pos += 5) {
            memcpy(copy, b.lines, sizeof copy);
            char c = copy[l][pos];
            copy[l][pos] = (char)(c == '9' ? '8' : c == 'f' ? 'e' : c ^ 1);
            struct mh_auditlog_report r;
            char path[PATH_MAX];
            int rv = verify1(copy, b.n, pub, &r, NULL, path);
            if (rv == 0 || r.bad_line != l + 1)
                fail_msg("byte %zu of line %zu edited: rv=%d line=%" PRIu64 " (%s)", pos, l + 1, rv,
                         r.bad_line, r.reason);
            assert_string_equal(r.bad_file, path);
        }
    }
    EVP_PKEY_free(k);
}

static void test_tamper_lines(void **state)
{
    (void)state;
    uint8_t pub[32];
    EVP_PKEY *k = signer(1, pub), *k2 = signer(2, NULL);
    static struct logb b, f;
    static char copy[MAXL][LCAP];
    build_standard(&b, k);
    for (size_t l = 0; l < b.n; l++) {
        /* delete line l+1: the seq breaks at that position */
        memcpy(copy, b.lines, sizeof copy);
        memmove(copy[l], copy[l + 1], (b.n - l - 1) * LCAP);
        if (l + 1 < b.n)
            expect_bad(copy, b.n - 1, pub, MH_EAUTH, l + 1, "delete", l + 1);
        /* swap with the next line */
        if (l + 1 < b.n) {
            memcpy(copy, b.lines, sizeof copy);
            memcpy(copy[l], b.lines[l + 1], LCAP);
            memcpy(copy[l + 1], b.lines[l], LCAP);
            expect_bad(copy, b.n, pub, MH_EAUTH, l + 1, "swap", l + 1);
        }
        /* a duplicate inserted after it */
        memcpy(copy, b.lines, sizeof copy);
        memmove(copy[l + 1], copy[l], (b.n - l) * LCAP);
        expect_bad(copy, b.n + 1, pub, MH_EAUTH, l + 2, "insert", l + 1);
        /* garbage instead of the line */
        memcpy(copy, b.lines, sizeof copy);
        strcpy(copy[l], "{\"seq\":");
        expect_bad(copy, b.n, pub, MH_EPROTO, l + 1, "bad json", l + 1);
        /* nodeId changed (the line is otherwise intact) */
        memcpy(copy, b.lines, sizeof copy);
        char *p = strstr(copy[l], "\"nodeId\":3");
        assert_non_null(p);
        p[9] = '4';
        expect_bad(copy, b.n, pub, MH_EAUTH, l + 1, "nodeId", l + 1);
    }
    /* Deleting the last line is a shorter log: only the seq of the end tells. */
    struct mh_auditlog_report r;
    char path[PATH_MAX];
    assert_int_equal(verify1(b.lines, b.n - 1, pub, &r, NULL, path), 0);
    assert_int_equal(r.last_seq, 29);
    assert_int_equal(r.unsigned_tail, 1);

    /* Forged checkpoints: same chain, signed by another key (claiming either key). */
    for (int claim = 0; claim < 2; claim++) {
        logb_init(&f, 1, 3);
        for (int i = 1; i <= 12; i++) {
            if (i == 9)
                logb_cp(&f, k2, claim ? pub : NULL);
            else
                logb_rec(&f, "KeyGet", "spiffe://mhsm/app");
        }
        logb_cp(&f, k, NULL);
        expect_bad(f.lines, f.n, pub, MH_EAUTH, 9, "forged checkpoint", 9);
    }
    /* A record rewritten with the chain recomputed after it: the checkpoint
     * vouches for its prevHash, so the line before it is the one named. */
    logb_init(&f, 1, 3);
    for (int i = 1; i <= 5; i++)
        logb_rec(&f, "KeyGet", "spiffe://mhsm/app");
    logb_cp(&f, k, NULL);
    static struct logb g;
    logb_init(&g, 1, 3);
    for (int i = 1; i <= 5; i++)
        logb_rec(&g, i == 3 ? "KeyPurge" : "KeyGet", "spiffe://mhsm/app");
    memcpy(g.lines[5], f.lines[5], LCAP); /* the old checkpoint */
    expect_bad(g.lines, 6, pub, MH_EAUTH, 5, "rechained", 6);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k);
}

static void test_truncate(void **state)
{
    (void)state;
    uint8_t pub[32];
    EVP_PKEY *k = signer(1, pub);
    static struct logb b;
    build_standard(&b, k);
    /* Cut inside line 20: a torn last line with no later file is bad. */
    static char copy[MAXL][LCAP];
    memcpy(copy, b.lines, sizeof copy);
    struct mh_auditlog_report r;
    char path[PATH_MAX];
    char tail[LCAP];
    for (size_t cut = 1; cut < strlen(b.lines[19]); cut += 17) {
        memcpy(tail, b.lines[19], cut);
        tail[cut] = 0;
        assert_int_equal(verify1(copy, 19, pub, &r, tail, path), MH_EPROTO);
        assert_int_equal(r.bad_line, 20);
    }
    /* Cut at a line boundary in the middle of a multi-file chain: the next file names it. */
    size_t starts[2] = {0, 20};
    uint64_t seqs[2] = {1, 21};
    char paths[2][PATH_MAX];
    write_files(b.lines, b.n, starts, 2, seqs, paths, NULL);
    const char *pp[2] = {paths[0], paths[1]};
    assert_int_equal(mh_auditlog_verify_files(pp, 2, pub, &r), 0);
    assert_int_equal(r.records, 30);
    assert_int_equal(r.torn, 0);
    /* Now drop file 1's last 3 lines. */
    static char cut3[MAXL][LCAP];
    memcpy(cut3, b.lines, sizeof cut3);
    memmove(cut3[17], cut3[20], 10 * LCAP);
    size_t s2[2] = {0, 17};
    write_files(cut3, 27, s2, 2, seqs, paths, NULL);
    assert_int_equal(mh_auditlog_verify_files(pp, 2, pub, &r), MH_EAUTH);
    assert_string_equal(r.bad_file, paths[1]);
    assert_int_equal(r.bad_line, 1);
    EVP_PKEY_free(k);
}

static void test_multi_file(void **state)
{
    (void)state;
    uint8_t pub[32];
    EVP_PKEY *k = signer(1, pub);
    static struct logb b;
    build_standard(&b, k);
    size_t starts[3] = {0, 7, 18};
    uint64_t seqs[3] = {1, 8, 19};
    char paths[3][PATH_MAX];
    write_files(b.lines, b.n, starts, 3, seqs, paths, NULL);
    struct mh_auditlog_report r;
    const char *pp[3] = {paths[0], paths[1], paths[2]};
    assert_int_equal(mh_auditlog_verify_files(pp, 3, pub, &r), 0);
    assert_int_equal(r.records, 30);
    assert_int_equal(r.checkpoints, 5);
    /* An archived first file: the chain starts mid-way. */
    assert_int_equal(mh_auditlog_verify_files(pp + 1, 2, pub, &r), 0);
    assert_int_equal(r.first_seq, 8);
    assert_int_equal(r.records, 23);
    /* A missing middle file: named at the next file's first line. */
    const char *gap[2] = {paths[0], paths[2]};
    assert_int_equal(mh_auditlog_verify_files(gap, 2, pub, &r), MH_EAUTH);
    assert_string_equal(r.bad_file, paths[2]);
    assert_int_equal(r.bad_line, 1);
    /* Files in the wrong order. */
    const char *swapped[3] = {paths[0], paths[2], paths[1]};
    assert_int_equal(mh_auditlog_verify_files(swapped, 3, pub, &r), MH_EAUTH);
    assert_string_equal(r.bad_file, paths[2]);
    assert_int_equal(r.bad_line, 1);
    /* Editing the last line of file 1 is named there, found through file 2. */
    static char copy[MAXL][LCAP];
    memcpy(copy, b.lines, sizeof copy);
    strstr(copy[5], "\"Key")[1] = 'k';
    write_files(copy, b.n, starts, 3, seqs, paths, NULL);
    assert_int_equal(mh_auditlog_verify_files(pp, 3, pub, &r), MH_EAUTH);
    assert_string_equal(r.bad_file, paths[0]);
    assert_int_equal(r.bad_line, 6);
    /* Deleting the first line of a file: its name says where the chain should be. */
    memcpy(copy, b.lines, sizeof copy);
    memmove(copy[7], copy[8], 22 * LCAP);
    size_t st2[3] = {0, 7, 17};
    write_files(copy, b.n - 1, st2, 3, seqs, paths, NULL);
    assert_int_equal(mh_auditlog_verify_files(pp, 3, pub, &r), MH_EAUTH);
    assert_string_equal(r.bad_file, paths[1]);
    assert_int_equal(r.bad_line, 1);
    /* A missing file is reported as such. */
    const char *none[1] = {"/nonexistent/audit.jsonl"};
    assert_true(mh_auditlog_verify_files(none, 1, pub, &r) < 0);
    assert_string_equal(r.bad_file, none[0]);
    EVP_PKEY_free(k);
}

static void test_torn_line(void **state)
{
    (void)state;
    uint8_t pub[32];
    EVP_PKEY *k = signer(1, pub);
    static struct logb b;
    build_standard(&b, k);
    /* File 1 ends with half of a line that was never finished; file 2 goes on
     * from the line before it (a restart). */
    char paths[2][PATH_MAX];
    size_t starts[2] = {0, 12};
    uint64_t seqs[2] = {1, 13};
    char tail[64];
    memcpy(tail, b.lines[12], 40);
    tail[40] = 0;
    write_files(b.lines, b.n, starts, 2, seqs, paths, NULL);
    /* Rewrite file 1 with the torn tail appended. */
    FILE *f = fopen(paths[0], "ab");
    assert_non_null(f);
    fputs(tail, f);
    fclose(f);
    struct mh_auditlog_report r;
    const char *pp[2] = {paths[0], paths[1]};
    assert_int_equal(mh_auditlog_verify_files(pp, 2, pub, &r), 0);
    assert_int_equal(r.records, 30);
    /* accepted, but reported: file 1, the line after its 12 records */
    assert_int_equal(r.torn, 1);
    assert_ptr_equal(r.torn_file, pp[0]);
    assert_int_equal(r.torn_line, 13);
    /* accepted, but reported: file 1, the line after its 12 records */
    assert_int_equal(r.torn, 1);
    assert_ptr_equal(r.torn_file, pp[0]);
    assert_int_equal(r.torn_line, 13);
    /* A torn line that the next file does not chain around is named. */
    static struct logb c;
    logb_init(&c, 1, 3);
    for (int i = 0; i < 4; i++)
        logb_rec(&c, "KeyGet", "a");
    /* line 5 torn; file 2 continues after line 5 as if it were complete */
    for (int i = 0; i < 3; i++)
        logb_rec(&c, "KeyGet", "a");
    logb_cp(&c, k, NULL);
    size_t st[2] = {0, 5};
    uint64_t sq[2] = {1, 6};
    write_files(c.lines, 4, st, 1, sq, paths, NULL);
    f = fopen(paths[0], "ab");
    assert_non_null(f);
    fwrite(c.lines[4], 1, 20, f);
    fclose(f);
    strcpy(paths[1], paths[0]);
    strcpy(strrchr(paths[1], '/'), "/audit-00000000000000000006.jsonl");
    f = fopen(paths[1], "wb");
    assert_non_null(f);
    for (size_t i = 5; i < c.n; i++)
        fprintf(f, "%s\n", c.lines[i]);
    fclose(f);
    assert_int_equal(mh_auditlog_verify_files(pp, 2, pub, &r), MH_EAUTH);
    assert_string_equal(r.bad_file, paths[1]);
    assert_int_equal(r.bad_line, 1);
    EVP_PKEY_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ed25519_rfc8032),     cmocka_unit_test(test_hash_and_message),
        cmocka_unit_test(test_json_string_vectors), cmocka_unit_test(test_json_string_fuzz),
        cmocka_unit_test(test_verify_ok),           cmocka_unit_test(test_tamper_bytes),
        cmocka_unit_test(test_tamper_lines),        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_multi_file),          cmocka_unit_test(test_torn_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
