#include "client/json_out.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"
#include "common/buf.h"

/* json_object_set_new steals |v| even when it fails, so one check covers both. */
static int set_new(json_t *obj, const char *name, json_t *v)
{
    if (v == NULL)
        return MH_ENOMEM;
    return json_object_set_new(obj, name, v) == 0 ? 0 : MH_ENOMEM;
}

int mh_json_out_set_str(json_t *obj, const char *name, const char *s)
{
    json_t *v = json_string(s != NULL ? s : "");
    if (v == NULL)
        return MH_EPROTO; /* jansson refuses invalid UTF-8 */
    return set_new(obj, name, v);
}

int mh_json_out_set_b64url(json_t *obj, const char *name, const uint8_t *p, size_t len)
{
    struct mh_buf b = {0};
    int rv = mh_b64url_encode(p, len, &b);
    if (rv == 0)
        rv = set_new(obj, name, json_stringn(b.len > 0 ? (const char *)b.data : "", b.len));
    mh_buf_free(&b);
    return rv;
}

static int set_int(json_t *obj, const char *name, int64_t v)
{
    return set_new(obj, name, json_integer((json_int_t)v));
}

static int set_bool(json_t *obj, const char *name, bool v)
{
    return set_new(obj, name, json_boolean(v));
}

static int jwk_json(const Mhsm__V1__JsonWebKey *k, json_t **out)
{
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    int rv = mh_json_out_set_str(o, "kid", k->kid);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "kty", k->kty);
    json_t *ops = json_array();
    if (rv == 0 && ops == NULL)
        rv = MH_ENOMEM;
    for (size_t i = 0; rv == 0 && i < k->n_key_ops; i++) {
        json_t *s = json_string(k->key_ops[i]);
        if (s == NULL)
            rv = MH_EPROTO;
        else if (json_array_append_new(ops, s) != 0)
            rv = MH_ENOMEM;
    }
    if (rv == 0) {
        rv = set_new(o, "key_ops", ops);
        ops = NULL;
    }
    json_decref(ops);
    if (rv == 0 && k->n.len > 0)
        rv = mh_json_out_set_b64url(o, "n", k->n.data, k->n.len);
    if (rv == 0 && k->e.len > 0)
        rv = mh_json_out_set_b64url(o, "e", k->e.data, k->e.len);
    if (rv == 0 && k->crv != NULL && k->crv[0] != 0)
        rv = mh_json_out_set_str(o, "crv", k->crv);
    if (rv == 0 && k->x.len > 0)
        rv = mh_json_out_set_b64url(o, "x", k->x.data, k->x.len);
    if (rv == 0 && k->y.len > 0)
        rv = mh_json_out_set_b64url(o, "y", k->y.data, k->y.len);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

static int attributes_json(const Mhsm__V1__KeyAttributes *a, json_t **out)
{
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    int rv = 0;
    if (a != NULL) {
        if (rv == 0 && a->enabled != NULL)
            rv = set_bool(o, "enabled", a->enabled->value);
        if (rv == 0 && a->not_before != NULL)
            rv = set_int(o, "nbf", a->not_before->value);
        if (rv == 0 && a->expires != NULL)
            rv = set_int(o, "exp", a->expires->value);
        if (rv == 0 && a->created != 0)
            rv = set_int(o, "created", a->created);
        if (rv == 0 && a->updated != 0)
            rv = set_int(o, "updated", a->updated);
        if (rv == 0 && a->recoverable_days != 0)
            rv = set_int(o, "recoverableDays", a->recoverable_days);
        if (rv == 0 && a->recovery_level != NULL && a->recovery_level[0] != 0)
            rv = mh_json_out_set_str(o, "recoveryLevel", a->recovery_level);
        if (rv == 0 && a->exportable != NULL)
            rv = set_bool(o, "exportable", a->exportable->value);
    }
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

static bool utf8_ok(const char *s)
{
    json_t *t = json_string(s);
    json_decref(t);
    return t != NULL;
}

/* Tag entries of every map type share one layout: base, key, value. */
#define TAGS_JSON(n, entries, out)                                                                 \
    do {                                                                                           \
        json_t *t_ = json_object();                                                                \
        int trv_ = t_ == NULL ? MH_ENOMEM : 0;                                                     \
        for (size_t i_ = 0; trv_ == 0 && i_ < (n); i_++) {                                         \
            json_t *v_ = json_string((entries)[i_]->value != NULL ? (entries)[i_]->value : "");    \
            const char *k_ = (entries)[i_]->key != NULL ? (entries)[i_]->key : "";                 \
            if (v_ == NULL || !utf8_ok(k_)) {                                                      \
                json_decref(v_);                                                                   \
                trv_ = MH_EPROTO;                                                                  \
            } else {                                                                               \
                trv_ = set_new(t_, k_, v_);                                                        \
            }                                                                                      \
        }                                                                                          \
        if (trv_ < 0) {                                                                            \
            json_decref(t_);                                                                       \
            t_ = NULL;                                                                             \
        }                                                                                          \
        (out) = t_;                                                                                \
        rv = trv_;                                                                                 \
    } while (0)

int mh_json_out_key_bundle(const Mhsm__V1__KeyBundle *kb, json_t **out)
{
    if (kb == NULL || kb->key == NULL)
        return MH_EPROTO;
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    json_t *sub = NULL;
    int rv = jwk_json(kb->key, &sub);
    if (rv == 0)
        rv = set_new(o, "key", sub);
    if (rv == 0)
        rv = attributes_json(kb->attributes, &sub);
    if (rv == 0)
        rv = set_new(o, "attributes", sub);
    if (rv == 0)
        TAGS_JSON(kb->n_tags, kb->tags, sub);
    if (rv == 0)
        rv = set_new(o, "tags", sub);
    if (rv == 0 && kb->managed)
        rv = set_bool(o, "managed", true);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

static int add_deleted(json_t *o, const char *recovery_id, int64_t deleted, int64_t purge)
{
    int rv = mh_json_out_set_str(o, "recoveryId", recovery_id);
    if (rv == 0)
        rv = set_int(o, "deletedDate", deleted);
    if (rv == 0)
        rv = set_int(o, "scheduledPurgeDate", purge);
    return rv;
}

int mh_json_out_deleted_key_bundle(const Mhsm__V1__DeletedKeyBundle *d, json_t **out)
{
    if (d == NULL)
        return MH_EPROTO;
    json_t *o = NULL;
    MH_TRY(mh_json_out_key_bundle(d->key, &o));
    int rv = add_deleted(o, d->recovery_id, d->deleted_date, d->scheduled_purge_date);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_key_item(const Mhsm__V1__KeyItem *it, json_t **out)
{
    if (it == NULL)
        return MH_EPROTO;
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    json_t *sub = NULL;
    int rv = mh_json_out_set_str(o, "kid", it->kid);
    if (rv == 0)
        rv = attributes_json(it->attributes, &sub);
    if (rv == 0)
        rv = set_new(o, "attributes", sub);
    if (rv == 0)
        TAGS_JSON(it->n_tags, it->tags, sub);
    if (rv == 0)
        rv = set_new(o, "tags", sub);
    if (rv == 0 && it->managed)
        rv = set_bool(o, "managed", true);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_deleted_key_item(const Mhsm__V1__DeletedKeyItem *it, json_t **out)
{
    if (it == NULL)
        return MH_EPROTO;
    json_t *o = NULL;
    MH_TRY(mh_json_out_key_item(it->key, &o));
    int rv = add_deleted(o, it->recovery_id, it->deleted_date, it->scheduled_purge_date);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

/* ---- printing ----------------------------------------------------------- */

/* Flattens |j| into "path value" pairs appended to |pairs| (an object of strings). */
static int flatten(const json_t *j, const char *prefix, json_t *pairs)
{
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            char path[256];
            snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", k);
            MH_TRY(flatten(v, path, pairs));
        }
        return 0;
    }
    struct mh_buf b = {0};
    int rv = 0;
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            char *s = json_is_string(v) ? strdup(json_string_value(v))
                                        : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s == NULL) {
                rv = MH_ENOMEM;
                break;
            }
            if (i > 0)
                rv = mh_buf_append_str(&b, ",");
            if (rv == 0)
                rv = mh_buf_append_str(&b, s);
            free(s);
            if (rv < 0)
                break;
        }
    } else if (json_is_string(j)) {
        rv = mh_buf_append_str(&b, json_string_value(j));
    } else {
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        rv = s == NULL ? MH_ENOMEM : mh_buf_append_str(&b, s);
        free(s);
    }
    if (rv == 0)
        rv = set_new(pairs, prefix[0] ? prefix : "value",
                     json_stringn(b.len > 0 ? (const char *)b.data : "", b.len));
    mh_buf_free(&b);
    return rv;
}

static int print_object_table(const json_t *j, FILE *f)
{
    json_t *pairs = json_object();
    if (pairs == NULL)
        return MH_ENOMEM;
    int rv = flatten(j, "", pairs);
    size_t w = 0;
    const char *k;
    json_t *v;
    json_object_foreach(pairs, k, v)
    {
        if (strlen(k) > w)
            w = strlen(k);
    }
    /* Sorted output, like the JSON form. */
    size_t n = json_object_size(pairs);
    const char **keys = rv == 0 ? calloc(n + 1, sizeof *keys) : NULL;
    if (rv == 0 && keys == NULL)
        rv = MH_ENOMEM;
    if (rv == 0) {
        size_t i = 0;
        json_object_foreach(pairs, k, v) keys[i++] = k;
        for (size_t a = 1; a < n; a++) {
            for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
                const char *t = keys[b];
                keys[b] = keys[b - 1];
                keys[b - 1] = t;
            }
        }
        for (i = 0; i < n; i++)
            fprintf(f, "%-*s  %s\n", (int)w, keys[i],
                    json_string_value(json_object_get(pairs, keys[i])));
    }
    free(keys);
    json_decref(pairs);
    return rv;
}

static int print_array_table(const json_t *j, FILE *f)
{
    size_t n = json_array_size(j);
    json_t *rows = json_array();
    json_t *cols = json_object(); /* column -> width */
    int rv = rows != NULL && cols != NULL ? 0 : MH_ENOMEM;
    for (size_t i = 0; rv == 0 && i < n; i++) {
        json_t *pairs = json_object();
        if (pairs == NULL || json_array_append_new(rows, pairs) != 0) {
            rv = MH_ENOMEM;
            break;
        }
        rv = flatten(json_array_get(j, i), "", pairs);
        const char *k;
        json_t *v;
        json_object_foreach(pairs, k, v)
        {
            json_int_t cw = json_integer_value(json_object_get(cols, k));
            json_int_t vw = (json_int_t)strlen(json_string_value(v));
            json_int_t kw = (json_int_t)strlen(k);
            json_int_t m = cw > vw ? cw : vw;
            m = m > kw ? m : kw;
            if (rv == 0)
                rv = set_new(cols, k, json_integer(m));
        }
    }
    size_t nc = rv == 0 ? json_object_size(cols) : 0;
    const char **names = rv == 0 ? calloc(nc + 1, sizeof *names) : NULL;
    if (rv == 0 && names == NULL)
        rv = MH_ENOMEM;
    if (rv == 0 && nc > 0) {
        size_t i = 0;
        const char *k;
        json_t *v;
        json_object_foreach(cols, k, v) names[i++] = k;
        for (size_t a = 1; a < nc; a++) {
            for (size_t b = a; b > 0 && strcmp(names[b - 1], names[b]) > 0; b--) {
                const char *t = names[b];
                names[b] = names[b - 1];
                names[b - 1] = t;
            }
        }
        for (size_t c = 0; c < nc; c++)
            fprintf(f, "%-*s%s", (int)json_integer_value(json_object_get(cols, names[c])), names[c],
                    c + 1 < nc ? "  " : "\n");
        for (size_t r = 0; r < n; r++) {
            json_t *pairs = json_array_get(rows, r);
            for (size_t c = 0; c < nc; c++) {
                const char *s = json_string_value(json_object_get(pairs, names[c]));
                fprintf(f, "%-*s%s", (int)json_integer_value(json_object_get(cols, names[c])),
                        s != NULL ? s : "", c + 1 < nc ? "  " : "\n");
            }
        }
    }
    free(names);
    json_decref(rows);
    json_decref(cols);
    return rv;
}

int mh_json_out_print(const json_t *j, bool table, FILE *f)
{
    int rv;
    if (table && json_is_array(j)) {
        rv = print_array_table(j, f);
    } else if (table) {
        rv = print_object_table(j, f);
    } else {
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        if (s == NULL)
            return MH_ENOMEM;
        rv = fputs(s, f) < 0 || fputc('\n', f) == EOF ? -EIO : 0;
        free(s);
    }
    if (rv == 0 && fflush(f) != 0)
        rv = -EIO;
    return rv;
}

/* ---- cluster status ------------------------------------------------------------ */

static int set_u64(json_t *obj, const char *name, uint64_t v)
{
    if (v > (uint64_t)INT64_MAX)
        return MH_EPROTO;
    return set_int(obj, name, (int64_t)v);
}

static int cluster_member_json(const Mhsm__V1__ClusterMember *m, json_t **out)
{
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    int rv = set_u64(o, "id", m->id);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "address", m->address);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "role", m->role);
    if (rv == 0)
        rv = set_bool(o, "leader", m->leader);
    if (rv == 0)
        rv = set_int(o, "lastContactMs", m->last_contact_ms);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_cluster_status(const Mhsm__V1__ClusterStatusResponse *r, json_t **out)
{
    json_t *o = json_object();
    json_t *members = json_array();
    int rv = o != NULL && members != NULL ? 0 : MH_ENOMEM;
    if (rv == 0)
        rv = set_u64(o, "nodeId", r->node_id);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "state", r->state);
    if (rv == 0)
        rv = set_u64(o, "leaderId", r->leader_id);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "leaderAddress", r->leader_address);
    if (rv == 0)
        rv = set_u64(o, "term", r->term);
    if (rv == 0)
        rv = set_u64(o, "commitIndex", r->commit_index);
    if (rv == 0)
        rv = set_u64(o, "appliedIndex", r->applied_index);
    if (rv == 0)
        rv = set_u64(o, "lastIndex", r->last_index);
    if (rv == 0)
        rv = set_bool(o, "serving", r->serving);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "servingReason", r->serving_reason);
    if (rv == 0)
        rv = set_int(o, "leaderContactMs", r->leader_contact_ms);
    for (size_t i = 0; rv == 0 && i < r->n_members; i++) {
        json_t *m = NULL;
        if (r->members[i] == NULL)
            rv = MH_EPROTO;
        if (rv == 0)
            rv = cluster_member_json(r->members[i], &m);
        if (rv == 0 && json_array_append_new(members, m) != 0)
            rv = MH_ENOMEM;
    }
    if (rv == 0) {
        rv = set_new(o, "members", members);
        members = NULL;
    }
    json_decref(members);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

/* A server string for the terminal: control characters become '?'. */
static void put_clean(FILE *f, const char *s, int width)
{
    int n = 0;
    for (; s != NULL && *s != 0; s++, n++) {
        unsigned char ch = (unsigned char)*s;
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
    for (; n < width; n++)
        fputc(' ', f);
}

static const char *str_of(const json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s != NULL ? s : "";
}

static long long int_of(const json_t *o, const char *name)
{
    return (long long)json_integer_value(json_object_get(o, name));
}

int mh_json_out_print_cluster_table(const json_t *st, FILE *f)
{
    const json_t *members = json_object_get(st, "members");
    if (!json_is_object(st) || !json_is_array(members))
        return MH_EPROTO;
    fprintf(f, "node %lld: ", int_of(st, "nodeId"));
    put_clean(f, str_of(st, "state"), 0);
    fprintf(f, ", term %lld", int_of(st, "term"));
    if (int_of(st, "leaderId") != 0) {
        fprintf(f, ", leader %lld (", int_of(st, "leaderId"));
        put_clean(f, str_of(st, "leaderAddress"), 0);
        fputc(')', f);
    } else {
        fputs(", no leader", f);
    }
    fprintf(f, ", commit %lld, applied %lld, last %lld, ", int_of(st, "commitIndex"),
            int_of(st, "appliedIndex"), int_of(st, "lastIndex"));
    if (json_is_true(json_object_get(st, "serving"))) {
        fputs("serving\n", f);
    } else {
        fputs("not serving: ", f);
        put_clean(f, str_of(st, "servingReason"), 0);
        fputc('\n', f);
    }
    /* Column widths: the header or the widest value. */
    int wid = 2, waddr = 7, wrole = 4;
    char buf[32];
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m)
    {
        int l = snprintf(buf, sizeof buf, "%lld", int_of(m, "id"));
        wid = l > wid ? l : wid;
        int la = (int)strlen(str_of(m, "address"));
        waddr = la > waddr ? la : waddr;
        int lr = (int)strlen(str_of(m, "role"));
        wrole = lr > wrole ? lr : wrole;
    }
    fprintf(f, "%-*s  %-*s  %-*s  %-6s  %s\n", wid, "ID", waddr, "ADDRESS", wrole, "ROLE", "LEADER",
            "LAST-CONTACT");
    json_array_foreach(members, i, m)
    {
        snprintf(buf, sizeof buf, "%lld", int_of(m, "id"));
        fprintf(f, "%-*s  ", wid, buf);
        put_clean(f, str_of(m, "address"), waddr);
        fputs("  ", f);
        put_clean(f, str_of(m, "role"), wrole);
        long long lc = int_of(m, "lastContactMs");
        if (lc < 0)
            snprintf(buf, sizeof buf, "-");
        else
            snprintf(buf, sizeof buf, "%lld ms", lc);
        fprintf(f, "  %-6s  %s\n", json_is_true(json_object_get(m, "leader")) ? "yes" : "no", buf);
    }
    return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

/* ---- RBAC and audit --------------------------------------------------------------- */

/* obj[name] = array of the |n| strings at |v| (MH_EPROTO on invalid UTF-8). */
static int set_str_array(json_t *obj, const char *name, char *const *v, size_t n)
{
    json_t *a = json_array();
    if (a == NULL)
        return MH_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_string(v[i] != NULL ? v[i] : "");
        if (s == NULL || json_array_append_new(a, s) != 0) {
            json_decref(a);
            return s == NULL ? MH_EPROTO : MH_ENOMEM;
        }
    }
    return set_new(obj, name, a);
}

static int permission_json(const Mhsm__V1__Permission *p, json_t **out)
{
    if (p == NULL)
        return MH_EPROTO;
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    int rv = set_str_array(o, "actions", p->actions, p->n_actions);
    if (rv == 0)
        rv = set_str_array(o, "notActions", p->not_actions, p->n_not_actions);
    if (rv == 0)
        rv = set_str_array(o, "dataActions", p->data_actions, p->n_data_actions);
    if (rv == 0)
        rv = set_str_array(o, "notDataActions", p->not_data_actions, p->n_not_data_actions);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_role_definition(const Mhsm__V1__RoleDefinition *d, json_t **out)
{
    if (d == NULL)
        return MH_EPROTO;
    json_t *o = json_object();
    json_t *perms = json_array();
    int rv = o != NULL && perms != NULL ? 0 : MH_ENOMEM;
    if (rv == 0)
        rv = mh_json_out_set_str(o, "id", d->id);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "name", d->name);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "type", d->type);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "roleName", d->role_name);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "description", d->description);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "roleType", d->role_type);
    for (size_t i = 0; rv == 0 && i < d->n_permissions; i++) {
        json_t *p = NULL;
        rv = permission_json(d->permissions[i], &p);
        if (rv == 0 && json_array_append_new(perms, p) != 0)
            rv = MH_ENOMEM;
    }
    if (rv == 0) {
        rv = set_new(o, "permissions", perms);
        perms = NULL;
    }
    if (rv == 0)
        rv = set_str_array(o, "assignableScopes", d->assignable_scopes, d->n_assignable_scopes);
    json_decref(perms);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_role_assignment(const Mhsm__V1__RoleAssignment *a, json_t **out)
{
    if (a == NULL)
        return MH_EPROTO;
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    static const char *const NAMES[] = {
        "id", "name", "type", "scope", "roleDefinitionId", "principalId", "roleName"};
    const char *const vals[] = {
        a->id, a->name, a->type, a->scope, a->role_definition_id, a->principal_id, a->role_name};
    int rv = 0;
    for (size_t i = 0; rv == 0 && i < sizeof NAMES / sizeof NAMES[0]; i++)
        rv = mh_json_out_set_str(o, NAMES[i], vals[i]);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_whoami(const Mhsm__V1__WhoAmIResponse *w, json_t **out)
{
    if (w == NULL)
        return MH_EPROTO;
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    int rv = mh_json_out_set_str(o, "principalId", w->principal_id);
    if (rv == 0)
        rv = set_u64(o, "nodeId", w->node_id);
    if (rv == 0)
        rv = set_str_array(o, "dataActions", w->data_actions, w->n_data_actions);
    if (rv == 0)
        rv = set_str_array(o, "keyScopes", w->key_scopes, w->n_key_scopes);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_audit_key(const Mhsm__V1__GetAuditKeyResponse *k, json_t **out)
{
    enum { PUBLEN = 32 };
    if (k == NULL || k->public_key.len != PUBLEN)
        return MH_EPROTO;
    char hex[2 * PUBLEN + 1];
    mh_hex_encode(k->public_key.data, PUBLEN, hex);
    /* The two forms are one key; a server that disagrees with itself is not trusted. */
    if (k->public_key_hex != NULL && k->public_key_hex[0] != 0 &&
        strcmp(k->public_key_hex, hex) != 0)
        return MH_EPROTO;
    json_t *o = json_object();
    if (o == NULL)
        return MH_ENOMEM;
    int rv = mh_json_out_set_str(o, "publicKey", hex);
    if (rv == 0)
        rv = set_u64(o, "nodeId", k->node_id);
    if (rv == 0)
        rv = mh_json_out_set_str(o, "directory", k->directory);
    if (rv < 0) {
        json_decref(o);
        return rv;
    }
    *out = o;
    return 0;
}

int mh_json_out_print_columns(const json_t *rows, const struct mh_json_out_column *cols,
                              size_t n_cols, FILE *f)
{
    if (!json_is_array(rows))
        return MH_EPROTO;
    int width[16];
    if (n_cols > sizeof width / sizeof width[0])
        return MH_EPROTO;
    for (size_t c = 0; c < n_cols; c++) {
        width[c] = (int)strlen(cols[c].header);
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r)
        {
            int l = (int)strlen(str_of(r, cols[c].member));
            width[c] = l > width[c] ? l : width[c];
        }
    }
    for (size_t c = 0; c < n_cols; c++) {
        if (c + 1 < n_cols)
            fprintf(f, "%-*s  ", width[c], cols[c].header);
        else
            fprintf(f, "%s\n", cols[c].header);
    }
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        for (size_t c = 0; c < n_cols; c++) {
            put_clean(f, str_of(r, cols[c].member), c + 1 < n_cols ? width[c] : 0);
            fputs(c + 1 < n_cols ? "  " : "\n", f);
        }
    }
    return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

int mh_json_out_print_whoami_table(const json_t *who, FILE *f)
{
    const json_t *actions = json_object_get(who, "dataActions");
    if (!json_is_object(who) || !json_is_array(actions))
        return MH_EPROTO;
    put_clean(f, str_of(who, "principalId"), 0);
    fputc('\n', f);
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a)
    {
        put_clean(f, json_string_value(a), 0);
        fputc('\n', f);
    }
    return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}
