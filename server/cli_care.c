/* cli_care.c -- the care lists of the demo street (`gridpointsd demo-data`, docs/CARE.md).
 *
 * About 3 % of the street's residents on the lists, 3 per micro-grid (1,872): mostly blue,
 * some yellow, a few red, as the seed street office keeps them. Their personal fields are
 * sealed here exactly as the API seals them (care_crypto.h), so a demo database holds no
 * name, phone or ID number in clear either. Entry times are spread over the last interval of
 * each colour, so the first visits fall due over the coming weeks and a few are due now; the
 * residents of the first micro-grid (worker 13930000001) have one due two hours ago. Each
 * grid's care budget gets 2,000 points from the grid's budget. */
#include "cli_care.h"
#include "care_crypto.h"
#include "common.h"
#include "config.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_CARE_PER_MICRO 3
#define DEMO_MICRO_GRIDS    624

/* A fixed sequence (the demo is the same every time). */
static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static const char *pick(uint32_t *s, const char *const *v, size_t n)
{
    return v[lcg(s) % n];
}

/* An 18-digit resident ID number with its ISO 7064 MOD 11-2 check character. */
static void demo_id_number(uint32_t *s, char out[19])
{
    int year = 1932 + (int)(lcg(s) % 30), month = 1 + (int)(lcg(s) % 12);
    int day = 1 + (int)(lcg(s) % 28), seq = (int)(lcg(s) % 1000);
    snprintf(out, 19, "510104%04d%02d%02d%03d", year, month, day, seq);
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += (out[i] - '0') * w[i];
    out[17] = "10X98765432"[sum % 11];
    out[18] = '\0';
}

static bool seal_into(const struct care_keys *k, json_t *row, const char *field, const char *column,
                      const char *value)
{
    char *ct = NULL;
    if (!care_seal(k, field, value, &ct))
        return false;
    json_object_set_new(row, column, json_string(ct));
    free(ct);
    return true;
}

static int exec_params(PGconn *c, const char *sql, int n, const char *const *p, char *out,
                       size_t outlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        log_error("demo care lists: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    if (out && PQntuples(r) > 0)
        snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

/* The rows, as jsonb_to_recordset reads them: k = micro-grid ordinal, frac = where in its
 * colour's interval the resident entered (-1: due two hours ago). */
static const char insert_sql[] =
    "WITH mg AS (SELECT u.id, row_number() OVER (ORDER BY u.id) AS k FROM org_units u "
    "            WHERE u.level = 'micro_grid' AND u.path <@ (SELECT path FROM org_units "
    "            WHERE id = $1::bigint)), "
    "w AS (SELECT p.id, right(p.phone, 7)::int AS i FROM persons p WHERE p.phone LIKE '1393%' "
    "      AND p.unit_id IN (SELECT id FROM mg)), "
    "x AS (SELECT * FROM jsonb_to_recordset($2::jsonb) AS x (k int, colour text, "
    "      categories text[], name_sealed text, phone_sealed text, address_sealed text, "
    "      id_number_sealed text, health_sealed text, phone_hash text, id_hash text, "
    "      frac float8)) "
    "INSERT INTO care_residents (street_id, unit_id, colour, categories, worker_id, backup_id, "
    "    name_sealed, phone_sealed, address_sealed, id_number_sealed, health_sealed, phone_hash, "
    "    id_hash, lat, lng, entered_at, created_by) "
    "SELECT $1::bigint, mg.id, x.colour, x.categories, w1.id, w2.id, x.name_sealed, "
    "    x.phone_sealed, x.address_sealed, x.id_number_sealed, x.health_sealed, x.phone_hash, "
    "    x.id_hash, 30.65 + (x.k % 50) * 0.001, 104.08 + (x.k / 50) * 0.001, "
    "    CASE WHEN x.frac < 0 THEN now() - r.every - interval '2 hours' "
    "         ELSE now() - r.every * x.frac END, "
    "    (SELECT id FROM persons WHERE phone = '13900000001') "
    "FROM x JOIN mg ON mg.k = x.k JOIN w w1 ON w1.i = x.k "
    "LEFT JOIN w w2 ON w2.i = x.k + 624 "
    "CROSS JOIN LATERAL gp_care_rule($1::bigint, x.colour) r";

static const char schedule_sql[] =
    "SELECT count(gp_care_schedule(r, 'entry', r.entered_at)) FROM care_residents r "
    "WHERE r.street_id = $1::bigint "
    "  AND NOT EXISTS (SELECT 1 FROM care_dues d WHERE d.resident_id = r.id)";

static const char fund_sql[] =
    "SELECT count(gp_care_fund((SELECT id FROM persons WHERE phone = '13900000001'), u.id, "
    "       2000, 'demo care budget')) "
    "FROM org_units u WHERE u.level = 'grid' "
    "  AND u.path <@ (SELECT path FROM org_units WHERE id = $1::bigint)";

int cli_demo_care(PGconn *c, const struct config *cfg, const char *street)
{
    struct care_keys k;
    if (!care_keys_derive(cfg, &k)) {
        printf("care lists skipped: merchant.key_encryption_key is not set (it seals them)\n");
        return 0;
    }
    static const char *const surnames[] = {"王", "李", "张", "刘", "陈", "杨", "赵", "黄",
                                           "周", "吴", "徐", "孙", "胡", "朱", "高", "林"};
    static const char *const given[] = {"淑芬", "秀兰", "桂英", "德明", "玉珍", "国华",
                                        "凤英", "建华", "文秀", "志明", "兰英", "宝林"};
    static const char *const roads[] = {"东风路",   "书院街",   "水井街", "红星路",
                                        "莲花北路", "合江亭路", "望平街", "春熙路"};
    static const char *const notes[] = {"高血压，按时服药", "行动不便，需助行器",
                                        "糖尿病，注意饮食", "听力较差，敲门需大声",
                                        "独居，子女在外地", "轻度认知障碍，家属每周来"};
    static const char *const cats[][2] = {{"living_alone", "elderly"},         {"disabled", NULL},
                                          {"chronically_ill", "elderly"},      {"low_income", NULL},
                                          {"living_alone", "chronically_ill"}, {"elderly", NULL}};
    uint32_t seed = 20261207u;
    json_t *rows = json_array();
    int red = 0, yellow = 0, blue = 0;
    bool ok = true;
    for (int m = 1; m <= DEMO_MICRO_GRIDS && ok; m++) {
        for (int j = 0; j < DEMO_CARE_PER_MICRO && ok; j++) {
            uint32_t roll = lcg(&seed) % 100;
            const char *colour = roll < 7 ? "red" : roll < 27 ? "yellow" : "blue";
            red += colour[0] == 'r';
            yellow += colour[0] == 'y';
            blue += colour[0] == 'b';
            char name[32], phone[16], address[128], idno[19];
            snprintf(name, sizeof name, "%s%s", pick(&seed, surnames, ARRAY_SIZE(surnames)),
                     pick(&seed, given, ARRAY_SIZE(given)));
            snprintf(phone, sizeof phone, "135%08u", lcg(&seed) % 100000000u);
            snprintf(address, sizeof address, "锦江区%s%u号%u栋%u单元%u0%u",
                     pick(&seed, roads, ARRAY_SIZE(roads)), 1 + lcg(&seed) % 120,
                     1 + lcg(&seed) % 12, 1 + lcg(&seed) % 4, 1 + lcg(&seed) % 18,
                     1 + lcg(&seed) % 4);
            demo_id_number(&seed, idno);
            const char *const *cat = cats[lcg(&seed) % ARRAY_SIZE(cats)];
            json_t *row =
                json_pack("{s:i, s:s, s:[s], s:f}", "k", m, "colour", colour, "categories", cat[0],
                          "frac", (m == 1 && j == 0) ? -1.0 : (lcg(&seed) % 1100) / 1000.0);
            if (cat[1])
                json_array_append_new(json_object_get(row, "categories"), json_string(cat[1]));
            char hex[65];
            ok = seal_into(&k, row, "name", "name_sealed", name) &&
                 seal_into(&k, row, "phone", "phone_sealed", phone) &&
                 seal_into(&k, row, "address", "address_sealed", address) &&
                 seal_into(&k, row, "id_number", "id_number_sealed", idno) &&
                 (lcg(&seed) % 3 != 0 || seal_into(&k, row, "health_notes", "health_sealed",
                                                   pick(&seed, notes, ARRAY_SIZE(notes))));
            care_lookup_hash(&k, "phone", phone, hex);
            json_object_set_new(row, "phone_hash", json_string(hex));
            care_lookup_hash(&k, "id_number", idno, hex);
            json_object_set_new(row, "id_hash", json_string(hex));
            json_array_append_new(rows, row);
        }
    }
    care_keys_wipe(&k);
    if (!ok) {
        json_decref(rows);
        log_error("demo care lists: cannot seal");
        return -1;
    }
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    const char *p[] = {street, text};
    char due[32] = "";
    int rc = exec_params(c, insert_sql, 2, p, NULL, 0) < 0 ||
                     exec_params(c, schedule_sql, 1, p, due, sizeof due) < 0 ||
                     exec_params(c, fund_sql, 1, p, NULL, 0) < 0
                 ? -1
                 : 0;
    free(text);
    if (rc == 0)
        printf("care lists: %d residents (%d red, %d yellow, %d blue), each with a due visit;\n"
               "  worker 13930000001 sees theirs with GET /api/v1/care/due\n",
               red + yellow + blue, red, yellow, blue);
    return rc;
}

bool cli_demo_care_loaded(PGconn *c, const char *street)
{
    char n[32] = "";
    const char *p[] = {street};
    if (exec_params(c, "SELECT count(*) FROM care_residents WHERE street_id = $1::bigint", 1, p, n,
                    sizeof n) < 0)
        return true; /* nothing to add when we cannot tell */
    return atoi(n) > 0;
}
