#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fsutil.h"

static void test_hex(void **state)
{
    (void)state;
    char out[9];
    mh_hex_encode("\x00\x9f\xa0\xff", 4, out);
    assert_string_equal(out, "009fa0ff");
    mh_hex_encode("", 0, out);
    assert_string_equal(out, "");
}

static void test_read_write(void **state)
{
    (void)state;
    char path[512];
    tu_path(path, sizeof path, "fsutil.bin");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(mh_fs_write_fd(fd, (const uint8_t *)"0123456789", 10), 0);
    assert_int_equal(close(fd), 0);
    assert_int_equal(mh_fs_sync_parent(path), 0);
    uint8_t buf[16];
    size_t len = 0;
    fd = open(path, O_RDONLY);
    assert_int_equal(mh_fs_read_fd(fd, buf, 10, &len), 0); /* exactly the capacity */
    assert_int_equal(len, 10);
    assert_memory_equal(buf, "0123456789", 10);
    close(fd);
    fd = open(path, O_RDONLY);
    assert_int_equal(mh_fs_read_fd(fd, buf, 9, &len), MH_ETOOBIG); /* one byte over */
    close(fd);
    fd = open(path, O_RDONLY);
    assert_int_equal(mh_fs_read_fd(fd, buf, sizeof buf, &len), 0);
    assert_int_equal(len, 10);
    close(fd);
    assert_int_equal(mh_fs_read_fd(-1, buf, sizeof buf, &len), -EBADF);
    unlink(path);
}

static void test_mkdirs_lock(void **state)
{
    (void)state;
    char dir[512];
    tu_path(dir, sizeof dir, "fsutil-a/b/c");
    assert_int_equal(mh_fs_mkdirs(dir), 0);
    assert_int_equal(mh_fs_mkdirs(dir), 0); /* existing: fine */
    assert_int_equal(mh_fs_mkdirs(""), MH_EINVAL);
    int fd1 = -1, fd2 = -1;
    assert_int_equal(mh_fs_lock_dir(dir, "test", &fd1), 0);
    assert_int_equal(mh_fs_lock_dir(dir, "test", &fd2), MH_ELOCKED); /* separate open file */
    close(fd1);
    assert_int_equal(mh_fs_lock_dir(dir, "test", &fd2), 0);
    close(fd2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_read_write),
        cmocka_unit_test(test_mkdirs_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
