#include "node/audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/b64.h"
#include "common/buf.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "consensus/rbac.h"

#define COMP          "audit"
#define RETRY_MS      1000
#define BUF_CAP       (MH_AUDITLOG_LINE_MAX + 2)
#define DESC_MAX      256
#define NAME_FILE_LEN (6 + 20 + 6) /* audit-<20 digits>.jsonl */

struct mh_audit {
    uv_loop_t *loop;
    char *dir;
    char *resource; /* the HSM name, already a JSON string literal */
    uint64_t node_id, max_file_bytes;
    unsigned checkpoint_ms;
    int fd; /* -1: no file open */
    uint64_t file_bytes;
    uint64_t seq; /* of the next line */
    char prev[MH_AUDITLOG_HASH_HEX + 1];
    uint64_t unsigned_n; /* lines since the last checkpoint */
    uint64_t unsynced_n; /* lines since the last fdatasync was started */
    bool scanned;        /* the chain's end was read from the directory */
    bool failed;
    char refusal[320];
    EVP_PKEY *signer;
    uint8_t pub[MH_AUDITLOG_PUBKEY_LEN];
    char pub_hex[MH_AUDITLOG_PUBKEY_LEN * 2 + 1];
    uv_timer_t cp_timer, retry_timer;
    unsigned open_handles, pending_syncs;
    bool closing;
    int64_t time_sec; /* the second time_prefix renders */
    char time_prefix[24];
    char *buf; /* the record being rendered: one reusable buffer */
};

/* ---- rendering -------------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
    bool over;
};

static void put_raw(struct out *o, const char *s, size_t n)
{
    if (o->over || n > o->cap - o->len) {
        o->over = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_lit(struct out *o, const char *s)
{
    put_raw(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
    char d[24];
    int n = snprintf(d, sizeof d, "%" PRIu64, v);
    put_raw(o, d, (size_t)n);
}

static void put_i64(struct out *o, int64_t v)
{
    char d[24];
    int n = snprintf(d, sizeof d, "%" PRId64, v);
    put_raw(o, d, (size_t)n);
}

static void put_str(struct out *o, const char *s)
{
    if (o->over)
        return;
    long n = mh_auditlog_json_string(s, o->p + o->len, o->cap - o->len);
    if (n < 0) {
        o->over = true;
        return;
    }
    o->len += (size_t)n;
}

/* ,"name":"value" */
static void put_field(struct out *o, const char *name, const char *value)
{
    put_lit(o, ",\"");
    put_lit(o, name);
    put_lit(o, "\":");
    put_str(o, value);
}

/* "name":"value" inside an object, with the comma unless it is the first. */
static void put_member(struct out *o, bool *first, const char *name, const char *value)
{
    if (!*first)
        put_lit(o, ",");
    *first = false;
    put_lit(o, "\"");
    put_lit(o, name);
    put_lit(o, "\":");
    put_str(o, value);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "2024-05-01T10:00:00.123Z"; the date part is cached per second. */
static void put_time(struct mh_audit *a, struct out *o, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    int64_t sec = ms / 1000;
    if (sec != a->time_sec || a->time_prefix[0] == 0) {
        time_t t = (time_t)sec;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL)
            memset(&tm, 0, sizeof tm);
        snprintf(a->time_prefix, sizeof a->time_prefix, "%04d-%02d-%02dT%02d:%02d:%02d",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        a->time_sec = sec;
    }
    char frac[8];
    snprintf(frac, sizeof frac, ".%03dZ\"", (int)(ms % 1000));
    put_lit(o, ",\"time\":\"");
    put_lit(o, a->time_prefix);
    put_lit(o, frac);
}

/* {"seq":N,"prevHash":"...","nodeId":N */
static void put_head(struct mh_audit *a, struct out *o)
{
    put_lit(o, "{\"seq\":");
    put_u64(o, a->seq);
    put_lit(o, ",\"prevHash\":\"");
    put_lit(o, a->prev);
    put_lit(o, "\",\"nodeId\":");
    put_u64(o, a->node_id);
}

struct opname {
    const char *path, *name;
};

static const struct opname OPS[] = {
    {"/mhsm.v1.Keys/CreateKey", "KeyCreate"},
    {"/mhsm.v1.Keys/ImportKey", "KeyImport"},
    {"/mhsm.v1.Keys/GetKey", "KeyGet"},
    {"/mhsm.v1.Keys/ListKeys", "KeyList"},
    {"/mhsm.v1.Keys/ListKeyVersions", "KeyListVersions"},
    {"/mhsm.v1.Keys/UpdateKey", "KeyUpdate"},
    {"/mhsm.v1.Keys/DeleteKey", "KeyDelete"},
    {"/mhsm.v1.Keys/GetDeletedKey", "DeletedKeyGet"},
    {"/mhsm.v1.Keys/ListDeletedKeys", "DeletedKeyList"},
    {"/mhsm.v1.Keys/RecoverDeletedKey", "KeyRecover"},
    {"/mhsm.v1.Keys/PurgeDeletedKey", "KeyPurge"},
    {"/mhsm.v1.Keys/BackupKey", "KeyBackup"},
    {"/mhsm.v1.Keys/RestoreKey", "KeyRestore"},
    {"/mhsm.v1.Keys/RotateKey", "KeyRotate"},
    {"/mhsm.v1.Keys/GetRandomBytes", "RandomBytesGet"},
    {"/mhsm.v1.Crypto/Encrypt", "KeyEncrypt"},
    {"/mhsm.v1.Crypto/Decrypt", "KeyDecrypt"},
    {"/mhsm.v1.Crypto/WrapKey", "KeyWrap"},
    {"/mhsm.v1.Crypto/UnwrapKey", "KeyUnwrap"},
    {"/mhsm.v1.Crypto/Sign", "KeySign"},
    {"/mhsm.v1.Crypto/Verify", "KeyVerify"},
    {"/mhsm.v1.SecurityDomain/Download", "SecurityDomainDownload"},
    {"/mhsm.v1.SecurityDomain/GetStatus", "SecurityDomainStatus"},
    {"/mhsm.v1.AccessControl/ListRoleDefinitions", "RoleDefinitionList"},
    {"/mhsm.v1.AccessControl/GetRoleDefinition", "RoleDefinitionGet"},
    {"/mhsm.v1.AccessControl/SetRoleDefinition", "RoleDefinitionSet"},
    {"/mhsm.v1.AccessControl/DeleteRoleDefinition", "RoleDefinitionDelete"},
    {"/mhsm.v1.AccessControl/ListRoleAssignments", "RoleAssignmentList"},
    {"/mhsm.v1.AccessControl/GetRoleAssignment", "RoleAssignmentGet"},
    {"/mhsm.v1.AccessControl/CreateRoleAssignment", "RoleAssignmentCreate"},
    {"/mhsm.v1.AccessControl/DeleteRoleAssignment", "RoleAssignmentDelete"},
    {"/mhsm.v1.AccessControl/WhoAmI", "WhoAmI"},
    {"/mhsm.v1.Audit/GetAuditKey", "AuditKeyGet"},
    {"/mhsm.v1.Cluster/Status", "ClusterStatus"},
    {"/mhsm.v1.Cluster/TransferLeadership", "ClusterTransferLeadership"},
    {"/mhsm.v1.Cluster/AddNode", "ClusterAddNode"},
    {"/mhsm.v1.Cluster/RemoveNode", "ClusterRemoveNode"},
    {"/mhsm.v1.Cluster/ReplaceNode", "ClusterReplaceNode"},
    {"/grpc.health.v1.Health/Check", "HealthCheck"},
    {"/grpc.health.v1.Health/Watch", "HealthWatch"},
};

static const char *operation_name(const struct mh_rpc_done *d)
{
    if (!d->known_method || d->method == NULL)
        return "UnknownMethod";
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (strcmp(OPS[i].path, d->method) == 0)
            return OPS[i].name;
    /* A route added later without a name here: its method name. */
    const char *slash = strrchr(d->method, '/');
    return slash != NULL && slash[1] != 0 ? slash + 1 : "UnknownMethod";
}

/* The way Key Vault answers (node/audit.h). */
static int http_of_grpc(int g)
{
    switch (g) {
    case MH_GRPC_OK:
        return 200;
    case MH_GRPC_CANCELLED:
        return 499;
    case MH_GRPC_INVALID_ARGUMENT:
    case MH_GRPC_OUT_OF_RANGE:
        return 400;
    case MH_GRPC_UNAUTHENTICATED:
        return 401;
    case MH_GRPC_PERMISSION_DENIED:
        return 403;
    case MH_GRPC_NOT_FOUND:
        return 404;
    case MH_GRPC_ALREADY_EXISTS:
    case MH_GRPC_FAILED_PRECONDITION:
    case MH_GRPC_ABORTED:
        return 409;
    case MH_GRPC_RESOURCE_EXHAUSTED:
        return 429;
    case MH_GRPC_UNIMPLEMENTED:
        return 501;
    case MH_GRPC_UNAVAILABLE:
        return 503;
    case MH_GRPC_DEADLINE_EXCEEDED:
        return 504;
    default:
        return 500;
    }
}

static const char *reason_phrase(int http)
{
    switch (http) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

/* "1.2.3.4:5" -> "1.2.3.4", "[::1]:5" -> "::1". */
static void put_caller_ip(struct out *o, const char *peer)
{
    char ip[64];
    size_t n = 0;
    if (peer == NULL)
        peer = "";
    if (peer[0] == '[') {
        const char *e = strchr(peer, ']');
        n = e != NULL ? (size_t)(e - peer - 1) : strlen(peer + 1);
        peer++;
    } else {
        const char *e = strrchr(peer, ':');
        n = e != NULL ? (size_t)(e - peer) : strlen(peer);
    }
    if (n >= sizeof ip)
        n = sizeof ip - 1;
    memcpy(ip, peer, n);
    ip[n] = 0;
    put_field(o, "callerIpAddress", ip);
}

/* The status message, cut at DESC_MAX bytes on a UTF-8 boundary. */
static void put_description(struct out *o, const char *msg)
{
    char cut[DESC_MAX + 1];
    size_t n = strnlen(msg, DESC_MAX + 1);
    if (n > DESC_MAX) {
        n = DESC_MAX;
        while (n > 0 && ((unsigned char)msg[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(cut, msg, n);
    cut[n] = 0;
    put_field(o, "resultDescription", cut);
}

static void render_request(struct mh_audit *a, struct out *o, const struct mh_rpc_done *d)
{
    const struct mh_rpc_note *nt = d->note;
    int http = d->grpc_status >= 0 ? http_of_grpc(d->grpc_status) : d->http_status;
    /* The outcome on this node; a client that went away is noted apart (a write
     * it abandoned may still have been applied, and the record must say so). */
    bool ok = d->grpc_status >= 0 ? d->grpc_status == MH_GRPC_OK : http >= 200 && http < 300;
    put_head(a, o);
    put_time(a, o, d->start_unix_ms);
    put_lit(o, ",\"category\":\"AuditEvent\"");
    put_field(o, "operationName", operation_name(d));
    put_lit(o, ",\"operationVersion\":\"mhsm.v1\"");
    put_lit(o, ok ? ",\"resultType\":\"Success\"" : ",\"resultType\":\"Failure\"");
    put_field(o, "resultSignature", reason_phrase(http));
    if (d->message != NULL && d->message[0] != 0)
        put_description(o, d->message);
    put_lit(o, ",\"httpStatusCode\":");
    put_i64(o, http);
    if (d->grpc_status >= 0) {
        put_lit(o, ",\"grpcStatus\":");
        put_i64(o, d->grpc_status);
    }
    put_lit(o, ",\"durationMs\":");
    put_u64(o, d->duration_us / 1000u);
    put_caller_ip(o, d->peer);
    put_lit(o, ",\"identity\":{\"claim\":{\"oid\":");
    put_str(o, d->principal != NULL ? d->principal : "");
    put_lit(o, "}}");
    put_field(o, "requestUri", d->method != NULL ? d->method : "");
    put_lit(o, ",\"resource\":");
    put_lit(o, a->resource);
    if (nt != NULL && nt->request_id[0] != 0)
        put_field(o, "correlationId", nt->request_id);
    if (d->call_id != 0) {
        put_lit(o, ",\"callId\":");
        put_u64(o, d->call_id);
    }
    if (d->cancelled) {
        put_lit(o, ",\"clientGone\":true");
        if (d->client_status >= 0) {
            put_lit(o, ",\"clientStatus\":");
            put_i64(o, d->client_status);
        }
    }
    const char *action =
        nt != NULL && nt->action >= 0 ? mh_rbac_action_name((enum mh_action)nt->action) : NULL;
    bool props = nt != NULL && (action != NULL || nt->scope[0] != 0 || nt->decision != 0 ||
                                nt->key[0] != 0 || nt->version[0] != 0);
    if (props) {
        bool first = true;
        put_lit(o, ",\"properties\":{");
        if (action != NULL)
            put_member(o, &first, "dataAction", action);
        if (nt->scope[0] != 0)
            put_member(o, &first, "scope", nt->scope);
        if (nt->decision != 0)
            put_member(o, &first, "decision", nt->decision > 0 ? "allow" : "deny");
        if (nt->key[0] != 0)
            put_member(o, &first, "keyName", nt->key);
        if (nt->version[0] != 0)
            put_member(o, &first, "keyVersion", nt->version);
        put_lit(o, "}");
    }
    put_lit(o, "}");
}

/* ---- files ------------------------------------------------------------------- */

static void enter_failed(struct mh_audit *a, const char *what, int err);

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static bool is_audit_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != NAME_FILE_LEN || memcmp(name, "audit-", 6) != 0 ||
        strcmp(name + 26, ".jsonl") != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 6; i < 26; i++) {
        if (name[i] < '0' || name[i] > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return true;
}

/* The last complete line of |path| into |line| (BUF_CAP): 1 found, 0 none, <0. */
static int last_complete_line(const char *path, char *line, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rv = 0;
    if (fstat(fd, &st) != 0) {
        rv = -errno;
        goto out;
    }
    size_t want = 2 * (MH_AUDITLOG_LINE_MAX + 1);
    off_t from = st.st_size > (off_t)want ? st.st_size - (off_t)want : 0;
    size_t n = (size_t)(st.st_size - from);
    char *tail = malloc(n + 1);
    if (tail == NULL) {
        rv = MH_ENOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, tail + got, n - got, from + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rv = r < 0 ? -errno : -EIO;
            free(tail);
            goto out;
        }
        got += (size_t)r;
    }
    /* The line ending at the last '\n'. */
    size_t end = n;
    while (end > 0 && tail[end - 1] != '\n')
        end--;
    if (end > 0) {
        size_t start = end - 1;
        while (start > 0 && tail[start - 1] != '\n')
            start--;
        size_t l = end - 1 - start;
        if (l <= MH_AUDITLOG_LINE_MAX && (start > 0 || from == 0)) {
            memcpy(line, tail + start, l);
            line[l] = 0;
            *len = l;
            rv = 1;
        } else {
            rv = MH_ECORRUPT;
        }
    }
    free(tail);
out:
    close(fd);
    return rv;
}

/* Reads the end of the existing chain in the directory (newest file first; a
 * file holding no complete line is skipped). */
static int scan_dir(struct mh_audit *a)
{
    DIR *dp = opendir(a->dir);
    if (dp == NULL)
        return -errno;
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    int rv = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        uint64_t s;
        if (!is_audit_name(de->d_name, &s))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            uint64_t *p = realloc(seqs, nc * sizeof *p);
            if (p == NULL) {
                rv = MH_ENOMEM;
                goto out;
            }
            seqs = p;
            cap = nc;
        }
        seqs[n++] = s;
    }
    a->seq = 1;
    memset(a->prev, '0', MH_AUDITLOG_HASH_HEX);
    a->prev[MH_AUDITLOG_HASH_HEX] = 0;
    while (n > 0) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (seqs[i] > seqs[best])
                best = i;
        char path[1100];
        snprintf(path, sizeof path, "%s/audit-%020" PRIu64 ".jsonl", a->dir, seqs[best]);
        seqs[best] = seqs[--n];
        size_t len = 0;
        int got = last_complete_line(path, a->buf, &len);
        if (got < 0) {
            rv = got;
            if (got == MH_ECORRUPT)
                MH_ERROR(COMP, "cannot continue the chain: last line of %s is not a record", path);
            goto out;
        }
        if (got == 0)
            continue;
        json_error_t err;
        json_t *j = json_loadb(a->buf, len, 0, &err);
        json_t *seq = json_object_get(j, "seq"), *node = json_object_get(j, "nodeId");
        const char *ph = json_string_value(json_object_get(j, "prevHash"));
        bool ok = json_is_integer(seq) && json_integer_value(seq) > 0 && json_is_integer(node) &&
                  (uint64_t)json_integer_value(node) == a->node_id && ph != NULL &&
                  strlen(ph) == MH_AUDITLOG_HASH_HEX;
        if (ok) {
            a->seq = (uint64_t)json_integer_value(seq) + 1;
            rv = mh_auditlog_line_hash(a->buf, len, a->prev);
        } else {
            MH_ERROR(COMP,
                     "cannot continue the chain: last line of %s is not a record of node %" PRIu64,
                     path, a->node_id);
            rv = MH_ECORRUPT;
        }
        json_decref(j);
        goto out;
    }
out:
    free(seqs);
    closedir(dp);
    return rv;
}

/* Starts the file whose first line will be a->seq. */
static int sync_async(struct mh_audit *a, int fd, bool close_after);

static int open_file(struct mh_audit *a)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/audit-%020" PRIu64 ".jsonl", a->dir, a->seq);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (st.st_size > 0) {
        /* Only a file that never got a complete line can carry the next seq's
         * name (a torn first write): what it holds was never a record. */
        MH_WARN(COMP, "discarding the incomplete line in %s", path);
        if (ftruncate(fd, 0) != 0) {
            int e = -errno;
            close(fd);
            return e;
        }
    }
    a->fd = fd;
    a->file_bytes = 0;
    /* The new name must survive a power loss like the records in it: sync the
     * directory too (on the thread pool, like every sync). */
    int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || sync_async(a, dfd, true) < 0) {
        MH_WARN(COMP, "the directory entry of %s is not synced: %s", path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
    }
    MH_INFO(COMP, "file=%s first_seq=%" PRIu64, path, a->seq);
    return 0;
}

/* Appends the line in a->buf (|len| bytes, room for the newline) to the chain. */
static int append(struct mh_audit *a, size_t len)
{
    char hash[MH_AUDITLOG_HASH_HEX + 1];
    int rv = mh_auditlog_line_hash(a->buf, len, hash);
    if (rv < 0)
        return rv;
    a->buf[len] = '\n';
    rv = write_all(a->fd, a->buf, len + 1);
    if (rv < 0) {
        /* A part may have reached the file (disk full mid-line): cut it, so torn
         * lines come only from crashes and every line is a record. */
        if (ftruncate(a->fd, (off_t)a->file_bytes) != 0)
            MH_WARN(COMP, "an incomplete record stays at the end of the file: %s", strerror(errno));
        return rv;
    }
    memcpy(a->prev, hash, sizeof hash);
    a->seq++;
    a->file_bytes += len + 1;
    a->unsigned_n++;
    a->unsynced_n++;
    return 0;
}

struct syncreq {
    uv_fs_t req;
    struct mh_audit *a;
    int fd; /* a duplicate owned by this request: no close elsewhere can pull it away */
};

static void maybe_free(struct mh_audit *a);

static void on_synced(uv_fs_t *req)
{
    struct syncreq *s = mh_container_of(req, struct syncreq, req);
    struct mh_audit *a = s->a;
    int rv = (int)req->result;
    uv_fs_req_cleanup(req);
    close(s->fd);
    a->pending_syncs--;
    if (rv < 0 && !a->closing)
        enter_failed(a, "fdatasync failed", rv);
    free(s);
    maybe_free(a);
}

/* fdatasync on the thread pool (never on the loop), on a duplicate of |fd| that
 * the request owns: a rotation, a failure or the close may close |fd| (and the
 * number may be reused) while the sync still waits for a thread. |close_after|:
 * once queued, |fd| itself is closed here (the duplicate keeps the file open).
 * On failure nothing was queued and |fd| is untouched. */
static int sync_async(struct mh_audit *a, int fd, bool close_after)
{
    struct syncreq *s = calloc(1, sizeof *s);
    if (s == NULL)
        return MH_ENOMEM;
    s->a = a;
    s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (s->fd < 0) {
        int e = errno;
        free(s);
        return -e;
    }
    int rv = uv_fs_fdatasync(a->loop, &s->req, s->fd, on_synced);
    if (rv < 0) {
        close(s->fd);
        free(s);
        return rv;
    }
    if (close_after)
        close(fd);
    a->pending_syncs++;
    return 0;
}

static int write_checkpoint(struct mh_audit *a)
{
    char msg[160];
    uint8_t sig[MH_AUDITLOG_SIG_LEN];
    char sig_b64[100];
    MH_TRY(mh_auditlog_checkpoint_message(a->node_id, a->seq, a->prev, msg, sizeof msg));
    MH_TRY(mh_auditlog_sign(a->signer, msg, sig));
    struct mh_buf b = {0};
    MH_TRY(mh_b64url_encode(sig, sizeof sig, &b));
    snprintf(sig_b64, sizeof sig_b64, "%s", (const char *)b.data);
    mh_buf_free(&b);
    /* The rendering crypto/auditlog.c verifies byte for byte. */
    MH_TRY(mh_auditlog_checkpoint_line(a->seq, a->prev, a->node_id, sig_b64, a->pub_hex, a->buf,
                                       BUF_CAP - 1));
    size_t n = strlen(a->buf);
    MH_TRY(append(a, n));
    a->unsigned_n = 0;
    return 0;
}

/* Checkpoint (when signing is possible and needed), then durable: |sync| waits
 * for the fdatasync (close, explicit calls), else it runs on the thread pool. */
static int checkpoint(struct mh_audit *a, bool sync)
{
    if (a->failed || a->fd < 0)
        return a->failed ? MH_EAUDIT : 0;
    int rv = 0;
    if (a->signer != NULL && a->unsigned_n > 0) {
        rv = write_checkpoint(a);
        if (rv < 0) {
            enter_failed(a, "checkpoint write failed", rv);
            return MH_EAUDIT;
        }
    }
    if (sync) {
        if (fdatasync(a->fd) != 0) {
            enter_failed(a, "fdatasync failed", -errno);
            return MH_EAUDIT;
        }
        a->unsynced_n = 0;
    } else if (a->unsynced_n > 0) {
        rv = sync_async(a, a->fd, false);
        if (rv < 0) {
            enter_failed(a, "fdatasync failed", rv);
            return MH_EAUDIT;
        }
        a->unsynced_n = 0;
    }
    return 0;
}

/* Ends the current file (checkpoint, fdatasync, close) so the next record starts
 * the next one. */
static int rotate(struct mh_audit *a)
{
    if (a->signer != NULL && a->unsigned_n > 0) {
        int rv = write_checkpoint(a);
        if (rv < 0) {
            enter_failed(a, "checkpoint write failed", rv);
            return MH_EAUDIT;
        }
    }
    int fd = a->fd;
    a->fd = -1;
    a->unsynced_n = 0;
    if (sync_async(a, fd, true) < 0) {
        /* Could not queue it: sync here rather than lose durability. */
        int rv = fdatasync(fd) != 0 ? -errno : 0;
        close(fd);
        if (rv < 0) {
            enter_failed(a, "fdatasync failed", rv);
            return MH_EAUDIT;
        }
    }
    int rv = open_file(a);
    if (rv < 0) {
        enter_failed(a, "cannot start the next file", rv);
        return MH_EAUDIT;
    }
    return 0;
}

/* A record that is not a request: AuditStart, AuditResumed. */
static int write_event(struct mh_audit *a, const char *op, const char *prop, const char *value)
{
    struct out o = {a->buf, 0, BUF_CAP - 1, false};
    put_head(a, &o);
    put_time(a, &o, wall_ms());
    put_lit(&o, ",\"category\":\"AuditEvent\"");
    put_field(&o, "operationName", op);
    put_lit(&o, ",\"operationVersion\":\"mhsm.v1\",\"resultType\":\"Success\"");
    put_lit(&o, ",\"resource\":");
    put_lit(&o, a->resource);
    if (prop != NULL) {
        put_lit(&o, ",\"properties\":{\"");
        put_lit(&o, prop);
        put_lit(&o, "\":");
        put_str(&o, value);
        put_lit(&o, "}");
    }
    put_lit(&o, "}");
    if (o.over)
        return MH_ENOSPACE;
    return append(a, o.len);
}

/* (Re)starts writing: the chain's end (once), a new file, the first record. */
static int start(struct mh_audit *a)
{
    int rv;
    if (!a->scanned) {
        rv = mh_fs_mkdirs(a->dir);
        if (rv < 0)
            return rv;
        rv = scan_dir(a);
        if (rv < 0)
            return rv;
        a->scanned = true;
    }
    rv = open_file(a);
    if (rv < 0)
        return rv;
    if (!a->failed)
        rv = write_event(a, "AuditStart", NULL, NULL);
    else
        rv = write_event(a, "AuditResumed", "failure", a->refusal);
    if (rv < 0) {
        close(a->fd);
        a->fd = -1;
        return rv;
    }
    return 0;
}

static void on_retry(uv_timer_t *t)
{
    struct mh_audit *a = t->data;
    if (!a->failed || a->closing)
        return;
    int rv = start(a);
    if (rv < 0) {
        MH_DEBUG(COMP, "still cannot write dir=%s err=%s", a->dir, mh_strerror(rv));
        return;
    }
    a->failed = false;
    (void)uv_timer_stop(&a->retry_timer);
    MH_WARN(COMP, "resumed writing dir=%s seq=%" PRIu64 " after: %s", a->dir, a->seq - 1,
            a->refusal);
    a->refusal[0] = 0;
    if (a->signer != NULL)
        (void)checkpoint(a, false);
}

static void enter_failed(struct mh_audit *a, const char *what, int err)
{
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
    if (a->failed)
        return;
    a->failed = true;
    snprintf(a->refusal, sizeof a->refusal, "audit log cannot be written (%s: %s): %s", what,
             mh_strerror(err), mh_strerror(MH_EAUDIT));
    MH_ERROR(COMP, "refusing requests dir=%s reason=\"%s: %s\"", a->dir, what, mh_strerror(err));
    if (!a->closing)
        (void)uv_timer_start(&a->retry_timer, on_retry, RETRY_MS, RETRY_MS);
}

static void on_cp_timer(uv_timer_t *t)
{
    struct mh_audit *a = t->data;
    if (a->closing || a->failed)
        return;
    if (a->unsigned_n > 0 || a->unsynced_n > 0)
        (void)checkpoint(a, false);
}

/* ---- public ------------------------------------------------------------------ */

int mh_audit_open(uv_loop_t *loop, const struct mh_audit_config *cfg, struct mh_audit **out)
{
    if (cfg == NULL || cfg->dir == NULL || cfg->dir[0] == 0 || strlen(cfg->dir) > 1000 ||
        cfg->max_file_bytes < 4096 || cfg->checkpoint_interval_ms < 100)
        return MH_EINVAL;
    const char *name = cfg->hsm_name != NULL ? cfg->hsm_name : "";
    struct mh_audit *a = calloc(1, sizeof *a);
    if (a == NULL)
        return MH_ENOMEM;
    int rv = MH_ENOMEM;
    a->loop = loop;
    a->fd = -1;
    a->node_id = cfg->node_id;
    a->max_file_bytes = cfg->max_file_bytes;
    a->checkpoint_ms = cfg->checkpoint_interval_ms;
    a->dir = strdup(cfg->dir);
    a->buf = malloc(BUF_CAP);
    size_t rcap = strlen(name) * 6 + 3;
    a->resource = malloc(rcap);
    if (a->dir == NULL || a->buf == NULL || a->resource == NULL)
        goto err_after_alloc;
    if (mh_auditlog_json_string(name, a->resource, rcap) < 0) {
        rv = MH_EINVAL;
        goto err_after_alloc;
    }
    rv = uv_timer_init(loop, &a->cp_timer);
    if (rv < 0)
        goto err_after_alloc;
    a->open_handles++;
    a->cp_timer.data = a;
    rv = uv_timer_init(loop, &a->retry_timer);
    if (rv < 0)
        goto err_after_timers;
    a->open_handles++;
    a->retry_timer.data = a;
    /* The log never keeps the loop alive on its own. */
    uv_unref((uv_handle_t *)&a->cp_timer);
    uv_unref((uv_handle_t *)&a->retry_timer);
    rv = start(a);
    if (rv == MH_ECORRUPT || rv == MH_ENOMEM)
        goto err_after_timers;
    if (rv < 0)
        enter_failed(a, "cannot start the audit log", rv);
    (void)uv_timer_start(&a->cp_timer, on_cp_timer, a->checkpoint_ms, a->checkpoint_ms);
    *out = a;
    return 0;
err_after_timers:
    a->closing = true;
    mh_audit_close(a);
    return rv;
err_after_alloc:
    free(a->resource);
    free(a->buf);
    free(a->dir);
    free(a);
    return rv;
}

int mh_audit_set_signer(struct mh_audit *a, const struct mh_secret *seed)
{
    EVP_PKEY *k = NULL;
    MH_TRY(mh_auditlog_signer_new(seed, &k));
    int rv = mh_auditlog_public_key(k, a->pub);
    if (rv < 0) {
        EVP_PKEY_free(k);
        return rv;
    }
    EVP_PKEY_free(a->signer);
    a->signer = k;
    mh_hex_encode(a->pub, sizeof a->pub, a->pub_hex);
    if (a->failed)
        return 0; /* the checkpoint follows the resumption */
    return checkpoint(a, false);
}

int mh_audit_public_key(const struct mh_audit *a, uint8_t out[MH_AUDITLOG_PUBKEY_LEN])
{
    if (a == NULL || a->signer == NULL)
        return MH_ENOTACTIVE;
    memcpy(out, a->pub, MH_AUDITLOG_PUBKEY_LEN);
    return 0;
}

int mh_audit_request(struct mh_audit *a, const struct mh_rpc_done *d)
{
    if (a->failed || a->closing)
        return MH_EAUDIT;
    if (a->file_bytes >= a->max_file_bytes && rotate(a) < 0)
        return MH_EAUDIT;
    struct out o = {a->buf, 0, BUF_CAP - 1, false};
    render_request(a, &o, d);
    if (o.over) {
        /* Cannot happen with the transport's bounded fields; refuse rather than
         * serve without a record. */
        MH_ERROR(COMP, "record too long call=%" PRIu64, d->call_id);
        return MH_EAUDIT;
    }
    int rv = append(a, o.len);
    if (rv < 0) {
        enter_failed(a, "write failed", rv);
        return MH_EAUDIT;
    }
    return 0;
}

const char *mh_audit_refusal(const struct mh_audit *a)
{
    return a != NULL && a->failed ? a->refusal : NULL;
}

int mh_audit_checkpoint(struct mh_audit *a)
{
    return checkpoint(a, true);
}

const char *mh_audit_dir(const struct mh_audit *a)
{
    return a->dir;
}

static void maybe_free(struct mh_audit *a)
{
    if (!a->closing || a->open_handles > 0 || a->pending_syncs > 0)
        return;
    EVP_PKEY_free(a->signer);
    free(a->resource);
    if (a->buf != NULL)
        mh_wipe(a->buf, BUF_CAP);
    free(a->buf);
    free(a->dir);
    free(a);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct mh_audit *a = h->data;
    a->open_handles--;
    maybe_free(a);
}

void mh_audit_close(struct mh_audit *a)
{
    if (a == NULL)
        return;
    if (!a->failed && a->fd >= 0)
        (void)checkpoint(a, true);
    a->closing = true;
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
    unsigned handles = a->open_handles;
    if (handles >= 1)
        uv_close((uv_handle_t *)&a->cp_timer, on_timer_closed);
    if (handles >= 2)
        uv_close((uv_handle_t *)&a->retry_timer, on_timer_closed);
    maybe_free(a);
}

int mh_audit_rpc_hook(void *data, const struct mh_rpc_done *d)
{
    return mh_audit_request(data, d);
}

const char *mh_audit_rpc_admit(void *data)
{
    return mh_audit_refusal(data);
}
