#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
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
