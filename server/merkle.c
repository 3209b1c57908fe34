/* merkle.c -- RFC 6962/9162 Merkle trees: hashes, compact ranges, reference proofs, proof
 * verification. See merkle.h. */
#include "merkle.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <string.h>

/* SHA-256 fetched once (OpenSSL 3's one-shot SHA256() fetches the algorithm on every call,
 * which cost more than hashing a leaf); the fetched method is immutable and shared. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ASSERT(sha256_md);
}

static void sha256(const void *data, size_t len, uint8_t *out)
{
    pthread_once(&sha256_once, sha256_fetch);
    ASSERT(EVP_Digest(data, len, out, NULL, sha256_md, NULL) == 1);
}

void merkle_leaf_hash(const void *data, size_t len, merkle_hash out)
{
    static const uint8_t zero = 0x00;
    uint8_t buf[4096];
    if (len < sizeof buf) {
        /* the common case: one buffer, one digest call */
        buf[0] = zero;
        memcpy(buf + 1, data, len);
        sha256(buf, len + 1, out);
        return;
    }
    pthread_once(&sha256_once, sha256_fetch);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    ASSERT(c);
    unsigned int outlen = 0;
    ASSERT(EVP_DigestInit_ex2(c, sha256_md, NULL) == 1 && EVP_DigestUpdate(c, &zero, 1) == 1 &&
           EVP_DigestUpdate(c, data, len) == 1 && EVP_DigestFinal_ex(c, out, &outlen) == 1);
    EVP_MD_CTX_free(c);
}

void merkle_node_hash(const merkle_hash left, const merkle_hash right, merkle_hash out)
{
    uint8_t buf[1 + 2 * MERKLE_HASH_LEN];
    buf[0] = 0x01;
    memcpy(buf + 1, left, MERKLE_HASH_LEN);
    memcpy(buf + 1 + MERKLE_HASH_LEN, right, MERKLE_HASH_LEN);
    sha256(buf, sizeof buf, out);
}

void merkle_empty_root(merkle_hash out)
{
    sha256("", 0, out);
}

void merkle_range_init(struct merkle_range *r)
{
    r->size = 0;
    r->n = 0;
}

void merkle_range_append(struct merkle_range *r, const merkle_hash leaf)
{
    merkle_hash carry;
    memcpy(carry, leaf, MERKLE_HASH_LEN);
    /* Each trailing 1 bit of the old size is a complete subtree of the same height as what we
     * carry: merge them, right to left. */
    for (uint64_t n = r->size; n & 1; n >>= 1) {
        ASSERT(r->n > 0);
        merkle_node_hash(r->h[r->n - 1], carry, carry);
        r->n--;
    }
    ASSERT(r->n < 64);
    memcpy(r->h[r->n++], carry, MERKLE_HASH_LEN);
    r->size++;
}

void merkle_range_root(const struct merkle_range *r, merkle_hash out)
{
    if (r->n == 0) {
        merkle_empty_root(out);
        return;
    }
    merkle_hash acc;
    memcpy(acc, r->h[r->n - 1], MERKLE_HASH_LEN);
    for (int i = r->n - 2; i >= 0; i--)
        merkle_node_hash(r->h[i], acc, acc);
    memcpy(out, acc, MERKLE_HASH_LEN);
}

/* The largest power of two strictly smaller than n (n >= 2). */
static uint64_t split_point(uint64_t n)
{
    uint64_t k = 1;
    while (k * 2 < n)
        k *= 2;
    return k;
}

void merkle_root(const merkle_hash *leaves, uint64_t n, merkle_hash out)
{
    if (n == 0) {
        merkle_empty_root(out);
        return;
    }
    if (n == 1) {
        memcpy(out, leaves[0], MERKLE_HASH_LEN);
        return;
    }
    uint64_t k = split_point(n);
    merkle_hash l, r;
    merkle_root(leaves, k, l);
    merkle_root(leaves + k, n - k, r);
    merkle_node_hash(l, r, out);
}

static int path(const merkle_hash *leaves, uint64_t n, uint64_t m, merkle_hash *out, int max)
{
    if (n <= 1)
        return 0;
    uint64_t k = split_point(n);
    int got;
    if (m < k) {
        got = path(leaves, k, m, out, max);
        if (got < 0 || got >= max)
            return -1;
        merkle_root(leaves + k, n - k, out[got]);
    } else {
        got = path(leaves + k, n - k, m - k, out, max);
        if (got < 0 || got >= max)
            return -1;
        merkle_root(leaves, k, out[got]);
    }
    return got + 1;
}

int merkle_inclusion_proof(const merkle_hash *leaves, uint64_t n, uint64_t m, merkle_hash *out,
                           int max)
{
    if (m >= n)
        return -1;
    return path(leaves, n, m, out, max);
}

static int subproof(const merkle_hash *leaves, uint64_t n, uint64_t m, bool b, merkle_hash *out,
                    int max)
{
    if (m == n) {
        if (b)
            return 0;
        if (max < 1)
            return -1;
        merkle_root(leaves, n, out[0]);
        return 1;
    }
    uint64_t k = split_point(n);
    int got;
    if (m <= k) {
        got = subproof(leaves, k, m, b, out, max);
        if (got < 0 || got >= max)
            return -1;
        merkle_root(leaves + k, n - k, out[got]);
    } else {
        got = subproof(leaves + k, n - k, m - k, false, out, max);
        if (got < 0 || got >= max)
            return -1;
        merkle_root(leaves, k, out[got]);
    }
    return got + 1;
}

int merkle_consistency_proof(const merkle_hash *leaves, uint64_t n, uint64_t m, merkle_hash *out,
                             int max)
{
    if (m > n)
        return -1;
    if (m == 0 || m == n)
        return 0;
    return subproof(leaves, n, m, true, out, max);
}

bool merkle_verify_inclusion(uint64_t index, uint64_t size, const merkle_hash leaf,
                             const merkle_hash *proof, int nproof, const merkle_hash root)
{
    if (index >= size || nproof < 0)
        return false;
    uint64_t fn = index, sn = size - 1;
    merkle_hash r;
    memcpy(r, leaf, MERKLE_HASH_LEN);
    for (int i = 0; i < nproof; i++) {
        if (sn == 0)
            return false;
        if ((fn & 1) || fn == sn) {
            merkle_node_hash(proof[i], r, r);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            merkle_node_hash(r, proof[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(r, root, MERKLE_HASH_LEN) == 0;
}

bool merkle_verify_consistency(uint64_t size1, uint64_t size2, const merkle_hash root1,
                               const merkle_hash root2, const merkle_hash *proof, int nproof)
{
    if (size1 > size2 || nproof < 0)
        return false;
    if (size1 == size2)
        return nproof == 0 && memcmp(root1, root2, MERKLE_HASH_LEN) == 0;
    if (size1 == 0)
        return nproof == 0;
    if (nproof == 0)
        return false;
    /* A first tree of 2^k leaves is a complete subtree: the proof omits its root. */
    const uint8_t *first;
    int start;
    if ((size1 & (size1 - 1)) == 0) {
        first = root1;
        start = 0;
    } else {
        first = proof[0];
        start = 1;
    }
    uint64_t fn = size1 - 1, sn = size2 - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    merkle_hash fr, sr;
    memcpy(fr, first, MERKLE_HASH_LEN);
    memcpy(sr, first, MERKLE_HASH_LEN);
    for (int i = start; i < nproof; i++) {
        if (sn == 0)
            return false;
        if ((fn & 1) || fn == sn) {
            merkle_node_hash(proof[i], fr, fr);
            merkle_node_hash(proof[i], sr, sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            merkle_node_hash(sr, proof[i], sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(fr, root1, MERKLE_HASH_LEN) == 0 &&
           memcmp(sr, root2, MERKLE_HASH_LEN) == 0;
}
