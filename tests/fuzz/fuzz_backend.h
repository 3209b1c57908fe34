/* fuzz_backend.h -- the harness side of tests/fuzz/fuzz_backend.c, a deterministic in-process
 * stand-in for PostgreSQL (include/db.h) and Redis (include/kv.h).
 *
 * Every db_query() / kv_command() / kv_eval() with a callback is answered on the next loop
 * turn, exactly once, with a reply chosen from the statement or command text and a per-input
 * script (bytes taken from the fuzz input): a plausible answer, an error of each status class,
 * an empty result, NULLs, valid-but-odd UTF-8 text or JSON of an unexpected shape; for Redis,
 * replies of every type with arbitrary bytes. What it answers is what the real peers can
 * answer: PostgreSQL text is valid UTF-8 and json/jsonb columns are valid JSON. */
#ifndef GP_FUZZ_BACKEND_H
#define GP_FUZZ_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Once, before any query: the merchant key encryption key (64 hex), the secret every merchant
 * key opens to, and a stored password hash the login lookup answers with. Strings copied. */
void fuzz_backend_setup(const char *kek_hex, const char *merchant_secret, const char *pw_hash);
/* Starts one input: call k (0-based, callbacks only) is steered by script[k] while k < len,
 * later calls by a hash of the script and k. */
void fuzz_backend_begin(const uint8_t *script, size_t len);
/* True when this input got an answer a healthy system would not give (an unavailable or
 * internal error, a result of the wrong shape, an odd Redis reply): only then may the server
 * answer 500 or 503. */
bool fuzz_backend_faulted(void);
/* Replies queued and not yet delivered. */
int fuzz_backend_pending(void);
/* Calls answered in this input (for statistics). */
unsigned fuzz_backend_calls(void);

#endif
