/* roledef: reads a role definition the way `az keyvault role definition create` takes it.
 *
 * Accepted documents (one JSON object):
 *  - az's format: {"roleName", "description", "actions", "notActions", "dataActions",
 *    "notDataActions", "name" (GUID, optional), "assignableScopes" (optional)};
 *  - the object `mhsm role definition show` prints (the az CLI shape): the same with
 *    "permissions":[{"actions","notActions","dataActions","notDataActions"}] instead of
 *    the four top-level arrays, plus "id", "type", "roleType";
 *  - Azure's REST object: {"id","name","type","properties":{"roleName","description",
 *    "type"|"roleType","permissions","assignableScopes"}}.
 * Unknown members are refused rather than ignored: a misspelt "notDataActions" must
 * not silently grant the actions it was meant to exclude. The server validates the
 * action names, the role name and the limits; this module only checks the shape.
 *
 * Thread safety: pure functions over caller-owned data. */
#ifndef MH_CLIENT_ROLEDEF_H
#define MH_CLIENT_ROLEDEF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "mhsm/v1/rbac.pb-c.h"

/* A parsed definition: |req| is ready to send once the caller sets request_id (and
 * scope). Its strings point into |doc|; its arrays are owned here. */
struct mh_roledef {
    json_t *doc;
    Mhsm__V1__SetRoleDefinitionRequest req;
    Mhsm__V1__Permission *perm_store;
    Mhsm__V1__Permission **perms;
    char ***arrays; /* every string array of req and perm_store, one allocation each */
    size_t n_arrays;
};

/* mh_roledef_parse parses |text| (NUL-terminated) into *out. With |need_name|, the
 * definition must carry its GUID ("name", or the last segment of "id"). On error a
 * one-line reason naming the member (and for bad JSON the line and column) is written
 * to |err|. Errors: MH_EINVAL (not such a document), MH_ENOMEM. *out needs
 * mh_roledef_free in every case. */
MH_MUST_USE int mh_roledef_parse(const char *text, bool need_name, struct mh_roledef *out,
                                 char *err, size_t errlen);

void mh_roledef_free(struct mh_roledef *d);

/* Whether |s| is a GUID: 8-4-4-4-12 hex digits (either case). */
bool mh_roledef_is_guid(const char *s);

#endif
