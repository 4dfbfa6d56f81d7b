#define _GNU_SOURCE /* strerrorname_np */
#include "common/err.h"

#include <string.h>

const char *mh_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (err) {
#define MH_ERR_STR_(name, value, msg)                                                              \
    case value:                                                                                    \
        return msg;
        MH_ERR_MAP(MH_ERR_STR_)
#undef MH_ERR_STR_
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err); /* glibc: thread-safe for known errno values */
    return "unknown error";
}

const char *mh_errname(int err)
{
    if (err == 0)
        return "MH_OK";
    switch (err) {
#define MH_ERR_NAME_(name, value, msg)                                                             \
    case value:                                                                                    \
        return #name;
        MH_ERR_MAP(MH_ERR_NAME_)
#undef MH_ERR_NAME_
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        const char *n = strerrorname_np(-err);
        return n != NULL ? n : "E?";
    }
    return "MH_E?";
}
