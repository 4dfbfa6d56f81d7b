#include "crypto/alg.h"

#include <pthread.h>
#include <string.h>

static const struct {
    enum mh_alg alg;
    const char *name;
    enum mh_alg_class cls;
    int md;
    unsigned aes_bits;
} ALGS[] = {
    {MH_ALG_RS256, "RS256", MH_ALG_CLASS_SIGN, MH_MD_SHA256, 0},
    {MH_ALG_RS384, "RS384", MH_ALG_CLASS_SIGN, MH_MD_SHA384, 0},
    {MH_ALG_RS512, "RS512", MH_ALG_CLASS_SIGN, MH_MD_SHA512, 0},
    {MH_ALG_PS256, "PS256", MH_ALG_CLASS_SIGN, MH_MD_SHA256, 0},
    {MH_ALG_PS384, "PS384", MH_ALG_CLASS_SIGN, MH_MD_SHA384, 0},
    {MH_ALG_PS512, "PS512", MH_ALG_CLASS_SIGN, MH_MD_SHA512, 0},
    {MH_ALG_ES256, "ES256", MH_ALG_CLASS_SIGN, MH_MD_SHA256, 0},
    {MH_ALG_ES256K, "ES256K", MH_ALG_CLASS_SIGN, MH_MD_SHA256, 0},
    {MH_ALG_ES384, "ES384", MH_ALG_CLASS_SIGN, MH_MD_SHA384, 0},
    {MH_ALG_ES512, "ES512", MH_ALG_CLASS_SIGN, MH_MD_SHA512, 0},
    {MH_ALG_RSA1_5, "RSA1_5", MH_ALG_CLASS_RSA_ENC, -1, 0},
    {MH_ALG_RSA_OAEP, "RSA-OAEP", MH_ALG_CLASS_RSA_ENC, MH_MD_SHA1, 0},
    {MH_ALG_RSA_OAEP_256, "RSA-OAEP-256", MH_ALG_CLASS_RSA_ENC, MH_MD_SHA256, 0},
    {MH_ALG_A128GCM, "A128GCM", MH_ALG_CLASS_AES_ENC, -1, 128},
    {MH_ALG_A192GCM, "A192GCM", MH_ALG_CLASS_AES_ENC, -1, 192},
    {MH_ALG_A256GCM, "A256GCM", MH_ALG_CLASS_AES_ENC, -1, 256},
    {MH_ALG_A128CBC, "A128CBC", MH_ALG_CLASS_AES_ENC, -1, 128},
    {MH_ALG_A192CBC, "A192CBC", MH_ALG_CLASS_AES_ENC, -1, 192},
    {MH_ALG_A256CBC, "A256CBC", MH_ALG_CLASS_AES_ENC, -1, 256},
    {MH_ALG_A128CBCPAD, "A128CBCPAD", MH_ALG_CLASS_AES_ENC, -1, 128},
    {MH_ALG_A192CBCPAD, "A192CBCPAD", MH_ALG_CLASS_AES_ENC, -1, 192},
    {MH_ALG_A256CBCPAD, "A256CBCPAD", MH_ALG_CLASS_AES_ENC, -1, 256},
    {MH_ALG_A128KW, "A128KW", MH_ALG_CLASS_AES_WRAP, -1, 128},
    {MH_ALG_A192KW, "A192KW", MH_ALG_CLASS_AES_WRAP, -1, 192},
    {MH_ALG_A256KW, "A256KW", MH_ALG_CLASS_AES_WRAP, -1, 256},
    {MH_ALG_CKM_AES_KEY_WRAP, "CKM_AES_KEY_WRAP", MH_ALG_CLASS_AES_WRAP, -1, 0},
    {MH_ALG_CKM_AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD", MH_ALG_CLASS_AES_WRAP, -1, 0},
};

#define NALGS (sizeof ALGS / sizeof ALGS[0])

static const char *const MD_NAMES[MH_MD_COUNT_] = {"SHA1", "SHA256", "SHA384", "SHA512"};
static const size_t MD_LENS[MH_MD_COUNT_] = {20, 32, 48, 64};
static const char *const CIPHER_NAMES[MH_CIPHER_COUNT_] = {
    "AES-128-GCM",  "AES-192-GCM",      "AES-256-GCM",      "AES-128-CBC",
    "AES-192-CBC",  "AES-256-CBC",      "AES-128-WRAP",     "AES-192-WRAP",
    "AES-256-WRAP", "AES-128-WRAP-PAD", "AES-192-WRAP-PAD", "AES-256-WRAP-PAD",
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_rv = MH_ECRYPTO;
static EVP_MD *mds[MH_MD_COUNT_];
static EVP_CIPHER *ciphers[MH_CIPHER_COUNT_];

static void init_once(void)
{
    for (int i = 0; i < MH_MD_COUNT_; i++) {
        mds[i] = EVP_MD_fetch(NULL, MD_NAMES[i], NULL);
        if (mds[i] == NULL)
            return;
    }
    for (int i = 0; i < MH_CIPHER_COUNT_; i++) {
        ciphers[i] = EVP_CIPHER_fetch(NULL, CIPHER_NAMES[i], NULL);
        if (ciphers[i] == NULL)
            return;
    }
    init_rv = 0;
}

int mh_alg_init(void)
{
    if (pthread_once(&once, init_once) != 0)
        return MH_ECRYPTO;
    return init_rv;
}

enum mh_alg mh_alg_from_name(const char *name, size_t len)
{
    if (name == NULL)
        return MH_ALG_NONE;
    for (size_t i = 0; i < NALGS; i++) {
        if (strlen(ALGS[i].name) == len && memcmp(ALGS[i].name, name, len) == 0)
            return ALGS[i].alg;
    }
    return MH_ALG_NONE;
}

static int find(enum mh_alg alg)
{
    for (size_t i = 0; i < NALGS; i++)
        if (ALGS[i].alg == alg)
            return (int)i;
    return -1;
}

const char *mh_alg_name(enum mh_alg alg)
{
    int i = find(alg);
    return i < 0 ? "" : ALGS[i].name;
}

enum mh_alg_class mh_alg_class(enum mh_alg alg)
{
    int i = find(alg);
    return i < 0 ? MH_ALG_CLASS_NONE : ALGS[i].cls;
}

int mh_alg_digest(enum mh_alg alg)
{
    int i = find(alg);
    return i < 0 ? -1 : ALGS[i].md;
}

unsigned mh_alg_aes_bits(enum mh_alg alg)
{
    int i = find(alg);
    return i < 0 ? 0 : ALGS[i].aes_bits;
}

size_t mh_md_len(enum mh_md md)
{
    return (unsigned)md < MH_MD_COUNT_ ? MD_LENS[md] : 0;
}

const EVP_MD *mh_alg_md(enum mh_md md)
{
    return (unsigned)md < MH_MD_COUNT_ ? mds[md] : NULL;
}

const EVP_CIPHER *mh_alg_cipher(enum mh_cipher_id id)
{
    return (unsigned)id < MH_CIPHER_COUNT_ ? ciphers[id] : NULL;
}
