#include "node/config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct parse_ctx {
    struct mh_config *cfg;
    const char *path;
    char *err;
    size_t err_len;
    bool failed;
};

static bool fail(struct parse_ctx *c, const char *section, const char *name, const char *why)
{
    if (!c->failed)
        snprintf(c->err, c->err_len, "%s: [%s] %s: %s", c->path, section, name, why);
    c->failed = true;
    return false;
}

static bool copy_str(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n >= cap)
        return false;
    memcpy(dst, v, n + 1);
    return true;
}

static bool parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    if (*v < '0' || *v > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0' || x < min || x > max)
        return false;
    *out = x;
    return true;
}

static bool parse_hostport(const char *v, char *host, size_t host_cap, uint16_t *port)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v)
        return false;
    size_t hl = (size_t)(colon - v);
    const char *h = v;
    if (*h == '[' && hl >= 2 && h[hl - 1] == ']') { /* [::1]:8443 */
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= host_cap)
        return false;
    uint64_t p;
    if (!parse_u64(colon + 1, 0, 65535, &p))
        return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return true;
}

/* Calls |fn| on each comma-separated item of |v| (blanks around items trimmed, item
 * NUL-terminated, at most 255 bytes); the first message |fn| returns stops the walk.
 * An empty item is |empty_msg|. */
static const char *each_item(const char *v, const char *empty_msg,
                             const char *(*fn)(struct mh_config *cfg, const char *item),
                             struct mh_config *cfg)
{
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0)
            return empty_msg;
        char item[256];
        if (len >= sizeof item)
            return "list item too long";
        memcpy(item, p, len);
        item[len] = '\0';
        const char *why = fn(cfg, item);
        if (why != NULL || end == NULL)
            return why;
        p = end + 1;
    }
}

/* "1@127.0.0.1:9443": ids unique, 1..1000000, addresses HOST:PORT and unique. */
static const char *add_member(struct mh_config *cfg, const char *item)
{
    if (cfg->n_members == MH_CLUSTER_MAX_MEMBERS)
        return "too many members (at most 16)";
    const char *at = strchr(item, '@');
    if (at == NULL || (size_t)(at - item) >= 16)
        return "each member must be ID@HOST:PORT";
    char idtext[16];
    memcpy(idtext, item, (size_t)(at - item));
    idtext[at - item] = '\0';
    uint64_t id;
    if (!parse_u64(idtext, 1, 1000000, &id))
        return "member id must be an integer in 1..1000000";
    const char *addr = at + 1;
    char host[128];
    uint16_t port;
    if (!parse_hostport(addr, host, sizeof host, &port) || port == 0 ||
        strlen(addr) >= sizeof cfg->members[0].address)
        return "member address must be HOST:PORT";
    for (size_t i = 0; i < cfg->n_members; i++) {
        if (cfg->members[i].id == id)
            return "duplicate member id";
        if (strcmp(cfg->members[i].address, addr) == 0)
            return "duplicate member address";
    }
    cfg->members[cfg->n_members].id = id;
    strcpy(cfg->members[cfg->n_members].address, addr);
    cfg->n_members++;
    return NULL;
}

static const char *add_operator(struct mh_config *cfg, const char *item)
{
    if (cfg->n_operators == MH_CONFIG_MAX_OPERATORS)
        return "too many operators (at most 16)";
    if (strncmp(item, MH_PEER_URI_PREFIX, strlen(MH_PEER_URI_PREFIX)) == 0)
        return "a node certificate cannot be an operator";
    _Static_assert(sizeof cfg->operators[0] >= 256, "an operator slot holds any list item");
    strcpy(cfg->operators[cfg->n_operators++], item);
    return NULL;
}

static const char *add_administrator(struct mh_config *cfg, const char *item)
{
    if (cfg->n_administrators == MH_CONFIG_MAX_ADMINS)
        return "too many administrators (at most 16)";
    if (strncmp(item, MH_PEER_URI_PREFIX, strlen(MH_PEER_URI_PREFIX)) == 0)
        return "a node certificate cannot be an administrator";
    for (const char *p = item; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return "a principal id is printable ASCII without spaces";
    _Static_assert(sizeof cfg->administrators[0] >= 256, "a slot holds any list item");
    strcpy(cfg->administrators[cfg->n_administrators++], item);
    return NULL;
}

static bool parse_bool(const char *v, bool *out)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "1") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "0") == 0) {
        *out = false;
        return true;
    }
    return false;
}

#define MATCH(s, n) (strcmp(section, s) == 0 && strcmp(name, n) == 0)
#define NUM(var, min, max, type)                                                                   \
    do {                                                                                           \
        uint64_t x_;                                                                               \
        if (!parse_u64(value, min, max, &x_))                                                      \
            return fail(c, section, name, "must be an integer in " #min ".." #max);                \
        var = (type)x_;                                                                            \
        return true;                                                                               \
    } while (0)
#define STR(var)                                                                                   \
    do {                                                                                           \
        if (!copy_str(var, sizeof(var), value))                                                    \
            return fail(c, section, name, "empty or too long");                                    \
        return true;                                                                               \
    } while (0)

/* Debian's libinih is built without INI_HANDLER_LINENO: errors name the section and
 * option instead of the line. */
static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *c = user;
    struct mh_config *cfg = c->cfg;
    if (c->failed)
        return 0;
    if (name == NULL) /* a section header on its own */
        return 1;
    if (MATCH("node", "name")) {
        for (const char *p = value; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
                return fail(c, section, name, "only letters, digits, '-' and '.'");
        STR(cfg->name);
    }
    if (MATCH("node", "data_dir"))
        STR(cfg->data_dir);
    if (MATCH("node", "log_level")) {
        int l = mh_log_level_from_name(value);
        if (l < 0)
            return fail(c, section, name, "must be debug, info, warn or error");
        cfg->log_level = l;
        return 1;
    }
    if (MATCH("api", "listen")) {
        if (!parse_hostport(value, cfg->api_host, sizeof cfg->api_host, &cfg->api_port))
            return fail(c, section, name, "must be HOST:PORT");
        return 1;
    }
    if (MATCH("api", "cert"))
        STR(cfg->cert);
    if (MATCH("api", "key"))
        STR(cfg->key);
    if (MATCH("api", "client_ca"))
        STR(cfg->client_ca);
    if (MATCH("api", "max_message_bytes"))
        NUM(cfg->max_message, 1024, 67108864, size_t);
    if (MATCH("api", "max_streams"))
        NUM(cfg->max_streams, 1, 10000, uint32_t);
    if (MATCH("api", "max_connections"))
        NUM(cfg->max_connections, 1, 100000, uint32_t);
    if (MATCH("raft", "id"))
        NUM(cfg->raft_id, 1, 1000000, uint64_t);
    if (MATCH("raft", "address"))
        STR(cfg->raft_address);
    if (MATCH("raft", "election_timeout_ms"))
        NUM(cfg->election_timeout_ms, 100, 60000, unsigned);
    if (MATCH("raft", "heartbeat_ms"))
        NUM(cfg->heartbeat_ms, 10, 10000, unsigned);
    if (MATCH("raft", "snapshot_threshold"))
        NUM(cfg->snapshot_threshold, 16, 10000000, unsigned);
    if (MATCH("raft", "snapshot_trailing"))
        NUM(cfg->snapshot_trailing, 4, 10000000, unsigned);
    if (MATCH("raft", "cert"))
        STR(cfg->raft_cert);
    if (MATCH("raft", "key"))
        STR(cfg->raft_key);
    if (MATCH("raft", "ca"))
        STR(cfg->raft_ca);
    if (MATCH("raft", "members")) {
        cfg->n_members = 0;
        const char *why =
            each_item(value, "empty member (expected ID@HOST:PORT, ...)", add_member, cfg);
        if (why != NULL)
            return fail(c, section, name, why);
        return 1;
    }
    if (MATCH("raft", "join")) {
        if (!parse_bool(value, &cfg->join))
            return fail(c, section, name, "must be true or false");
        return 1;
    }
    if (MATCH("cluster", "operators")) {
        cfg->n_operators = 0;
        const char *why = each_item(value, "empty principal in the list", add_operator, cfg);
        if (why != NULL)
            return fail(c, section, name, why);
        return 1;
    }
    if (MATCH("rbac", "administrators")) {
        cfg->n_administrators = 0;
        const char *why = each_item(value, "empty principal in the list", add_administrator, cfg);
        if (why != NULL)
            return fail(c, section, name, why);
        return 1;
    }
    if (MATCH("rbac", "max_custom_roles"))
        NUM(cfg->max_custom_roles, 1, 10000, unsigned);
    if (MATCH("rbac", "max_assignments_hsm"))
        NUM(cfg->max_assignments_hsm, 1, 100000, unsigned);
    if (MATCH("rbac", "max_assignments_per_key"))
        NUM(cfg->max_assignments_per_key, 1, 10000, unsigned);
    if (MATCH("audit", "dir"))
        STR(cfg->audit_dir);
    if (MATCH("audit", "max_file_bytes"))
        NUM(cfg->audit_max_file_bytes, 4096, 68719476736, uint64_t);
    if (MATCH("audit", "checkpoint_interval_ms"))
        NUM(cfg->audit_checkpoint_ms, 100, 3600000, unsigned);
    if (MATCH("limits", "retention_days_default"))
        NUM(cfg->retention_days_default, 7, 90, unsigned);
    if (MATCH("limits", "max_versions_per_key"))
        NUM(cfg->max_versions_per_key, 1, 10000, unsigned);
    if (MATCH("limits", "lmdb_map_size_mb"))
        NUM(cfg->lmdb_map_size, 16, 1048576, size_t) /* scaled after parsing */;
    if (MATCH("workers", "threads"))
        NUM(cfg->threads, 0, 256, unsigned);
    if (MATCH("seal", "provider")) {
        if (strcmp(value, "file") != 0)
            return fail(c, section, name, "only \"file\" is supported");
        return 1;
    }
    if (MATCH("seal", "key_file"))
        STR(cfg->seal_key_file);
    return fail(c, section, name, "unknown option");
}

int mh_config_load(const char *path, struct mh_config *cfg, char *err, size_t err_len)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->name, "mhsm.local");
    cfg->log_level = MH_LOG_INFO;
    strcpy(cfg->api_host, "127.0.0.1");
    cfg->api_port = 8443;
    cfg->max_message = 4u << 20;
    cfg->max_streams = 100;
    cfg->max_connections = 1024;
    cfg->raft_id = 1;
    strcpy(cfg->raft_address, "127.0.0.1:9443");
    cfg->election_timeout_ms = 1000;
    cfg->heartbeat_ms = 100;
    cfg->snapshot_threshold = 8192;
    cfg->snapshot_trailing = 8192;
    cfg->retention_days_default = 90;
    cfg->max_versions_per_key = 100;
    cfg->lmdb_map_size = 8192; /* MiB */
    cfg->max_custom_roles = 50;
    cfg->max_assignments_hsm = 50;
    cfg->max_assignments_per_key = 10;
    cfg->audit_max_file_bytes = (uint64_t)64 << 20;
    cfg->audit_checkpoint_ms = 10000;
    struct parse_ctx c = {.cfg = cfg, .path = path, .err = err, .err_len = err_len};
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        snprintf(err, err_len, "%s: %s", path, strerror(e));
        return -e;
    }
    int rv = ini_parse_file(f, on_entry, &c);
    fclose(f);
    if (c.failed)
        return MH_ECONFIG;
    if (rv != 0) {
        snprintf(err, err_len, "%s:%d: syntax error", path, rv);
        return MH_ECONFIG;
    }
    cfg->lmdb_map_size *= (size_t)1 << 20;
    const char *missing = cfg->data_dir[0] == '\0'    ? "[node] data_dir"
                          : cfg->cert[0] == '\0'      ? "[api] cert"
                          : cfg->key[0] == '\0'       ? "[api] key"
                          : cfg->client_ca[0] == '\0' ? "[api] client_ca"
                                                      : NULL;
    if (missing != NULL) {
        snprintf(err, err_len, "%s: %s is required", path, missing);
        return MH_ECONFIG;
    }
    if (cfg->heartbeat_ms * 2 > cfg->election_timeout_ms) {
        snprintf(err, err_len,
                 "%s: [raft] heartbeat_ms must be at most half of election_timeout_ms", path);
        return MH_ECONFIG;
    }
    if (cfg->raft_cert[0] == '\0')
        strcpy(cfg->raft_cert, cfg->cert);
    if (cfg->raft_key[0] == '\0')
        strcpy(cfg->raft_key, cfg->key);
    if (cfg->raft_ca[0] == '\0')
        strcpy(cfg->raft_ca, cfg->client_ca);
    if (cfg->n_members == 0 && !cfg->join) {
        cfg->members[0].id = cfg->raft_id;
        strcpy(cfg->members[0].address, cfg->raft_address);
        cfg->n_members = 1;
    } else if (cfg->n_members > 0) {
        bool self = false;
        for (size_t i = 0; i < cfg->n_members; i++) {
            if (cfg->members[i].id == cfg->raft_id) {
                if (strcmp(cfg->members[i].address, cfg->raft_address) != 0) {
                    snprintf(err, err_len,
                             "%s: [raft] members: this node (id %llu) is listed with address %s "
                             "but [raft] address is %s",
                             path, (unsigned long long)cfg->raft_id, cfg->members[i].address,
                             cfg->raft_address);
                    return MH_ECONFIG;
                }
                self = true;
            }
        }
        if (!self && !cfg->join) {
            snprintf(err, err_len, "%s: [raft] members must include this node (id %llu)", path,
                     (unsigned long long)cfg->raft_id);
            return MH_ECONFIG;
        }
        if (cfg->join) {
            snprintf(err, err_len,
                     "%s: [raft] join = true and members are exclusive: a joining node learns "
                     "the members from the leader",
                     path);
            return MH_ECONFIG;
        }
    }
    if (cfg->n_administrators == 0 && !cfg->join) {
        snprintf(err, err_len,
                 "%s: [rbac] administrators is required: the principals allowed to activate "
                 "the HSM (each becomes Managed HSM Administrator)",
                 path);
        return MH_ECONFIG;
    }
    if (cfg->audit_dir[0] == '\0') {
        int n = snprintf(cfg->audit_dir, sizeof cfg->audit_dir, "%s/audit", cfg->data_dir);
        if (n < 0 || (size_t)n >= sizeof cfg->audit_dir) {
            snprintf(err, err_len, "%s: [node] data_dir too long", path);
            return MH_ECONFIG;
        }
    }
    if (cfg->seal_key_file[0] == '\0') {
        int n = snprintf(cfg->seal_key_file, sizeof cfg->seal_key_file, "%s/node-seal.key",
                         cfg->data_dir);
        if (n < 0 || (size_t)n >= sizeof cfg->seal_key_file) {
            snprintf(err, err_len, "%s: [node] data_dir too long", path);
            return MH_ECONFIG;
        }
    }
    return 0;
}
