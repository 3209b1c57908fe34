/* tlog.h -- signed checkpoints in the C2SP formats (tlog-checkpoint on a signed-note), with
 * Ed25519 keys through OpenSSL: key ids, verifier keys, note signing, verification and
 * parsing. Pure functions; shared by the server's sealer and the offline verifier.
 *
 * Checkpoint note (docs/AUDIT.md §4):
 *
 *   <origin>\n<size>\n<base64 root>\ntime <RFC 3339 UTC>\n
 *   \n
 *   — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\n
 *
 * The signature covers the body (the first four lines with their newlines). Key id =
 * SHA-256(name || "\n" || 0x01 || public key)[0:4]; verifier key = "name+hex(key id)+
 * base64(0x01 || public key)", as golang.org/x/mod/sumdb/note writes them. */
#ifndef GP_TLOG_H
#define GP_TLOG_H

#include "common.h"

struct evp_pkey_st; /* OpenSSL's EVP_PKEY */

#define TLOG_NAME_MAX 200
#define TLOG_NOTE_MAX 1024

struct tlog_vkey {
    char name[TLOG_NAME_MAX + 1];
    uint8_t key_id[4];
    uint8_t pub[32];
    int64_t valid_from;  /* unix seconds; INT64_MIN when unknown */
    int64_t valid_until; /* unix seconds; INT64_MAX when open */
};

struct tlog_checkpoint {
    char origin[TLOG_NAME_MAX + 1];
    uint64_t size;
    uint8_t root[32];
    char time[40];  /* the time line's value, RFC 3339 */
    int64_t time_s; /* the same in unix seconds */
};

/* Key names: 1..TLOG_NAME_MAX printable chars, no whitespace and no '+'. */
bool tlog_name_valid(const char *name);
void tlog_key_id(const char *name, const uint8_t pub[32], uint8_t out[4]);
/* "name+hex8+base64" into out; false when it does not fit. */
bool tlog_vkey_format(const char *name, const uint8_t pub[32], char *out, size_t outlen);
bool tlog_vkey_parse(const char *s, struct tlog_vkey *out);
/* Raw public key of an Ed25519 private or public key. */
bool tlog_ed25519_public(struct evp_pkey_st *key, uint8_t pub[32]);

/* The checkpoint body; returns its length, or 0 when it does not fit. */
size_t tlog_checkpoint_body(const char *origin, uint64_t size, const uint8_t root[32],
                            const char *time, char *out, size_t outlen);
/* body + "\n" + the signature line of `key` under `name`; false on failure. */
bool tlog_note_sign(struct evp_pkey_st *key, const char *name, const char *body, char *out,
                    size_t outlen);

enum tlog_verdict {
    TLOG_OK = 0,
    TLOG_MALFORMED,     /* not a signed note with a checkpoint body */
    TLOG_UNKNOWN_KEY,   /* no signature line by any of the trusted keys */
    TLOG_BAD_SIGNATURE, /* a trusted key's signature line that does not verify */
    TLOG_KEY_NOT_VALID, /* signed by a trusted key outside its validity window */
};
const char *tlog_verdict_str(enum tlog_verdict v);

/* Verifies `note` against the trusted keys and parses its checkpoint body into *out. Accepts
 * the note when one signature line by a trusted key (same name and key id) verifies; *which
 * (may be NULL) gets that key's index. */
enum tlog_verdict tlog_note_verify(const char *note, size_t len, const struct tlog_vkey *keys,
                                   int nkeys, struct tlog_checkpoint *out, int *which);

/* RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac]Z" -> unix seconds; false on other forms. */
bool tlog_parse_time(const char *s, int64_t *out);

#endif
