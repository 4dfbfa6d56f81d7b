#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

static void test_size_arith(void **state)
{
    (void)state;
    size_t r = 5;
    assert_int_equal(mh_size_add(SIZE_MAX, 1, &r), MH_EOVERFLOW);
    assert_int_equal(r, 5);
    assert_int_equal(mh_size_add(SIZE_MAX - 1, 1, &r), 0);
    assert_true(r == SIZE_MAX);
    assert_int_equal(mh_size_mul(SIZE_MAX / 2 + 1, 2, &r), MH_EOVERFLOW);
    assert_int_equal(mh_size_mul(1000, 1000, &r), 0);
    assert_int_equal(r, 1000000);
}

static void test_append_and_encode(void **state)
{
    (void)state;
    struct mh_buf b = {0};
    assert_int_equal(mh_buf_append_str(&b, "ab"), 0);
    assert_int_equal(mh_buf_append_u8(&b, 0x01), 0);
    assert_int_equal(mh_buf_append_u16le(&b, 0x0302), 0);
    assert_int_equal(mh_buf_append_u32be(&b, 0x04050607), 0);
    assert_int_equal(mh_buf_append_u64be(&b, 0x08090a0b0c0d0e0fULL), 0);
    static const uint8_t want[] = {'a', 'b', 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    assert_int_equal(b.data[b.len], 0);
    /* growth across many reallocations keeps content */
    for (int i = 0; i < 10000; i++)
        assert_int_equal(mh_buf_append_u8(&b, (uint8_t)i), 0);
    assert_int_equal(b.len, sizeof want + 10000);
    assert_int_equal(b.data[sizeof want + 9999], (uint8_t)9999);
    mh_buf_truncate(&b, 2);
    assert_int_equal(b.len, 2);
    mh_buf_free(&b);
    assert_null(b.data);
    mh_buf_free(&b); /* idempotent */
    mh_buf_free(NULL);
}

static void test_reserve_overflow_leaves_buffer(void **state)
{
    (void)state;
    struct mh_buf b = {0};
    assert_int_equal(mh_buf_append_str(&b, "x"), 0);
    assert_int_equal(mh_buf_reserve(&b, SIZE_MAX), MH_EOVERFLOW);
    assert_int_equal(mh_buf_reserve(&b, SIZE_MAX - 1), MH_EOVERFLOW);
    assert_int_equal(b.len, 1);
    assert_int_equal(b.data[0], 'x');
    mh_buf_free(&b);
}

static void test_cursor_bounds(void **state)
{
    (void)state;
    static const uint8_t in[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    struct mh_cursor c = mh_cursor_of(in, sizeof in);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    assert_int_equal(mh_cursor_read_u8(&c, &u8), 0);
    assert_int_equal(u8, 1);
    assert_int_equal(mh_cursor_read_u16le(&c, &u16), 0);
    assert_int_equal(u16, 0x0302);
    assert_int_equal(mh_cursor_read_u16be(&c, &u16), 0);
    assert_int_equal(u16, 0x0405);
    assert_int_equal(mh_cursor_remaining(&c), 6);
    /* a read that does not fit fails and does not move */
    assert_int_equal(mh_cursor_read_u64be(&c, &u64), MH_ETRUNC);
    assert_int_equal(mh_cursor_remaining(&c), 6);
    assert_int_equal(mh_cursor_read_u32be(&c, &u32), 0);
    assert_int_equal(u32, 0x06070809);
    const uint8_t *p;
    assert_int_equal(mh_cursor_read_bytes(&c, 3, &p), MH_ETRUNC);
    assert_int_equal(mh_cursor_read_bytes(&c, SIZE_MAX, &p), MH_ETRUNC);
    assert_int_equal(mh_cursor_skip(&c, SIZE_MAX), MH_ETRUNC);
    uint8_t two[2];
    assert_int_equal(mh_cursor_copy(&c, two, 2), 0);
    assert_int_equal(two[1], 11);
    assert_int_equal(mh_cursor_read_u8(&c, &u8), MH_ETRUNC);
    struct mh_cursor e = mh_cursor_of(NULL, 0);
    assert_int_equal(mh_cursor_read_bytes(&e, 0, &p), 0);
    assert_int_equal(mh_cursor_read_u8(&e, &u8), MH_ETRUNC);
}

static void test_steal(void **state)
{
    (void)state;
    struct mh_buf b = {0};
    assert_int_equal(mh_buf_append_str(&b, "hello"), 0);
    size_t n;
    uint8_t *p = mh_buf_steal(&b, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    assert_null(b.data);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_arith),
        cmocka_unit_test(test_append_and_encode),
        cmocka_unit_test(test_reserve_overflow_leaves_buffer),
        cmocka_unit_test(test_cursor_bounds),
        cmocka_unit_test(test_steal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
