#define _GNU_SOURCE
#include "node/domain.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "crypto/rand.h"
#include "crypto/seal.h"

#define ROOT_LEN     32
#define NODE_KEY_LEN 32
#define SEALED_MAX   256
static const char seal_aad[] = "mhsm v1 node-sealed domain root";
static const char id_label[] = "mhsm v1 domain id";

int mh_domain_from_root(const struct mh_secret *root, struct mh_domain **out)
{
    if (root->len != ROOT_LEN)
        return MH_EINVAL;
    struct mh_domain *d = calloc(1, sizeof *d);
    if (d == NULL)
        return MH_ENOMEM;
    struct mh_secret id = {0};
    int rv = mh_secret_dup(&d->root, root->data, root->len);
    if (rv < 0)
        goto err;
    rv = mh_seal_derive(&d->root, MH_PURPOSE_KEY_WRAP, &d->kwk);
    if (rv < 0)
        goto err;
    rv = mh_seal_derive(&d->root, MH_PURPOSE_BACKUP, &d->backup);
    if (rv < 0)
        goto err;
    rv = mh_seal_derive(&d->root, MH_PURPOSE_AUDIT_SIGN, &d->audit);
    if (rv < 0)
        goto err;
    rv = mh_hkdf_sha256(d->root.data, d->root.len, NULL, 0, (const uint8_t *)id_label,
                        sizeof id_label - 1, MH_DOMAIN_ID_LEN, &id);
    if (rv < 0)
        goto err;
    memcpy(d->id, id.data, MH_DOMAIN_ID_LEN);
    mh_secret_free(&id);
    *out = d;
    return 0;
err:
    mh_domain_free(d);
    return rv;
}

int mh_domain_generate(struct mh_domain **out)
{
    struct mh_secret root = {0};
    MH_TRY(mh_rand_secret(&root, ROOT_LEN));
    int rv = mh_domain_from_root(&root, out);
    mh_secret_free(&root);
    return rv;
}

void mh_domain_free(struct mh_domain *d)
{
    if (d == NULL)
        return;
    mh_secret_free(&d->root);
    mh_secret_free(&d->kwk);
    mh_secret_free(&d->backup);
    mh_secret_free(&d->audit);
    free(d);
}

int mh_domain_node_key(const char *path, struct mh_secret *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        struct mh_secret k = {0};
        MH_TRY(mh_rand_secret(&k, NODE_KEY_LEN));
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            int e = -errno;
            mh_secret_free(&k);
            return e;
        }
        int rv = mh_fs_write_fd(fd, k.data, k.len);
        if (rv == 0 && fsync(fd) != 0)
            rv = -errno;
        close(fd);
        if (rv == 0)
            rv = mh_fs_sync_parent(path);
        if (rv < 0) {
            unlink(path);
            mh_secret_free(&k);
            return rv;
        }
        MH_INFO("domain", "created node sealing key file %s", path);
        *out = k;
        return 0;
    }
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_size != NODE_KEY_LEN) {
        close(fd);
        MH_ERROR("domain",
                 "node sealing key %s must be a regular %d-byte file with mode 0600 (mode %o, "
                 "size %lld)",
                 path, NODE_KEY_LEN, (unsigned)(st.st_mode & 0777), (long long)st.st_size);
        return MH_ECONFIG;
    }
    int rv = mh_secret_alloc(out, NODE_KEY_LEN);
    size_t n = 0;
    if (rv == 0)
        rv = mh_fs_read_fd(fd, out->data, out->len, &n);
    close(fd);
    if (rv == 0 && n != NODE_KEY_LEN)
        rv = MH_ECONFIG;
    if (rv < 0)
        mh_secret_free(out);
    return rv;
}

int mh_domain_save(const struct mh_domain *d, const struct mh_secret *node_key, const char *path)
{
    struct mh_buf sealed = {0};
    MH_TRY(mh_seal(node_key, (const uint8_t *)seal_aad, sizeof seal_aad - 1, d->root.data,
                   d->root.len, &sealed));
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rv = 0;
    if (n < 0 || (size_t)n >= sizeof tmp) {
        rv = MH_EINVAL;
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rv = -errno;
        goto out;
    }
    rv = mh_fs_write_fd(fd, sealed.data, sealed.len);
    if (rv == 0 && fsync(fd) != 0)
        rv = -errno;
    close(fd);
    if (rv == 0 && rename(tmp, path) != 0)
        rv = -errno;
    if (rv == 0)
        rv = mh_fs_sync_parent(path);
    if (rv < 0)
        unlink(tmp);
out:
    mh_buf_free(&sealed);
    return rv;
}

int mh_domain_load(const struct mh_secret *node_key, const char *path, struct mh_domain **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? MH_ENOTFOUND : -errno;
    uint8_t buf[SEALED_MAX];
    size_t n = 0;
    int rv = mh_fs_read_fd(fd, buf, sizeof buf, &n);
    close(fd);
    if (rv < 0)
        return rv;
    struct mh_secret root = {0};
    MH_TRY(mh_unseal(node_key, (const uint8_t *)seal_aad, sizeof seal_aad - 1, buf, n, &root));
    rv = mh_domain_from_root(&root, out);
    mh_secret_free(&root);
    return rv;
}
