/* domain: the security domain's root secret in this node: derivation, and sealing at rest.
 *
 * The root secret (32 random bytes, made at activation) is the only secret the
 * custodians' SD file protects; every other key is derived from it with
 * crypto/seal's HKDF labels. This node keeps a copy sealed under its node sealing
 * key (provider "file": 32 random bytes in a 0600 file created on first start), so
 * it restarts without custodians. The domain id (16 bytes, HKDF of the root with
 * its own label) is public: it names the domain in the replicated DomainRecord and
 * in backups, and lets a node tell a stale sealed copy from the current one.
 *
 * A struct mh_domain is immutable once made and safe to read from any thread. */
#ifndef MH_NODE_DOMAIN_H
#define MH_NODE_DOMAIN_H

#include <stdint.h>

#include "common/err.h"
#include "common/secret.h"

#define MH_DOMAIN_ID_LEN 16
#define MH_DOMAIN_SD_TAG "mhsm-domain-root-v1" /* the SD file item holding the root */

struct mh_domain {
    struct mh_secret root;   /* 32 bytes */
    struct mh_secret kwk;    /* key-wrapping key (MH_PURPOSE_KEY_WRAP) */
    struct mh_secret backup; /* backup key (MH_PURPOSE_BACKUP) */
    struct mh_secret audit;  /* audit checkpoint signing seed (MH_PURPOSE_AUDIT_SIGN) */
    uint8_t id[MH_DOMAIN_ID_LEN];
};

/* mh_domain_generate makes a domain with a fresh random root. Errors: MH_ENOMEM,
 * MH_ECRYPTO. */
MH_MUST_USE int mh_domain_generate(struct mh_domain **out);

/* mh_domain_from_root derives a domain from |root| (32 bytes, copied). */
MH_MUST_USE int mh_domain_from_root(const struct mh_secret *root, struct mh_domain **out);

void mh_domain_free(struct mh_domain *d);

/* mh_domain_node_key loads the node sealing key from |path|, creating it (0600,
 * O_EXCL, fsync'ed) when absent. Refuses a file of the wrong size, not a regular
 * file, or readable by group/others (MH_ECONFIG, reason logged). */
MH_MUST_USE int mh_domain_node_key(const char *path, struct mh_secret *out);

/* mh_domain_save writes |d|'s root sealed under |node_key| to |path| atomically
 * (temporary file, fsync, rename, fsync of the directory). Errors: -errno, MH_E*. */
MH_MUST_USE int mh_domain_save(const struct mh_domain *d, const struct mh_secret *node_key,
                               const char *path);

/* mh_domain_load reads and unseals |path|. MH_ENOTFOUND when there is no file;
 * MH_EAUTH when it was sealed under another node key or altered. */
MH_MUST_USE int mh_domain_load(const struct mh_secret *node_key, const char *path,
                               struct mh_domain **out);

#endif
