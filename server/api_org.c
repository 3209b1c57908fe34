/* api_org.c -- org units and people (admin routes). Scope and role rules live in the SQL
 * functions of sql/0002_org_people.sql; here we validate shapes and types. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "auth.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "workpool.h"

#include <stdlib.h>
#include <string.h>

static bool phone_ok(const char *p)
{
    if (strlen(p) != 11 || p[0] != '1')
        return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* roles: [{role, unit_id?}], each role a known name. */
static bool valid_roles(struct req_ctx *rc, json_t *roles, struct jv_err *e)
{
    if (!roles)
        return true;
    if (!json_is_array(roles) || json_array_size(roles) > 16)
        return jv_fail(e, ST_INVALID, "invalid_type", "roles",
                       "roles must be an array of at most 16 {role, unit_id}");
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r)
    {
        static const char *const fields[] = {"role", "unit_id", NULL};
        const char *name = NULL;
        int64_t unit;
        if (!json_is_object(r))
            return jv_fail(e, ST_INVALID, "invalid_type", "roles", "each role must be an object");
        if (!jv_only(r, fields, e) || !jv_str(r, "role", true, 1, 32, &name, e) ||
            !jv_i64(r, "unit_id", false, 1, INT64_MAX, &unit, e))
            return false;
        if (!auth_role_parse(name))
            return jv_fail(e, ST_INVALID, "invalid_role", "roles", "unknown role \"%.32s\"", name);
    }
    return true;
}

void api_unit_create(struct req_ctx *rc)
{
    static const char *const fields[] = {"parent_id", "name", NULL};
    struct jv_err e = {0};
    int64_t parent;
    const char *name;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "parent_id", true, 1, INT64_MAX, &parent, &e) ||
        !jv_str(rc->json, "name", true, 1, 100, &name, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {api_i64(rc, rc->principal.person_id), api_i64(rc, parent), name};
    api_query(rc, "SELECT gp_unit_create($1, $2, $3)", 3, params, 201);
}

void api_unit_list(struct req_ctx *rc)
{
    int64_t parent = 0;
    struct api_page page;
    if (!http_query_i64_or_reply(rc, "parent_id", 1, INT64_MAX, &parent) ||
        !api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    const char *params[] = {api_i64(rc, rc->principal.person_id),
                            parent ? api_i64(rc, parent) : NULL, page.cursor,
                            api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_unit_list($1, $2, $3, $4)", 4, params, 200);
}

void api_unit_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_i64(rc, rc->principal.person_id), api_i64(rc, id)};
    api_query(rc, "SELECT gp_unit_get($1, $2)", 2, params, 200);
}

/* People are created with a generated initial password, hashed off the loop and returned once
 * in the response (the person changes it later). */
struct person_create_state {
    char password[17];
    char hash[160];
    bool ok;
    const char *args;
};

static void person_hash_work(void *arg)
{
    struct req_ctx *rc = arg;
    struct person_create_state *ps = rc->state;
    ps->ok = crypto_password_hash(ps->password, rc->app->cfg->pbkdf2_iterations, ps->hash,
                                  sizeof ps->hash);
}

static void person_created_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct person_create_state *ps = rc->state;
    json_t *person = api_result_json_or_reply(rc, res, 201);
    if (!person)
        return;
    json_object_set_new(person, "initial_password", json_string(ps->password));
    http_reply_json(rc, 201, person);
}

static void person_hash_done(void *arg, bool cancelled)
{
    struct req_ctx *rc = arg;
    struct person_create_state *ps = rc->state;
    if (cancelled || !ps->ok) {
        http_reply_error_retry(rc, ST_UNAVAILABLE, NULL, 1, "cannot hash the password now");
        return;
    }
    const char *params[] = {api_i64(rc, rc->principal.person_id), ps->args, ps->hash};
    db_query(rc->app->db, "SELECT gp_person_create($1, $2::jsonb, $3)", 3, params,
             person_created_cb, rc);
}

void api_person_create(struct req_ctx *rc)
{
    static const char *const fields[] = {"phone", "name", "unit_id", "tags", "roles", NULL};
    struct jv_err e = {0};
    const char *phone, *name;
    int64_t unit;
    json_t *tags = NULL;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "phone", true, 11, 11, &phone, &e) ||
        !jv_str(rc->json, "name", true, 1, 64, &name, &e) ||
        !jv_i64(rc->json, "unit_id", true, 1, INT64_MAX, &unit, &e) ||
        !jv_str_array(rc->json, "tags", false, 32, 32, &tags, &e) ||
        !valid_roles(rc, json_object_get(rc->json, "roles"), &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (!phone_ok(phone)) {
        http_reply_error(rc, ST_INVALID, "invalid_phone", "phone",
                         "phone must be 11 digits starting with 1");
        return;
    }
    struct person_create_state *ps = arena_alloc(rc->arena, sizeof *ps);
    /* 12 random bytes -> 16 base64url-ish characters via hex of 8 bytes is enough entropy (64
     * bits) for a password that is shown once and changed. */
    if (!crypto_random_hex(ps->password, 8)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot generate a password");
        return;
    }
    ps->args = api_json_text(rc, rc->json);
    rc->state = ps;
    workpool_submit(rc->app->wp, person_hash_work, person_hash_done, rc);
}

void api_person_list(struct req_ctx *rc)
{
    int64_t unit = 0;
    struct api_page page;
    const char *role = http_query(rc, "role");
    const char *q = http_query(rc, "q");
    if (!http_query_i64_or_reply(rc, "unit_id", 1, INT64_MAX, &unit) ||
        !api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    if (role && !auth_role_parse(role)) {
        http_reply_error(rc, ST_INVALID, "invalid_role", "role", "unknown role");
        return;
    }
    if (q && (strlen(q) < 1 || jv_utf8_len(q) > 64 || strpbrk(q, "%_\\"))) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "q",
                         "q must be 1 to 64 characters without %%, _ or \\");
        return;
    }
    const char *params[] = {api_i64(rc, rc->principal.person_id),
                            unit ? api_i64(rc, unit) : NULL,
                            role,
                            q,
                            page.cursor,
                            api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_person_list($1, $2, $3, $4, $5, $6)", 6, params, 200);
}

void api_person_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_i64(rc, rc->principal.person_id), api_i64(rc, id)};
    api_query(rc, "SELECT gp_person_get($1, $2)", 2, params, 200);
}

void api_person_update(struct req_ctx *rc)
{
    static const char *const fields[] = {"name", "tags", "status", NULL};
    struct jv_err e = {0};
    int64_t id;
    const char *name, *status = NULL;
    json_t *tags;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "name", false, 1, 64, &name, &e) ||
        !jv_str_array(rc->json, "tags", false, 32, 32, &tags, &e) ||
        !jv_str(rc->json, "status", false, 1, 16, &status, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (status && strcmp(status, "active") && strcmp(status, "suspended")) {
        http_reply_error(rc, ST_INVALID, "invalid_value", "status",
                         "status must be active or suspended");
        return;
    }
    if (json_object_size(rc->json) == 0) {
        http_reply_error(rc, ST_INVALID, "empty_update", NULL, "nothing to update");
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json)};
    /* A suspension's revoked sessions leave the session cache as an effect ("drop_sessions"). */
    api_write(rc, "SELECT body, effects FROM gp_person_update($1, $2, $3::jsonb)", 3, params, 200);
}

void api_person_role_grant(struct req_ctx *rc)
{
    static const char *const fields[] = {"role", "unit_id", NULL};
    struct jv_err e = {0};
    int64_t id, unit;
    const char *role;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "role", true, 1, 32, &role, &e) ||
        !jv_i64(rc->json, "unit_id", true, 1, INT64_MAX, &unit, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (!auth_role_parse(role)) {
        http_reply_error(rc, ST_INVALID, "invalid_role", "role", "unknown role");
        return;
    }
    const char *params[] = {api_i64(rc, rc->principal.person_id), api_i64(rc, id), role,
                            api_i64(rc, unit)};
    api_query(rc, "SELECT gp_person_role($1, $2, $3, $4, true)", 4, params, 200);
}

void api_person_role_revoke(struct req_ctx *rc)
{
    int64_t id, unit;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_param_id_or_reply(rc, 2, &unit))
        return;
    const char *role = rc->params.values[1];
    if (!auth_role_parse(role)) {
        http_reply_error(rc, ST_NOT_FOUND, "role_not_found", "role", "unknown role");
        return;
    }
    const char *params[] = {api_i64(rc, rc->principal.person_id), api_i64(rc, id), role,
                            api_i64(rc, unit)};
    api_query(rc, "SELECT gp_person_role($1, $2, $3, $4, false)", 4, params, 200);
}

/* ---- roster import (issue 14) ---- */

/* A roster row is small (phone, name, unit, a few tags): 1 KiB each is generous. */
int api_people_import_max_size(const struct config *cfg)
{
    return cfg->console_import_max_rows * 1024 + 4096;
}

static void import_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    json_t *j = api_result_json_or_reply(rc, res, 200);
    if (!j)
        return;
    json_t *errors = json_object_get(j, "errors");
    if (json_is_true(json_object_get(j, "dry_run")) || json_array_size(errors) == 0) {
        http_reply_json(rc, 200, j);
        return;
    }
    /* Nothing was written: the error lists every row's problems. */
    json_t *err = json_pack("{s:s, s:s, s:s, s:O}", "code", "import_invalid", "message",
                            "rows have errors: nothing was imported", "request_id", rc->rid,
                            "errors", errors);
    json_decref(j);
    http_reply_json(rc, 422, json_pack("{s:o}", "error", err));
}

/* The body is a record handed whole to gp_people_import (docs/CONVENTIONS.md, way 2); the
 * route takes it raw so that its JSON may hold console.import_max_rows rows, beyond
 * server.json_max_items. */
void api_people_import(struct req_ctx *rc)
{
    const struct config *cfg = rc->app->cfg;
    if (!http_content_is_json(rc)) {
        http_reply_error(rc, ST_UNSUPPORTED_MEDIA, NULL, "Content-Type",
                         "request body must be application/json");
        return;
    }
    struct jv_err e = {0};
    json_t *body = NULL;
    if (!jv_parse(rc->body, rc->body_len, cfg->json_max_depth,
                  cfg->console_import_max_rows * 24 + 16, &body, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        http_reply_error(rc, ST_INVALID, "invalid_body", NULL, "the body must be a JSON object");
        return;
    }
    size_t nrows = json_array_size(json_object_get(body, "rows"));
    if (nrows > (size_t)cfg->console_import_max_rows) {
        json_decref(body);
        http_reply_error(rc, ST_TOO_LARGE, "too_many_rows", "rows",
                         "at most %d rows per import (console.import_max_rows)",
                         cfg->console_import_max_rows);
        return;
    }
    const char *params[] = {api_actor(rc), api_json_text(rc, body),
                            api_i64(rc, cfg->console_import_max_rows)};
    json_decref(body);
    db_query(rc->app->db, "SELECT gp_people_import($1, $2::jsonb, $3::int)", 3, params, import_cb,
             rc);
}
