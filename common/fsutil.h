/* fsutil: the few filesystem steps data directories need: mkdir -p and an exclusive lock. */
#ifndef MH_COMMON_FSUTIL_H
#define MH_COMMON_FSUTIL_H

#include "common/err.h"

/* mh_fs_mkdirs creates |dir| and any missing parents with mode 0700.
 * Errors: MH_EINVAL (empty or longer than 4095 bytes), -errno. */
MH_MUST_USE int mh_fs_mkdirs(const char *dir);

/* mh_fs_lock_dir takes a non-blocking exclusive flock on |dir| and returns the
 * descriptor holding it in *fd_out (close it to release). A directory locked by
 * another process gives MH_ELOCKED (logged under |comp|); other errors -errno. */
MH_MUST_USE int mh_fs_lock_dir(const char *dir, const char *comp, int *fd_out);

#endif
