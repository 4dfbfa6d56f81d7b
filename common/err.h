/* err: the project's error codes, one X-macro table, negative values, 0 = success.
 *
 * Every fallible function in mhsm returns 0 on success or a negative value:
 * either one of the MH_E* codes below, or -errno for a failed system call
 * (errno values are below 4096, our codes start at -10000, so they never collide).
 * mh_strerror() names both kinds. Messages are fixed strings: they never carry
 * caller data, so they can never leak a secret. The mapping to gRPC status codes
 * lives in one table at the server's edge (node/), not here. */
#ifndef MH_COMMON_ERR_H
#define MH_COMMON_ERR_H

#include <stddef.h>

#define MH_MUST_USE __attribute__((warn_unused_result))

/* X(name, value, message) */
#define MH_ERR_MAP(X)                                                                              \
    X(MH_ENOMEM, -10001, "out of memory")                                                          \
    X(MH_EINVAL, -10002, "invalid argument")                                                       \
    X(MH_EOVERFLOW, -10003, "length arithmetic overflow")                                          \
    X(MH_ETRUNC, -10004, "input truncated")                                                        \
    X(MH_ETOOBIG, -10005, "input or output too large")                                             \
    X(MH_ENOSPACE, -10006, "output buffer too small")                                              \
    X(MH_EBASE64, -10007, "invalid base64url encoding")                                            \
    X(MH_EJSON, -10008, "malformed JSON or wrong JSON type")                                       \
    X(MH_ECRYPTO, -10009, "internal cryptographic library failure")                                \
    X(MH_EUNSUPPORTED, -10010, "algorithm, key type, size or curve not supported")                 \
    X(MH_EALGKEY, -10011, "algorithm does not fit the key type, size or curve")                    \
    X(MH_EDIGESTLEN, -10012, "digest length does not match the algorithm")                         \
    X(MH_EBADSIG, -10013, "signature verification failed")                                         \
    X(MH_EDECRYPT, -10014, "decryption failed")                                                    \
    X(MH_EBADKEY, -10015, "malformed or inconsistent key material")                                \
    X(MH_EWEAKKEY, -10016, "key too weak: RSA keys must have at least 2048 bits")                  \
    X(MH_ENOPRIVATE, -10017, "operation needs the private key, which this key does not hold")      \
    X(MH_EIVLEN, -10018, "initialization vector has the wrong length")                             \
    X(MH_EINPUTLEN, -10019, "input length not valid for the algorithm")                            \
    X(MH_EAUTH, -10020, "authentication failed: tag or AAD mismatch")                              \
    X(MH_ECERT, -10021, "malformed or unacceptable certificate")                                   \
    X(MH_EPEM, -10022, "malformed PEM or DER, or wrong password")                                  \
    X(MH_EJWE, -10023, "malformed or unsupported JWE")                                             \
    X(MH_ESDFILE, -10024, "malformed security domain file")                                        \
    X(MH_EQUORUM, -10025, "invalid certificate count or quorum")                                   \
    X(MH_ENOKEYMATCH, -10026, "no share in the file is encrypted to the given keys")               \
    X(MH_ESHARES, -10027, "not enough distinct shares to reach the quorum")                        \
    X(MH_ENOTFOUND, -10028, "not found")                                                           \
    X(MH_EEXIST, -10029, "already exists")                                                         \
    X(MH_EUNIMPLEMENTED, -10030, "not implemented")                                                \
    X(MH_ENOTACTIVE, -10031, "security domain not activated")                                      \
    X(MH_EACTIVE, -10032, "security domain already activated")                                     \
    X(MH_EDELETED, -10033, "the name belongs to a deleted key; recover or purge it first")         \
    X(MH_ENOTDELETED, -10034, "the key is not deleted")                                            \
    X(MH_EDISABLED, -10035, "the key is disabled")                                                 \
    X(MH_ENOTYET, -10036, "the key is not yet valid (nbf is in the future)")                       \
    X(MH_EEXPIRED, -10037, "the key has expired (exp is in the past)")                             \
    X(MH_EKEYOPS, -10038, "operation not permitted by the key's key_ops")                          \
    X(MH_ELIMIT, -10039, "a configured limit was reached")                                         \
    X(MH_ESTORE, -10040, "storage failure")                                                        \
    X(MH_EUNAVAILABLE, -10041, "service unavailable: no leader or shutting down")                  \
    X(MH_ECANCELLED, -10042, "request cancelled")                                                  \
    X(MH_ETIMEDOUT, -10043, "deadline exceeded")                                                   \
    X(MH_EDOMAIN, -10044, "made by a different security domain")                                   \
    X(MH_ECONFIG, -10045, "invalid configuration")                                                 \
    X(MH_EPERM, -10046, "permission denied")                                                       \
    X(MH_EBACKUP, -10047, "malformed or tampered key backup")                                      \
    X(MH_ECORRUPT, -10048, "stored state is corrupt")                                              \
    X(MH_EPROTO, -10049, "malformed protocol message")                                             \
    X(MH_EREQUESTID, -10050, "request_id was already used for a different request")                \
    X(MH_EBUSY, -10051, "another change is in progress; retry when it completes")                  \
    X(MH_EPEER, -10052, "peer refused: not a cluster node, or the wrong one")                      \
    X(MH_EBUILTIN, -10053, "built-in role definitions cannot be changed or deleted")               \
    X(MH_EINUSE, -10054, "the role definition is assigned; delete its role assignments first")     \
    X(MH_ELOCKOUT, -10055,                                                                         \
      "refused: no principal would be left able to manage role assignments at scope /")            \
    X(MH_EAUDIT, -10056, "the audit log cannot be written; requests are refused until it can")     \
    X(MH_ELOCKED, -10120, "data directory is in use by another process")

enum mh_err {
    MH_OK = 0,
#define MH_ERR_ENUM_(name, value, msg) name = value,
    MH_ERR_MAP(MH_ERR_ENUM_)
#undef MH_ERR_ENUM_
};

/* mh_strerror names |err|: an MH_E* code, a -errno value, or 0. Never returns
 * NULL; unknown values give "unknown error". Thread-safe (fixed strings only). */
const char *mh_strerror(int err);

/* mh_errname returns the symbolic name ("MH_EBADSIG", "ENOENT") of |err|, for logs
 * and tests. Never NULL. */
const char *mh_errname(int err);

/* Guard macros for the straight-down happy path. */
#define MH_TRY(expr)                                                                               \
    do {                                                                                           \
        int mh_try_rv_ = (expr);                                                                   \
        if (mh_try_rv_ < 0)                                                                        \
            return mh_try_rv_;                                                                     \
    } while (0)

/* The struct that embeds |ptr| as |member| (callers hand out pointers to embedded
 * requests and get them back in callbacks). */
#define mh_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define MH_ENSURE(cond, err)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return (err);                                                                          \
    } while (0)

#endif
