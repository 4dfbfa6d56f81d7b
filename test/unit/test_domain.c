#define _GNU_SOURCE
#include "testutil.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/alg.h"
#include "node/domain.h"

static void test_node_key(void **state)
{
    (void)state;
    char path[512];
    tu_path(path, sizeof path, "domain-node.key");
    unlink(path);
    struct mh_secret a = {0}, b = {0};
    assert_int_equal(mh_domain_node_key(path, &a), 0); /* created */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 32);
    assert_int_equal(mh_domain_node_key(path, &b), 0); /* loaded */
    assert_int_equal(a.len, 32);
    assert_memory_equal(a.data, b.data, 32);
    mh_secret_free(&b);
    /* readable by others: refused */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(mh_domain_node_key(path, &b), MH_ECONFIG);
    assert_int_equal(chmod(path, 0600), 0);
    /* wrong size: refused */
    tu_write_file(path, "short", 5);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(mh_domain_node_key(path, &b), MH_ECONFIG);
    uint8_t big[33] = {0};
    tu_write_file(path, big, sizeof big);
    assert_int_equal(mh_domain_node_key(path, &b), MH_ECONFIG);
    mh_secret_free(&a);
    unlink(path);
}

static void test_save_load(void **state)
{
    (void)state;
    assert_int_equal(mh_alg_init(), 0);
    char kpath[512], dpath[512], kpath2[512];
    tu_path(kpath, sizeof kpath, "domain-a.key");
    tu_path(kpath2, sizeof kpath2, "domain-b.key");
    tu_path(dpath, sizeof dpath, "domain.sealed");
    unlink(kpath);
    unlink(kpath2);
    unlink(dpath);
    struct mh_secret nk = {0}, nk2 = {0};
    assert_int_equal(mh_domain_node_key(kpath, &nk), 0);
    assert_int_equal(mh_domain_node_key(kpath2, &nk2), 0);
    struct mh_domain *d = NULL, *l = NULL;
    assert_int_equal(mh_domain_load(&nk, dpath, &l), MH_ENOTFOUND);
    assert_int_equal(mh_domain_generate(&d), 0);
    assert_int_equal(mh_domain_save(d, &nk, dpath), 0);
    assert_int_equal(mh_domain_load(&nk, dpath, &l), 0);
    assert_memory_equal(l->root.data, d->root.data, 32);
    assert_memory_equal(l->kwk.data, d->kwk.data, 32);
    assert_memory_equal(l->id, d->id, MH_DOMAIN_ID_LEN);
    /* derived keys differ from the root and from each other */
    assert_memory_not_equal(d->kwk.data, d->root.data, 32);
    assert_memory_not_equal(d->kwk.data, d->backup.data, 32);
    mh_domain_free(l);
    /* the sealed file holds no copy of the root */
    struct mh_buf f = {0};
    tu_read_file(dpath, &f);
    assert_null(memmem(f.data, f.len, d->root.data, 16));
    /* another node's key cannot open it */
    assert_int_equal(mh_domain_load(&nk2, dpath, &l), MH_EAUTH);
    /* every flipped bit is detected */
    for (size_t i = 0; i < f.len; i++) {
        f.data[i] ^= 0x01;
        tu_write_file(dpath, f.data, f.len);
        int rv = mh_domain_load(&nk, dpath, &l);
        assert_true(rv == MH_EAUTH || rv == MH_EUNSUPPORTED);
        f.data[i] ^= 0x01;
    }
    tu_write_file(dpath, f.data, 10);
    assert_int_equal(mh_domain_load(&nk, dpath, &l), MH_ETRUNC);
    mh_buf_free(&f);
    mh_domain_free(d);
    mh_secret_free(&nk);
    mh_secret_free(&nk2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_key),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
