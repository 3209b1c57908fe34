/* audit.h -- the server side of the sealed ledger log (docs/AUDIT.md): the checkpoint signing
 * key, loaded once at start-up, and the sealer sweep's hook, which signs the candidate tree
 * head that gp_audit_seal offers and stores it through gp_audit_checkpoint_store.
 *
 * Sealing itself and the verification pass run in SQL (sql/0006_audit.sql), so any number of
 * instances may run the sweep: the head row serializes them, the UNIQUE checkpoint size lets
 * exactly one store a checkpoint, and Ed25519 signatures are deterministic, so two instances
 * that sign the same candidate with the same key produce the same note. */
#ifndef GP_AUDIT_H
#define GP_AUDIT_H

#include "common.h"

#include <jansson.h>

struct app;
struct audit;
struct config;

/* Reads audit.key_file (PEM, Ed25519) when it is set; without one the server seals but runs
 * no verification pass and signs no checkpoint (logged once). NULL, with the reason logged,
 * when the key cannot be used. */
struct audit *audit_new(struct app *app);
/* NULL allowed. Call after db_pool_free: a store in flight calls back into the audit state. */
void audit_free(struct audit *a);

/* Before the sweeps start (janitor.c): when audit.state_dir keeps a published checkpoint, checks
 * that the database's signed history holds it. done(arg, NULL, false) when it does (or nothing
 * is kept); done(arg, refusal, false) when the history is behind it or forks from it, unless
 * audit.allow_rewind (then the kept one is set aside, logged); done(arg, NULL, true) when the
 * database could not answer (ask again later). */
void audit_history_check(struct audit *a, void (*done)(void *arg, const char *refusal, bool retry),
                         void *arg);

/* The sealer sweep (sweeps.c): $2 of gp_audit_seal as JSON from [audit]. */
void audit_seal_args(const struct config *cfg, char *buf, size_t len);
/* The sealer sweep's on_result: logs a new alarm once, signs and stores a candidate; returns
 * 1 to run again at once (a backlog or a pass in progress), else 0. */
int64_t audit_sealed(struct app *app, json_t *reply);

#endif
