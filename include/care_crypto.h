/* care_crypto.h -- the residents' personal data at rest (docs/CARE.md, "Privacy").
 *
 * Names, phones, addresses, ID numbers, health notes and visit notes are sealed here before
 * any statement carries them and opened here on the way to the client: PostgreSQL, its dumps
 * and its logs only ever hold "v1.<hex>" (merchant_crypto's AES-256-GCM sealing, a random IV
 * per value, associated data "care:<field>" so a value does not open as another field).
 *
 * Keys: both derived from merchant.key_encryption_key (the one secret of the environment that
 * already seals stored secrets), each for one purpose:
 *   seal   = HMAC-SHA256(kek, "gridpoints/care/seal/v1")     AES-256-GCM key
 *   lookup = HMAC-SHA256(kek, "gridpoints/care/lookup/v1")   keyed hash of phone / ID number
 * The lookup hash (hex of HMAC-SHA256(lookup, "<field>:<normalised value>")) lets staff find a
 * resident by phone or ID number without the database holding either. */
#ifndef GP_CARE_CRYPTO_H
#define GP_CARE_CRYPTO_H

#include "common.h"

#include <jansson.h>

struct config;

/* The longest plaintext of a sealed field (bytes). */
#define CARE_FIELD_MAX 4000

struct care_keys {
    unsigned char seal[32];
    unsigned char lookup[32];
};

/* Derives both keys from merchant.key_encryption_key; false when it is not 64 hex digits. */
bool care_keys_derive(const struct config *cfg, struct care_keys *k) MUSTCHECK;
void care_keys_wipe(struct care_keys *k);

/* Seals value as field ("name", "phone", ...); *out is malloc'd. False only when OpenSSL
 * fails or the value is longer than CARE_FIELD_MAX. */
bool care_seal(const struct care_keys *k, const char *field, const char *value,
               char **out) MUSTCHECK;
/* Opens a sealed field into out (cap bytes); false on any mismatch. */
bool care_open(const struct care_keys *k, const char *field, const char *sealed, char *out,
               size_t cap) MUSTCHECK;
/* The lookup hash of a phone (digits only) or ID number (upper case, no spaces). */
void care_lookup_hash(const struct care_keys *k, const char *field, const char *value,
                      char hex[65]);
/* The masked form of a field's value for staff lists: a name keeps its first character, a
 * phone its first 3 and last 4 digits, an address its first 6 characters; anything else
 * keeps only its first character. UTF-8 aware. */
void care_mask(const char *field, const char *value, char *out, size_t cap);
/* Walks a reply and replaces every "<field>_sealed" member with "<field>" opened, and every
 * "<field>_sealed_masked" with "<field>" opened and masked (a value that does not open
 * becomes null). Returns the number of values that did not open. */
int care_open_json(const struct care_keys *k, json_t *j);

#endif
