#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

int mh_fs_mkdirs(const char *dir)
{
    size_t len = strlen(dir);
    if (len == 0 || len >= 4096)
        return MH_EINVAL;
    char path[4096];
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != 0)
            continue;
        char saved = path[i];
        path[i] = 0;
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -errno;
        path[i] = saved;
    }
    return 0;
}

int mh_fs_lock_dir(const char *dir, const char *comp, int *fd_out)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK) {
            MH_ERROR(comp, "msg=\"directory is in use by another process\" dir=%s", dir);
            return MH_ELOCKED;
        }
        return -e;
    }
    *fd_out = fd;
    return 0;
}

int mh_fs_read_fd(int fd, uint8_t *p, size_t cap, size_t *len)
{
    size_t off = 0;
    for (;;) {
        uint8_t extra;
        uint8_t *dst = off < cap ? p + off : &extra;
        size_t want = off < cap ? cap - off : 1;
        ssize_t n = read(fd, dst, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        if (off == cap)
            return MH_ETOOBIG;
        off += (size_t)n;
    }
    *len = off;
    return 0;
}

int mh_fs_write_fd(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int mh_fs_sync_parent(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n >= sizeof tmp)
        return MH_EINVAL;
    memcpy(tmp, path, n + 1);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rv = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rv;
}
