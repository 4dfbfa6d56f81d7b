#define _GNU_SOURCE
#include "client/roledef.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_BLOCKS 16u

static void fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

bool mh_roledef_is_guid(const char *s)
{
    static const size_t GROUPS[] = {8, 4, 4, 4, 12};
    for (size_t g = 0; g < 5; g++) {
        for (size_t i = 0; i < GROUPS[g]; i++, s++) {
            if (!isxdigit((unsigned char)*s))
                return false;
        }
        if (g < 4 && *s++ != '-')
            return false;
    }
    return *s == 0;
}

static bool in_list(const char *const *list, const char *name)
{
    for (size_t i = 0; list[i] != NULL; i++) {
        if (strcmp(list[i], name) == 0)
            return true;
    }
    return false;
}

static int check_members(const json_t *o, const char *const *allowed, const char *where, char *err,
                         size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        if (!in_list(allowed, k)) {
            fail(err, errlen, "unknown member \"%s\"%s%s", k, where[0] ? " in " : "", where);
            return MH_EINVAL;
        }
    }
    return 0;
}

/* An optional string member: *out stays NULL when absent. */
static int opt_string(const json_t *o, const char *name, const char **out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(o, name);
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        fail(err, errlen, "\"%s\" must be a string", name);
        return MH_EINVAL;
    }
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v)) {
        fail(err, errlen, "\"%s\" contains a NUL character", name);
        return MH_EINVAL;
    }
    return 0;
}

/* An optional array of strings: copied into a NULL-terminated pointer array owned by d. */
static int str_array(struct mh_roledef *d, const json_t *o, const char *name, const char *where,
                     char ***out, size_t *n_out, char *err, size_t errlen)
{
    *out = NULL;
    *n_out = 0;
    const json_t *v = json_object_get(o, name);
    if (v == NULL)
        return 0;
    if (!json_is_array(v)) {
        fail(err, errlen, "\"%s\"%s must be an array of strings", name, where);
        return MH_EINVAL;
    }
    size_t n = json_array_size(v);
    char **arr = calloc(n + 1, sizeof *arr);
    if (arr == NULL)
        return MH_ENOMEM;
    d->arrays[d->n_arrays++] = arr;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e)) {
            fail(err, errlen, "\"%s\"[%zu]%s must be a string", name, i, where);
            return MH_EINVAL;
        }
        arr[i] = (char *)json_string_value(e);
    }
    *out = arr;
    *n_out = n;
    return 0;
}

static const char *const PERM_MEMBERS[] = {"actions", "notActions", "dataActions", "notDataActions",
                                           NULL};

static int perm_block(struct mh_roledef *d, const json_t *o, const char *where,
                      Mhsm__V1__Permission *p, char *err, size_t errlen)
{
    mhsm__v1__permission__init(p);
    MH_TRY(str_array(d, o, "actions", where, &p->actions, &p->n_actions, err, errlen));
    MH_TRY(str_array(d, o, "notActions", where, &p->not_actions, &p->n_not_actions, err, errlen));
    MH_TRY(
        str_array(d, o, "dataActions", where, &p->data_actions, &p->n_data_actions, err, errlen));
    return str_array(d, o, "notDataActions", where, &p->not_data_actions, &p->n_not_data_actions,
                     err, errlen);
}

/* The role's GUID from "name" or, failing that, from the last segment of "id". */
static int role_guid(const json_t *root, bool need_name, const char **out, char *err, size_t errlen)
{
    const char *name = NULL, *id = NULL;
    MH_TRY(opt_string(root, "name", &name, err, errlen));
    MH_TRY(opt_string(root, "id", &id, err, errlen));
    if (name != NULL && name[0] == 0)
        name = NULL;
    const char *from_id = NULL;
    if (id != NULL && id[0] != 0) {
        const char *slash = strrchr(id, '/');
        from_id = slash != NULL ? slash + 1 : id;
        if (!mh_roledef_is_guid(from_id)) {
            fail(err, errlen, "\"id\" must end in the role's GUID, not '%s'", id);
            return MH_EINVAL;
        }
    }
    if (name != NULL && !mh_roledef_is_guid(name)) {
        fail(err, errlen, "\"name\" must be a GUID (8-4-4-4-12 hex digits), not '%s'", name);
        return MH_EINVAL;
    }
    if (name != NULL && from_id != NULL && strcasecmp(name, from_id) != 0) {
        fail(err, errlen, "\"name\" %s does not match \"id\" %s", name, id);
        return MH_EINVAL;
    }
    *out = name != NULL ? name : from_id;
    if (need_name && *out == NULL) {
        fail(err, errlen, "\"name\" (the role's GUID) is required to update a role definition");
        return MH_EINVAL;
    }
    return 0;
}

static int parse_doc(struct mh_roledef *d, bool need_name, char *err, size_t errlen)
{
    static const char *const FLAT[] = {
        "roleName", "description", "actions", "notActions", "dataActions", "notDataActions",
        "name",     "id",          "type",    "roleType",   "permissions", "assignableScopes",
        NULL};
    static const char *const OUTER[] = {"id", "name", "type", "properties", NULL};
    static const char *const PROPS[] = {"roleName",    "description",      "type", "roleType",
                                        "permissions", "assignableScopes", NULL};
    const json_t *root = d->doc;
    if (!json_is_object(root)) {
        fail(err, errlen, "the role definition must be a JSON object");
        return MH_EINVAL;
    }
    const json_t *src = json_object_get(root, "properties");
    if (src != NULL) {
        if (!json_is_object(src)) {
            fail(err, errlen, "\"properties\" must be an object");
            return MH_EINVAL;
        }
        MH_TRY(check_members(root, OUTER, "", err, errlen));
        MH_TRY(check_members(src, PROPS, "\"properties\"", err, errlen));
    } else {
        src = root;
        MH_TRY(check_members(root, FLAT, "", err, errlen));
    }
    Mhsm__V1__SetRoleDefinitionRequest *r = &d->req;
    const char *s = NULL;
    MH_TRY(opt_string(root, "type", &s, err, errlen));
    MH_TRY(opt_string(src, "type", &s, err, errlen));
    MH_TRY(opt_string(src, "roleType", &s, err, errlen));
    s = NULL;
    MH_TRY(opt_string(src, "roleName", &s, err, errlen));
    if (s == NULL || s[0] == 0) {
        fail(err, errlen, "\"roleName\" is required (a non-empty string)");
        return MH_EINVAL;
    }
    r->role_name = (char *)s;
    s = NULL;
    MH_TRY(opt_string(src, "description", &s, err, errlen));
    if (s != NULL)
        r->description = (char *)s;
    s = NULL;
    MH_TRY(role_guid(root, need_name, &s, err, errlen));
    if (s != NULL)
        r->name = (char *)s;
    MH_TRY(str_array(d, src, "assignableScopes", "", &r->assignable_scopes, &r->n_assignable_scopes,
                     err, errlen));

    const json_t *perms = json_object_get(src, "permissions");
    bool flat = false;
    for (size_t i = 0; PERM_MEMBERS[i] != NULL; i++)
        flat = flat || json_object_get(src, PERM_MEMBERS[i]) != NULL;
    if (perms != NULL && flat) {
        fail(err, errlen,
             "give either \"permissions\" or the top-level \"dataActions\"/\"notDataActions\"/"
             "\"actions\"/\"notActions\", not both");
        return MH_EINVAL;
    }
    if (perms == NULL) {
        if (!flat) {
            fail(err, errlen, "\"dataActions\" is required (the actions the role grants)");
            return MH_EINVAL;
        }
        MH_TRY(perm_block(d, src, "", &d->perm_store[0], err, errlen));
        d->perms[0] = &d->perm_store[0];
        r->n_permissions = 1;
        r->permissions = d->perms;
        return 0;
    }
    if (!json_is_array(perms) || json_array_size(perms) == 0 ||
        json_array_size(perms) > MAX_BLOCKS) {
        fail(err, errlen, "\"permissions\" must be an array of 1..%u objects", MAX_BLOCKS);
        return MH_EINVAL;
    }
    for (size_t i = 0; i < json_array_size(perms); i++) {
        const json_t *b = json_array_get(perms, i);
        char where[48];
        snprintf(where, sizeof where, " in \"permissions\"[%zu]", i);
        if (!json_is_object(b)) {
            fail(err, errlen, "\"permissions\"[%zu] must be an object", i);
            return MH_EINVAL;
        }
        MH_TRY(check_members(b, PERM_MEMBERS, where + 4, err, errlen));
        MH_TRY(perm_block(d, b, where, &d->perm_store[i], err, errlen));
        d->perms[i] = &d->perm_store[i];
    }
    r->n_permissions = json_array_size(perms);
    r->permissions = d->perms;
    return 0;
}

int mh_roledef_parse(const char *text, bool need_name, struct mh_roledef *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    mhsm__v1__set_role_definition_request__init(&out->req);
    err[0] = 0;
    json_error_t jerr;
    out->doc = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (out->doc == NULL) {
        fail(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
             jerr.text);
        return MH_EINVAL;
    }
    out->perm_store = calloc(MAX_BLOCKS, sizeof *out->perm_store);
    out->perms = calloc(MAX_BLOCKS + 1, sizeof *out->perms);
    out->arrays = calloc(1 + 4 * MAX_BLOCKS, sizeof *out->arrays);
    if (out->perm_store == NULL || out->perms == NULL || out->arrays == NULL)
        return MH_ENOMEM;
    return parse_doc(out, need_name, err, errlen);
}

void mh_roledef_free(struct mh_roledef *d)
{
    for (size_t i = 0; d->arrays != NULL && i < d->n_arrays; i++)
        free(d->arrays[i]);
    free(d->arrays);
    free(d->perms);
    free(d->perm_store);
    json_decref(d->doc);
    memset(d, 0, sizeof *d);
}
