/* evidence.c -- the rules of an evidence upload and the retention sweep (evidence.h). */
#include "evidence.h"
#include "app.h"
#include "config.h"
#include "db.h"
#include "evidence_store.h"
#include "log.h"
#include "metrics.h"
#include "workpool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *evidence_sniff(const void *data, size_t len)
{
    const unsigned char *p = data;
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return EVIDENCE_JPEG;
    if (len >= sizeof png && memcmp(p, png, sizeof png) == 0)
        return EVIDENCE_PNG;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return EVIDENCE_WEBP;
    return NULL;
}

const char *evidence_declared_type(const char *ct)
{
    static const char *const types[] = {EVIDENCE_JPEG, EVIDENCE_PNG, EVIDENCE_WEBP};
    if (!ct)
        return NULL;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    /* Only parameters may follow the type ("image/png; q=1"), nothing else. */
    const char *rest = ct + n;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest && *rest != ';')
        return NULL;
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (strlen(types[i]) == n && strncasecmp(ct, types[i], n) == 0)
            return types[i];
    return NULL;
}

bool evidence_hash_parse(const char *in, char out[65])
{
    size_t i = 0;
    for (; in[i] && i < 64; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        out[i] = c;
    }
    out[i] = '\0';
    return i == 64 && in[64] == '\0';
}

/* ---------------------------------------------------------------------------------------- */
/* Retention sweep                                                                           */
/* ---------------------------------------------------------------------------------------- */

void evidence_sweep_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "{\"retention_s\":%d,\"flagged_retention_s\":%d}", cfg->evidence_retention_s,
             cfg->evidence_flagged_retention_s);
}

/* One batch of claimed items on its way out: removed from the store on a pool thread, then
 * marked deleted in one statement. Owned by the sweep until the marking's callback. */
struct removal {
    struct app *app;
    size_t n;
    char (*hash)[EVIDENCE_HASH_HEX];
    bool *removed;    /* set by the pool thread */
    char (*err)[160]; /* why a removal failed */
};

static void removal_free(struct removal *r)
{
    free(r->hash);
    free(r->removed);
    free(r->err);
    free(r);
}

static void remove_work(void *arg)
{
    struct removal *r = arg;
    for (size_t i = 0; i < r->n; i++)
        r->removed[i] = evidence_store_remove(r->app->evidence, r->hash[i], r->err[i],
                                              sizeof r->err[i]) == ST_OK;
}

static void marked_cb(struct db_result *res, void *arg)
{
    struct removal *r = arg;
    json_t *j = db_result_json(res);
    if (!j) {
        /* The rows stay "deleting"; once their lease runs out a sweep claims them again and the
         * (idempotent) removal and marking are retried. */
        if (!r->app->stopping)
            log_warn("evidence sweep: cannot mark %zu removed item%s deleted: %s", r->n,
                     r->n == 1 ? "" : "s", db_result_log_detail(res));
        removal_free(r);
        return;
    }
    /* Every deletion gets its line (the audit log has its row, written with the marking). */
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "deleted"), i, e)
    {
        log_info("evidence deleted: sha256=%s size=%lld uploaded_at=%s expired_at=%s "
                 "reason=retention",
                 json_string_value(json_object_get(e, "sha256")),
                 (long long)json_integer_value(json_object_get(e, "size")),
                 json_string_value(json_object_get(e, "created_at")),
                 json_string_value(json_object_get(e, "expires_at")));
    }
    metrics_count(r->app->metrics, "evidence_deleted",
                  (uint64_t)json_array_size(json_object_get(j, "deleted")));
    json_decref(j);
    removal_free(r);
}

static void remove_done(void *arg, bool cancelled)
{
    struct removal *r = arg;
    /* Shutting down: leave the rows leased; the next sweep after the lease redoes the batch. */
    if (cancelled || r->app->stopping) {
        removal_free(r);
        return;
    }
    json_t *done = json_array();
    for (size_t i = 0; i < r->n; i++) {
        if (r->removed[i])
            json_array_append_new(done, json_string(r->hash[i]));
        else
            log_warn("evidence sweep: cannot remove %s from the store: %s (retried later)",
                     r->hash[i], r->err[i]);
    }
    if (json_array_size(done) == 0) {
        json_decref(done);
        removal_free(r);
        return;
    }
    char *text = json_dumps(done, JSON_COMPACT);
    json_decref(done);
    ASSERT(text != NULL); /* an array of hex strings */
    const char *params[] = {text};
    db_query(r->app->db, "SELECT gp_evidence_deleted($1::jsonb)", 1, params, marked_cb, r);
    free(text); /* db_query copied it */
}

int64_t evidence_swept(struct app *app, json_t *reply)
{
    json_int_t extended = json_integer_value(json_object_get(reply, "extended"));
    if (extended > 0)
        log_info("evidence sweep: kept %lld expired item%s longer: a flagged or rejected report "
                 "refers to them",
                 (long long)extended, extended == 1 ? "" : "s");
    json_t *claimed = json_object_get(reply, "claimed");
    size_t n = json_array_size(claimed);
    if (n == 0 || !app->evidence)
        return 0;
    struct removal *r = xcalloc(1, sizeof *r);
    r->app = app;
    r->hash = xcalloc(n, sizeof *r->hash);
    r->removed = xcalloc(n, sizeof *r->removed);
    r->err = xcalloc(n, sizeof *r->err);
    size_t i;
    json_t *h;
    json_array_foreach(claimed, i, h)
    {
        const char *s = json_string_value(h);
        if (s && strlen(s) == 64)
            memcpy(r->hash[r->n++], s, 65);
    }
    workpool_submit(app->wp, remove_work, remove_done, r);
    /* The next batch waits for the interval: the claimed rows are leased, so a sweep on another
     * instance meanwhile takes other rows, never these. */
    return 0;
}
