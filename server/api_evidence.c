/* api_evidence.c -- PUT and GET /api/v1/evidence/{sha256} (evidence.h).
 *
 * Upload, one small state machine: the declared type and the first bytes are checked on the
 * loop (cheap); the SHA-256 of the body (up to evidence.max_size) is computed on the worker
 * pool; PostgreSQL records the photo (gp_evidence_put) BEFORE the bytes are stored, so that the
 * store never holds bytes no row accounts for (the retention sweep finds everything it must
 * delete); then the worker pool writes the bytes (evidence_store.h). A retry after any failure
 * is safe: the row and the file are both content-addressed.
 *
 * Download: PostgreSQL decides who may read the photo (gp_evidence_get: its uploaders, and
 * staff and auditors who may read a report that refers to it) before anything else, also
 * before If-None-Match is looked at: anyone else gets exactly the 404 of a missing hash. Then
 * the worker pool reads the bytes. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "evidence.h"
#include "evidence_store.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "static.h"
#include "workpool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int api_evidence_max_size(const struct config *cfg)
{
    return cfg->evidence_max_size;
}

enum put_step {
    PUT_HASH,   /* pool: SHA-256 of the body */
    PUT_RECORD, /* PostgreSQL: gp_evidence_put */
    PUT_STORE,  /* pool: the bytes into the store */
};

struct put_state {
    enum put_step step;
    char hash[EVIDENCE_HASH_HEX]; /* from the path, lower-case */
    const char *type;             /* sniffed from the bytes (an EVIDENCE_* constant) */
    struct evidence_store *store;
    const char *body; /* rc->body: read by the pool thread while the loop waits */
    size_t len;
    /* results of the pool jobs */
    char computed[EVIDENCE_HASH_HEX];
    enum status st;
    char err[256];
    /* the database's answer */
    int code;       /* 201 when this upload made the photo known, else 200 */
    json_t *answer; /* the evidence object (owned; freed with the request) */
};

static void put_step(struct req_ctx *rc);

static void json_release(void *p)
{
    json_decref(p);
}

/* On a pool thread: touches the request's state only, which the loop leaves alone meanwhile. */
static void put_work(void *arg)
{
    struct put_state *ps = ((struct req_ctx *)arg)->state;
    switch (ps->step) {
    case PUT_HASH: {
        unsigned char d[32];
        crypto_sha256(ps->body, ps->len, d);
        crypto_hex(d, 32, ps->computed);
        return;
    }
    case PUT_STORE:
        ps->st =
            evidence_store_put(ps->store, ps->hash, ps->body, ps->len, ps->err, sizeof ps->err);
        return;
    case PUT_RECORD:
        return; /* not a pool step */
    }
}

static void put_done(void *arg, bool cancelled)
{
    struct req_ctx *rc = arg;
    struct put_state *ps = rc->state;
    if (cancelled) {
        http_reply_error_retry(rc, ST_UNAVAILABLE, "shutting_down", 1, "server is shutting down");
        return;
    }
    switch (ps->step) {
    case PUT_HASH:
        if (strcmp(ps->computed, ps->hash) != 0) {
            http_reply_error(rc, ST_INVALID, "hash_mismatch", "sha256",
                             "the body's SHA-256 is %s, not the one in the path", ps->computed);
            return;
        }
        ps->step = PUT_RECORD;
        put_step(rc);
        return;
    case PUT_STORE:
        if (ps->st != ST_OK) {
            /* The row is there and the bytes are not: the client's retry stores them. */
            rlog_error(rc, "evidence store: %s", ps->err);
            http_reply_error_retry(rc, ST_UNAVAILABLE, "evidence_store_unavailable", 5,
                                   "the photo could not be stored; send it again later");
            return;
        }
        metrics_count(rc->app->metrics, ps->code == 201 ? "evidence_stored" : "evidence_restored",
                      1);
        rlog_info(rc, "evidence %s sha256=%s size=%zu type=%s",
                  ps->code == 201 ? "stored" : "uploaded again", ps->hash, ps->len, ps->type);
        http_reply_json(rc, ps->code, json_incref(ps->answer));
        return;
    case PUT_RECORD:
        return;
    }
}

static void put_recorded_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct put_state *ps = rc->state;
    json_t *j = api_result_json_or_reply(rc, res, 200);
    if (!j)
        return;
    json_t *e = json_object_get(j, "evidence");
    if (!json_is_object(e)) {
        json_decref(j);
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot read the database's reply");
        return;
    }
    ps->code = json_is_true(json_object_get(j, "created")) ? 201 : 200;
    ps->answer = json_incref(e);
    arena_on_free(rc->arena, json_release, ps->answer);
    json_decref(j);
    ps->step = PUT_STORE;
    put_step(rc);
}

static void put_step(struct req_ctx *rc)
{
    struct put_state *ps = rc->state;
    switch (ps->step) {
    case PUT_HASH:
    case PUT_STORE:
        workpool_submit(rc->app->wp, put_work, put_done, rc);
        return;
    case PUT_RECORD: {
        char size[24];
        snprintf(size, sizeof size, "%zu", ps->len);
        const char *params[] = {api_actor(rc), ps->hash, size, ps->type,
                                api_i64(rc, rc->app->cfg->evidence_retention_s)};
        db_query(rc->app->db, "SELECT gp_evidence_put($1, $2, $3, $4, $5)", 5, params,
                 put_recorded_cb, rc);
        return;
    }
    }
}

/* A process without a store (an embedding that did not create one, such as a test harness)
 * answers as if the store were down instead of crashing. */
static bool store_or_reply(struct req_ctx *rc)
{
    if (rc->app->evidence)
        return true;
    http_reply_error_retry(rc, ST_UNAVAILABLE, "evidence_store_unavailable", 5,
                           "no evidence store is configured");
    return false;
}

void api_evidence_put(struct req_ctx *rc)
{
    struct put_state *ps = arena_alloc(rc->arena, sizeof *ps);
    memset(ps, 0, sizeof *ps);
    if (!evidence_hash_parse(rc->params.values[0], ps->hash)) {
        http_reply_error(rc, ST_INVALID, "invalid_sha256", "sha256",
                         "the path must end in the photo's SHA-256 as 64 hex digits");
        return;
    }
    const char *declared = evidence_declared_type(http_header(rc, "Content-Type"));
    if (!declared) {
        http_reply_error(rc, ST_UNSUPPORTED_MEDIA, "unsupported_type", "Content-Type",
                         "Content-Type must be image/jpeg, image/png or image/webp");
        return;
    }
    if (rc->body_len == 0) {
        http_reply_error(rc, ST_INVALID, "missing_body", "body",
                         "the body must be the photo's bytes");
        return;
    }
    /* By content: the bytes decide what they are, and the label must say the same. */
    ps->type = evidence_sniff(rc->body, rc->body_len);
    if (!ps->type || strcmp(ps->type, declared) != 0) {
        http_reply_error(rc, ST_UNSUPPORTED_MEDIA, "unsupported_type", "body",
                         ps->type ? "the body is %s, not the declared type"
                                  : "the body is not a JPEG, PNG or WebP image%s",
                         ps->type ? ps->type : "");
        return;
    }
    if (!store_or_reply(rc))
        return;
    ps->store = rc->app->evidence;
    ps->body = rc->body;
    ps->len = rc->body_len;
    ps->step = PUT_HASH;
    rc->state = ps;
    put_step(rc);
}

/* ---------------------------------------------------------------------------------------- */
/* Download                                                                                  */
/* ---------------------------------------------------------------------------------------- */

struct get_state {
    char hash[EVIDENCE_HASH_HEX];
    char type[32];
    size_t size;
    struct evidence_store *store;
    /* results of the pool job */
    enum status st;
    void *data; /* malloc'd by the store; freed with the request */
    size_t len;
    char err[256];
};

static void free_data(void *p)
{
    free(p);
}

static void cache_headers(struct req_ctx *rc, const struct get_state *gs)
{
    char etag[EVIDENCE_HASH_HEX + 2], cc[64];
    snprintf(etag, sizeof etag, "\"%s\"", gs->hash);
    snprintf(cc, sizeof cc, "private, max-age=%d", rc->app->cfg->evidence_cache_max_age_s);
    http_set_header(rc, "ETag", etag);
    http_set_header(rc, "Cache-Control", cc);
}

static void get_work(void *arg)
{
    struct get_state *gs = ((struct req_ctx *)arg)->state;
    gs->st = evidence_store_get(gs->store, gs->hash, gs->size, &gs->data, &gs->len, gs->err,
                                sizeof gs->err);
}

static void get_done(void *arg, bool cancelled)
{
    struct req_ctx *rc = arg;
    struct get_state *gs = rc->state;
    if (gs->data)
        arena_on_free(rc->arena, free_data, gs->data);
    if (cancelled) {
        http_reply_error_retry(rc, ST_UNAVAILABLE, "shutting_down", 1, "server is shutting down");
        return;
    }
    if (gs->st == ST_NOT_FOUND || (gs->st == ST_OK && gs->len != gs->size)) {
        /* The row says stored and the bytes are not there (or not all there): someone removed
         * them from the store by hand, or an upload's store step failed and was not retried. */
        rlog_warn(rc, "evidence %s is recorded but its bytes are %s", gs->hash,
                  gs->st == ST_OK ? "of another size" : "missing from the store");
        http_reply_error(rc, ST_NOT_FOUND, "evidence_not_found", "sha256", "evidence not found");
        return;
    }
    if (gs->st != ST_OK) {
        rlog_error(rc, "evidence store: %s", gs->err);
        http_reply_error_retry(rc, ST_UNAVAILABLE, "evidence_store_unavailable", 5,
                               "the photo cannot be read now");
        return;
    }
    cache_headers(rc, gs);
    http_set_header(rc, "Content-Security-Policy", "default-src 'none'; sandbox");
    http_reply_raw(rc, 200, gs->type, gs->data, gs->len);
}

static void get_allowed_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct get_state *gs = rc->state;
    json_t *j = api_result_json_or_reply(rc, res, 200);
    if (!j)
        return;
    const char *type = json_string_value(json_object_get(j, "content_type"));
    json_int_t size = json_integer_value(json_object_get(j, "size"));
    if (!type || strlen(type) >= sizeof gs->type || size <= 0) {
        json_decref(j);
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot read the database's reply");
        return;
    }
    snprintf(gs->type, sizeof gs->type, "%s", type);
    gs->size = (size_t)size;
    json_decref(j);
    /* The caller may read it: only now may a conditional request learn that it is unchanged. */
    const char *inm = http_header(rc, "If-None-Match");
    char etag[EVIDENCE_HASH_HEX + 2];
    snprintf(etag, sizeof etag, "\"%s\"", gs->hash);
    if (inm && static_etag_matches(inm, etag)) {
        cache_headers(rc, gs);
        http_reply_raw(rc, 304, gs->type, "", 0);
        return;
    }
    if (!store_or_reply(rc))
        return;
    gs->store = rc->app->evidence;
    workpool_submit(rc->app->wp, get_work, get_done, rc);
}

void api_evidence_get(struct req_ctx *rc)
{
    struct get_state *gs = arena_alloc(rc->arena, sizeof *gs);
    memset(gs, 0, sizeof *gs);
    /* A malformed hash names no photo: the same 404 as a missing one. */
    if (!evidence_hash_parse(rc->params.values[0], gs->hash)) {
        http_reply_error(rc, ST_NOT_FOUND, "evidence_not_found", "sha256", "evidence not found");
        return;
    }
    rc->state = gs;
    const char *params[] = {api_actor(rc), gs->hash};
    db_query(rc->app->db, "SELECT gp_evidence_get($1, $2)", 2, params, get_allowed_cb, rc);
}
