/* api_export.c -- XLSX exports of the console (issue 14): a gp_*_xlsx SQL function returns
 * every row of the range ({"sheet", "columns", "rows"}, or {"too_large"} past
 * console.export_max_rows), a workpool thread writes the workbook (xlsx.h), and the reply
 * carries it whole, so its Content-Length lets a browser show the download's progress. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "workpool.h"
#include "xlsx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XLSX_TYPE "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

struct xlsx_job {
    struct req_ctx *rc;
    json_t *doc;
    const char *tmpdir;
    char *out;
    size_t len;
    bool ok;
    char err[256];
    char disposition[160];
};

static void xlsx_work(void *arg)
{
    struct xlsx_job *job = arg;
    job->ok =
        xlsx_from_json(job->doc, job->tmpdir, &job->out, &job->len, job->err, sizeof job->err);
}

static void xlsx_done(void *arg, bool cancelled)
{
    struct xlsx_job *job = arg;
    struct req_ctx *rc = job->rc;
    json_decref(job->doc);
    if (cancelled) {
        http_reply_error_retry(rc, ST_UNAVAILABLE, "shutting_down", 5, "the server is stopping");
    } else if (!job->ok) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "the workbook could not be built: %s",
                         job->err);
    } else {
        http_set_header(rc, "Content-Disposition", job->disposition);
        http_reply_raw(rc, 200, XLSX_TYPE, job->out, job->len);
    }
    free(job->out);
    free(job);
}

static void xlsx_rows_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    json_t *j = api_result_json_or_reply(rc, res, 200);
    if (!j)
        return;
    if (json_is_true(json_object_get(j, "too_large"))) {
        json_int_t n = json_integer_value(json_object_get(j, "count"));
        json_decref(j);
        http_reply_error(rc, ST_TOO_LARGE, "export_too_large", "to",
                         "%lld rows: more than console.export_max_rows (%d); export a shorter "
                         "range",
                         (long long)n, rc->app->cfg->console_export_max_rows);
        return;
    }
    struct xlsx_job *job = xcalloc(1, sizeof *job);
    job->rc = rc;
    job->doc = j;
    job->tmpdir = getenv("TMPDIR");
    snprintf(job->disposition, sizeof job->disposition, "attachment; filename=\"%s\"",
             (const char *)rc->state);
    workpool_submit(rc->app->wp, xlsx_work, xlsx_done, job);
}

void api_xlsx(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
              const char *filename)
{
    rc->state = arena_strdup(rc->arena, filename);
    db_query(rc->app->db, sql, nparams, params, xlsx_rows_cb, rc);
}
