#include "crypto/jwe.h"

#include <string.h>

#include <jansson.h>
#include <openssl/rsa.h>

#include "common/b64.h"
#include "crypto/alg.h"
#include "crypto/rand.h"
#include "crypto/sp108.h"

#define ENC_NAME "A256CBC-HS512"
#define RSA_KID  "not used"
#define MAX_KID  256u

static void be64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* tag = first 32 bytes of HMAC-SHA-512(mac_key, AAD || IV || CT || AL). */
static int compute_tag(const struct mh_secret *cek, const uint8_t *aad, size_t aad_len,
                       const uint8_t *iv, const uint8_t *ct, size_t ct_len, uint8_t tag[32])
{
    uint8_t al[8], mac[MH_HMAC_SHA512_LEN];
    if (aad_len > UINT64_MAX / 8)
        return MH_EOVERFLOW;
    be64(al, (uint64_t)aad_len * 8u);
    struct mh_slice parts[4] = {mh_slice_of(aad, aad_len), mh_slice_of(iv, MH_JWE_IV_LEN),
                                mh_slice_of(ct, ct_len), mh_slice_of(al, 8)};
    MH_TRY(mh_hmac_sha512(cek->data, 32, parts, 4, mac));
    memcpy(tag, mac, MH_JWE_TAG_LEN);
    mh_wipe(mac, sizeof mac);
    return 0;
}

int mh_jwe_a256cbc_hs512_encrypt(const struct mh_secret *cek, const uint8_t iv[16],
                                 const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                                 size_t pt_len, struct mh_buf *ct, uint8_t tag[32])
{
    int rv = MH_ECRYPTO;
    if (cek == NULL || cek->len != MH_JWE_CEK_LEN || iv == NULL || ct == NULL || tag == NULL ||
        (aad == NULL && aad_len > 0) || (pt == NULL && pt_len > 0))
        return MH_EINVAL;
    if (pt_len > MH_JWE_MAX_PLAINTEXT)
        return MH_ETOOBIG;
    MH_TRY(mh_alg_init());
    size_t start = ct->len;
    size_t ct_len = pt_len + 16 - pt_len % 16;
    uint8_t *p;
    MH_TRY(mh_buf_extend(ct, ct_len, &p));

    EVP_CIPHER_CTX *cctx = EVP_CIPHER_CTX_new();
    if (cctx == NULL) {
        rv = MH_ENOMEM;
        goto err_after_extend;
    }
    int n1 = 0, n2 = 0;
    if (EVP_EncryptInit_ex2(cctx, mh_alg_cipher(MH_CIPHER_AES_256_CBC), cek->data + 32, iv, NULL) !=
            1 ||
        EVP_EncryptUpdate(cctx, p, &n1, pt, (int)pt_len) != 1 ||
        EVP_EncryptFinal_ex(cctx, p + n1, &n2) != 1 || (size_t)n1 + (size_t)n2 != ct_len)
        goto err_after_cctx;
    EVP_CIPHER_CTX_free(cctx);
    rv = compute_tag(cek, aad, aad_len, iv, ct->data + start, ct_len, tag);
    if (rv < 0)
        goto err_after_extend;
    return 0;

err_after_cctx:
    EVP_CIPHER_CTX_free(cctx);
err_after_extend:
    mh_buf_truncate(ct, start);
    return rv;
}

int mh_jwe_a256cbc_hs512_decrypt(const struct mh_secret *cek, const uint8_t iv[16],
                                 const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                                 size_t ct_len, const uint8_t tag[32], struct mh_secret *pt)
{
    int rv;
    if (pt == NULL)
        return MH_EINVAL;
    *pt = (struct mh_secret){0};
    if (cek == NULL || cek->len != MH_JWE_CEK_LEN || iv == NULL || tag == NULL ||
        (aad == NULL && aad_len > 0) || (ct == NULL && ct_len > 0))
        return MH_EINVAL;
    if (ct_len == 0 || ct_len % 16 != 0)
        return MH_EINPUTLEN;
    if (ct_len > MH_JWE_MAX_PLAINTEXT + 16)
        return MH_ETOOBIG;
    MH_TRY(mh_alg_init());

    uint8_t want[MH_JWE_TAG_LEN];
    MH_TRY(compute_tag(cek, aad, aad_len, iv, ct, ct_len, want));
    int same = mh_ct_eq(want, tag, MH_JWE_TAG_LEN);
    mh_wipe(want, sizeof want);
    if (!same)
        return MH_EAUTH;

    MH_TRY(mh_secret_alloc(pt, ct_len));
    rv = MH_ECRYPTO;
    EVP_CIPHER_CTX *cctx = EVP_CIPHER_CTX_new();
    if (cctx == NULL) {
        rv = MH_ENOMEM;
        goto err_after_pt;
    }
    int n1 = 0, n2 = 0;
    if (EVP_DecryptInit_ex2(cctx, mh_alg_cipher(MH_CIPHER_AES_256_CBC), cek->data + 32, iv, NULL) !=
            1 ||
        EVP_DecryptUpdate(cctx, pt->data, &n1, ct, (int)ct_len) != 1)
        goto err_after_cctx;
    if (EVP_DecryptFinal_ex(cctx, pt->data + n1, &n2) != 1) {
        rv = MH_EDECRYPT; /* padding; reachable only with the right MAC key */
        goto err_after_cctx;
    }
    EVP_CIPHER_CTX_free(cctx);
    mh_secret_shrink(pt, (size_t)n1 + (size_t)n2);
    return 0;

err_after_cctx:
    EVP_CIPHER_CTX_free(cctx);
err_after_pt:
    mh_secret_free(pt);
    return rv;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return mh_buf_append(data, buffer, size) < 0 ? -1 : 0;
}

/* Appends base64url(header JSON) to |out|. */
static int encode_header(const char *alg, const char *kid, size_t kid_len, struct mh_buf *out)
{
    int rv = MH_ENOMEM;
    json_t *h = json_object();
    if (h == NULL)
        return MH_ENOMEM;
    json_t *k = json_stringn(kid, kid_len);
    if (k == NULL) {
        rv = MH_EINVAL; /* not UTF-8 */
        goto err_after_h;
    }
    if (json_object_set_new(h, "alg", json_string(alg)) != 0 ||
        json_object_set_new(h, "enc", json_string(ENC_NAME)) != 0 ||
        json_object_set_new(h, "kid", k) != 0)
        goto err_after_h;
    struct mh_buf js = {0};
    if (json_dump_callback(h, dump_cb, &js,
                           JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER) != 0)
        goto err_after_js;
    rv = mh_b64url_encode(js.data, js.len, out);
err_after_js:
    mh_buf_free(&js);
err_after_h:
    json_decref(h);
    return rv;
}

/* Appends the five-part serialization; |hdr| already holds part one. */
static int assemble(const struct mh_buf *hdr, const uint8_t *ek, size_t ek_len, const uint8_t *iv,
                    const struct mh_buf *ct, const uint8_t *tag, struct mh_buf *out)
{
    size_t start = out->len;
    int rv;
    if ((rv = mh_buf_append(out, hdr->data, hdr->len)) < 0 ||
        (rv = mh_buf_append_u8(out, '.')) < 0 || (rv = mh_b64url_encode(ek, ek_len, out)) < 0 ||
        (rv = mh_buf_append_u8(out, '.')) < 0 ||
        (rv = mh_b64url_encode(iv, MH_JWE_IV_LEN, out)) < 0 ||
        (rv = mh_buf_append_u8(out, '.')) < 0 ||
        (rv = mh_b64url_encode(ct->data, ct->len, out)) < 0 ||
        (rv = mh_buf_append_u8(out, '.')) < 0 ||
        (rv = mh_b64url_encode(tag, MH_JWE_TAG_LEN, out)) < 0) {
        mh_buf_truncate(out, start);
        return rv;
    }
    return 0;
}

static int encrypt_compact(const struct mh_secret *cek, const char *alg, const char *kid,
                           size_t kid_len, const uint8_t *ek, size_t ek_len, const uint8_t *pt,
                           size_t pt_len, struct mh_buf *out)
{
    int rv;
    struct mh_buf hdr = {0}, ct = {0};
    uint8_t iv[MH_JWE_IV_LEN], tag[MH_JWE_TAG_LEN];
    rv = encode_header(alg, kid, kid_len, &hdr);
    if (rv < 0)
        goto err_after_hdr;
    rv = mh_rand_bytes(iv, sizeof iv);
    if (rv < 0)
        goto err_after_hdr;
    rv = mh_jwe_a256cbc_hs512_encrypt(cek, iv, hdr.data, hdr.len, pt, pt_len, &ct, tag);
    if (rv < 0)
        goto err_after_hdr;
    rv = assemble(&hdr, ek, ek_len, iv, &ct, tag, out);
    mh_buf_free(&ct);
err_after_hdr:
    mh_buf_free(&hdr);
    return rv;
}

int mh_jwe_encrypt_dir(const struct mh_secret *cek, const char *kid, size_t kid_len,
                       const uint8_t *pt, size_t pt_len, struct mh_buf *out)
{
    if (cek == NULL || cek->len != MH_JWE_CEK_LEN || kid == NULL || kid_len == 0 ||
        kid_len > MAX_KID || out == NULL || (pt == NULL && pt_len > 0))
        return MH_EINVAL;
    return encrypt_compact(cek, "dir", kid, kid_len, NULL, 0, pt, pt_len, out);
}

static int oaep_ctx(EVP_PKEY *pkey, int decrypt, enum mh_md md, EVP_PKEY_CTX **out)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL)
        return MH_ENOMEM;
    const EVP_MD *d = mh_alg_md(md);
    if ((decrypt ? EVP_PKEY_decrypt_init(ctx) : EVP_PKEY_encrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, d) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, d) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return MH_ECRYPTO;
    }
    *out = ctx;
    return 0;
}

int mh_jwe_encrypt_rsa(EVP_PKEY *pub, const uint8_t *pt, size_t pt_len, struct mh_buf *out)
{
    int rv;
    if (pub == NULL || out == NULL || (pt == NULL && pt_len > 0) || !EVP_PKEY_is_a(pub, "RSA"))
        return MH_EINVAL;
    MH_TRY(mh_alg_init());
    struct mh_secret cek = {0};
    MH_TRY(mh_rand_secret(&cek, MH_JWE_CEK_LEN));
    EVP_PKEY_CTX *ctx;
    rv = oaep_ctx(pub, 0, MH_MD_SHA256, &ctx);
    if (rv < 0)
        goto err_after_cek;
    struct mh_buf ek = {0};
    size_t ek_len = 0;
    uint8_t *p;
    rv = MH_ECRYPTO;
    if (EVP_PKEY_encrypt(ctx, NULL, &ek_len, cek.data, cek.len) != 1 || ek_len == 0)
        goto err_after_ctx;
    if ((rv = mh_buf_extend(&ek, ek_len, &p)) < 0)
        goto err_after_ctx;
    rv = MH_ECRYPTO;
    if (EVP_PKEY_encrypt(ctx, p, &ek_len, cek.data, cek.len) != 1)
        goto err_after_ek;
    mh_buf_truncate(&ek, ek_len);
    rv = encrypt_compact(&cek, "RSA-OAEP-256", RSA_KID, strlen(RSA_KID), ek.data, ek.len, pt,
                         pt_len, out);
err_after_ek:
    mh_buf_free(&ek);
err_after_ctx:
    EVP_PKEY_CTX_free(ctx);
err_after_cek:
    mh_secret_free(&cek);
    return rv;
}

enum jwe_alg { JWE_DIR, JWE_RSA_OAEP_256, JWE_RSA_OAEP };

struct parsed {
    const char *aad; /* the header part, as it appears in the input */
    size_t aad_len;
    enum jwe_alg alg;
    struct mh_buf ek, iv, ct, tag;
};

static void parsed_free(struct parsed *p)
{
    mh_buf_free(&p->ek);
    mh_buf_free(&p->iv);
    mh_buf_free(&p->ct);
    mh_buf_free(&p->tag);
}

static int str_is(const json_t *v, const char *want)
{
    size_t n = strlen(want);
    return json_string_length(v) == n && memcmp(json_string_value(v), want, n) == 0;
}

static int parse_header(const char *b64, size_t len, enum jwe_alg *alg)
{
    int rv;
    struct mh_buf raw = {0};
    if (len == 0 || len > mh_b64url_encoded_len(MH_JWE_MAX_HEADER))
        return MH_EJWE;
    json_t *h = NULL;
    /* a failed decode may leave capacity behind: free |raw| on every path */
    if ((rv = mh_b64url_decode(b64, len, &raw)) < 0)
        goto err_after_h;
    json_error_t jerr;
    h = json_loadb((const char *)raw.data, raw.len, JSON_REJECT_DUPLICATES, &jerr);
    rv = MH_EJWE;
    if (h == NULL || !json_is_object(h))
        goto err_after_h;
    json_t *a = json_object_get(h, "alg"), *e = json_object_get(h, "enc");
    json_t *kid = json_object_get(h, "kid");
    if (!json_is_string(a) || !json_is_string(e) || (kid != NULL && !json_is_string(kid)) ||
        json_object_get(h, "zip") != NULL || json_object_get(h, "crit") != NULL ||
        !str_is(e, ENC_NAME))
        goto err_after_h;
    if (str_is(a, "dir"))
        *alg = JWE_DIR;
    else if (str_is(a, "RSA-OAEP-256"))
        *alg = JWE_RSA_OAEP_256;
    else if (str_is(a, "RSA-OAEP"))
        *alg = JWE_RSA_OAEP;
    else
        goto err_after_h;
    rv = 0;
err_after_h:
    json_decref(h);
    mh_buf_free(&raw);
    return rv;
}

static int parse_compact(const char *jwe, size_t len, struct parsed *p)
{
    int rv;
    memset(p, 0, sizeof *p);
    if (jwe == NULL)
        return MH_EINVAL;
    if (len > MH_JWE_MAX_LEN)
        return MH_EJWE;
    size_t start[5], plen[5];
    size_t part = 0, from = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || jwe[i] == '.') {
            if (part == 5)
                return MH_EJWE;
            start[part] = from;
            plen[part] = i - from;
            part++;
            from = i + 1;
        }
    }
    if (part != 5)
        return MH_EJWE;
    MH_TRY(parse_header(jwe, plen[0], &p->alg));
    p->aad = jwe;
    p->aad_len = plen[0];
    struct mh_buf *dst[4] = {&p->ek, &p->iv, &p->ct, &p->tag};
    for (int i = 0; i < 4; i++) {
        rv = mh_b64url_decode(jwe + start[i + 1], plen[i + 1], dst[i]);
        if (rv < 0)
            goto err;
    }
    rv = MH_EJWE;
    if ((p->alg == JWE_DIR) != (p->ek.len == 0) || p->iv.len != MH_JWE_IV_LEN ||
        p->tag.len != MH_JWE_TAG_LEN || p->ct.len == 0 || p->ct.len % 16 != 0)
        goto err;
    return 0;
err:
    parsed_free(p);
    return rv;
}

static int decrypt_parsed(const struct parsed *p, const struct mh_secret *cek, struct mh_secret *pt)
{
    return mh_jwe_a256cbc_hs512_decrypt(cek, p->iv.data, (const uint8_t *)p->aad, p->aad_len,
                                        p->ct.data, p->ct.len, p->tag.data, pt);
}

int mh_jwe_decrypt_dir(const char *jwe, size_t len, const struct mh_secret *cek,
                       struct mh_secret *pt)
{
    if (pt == NULL)
        return MH_EINVAL;
    *pt = (struct mh_secret){0};
    if (cek == NULL || cek->len != MH_JWE_CEK_LEN)
        return MH_EINVAL;
    struct parsed p;
    MH_TRY(parse_compact(jwe, len, &p));
    int rv = p.alg == JWE_DIR ? decrypt_parsed(&p, cek, pt) : MH_EJWE;
    parsed_free(&p);
    return rv;
}

int mh_jwe_decrypt_rsa(const char *jwe, size_t len, EVP_PKEY *priv, struct mh_secret *pt)
{
    int rv;
    if (pt == NULL)
        return MH_EINVAL;
    *pt = (struct mh_secret){0};
    if (priv == NULL || !EVP_PKEY_is_a(priv, "RSA"))
        return MH_EINVAL;
    MH_TRY(mh_alg_init());
    struct parsed p;
    MH_TRY(parse_compact(jwe, len, &p));
    rv = MH_EJWE;
    if (p.alg == JWE_DIR)
        goto err_after_parsed;
    EVP_PKEY_CTX *ctx;
    rv = oaep_ctx(priv, 1, p.alg == JWE_RSA_OAEP_256 ? MH_MD_SHA256 : MH_MD_SHA1, &ctx);
    if (rv < 0)
        goto err_after_parsed;
    struct mh_secret cek = {0};
    size_t cek_len = 0;
    rv = MH_EDECRYPT;
    if (EVP_PKEY_decrypt(ctx, NULL, &cek_len, p.ek.data, p.ek.len) != 1 || cek_len == 0)
        goto err_after_ctx;
    if ((rv = mh_secret_alloc(&cek, cek_len)) < 0)
        goto err_after_ctx;
    rv = MH_EDECRYPT;
    if (EVP_PKEY_decrypt(ctx, cek.data, &cek_len, p.ek.data, p.ek.len) != 1 ||
        cek_len != MH_JWE_CEK_LEN)
        goto err_after_cek;
    mh_secret_shrink(&cek, cek_len);
    rv = decrypt_parsed(&p, &cek, pt);
err_after_cek:
    mh_secret_free(&cek);
err_after_ctx:
    EVP_PKEY_CTX_free(ctx);
err_after_parsed:
    parsed_free(&p);
    return rv;
}
