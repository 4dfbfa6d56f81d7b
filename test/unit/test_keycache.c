#include "testutil.h"

#include <string.h>

#include "crypto/alg.h"
#include "crypto/seal.h"
#include "node/keycache.h"
#include "node/keyrec.h"

struct sealed {
    Mhsm__Internal__KeyVersionRecord rec;
    struct mh_buf blob;
    char name[32], version[33];
};

static void make(struct sealed *s, const struct mh_domain *d, const char *name, enum mh_kty kty)
{
    struct mh_key *k = NULL;
    assert_int_equal(mh_key_generate(kty, kty == MH_KTY_OCT ? 256 : 0,
                                     kty == MH_KTY_EC ? MH_CURVE_P256 : MH_CURVE_NONE, &k),
                     0);
    snprintf(s->name, sizeof s->name, "%s", name);
    assert_int_equal(mh_keyrec_new_version(s->version), 0);
    struct mh_buf aad = {0};
    memset(&s->blob, 0, sizeof s->blob);
    assert_int_equal(mh_keyrec_aad(s->name, s->version, kty, &aad), 0);
    assert_int_equal(mh_seal_key(&d->kwk, k, aad.data, aad.len, &s->blob), 0);
    mh_buf_free(&aad);
    mh_key_free(k);
    mhsm__internal__key_version_record__init(&s->rec);
    s->rec.name = s->name;
    s->rec.version = s->version;
    s->rec.kty = kty;
    s->rec.sealed_material.data = s->blob.data;
    s->rec.sealed_material.len = s->blob.len;
}

static void test_cache(void **state)
{
    (void)state;
    assert_int_equal(mh_alg_init(), 0);
    struct mh_domain *d = NULL, *other = NULL;
    assert_int_equal(mh_domain_generate(&d), 0);
    assert_int_equal(mh_domain_generate(&other), 0);
    struct mh_keycache *kc = NULL;
    assert_int_equal(mh_keycache_new(2, &kc), 0);
    struct sealed a, b, c;
    make(&a, d, "a", MH_KTY_EC);
    make(&b, d, "b", MH_KTY_OCT);
    make(&c, d, "c", MH_KTY_EC);
    struct mh_key *k1 = NULL, *k2 = NULL;
    /* peek never unseals: a miss stays a miss */
    assert_int_equal(mh_keycache_peek(kc, &a.rec, &k1), MH_ENOTFOUND);
    assert_null(k1);
    assert_int_equal(mh_keycache_size(kc), 0);
    assert_int_equal(mh_keycache_get(kc, d, &a.rec, &k1, mh_keycache_epoch(kc)), 0);
    assert_int_equal(mh_keycache_peek(kc, &a.rec, &k2), 0);
    assert_ptr_equal(k1, k2); /* the cached object, a new reference */
    mh_key_free(k2);
    assert_int_equal(mh_keycache_get(kc, d, &a.rec, &k2, mh_keycache_epoch(kc)), 0);
    assert_ptr_equal(k1, k2); /* second lookup is a hit: the same object */
    assert_int_equal(mh_keycache_size(kc), 1);
    mh_key_free(k2);
    assert_int_equal(mh_keycache_get(kc, d, &b.rec, &k2, mh_keycache_epoch(kc)), 0);
    mh_key_free(k2);
    assert_int_equal(mh_keycache_get(kc, d, &c.rec, &k2, mh_keycache_epoch(kc)),
                     0); /* evicts a (LRU) */
    mh_key_free(k2);
    assert_int_equal(mh_keycache_size(kc), 2);
    assert_int_equal(mh_key_kty(k1), MH_KTY_EC); /* still usable after eviction */
    assert_int_equal(mh_keycache_get(kc, d, &a.rec, &k2, mh_keycache_epoch(kc)), 0);
    assert_ptr_not_equal(k1, k2); /* re-unsealed */
    mh_key_free(k2);
    mh_key_free(k1);
    mh_keycache_evict_name(kc, "a");
    mh_keycache_evict_name(kc, "c");
    assert_int_equal(mh_keycache_size(kc), 0);
    assert_int_equal(mh_keycache_peek(kc, &b.rec, &k2), MH_ENOTFOUND); /* evicted */
    /* an over-long name is never cached */
    char longname[MH_KEY_NAME_MAX + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    b.rec.name = longname;
    assert_int_equal(mh_keycache_peek(kc, &b.rec, &k2), MH_EINVAL);
    b.rec.name = b.name;
    /* an epoch taken before an eviction: the key is returned but not cached */
    uint64_t before = mh_keycache_epoch(kc);
    mh_keycache_evict_name(kc, "b");
    assert_int_equal(mh_keycache_get(kc, d, &b.rec, &k1, before), 0);
    assert_int_equal(mh_key_kty(k1), MH_KTY_OCT);
    mh_key_free(k1);
    assert_int_equal(mh_keycache_size(kc), 0);
    /* wrong domain, wrong name binding, wrong kty: all refused as corrupt state */
    assert_int_equal(mh_keycache_get(kc, other, &b.rec, &k1, mh_keycache_epoch(kc)), MH_ECORRUPT);
    b.rec.name = (char *)"renamed";
    assert_int_equal(mh_keycache_get(kc, d, &b.rec, &k1, mh_keycache_epoch(kc)), MH_ECORRUPT);
    b.rec.name = b.name;
    b.rec.kty = MH_KTY_RSA;
    assert_int_equal(mh_keycache_get(kc, d, &b.rec, &k1, mh_keycache_epoch(kc)), MH_ECORRUPT);
    assert_int_equal(mh_keycache_size(kc), 0);
    mh_buf_free(&a.blob);
    mh_buf_free(&b.blob);
    mh_buf_free(&c.blob);
    mh_keycache_free(kc);
    mh_domain_free(d);
    mh_domain_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cache)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
