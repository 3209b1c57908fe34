/* merkle.h -- RFC 6962 / RFC 9162 Merkle tree hashing over SHA-256: leaf and node hashes,
 * compact ranges (the streaming root of a growing log), a reference implementation of the
 * tree head and proofs over an in-memory array of leaf hashes, and the RFC 9162 §2.1.3.2 and
 * §2.1.4.2 proof verification algorithms. Pure functions, no allocation.
 *
 *   leaf hash  = SHA-256(0x00 || data)
 *   node hash  = SHA-256(0x01 || left || right)
 *   empty tree = SHA-256("") */
#ifndef GP_MERKLE_H
#define GP_MERKLE_H

#include "common.h"

#define MERKLE_HASH_LEN  32
#define MERKLE_MAX_PROOF 64

typedef uint8_t merkle_hash[MERKLE_HASH_LEN];

void merkle_leaf_hash(const void *data, size_t len, merkle_hash out);
void merkle_node_hash(const merkle_hash left, const merkle_hash right, merkle_hash out);
void merkle_empty_root(merkle_hash out);

/* The roots of the complete subtrees that cover leaves [0, size), left to right: one per set
 * bit of size, so appending is O(1) amortized and the memory is constant. */
struct merkle_range {
    uint64_t size;
    int n; /* entries in h */
    merkle_hash h[64];
};

void merkle_range_init(struct merkle_range *r);
void merkle_range_append(struct merkle_range *r, const merkle_hash leaf);
/* MTH of the leaves appended so far. */
void merkle_range_root(const struct merkle_range *r, merkle_hash out);

/* Reference implementation, straight from RFC 6962 §2.1 (recursive), over `n` leaf hashes:
 * the tree head, PATH(m, D[n]) and PROOF(m, D[n]). The proofs return the number of hashes
 * written to out (at most max), or -1 when m is out of range or max is too small. */
void merkle_root(const merkle_hash *leaves, uint64_t n, merkle_hash out);
int merkle_inclusion_proof(const merkle_hash *leaves, uint64_t n, uint64_t m, merkle_hash *out,
                           int max);
int merkle_consistency_proof(const merkle_hash *leaves, uint64_t n, uint64_t m, merkle_hash *out,
                             int max);

/* RFC 9162 §2.1.3.2: is `leaf` at `index` in the tree of `size` leaves with `root`? */
bool merkle_verify_inclusion(uint64_t index, uint64_t size, const merkle_hash leaf,
                             const merkle_hash *proof, int nproof, const merkle_hash root);
/* RFC 9162 §2.1.4.2: is the tree (size1, root1) a prefix of the tree (size2, root2)? Equal
 * sizes need an empty proof and equal roots; size1 = 0 is consistent with anything. */
bool merkle_verify_consistency(uint64_t size1, uint64_t size2, const merkle_hash root1,
                               const merkle_hash root2, const merkle_hash *proof, int nproof);

#endif
