#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "consensus/rbac.h"
#include "crypto/rand.h"

#define A(s) MH_RBAC_PREFIX s
#define B(a) MH_RBAC_BIT(MH_ACT_##a)

static uint64_t mask_of(const char *pattern)
{
    uint64_t m = 0xdead;
    assert_int_equal(mh_rbac_pattern_mask(pattern, &m), 0);
    return m;
}

static void bad_pattern(const char *pattern)
{
    uint64_t m = 0xdead;
    assert_int_equal(mh_rbac_pattern_mask(pattern, &m), MH_EINVAL);
    assert_int_equal(m, 0);
}

static void test_action_names(void **state)
{
    (void)state;
    /* every name is unique, prefixed, and matches exactly its own bit */
    for (int a = 0; a < MH_ACT_COUNT; a++) {
        const char *n = mh_rbac_action_name((enum mh_action)a);
        assert_non_null(n);
        assert_int_equal(strncmp(n, MH_RBAC_PREFIX, strlen(MH_RBAC_PREFIX)), 0);
        assert_int_equal(mask_of(n), MH_RBAC_BIT(a));
    }
    assert_null(mh_rbac_action_name(MH_ACT_COUNT));
    assert_null(mh_rbac_action_name((enum mh_action) - 1));
    assert_int_equal(MH_ACT_COUNT, 36);
}

static void test_pattern_masks(void **state)
{
    (void)state;
    /* exact, in any case */
    assert_int_equal(mask_of(A("keys/sign/action")), B(SIGN));
    assert_int_equal(mask_of("microsoft.keyvault/MANAGEDHSM/Keys/Sign/Action"), B(SIGN));
    assert_int_equal(mask_of(A("keys/deletedKeys/delete")), B(PURGE));
    /* "keys/delete" is not a prefix match of "keys/deletedKeys/..." */
    assert_int_equal(mask_of(A("keys/delete")), B(KEY_DELETE));
    /* wildcards */
    assert_int_equal(mask_of(MH_RBAC_PREFIX "*"), MH_RBAC_ALL_MASK);
    assert_int_equal(mask_of("*"), MH_RBAC_ALL_MASK);
    assert_int_equal(mask_of(A("keys/deletedKeys/*")), B(DELETED_READ) | B(RECOVER) | B(PURGE));
    assert_int_equal(mask_of(A("KEYS/DELETEDKEYS/*")), B(DELETED_READ) | B(RECOVER) | B(PURGE));
    assert_int_equal(mask_of(A("roleAssignments/*")), B(RA_READ) | B(RA_WRITE) | B(RA_DELETE));
    assert_int_equal(mask_of(A("securitydomain/*")), B(SD_DOWNLOAD) | B(SD_READ) | B(SD_UPLOAD) |
                                                         B(SD_UPLOAD_READ) | B(SD_TRANSFERKEY));
    uint64_t keys = mask_of(A("keys/*"));
    assert_true(keys & B(SIGN));
    assert_true(keys & B(PURGE));
    assert_true(keys & B(ROTATE));
    assert_false(keys & B(RA_WRITE));
    assert_false(keys & B(RNG));
    /* bad: empty, unknown, star not at the end, two stars, over-long, trailing junk */
    bad_pattern("");
    bad_pattern(A("keys/nosuch/action"));
    bad_pattern(A("keys/*/action"));
    bad_pattern(A("keys/**"));
    bad_pattern("*" A("keys/read/action"));
    bad_pattern(A("keys/read/action "));
    bad_pattern(A("keys/read/actionx"));
    bad_pattern(A("keys/read"));
    bad_pattern("keys/read/action"); /* the prefix is required */
    bad_pattern(A("nothing/*"));
    char longp[300];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    bad_pattern(longp);
    /* 256 bytes is allowed if it matches: a valid name padded is not */
    char pad[258];
    snprintf(pad, sizeof pad, "%s", A("keys/read/action"));
    size_t l = strlen(pad);
    memset(pad + l, '*', 1);
    pad[l + 1] = 0;
    assert_int_equal(mask_of(pad), B(KEY_READ)); /* "...read/action*" */
}

static void test_role_mask(void **state)
{
    (void)state;
    char *data[] = {(char *)A("keys/*"), (char *)A("rng/action")};
    char *not_data[] = {(char *)A("keys/sign/action"), (char *)A("KEYS/DELETEDKEYS/*")};
    uint64_t m;
    const char *bad = NULL;
    assert_int_equal(mh_rbac_role_mask(data, 2, not_data, 2, &m, &bad), 0);
    assert_null(bad);
    uint64_t want =
        (mask_of(A("keys/*")) | B(RNG)) & ~(B(SIGN) | B(DELETED_READ) | B(RECOVER) | B(PURGE));
    assert_int_equal(m, want);
    assert_true(m & B(VERIFY));
    assert_false(m & B(SIGN));
    assert_false(m & B(PURGE));
    /* notDataActions only remove: excluding something not granted is harmless */
    char *ra[] = {(char *)A("roleAssignments/write/action")};
    assert_int_equal(mh_rbac_role_mask(data, 1, ra, 1, &m, NULL), 0);
    assert_int_equal(m, mask_of(A("keys/*")));
    /* everything excluded: empty set, still valid */
    assert_int_equal(mh_rbac_role_mask(data, 1, data, 1, &m, NULL), 0);
    assert_int_equal(m, 0);
    /* a bad pattern in either list names itself */
    char *badl[] = {(char *)A("keys/read/action"), (char *)"bogus"};
    assert_int_equal(mh_rbac_role_mask(badl, 2, NULL, 0, &m, &bad), MH_EINVAL);
    assert_string_equal(bad, "bogus");
    assert_int_equal(m, 0);
    bad = NULL;
    assert_int_equal(mh_rbac_role_mask(data, 1, badl, 2, &m, &bad), MH_EINVAL);
    assert_string_equal(bad, "bogus");
    assert_int_equal(mh_rbac_role_mask(NULL, 0, NULL, 0, &m, NULL), 0);
    assert_int_equal(m, 0);
}

/* reference/azure-managed-hsm.md §3.1, written out independently of rbac.c. */
static void test_builtin_masks(void **state)
{
    (void)state;
    const uint64_t ra3 = B(RA_READ) | B(RA_WRITE) | B(RA_DELETE);
    const uint64_t rd3 = B(RD_READ) | B(RD_WRITE) | B(RD_DELETE);
    const struct {
        const char *id, *name;
        uint64_t mask;
    } want[] = {
        {"a290e904-7015-4bba-90c8-60543313cdb4", "Managed HSM Administrator",
         ra3 | rd3 | B(SD_DOWNLOAD) | B(SD_READ) | B(SD_UPLOAD) | B(SD_UPLOAD_READ) |
             B(SD_TRANSFERKEY) | B(BACKUP_START) | B(BACKUP_STATUS) | B(RESTORE_START) |
             B(RESTORE_STATUS)},
        {"515eb02d-2335-4d2d-92f2-b1cbdf9c3778", "Managed HSM Crypto Officer",
         ra3 | rd3 | B(DELETED_READ) | B(PURGE) | B(RECOVER) | B(EXPORT)},
        {"21dbd100-6940-42c2-9190-5d6cb909625b", "Managed HSM Crypto User",
         B(RD_READ) | B(RA_READ) | B(KEY_READ) | B(KEY_WRITE) | B(KEY_DELETE) | B(KEY_CREATE) |
             B(ROTATE) | B(KEY_IMPORT) | B(RELEASE) | B(BACKUP) | B(RESTORE) | B(ENCRYPT) |
             B(DECRYPT) | B(WRAP) | B(UNWRAP) | B(SIGN) | B(VERIFY) | B(DERIVE) | B(RNG)},
        {"4bd23610-cdcf-4971-bdee-bdc562cc28e4", "Managed HSM Policy Administrator", ra3 | rd3},
        {"2c18b078-7c48-4d3a-af88-5a3a1b3f82b3", "Managed HSM Crypto Auditor",
         B(RA_READ) | B(RD_READ) | B(KEY_READ) | B(DELETED_READ)},
        {"33413926-3206-4cdd-b39a-83574fe37a17", "Managed HSM Crypto Service Encryption User",
         B(KEY_READ) | B(WRAP) | B(UNWRAP)},
        {"21dbd100-6940-42c2-9190-5d6cb909625c", "Managed HSM Crypto Service Release User",
         B(RELEASE)},
        {"7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8", "Managed HSM Backup User",
         B(BACKUP_START) | B(BACKUP_STATUS) | B(BACKUP)},
        {"6efe6056-5259-49d2-8b3d-d3d73544b20b", "Managed HSM Restore",
         B(RESTORE) | B(RESTORE_START) | B(RESTORE_STATUS)},
    };
    size_t n = 0;
    const struct mh_rbac_builtin *b = mh_rbac_builtins(&n);
    assert_int_equal(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(b[i].id, want[i].id);
        assert_string_equal(b[i].name, want[i].name);
        if (b[i].mask != want[i].mask)
            fail_msg("%s: mask %llx, want %llx", b[i].name, (unsigned long long)b[i].mask,
                     (unsigned long long)want[i].mask);
        /* the listed actions are full names, each its own bit, no duplicates */
        uint64_t seen = 0;
        for (const char *const *a = b[i].data_actions; *a != NULL; a++) {
            uint64_t m = mask_of(*a);
            assert_int_equal(__builtin_popcountll(m), 1);
            assert_false(seen & m);
            seen |= m;
        }
        assert_int_equal(seen, b[i].mask);
        assert_ptr_equal(mh_rbac_builtin_by_id(want[i].id), &b[i]);
        assert_ptr_equal(mh_rbac_builtin_by_name(want[i].name), &b[i]);
    }
    /* the separation of duties the issue names */
    const struct mh_rbac_builtin *admin = mh_rbac_builtin_by_id(MH_RBAC_ROLE_ADMIN);
    const struct mh_rbac_builtin *officer = mh_rbac_builtin_by_id(MH_RBAC_ROLE_CRYPTO_OFFICER);
    const struct mh_rbac_builtin *user = mh_rbac_builtin_by_id(MH_RBAC_ROLE_CRYPTO_USER);
    const struct mh_rbac_builtin *auditor = mh_rbac_builtin_by_id(MH_RBAC_ROLE_AUDITOR);
    assert_int_equal(admin->mask & mask_of(A("keys/*")), 0);
    assert_false(admin->mask & B(RNG));
    assert_true(officer->mask & B(PURGE));
    assert_false(officer->mask & B(SIGN));
    assert_true(officer->mask & B(RA_WRITE));
    assert_true(user->mask & B(SIGN));
    assert_false(user->mask & B(PURGE));
    assert_false(user->mask & B(RA_WRITE));
    assert_true(auditor->mask & B(KEY_READ));
    assert_false(auditor->mask & B(SIGN));
    assert_false(auditor->mask & B(RA_WRITE));
    /* lookups: any case; unknown */
    assert_ptr_equal(mh_rbac_builtin_by_id("A290E904-7015-4BBA-90C8-60543313CDB4"), admin);
    assert_ptr_equal(mh_rbac_builtin_by_name("managed hsm crypto USER"), user);
    assert_null(mh_rbac_builtin_by_id("a290e904-7015-4bba-90c8-60543313cdb5"));
    assert_null(mh_rbac_builtin_by_id(""));
    assert_null(mh_rbac_builtin_by_name("Managed HSM"));
    assert_null(
        mh_rbac_builtin_by_name("Managed HSM Backup")); /* the docs' name, not the service's */
}

static void test_guids(void **state)
{
    (void)state;
    assert_true(mh_rbac_is_guid("a290e904-7015-4bba-90c8-60543313cdb4"));
    assert_true(mh_rbac_is_guid("A290E904-7015-4BBA-90C8-60543313CDB4"));
    assert_false(mh_rbac_is_guid(""));
    assert_false(mh_rbac_is_guid("a290e904-7015-4bba-90c8-60543313cdb"));
    assert_false(mh_rbac_is_guid("a290e904-7015-4bba-90c8-60543313cdb44"));
    assert_false(mh_rbac_is_guid("a290e904x7015-4bba-90c8-60543313cdb4"));
    assert_false(mh_rbac_is_guid("g290e904-7015-4bba-90c8-60543313cdb4"));
    assert_false(mh_rbac_is_guid("a290e9047015-4bba-90c8-60543313cdb4-"));
    assert_false(mh_rbac_is_guid("{a290e904-7015-4bba-90c8-60543313cdb4}"));
    char out[MH_RBAC_GUID_LEN + 1];
    assert_int_equal(mh_rbac_guid_normalize("A290E904-7015-4BBA-90C8-60543313CDB4", out), 0);
    assert_string_equal(out, "a290e904-7015-4bba-90c8-60543313cdb4");
    assert_int_equal(mh_rbac_guid_normalize("nope", out), MH_EINVAL);
    assert_int_equal(mh_rbac_parse_definition_id(
                         "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
                         "21DBD100-6940-42C2-9190-5D6CB909625B",
                         out),
                     0);
    assert_string_equal(out, MH_RBAC_ROLE_CRYPTO_USER);
    assert_int_equal(mh_rbac_parse_definition_id("21dbd100-6940-42c2-9190-5d6cb909625b", out), 0);
    assert_string_equal(out, MH_RBAC_ROLE_CRYPTO_USER);
    assert_int_equal(
        mh_rbac_parse_definition_id("Microsoft.KeyVault/providers/Microsoft.Authorization/"
                                    "roleDefinitions/",
                                    out),
        MH_EINVAL);
    assert_int_equal(mh_rbac_parse_definition_id("/roleDefinitions/21dbd100-6940-42c2-9190-"
                                                 "5d6cb909625b",
                                                 out),
                     MH_EINVAL);
}

static void test_principals(void **state)
{
    (void)state;
    assert_true(mh_rbac_valid_principal("spiffe://mhsm/app"));
    assert_true(mh_rbac_valid_principal("spki:0123abcd"));
    assert_true(mh_rbac_valid_principal("!"));
    assert_true(mh_rbac_valid_principal("~"));
    assert_false(mh_rbac_valid_principal(""));
    assert_false(mh_rbac_valid_principal("two words"));
    assert_false(mh_rbac_valid_principal("tab\there"));
    assert_false(mh_rbac_valid_principal("nl\n"));
    assert_false(mh_rbac_valid_principal("del\x7f"));
    assert_false(mh_rbac_valid_principal("utf8-\xc3\xa9"));
    char p[MH_RBAC_PRINCIPAL_MAX + 2];
    memset(p, 'p', sizeof p - 1);
    p[sizeof p - 1] = 0;
    assert_false(mh_rbac_valid_principal(p));
    p[MH_RBAC_PRINCIPAL_MAX] = 0;
    assert_true(mh_rbac_valid_principal(p));
}

static void test_scopes(void **state)
{
    (void)state;
    const char *key = "x";
    assert_int_equal(mh_rbac_parse_scope("/", &key), 0);
    assert_null(key);
    assert_int_equal(mh_rbac_parse_scope("/keys", &key), 0);
    assert_null(key);
    assert_int_equal(mh_rbac_parse_scope("", &key), 0);
    assert_null(key);
    const char *s = "/keys/my-Key-01";
    assert_int_equal(mh_rbac_parse_scope(s, &key), 0);
    assert_ptr_equal(key, s + 6);
    static const char *const bad[] = {"/keys/",   "/keys/a/b", "/keys/a_b", "/keys/a.b", "keys",
                                      "/keys/",   "//",        "/Keys",     "/keys ",    "/secrets",
                                      "/keys/a ", "/ ",        "keys/a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        key = "x";
        if (mh_rbac_parse_scope(bad[i], &key) != MH_EINVAL)
            fail_msg("scope \"%s\" accepted", bad[i]);
        assert_null(key);
    }
    char longs[6 + 129];
    memcpy(longs, "/keys/", 6);
    memset(longs + 6, 'k', 128);
    longs[6 + 128] = 0;
    assert_int_equal(mh_rbac_parse_scope(longs, &key), MH_EINVAL);
    longs[6 + 127] = 0;
    assert_int_equal(strlen(longs), MH_RBAC_SCOPE_MAX);
    assert_int_equal(mh_rbac_parse_scope(longs, &key), 0);
    assert_true(mh_rbac_scope_is_hsm("/"));
    assert_true(mh_rbac_scope_is_hsm("/keys"));
    assert_false(mh_rbac_scope_is_hsm(""));
    assert_false(mh_rbac_scope_is_hsm("/keys/k"));
    assert_false(mh_rbac_scope_is_hsm("/keys/"));
}

/* Generated names are GUIDs the parser accepts, version 4, RFC variant, distinct. */
static void test_random_guids(void **state)
{
    (void)state;
    char prev[MH_RAND_GUID_LEN + 1] = "";
    for (int i = 0; i < 200; i++) {
        char g[MH_RAND_GUID_LEN + 1], norm[MH_RBAC_GUID_LEN + 1];
        assert_int_equal(mh_rand_guid(g), 0);
        assert_true(mh_rbac_is_guid(g));
        assert_int_equal(mh_rbac_guid_normalize(g, norm), 0);
        assert_string_equal(g, norm); /* already lower case */
        assert_int_equal(g[14], '4');
        assert_non_null(strchr("89ab", g[19]));
        assert_string_not_equal(g, prev);
        memcpy(prev, g, sizeof g);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_action_names), cmocka_unit_test(test_pattern_masks),
        cmocka_unit_test(test_role_mask),    cmocka_unit_test(test_builtin_masks),
        cmocka_unit_test(test_guids),        cmocka_unit_test(test_principals),
        cmocka_unit_test(test_scopes),       cmocka_unit_test(test_random_guids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
