#include "crypto/sd.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/b64.h"
#include "crypto/jwe.h"
#include "crypto/rand.h"
#include "crypto/shamir.h"
#include "crypto/sp108.h"

#define KDF_NAME     "sp108_kdf"
#define KEY_ALG_NAME "shamir_share"

void mh_sd_items_free(struct mh_sd_items *items)
{
    if (items == NULL)
        return;
    for (size_t i = 0; i < items->n; i++) {
        free(items->v[i].tag);
        mh_secret_free(&items->v[i].value);
    }
    free(items->v);
    items->v = NULL;
    items->n = 0;
}

static int item_cek(const struct mh_secret *master, const char *tag, size_t tag_len,
                    struct mh_secret *cek)
{
    return mh_sp108_derive(master->data, master->len, (const uint8_t *)tag, tag_len, NULL, 0,
                           MH_JWE_CEK_LEN, cek);
}

static int set_str(json_t *obj, const char *key, const char *s, size_t len)
{
    json_t *v = json_stringn(s, len);
    if (v == NULL)
        return MH_EINVAL;
    return json_object_set_new(obj, key, v) == 0 ? 0 : MH_ENOMEM;
}

/* Builds the "EncData" object for |items| under |master|. */
static int make_enc_data(const struct mh_sd_item *items, size_t n_items,
                         const struct mh_secret *master, json_t **out)
{
    int rv = MH_ENOMEM;
    json_t *enc = json_object(), *data = json_array();
    if (enc == NULL || data == NULL || json_object_set(enc, "data", data) != 0)
        goto err_after_json;
    for (size_t i = 0; i < n_items; i++) {
        struct mh_secret cek = {0};
        struct mh_buf jwe = {0};
        json_t *d = json_object();
        if (d == NULL || json_array_append_new(data, d) != 0) {
            rv = MH_ENOMEM;
            goto err_after_json;
        }
        if ((rv = item_cek(master, items[i].tag, items[i].tag_len, &cek)) < 0)
            goto err_after_json;
        rv = mh_jwe_encrypt_dir(&cek, items[i].tag, items[i].tag_len, items[i].value->data,
                                items[i].value->len, &jwe);
        mh_secret_free(&cek);
        if (rv == 0)
            rv = set_str(d, "compact_jwe", (const char *)jwe.data, jwe.len);
        mh_buf_free(&jwe);
        if (rv == 0)
            rv = set_str(d, "tag", items[i].tag, items[i].tag_len);
        if (rv < 0)
            goto err_after_json;
    }
    if (json_object_set_new(enc, "kdf", json_string(KDF_NAME)) != 0) {
        rv = MH_ENOMEM;
        goto err_after_json;
    }
    json_decref(data);
    *out = enc;
    return 0;

err_after_json:
    json_decref(data);
    json_decref(enc);
    return rv;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return mh_buf_append(data, buffer, size) < 0 ? -1 : 0;
}

static int dump(const json_t *root, struct mh_buf *out)
{
    size_t start = out->len;
    if (json_dump_callback(root, dump_cb, out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0) {
        mh_buf_truncate(out, start);
        return MH_ENOMEM;
    }
    return 0;
}

static int check_items(const struct mh_sd_item *items, size_t n_items)
{
    if (items == NULL || n_items == 0 || n_items > MH_SD_MAX_ITEMS)
        return MH_EINVAL;
    for (size_t i = 0; i < n_items; i++) {
        if (items[i].tag == NULL || items[i].tag_len == 0 || items[i].tag_len > MH_SD_MAX_TAG ||
            items[i].value == NULL)
            return MH_EINVAL;
        if (items[i].value->len > MH_JWE_MAX_PLAINTEXT)
            return MH_ETOOBIG;
        for (size_t j = 0; j < i; j++) {
            if (items[j].tag_len == items[i].tag_len &&
                memcmp(items[j].tag, items[i].tag, items[i].tag_len) == 0)
                return MH_EINVAL;
        }
    }
    return 0;
}

int mh_sd_build(const struct mh_sd_item *items, size_t n_items, const struct mh_cert *const *certs,
                size_t n_certs, unsigned quorum, struct mh_buf *json_out)
{
    int rv;
    if (json_out == NULL || (certs == NULL && n_certs > 0))
        return MH_EINVAL;
    if (n_certs < MH_SD_MIN_CERTS || n_certs > MH_SD_MAX_CERTS || quorum < MH_SD_MIN_QUORUM ||
        quorum > MH_SD_MAX_QUORUM || quorum > n_certs)
        return MH_EQUORUM;
    for (size_t i = 0; i < n_certs; i++) {
        if (certs[i] == NULL)
            return MH_EINVAL;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(mh_cert_x5t_s256(certs[i]), mh_cert_x5t_s256(certs[j])) == 0)
                return MH_EQUORUM;
        }
    }
    MH_TRY(check_items(items, n_items));

    struct mh_secret master = {0};
    MH_TRY(mh_rand_secret(&master, MH_SD_MASTER_LEN));
    struct mh_secret shares[MH_SD_MAX_CERTS];
    rv = mh_shamir_split(master.data, master.len, quorum, (unsigned)n_certs, shares);
    if (rv < 0)
        goto err_after_master;

    json_t *enc = NULL;
    rv = make_enc_data(items, n_items, &master, &enc);
    if (rv < 0)
        goto err_after_shares;
    rv = MH_ENOMEM;
    json_t *root = json_object(), *sk = json_object(), *arr = json_array();
    if (root == NULL || sk == NULL || arr == NULL) {
        json_decref(enc);
        goto err_after_root;
    }
    if (json_object_set_new(root, "EncData", enc) != 0) /* consumes enc even on failure */
        goto err_after_root;
    for (size_t i = 0; i < n_certs; i++) {
        struct mh_buf jwe = {0};
        json_t *e = json_object();
        if (e == NULL || json_array_append_new(arr, e) != 0) {
            rv = MH_ENOMEM;
            goto err_after_root;
        }
        rv = mh_jwe_encrypt_rsa(mh_cert_pkey(certs[i]), shares[i].data, shares[i].len, &jwe);
        if (rv == 0)
            rv = set_str(e, "enc_key", (const char *)jwe.data, jwe.len);
        mh_buf_free(&jwe);
        if (rv == 0)
            rv = set_str(e, "x5t_256", mh_cert_x5t_s256(certs[i]), MH_CERT_X5T_LEN);
        if (rv < 0)
            goto err_after_root;
    }
    rv = MH_ENOMEM;
    if (json_object_set(sk, "enc_shares", arr) != 0 ||
        json_object_set_new(sk, "required", json_integer(quorum)) != 0 ||
        json_object_set_new(sk, "key_algorithm", json_string(KEY_ALG_NAME)) != 0 ||
        json_object_set(root, "SharedKeys", sk) != 0)
        goto err_after_root;
    rv = dump(root, json_out);

err_after_root:
    json_decref(arr);
    json_decref(sk);
    json_decref(root);
err_after_shares:
    for (size_t i = 0; i < n_certs; i++)
        mh_secret_free(&shares[i]);
err_after_master:
    mh_secret_free(&master);
    return rv;
}

/* ---- parsing ---- */

static int is_str(const json_t *v, const char *want)
{
    size_t n = strlen(want);
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), want, n) == 0;
}

static int load(const char *json, size_t len, json_t **root)
{
    if (json == NULL)
        return MH_EINVAL;
    if (len == 0 || len > MH_SD_MAX_FILE)
        return MH_ESDFILE;
    json_error_t jerr;
    json_t *r = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (r == NULL)
        return MH_EJSON;
    if (!json_is_object(r)) {
        json_decref(r);
        return MH_ESDFILE;
    }
    *root = r;
    return 0;
}

/* Validates "EncData" (borrowed from the root). */
static int check_enc_data(const json_t *root)
{
    const json_t *enc = json_object_get(root, "EncData");
    if (!json_is_object(enc) || !is_str(json_object_get(enc, "kdf"), KDF_NAME))
        return MH_ESDFILE;
    const json_t *data = json_object_get(enc, "data");
    if (!json_is_array(data) || json_array_size(data) == 0 ||
        json_array_size(data) > MH_SD_MAX_ITEMS)
        return MH_ESDFILE;
    for (size_t i = 0; i < json_array_size(data); i++) {
        const json_t *d = json_array_get(data, i);
        const json_t *jwe = json_object_get(d, "compact_jwe"), *tag = json_object_get(d, "tag");
        if (!json_is_object(d) || !json_is_string(jwe) || !json_is_string(tag) ||
            json_string_length(jwe) == 0 || json_string_length(jwe) > MH_JWE_MAX_LEN ||
            json_string_length(tag) == 0 || json_string_length(tag) > MH_SD_MAX_TAG)
            return MH_ESDFILE;
    }
    return 0;
}

/* An {"enc_key": JWE, "x5t_256": thumbprint} object. */
static int check_key_obj(const json_t *k)
{
    const json_t *ek = json_object_get(k, "enc_key"), *t = json_object_get(k, "x5t_256");
    if (!json_is_object(k) || !json_is_string(ek) || !json_is_string(t) ||
        json_string_length(ek) == 0 || json_string_length(ek) > MH_JWE_MAX_LEN ||
        json_string_length(t) != MH_CERT_X5T_LEN)
        return MH_ESDFILE;
    struct mh_buf raw = {0};
    int rv = mh_b64url_decode(json_string_value(t), MH_CERT_X5T_LEN, &raw);
    mh_buf_free(&raw);
    return rv < 0 ? MH_ESDFILE : 0;
}

static int check_shared_keys(const json_t *root, unsigned *required)
{
    const json_t *sk = json_object_get(root, "SharedKeys");
    if (!json_is_object(sk) || !is_str(json_object_get(sk, "key_algorithm"), KEY_ALG_NAME))
        return MH_ESDFILE;
    const json_t *req = json_object_get(sk, "required");
    const json_t *shares = json_object_get(sk, "enc_shares");
    if (!json_is_integer(req) || !json_is_array(shares))
        return MH_ESDFILE;
    json_int_t m = json_integer_value(req);
    size_t n = json_array_size(shares);
    if (m < (json_int_t)MH_SD_MIN_QUORUM || m > (json_int_t)MH_SD_MAX_QUORUM || n == 0 ||
        n > MH_SD_MAX_CERTS || (size_t)m > n)
        return MH_ESDFILE;
    for (size_t i = 0; i < n; i++)
        MH_TRY(check_key_obj(json_array_get(shares, i)));
    *required = (unsigned)m;
    return 0;
}

static int check_pair(const struct mh_cert *cert, EVP_PKEY *priv)
{
    if (cert == NULL || priv == NULL || !mh_cert_matches_key(cert, priv))
        return MH_EINVAL;
    return 0;
}

/* Decrypts every EncData item under |master| into |out|. */
static int decrypt_items(const json_t *root, const struct mh_secret *master,
                         struct mh_sd_items *out)
{
    const json_t *data = json_object_get(json_object_get(root, "EncData"), "data");
    size_t n = json_array_size(data);
    out->v = calloc(n, sizeof *out->v);
    if (out->v == NULL)
        return MH_ENOMEM;
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *d = json_array_get(data, i);
        const json_t *jwe = json_object_get(d, "compact_jwe"), *tag = json_object_get(d, "tag");
        struct mh_sd_out_item *it = &out->v[i];
        size_t tl = json_string_length(tag);
        it->tag = malloc(tl + 1);
        if (it->tag == NULL)
            goto err_nomem;
        memcpy(it->tag, json_string_value(tag), tl);
        it->tag[tl] = 0;
        it->tag_len = tl;
        out->n = i + 1;
        struct mh_secret cek = {0};
        int rv = item_cek(master, it->tag, tl, &cek);
        if (rv == 0)
            rv = mh_jwe_decrypt_dir(json_string_value(jwe), json_string_length(jwe), &cek,
                                    &it->value);
        mh_secret_free(&cek);
        if (rv < 0) {
            mh_sd_items_free(out);
            return rv;
        }
    }
    return 0;
err_nomem:
    mh_sd_items_free(out);
    return MH_ENOMEM;
}

/* Decrypts the shares the keys match and combines them into |master|. */
static int recover_master(const json_t *root, unsigned required,
                          const struct mh_sd_wrapping_key *keys, size_t n_keys,
                          struct mh_secret *master)
{
    int rv = 0;
    const json_t *shares = json_object_get(json_object_get(root, "SharedKeys"), "enc_shares");
    size_t n_sh = json_array_size(shares);
    struct mh_secret got[MH_SD_MAX_CERTS];
    struct mh_slice sl[MH_SD_MAX_CERTS];
    bool used[MH_SD_MAX_CERTS] = {false};
    size_t n_got = 0;

    for (size_t k = 0; k < n_keys; k++)
        MH_TRY(check_pair(keys[k].cert, keys[k].priv));
    for (size_t k = 0; k < n_keys; k++) {
        const char *x5t = mh_cert_x5t_s256(keys[k].cert);
        bool matched = false;
        for (size_t s = 0; s < n_sh; s++) {
            const json_t *e = json_array_get(shares, s);
            if (!is_str(json_object_get(e, "x5t_256"), x5t))
                continue;
            matched = true;
            if (used[s])
                continue; /* the same key given twice */
            const json_t *ek = json_object_get(e, "enc_key");
            rv = mh_jwe_decrypt_rsa(json_string_value(ek), json_string_length(ek), keys[k].priv,
                                    &got[n_got]);
            if (rv < 0)
                goto err_after_got;
            used[s] = true;
            sl[n_got] = mh_slice_of(got[n_got].data, got[n_got].len);
            n_got++;
        }
        if (!matched) {
            rv = MH_ENOKEYMATCH;
            goto err_after_got;
        }
    }
    rv = n_got < required ? MH_ESHARES : mh_shamir_combine(sl, n_got, required, master);

err_after_got:
    for (size_t i = 0; i < n_got; i++)
        mh_secret_free(&got[i]);
    return rv;
}

int mh_sd_recover(const char *json, size_t len, const struct mh_sd_wrapping_key *keys,
                  size_t n_keys, struct mh_sd_items *out, struct mh_secret *master_out)
{
    int rv;
    if (out == NULL || (keys == NULL && n_keys > 0))
        return MH_EINVAL;
    *out = (struct mh_sd_items){0};
    if (master_out != NULL)
        *master_out = (struct mh_secret){0};
    json_t *root;
    MH_TRY(load(json, len, &root));
    unsigned required = 0;
    if ((rv = check_enc_data(root)) < 0 || (rv = check_shared_keys(root, &required)) < 0)
        goto err_after_root;
    struct mh_secret master = {0};
    if ((rv = recover_master(root, required, keys, n_keys, &master)) < 0)
        goto err_after_root;
    rv = decrypt_items(root, &master, out);
    if (rv == 0 && master_out != NULL) {
        *master_out = master;
        master = (struct mh_secret){0};
    }
    mh_secret_free(&master);
err_after_root:
    json_decref(root);
    return rv;
}

int mh_sd_restore_blob(const char *json, size_t len, const struct mh_sd_wrapping_key *keys,
                       size_t n_keys, const struct mh_cert *exchange, struct mh_buf *blob_out)
{
    int rv;
    if (exchange == NULL || blob_out == NULL)
        return MH_EINVAL;
    struct mh_sd_items items;
    MH_TRY(mh_sd_recover(json, len, keys, n_keys, &items, NULL));

    struct mh_sd_item *in = calloc(items.n, sizeof *in);
    if (in == NULL) {
        rv = MH_ENOMEM;
        goto err_after_items;
    }
    for (size_t i = 0; i < items.n; i++)
        in[i] = (struct mh_sd_item){items.v[i].tag, items.v[i].tag_len, &items.v[i].value};

    struct mh_secret master = {0};
    if ((rv = mh_rand_secret(&master, MH_SD_MASTER_LEN)) < 0)
        goto err_after_in;
    json_t *enc = NULL;
    if ((rv = make_enc_data(in, items.n, &master, &enc)) < 0)
        goto err_after_master;
    struct mh_buf jwe = {0};
    rv = MH_ENOMEM;
    json_t *root = json_object(), *wk = json_object();
    if (root == NULL || wk == NULL) {
        json_decref(enc);
        goto err_after_root;
    }
    if (json_object_set_new(root, "EncData", enc) != 0) /* consumes enc even on failure */
        goto err_after_root;
    if ((rv = mh_jwe_encrypt_rsa(mh_cert_pkey(exchange), master.data, master.len, &jwe)) < 0 ||
        (rv = set_str(wk, "enc_key", (const char *)jwe.data, jwe.len)) < 0 ||
        (rv = set_str(wk, "x5t_256", mh_cert_x5t_s256(exchange), MH_CERT_X5T_LEN)) < 0)
        goto err_after_root;
    rv = MH_ENOMEM;
    if (json_object_set(root, "WrappedKey", wk) != 0)
        goto err_after_root;
    rv = dump(root, blob_out);

err_after_root:
    mh_buf_free(&jwe);
    json_decref(wk);
    json_decref(root);
err_after_master:
    mh_secret_free(&master);
err_after_in:
    free(in);
err_after_items:
    mh_sd_items_free(&items);
    return rv;
}

int mh_sd_open_restore_blob(const char *json, size_t len, const struct mh_cert *exchange,
                            EVP_PKEY *exchange_priv, struct mh_sd_items *out)
{
    int rv;
    if (out == NULL)
        return MH_EINVAL;
    *out = (struct mh_sd_items){0};
    MH_TRY(check_pair(exchange, exchange_priv));
    json_t *root;
    MH_TRY(load(json, len, &root));
    const json_t *wk = json_object_get(root, "WrappedKey");
    if ((rv = check_enc_data(root)) < 0 || (rv = check_key_obj(wk)) < 0)
        goto err_after_root;
    rv = MH_ENOKEYMATCH;
    if (!is_str(json_object_get(wk, "x5t_256"), mh_cert_x5t_s256(exchange)))
        goto err_after_root;
    const json_t *ek = json_object_get(wk, "enc_key");
    struct mh_secret master = {0};
    if ((rv = mh_jwe_decrypt_rsa(json_string_value(ek), json_string_length(ek), exchange_priv,
                                 &master)) < 0)
        goto err_after_root;
    if (master.len < 16 || master.len > 64)
        rv = MH_ESDFILE;
    else
        rv = decrypt_items(root, &master, out);
    mh_secret_free(&master);
err_after_root:
    json_decref(root);
    return rv;
}
