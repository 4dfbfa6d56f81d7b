/* fsutil: the few filesystem steps data directories need: mkdir -p and an exclusive lock. */
#ifndef MH_COMMON_FSUTIL_H
#define MH_COMMON_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* mh_fs_mkdirs creates |dir| and any missing parents with mode 0700.
 * Errors: MH_EINVAL (empty or longer than 4095 bytes), -errno. */
MH_MUST_USE int mh_fs_mkdirs(const char *dir);

/* mh_fs_lock_dir takes a non-blocking exclusive flock on |dir| and returns the
 * descriptor holding it in *fd_out (close it to release). A directory locked by
 * another process gives MH_ELOCKED (logged under |comp|); other errors -errno. */
MH_MUST_USE int mh_fs_lock_dir(const char *dir, const char *comp, int *fd_out);

/* mh_fs_read_fd reads |fd| to its end into |p| (at most |cap| bytes), retrying on
 * EINTR; *len gets the bytes read. MH_ETOOBIG if the file holds more than |cap|
 * bytes, -errno on a read error. */
MH_MUST_USE int mh_fs_read_fd(int fd, uint8_t *p, size_t cap, size_t *len);

/* mh_fs_write_fd writes all |len| bytes, retrying on EINTR and short writes. -errno. */
MH_MUST_USE int mh_fs_write_fd(int fd, const uint8_t *p, size_t len);

/* mh_fs_sync_parent fsyncs the directory holding |path|, so a create or rename in
 * it is durable. -errno, MH_EINVAL for a path over 4095 bytes. */
MH_MUST_USE int mh_fs_sync_parent(const char *path);

#endif
