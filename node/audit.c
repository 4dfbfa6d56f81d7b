/* Placeholder until the audit helper lands the module (issue 5, in progress):
 * every function reports MH_EUNIMPLEMENTED and nothing calls mh_audit_open yet. */
#include "node/audit.h"

int mh_audit_set_signer(struct mh_audit *a, const struct mh_secret *seed)
{
    (void)a;
    (void)seed;
    return MH_EUNIMPLEMENTED;
}
