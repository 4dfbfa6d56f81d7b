#define _GNU_SOURCE
#include "client/logverify.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <openssl/crypto.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/json_out.h"
#include "common/fsutil.h"

#define MAX_KEY_FILE 4096u

static int parse_hex_key(const char *s, size_t len, uint8_t pub[MH_AUDITLOG_PUBKEY_LEN])
{
    if (len != 2 * MH_AUDITLOG_PUBKEY_LEN)
        return MH_EINVAL;
    for (size_t i = 0; i < MH_AUDITLOG_PUBKEY_LEN; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)s[2 * i]),
            lo = OPENSSL_hexchar2int((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return MH_EINVAL;
        pub[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int mh_logverify_parse_key(const char *arg, uint8_t pub[MH_AUDITLOG_PUBKEY_LEN], char *err,
                           size_t errlen)
{
    if (arg[0] != '@') {
        if (parse_hex_key(arg, strlen(arg), pub) < 0) {
            snprintf(err, errlen, "--public-key takes 64 hex digits or @FILE");
            return MH_EINVAL;
        }
        return 0;
    }
    const char *path = arg + 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
        return -e;
    }
    char buf[MAX_KEY_FILE];
    size_t got = 0;
    int rv = mh_fs_read_fd(fd, (uint8_t *)buf, sizeof buf, &got);
    close(fd);
    if (rv < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, mh_strerror(rv));
        return rv;
    }
    size_t b = 0, e = got;
    while (b < e && isspace((unsigned char)buf[b]))
        b++;
    while (e > b && isspace((unsigned char)buf[e - 1]))
        e--;
    bool ok = false;
    if (got < sizeof buf && b < e && buf[b] == '{') {
        /* The JSON `mhsm audit key` prints: its "publicKey" member. */
        json_t *root = json_loadb(buf + b, e - b, 0, NULL);
        const char *hex = json_string_value(json_object_get(root, "publicKey"));
        ok = hex != NULL && parse_hex_key(hex, strlen(hex), pub) == 0;
        json_decref(root);
    } else if (got < sizeof buf) {
        ok = parse_hex_key(buf + b, e - b, pub) == 0;
    }
    if (!ok) {
        snprintf(err, errlen,
                 "%s does not hold a public key (64 hex digits, or the JSON of `mhsm audit key`)",
                 path);
        return MH_EINVAL;
    }
    return 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s != NULL ? s + 1 : p;
}

static int cmp_paths(const void *a, const void *b)
{
    const char *pa = *(const char *const *)a, *pb = *(const char *const *)b;
    int c = strcmp(base_name(pa), base_name(pb));
    return c != 0 ? c : strcmp(pa, pb);
}

void mh_logverify_sort(const char **paths, size_t n)
{
    qsort(paths, n, sizeof *paths, cmp_paths);
}

/* Opens and closes |path| so an unreadable file is reported as one. */
static int check_readable(const char *path, FILE *errf)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(errf, "error: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!ok) {
        fprintf(errf, "error: cannot read %s: not a regular file\n", path);
        return -1;
    }
    return 0;
}

static int set_num(json_t *o, const char *name, uint64_t v)
{
    return json_object_set_new(o, name, json_integer((json_int_t)(v > INT64_MAX ? INT64_MAX : v)));
}

static int emit(json_t *o, bool table, FILE *out, FILE *errf)
{
    if (o == NULL) {
        fputs("error: out of memory\n", errf);
        return 1;
    }
    int rv = mh_json_out_print(o, table, out);
    json_decref(o);
    if (rv < 0) {
        fprintf(errf, "error: cannot write the output: %s\n", mh_strerror(rv));
        return 1;
    }
    return 0;
}

static void put_clean(FILE *f, const char *s);

static int report_ok(const struct mh_auditlog_report *r, size_t n, bool table, FILE *out,
                     FILE *errf)
{
    json_t *o = json_object();
    int bad = o == NULL;
    bad = bad || json_object_set_new(o, "ok", json_true()) != 0;
    bad = bad || set_num(o, "files", n) != 0;
    bad = bad || set_num(o, "records", r->records) != 0;
    bad = bad || set_num(o, "checkpoints", r->checkpoints) != 0;
    bad = bad || set_num(o, "firstSeq", r->first_seq) != 0;
    bad = bad || set_num(o, "lastSeq", r->last_seq) != 0;
    bad = bad || set_num(o, "lastCheckpointSeq", r->last_checkpoint_seq) != 0;
    bad = bad || set_num(o, "unsignedTail", r->unsigned_tail) != 0;
    bad = bad || set_num(o, "nodeId", r->node_id) != 0;
    bad = bad || set_num(o, "tornLines", r->torn) != 0;
    if (bad) {
        json_decref(o);
        o = NULL;
    }
    if (emit(o, table, out, errf) != 0)
        return 1;
    if (r->unsigned_tail > 0)
        fprintf(errf,
                "warning: the last %llu record(s) (after seq %llu) are chained but not yet "
                "covered by a signed checkpoint\n",
                (unsigned long long)r->unsigned_tail, (unsigned long long)r->last_checkpoint_seq);
    if (r->first_seq > 1)
        fprintf(errf,
                "warning: the chain starts at seq %llu, not 1: the files before it were "
                "archived or removed (this check cannot tell which)\n",
                (unsigned long long)r->first_seq);
    if (r->torn > 0) {
        fprintf(errf, "warning: %llu incomplete line(s), not records (a crash while writing), ",
                (unsigned long long)r->torn);
        put_clean(errf, r->torn_file);
        fprintf(errf, ":%llu first\n", (unsigned long long)r->torn_line);
    }
    return 0;
}

static void put_clean(FILE *f, const char *s)
{
    for (; *s != 0; s++) {
        unsigned char ch = (unsigned char)*s;
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
}

static int report_bad(const struct mh_auditlog_report *r, bool table, FILE *out, FILE *errf)
{
    const char *file = r->bad_file != NULL ? r->bad_file : "";
    char reason[sizeof r->reason + 1];
    memcpy(reason, r->reason, sizeof r->reason);
    reason[sizeof r->reason] = 0;
    if (reason[0] == 0)
        snprintf(reason, sizeof reason, "chain or signature broken");
    fputs("error: audit log does not verify: ", errf);
    put_clean(errf, file);
    fprintf(errf, ":%llu: ", (unsigned long long)r->bad_line);
    put_clean(errf, reason);
    fputc('\n', errf);
    /* Reasons quote log bytes; jansson refuses invalid UTF-8, so fall back to cleaning. */
    json_t *o = json_object();
    json_t *jr = json_string(reason);
    if (jr == NULL) {
        for (char *p = reason; *p != 0; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        jr = json_string(reason);
    }
    json_t *jf = json_string(file);
    int bad = o == NULL || jr == NULL || jf == NULL;
    bad = bad || json_object_set_new(o, "ok", json_false()) != 0;
    bad = bad || json_object_set(o, "file", jf) != 0;
    bad = bad || set_num(o, "line", r->bad_line) != 0;
    bad = bad || json_object_set(o, "reason", jr) != 0;
    json_decref(jr);
    json_decref(jf);
    if (bad) {
        json_decref(o);
        o = NULL;
    }
    (void)emit(o, table, out, errf);
    return 1;
}

int mh_logverify_run(const char **paths, size_t n, const uint8_t pub[MH_AUDITLOG_PUBKEY_LEN],
                     bool table, FILE *out, FILE *errf)
{
    mh_logverify_sort(paths, n);
    for (size_t i = 0; i < n; i++) {
        if (check_readable(paths[i], errf) < 0)
            return 1;
    }
    struct mh_auditlog_report r;
    memset(&r, 0, sizeof r);
    int rv = mh_auditlog_verify_files(paths, n, pub, &r);
    if (rv == 0)
        return report_ok(&r, n, table, out, errf);
    if (rv == MH_EAUTH || rv == MH_EPROTO)
        return report_bad(&r, table, out, errf);
    if (rv > -4096 && rv < 0 && r.bad_file != NULL) {
        fputs("error: cannot read ", errf);
        put_clean(errf, r.bad_file);
        fprintf(errf, ": %s\n", mh_strerror(rv));
        return 1;
    }
    fprintf(errf, "error: cannot verify the audit log: %s\n", mh_strerror(rv));
    return 1;
}
