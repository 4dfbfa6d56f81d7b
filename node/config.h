/* config: mhsmd's INI configuration (libinih), with defaults, ranges and precise errors.
 *
 * deploy/mhsmd.example.ini documents every option. Unknown sections or keys,
 * values out of range and missing required options are errors that name the
 * file, section and option: a typo must never silently fall back to a default. */
#ifndef MH_NODE_CONFIG_H
#define MH_NODE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "consensus/cluster.h"

#define MH_CONFIG_MAX_OPERATORS 16
#define MH_CONFIG_MAX_ADMINS    16

struct mh_config {
    /* [node] */
    char name[128];     /* HSM name in kid URIs; default "mhsm.local" */
    char data_dir[512]; /* required */
    int log_level;      /* enum mh_log_level; default info */
    /* [api] */
    char api_host[64];                        /* from listen; default 127.0.0.1 */
    uint16_t api_port;                        /* default 8443 */
    char cert[512], key[512], client_ca[512]; /* required */
    size_t max_message;                       /* default 4 MiB; 1 KiB .. 64 MiB */
    uint32_t max_streams;                     /* default 100 */
    uint32_t max_connections;                 /* default 1024 */
    /* [raft] */
    uint64_t raft_id;             /* default 1 */
    char raft_address[128];       /* default 127.0.0.1:9443 */
    unsigned election_timeout_ms; /* default 1000 */
    unsigned heartbeat_ms;        /* default 100 */
    unsigned snapshot_threshold;  /* default 8192 */
    unsigned snapshot_trailing;   /* default 8192 */
    /* The peer channel's identity; default: [api] cert, key and client_ca. */
    char raft_cert[512], raft_key[512], raft_ca[512];
    /* members = "1@host:port, 2@host:port, 3@host:port": the bootstrap configuration,
     * identical on every node, containing this node (same id and address). Default:
     * this node alone. */
    struct mh_cluster_member members[MH_CLUSTER_MAX_MEMBERS];
    size_t n_members;
    bool join; /* true: never bootstrap, wait for the operator's `mhsm cluster add` */
    /* [cluster] operators = principal, principal...: who may use the control plane */
    char operators[MH_CONFIG_MAX_OPERATORS][256];
    size_t n_operators;
    /* [rbac] administrators = principal, principal...: the initial administrators
     * (Azure's --administrators). They may download the security domain; activation
     * assigns each of them Managed HSM Administrator at "/". Required unless join. */
    char administrators[MH_CONFIG_MAX_ADMINS][256];
    size_t n_administrators;
    unsigned max_custom_roles;        /* default 50; 1..10000 */
    unsigned max_assignments_hsm;     /* default 50 (scope "/" and "/keys"); 1..100000 */
    unsigned max_assignments_per_key; /* default 10; 1..10000 */
    /* [audit] */
    char audit_dir[512];           /* default <data_dir>/audit */
    uint64_t audit_max_file_bytes; /* default 64 MiB; 4 KiB .. 64 GiB */
    unsigned audit_checkpoint_ms;  /* default 10000; 100 .. 3600000 */
    /* [limits] */
    unsigned retention_days_default; /* default 90; 7..90 */
    unsigned max_versions_per_key;   /* default 100; 1..10000 */
    size_t lmdb_map_size;            /* default 8 GiB */
    /* [workers] */
    unsigned threads; /* 0 = one per CPU */
    /* [seal] */
    char seal_key_file[512]; /* default <data_dir>/node-seal.key */
};

/* mh_config_load reads |path| into |cfg| (defaults first). On error writes one
 * line naming file, section and option into |err| and returns MH_ECONFIG (or -errno
 * when the file cannot be opened). */
MH_MUST_USE int mh_config_load(const char *path, struct mh_config *cfg, char *err, size_t err_len);

#endif
