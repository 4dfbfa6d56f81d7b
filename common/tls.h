/* tls: the one mutual-TLS 1.3 context both of mhsmd's listeners use (the gRPC API and
 * the raft peer channel).
 *
 * TLS 1.3 only; no renegotiation, compression, session tickets or session cache;
 * plaintext buffers cleansed; an encrypted key never prompts for a passphrase. The
 * certificate chain and key are loaded and checked against each other, and every
 * peer must present a certificate that chains to |ca_file| (depth <= 8). Callers add
 * what is theirs (ALPN, identity checks) to the returned context. */
#ifndef MH_COMMON_TLS_H
#define MH_COMMON_TLS_H

#include <openssl/ssl.h>

#include "common/err.h"

/* mh_tls_ctx_new builds that context with |method| (TLS_server_method() or
 * TLS_method() for both roles). |role| names the files in log lines ("server",
 * "peer"); |comp| is the log component. Errors: MH_ECONFIG (a missing, unreadable or
 * mismatched certificate, key or CA; the reason is logged), MH_ENOMEM, MH_ECRYPTO. */
MH_MUST_USE int mh_tls_ctx_new(const SSL_METHOD *method, const char *cert_file,
                               const char *key_file, const char *ca_file, const char *role,
                               const char *comp, SSL_CTX **out);

#endif
