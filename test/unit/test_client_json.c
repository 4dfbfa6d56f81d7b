#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/json_out.h"
#include "client/roledef.h"

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

/* ---- RBAC and audit shapes (the CLI contract the cluster tests read) -------------- */

static void test_role_definition_shape(void **state)
{
    (void)state;
    char *acts[] = {S("Microsoft.KeyVault/managedHsm/keys/*")};
    char *nacts[] = {S("Microsoft.KeyVault/managedHsm/keys/sign/action")};
    char *scopes[] = {S("/")};
    Mhsm__V1__Permission p = MHSM__V1__PERMISSION__INIT;
    p.n_data_actions = 1;
    p.data_actions = acts;
    p.n_not_data_actions = 1;
    p.not_data_actions = nacts;
    Mhsm__V1__Permission *pp[] = {&p};
    Mhsm__V1__RoleDefinition d = MHSM__V1__ROLE_DEFINITION__INIT;
    d.id = S("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
             "8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1f0");
    d.name = S("8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1f0");
    d.type = S("Microsoft.Authorization/roleDefinitions");
    d.role_name = S("keys but sign");
    d.role_type = S("CustomRole");
    d.n_permissions = 1;
    d.permissions = pp;
    d.n_assignable_scopes = 1;
    d.assignable_scopes = scopes;
    json_t *o = NULL;
    assert_int_equal(mh_json_out_role_definition(&d, &o), 0);
    expect_json(o, "{\"id\":\"Microsoft.KeyVault/providers/Microsoft.Authorization/"
                   "roleDefinitions/8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1f0\","
                   "\"name\":\"8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1f0\","
                   "\"type\":\"Microsoft.Authorization/roleDefinitions\","
                   "\"roleName\":\"keys but sign\",\"description\":\"\","
                   "\"roleType\":\"CustomRole\",\"permissions\":[{\"actions\":[],"
                   "\"notActions\":[],\"dataActions\":[\"Microsoft.KeyVault/managedHsm/keys/*\"],"
                   "\"notDataActions\":[\"Microsoft.KeyVault/managedHsm/keys/sign/action\"]}],"
                   "\"assignableScopes\":[\"/\"]}");
    /* the list table: NAME ROLE-NAME TYPE */
    json_t *arr = json_array();
    assert_int_equal(json_array_append(arr, o), 0);
    static const struct mh_json_out_column COLS[] = {
        {"NAME", "name"}, {"ROLE-NAME", "roleName"}, {"TYPE", "roleType"}};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(mh_json_out_print_columns(arr, COLS, 3, f), 0);
    fclose(f);
    assert_string_equal(text, "NAME                                  ROLE-NAME      TYPE\n"
                              "8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1f0  keys but sign  CustomRole\n");
    free(text);
    json_decref(arr);
    json_decref(o);
    /* a NULL permission block or invalid UTF-8 is not rendered */
    pp[0] = NULL;
    assert_int_equal(mh_json_out_role_definition(&d, &o), MH_EPROTO);
    pp[0] = &p;
    acts[0] = S("\xc3\x28");
    assert_int_equal(mh_json_out_role_definition(&d, &o), MH_EPROTO);
    assert_int_equal(mh_json_out_role_definition(NULL, &o), MH_EPROTO);
}

static void test_role_assignment_shape(void **state)
{
    (void)state;
    Mhsm__V1__RoleAssignment a = MHSM__V1__ROLE_ASSIGNMENT__INIT;
    a.id = S("/keys/k1/providers/Microsoft.Authorization/roleAssignments/"
             "0b9b1d6e-2f2b-4a8e-9a43-1c1c1f0e0d0c");
    a.name = S("0b9b1d6e-2f2b-4a8e-9a43-1c1c1f0e0d0c");
    a.type = S("Microsoft.Authorization/roleAssignments");
    a.scope = S("/keys/k1");
    a.role_definition_id = S("Microsoft.KeyVault/providers/Microsoft.Authorization/"
                             "roleDefinitions/21dbd100-6940-42c2-9190-5d6cb909625b");
    a.principal_id = S("spiffe://mhsm/app\x1b[2J");
    a.role_name = S("Managed HSM Crypto User");
    json_t *o = NULL;
    assert_int_equal(mh_json_out_role_assignment(&a, &o), 0);
    static const char *const KEYS[] = {
        "id", "name", "type", "scope", "roleDefinitionId", "principalId", "roleName"};
    assert_int_equal(json_object_size(o), 7);
    for (size_t i = 0; i < 7; i++)
        assert_true(json_is_string(json_object_get(o, KEYS[i])));
    assert_string_equal(json_string_value(json_object_get(o, "scope")), "/keys/k1");
    /* table: NAME ROLE-NAME PRINCIPAL SCOPE, terminal escapes from the server cleaned */
    json_t *arr = json_array();
    assert_int_equal(json_array_append_new(arr, o), 0);
    static const struct mh_json_out_column COLS[] = {{"NAME", "name"},
                                                     {"ROLE-NAME", "roleName"},
                                                     {"PRINCIPAL", "principalId"},
                                                     {"SCOPE", "scope"}};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(mh_json_out_print_columns(arr, COLS, 4, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "NAME  "));
    assert_non_null(strstr(text, "PRINCIPAL"));
    assert_non_null(strstr(text, "spiffe://mhsm/app?[2J  /keys/k1\n"));
    assert_null(strchr(text, '\x1b'));
    free(text);
    /* not an array */
    f = open_memstream(&text, &len);
    assert_int_equal(mh_json_out_print_columns(json_array_get(arr, 0), COLS, 4, f), MH_EPROTO);
    fclose(f);
    free(text);
    json_decref(arr);
    a.role_name = S("\xff");
    assert_int_equal(mh_json_out_role_assignment(&a, &o), MH_EPROTO);
}

static void test_whoami_shape(void **state)
{
    (void)state;
    char *acts[] = {S("Microsoft.KeyVault/managedHsm/keys/read/action"),
                    S("Microsoft.KeyVault/managedHsm/keys/sign/action")};
    char *keys[] = {S("k2")};
    Mhsm__V1__WhoAmIResponse w = MHSM__V1__WHO_AM_IRESPONSE__INIT;
    w.principal_id = S("spiffe://mhsm/app");
    w.node_id = 2;
    w.n_data_actions = 2;
    w.data_actions = acts;
    w.n_key_scopes = 1;
    w.key_scopes = keys;
    json_t *o = NULL;
    assert_int_equal(mh_json_out_whoami(&w, &o), 0);
    expect_json(o, "{\"principalId\":\"spiffe://mhsm/app\",\"nodeId\":2,\"dataActions\":["
                   "\"Microsoft.KeyVault/managedHsm/keys/read/action\","
                   "\"Microsoft.KeyVault/managedHsm/keys/sign/action\"],\"keyScopes\":[\"k2\"]}");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(mh_json_out_print_whoami_table(o, f), 0);
    fclose(f);
    assert_string_equal(text, "spiffe://mhsm/app\n"
                              "Microsoft.KeyVault/managedHsm/keys/read/action\n"
                              "Microsoft.KeyVault/managedHsm/keys/sign/action\n");
    free(text);
    json_decref(o);
    /* nothing held: empty arrays, still present */
    w.n_data_actions = 0;
    w.n_key_scopes = 0;
    assert_int_equal(mh_json_out_whoami(&w, &o), 0);
    expect_json(o, "{\"principalId\":\"spiffe://mhsm/app\",\"nodeId\":2,\"dataActions\":[],"
                   "\"keyScopes\":[]}");
    json_decref(o);
    w.node_id = (uint64_t)INT64_MAX + 1u;
    assert_int_equal(mh_json_out_whoami(&w, &o), MH_EPROTO);
    json_t *arr = json_array();
    f = open_memstream(&text, &len);
    assert_int_equal(mh_json_out_print_whoami_table(arr, f), MH_EPROTO);
    fclose(f);
    free(text);
    json_decref(arr);
}

static void test_audit_key_shape(void **state)
{
    (void)state;
    uint8_t pub[32];
    for (size_t i = 0; i < 32; i++)
        pub[i] = (uint8_t)(0xa0 + i);
    static const char HEX[] = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
    Mhsm__V1__GetAuditKeyResponse k = MHSM__V1__GET_AUDIT_KEY_RESPONSE__INIT;
    k.public_key.data = pub;
    k.public_key.len = 32;
    k.public_key_hex = S(HEX);
    k.node_id = 3;
    k.directory = S("/var/lib/mhsm/audit");
    json_t *o = NULL;
    assert_int_equal(mh_json_out_audit_key(&k, &o), 0);
    expect_json(o, "{\"publicKey\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdb"
                   "ebf\",\"nodeId\":3,\"directory\":\"/var/lib/mhsm/audit\"}");
    json_decref(o);
    /* the hex form is optional, but must agree when present */
    k.public_key_hex = S("");
    assert_int_equal(mh_json_out_audit_key(&k, &o), 0);
    json_decref(o);
    k.public_key_hex = S("a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbe00");
    assert_int_equal(mh_json_out_audit_key(&k, &o), MH_EPROTO);
    k.public_key_hex = S(HEX);
    k.public_key.len = 31;
    assert_int_equal(mh_json_out_audit_key(&k, &o), MH_EPROTO);
}

/* ---- role definitions as `mhsm role definition create|update` reads them ----------- */

#define GUID "8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1f0"
#define SIGN "Microsoft.KeyVault/managedHsm/keys/sign/action"

static void test_roledef_az_format(void **state)
{
    (void)state;
    struct mh_roledef d;
    char err[256];
    assert_int_equal(mh_roledef_parse("{\"roleName\": \"My Role\", \"description\": \"d\", "
                                      "\"actions\": [], \"notActions\": [], \"dataActions\": "
                                      "[\"Microsoft.KeyVault/managedHsm/keys/*\"], "
                                      "\"notDataActions\": [\"" SIGN "\"]}",
                                      false, &d, err, sizeof err),
                     0);
    assert_string_equal(d.req.role_name, "My Role");
    assert_string_equal(d.req.description, "d");
    assert_string_equal(d.req.name, ""); /* the HSM picks the GUID */
    assert_int_equal(d.req.n_permissions, 1);
    const Mhsm__V1__Permission *p = d.req.permissions[0];
    assert_int_equal(p->n_actions, 0);
    assert_int_equal(p->n_data_actions, 1);
    assert_string_equal(p->data_actions[0], "Microsoft.KeyVault/managedHsm/keys/*");
    assert_int_equal(p->n_not_data_actions, 1);
    assert_string_equal(p->not_data_actions[0], SIGN);
    assert_int_equal(d.req.n_assignable_scopes, 0);
    /* it packs: the request is well formed */
    assert_true(protobuf_c_message_get_packed_size(&d.req.base) > 0);
    mh_roledef_free(&d);

    /* update: the GUID, and optional assignableScopes */
    assert_int_equal(mh_roledef_parse("{\"name\":\"" GUID "\",\"roleName\":\"r\",\"dataActions\":"
                                      "[\"" SIGN "\"],\"assignableScopes\":[\"/\"]}",
                                      true, &d, err, sizeof err),
                     0);
    assert_string_equal(d.req.name, GUID);
    assert_int_equal(d.req.n_assignable_scopes, 1);
    assert_string_equal(d.req.assignable_scopes[0], "/");
    mh_roledef_free(&d);
}

static void test_roledef_azure_objects(void **state)
{
    (void)state;
    struct mh_roledef d;
    char err[256];
    /* Azure's REST object: properties with permissions; the GUID from the id */
    assert_int_equal(
        mh_roledef_parse("{\"id\":\"Microsoft.KeyVault/providers/Microsoft.Authorization/"
                         "roleDefinitions/" GUID "\",\"type\":\"Microsoft.Authorization/"
                         "roleDefinitions\",\"properties\":{\"roleName\":\"r\",\"type\":"
                         "\"CustomRole\",\"description\":\"x\",\"permissions\":[{"
                         "\"dataActions\":[\"" SIGN "\"],\"notDataActions\":[]}],"
                         "\"assignableScopes\":[\"/\"]}}",
                         true, &d, err, sizeof err),
        0);
    assert_string_equal(d.req.name, GUID);
    assert_string_equal(d.req.role_name, "r");
    assert_int_equal(d.req.n_permissions, 1);
    assert_string_equal(d.req.permissions[0]->data_actions[0], SIGN);
    mh_roledef_free(&d);
    /* what `role definition show` prints goes back in unchanged */
    assert_int_equal(
        mh_roledef_parse("{\"id\":\"x/roleDefinitions/" GUID "\",\"name\":\"" GUID "\",\"type\":"
                         "\"Microsoft.Authorization/roleDefinitions\",\"roleName\":\"r\","
                         "\"description\":\"\",\"roleType\":\"CustomRole\",\"permissions\":[{"
                         "\"actions\":[],\"notActions\":[],\"dataActions\":[\"" SIGN "\"],"
                         "\"notDataActions\":[]}],\"assignableScopes\":[\"/\"]}",
                         true, &d, err, sizeof err),
        0);
    assert_string_equal(d.req.name, GUID);
    assert_int_equal(d.req.permissions[0]->n_data_actions, 1);
    mh_roledef_free(&d);
    /* several blocks pass through (the server decides) */
    assert_int_equal(mh_roledef_parse("{\"roleName\":\"r\",\"permissions\":[{\"dataActions\":[\"a"
                                      "\"]},{\"notDataActions\":[\"b\"]}]}",
                                      false, &d, err, sizeof err),
                     0);
    assert_int_equal(d.req.n_permissions, 2);
    assert_string_equal(d.req.permissions[1]->not_data_actions[0], "b");
    mh_roledef_free(&d);
}

static void expect_roledef_error(const char *text, bool need_name, const char *needle)
{
    struct mh_roledef d;
    char err[256];
    int rv = mh_roledef_parse(text, need_name, &d, err, sizeof err);
    if (rv != MH_EINVAL || strstr(err, needle) == NULL)
        fail_msg("%s: got %d '%s', want '%s'", text, rv, err, needle);
    mh_roledef_free(&d);
}

static void test_roledef_errors(void **state)
{
    (void)state;
    expect_roledef_error("", false, "invalid JSON at line 1");
    expect_roledef_error("{\"roleName\":\"r\",\n\"dataActions\":[\"a\",]}", false,
                         "invalid JSON at line 2");
    expect_roledef_error("[]", false, "must be a JSON object");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\"],\"dataAction\":[]}", false,
                         "unknown member \"dataAction\"");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\"],\"roleName\":\"s\"}", false,
                         "invalid JSON"); /* duplicate member */
    expect_roledef_error("{\"dataActions\":[\"a\"]}", false, "\"roleName\" is required");
    expect_roledef_error("{\"roleName\":\"\",\"dataActions\":[\"a\"]}", false,
                         "\"roleName\" is required");
    expect_roledef_error("{\"roleName\":5,\"dataActions\":[\"a\"]}", false,
                         "\"roleName\" must be a string");
    expect_roledef_error("{\"roleName\":\"r\\u0000x\",\"dataActions\":[\"a\"]}", false, "NUL");
    expect_roledef_error("{\"roleName\":\"r\"}", false, "\"dataActions\" is required");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":\"a\"}", false,
                         "\"dataActions\" must be an array of strings");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\",7]}", false,
                         "\"dataActions\"[1] must be a string");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\"],\"notDataActions\":[null]}",
                         false, "\"notDataActions\"[0] must be a string");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\"],\"permissions\":[]}", false,
                         "not both");
    expect_roledef_error("{\"roleName\":\"r\",\"permissions\":[]}", false,
                         "\"permissions\" must be an array of 1..");
    expect_roledef_error("{\"roleName\":\"r\",\"permissions\":[\"a\"]}", false,
                         "\"permissions\"[0] must be an object");
    expect_roledef_error("{\"roleName\":\"r\",\"permissions\":[{\"dataActions\":[\"a\"],"
                         "\"extra\":1}]}",
                         false, "unknown member \"extra\" in \"permissions\"[0]");
    expect_roledef_error("{\"roleName\":\"r\",\"permissions\":[{\"dataActions\":[1]}]}", false,
                         "\"dataActions\"[0] in \"permissions\"[0] must be a string");
    expect_roledef_error("{\"properties\":[],\"roleName\":\"r\"}", false,
                         "\"properties\" must be an object");
    expect_roledef_error("{\"roleName\":\"r\",\"properties\":{\"dataActions\":[\"a\"]}}", false,
                         "unknown member \"roleName\"");
    expect_roledef_error("{\"properties\":{\"roleName\":\"r\",\"dataActions\":[\"a\"]}}", false,
                         "unknown member \"dataActions\" in \"properties\"");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\"]}", true,
                         "\"name\" (the role's GUID) is required");
    expect_roledef_error("{\"name\":\"not-a-guid\",\"roleName\":\"r\",\"dataActions\":[\"a\"]}",
                         false, "\"name\" must be a GUID");
    expect_roledef_error("{\"name\":\"" GUID "x\",\"roleName\":\"r\",\"dataActions\":[\"a\"]}",
                         false, "\"name\" must be a GUID");
    expect_roledef_error("{\"id\":\"a/b/c\",\"roleName\":\"r\",\"dataActions\":[\"a\"]}", false,
                         "\"id\" must end in the role's GUID");
    expect_roledef_error("{\"id\":\"x/0b9b1d6e-2f2b-4a8e-9a43-1c1c1f0e0d0c\",\"name\":\"" GUID
                         "\",\"roleName\":\"r\",\"dataActions\":[\"a\"]}",
                         false, "does not match");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\"],\"description\":[]}", false,
                         "\"description\" must be a string");
    expect_roledef_error("{\"roleName\":\"r\",\"dataActions\":[\"a\"],\"assignableScopes\":\"/\"}",
                         false, "\"assignableScopes\" must be an array");
    assert_true(mh_roledef_is_guid(GUID));
    assert_true(mh_roledef_is_guid("8F4A6A52-C0A6-4B61-9F7A-7E3C3AD1C1F0"));
    assert_false(mh_roledef_is_guid("8f4a6a52c0a64b619f7a7e3c3ad1c1f0"));
    assert_false(mh_roledef_is_guid("8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1f"));
    assert_false(mh_roledef_is_guid("8f4a6a52-c0a6-4b61-9f7a-7e3c3ad1c1fg"));
    assert_false(mh_roledef_is_guid(""));
}

/* Mutated documents: always either a complete request or MH_EINVAL with a reason (and
 * no leak or overread under ASan). */
static void test_roledef_mutations(void **state)
{
    (void)state;
    static const char SEED[] =
        "{\"id\":\"x/roleDefinitions/" GUID "\",\"properties\":{\"roleName\":\"r\","
        "\"permissions\":[{\"dataActions\":[\"" SIGN "\"],\"notDataActions\":[\"b\"]}],"
        "\"assignableScopes\":[\"/\"]}}";
    struct tu_rng r = {0x5eed};
    struct mh_buf m = {0};
    for (int round = 0; round < 3000; round++) {
        tu_mutate(&r, (const uint8_t *)SEED, sizeof SEED - 1, &m);
        assert_int_equal(mh_buf_append_u8(&m, 0), 0);
        struct mh_roledef d;
        char err[256];
        int rv = mh_roledef_parse((const char *)m.data, round % 2 == 0, &d, err, sizeof err);
        if (rv == 0) {
            assert_non_null(d.req.role_name);
            assert_true(d.req.role_name[0] != 0);
            assert_true(d.req.n_permissions >= 1);
            assert_true(protobuf_c_message_get_packed_size(&d.req.base) > 0);
        } else {
            assert_int_equal(rv, MH_EINVAL);
            assert_true(err[0] != 0);
        }
        mh_roledef_free(&d);
    }
    mh_buf_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_bundle),
        cmocka_unit_test(test_ec_and_oct_bundles),
        cmocka_unit_test(test_items),
        cmocka_unit_test(test_refuses_bad_responses),
        cmocka_unit_test(test_role_definition_shape),
        cmocka_unit_test(test_role_assignment_shape),
        cmocka_unit_test(test_whoami_shape),
        cmocka_unit_test(test_audit_key_shape),
        cmocka_unit_test(test_roledef_az_format),
        cmocka_unit_test(test_roledef_azure_objects),
        cmocka_unit_test(test_roledef_errors),
        cmocka_unit_test(test_roledef_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
