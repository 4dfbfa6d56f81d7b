#include "node/keyrec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/x509.h>

#include "crypto/rand.h"

static const char *const op_names[] = {"encrypt", "decrypt",   "sign",   "verify",
                                       "wrapKey", "unwrapKey", "import", "export"};
#define N_OPS (sizeof op_names / sizeof op_names[0])

bool mh_keyrec_name_ok(const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p != '\0'; p++, n++) {
        char c = *p;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-'))
            return false;
        if (n >= MH_KEY_NAME_MAX)
            return false;
    }
    return n >= 1;
}

bool mh_keyrec_version_ok(const char *v)
{
    size_t n = 0;
    for (; v[n] != '\0'; n++)
        if (n >= MH_VERSION_LEN || !((v[n] >= '0' && v[n] <= '9') || (v[n] >= 'a' && v[n] <= 'f')))
            return false;
    return n == MH_VERSION_LEN;
}

/* Counts code points of valid UTF-8 without C0/C1 controls; -1 if invalid. */
static long utf8_chars(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    long n = 0;
    while (*p != 0) {
        unsigned c = *p;
        size_t len;
        unsigned cp;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return -1;
            len = 1;
            cp = c;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return -1;
        }
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
            return -1;
        p += len;
        n++;
    }
    return n;
}

int mh_keyrec_check_tags(size_t n, char *const *keys, char *const *values, const char **why)
{
    if (n > MH_MAX_TAGS) {
        *why = "at most 15 tags per key";
        return MH_ELIMIT;
    }
    for (size_t i = 0; i < n; i++) {
        long kl = utf8_chars(keys[i]);
        long vl = utf8_chars(values[i]);
        if (kl < 1 || kl > MH_TAG_MAX_CHARS) {
            *why = "tag names must be 1..256 characters of UTF-8 text";
            return MH_EINVAL;
        }
        if (vl < 0 || vl > MH_TAG_MAX_CHARS) {
            *why = "tag values must be at most 256 characters of UTF-8 text";
            return MH_EINVAL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(keys[i], keys[j]) == 0) {
                *why = "duplicate tag name";
                return MH_EINVAL;
            }
    }
    return 0;
}

unsigned mh_keyrec_default_ops(enum mh_kty kty)
{
    switch (kty) {
    case MH_KTY_RSA:
        return MH_OP_ENCRYPT | MH_OP_DECRYPT | MH_OP_SIGN | MH_OP_VERIFY | MH_OP_WRAP |
               MH_OP_UNWRAP;
    case MH_KTY_EC:
        return MH_OP_SIGN | MH_OP_VERIFY;
    case MH_KTY_OCT:
        return MH_OP_ENCRYPT | MH_OP_DECRYPT | MH_OP_WRAP | MH_OP_UNWRAP;
    default:
        return 0;
    }
}

const char *mh_keyrec_op_name(unsigned bit)
{
    for (unsigned i = 0; i < N_OPS; i++)
        if (bit == 1u << i)
            return op_names[i];
    return "";
}

int mh_keyrec_parse_ops(enum mh_kty kty, size_t n, char *const *ops, unsigned *bits,
                        const char **why)
{
    unsigned out = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned bit = 0;
        for (unsigned j = 0; j < N_OPS; j++)
            if (strcmp(ops[i], op_names[j]) == 0)
                bit = 1u << j;
        if (bit == 0) {
            *why = "unknown key operation (use encrypt, decrypt, sign, verify, wrapKey, "
                   "unwrapKey)";
            return MH_EINVAL;
        }
        if (out & bit) {
            *why = "key operation listed twice";
            return MH_EINVAL;
        }
        if (bit == MH_OP_EXPORT) {
            *why = "keys are not exportable";
            return MH_EUNSUPPORTED;
        }
        if (bit == MH_OP_IMPORT) {
            *why = "the import operation (BYOK key-exchange keys) is not supported";
            return MH_EUNSUPPORTED;
        }
        if ((mh_keyrec_default_ops(kty) & bit) == 0) {
            *why = "key operation not possible with this key type";
            return MH_EALGKEY;
        }
        out |= bit;
    }
    *bits = out;
    return 0;
}

unsigned mh_keyrec_ops_of(const Mhsm__Internal__KeyVersionRecord *rec)
{
    unsigned out = 0;
    for (size_t i = 0; i < rec->n_key_ops; i++)
        for (unsigned j = 0; j < N_OPS; j++)
            if (strcmp(rec->key_ops[i], op_names[j]) == 0)
                out |= 1u << j;
    return out;
}

int mh_keyrec_aad(const char *name, const char *version, enum mh_kty kty, struct mh_buf *out)
{
    MH_TRY(mh_buf_append(out, name, strlen(name) + 1));
    MH_TRY(mh_buf_append(out, version, strlen(version) + 1));
    return mh_buf_append_u8(out, (uint8_t)('0' + (int)kty));
}

int mh_keyrec_new_version(char out[MH_VERSION_LEN + 1])
{
    return mh_rand_hex(out, MH_VERSION_LEN / 2);
}

int mh_keyrec_kid(const char *hsm, const char *name, const char *version, struct mh_buf *out)
{
    MH_TRY(mh_buf_append_str(out, "https://"));
    MH_TRY(mh_buf_append_str(out, hsm));
    MH_TRY(mh_buf_append_str(out, "/keys/"));
    MH_TRY(mh_buf_append_str(out, name));
    if (version != NULL && version[0] != '\0') {
        MH_TRY(mh_buf_append_str(out, "/"));
        MH_TRY(mh_buf_append_str(out, version));
    }
    return 0;
}

const char *mh_keyrec_kty_name(enum mh_kty kty)
{
    switch (kty) {
    case MH_KTY_RSA:
        return "RSA-HSM";
    case MH_KTY_EC:
        return "EC-HSM";
    case MH_KTY_OCT:
        return "oct-HSM";
    default:
        return "";
    }
}

enum mh_kty mh_keyrec_kty_from_name(const char *name)
{
    if (strcmp(name, "RSA-HSM") == 0 || strcmp(name, "RSA") == 0)
        return MH_KTY_RSA;
    if (strcmp(name, "EC-HSM") == 0 || strcmp(name, "EC") == 0)
        return MH_KTY_EC;
    if (strcmp(name, "oct-HSM") == 0 || strcmp(name, "oct") == 0)
        return MH_KTY_OCT;
    return MH_KTY_NONE;
}

const char *mh_keyrec_recovery_level(unsigned retention_days)
{
    return retention_days >= 90 ? "Recoverable+Purgeable" : "CustomizedRecoverable+Purgeable";
}

static char *dup_str(const char *s)
{
    return strdup(s);
}

/* KeyBundle and KeyItem have distinct generated tag-entry types of identical layout
 * ({base, key, value}); |desc| picks the one whose descriptor the entries carry. */
static int fill_tags(const ProtobufCMessageDescriptor *desc,
                     const Mhsm__Internal__KeyVersionRecord *rec, size_t *n_out, void ***out)
{
    *n_out = 0;
    *out = NULL;
    if (rec->n_tags == 0)
        return 0;
    Mhsm__V1__KeyBundle__TagsEntry **v = calloc(rec->n_tags, sizeof *v);
    if (v == NULL)
        return MH_ENOMEM;
    *out = (void **)v;
    for (size_t i = 0; i < rec->n_tags; i++) {
        v[i] = malloc(desc->sizeof_message);
        if (v[i] == NULL)
            return MH_ENOMEM;
        protobuf_c_message_init(desc, v[i]);
        (*n_out)++;
        v[i]->key = dup_str(rec->tags[i]->key);
        v[i]->value = dup_str(rec->tags[i]->value);
        if (v[i]->key == NULL || v[i]->value == NULL)
            return MH_ENOMEM;
    }
    return 0;
}

static int fill_attributes(unsigned retention_days, const Mhsm__Internal__KeyVersionRecord *rec,
                           Mhsm__V1__KeyAttributes **out)
{
    Mhsm__V1__KeyAttributes *a = malloc(sizeof *a);
    if (a == NULL)
        return MH_ENOMEM;
    mhsm__v1__key_attributes__init(a);
    *out = a;
    a->enabled = malloc(sizeof *a->enabled);
    a->exportable = malloc(sizeof *a->exportable);
    if (a->enabled == NULL || a->exportable == NULL)
        return MH_ENOMEM;
    mhsm__v1__opt_bool__init(a->enabled);
    mhsm__v1__opt_bool__init(a->exportable);
    a->enabled->value = rec->enabled;
    a->exportable->value = false;
    if (rec->not_before != 0) {
        a->not_before = malloc(sizeof *a->not_before);
        if (a->not_before == NULL)
            return MH_ENOMEM;
        mhsm__v1__opt_int64__init(a->not_before);
        a->not_before->value = rec->not_before;
    }
    if (rec->expires != 0) {
        a->expires = malloc(sizeof *a->expires);
        if (a->expires == NULL)
            return MH_ENOMEM;
        mhsm__v1__opt_int64__init(a->expires);
        a->expires->value = rec->expires;
    }
    a->created = rec->created;
    a->updated = rec->updated;
    a->recoverable_days = (int32_t)retention_days;
    a->recovery_level = dup_str(mh_keyrec_recovery_level(retention_days));
    return a->recovery_level == NULL ? MH_ENOMEM : 0;
}

static int bn_param(EVP_PKEY *pk, const char *name, ProtobufCBinaryData *out)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pk, name, &bn) != 1)
        return MH_ECRYPTO;
    int len = BN_num_bytes(bn);
    out->data = malloc(len > 0 ? (size_t)len : 1);
    if (out->data == NULL) {
        BN_free(bn);
        return MH_ENOMEM;
    }
    out->len = (size_t)BN_bn2bin(bn, out->data);
    BN_free(bn);
    return 0;
}

static int fill_public(const Mhsm__Internal__KeyVersionRecord *rec, Mhsm__V1__JsonWebKey *jwk)
{
    if (rec->kty == MH_KTY_OCT)
        return 0;
    const unsigned char *p = rec->public_der.data;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)rec->public_der.len);
    if (pk == NULL)
        return MH_ECORRUPT;
    int rv = 0;
    if (rec->kty == MH_KTY_RSA) {
        rv = bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &jwk->n);
        if (rv == 0)
            rv = bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &jwk->e);
    } else {
        enum mh_curve curve = (enum mh_curve)rec->curve;
        size_t fl = mh_curve_field_len(curve);
        uint8_t pt[1 + 2 * 66];
        size_t len = 0;
        jwk->crv = dup_str(mh_curve_name(curve));
        if (jwk->crv == NULL || fl == 0) {
            rv = jwk->crv == NULL ? MH_ENOMEM : MH_ECORRUPT;
        } else if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt,
                                                   sizeof pt, &len) != 1 ||
                   len != 1 + 2 * fl || pt[0] != 0x04) {
            rv = MH_ECORRUPT;
        } else {
            jwk->x.data = malloc(fl);
            jwk->y.data = malloc(fl);
            if (jwk->x.data == NULL || jwk->y.data == NULL) {
                rv = MH_ENOMEM;
            } else {
                memcpy(jwk->x.data, pt + 1, fl);
                memcpy(jwk->y.data, pt + 1 + fl, fl);
                jwk->x.len = jwk->y.len = fl;
            }
        }
    }
    EVP_PKEY_free(pk);
    return rv;
}

static int fill_jwk(const char *hsm, const Mhsm__Internal__KeyVersionRecord *rec,
                    Mhsm__V1__JsonWebKey **out)
{
    Mhsm__V1__JsonWebKey *jwk = malloc(sizeof *jwk);
    if (jwk == NULL)
        return MH_ENOMEM;
    mhsm__v1__json_web_key__init(jwk);
    *out = jwk;
    struct mh_buf kid = {0};
    MH_TRY(mh_keyrec_kid(hsm, rec->name, rec->version, &kid));
    jwk->kid = (char *)mh_buf_steal(&kid, NULL);
    jwk->kty = dup_str(mh_keyrec_kty_name((enum mh_kty)rec->kty));
    if (jwk->kid == NULL || jwk->kty == NULL)
        return MH_ENOMEM;
    if (rec->n_key_ops > 0) {
        jwk->key_ops = calloc(rec->n_key_ops, sizeof *jwk->key_ops);
        if (jwk->key_ops == NULL)
            return MH_ENOMEM;
        for (size_t i = 0; i < rec->n_key_ops; i++) {
            jwk->key_ops[i] = dup_str(rec->key_ops[i]);
            if (jwk->key_ops[i] == NULL)
                return MH_ENOMEM;
            jwk->n_key_ops++;
        }
    }
    return fill_public(rec, jwk);
}

int mh_keyrec_bundle(const char *hsm, unsigned retention_days,
                     const Mhsm__Internal__KeyVersionRecord *rec, Mhsm__V1__KeyBundle *out)
{
    mhsm__v1__key_bundle__init(out);
    int rv = fill_jwk(hsm, rec, &out->key);
    if (rv == 0)
        rv = fill_attributes(retention_days, rec, &out->attributes);
    if (rv == 0)
        rv = fill_tags(&mhsm__v1__key_bundle__tags_entry__descriptor, rec, &out->n_tags,
                       (void ***)&out->tags);
    if (rv < 0)
        mh_keyrec_bundle_clear(out);
    return rv;
}

/* Frees a message built by the functions above (all members malloc'd). Relies on
 * protobuf-c's free_unpacked walking descriptors with the system allocator. */
static void free_members(ProtobufCMessage *m)
{
    /* free_unpacked frees the message struct too; our top-level structs are
     * caller-owned, so free a heap copy of it instead. */
    size_t sz = m->descriptor->sizeof_message;
    ProtobufCMessage *copy = malloc(sz);
    if (copy == NULL)
        return; /* leak rather than crash; only reachable when out of memory */
    memcpy(copy, m, sz);
    protobuf_c_message_free_unpacked(copy, NULL);
}

void mh_keyrec_bundle_clear(Mhsm__V1__KeyBundle *b)
{
    free_members(&b->base);
    mhsm__v1__key_bundle__init(b);
}

int mh_keyrec_item(const char *hsm, unsigned retention_days,
                   const Mhsm__Internal__KeyVersionRecord *rec, bool with_version,
                   Mhsm__V1__KeyItem *out)
{
    mhsm__v1__key_item__init(out);
    struct mh_buf kid = {0};
    int rv = mh_keyrec_kid(hsm, rec->name, with_version ? rec->version : NULL, &kid);
    if (rv == 0) {
        out->kid = (char *)mh_buf_steal(&kid, NULL);
        if (out->kid == NULL)
            rv = MH_ENOMEM;
    }
    if (rv == 0)
        rv = fill_attributes(retention_days, rec, &out->attributes);
    if (rv == 0)
        rv = fill_tags(&mhsm__v1__key_item__tags_entry__descriptor, rec, &out->n_tags,
                       (void ***)&out->tags);
    if (rv < 0) {
        mh_buf_free(&kid);
        mh_keyrec_item_clear(out);
    }
    return rv;
}

void mh_keyrec_item_clear(Mhsm__V1__KeyItem *it)
{
    free_members(&it->base);
    mhsm__v1__key_item__init(it);
}

int mh_keyrec_usable(const Mhsm__Internal__KeyVersionRecord *rec, unsigned op, int64_t now)
{
    if (!rec->enabled)
        return MH_EDISABLED;
    if (rec->not_before != 0 && now < rec->not_before)
        return MH_ENOTYET;
    /* Key Vault: after exp a key must not protect new data (encrypt, wrap, sign);
     * decrypt, unwrap and verify of existing data stay possible. */
    if (rec->expires != 0 && now >= rec->expires &&
        (op & (MH_OP_ENCRYPT | MH_OP_WRAP | MH_OP_SIGN)) != 0)
        return MH_EEXPIRED;
    if ((mh_keyrec_ops_of(rec) & op) == 0)
        return MH_EKEYOPS;
    return 0;
}
