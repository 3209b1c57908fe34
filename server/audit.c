/* audit.c -- the checkpoint signer and the sealer sweep's hook (see audit.h). */
#include "audit.h"
#include "app.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "tlog.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct audit {
    struct app *app;
    EVP_PKEY *key; /* NULL: this instance signs nothing */
    char origin[TLOG_NAME_MAX + 1];
    char key_id[9];        /* hex */
    bool storing;          /* a gp_audit_checkpoint_store is in flight */
    char last_alarm[512];  /* the alarm logged last, so a standing one is logged once */
    char last_refusal[64]; /* likewise for refusals of the store */
};

struct audit *audit_new(struct app *app)
{
    const struct config *cfg = app->cfg;
    if (!tlog_name_valid(cfg->audit_origin)) {
        log_error("audit.origin \"%s\" must be 1..200 printable characters without spaces or '+'",
                  cfg->audit_origin);
        return NULL;
    }
    struct audit *a = xcalloc(1, sizeof *a);
    a->app = app;
    snprintf(a->origin, sizeof a->origin, "%s", cfg->audit_origin);
    if (!*cfg->audit_key_file) {
        log_warn("audit.key_file is not set: ledger transactions are sealed but this instance "
                 "neither verifies nor signs checkpoints (create a key with `gridpointsd "
                 "audit-keygen`)");
        return a;
    }
    /* Start-up file I/O, before the loop runs. */
    FILE *f = fopen(cfg->audit_key_file, "r");
    if (!f) {
        log_error("cannot open audit.key_file %s: %s", cfg->audit_key_file, strerror(errno));
        free(a);
        return NULL;
    }
    a->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    uint8_t pub[32], id[4];
    if (!a->key || EVP_PKEY_get_base_id(a->key) != EVP_PKEY_ED25519 ||
        !tlog_ed25519_public(a->key, pub)) {
        log_error("audit.key_file %s is not an Ed25519 private key in PEM", cfg->audit_key_file);
        EVP_PKEY_free(a->key);
        free(a);
        return NULL;
    }
    tlog_key_id(a->origin, pub, id);
    crypto_hex(id, sizeof id, a->key_id);
    log_info("audit: checkpoints of %s are signed with key %s", a->origin, a->key_id);
    return a;
}

void audit_free(struct audit *a)
{
    if (!a)
        return;
    EVP_PKEY_free(a->key);
    free(a);
}

/* An instance without a key seals but verifies nothing (verify_batch 0): a pass is work done
 * for a checkpoint, and it could not sign one. */
void audit_seal_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "{\"batch\":%d,\"verify_batch\":%d,\"interval_s\":%d,\"max_tx\":%d}",
             cfg->audit_seal_batch, *cfg->audit_key_file ? cfg->audit_verify_batch : 0,
             cfg->audit_checkpoint_interval_s, cfg->audit_checkpoint_max_tx);
}

static void store_cb(struct db_result *res, void *arg)
{
    struct audit *a = arg;
    a->storing = false;
    if (a->app->stopping)
        return; /* failed by the shutdown, or done: the next round finds out which */
    if (db_result_status(res) != ST_OK) {
        log_warn("audit: storing a checkpoint failed: %s", db_result_log_detail(res));
        return;
    }
    json_t *j = db_result_json(res);
    if (!j)
        return;
    const char *reason = json_string_value(json_object_get(j, "reason"));
    if (json_is_true(json_object_get(j, "stored"))) {
        metrics_count(a->app->metrics, "audit_checkpoints_signed", 1);
        log_info("audit: checkpoint of size %lld signed with key %s",
                 (long long)json_integer_value(json_object_get(j, "size")), a->key_id);
        a->last_refusal[0] = '\0';
    } else if (reason && (!strcmp(reason, "already") || !strcmp(reason, "stale"))) {
        /* another instance was first, or the head moved on: nothing to say */
    } else if (reason && strcmp(reason, a->last_refusal) != 0) {
        snprintf(a->last_refusal, sizeof a->last_refusal, "%s", reason);
        if (!strcmp(reason, "key_not_valid"))
            log_warn("audit: key %s is not a current checkpoint key (rotated, or never "
                     "registered with `gridpointsd audit-keygen`): restart with the current key",
                     a->key_id);
        else if (strcmp(reason, "alarm") != 0) /* the alarm itself was logged already */
            log_error("audit: checkpoint refused (%s): %s", reason,
                      json_string_value(json_object_get(json_object_get(j, "alarm"), "message")));
    }
    json_decref(j);
}

/* Signs the candidate {"size", "root" (base64), "at"} and stores it. */
static void sign_and_store(struct audit *a, json_t *cand)
{
    json_int_t size = json_integer_value(json_object_get(cand, "size"));
    const char *root_b64 = json_string_value(json_object_get(cand, "root"));
    const char *at = json_string_value(json_object_get(cand, "at"));
    uint8_t root[32];
    size_t rl;
    if (size <= 0 || !root_b64 || !at ||
        !crypto_b64_decode(root_b64, strlen(root_b64), root, sizeof root, &rl) || rl != 32) {
        log_error("audit: malformed checkpoint candidate from the database");
        return;
    }
    char body[TLOG_NOTE_MAX], note[TLOG_NOTE_MAX];
    if (!tlog_checkpoint_body(a->origin, (uint64_t)size, root, at, body, sizeof body) ||
        !tlog_note_sign(a->key, a->origin, body, note, sizeof note)) {
        log_error("audit: cannot sign the checkpoint of size %lld", (long long)size);
        return;
    }
    char size_s[24];
    snprintf(size_s, sizeof size_s, "%lld", (long long)size);
    const char *params[] = {size_s, root_b64, at, a->key_id, note};
    a->storing = true;
    db_query(a->app->db, "SELECT gp_audit_checkpoint_store($1::bigint, $2, $3, $4, $5)", 5, params,
             store_cb, a);
}

int64_t audit_sealed(struct app *app, json_t *j)
{
    struct audit *a = app->audit;
    if (!a || json_is_true(json_object_get(j, "busy")))
        return 0;
    json_int_t sealed = json_integer_value(json_object_get(j, "sealed"));
    if (sealed > 0)
        metrics_count(app->metrics, "audit_transactions_sealed", (uint64_t)sealed);
    json_t *alarm = json_object_get(j, "alarm");
    if (json_is_object(alarm)) {
        const char *msg = json_string_value(json_object_get(alarm, "message"));
        if (msg && strncmp(msg, a->last_alarm, sizeof a->last_alarm - 1) != 0) {
            snprintf(a->last_alarm, sizeof a->last_alarm, "%s", msg);
            log_error("audit: ledger tampering detected, checkpoints refused: %s "
                      "(reason=%s log_index=%lld txn=%lld)",
                      msg, json_string_value(json_object_get(alarm, "reason")),
                      (long long)json_integer_value(json_object_get(alarm, "log_index")),
                      (long long)json_integer_value(json_object_get(alarm, "txn_id")));
        }
    } else if (a->last_alarm[0] && json_is_null(alarm)) {
        log_warn("audit: the ledger verifies again; the alarm is cleared");
        a->last_alarm[0] = '\0';
    }
    json_t *cand = json_object_get(j, "candidate");
    if (json_is_object(cand) && a->key && !a->storing)
        sign_and_store(a, cand);
    return json_is_true(json_object_get(j, "more")) ? 1 : 0;
}
