/* api_care.c -- care visits over HTTP (docs/CARE.md).
 *
 * The one thing this module does beyond the other handlers: the residents' personal fields
 * (name, phone, address, ID number, health notes, visit notes) are checked and sealed here
 * (care_crypto.h) before any statement carries them, with a keyed hash of phone and ID number
 * for lookups; every reply is parsed, its "<field>_sealed" / "<field>_sealed_masked" members
 * opened (and masked) and sent. What each audience may see is decided by the SQL functions of
 * sql/functions/80_care.sql, which never receive a personal value in clear. */
#include "api_care.h"
#include "api.h"
#include "app.h"
#include "arena.h"
#include "care_crypto.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "effects.h"
#include "http.h"
#include "jv.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct care_call {
    int code;
    bool effects; /* column 1 holds post-commit effects */
};

static bool keys_or_reply(struct req_ctx *rc, struct care_keys *k)
{
    if (care_keys_derive(rc->app->cfg, k))
        return true;
    http_reply_error(rc, ST_UNAVAILABLE, "care_unavailable", NULL,
                     "care records cannot be read: the encryption key is not configured");
    return false;
}

static void care_reply_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct care_call *cc = rc->state;
    json_t *j = api_result_json_or_reply(rc, res, cc->code);
    if (!j)
        return;
    if (cc->effects)
        effects_apply_text(rc->app, db_result_value(res, 0, 1));
    struct care_keys k;
    if (!keys_or_reply(rc, &k)) {
        json_decref(j);
        return;
    }
    int failed = care_open_json(&k, j);
    care_keys_wipe(&k);
    if (failed)
        log_warn("care: %d sealed values in a reply did not open (wrong key or damaged)", failed);
    http_reply_json(rc, cc->code, j);
}

/* Runs sql (one jsonb column, or "body, effects") and replies with its JSON opened. */
static void care_run(struct req_ctx *rc, const char *sql, int n, const char *const *params,
                     int code, bool effects)
{
    struct care_call *cc = arena_alloc(rc->arena, sizeof *cc);
    cc->code = code;
    cc->effects = effects;
    rc->state = cc;
    db_query(rc->app->db, sql, n, params, care_reply_cb, rc);
}

static const char *skew(struct req_ctx *rc)
{
    return arena_printf(rc->arena, "%d seconds", rc->app->cfg->report_future_skew_s);
}

/* ---------------------------------------------------------------------------------------- */
/* The personal fields of a resident: checked, sealed and hashed here.                       */
/* ---------------------------------------------------------------------------------------- */

struct pfield {
    const char *name;   /* in the request body and the associated data */
    const char *column; /* the key the SQL function takes ("<column>" in p_sealed) */
    size_t minlen, maxlen;
    const char *hash; /* lookup hash key, or NULL */
};

static const struct pfield pfields[] = {
    {"name", "name_sealed", 1, 64, NULL},
    {"phone", "phone_sealed", 5, 20, "phone_hash"},
    {"address", "address_sealed", 1, 200, NULL},
    {"id_number", "id_number_sealed", 15, 18, "id_hash"},
    {"health_notes", "health_sealed", 0, 1000, NULL},
};

static bool phone_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || *s == '+' || *s == '-' || *s == ' '))
            return false;
    return true;
}

static bool id_number_ok(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || ((s[i] == 'X' || s[i] == 'x') && i == n - 1)))
            return false;
    return n == 15 || n == 18;
}

/* Moves the personal fields out of the body: each present one is checked (null or "" clears
 * it on update), sealed into *sealed under its column, its lookup hash added; *args is the
 * rest of the body for the SQL function. False after replying. */
static bool seal_fields_or_reply(struct req_ctx *rc, bool create, json_t **args, json_t **sealed)
{
    struct jv_err e = {0};
    if (!json_is_object(rc->json)) {
        http_reply_error(rc, ST_INVALID, "invalid_body", NULL, "the body must be a JSON object");
        return false;
    }
    struct care_keys k;
    if (!keys_or_reply(rc, &k))
        return false;
    *args = json_deep_copy(rc->json);
    *sealed = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(pfields); i++) {
        const struct pfield *f = &pfields[i];
        json_t *v = json_object_get(rc->json, f->name);
        json_object_del(*args, f->name);
        if (!v)
            continue;
        if (json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) {
            if (create && f->minlen > 0 && !strcmp(f->name, "name")) {
                jv_fail(&e, ST_INVALID, "missing_field", f->name, "%s is required", f->name);
                goto fail;
            }
            json_object_set_new(*sealed, f->column, json_string(""));
            if (f->hash)
                json_object_set_new(*sealed, f->hash, json_string(""));
            continue;
        }
        const char *s;
        if (!jv_str(rc->json, f->name, true, f->minlen, f->maxlen, &s, &e))
            goto fail;
        if ((!strcmp(f->name, "phone") && !phone_ok(s)) ||
            (!strcmp(f->name, "id_number") && !id_number_ok(s))) {
            jv_fail(&e, ST_INVALID, "invalid_format", f->name, "%s is not valid", f->name);
            goto fail;
        }
        char *ct = NULL;
        if (!care_seal(&k, f->name, s, &ct)) {
            care_keys_wipe(&k);
            json_decref(*args);
            json_decref(*sealed);
            http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot seal a field");
            return false;
        }
        json_object_set_new(*sealed, f->column, json_string(ct));
        free(ct);
        if (f->hash) {
            char hex[65];
            care_lookup_hash(&k, f->name, s, hex);
            json_object_set_new(*sealed, f->hash, json_string(hex));
        }
    }
    if (create && !json_object_get(*sealed, "name_sealed")) {
        jv_fail(&e, ST_INVALID, "missing_field", "name", "name is required");
        goto fail;
    }
    care_keys_wipe(&k);
    return true;
fail:
    care_keys_wipe(&k);
    json_decref(*args);
    json_decref(*sealed);
    http_reply_jv(rc, &e);
    return false;
}

void api_care_resident_create(struct req_ctx *rc)
{
    json_t *args, *sealed;
    if (!seal_fields_or_reply(rc, true, &args, &sealed))
        return;
    const char *params[] = {api_actor(rc), api_json_text(rc, args), api_json_text(rc, sealed)};
    json_decref(args);
    json_decref(sealed);
    care_run(rc, "SELECT gp_care_resident_create($1, $2::jsonb, $3::jsonb)", 3, params, 201, false);
}

void api_care_resident_update(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    json_t *args, *sealed;
    if (!seal_fields_or_reply(rc, false, &args, &sealed))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, args),
                            api_json_text(rc, sealed)};
    json_decref(args);
    json_decref(sealed);
    care_run(rc, "SELECT gp_care_resident_update($1, $2, $3::jsonb, $4::jsonb)", 4, params, 200,
             false);
}

void api_care_resident_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    care_run(rc, "SELECT gp_care_resident_get($1, $2)", 2, params, 200, false);
}

/* A body of {reason} (required or optional, 1..500) on a resident or follow-up. */
static bool reason_or_reply(struct req_ctx *rc, const char *name, bool required, int64_t *id,
                            const char **reason)
{
    const char *const fields[] = {name, NULL};
    struct jv_err e = {0};
    *reason = NULL;
    if (!http_param_id_or_reply(rc, 0, id) || !http_body_only_or_reply(rc, fields))
        return false;
    if (!jv_str(rc->json, name, required, 1, 500, reason, &e)) {
        http_reply_jv(rc, &e);
        return false;
    }
    return true;
}

static void status_op(struct req_ctx *rc, const char *op, bool reason_required)
{
    int64_t id;
    const char *reason;
    if (!reason_or_reply(rc, "reason", reason_required, &id, &reason))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), op, reason};
    care_run(rc, "SELECT gp_care_resident_status($1, $2, $3, $4)", 4, params, 200, false);
}

void api_care_resident_pause(struct req_ctx *rc)
{
    status_op(rc, "pause", true);
}

void api_care_resident_resume(struct req_ctx *rc)
{
    status_op(rc, "resume", false);
}

void api_care_resident_remove(struct req_ctx *rc)
{
    status_op(rc, "remove", true);
}

void api_care_resident_open(struct req_ctx *rc)
{
    int64_t id;
    const char *reason;
    if (!reason_or_reply(rc, "reason", true, &id, &reason))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), reason};
    care_run(rc, "SELECT gp_care_resident_open($1, $2, $3)", 3, params, 200, false);
}

void api_care_lookup(struct req_ctx *rc)
{
    static const char *const fields[] = {"phone", "id_number", NULL};
    struct jv_err e = {0};
    if (!http_body_only_or_reply(rc, fields))
        return;
    bool by_phone = jv_has(rc->json, "phone");
    if (by_phone == jv_has(rc->json, "id_number")) {
        http_reply_error(rc, ST_INVALID, "invalid_lookup", "phone",
                         "give exactly one of phone and id_number");
        return;
    }
    const char *field = by_phone ? "phone" : "id_number";
    const char *v;
    if (!jv_str(rc->json, field, true, by_phone ? 5 : 15, by_phone ? 20 : 18, &v, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (by_phone ? !phone_ok(v) : !id_number_ok(v)) {
        http_reply_error(rc, ST_INVALID, "invalid_format", field, "%s is not valid", field);
        return;
    }
    struct care_keys k;
    if (!keys_or_reply(rc, &k))
        return;
    char *hex = arena_alloc(rc->arena, 65);
    care_lookup_hash(&k, field, v, hex);
    care_keys_wipe(&k);
    const char *params[] = {api_actor(rc), field, hex};
    care_run(rc, "SELECT gp_care_lookup($1, $2, $3)", 3, params, 200, false);
}

static void list_run(struct req_ctx *rc, const char *sql, const struct api_qspec *specs, size_t n)
{
    const char *args = api_query_args_or_reply(rc, specs, n);
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    care_run(rc, sql, 2, params, 200, false);
}

void api_care_resident_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {
        {"unit_id", API_Q_INT}, {"colour", API_Q_STR}, {"status", API_Q_STR}, {"mine", API_Q_BOOL}};
    list_run(rc, "SELECT gp_care_resident_list($1, $2::jsonb)", specs, ARRAY_SIZE(specs));
}

void api_care_due(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"unit_id", API_Q_INT}, {"overdue", API_Q_BOOL}};
    list_run(rc, "SELECT gp_care_due_list($1, $2::jsonb)", specs, ARRAY_SIZE(specs));
}

void api_care_followup_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {
        {"unit_id", API_Q_INT}, {"state", API_Q_STR}, {"kind", API_Q_STR}};
    list_run(rc, "SELECT gp_care_followup_list($1, $2::jsonb)", specs, ARRAY_SIZE(specs));
}

void api_care_coverage(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {
        {"unit_id", API_Q_INT}, {"from", API_Q_STR}, {"to", API_Q_STR}};
    list_run(rc, "SELECT gp_care_coverage($1, $2::jsonb)", specs, ARRAY_SIZE(specs));
}

void api_care_followup_close(struct req_ctx *rc)
{
    int64_t id;
    const char *note;
    if (!reason_or_reply(rc, "note", true, &id, &note))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), note};
    care_run(rc, "SELECT gp_care_followup_close($1, $2, $3)", 3, params, 200, false);
}

/* The visit: the notes are sealed here (and hashed, so that the same visit sent again is
 * recognised although its sealed form differs); the rest goes to SQL as it came. */
void api_care_visit_submit(struct req_ctx *rc)
{
    struct jv_err e = {0};
    const char *notes = NULL;
    if (!json_is_object(rc->json)) {
        http_reply_error(rc, ST_INVALID, "invalid_body", NULL, "the body must be a JSON object");
        return;
    }
    if (!jv_str(rc->json, "notes", false, 0, 2000, &notes, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    struct care_keys k;
    if (!keys_or_reply(rc, &k))
        return;
    const char *sealed = NULL, *hash = NULL;
    if (notes && *notes) {
        char *ct = NULL;
        if (!care_seal(&k, "notes", notes, &ct)) {
            care_keys_wipe(&k);
            http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot seal the notes");
            return;
        }
        sealed = arena_strdup(rc->arena, ct);
        free(ct);
        unsigned char d[32];
        char *hex = arena_alloc(rc->arena, 65);
        crypto_hmac_sha256(k.lookup, sizeof k.lookup, notes, strlen(notes), d);
        crypto_hex(d, sizeof d, hex);
        hash = hex;
    }
    care_keys_wipe(&k);
    json_t *args = json_deep_copy(rc->json);
    json_object_del(args, "notes");
    const char *params[] = {api_actor(rc), api_json_text(rc, args), sealed, hash, skew(rc)};
    json_decref(args);
    care_run(rc,
             "SELECT body, effects FROM gp_care_visit_submit($1, $2::jsonb, $3, $4, $5::interval)",
             5, params, 201, true);
}

void api_care_policy_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_care_policy_get($1, $2)", 2, params, 200);
}

void api_care_policy_set(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json)};
    api_query(rc, "SELECT gp_care_policy_set($1, $2, $3::jsonb)", 3, params, 200);
}

/* One page of an export: ?unit_id=&limit=&cursor= and a body {reason} (street admins). */
void api_care_export(struct req_ctx *rc)
{
    static const char *const fields[] = {"reason", NULL};
    static const struct api_qspec specs[] = {{"unit_id", API_Q_INT}};
    struct jv_err e = {0};
    const char *reason;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "reason", true, 1, 500, &reason, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args, reason};
    care_run(rc, "SELECT gp_care_export($1, $2::jsonb, $3)", 3, params, 200, false);
}

void api_care_budget_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_care_budget($1, $2)", 2, params, 200);
}

void api_care_budget_fund(struct req_ctx *rc)
{
    static const char *const fields[] = {"amount", "memo", NULL};
    struct jv_err e = {0};
    int64_t id, amount;
    const char *memo = NULL;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "amount", true, 1, 1000000000000, &amount, &e) ||
        !jv_str(rc->json, "memo", false, 1, 500, &memo, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_i64(rc, amount), memo};
    api_query(rc, "SELECT gp_care_fund($1, $2, $3, $4)", 4, params, 201);
}
