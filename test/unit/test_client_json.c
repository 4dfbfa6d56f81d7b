#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/json_out.h"

/* proto fields are char *; the literals here are never written through them. */
#define S(lit) ((char *)(lit))

/* Renders |j| with mh_json_out_print into a malloc'ed string. */
static char *render(const json_t *j, bool table)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(mh_json_out_print(j, table, f), 0);
    fclose(f);
    return text;
}

static void expect_json(const json_t *j, const char *want)
{
    json_error_t e;
    json_t *w = json_loads(want, 0, &e);
    assert_non_null(w);
    if (!json_equal((json_t *)j, w)) {
        char *got = json_dumps(j, JSON_SORT_KEYS);
        fail_msg("got %s\nwant %s", got, want);
    }
    json_decref(w);
}

static void test_rsa_bundle(void **state)
{
    (void)state;
    static uint8_t N[] = {0xc0, 0xff, 0xee};
    static uint8_t E[] = {1, 0, 1};
    char *ops[] = {S("sign"), S("verify")};
    Mhsm__V1__JsonWebKey k = MHSM__V1__JSON_WEB_KEY__INIT;
    k.kid = S("https://hsm/keys/r/1");
    k.kty = S("RSA-HSM");
    k.n_key_ops = 2;
    k.key_ops = ops;
    k.n.data = N;
    k.n.len = sizeof N;
    k.e.data = E;
    k.e.len = sizeof E;
    Mhsm__V1__OptBool en = MHSM__V1__OPT_BOOL__INIT, ex = MHSM__V1__OPT_BOOL__INIT;
    en.value = 1;
    Mhsm__V1__OptInt64 nbf = MHSM__V1__OPT_INT64__INIT;
    nbf.value = 0; /* present and zero: still rendered */
    Mhsm__V1__KeyAttributes a = MHSM__V1__KEY_ATTRIBUTES__INIT;
    a.enabled = &en;
    a.exportable = &ex;
    a.not_before = &nbf;
    a.created = 10;
    a.updated = 11;
    a.recoverable_days = 90;
    a.recovery_level = S("Recoverable+Purgeable");
    Mhsm__V1__KeyBundle__TagsEntry t1 = MHSM__V1__KEY_BUNDLE__TAGS_ENTRY__INIT;
    t1.key = S("env");
    t1.value = S("prod");
    Mhsm__V1__KeyBundle__TagsEntry *tags[] = {&t1};
    Mhsm__V1__KeyBundle kb = MHSM__V1__KEY_BUNDLE__INIT;
    kb.key = &k;
    kb.attributes = &a;
    kb.n_tags = 1;
    kb.tags = tags;
    json_t *j = NULL;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), 0);
    expect_json(j, "{\"key\":{\"kid\":\"https://hsm/keys/r/1\",\"kty\":\"RSA-HSM\","
                   "\"key_ops\":[\"sign\",\"verify\"],\"n\":\"wP_u\",\"e\":\"AQAB\"},"
                   "\"attributes\":{\"enabled\":true,\"exportable\":false,\"nbf\":0,"
                   "\"created\":10,\"updated\":11,\"recoverableDays\":90,"
                   "\"recoveryLevel\":\"Recoverable+Purgeable\"},\"tags\":{\"env\":\"prod\"}}");
    char *text = render(j, false);
    /* two-space indent, sorted keys, trailing newline */
    assert_true(strncmp(text, "{\n  \"attributes\": {\n    \"created\": 10,", 38) == 0);
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);
    text = render(j, true);
    assert_non_null(strstr(text, "key.n                       wP_u\n"));
    assert_non_null(strstr(text, "key.key_ops                 sign,verify\n"));
    assert_non_null(strstr(text, "tags.env                    prod\n"));
    assert_true(strncmp(text, "attributes.created", 18) == 0); /* sorted */
    free(text);
    json_decref(j);

    /* The deleted form adds three members at the top level. */
    Mhsm__V1__DeletedKeyBundle d = MHSM__V1__DELETED_KEY_BUNDLE__INIT;
    d.key = &kb;
    d.recovery_id = S("https://hsm/deletedkeys/r");
    d.deleted_date = 100;
    d.scheduled_purge_date = 200;
    assert_int_equal(mh_json_out_deleted_key_bundle(&d, &j), 0);
    assert_string_equal(json_string_value(json_object_get(j, "recoveryId")),
                        "https://hsm/deletedkeys/r");
    assert_int_equal(json_integer_value(json_object_get(j, "deletedDate")), 100);
    assert_int_equal(json_integer_value(json_object_get(j, "scheduledPurgeDate")), 200);
    assert_non_null(json_object_get(j, "key"));
    json_decref(j);
}

static void test_ec_and_oct_bundles(void **state)
{
    (void)state;
    static uint8_t X[] = {1, 2}, Y[] = {3};
    Mhsm__V1__JsonWebKey k = MHSM__V1__JSON_WEB_KEY__INIT;
    k.kid = S("k");
    k.kty = S("EC-HSM");
    k.crv = S("P-256K");
    k.x.data = X;
    k.x.len = sizeof X;
    k.y.data = Y;
    k.y.len = sizeof Y;
    Mhsm__V1__KeyBundle kb = MHSM__V1__KEY_BUNDLE__INIT;
    kb.key = &k;
    json_t *j = NULL;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), 0);
    expect_json(j, "{\"key\":{\"kid\":\"k\",\"kty\":\"EC-HSM\",\"key_ops\":[],\"crv\":\"P-256K\","
                   "\"x\":\"AQI\",\"y\":\"Aw\"},\"attributes\":{},\"tags\":{}}");
    json_decref(j);
    /* oct: no material at all; managed shows only when true */
    Mhsm__V1__JsonWebKey o = MHSM__V1__JSON_WEB_KEY__INIT;
    o.kid = S("o");
    o.kty = S("oct-HSM");
    kb.key = &o;
    kb.managed = 1;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), 0);
    expect_json(j, "{\"key\":{\"kid\":\"o\",\"kty\":\"oct-HSM\",\"key_ops\":[]},"
                   "\"attributes\":{},\"tags\":{},\"managed\":true}");
    json_decref(j);
}

static void test_items(void **state)
{
    (void)state;
    Mhsm__V1__KeyItem__TagsEntry t = MHSM__V1__KEY_ITEM__TAGS_ENTRY__INIT;
    t.key = S("a");
    t.value = S("");
    Mhsm__V1__KeyItem__TagsEntry *tags[] = {&t};
    Mhsm__V1__OptInt64 exp = MHSM__V1__OPT_INT64__INIT;
    exp.value = -5;
    Mhsm__V1__KeyAttributes a = MHSM__V1__KEY_ATTRIBUTES__INIT;
    a.expires = &exp;
    Mhsm__V1__KeyItem it = MHSM__V1__KEY_ITEM__INIT;
    it.kid = S("https://hsm/keys/x");
    it.attributes = &a;
    it.n_tags = 1;
    it.tags = tags;
    json_t *j = NULL;
    assert_int_equal(mh_json_out_key_item(&it, &j), 0);
    expect_json(j, "{\"kid\":\"https://hsm/keys/x\",\"attributes\":{\"exp\":-5},"
                   "\"tags\":{\"a\":\"\"}}");
    json_decref(j);
    Mhsm__V1__DeletedKeyItem d = MHSM__V1__DELETED_KEY_ITEM__INIT;
    d.key = &it;
    d.recovery_id = S("r");
    d.deleted_date = 1;
    d.scheduled_purge_date = 2;
    assert_int_equal(mh_json_out_deleted_key_item(&d, &j), 0);
    expect_json(j, "{\"kid\":\"https://hsm/keys/x\",\"attributes\":{\"exp\":-5},"
                   "\"tags\":{\"a\":\"\"},\"recoveryId\":\"r\",\"deletedDate\":1,"
                   "\"scheduledPurgeDate\":2}");
    /* table of an array: header + one row per item, columns sorted and aligned */
    json_t *arr = json_array();
    assert_int_equal(json_array_append(arr, j), 0);
    assert_int_equal(json_array_append(arr, j), 0);
    char *text = render(arr, true);
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_true(strncmp(text, "attributes.exp  deletedDate  kid", 32) == 0);
    assert_non_null(strstr(nl + 1, "-5              1            https://hsm/keys/x"));
    free(text);
    json_decref(arr);
    json_decref(j);
    /* an empty array renders as [] in JSON and as nothing in a table */
    arr = json_array();
    text = render(arr, false);
    assert_string_equal(text, "[]\n");
    free(text);
    text = render(arr, true);
    assert_string_equal(text, "");
    free(text);
    json_decref(arr);
}

static void test_refuses_bad_responses(void **state)
{
    (void)state;
    json_t *j = NULL;
    Mhsm__V1__KeyBundle kb = MHSM__V1__KEY_BUNDLE__INIT;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), MH_EPROTO); /* no key */
    assert_int_equal(mh_json_out_key_bundle(NULL, &j), MH_EPROTO);
    Mhsm__V1__DeletedKeyBundle d = MHSM__V1__DELETED_KEY_BUNDLE__INIT;
    assert_int_equal(mh_json_out_deleted_key_bundle(&d, &j), MH_EPROTO);
    assert_int_equal(mh_json_out_key_item(NULL, &j), MH_EPROTO);
    Mhsm__V1__DeletedKeyItem di = MHSM__V1__DELETED_KEY_ITEM__INIT;
    assert_int_equal(mh_json_out_deleted_key_item(&di, &j), MH_EPROTO);
    assert_null(j);

    /* invalid UTF-8 anywhere (kid, key_ops, crv, tag key or value) is refused whole */
    char bad[] = "k\xff";
    char *ops[] = {bad};
    Mhsm__V1__JsonWebKey k = MHSM__V1__JSON_WEB_KEY__INIT;
    kb.key = &k;
    k.kid = bad;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), MH_EPROTO);
    k.kid = S("ok");
    k.n_key_ops = 1;
    k.key_ops = ops;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), MH_EPROTO);
    k.n_key_ops = 0;
    k.crv = bad;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), MH_EPROTO);
    k.crv = S("");
    Mhsm__V1__KeyBundle__TagsEntry t = MHSM__V1__KEY_BUNDLE__TAGS_ENTRY__INIT;
    Mhsm__V1__KeyBundle__TagsEntry *tags[] = {&t};
    kb.n_tags = 1;
    kb.tags = tags;
    t.key = bad;
    t.value = S("v");
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), MH_EPROTO);
    t.key = S("k");
    t.value = bad;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), MH_EPROTO);
    Mhsm__V1__KeyAttributes a = MHSM__V1__KEY_ATTRIBUTES__INIT;
    a.recovery_level = bad;
    t.value = S("v");
    kb.attributes = &a;
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), MH_EPROTO);
    assert_null(j);
    a.recovery_level = S("Purgeable");
    assert_int_equal(mh_json_out_key_bundle(&kb, &j), 0);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_bundle),
        cmocka_unit_test(test_ec_and_oct_bundles),
        cmocka_unit_test(test_items),
        cmocka_unit_test(test_refuses_bad_responses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
