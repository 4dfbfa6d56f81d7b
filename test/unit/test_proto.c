/* The public API's protobuf messages survive a round trip through protoc-c's
 * code, and malformed bytes are refused without a crash. */
#include "testutil.h"

#include <string.h>

#include "mhsm/v1/crypto.pb-c.h"
#include "mhsm/v1/keys.pb-c.h"
#include "mhsm/v1/security_domain.pb-c.h"

static void test_create_key_roundtrip(void **state)
{
    (void)state;
    Mhsm__V1__CreateKeyRequest req = MHSM__V1__CREATE_KEY_REQUEST__INIT;
    Mhsm__V1__KeyAttributes attrs = MHSM__V1__KEY_ATTRIBUTES__INIT;
    Mhsm__V1__OptBool enabled = MHSM__V1__OPT_BOOL__INIT;
    Mhsm__V1__OptInt64 exp = MHSM__V1__OPT_INT64__INIT;
    Mhsm__V1__CreateKeyRequest__TagsEntry tag = MHSM__V1__CREATE_KEY_REQUEST__TAGS_ENTRY__INIT;
    Mhsm__V1__CreateKeyRequest__TagsEntry *tags[] = {&tag};
    char op_sign[] = "sign", op_verify[] = "verify", name[] = "key-1", kty[] = "EC-HSM";
    char crv[] = "P-256", tkey[] = "team", tval[] = "payments";
    char *ops[] = {op_sign, op_verify};
    enabled.value = 0;
    exp.value = 1900000000;
    attrs.enabled = &enabled;
    attrs.expires = &exp;
    tag.key = tkey;
    tag.value = tval;
    req.name = name;
    req.kty = kty;
    req.crv = crv;
    req.n_key_ops = 2;
    req.key_ops = ops;
    req.attributes = &attrs;
    req.n_tags = 1;
    req.tags = tags;

    size_t n = mhsm__v1__create_key_request__get_packed_size(&req);
    uint8_t buf[256];
    assert_true(n < sizeof buf);
    assert_int_equal(mhsm__v1__create_key_request__pack(&req, buf), n);

    Mhsm__V1__CreateKeyRequest *got = mhsm__v1__create_key_request__unpack(NULL, n, buf);
    assert_non_null(got);
    assert_string_equal(got->name, "key-1");
    assert_string_equal(got->kty, "EC-HSM");
    assert_string_equal(got->crv, "P-256");
    assert_int_equal(got->n_key_ops, 2);
    assert_string_equal(got->key_ops[1], "verify");
    assert_non_null(got->attributes);
    /* presence survives even for a false / default value */
    assert_non_null(got->attributes->enabled);
    assert_false(got->attributes->enabled->value);
    assert_null(got->attributes->not_before);
    assert_int_equal(got->attributes->expires->value, 1900000000);
    assert_int_equal(got->n_tags, 1);
    assert_string_equal(got->tags[0]->value, "payments");
    mhsm__v1__create_key_request__free_unpacked(got, NULL);

    /* every truncation either fails cleanly or yields a valid message */
    for (size_t cut = 0; cut < n; cut++) {
        got = mhsm__v1__create_key_request__unpack(NULL, cut, buf);
        if (got != NULL)
            mhsm__v1__create_key_request__free_unpacked(got, NULL);
    }
}

static void test_garbage_refused(void **state)
{
    (void)state;
    /* field 1 (string) declaring a length far beyond the buffer */
    static const uint8_t overlong[] = {0x0a, 0xff, 0xff, 0xff, 0x7f, 'a'};
    assert_null(mhsm__v1__sign_request__unpack(NULL, sizeof overlong, overlong));
    /* wrong wire type for a string field (varint) */
    static const uint8_t wrongtype[] = {0x08, 0x01};
    assert_null(mhsm__v1__sign_request__unpack(NULL, sizeof wrongtype, wrongtype));
    /* protobuf-c 1.4.1 does NOT check UTF-8 in proto3 strings (it accepts
     * this). The server must validate every string it uses (names by their
     * pattern, tags as UTF-8); this test pins the library behaviour so a
     * change in it is noticed. */
    static const uint8_t badutf8[] = {0x0a, 0x02, 0xc3, 0x28};
    Mhsm__V1__SignRequest *sr = mhsm__v1__sign_request__unpack(NULL, sizeof badutf8, badutf8);
    assert_non_null(sr);
    mhsm__v1__sign_request__free_unpacked(sr, NULL);
    /* a varint that never ends */
    static const uint8_t endless[] = {0x20, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_null(mhsm__v1__download_request__unpack(NULL, sizeof endless, endless));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_key_roundtrip),
        cmocka_unit_test(test_garbage_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
