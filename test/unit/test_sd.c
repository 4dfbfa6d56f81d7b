#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/b64.h"
#include "crypto/cert.h"
#include "crypto/jwe.h"
#include "crypto/sd.h"

#define NK 11 /* 10 custodians + the exchange key (index 10) */
static struct mh_cert *certs[NK];
static EVP_PKEY *keys[NK];
static struct mh_sd_wrapping_key wk[NK];

static struct mh_secret root_secret, extra;
static struct mh_sd_item items[2];

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < NK; i++) {
        if (tu_sh("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=c%d -days 30 "
                  "-keyout c%d.key -out c%d.pem",
                  tu_tmpdir(), i, i, i) != 0)
            return -1;
        char name[32];
        struct mh_buf b = {0};
        snprintf(name, sizeof name, "c%d.pem", i);
        tu_read_tmp(name, &b);
        if (mh_cert_from_pem(b.data, b.len, &certs[i]) != 0)
            return -1;
        mh_buf_free(&b);
        snprintf(name, sizeof name, "c%d.key", i);
        tu_read_tmp(name, &b);
        if (mh_cert_private_key_from_pem(b.data, b.len, NULL, &keys[i]) != 0)
            return -1;
        mh_buf_free(&b);
        wk[i] = (struct mh_sd_wrapping_key){certs[i], keys[i]};
    }
    if (mh_secret_alloc(&root_secret, 32) != 0 || mh_secret_alloc(&extra, 100) != 0)
        return -1;
    for (int i = 0; i < 32; i++)
        root_secret.data[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 100; i++)
        extra.data[i] = (uint8_t)i;
    items[0] = (struct mh_sd_item){"sd-root", 7, &root_secret};
    items[1] = (struct mh_sd_item){"extra", 5, &extra};
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NK; i++) {
        mh_cert_free(certs[i]);
        EVP_PKEY_free(keys[i]);
    }
    mh_secret_free(&root_secret);
    mh_secret_free(&extra);
    return 0;
}

static void build(size_t n, unsigned m, struct mh_buf *out)
{
    assert_int_equal(mh_sd_build(items, 2, (const struct mh_cert *const *)certs, n, m, out), 0);
}

static void check_items(const struct mh_sd_items *it)
{
    assert_int_equal(it->n, 2);
    assert_string_equal(it->v[0].tag, "sd-root");
    assert_int_equal(it->v[0].tag_len, 7);
    assert_int_equal(it->v[0].value.len, 32);
    assert_memory_equal(it->v[0].value.data, root_secret.data, 32);
    assert_string_equal(it->v[1].tag, "extra");
    assert_int_equal(it->v[1].value.len, 100);
    assert_memory_equal(it->v[1].value.data, extra.data, 100);
}

static int recover_with(const struct mh_buf *sd, const unsigned *idx, size_t n)
{
    struct mh_sd_wrapping_key k[NK];
    for (size_t i = 0; i < n; i++)
        k[i] = wk[idx[i]];
    struct mh_sd_items it;
    struct mh_secret master;
    int rv = mh_sd_recover((const char *)sd->data, sd->len, k, n, &it, &master);
    if (rv == 0) {
        check_items(&it);
        assert_int_equal(master.len, 32);
        mh_sd_items_free(&it);
        mh_secret_free(&master);
    } else {
        assert_int_equal(it.n, 0);
        assert_null(master.data);
    }
    return rv;
}

static void test_format(void **state)
{
    (void)state;
    struct mh_buf sd = {0};
    build(3, 2, &sd);
    const char *s = (const char *)sd.data;
    /* member order as the format shows it */
    assert_true(strncmp(s, "{\"EncData\":{\"data\":[{\"compact_jwe\":\"", 36) == 0);
    assert_non_null(strstr(s, "\",\"tag\":\"sd-root\"},{\"compact_jwe\":\""));
    assert_non_null(strstr(s, "\",\"tag\":\"extra\"}],\"kdf\":\"sp108_kdf\"},\"SharedKeys\":{\"enc_"
                              "shares\":[{\"enc_key\":\""));
    const char *tail = "],\"required\":2,\"key_algorithm\":\"shamir_share\"}}";
    assert_true(sd.len > strlen(tail));
    assert_string_equal(s + sd.len - strlen(tail), tail);
    /* each share carries its certificate's thumbprint, in order */
    json_error_t e;
    json_t *r = json_loadb(s, sd.len, 0, &e);
    assert_non_null(r);
    json_t *sh = json_object_get(json_object_get(r, "SharedKeys"), "enc_shares");
    assert_int_equal(json_array_size(sh), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *x = json_object_get(json_array_get(sh, i), "x5t_256");
        assert_string_equal(json_string_value(x), mh_cert_x5t_s256(certs[i]));
        /* the share is a 64-byte packed array for x = i + 1 */
        json_t *ek = json_object_get(json_array_get(sh, i), "enc_key");
        struct mh_secret pt = {0};
        assert_int_equal(
            mh_jwe_decrypt_rsa(json_string_value(ek), json_string_length(ek), keys[i], &pt), 0);
        assert_int_equal(pt.len, 64);
        for (size_t j = 0; j < 32; j++)
            assert_int_equal((pt.data[2 * j] | pt.data[2 * j + 1] << 8) >> 9, i + 1);
        mh_secret_free(&pt);
    }
    json_decref(r);
    mh_buf_free(&sd);
}

static void test_recover_n3(void **state)
{
    (void)state;
    for (unsigned m = 2; m <= 3; m++) {
        struct mh_buf sd = {0};
        build(3, m, &sd);
        static const unsigned pairs[3][2] = {{0, 1}, {0, 2}, {2, 1}};
        static const unsigned all[3] = {1, 2, 0};
        for (int p = 0; p < 3; p++)
            assert_int_equal(recover_with(&sd, pairs[p], 2), m == 2 ? 0 : MH_ESHARES);
        assert_int_equal(recover_with(&sd, all, 3), 0);
        for (unsigned i = 0; i < 3; i++)
            assert_int_equal(recover_with(&sd, &i, 1), MH_ESHARES);
        assert_int_equal(recover_with(&sd, NULL, 0), MH_ESHARES);
        /* a key given twice counts once */
        static const unsigned twice[2] = {1, 1};
        assert_int_equal(recover_with(&sd, twice, 2), MH_ESHARES);
        mh_buf_free(&sd);
    }
}

static void test_recover_larger(void **state)
{
    (void)state;
    struct mh_buf sd = {0};
    build(5, 3, &sd);
    /* every 3-subset of 5 */
    for (unsigned a = 0; a < 5; a++)
        for (unsigned b = a + 1; b < 5; b++)
            for (unsigned c = b + 1; c < 5; c++) {
                unsigned idx[3] = {c, a, b};
                assert_int_equal(recover_with(&sd, idx, 3), 0);
                assert_int_equal(recover_with(&sd, idx, 2), MH_ESHARES);
            }
    mh_buf_free(&sd);

    build(10, 10, &sd);
    unsigned all[10] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    assert_int_equal(recover_with(&sd, all, 10), 0);
    assert_int_equal(recover_with(&sd, all, 9), MH_ESHARES);
    mh_buf_free(&sd);

    build(10, 4, &sd);
    static const unsigned sets[3][4] = {{0, 1, 2, 3}, {9, 5, 2, 7}, {4, 6, 8, 1}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(recover_with(&sd, sets[i], 4), 0);
        assert_int_equal(recover_with(&sd, sets[i], 3), MH_ESHARES);
    }
    mh_buf_free(&sd);
}

static void test_key_matching(void **state)
{
    (void)state;
    struct mh_buf sd = {0};
    build(3, 2, &sd);
    /* a key whose certificate is not in the file */
    unsigned idx[3] = {0, 1, 5};
    assert_int_equal(recover_with(&sd, idx, 3), MH_ENOKEYMATCH);
    /* a certificate paired with the wrong private key */
    struct mh_sd_wrapping_key bad[2] = {{certs[0], keys[1]}, wk[1]};
    struct mh_sd_items it;
    assert_int_equal(mh_sd_recover((const char *)sd.data, sd.len, bad, 2, &it, NULL), MH_EINVAL);
    mh_buf_free(&sd);
}

/* Replace one character in the middle of part |part| of share |s|'s JWE. */
static void tamper_share(struct mh_buf *sd, size_t s, int part)
{
    json_error_t e;
    json_t *r = json_loadb((const char *)sd->data, sd->len, 0, &e);
    assert_non_null(r);
    json_t *o = json_array_get(json_object_get(json_object_get(r, "SharedKeys"), "enc_shares"), s);
    char *j = strdup(json_string_value(json_object_get(o, "enc_key")));
    size_t n = strlen(j), k = 0, start = 0, end = n;
    for (size_t i = 0; i < n; i++)
        if (j[i] == '.') {
            k++;
            if ((int)k == part)
                start = i + 1;
            if ((int)k == part + 1) {
                end = i;
                break;
            }
        }
    size_t at = start + (end - start) / 2;
    j[at] = j[at] == 'A' ? 'B' : 'A';
    json_object_set_new(o, "enc_key", json_string(j));
    free(j);
    mh_buf_free(sd);
    char *out = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_int_equal(mh_buf_append_str(sd, out), 0);
    free(out);
    json_decref(r);
}

static void test_tampered_share(void **state)
{
    (void)state;
    struct mh_buf sd = {0};
    build(3, 2, &sd);
    tamper_share(&sd, 0, 3); /* ciphertext of share 0 */
    unsigned idx[2] = {0, 1};
    assert_int_equal(recover_with(&sd, idx, 2), MH_EAUTH);
    /* shares 1 and 2 are intact */
    unsigned idx2[2] = {1, 2};
    assert_int_equal(recover_with(&sd, idx2, 2), 0);
    tamper_share(&sd, 1, 4); /* tag */
    assert_int_equal(recover_with(&sd, idx2, 2), MH_EAUTH);
    tamper_share(&sd, 2, 1); /* RSA-wrapped CEK */
    unsigned idx3[1] = {2};
    assert_int_equal(recover_with(&sd, idx3, 1), MH_EDECRYPT);
    mh_buf_free(&sd);
}

static void test_password_protected_key(void **state)
{
    (void)state;
    assert_int_equal(tu_sh("cd %s && openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:pw -in "
                           "c1.key -out c1enc.key",
                           tu_tmpdir()),
                     0);
    struct mh_buf b = {0}, sd = {0};
    tu_read_tmp("c1enc.key", &b);
    EVP_PKEY *pk = NULL;
    assert_int_equal(mh_cert_private_key_from_pem(b.data, b.len, NULL, &pk), MH_EPEM);
    assert_null(pk);
    struct mh_secret pw = {0};
    assert_int_equal(mh_secret_dup(&pw, "pw", 2), 0);
    assert_int_equal(mh_cert_private_key_from_pem(b.data, b.len, &pw, &pk), 0);
    build(3, 2, &sd);
    struct mh_sd_wrapping_key k[2] = {wk[0], {certs[1], pk}};
    struct mh_sd_items it;
    assert_int_equal(mh_sd_recover((const char *)sd.data, sd.len, k, 2, &it, NULL), 0);
    check_items(&it);
    mh_sd_items_free(&it);
    EVP_PKEY_free(pk);
    mh_secret_free(&pw);
    mh_buf_free(&b);
    mh_buf_free(&sd);
}

static void test_build_limits(void **state)
{
    (void)state;
    struct mh_buf sd = {0};
    const struct mh_cert *const *c = (const struct mh_cert *const *)certs;
    assert_int_equal(mh_sd_build(items, 2, c, 2, 2, &sd), MH_EQUORUM);
    assert_int_equal(mh_sd_build(items, 2, c, 11, 2, &sd), MH_EQUORUM);
    assert_int_equal(mh_sd_build(items, 2, c, 3, 1, &sd), MH_EQUORUM);
    assert_int_equal(mh_sd_build(items, 2, c, 10, 11, &sd), MH_EQUORUM);
    assert_int_equal(mh_sd_build(items, 2, c, 3, 4, &sd), MH_EQUORUM);
    assert_int_equal(mh_sd_build(items, 2, c, 0, 0, &sd), MH_EQUORUM);
    const struct mh_cert *dup[3] = {certs[0], certs[1], certs[0]};
    assert_int_equal(mh_sd_build(items, 2, dup, 3, 2, &sd), MH_EQUORUM);
    assert_int_equal(mh_sd_build(items, 0, c, 3, 2, &sd), MH_EINVAL);
    struct mh_sd_item twice[2] = {items[0], items[0]};
    assert_int_equal(mh_sd_build(twice, 2, c, 3, 2, &sd), MH_EINVAL);
    struct mh_sd_item notutf8 = {"\xff", 1, &extra};
    assert_int_equal(mh_sd_build(&notutf8, 1, c, 3, 2, &sd), MH_EINVAL);
    assert_int_equal(sd.len, 0);
    /* the whole 3..10 / 2..N range builds */
    assert_int_equal(mh_sd_build(items, 2, c, 10, 2, &sd), 0);
    mh_buf_free(&sd);
}

static void test_restore_blob(void **state)
{
    (void)state;
    struct mh_buf sd = {0}, blob = {0};
    build(3, 2, &sd);
    struct mh_sd_wrapping_key k[2] = {wk[2], wk[0]};
    assert_int_equal(mh_sd_restore_blob((const char *)sd.data, sd.len, k, 2, certs[10], &blob), 0);
    const char *s = (const char *)blob.data;
    assert_true(strncmp(s, "{\"EncData\":{\"data\":[{\"compact_jwe\":\"", 36) == 0);
    assert_non_null(strstr(s, "\"kdf\":\"sp108_kdf\"},\"WrappedKey\":{\"enc_key\":\""));
    char tail[128];
    snprintf(tail, sizeof tail, "\",\"x5t_256\":\"%s\"}}", mh_cert_x5t_s256(certs[10]));
    assert_string_equal(s + blob.len - strlen(tail), tail);
    assert_null(strstr(s, "SharedKeys"));

    struct mh_sd_items it;
    assert_int_equal(mh_sd_open_restore_blob(s, blob.len, certs[10], keys[10], &it), 0);
    check_items(&it);
    mh_sd_items_free(&it);
    /* a different exchange key: thumbprint mismatch */
    assert_int_equal(mh_sd_open_restore_blob(s, blob.len, certs[0], keys[0], &it), MH_ENOKEYMATCH);
    /* cert and key that do not belong together */
    assert_int_equal(mh_sd_open_restore_blob(s, blob.len, certs[10], keys[0], &it), MH_EINVAL);
    /* a blob is not an SD file and vice versa */
    assert_int_equal(mh_sd_recover(s, blob.len, k, 2, &it, NULL), MH_ESDFILE);
    assert_int_equal(
        mh_sd_open_restore_blob((const char *)sd.data, sd.len, certs[10], keys[10], &it),
        MH_ESDFILE);
    /* not enough keys for the restore blob */
    struct mh_buf b2 = {0};
    assert_int_equal(mh_sd_restore_blob((const char *)sd.data, sd.len, k, 1, certs[10], &b2),
                     MH_ESHARES);
    assert_int_equal(b2.len, 0);

    /* the blob's items are re-encrypted under a fresh master key: the data
     * JWEs differ from the SD file's */
    json_error_t e;
    json_t *a = json_loadb((const char *)sd.data, sd.len, 0, &e),
           *b = json_loadb(s, blob.len, 0, &e);
    json_t *ja = json_object_get(
        json_array_get(json_object_get(json_object_get(a, "EncData"), "data"), 0), "compact_jwe");
    json_t *jb = json_object_get(
        json_array_get(json_object_get(json_object_get(b, "EncData"), "data"), 0), "compact_jwe");
    assert_string_not_equal(json_string_value(ja), json_string_value(jb));
    json_decref(a);
    json_decref(b);
    mh_buf_free(&sd);
    mh_buf_free(&blob);
}

/* ---- adversarial SD JSON ---- */

static struct mh_buf good_sd;

static int recover_json(const char *s, size_t n)
{
    struct mh_sd_items it;
    int rv = mh_sd_recover(s, n, wk, 3, &it, NULL);
    if (rv == 0)
        mh_sd_items_free(&it);
    assert_int_equal(it.n, 0);
    return rv;
}

typedef void (*mutator)(json_t *root);

static int recover_mutated(mutator f)
{
    json_error_t e;
    json_t *r = json_loadb((const char *)good_sd.data, good_sd.len, 0, &e);
    assert_non_null(r);
    f(r);
    char *s = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(s);
    int rv = recover_json(s, strlen(s));
    free(s);
    json_decref(r);
    return rv;
}

static json_t *enc(json_t *r)
{
    return json_object_get(r, "EncData");
}
static json_t *shk(json_t *r)
{
    return json_object_get(r, "SharedKeys");
}
static json_t *datum(json_t *r)
{
    return json_array_get(json_object_get(enc(r), "data"), 0);
}
static json_t *share(json_t *r)
{
    return json_array_get(json_object_get(shk(r), "enc_shares"), 0);
}

/* Every field, replaced by each wrong type, and deleted. */
static void test_wrong_types(void **state)
{
    (void)state;
    struct {
        json_t *(*parent)(json_t *);
        const char *key;
    } fields[] = {
        {NULL, "EncData"},      {NULL, "SharedKeys"}, {enc, "data"},       {enc, "kdf"},
        {datum, "compact_jwe"}, {datum, "tag"},       {shk, "enc_shares"}, {shk, "required"},
        {shk, "key_algorithm"}, {share, "enc_key"},   {share, "x5t_256"},
    };
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        for (int t = 0; t < 6; t++) {
            json_error_t e;
            json_t *r = json_loadb((const char *)good_sd.data, good_sd.len, 0, &e);
            json_t *p = fields[f].parent ? fields[f].parent(r) : r;
            json_t *v = NULL;
            switch (t) {
            case 0:
                v = json_integer(2);
                break;
            case 1:
                v = json_string("x");
                break;
            case 2:
                v = json_array();
                break;
            case 3:
                v = json_object();
                break;
            case 4:
                v = json_null();
                break;
            default:
                v = NULL;
                break; /* delete */
            }
            if (v == NULL)
                json_object_del(p, fields[f].key);
            else
                json_object_set_new(p, fields[f].key, v);
            char *s = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
            int rv = recover_json(s, strlen(s));
            /* "required": 2 is the right value and type; any string for
             * compact_jwe/enc_key parses as JSON and fails in the JWE layer,
             * another tag string derives another CEK and fails on the tag */
            if (!(strcmp(fields[f].key, "required") == 0 && t == 0)) {
                if (rv == 0 ||
                    (rv != MH_ESDFILE && rv != MH_EJWE && rv != MH_EBASE64 && rv != MH_EAUTH))
                    fail_msg("field %s type %d: %s", fields[f].key, t, mh_errname(rv));
                if (t != 1 ||
                    (strcmp(fields[f].key, "compact_jwe") != 0 &&
                     strcmp(fields[f].key, "enc_key") != 0 && strcmp(fields[f].key, "tag") != 0))
                    assert_int_equal(rv, MH_ESDFILE);
            } else {
                assert_int_equal(rv, 0);
            }
            free(s);
            json_decref(r);
        }
    }
}

static void m_kdf(json_t *r)
{
    json_object_set_new(enc(r), "kdf", json_string("sp800_108"));
}
static void m_alg(json_t *r)
{
    json_object_set_new(shk(r), "key_algorithm", json_string("shamir"));
}
static void m_req1(json_t *r)
{
    json_object_set_new(shk(r), "required", json_integer(1));
}
static void m_req11(json_t *r)
{
    json_object_set_new(shk(r), "required", json_integer(11));
}
static void m_req4(json_t *r)
{
    json_object_set_new(shk(r), "required", json_integer(4));
}
static void m_reqneg(json_t *r)
{
    json_object_set_new(shk(r), "required", json_integer(-2));
}
static void m_reqreal(json_t *r)
{
    json_object_set_new(shk(r), "required", json_real(2.0));
}
static void m_reqstr(json_t *r)
{
    json_object_set_new(shk(r), "required", json_string("2"));
}
static void m_11shares(json_t *r)
{
    json_t *a = json_object_get(shk(r), "enc_shares");
    while (json_array_size(a) < 11)
        json_array_append(a, json_array_get(a, 0));
}
static void m_noshares(json_t *r)
{
    json_array_clear(json_object_get(shk(r), "enc_shares"));
}
static void m_nodata(json_t *r)
{
    json_array_clear(json_object_get(enc(r), "data"));
}
static void m_x5t_b64(json_t *r)
{
    json_object_set_new(share(r), "x5t_256",
                        json_string("+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
}
static void m_x5t_len(json_t *r)
{
    json_object_set_new(share(r), "x5t_256", json_string("AAAA"));
}
static void m_tag_empty(json_t *r)
{
    json_object_set_new(datum(r), "tag", json_string(""));
}
static void m_jwe_empty(json_t *r)
{
    json_object_set_new(datum(r), "compact_jwe", json_string(""));
}
static void m_datum_notobj(json_t *r)
{
    json_array_set_new(json_object_get(enc(r), "data"), 0, json_string("x"));
}
static void m_share_notobj(json_t *r)
{
    json_array_set_new(json_object_get(shk(r), "enc_shares"), 0, json_integer(1));
}
/* values the JWE layer catches once the shares open */
static void m_jwe_b64(json_t *r)
{
    json_object_set_new(datum(r), "compact_jwe", json_string("a.b.c.d.e+"));
}
static void m_tag_other(json_t *r)
{
    json_object_set_new(datum(r), "tag", json_string("sd-roo7"));
}
static void m_extra_member(json_t *r)
{
    json_object_set_new(r, "version", json_string("1.0"));
}

static void test_bad_values(void **state)
{
    (void)state;
    struct {
        mutator f;
        int want;
    } cases[] = {
        {m_kdf, MH_ESDFILE},
        {m_alg, MH_ESDFILE},
        {m_req1, MH_ESDFILE},
        {m_req11, MH_ESDFILE},
        {m_req4, MH_ESDFILE},
        {m_reqneg, MH_ESDFILE},
        {m_reqreal, MH_ESDFILE},
        {m_reqstr, MH_ESDFILE},
        {m_11shares, MH_ESDFILE},
        {m_noshares, MH_ESDFILE},
        {m_nodata, MH_ESDFILE},
        {m_x5t_b64, MH_ESDFILE},
        {m_x5t_len, MH_ESDFILE},
        {m_tag_empty, MH_ESDFILE},
        {m_jwe_empty, MH_ESDFILE},
        {m_datum_notobj, MH_ESDFILE},
        {m_share_notobj, MH_ESDFILE},
        {m_jwe_b64, MH_EBASE64},
        /* a different tag derives a different CEK: the item's tag fails */
        {m_tag_other, MH_EAUTH},
        /* unknown members are tolerated */
        {m_extra_member, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rv = recover_mutated(cases[i].f);
        if (rv != cases[i].want)
            fail_msg("case %zu: got %s want %s", i, mh_errname(rv), mh_errname(cases[i].want));
    }
}

static void test_garbage(void **state)
{
    (void)state;
    /* every truncation: JSON error or, never, success */
    for (size_t n = 0; n < good_sd.len; n++) {
        int rv = recover_json((const char *)good_sd.data, n);
        if (rv != MH_EJSON && rv != MH_ESDFILE)
            fail_msg("truncated at %zu: %s", n, mh_errname(rv));
    }
    assert_int_equal(recover_json("\x00\xff\xfe garbage", 12), MH_EJSON);
    assert_int_equal(recover_json("[]", 2), MH_ESDFILE);
    assert_int_equal(recover_json("\"EncData\"", 9),
                     MH_EJSON); /* jansson: top level must be a container */
    assert_int_equal(recover_json("{}", 2), MH_ESDFILE);
    assert_int_equal(recover_json("{\"EncData\":1,\"EncData\":2}", 25), MH_EJSON);
    /* trailing data after the object */
    struct mh_buf c = {0};
    assert_int_equal(mh_buf_append(&c, good_sd.data, good_sd.len), 0);
    assert_int_equal(mh_buf_append_str(&c, "{}"), 0);
    assert_int_equal(recover_json((const char *)c.data, c.len), MH_EJSON);
    mh_buf_free(&c);
    /* random byte flips never crash and never succeed silently with
     * different data: either an error or the exact items */
    srand(1);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(mh_buf_append(&c, good_sd.data, good_sd.len), 0);
        size_t at = (size_t)rand() % c.len;
        c.data[at] = (uint8_t)(c.data[at] ^ (1u << (rand() % 8)));
        struct mh_sd_items it;
        int rv = mh_sd_recover((const char *)c.data, c.len, wk, 3, &it, NULL);
        if (rv == 0) {
            check_items(&it);
            mh_sd_items_free(&it);
        }
        mh_buf_free(&c);
    }
    /* oversized */
    size_t n = (size_t)MH_SD_MAX_FILE + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    assert_int_equal(recover_json(big, n), MH_ESDFILE);
    free(big);
}

static int setup_good(void **state)
{
    (void)state;
    return mh_sd_build(items, 2, (const struct mh_cert *const *)certs, 3, 2, &good_sd);
}

static int teardown_good(void **state)
{
    (void)state;
    mh_buf_free(&good_sd);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_recover_n3),
        cmocka_unit_test(test_recover_larger),
        cmocka_unit_test(test_key_matching),
        cmocka_unit_test(test_tampered_share),
        cmocka_unit_test(test_password_protected_key),
        cmocka_unit_test(test_build_limits),
        cmocka_unit_test(test_restore_blob),
        cmocka_unit_test_setup_teardown(test_wrong_types, setup_good, teardown_good),
        cmocka_unit_test_setup_teardown(test_bad_values, setup_good, teardown_good),
        cmocka_unit_test_setup_teardown(test_garbage, setup_good, teardown_good),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
