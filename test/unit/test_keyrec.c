#include "testutil.h"

#include <string.h>

#include "crypto/alg.h"
#include "crypto/key.h"
#include "node/keyrec.h"

static void test_names(void **state)
{
    (void)state;
    char longest[MH_KEY_NAME_MAX + 2];
    memset(longest, 'a', sizeof longest);
    longest[MH_KEY_NAME_MAX] = '\0';
    assert_true(mh_keyrec_name_ok("a"));
    assert_true(mh_keyrec_name_ok("Key-1-z"));
    assert_true(mh_keyrec_name_ok(longest));
    longest[MH_KEY_NAME_MAX] = 'a';
    longest[MH_KEY_NAME_MAX + 1] = '\0';
    assert_false(mh_keyrec_name_ok(longest)); /* 128 */
    assert_false(mh_keyrec_name_ok(""));
    assert_false(mh_keyrec_name_ok("a_b"));
    assert_false(mh_keyrec_name_ok("a b"));
    assert_false(mh_keyrec_name_ok("a/b"));
    assert_false(mh_keyrec_name_ok("\xc3\xa9"));
    assert_true(mh_keyrec_version_ok("0123456789abcdef0123456789abcdef"));
    assert_false(mh_keyrec_version_ok("0123456789ABCDEF0123456789abcdef"));
    assert_false(mh_keyrec_version_ok("0123456789abcdef0123456789abcde"));
    assert_false(mh_keyrec_version_ok("0123456789abcdef0123456789abcdef0"));
    char v[MH_VERSION_LEN + 1], w[MH_VERSION_LEN + 1];
    assert_int_equal(mh_keyrec_new_version(v), 0);
    assert_int_equal(mh_keyrec_new_version(w), 0);
    assert_true(mh_keyrec_version_ok(v));
    assert_string_not_equal(v, w);
}

static void test_tags(void **state)
{
    (void)state;
    const char *why = NULL;
    char *k[16], *v[16];
    char names[16][8];
    for (int i = 0; i < 16; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        k[i] = names[i];
        v[i] = (char *)"value";
    }
    assert_int_equal(mh_keyrec_check_tags(15, k, v, &why), 0);
    assert_int_equal(mh_keyrec_check_tags(16, k, v, &why), MH_ELIMIT);
    char big[300];
    memset(big, 'x', sizeof big);
    big[256] = '\0';
    v[0] = big;
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), 0); /* 256 characters is allowed */
    big[256] = 'x';
    big[257] = '\0';
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), MH_EINVAL);
    /* 256 two-byte characters: counted in characters, not bytes */
    char wide[600];
    for (int i = 0; i < 256; i++) {
        wide[2 * i] = (char)0xc3;
        wide[2 * i + 1] = (char)0xa9;
    }
    wide[512] = '\0';
    v[0] = wide;
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), 0);
    v[0] = (char *)"bad\xff";
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), MH_EINVAL);
    v[0] = (char *)"ctl\x01";
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), MH_EINVAL);
    v[0] = (char *)"\xc0\xaf"; /* overlong '/' */
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), MH_EINVAL);
    v[0] = (char *)"\xed\xa0\x80"; /* surrogate */
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), MH_EINVAL);
    v[0] = (char *)"";
    k[0] = (char *)"";
    assert_int_equal(mh_keyrec_check_tags(1, k, v, &why), MH_EINVAL); /* empty name */
    k[0] = (char *)"same";
    k[1] = (char *)"same";
    v[1] = (char *)"";
    assert_int_equal(mh_keyrec_check_tags(2, k, v, &why), MH_EINVAL);
}

static void test_ops(void **state)
{
    (void)state;
    const char *why = NULL;
    unsigned bits = 0;
    char *ops[] = {(char *)"sign", (char *)"verify"};
    assert_int_equal(mh_keyrec_parse_ops(MH_KTY_EC, 2, ops, &bits, &why), 0);
    assert_int_equal(bits, MH_OP_SIGN | MH_OP_VERIFY);
    char *enc[] = {(char *)"encrypt"};
    assert_int_equal(mh_keyrec_parse_ops(MH_KTY_EC, 1, enc, &bits, &why), MH_EALGKEY);
    assert_int_equal(mh_keyrec_parse_ops(MH_KTY_RSA, 1, enc, &bits, &why), 0);
    char *sign[] = {(char *)"sign"};
    assert_int_equal(mh_keyrec_parse_ops(MH_KTY_OCT, 1, sign, &bits, &why), MH_EALGKEY);
    char *dup[] = {(char *)"sign", (char *)"sign"};
    assert_int_equal(mh_keyrec_parse_ops(MH_KTY_RSA, 2, dup, &bits, &why), MH_EINVAL);
    char *unknown[] = {(char *)"Sign"};
    assert_int_equal(mh_keyrec_parse_ops(MH_KTY_RSA, 1, unknown, &bits, &why), MH_EINVAL);
    char *exp[] = {(char *)"export"};
    assert_int_equal(mh_keyrec_parse_ops(MH_KTY_RSA, 1, exp, &bits, &why), MH_EUNSUPPORTED);
}

static void test_usable(void **state)
{
    (void)state;
    Mhsm__Internal__KeyVersionRecord rec = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    char *ops[] = {(char *)"sign", (char *)"verify", (char *)"decrypt", (char *)"encrypt"};
    rec.key_ops = ops;
    rec.n_key_ops = 2;
    rec.enabled = true;
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_SIGN, 1000), 0);
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_DECRYPT, 1000), MH_EKEYOPS);
    rec.enabled = false;
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_SIGN, 1000), MH_EDISABLED);
    rec.enabled = true;
    rec.not_before = 2000;
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_VERIFY, 1999), MH_ENOTYET);
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_VERIFY, 2000), 0);
    rec.expires = 3000;
    rec.n_key_ops = 4;
    /* after exp: no new protection (sign, encrypt), but verify and decrypt remain */
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_SIGN, 3000), MH_EEXPIRED);
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_ENCRYPT, 3001), MH_EEXPIRED);
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_VERIFY, 3001), 0);
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_DECRYPT, 3001), 0);
    assert_int_equal(mh_keyrec_usable(&rec, MH_OP_SIGN, 2999), 0);
}

/* The bundle carries the public JWK of the stored SPKI and nothing for AES. */
static void test_bundle(void **state)
{
    (void)state;
    assert_int_equal(mh_alg_init(), 0);
    struct mh_key *k = NULL;
    assert_int_equal(mh_key_generate(MH_KTY_EC, 0, MH_CURVE_P384, &k), 0);
    struct mh_buf der = {0};
    assert_int_equal(mh_key_public_der(k, &der), 0);
    Mhsm__Internal__KeyVersionRecord rec = MHSM__INTERNAL__KEY_VERSION_RECORD__INIT;
    rec.name = (char *)"k1";
    rec.version = (char *)"0123456789abcdef0123456789abcdef";
    rec.kty = MH_KTY_EC;
    rec.curve = MH_CURVE_P384;
    rec.enabled = true;
    rec.expires = 5;
    rec.public_der.data = der.data;
    rec.public_der.len = der.len;
    Mhsm__Internal__KeyVersionRecord__TagsEntry t =
        MHSM__INTERNAL__KEY_VERSION_RECORD__TAGS_ENTRY__INIT;
    t.key = (char *)"env";
    t.value = (char *)"prod";
    Mhsm__Internal__KeyVersionRecord__TagsEntry *tp = &t;
    rec.tags = &tp;
    rec.n_tags = 1;
    Mhsm__V1__KeyBundle b;
    assert_int_equal(mh_keyrec_bundle("hsm.test", 30, &rec, &b), 0);
    assert_string_equal(b.key->kid, "https://hsm.test/keys/k1/0123456789abcdef0123456789abcdef");
    assert_string_equal(b.key->kty, "EC-HSM");
    assert_string_equal(b.key->crv, "P-384");
    assert_int_equal(b.key->x.len, 48);
    assert_int_equal(b.key->y.len, 48);
    assert_int_equal(b.key->n.len, 0);
    assert_non_null(b.attributes->expires);
    assert_int_equal(b.attributes->expires->value, 5);
    assert_null(b.attributes->not_before);
    assert_int_equal(b.attributes->recoverable_days, 30);
    assert_string_equal(b.attributes->recovery_level, "CustomizedRecoverable+Purgeable");
    assert_int_equal(b.n_tags, 1);
    assert_string_equal(b.tags[0]->value, "prod");
    /* the bundle packs and unpacks as a valid message */
    size_t len = protobuf_c_message_get_packed_size(&b.base);
    uint8_t *buf = malloc(len);
    protobuf_c_message_pack(&b.base, buf);
    Mhsm__V1__KeyBundle *u = mhsm__v1__key_bundle__unpack(NULL, len, buf);
    assert_non_null(u);
    assert_memory_equal(u->key->x.data, b.key->x.data, 48);
    mhsm__v1__key_bundle__free_unpacked(u, NULL);
    free(buf);
    mh_keyrec_bundle_clear(&b);

    rec.kty = MH_KTY_OCT;
    rec.public_der.len = 0;
    assert_int_equal(mh_keyrec_bundle("hsm.test", 90, &rec, &b), 0);
    assert_string_equal(b.key->kty, "oct-HSM");
    assert_int_equal(b.key->x.len + b.key->n.len + b.key->e.len, 0);
    assert_string_equal(b.key->crv, "");
    assert_string_equal(b.attributes->recovery_level, "Recoverable+Purgeable");
    mh_keyrec_bundle_clear(&b);

    /* a corrupt SPKI is reported, not crashed on */
    rec.kty = MH_KTY_RSA;
    der.data[der.len / 2] ^= 0xff;
    rec.public_der.len = der.len / 2;
    assert_int_equal(mh_keyrec_bundle("hsm.test", 90, &rec, &b), MH_ECORRUPT);
    mh_buf_free(&der);
    mh_key_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),  cmocka_unit_test(test_tags),   cmocka_unit_test(test_ops),
        cmocka_unit_test(test_usable), cmocka_unit_test(test_bundle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
