#include "testutil.h"

#include <errno.h>
#include <string.h>

#include "common/err.h"

static void test_codes_are_negative_and_named(void **state)
{
    (void)state;
#define CHECK_(name, value, msg)                                                                   \
    assert_true((name) <= -10000);                                                                 \
    assert_string_equal(mh_strerror(name), msg);                                                   \
    assert_string_equal(mh_errname(name), #name);
    MH_ERR_MAP(CHECK_)
#undef CHECK_
}

static void test_errno_passthrough(void **state)
{
    (void)state;
    assert_string_equal(mh_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(mh_errname(-ENOENT), "ENOENT");
    assert_string_equal(mh_strerror(0), "success");
    assert_string_equal(mh_strerror(-99999), "unknown error");
    assert_string_equal(mh_strerror(5), "unknown error");
}

static int fails_then(int v)
{
    MH_TRY(v);
    return 7;
}

static void test_guards(void **state)
{
    (void)state;
    assert_int_equal(fails_then(MH_EINVAL), MH_EINVAL);
    assert_int_equal(fails_then(0), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_are_negative_and_named),
        cmocka_unit_test(test_errno_passthrough),
        cmocka_unit_test(test_guards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
