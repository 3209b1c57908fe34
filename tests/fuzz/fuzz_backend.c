/* fuzz_backend.c -- the public API of include/db.h and include/kv.h, answered in process and
 * deterministically, for the whole-path fuzzer (tests/fuzz/fuzz_http.c). See fuzz_backend.h.
 *
 * It keeps the contracts of the real db.c and kv.c: every callback fires exactly once, never
 * from inside db_query()/kv_command()/kv_eval() (replies are queued and delivered by a zero
 * timer on the next loop turn), pending work fails with ST_UNAVAILABLE at shutdown/free, a
 * reply is valid only inside its callback (freed right after), and parameters are read at
 * the call. A NULL kv callback is fire-and-forget.
 *
 * What it answers is modelled on what the real peers CAN answer, so that a finding is a
 * server bug and not an artefact: PostgreSQL (server encoding UTF8) returns valid UTF-8 only,
 * json/jsonb columns hold valid JSON that jansson can read with JSON_DECODE_INT_AS_REAL, NOT
 * NULL columns are never NULL, a stored password hash has the configured shape; Redis
 * strings, errors and statuses may hold any bytes. */
#include "fuzz_backend.h"

#include "db.h"
#include "kv.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"
#include "status.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------------------------------- */
/* State                                                                                     */
/* ---------------------------------------------------------------------------------------- */

struct db_result {
    enum status st;
    char sqlstate[6];
    char *code, *message, *field, *detail;
    int ntuples, nfields;
    char **values; /* ntuples * nfields; NULL = SQL NULL */
};

struct db_pool {
    struct event_base *base;
    bool down;
    struct db_pool_stats stats;
};

struct kv_script {
    struct kv_script *next;
    char *lua;
};

struct kv {
    struct event_base *base;
    bool down;
    struct kv_stats stats;
    struct kv_script *scripts;
};

struct job {
    struct job *next;
    bool is_db;
    db_cb dcb;
    kv_cb kcb;
    void *arg;
    struct db_result *res;
    redisReply *reply;
    enum status kst;
};

static struct {
    struct event_base *base;
    struct event *tick;
    int users; /* db pool and kv: the tick lives while either does */
    struct job *head, *tail;
    int pending;
    uint8_t script[32];
    size_t script_len;
    uint32_t script_hash;
    unsigned calls;
    bool faulted;
    char *kek_hex, *secret, *pw_hash;
} B;

/* ---------------------------------------------------------------------------------------- */
/* Choices                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static uint32_t fnv(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The mode byte of the next call, and a variant derived from it and the statement text. */
static uint8_t choose(const char *text, uint32_t *variant)
{
    unsigned k = B.calls++;
    uint8_t b = k < B.script_len ? B.script[k] : (uint8_t)mix32(B.script_hash ^ (k * 0x9e3779b9u));
    *variant = mix32(fnv(text) ^ ((uint32_t)b << 8) ^ k);
    return b;
}

/* Valid UTF-8, but everything a naive reply path trips over. */
static const char *const odd_text[] = {
    "",
    "\x01\x02\x1f control \x7f bytes",
    "\xef\xbf\xbf U+FFFF and U+FFFE \xef\xbf\xbe",
    "line\xe2\x80\xa8separator\xe2\x80\xa9paragraph",
    "emoji \xf0\x9f\x8c\x80\xf0\x9f\x98\x80 max \xf4\x8f\xbf\xbf",
    "quote \" backslash \\ slash / apostrophe ' <script>",
    "tab\there\r\nnewline",
    "%s %n %d %% format",
    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
};

/* A long string of multi-byte characters: cuts at a byte count land inside a character. */
static char *long_text(uint32_t v)
{
    size_t n = 60 + v % 700;
    const char *unit = (v >> 12) & 1 ? "\xf0\x9f\x8c\x80" : "\xc3\xa9";
    size_t ul = strlen(unit);
    char *s = malloc(1 + (v % 3) + n * ul + 1);
    size_t o = 0;
    for (uint32_t i = 0; i < v % 3; i++)
        s[o++] = 'k'; /* shifts the character boundaries */
    for (size_t i = 0; i < n; i++, o += ul)
        memcpy(s + o, unit, ul);
    s[o] = '\0';
    return s;
}

static char *odd_string(uint32_t v)
{
    if ((v & 7) == 7)
        return long_text(v >> 3);
    return strdup(odd_text[(v >> 3) % (sizeof odd_text / sizeof odd_text[0])]);
}

/* Any bytes at all (Redis strings are binary), with their length. */
static char *odd_bytes(uint32_t v, size_t *len)
{
    static const struct {
        const char *s;
        size_t n;
    } t[] = {
        {"\xff\xfe\xfd", 3},
        {"\xc3", 1},
        {"bad \xed\xa0\x80 surrogate", 15},
        {"nul\0inside", 10},
        {"p2:1:1:", 7},
        {"p2:99999999999999999999:1:1:1:1", 31},
        {"p2:-1:-1:-1:-1:", 15},
        {"p2:1:1:127:1:1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25", 78},
        {"{\"merchant_id\":\"7\",\"secret_ct\":5}", 34},
        {"{\"merchant_id\":7,\"secret_ct\":\"v1.zz\"}", 37},
        {"[1,2,3]", 7},
        {"-ERR fake", 9},
        {"", 0},
    };
    if ((v & 15) == 15) {
        size_t n = 200 + v % 3000;
        char *s = malloc(n);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(0x80 + (mix32(v + (uint32_t)i) & 0x7f));
        *len = n;
        return s;
    }
    unsigned i = (v >> 4) % (sizeof t / sizeof t[0]);
    char *s = malloc(t[i].n + 1);
    memcpy(s, t[i].s, t[i].n);
    s[t[i].n] = '\0';
    *len = t[i].n;
    return s;
}

/* JSON text as PostgreSQL could return it for a jsonb column, of an unexpected shape. */
static char *odd_json(uint32_t v)
{
    switch (v % 12) {
    case 0:
        return strdup("[]");
    case 1:
        return strdup("[{\"id\":1},{\"id\":2}]");
    case 2:
        return strdup("\"just a string\"");
    case 3:
        return strdup("42");
    case 4:
        return strdup("null");
    case 5:
        return strdup("{}");
    case 6:
        return strdup("{\"id\": 123456789012345678901234567890, \"person_id\": "
                      "-99999999999999999999, \"available\": 1e300}");
    case 7:
        return strdup("{\"id\": 1.5, \"task_id\": -9223372036854775808, \"free_slots\": "
                      "9223372036854775807, \"slots_version\": 0}");
    case 8: {
        size_t depth = 100 + v % 300;
        char *s = malloc(2 * depth + 1);
        for (size_t i = 0; i < depth; i++) {
            s[i] = '[';
            s[2 * depth - 1 - i] = ']';
        }
        s[2 * depth] = '\0';
        return s;
    }
    case 9: {
        json_t *a = json_array();
        for (int i = 0; i < 2000; i++)
            json_array_append_new(a, json_integer(i));
        json_t *o = json_pack("{s:o, s:[]}", "items", a, "gate");
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        return s;
    }
    case 10: {
        char *t = odd_string(v >> 4);
        json_t *o = json_pack("{s:s, s:s, s:s}", "error", t, t, "key", "message", t);
        free(t);
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        return s;
    }
    default:
        return strdup(
            "{\"gate\": [], \"gates\": {}, \"gate_won\": [1], \"awards\": [1, {}], \"balances\": "
            "[null, 1, {\"worker_id\": \"1\"}], \"forget_keys\": [1, null], \"worker_id\": 1, "
            "\"version\": 1, \"available\": 1, \"drop_sessions\": [1, \"zz\"]}");
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Plausible answers                                                                         */
/* ---------------------------------------------------------------------------------------- */

static const char *const role_names[] = {"worker",          "volunteer",    "grid_staff",
                                         "community_admin", "street_admin", "auditor",
                                         "merchant_staff"};
#define NROLES (sizeof role_names / sizeof role_names[0])

static unsigned role_bits(uint32_t v)
{
    unsigned bits = (v >> 5) & ((1u << NROLES) - 1);
    return (v & 3) == 0 || bits == 0 ? (1u << NROLES) - 1 : bits;
}

static json_t *principal_json(uint32_t v, bool odd_name)
{
    json_t *roles = json_array();
    unsigned bits = role_bits(v);
    for (unsigned i = 0; i < NROLES; i++)
        if (bits & (1u << i))
            json_array_append_new(
                roles, json_pack("{s:s, s:I}", "role", role_names[i], "unit_id", (json_int_t)1));
    char *name = odd_name ? odd_string(v >> 9) : strdup("Fuzz Person");
    json_t *j = json_pack("{s:I, s:s, s:I, s:o, s:s, s:I, s:s, s:b}", "person_id", (json_int_t)1,
                          "name", name, "unit_id", (json_int_t)1, "roles", roles, "expires_at",
                          "2030-01-01T00:00:00+00:00", "ttl", (json_int_t)(v % 4 ? 3600 : 5),
                          "area", "1.2.3", "worker", (int)(bits & 1));
    free(name);
    return j;
}

static char *sealed_secret(const char *key_id)
{
    unsigned char kek[32];
    char *out = NULL;
    if (!key_id || !mauth_key_id_ok(key_id) || !mcrypto_parse_kek(B.kek_hex, kek))
        return strdup("v1.00");
    if (!mcrypto_seal(kek, key_id, B.secret, strlen(B.secret), &out))
        out = strdup("v1.00");
    mcrypto_wipe(kek, sizeof kek);
    return out;
}

static char *dump_free(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    return s;
}

/* The jsonb a healthy database answers for `sql` (odd_strings: with odd but valid text in
 * its free-text fields, as users may type them). */
static char *plausible_json(const char *sql, const char *const *params, int nparams, uint32_t v,
                            bool odd_strings)
{
    if (strstr(sql, "gp_session_principal"))
        return dump_free(principal_json(v, odd_strings));
    if (strstr(sql, "gp_session_create")) {
        json_t *p = principal_json(v, odd_strings);
        return dump_free(p);
    }
    if (strstr(sql, "gp_merchant_key_lookup")) {
        static const char *const st[] = {"active", "active",    "active",  "active",
                                         "active", "suspended", "expired", "revoked"};
        char *sealed = sealed_secret(nparams > 0 ? params[0] : NULL);
        json_t *j = json_pack("{s:I, s:s, s:s, s:I}", "merchant_id", (json_int_t)7, "status",
                              st[v % 8], "secret_ct", sealed, "ttl", (json_int_t)(v % 3 ? 60 : 0));
        free(sealed);
        return dump_free(j);
    }
    if (strstr(sql, "gp_paycode_issue"))
        return dump_free(json_pack("{s:s, s:I, s:s, s:I}", "nonce",
                                   nparams > 1 && params[1] ? params[1] : "00", "worker_id",
                                   (json_int_t)1, "expires_at", "2030-01-01T00:00:00+00:00", "exp",
                                   (json_int_t)1893456000));
    if (strstr(sql, "gp_balance"))
        return dump_free(json_pack("{s:I, s:I, s:I, s:I}", "worker_id", (json_int_t)1, "available",
                                   (json_int_t)(v % 1000), "pending", (json_int_t)0, "version",
                                   (json_int_t)(1 + v % 7)));
    if (strstr(sql, "gp_evidence_get") || strstr(sql, "gp_evidence_put")) {
        static const char *const types[] = {"image/jpeg", "image/png", "image/webp"};
        const char *hash = nparams > 1 && params[1] ? params[1] : "00";
        json_t *e = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "sha256", hash, "size",
                              (json_int_t)(1 + v % 4096), "content_type", types[v % 3], "path",
                              "/api/v1/evidence/00", "created_at", "2030-01-01T00:00:00+00:00",
                              "expires_at", "2030-06-30T00:00:00+00:00");
        if (strstr(sql, "gp_evidence_get"))
            return dump_free(e);
        return dump_free(json_pack("{s:b, s:o}", "created", (int)(v % 2), "evidence", e));
    }
    if (strstr(sql, "gp_rank_target")) /* the board of a rank read (issue 14) */
        return dump_free(json_pack("{s:I, s:I, s:s, s:s}", "worker_id", (json_int_t)1, "unit_id",
                                   (json_int_t)(1 + v % 3), "level", "grid", "period", "all"));
    if (strstr(sql, "_xlsx(")) { /* the rows of an XLSX export (issue 14) */
        if (v % 5 == 0)
            return dump_free(json_pack("{s:b, s:I}", "too_large", 1, "count", (json_int_t)v));
        char *text = odd_strings ? odd_string(v >> 3) : strdup("memo");
        json_t *j =
            json_pack("{s:s, s:[s,s,s], s:[[I,s,n],[I,f,b]]}", "sheet", "statement", "columns",
                      "id", "memo", "x", "rows", (json_int_t)v, text, (json_int_t)-1, 1.5, 1);
        free(text);
        return dump_free(j);
    }
    if (strstr(sql, "gp_task_claim") || strstr(sql, "gp_task_slots"))
        return dump_free(json_pack("{s:I, s:I, s:I, s:{s:I, s:I, s:I}}", "task_id", (json_int_t)1,
                                   "free_slots", (json_int_t)(v % 3), "slots_version",
                                   (json_int_t)(1 + v % 5), "gate", "task_id", (json_int_t)1,
                                   "free_slots", (json_int_t)(v % 3), "slots_version",
                                   (json_int_t)(1 + v % 5)));
    char *name = odd_strings ? odd_string(v >> 3) : strdup("item");
    json_t *j = json_pack(
        "{s:I, s:s, s:s, s:[{s:I, s:s}], s:n, s:I, s:I, s:I, s:I, s:s, s:[s], s:b}", "id",
        (json_int_t)1, "name", name, "status", "active", "items", "id", (json_int_t)2, "name", name,
        "next_cursor", "worker_id", (json_int_t)1, "available", (json_int_t)10, "pending",
        (json_int_t)0, "version", (json_int_t)3, "key_id", "mk_0123456789abcdef", "key_ids",
        "mk_0123456789abcdef", "idempotent_replay", (int)(v % 5 == 0));
    free(name);
    return dump_free(j);
}

/* The effects column of a gp_reply (sql/functions/00_helpers.sql) as a healthy database
 * answers it: what the statement's function would ask the server to apply after commit. */
static char *plausible_effects(const char *sql, uint32_t v)
{
    if (v % 4 == 0)
        return NULL; /* nothing to apply */
    json_t *gate =
        json_pack("{s:I, s:I, s:I, s:I}", "task_id", (json_int_t)1, "unit_id", (json_int_t)1,
                  "free_slots", (json_int_t)(v % 3), "slots_version", (json_int_t)(1 + v % 5));
    if (strstr(sql, "gp_task_claim")) {
        json_object_set_new(gate, "worker_id", json_integer(1));
        return dump_free(json_pack("{s:o}", "gate_won", gate));
    }
    json_t *bal = json_pack("{s:I, s:I, s:I, s:I}", "worker_id", (json_int_t)1, "available",
                            (json_int_t)(v % 1000), "pending", (json_int_t)0, "version",
                            (json_int_t)(1 + v % 7));
    json_t *award = json_deep_copy(bal);
    json_object_update_new(award, json_pack("{s:I, s:I, s:[I], s:s}", "earned_month", (json_int_t)5,
                                            "earned_total", (json_int_t)9, "rank_units",
                                            (json_int_t)1, "period", "2030-01"));
    return dump_free(json_pack("{s:[o], s:[o], s:[o], s:[s], s:[s]}", "balances", bal, "awards",
                               award, "gates", gate, "forget_keys", "mk_0123456789abcdef",
                               "drop_sessions", "00ff"));
}

/* Statements that read a gp_reply: body and effects (api_write). */
static bool reply_with_effects(const char *sql)
{
    return strstr(sql, "SELECT body, effects FROM") != NULL;
}

/* Statements whose one column is text, not JSON. */
static bool text_result(const char *sql)
{
    return strstr(sql, "_csv(") || strstr(sql, "gp_audit_export_page") ||
           strstr(sql, "gp_audit_latest_note") || !strcmp(sql, "SELECT 1");
}

static char *plausible_text(const char *sql, uint32_t v, bool odd_strings)
{
    if (!strcmp(sql, "SELECT 1"))
        return strdup("1");
    if (odd_strings)
        return odd_string(v);
    if (strstr(sql, "_csv("))
        return strdup("kind,amount,at\r\ncapture,10,\"2030-01-01T00:00:00Z\"\r\n");
    if (strstr(sql, "gp_audit_latest_note"))
        return strdup("gridpoints.local/ledger\n3\nAAAA\n\n- gridpoints.local/ledger xyz\n");
    return strdup("{\"kind\":\"award\",\"amount\":1}\n{\"kind\":\"expiry\",\"amount\":-1}\n");
}

/* ---------------------------------------------------------------------------------------- */
/* Database answers                                                                          */
/* ---------------------------------------------------------------------------------------- */

static struct db_result *result_new(int ntuples, int nfields)
{
    struct db_result *r = calloc(1, sizeof *r);
    r->st = ST_OK;
    r->ntuples = ntuples;
    r->nfields = nfields;
    if (ntuples * nfields > 0)
        r->values = calloc((size_t)(ntuples * nfields), sizeof(char *));
    return r;
}

static void result_free(struct db_result *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->ntuples * r->nfields; i++)
        free(r->values[i]);
    free(r->values);
    free(r->code);
    free(r->message);
    free(r->field);
    free(r->detail);
    free(r);
}

static struct db_result *result_error(enum status st, const char *sqlstate, char *code,
                                      char *message, char *field, char *detail)
{
    struct db_result *r = result_new(0, 0);
    r->st = st;
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", sqlstate);
    r->code = code ? code : strdup(status_code(st));
    r->message = message ? message : strdup("the database could not run the request");
    r->field = field ? field : strdup("");
    r->detail = detail ? detail : strdup("");
    return r;
}

static struct db_result *result_one(char *value)
{
    struct db_result *r = result_new(1, 1);
    r->values[0] = value;
    return r;
}

static struct db_result *answer_login_lookup(uint8_t b, uint32_t v)
{
    /* SETOF (person_id, password_hash, status), all NOT NULL, phone UNIQUE: zero or one row. */
    if ((b & 15) == 6 || (b & 15) == 7)
        return result_new(0, 3); /* unknown phone */
    struct db_result *r = result_new(1, 3);
    r->values[0] = strdup(v % 16 == 0 ? "9223372036854775807" : "1");
    if ((b & 15) == 13 || (b & 15) == 14) {
        /* A hash of another shape: impossible for what our server stores, so a fault. */
        B.faulted = true;
        static const char *const bad[] = {"", "pbkdf2-sha256$", "pbkdf2-sha256$0$AA$AA",
                                          "pbkdf2-sha256$1000$!!!$@@@", "argon2id$v=19$..."};
        r->values[1] = strdup(bad[v % 5]);
    } else {
        r->values[1] = strdup(B.pw_hash);
    }
    r->values[2] = strdup(v % 8 == 7 ? "suspended" : "active");
    return r;
}

static struct db_result *answer_db_as(const char *sql, int nparams, const char *const *params,
                                      uint8_t b, uint32_t v);

/* A gp_reply statement answers two columns: the body as answer_db_as makes it and the
 * effects, plausible or (for the modes that answer oddities) of an odd shape. */
static struct db_result *answer_db(const char *sql, int nparams, const char *const *params)
{
    uint32_t v;
    uint8_t b = choose(sql, &v);
    struct db_result *r = answer_db_as(sql, nparams, params, b, v);
    if (!reply_with_effects(sql) || r->st != ST_OK || r->ntuples != 1 || r->nfields != 1)
        return r;
    struct db_result *two = result_new(1, 2);
    two->values[0] = r->values[0];
    r->values[0] = NULL;
    result_free(r);
    unsigned mode = b & 15;
    two->values[1] =
        mode == 12 || mode == 14 || mode == 15 ? odd_json(v >> 3) : plausible_effects(sql, v);
    return two;
}

static struct db_result *answer_db_as(const char *sql, int nparams, const char *const *params,
                                      uint8_t b, uint32_t v)
{
    unsigned mode = b & 15;
    /* Only our SQL functions raise GPxxx errors or hit unique constraints; a bare statement
     * ("SELECT 1") fails only by being unavailable or broken. */
    if ((mode == 8 || mode == 9) && !strstr(sql, "gp_"))
        mode = 0;
    if (mode >= 8 && mode <= 11) {
        /* Errors, by class. */
        if (mode == 8) {
            /* Our SQL functions' own errors: HINT, MESSAGE and COLUMN as our SQL wrote them,
             * which may quote what the client sent (valid UTF-8, maybe long). */
            static const struct {
                enum status st;
                const char *sqlstate;
            } gp[] = {{ST_INVALID, "GP400"},       {ST_INVALID, "GP400"},
                      {ST_UNAUTHORIZED, "GP401"},  {ST_FORBIDDEN, "GP403"},
                      {ST_NOT_FOUND, "GP404"},     {ST_CONFLICT, "GP409"},
                      {ST_UNPROCESSABLE, "GP422"}, {ST_INSUFFICIENT_POINTS, "GP402"},
                      {ST_RATE_LIMITED, "GP429"}};
            unsigned i = (v >> 2) % (sizeof gp / sizeof gp[0]);
            char *code = v & 1 ? odd_string(v >> 5) : strdup("invalid_thing");
            char *msg = odd_string(v >> 9);
            char *field = v & 2 ? odd_string(v >> 13) : strdup("");
            return result_error(gp[i].st, gp[i].sqlstate, code, msg, field, odd_string(v >> 17));
        }
        if (mode == 9)
            return result_error(ST_CONFLICT, "23505", NULL, NULL, NULL, odd_string(v));
        B.faulted = true;
        if (mode == 10) {
            static const char *const ss[] = {"40001", "40P01", "57014", ""};
            return result_error(ST_UNAVAILABLE, ss[v % 4], NULL, NULL, NULL, odd_string(v >> 2));
        }
        return result_error(ST_INTERNAL, v & 1 ? "XX000" : "42883", NULL, NULL, NULL,
                            odd_string(v >> 1));
    }
    if (strstr(sql, "gp_login_lookup"))
        return answer_login_lookup(b, v);
    bool text = text_result(sql);
    switch (mode) {
    case 6: /* SQL NULL */
        B.faulted = true;
        return result_one(NULL);
    case 7: /* no row */
        B.faulted = true;
        return result_new(0, 1);
    case 12: /* valid JSON of the wrong shape (or odd text for a text column) */
        B.faulted = true;
        return result_one(text ? odd_string(v) : odd_json(v));
    case 13: /* plausible, with odd free text */
        return result_one(text ? plausible_text(sql, v, true)
                               : plausible_json(sql, params, nparams, v, true));
    case 14: { /* the right keys with values of the wrong type */
        B.faulted = true;
        if (text)
            return result_one(long_text(v));
        return result_one(strdup(
            v & 1 ? "{\"person_id\":\"1\",\"unit_id\":true,\"roles\":{\"role\":\"worker\"},"
                    "\"ttl\":\"x\",\"merchant_id\":\"7\",\"status\":1,\"secret_ct\":[],"
                    "\"expires_at\":7,\"gate\":{\"free_slots\":\"1\",\"slots_version\":null}}"
                  : "{\"person_id\":0,\"unit_id\":-1,\"roles\":[1,null,{\"role\":5}],"
                    "\"ttl\":-99999999999,\"merchant_id\":-7,\"status\":\"active\","
                    "\"secret_ct\":\"\",\"worker_id\":-1,\"version\":-1,\"available\":-1}"));
    }
    case 15: { /* several rows and columns */
        B.faulted = true;
        struct db_result *r = result_new(2 + (int)(v % 3), 2);
        for (int i = 0; i < r->ntuples * r->nfields; i++)
            r->values[i] = i % 3 == 2 ? NULL : (text ? odd_string(v + (uint32_t)i) : odd_json(v));
        return r;
    }
    default:
        return result_one(text ? plausible_text(sql, v, false)
                               : plausible_json(sql, params, nparams, v, false));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Redis answers                                                                             */
/* ---------------------------------------------------------------------------------------- */

static redisReply *rr_new(int type)
{
    redisReply *r = calloc(1, sizeof *r);
    r->type = type;
    return r;
}

static redisReply *rr_str(int type, const char *s, size_t n)
{
    redisReply *r = rr_new(type);
    r->str = malloc(n + 1);
    memcpy(r->str, s, n);
    r->str[n] = '\0';
    r->len = n;
    return r;
}

static redisReply *rr_int(long long v)
{
    redisReply *r = rr_new(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *rr_array(size_t n)
{
    redisReply *r = rr_new(REDIS_REPLY_ARRAY);
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof *r->element);
    return r;
}

static void rr_free(redisReply *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->elements; i++)
        rr_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

static redisReply *rr_odd(uint32_t v, int depth)
{
    size_t n;
    char *s;
    redisReply *r;
    switch (v % 6) {
    case 0:
        return rr_new(REDIS_REPLY_NIL);
    case 1:
        s = odd_bytes(v >> 3, &n);
        r = rr_str(REDIS_REPLY_ERROR, s, n);
        free(s);
        return r;
    case 2: {
        static const long long ints[] = {0, 1, 2, -1, -2, LLONG_MAX, LLONG_MIN, 1000000000000LL};
        return rr_int(ints[(v >> 3) % 8]);
    }
    case 3:
        s = odd_bytes(v >> 3, &n);
        r = rr_str(REDIS_REPLY_STRING, s, n);
        free(s);
        return r;
    case 4:
        s = odd_bytes(v >> 3, &n);
        r = rr_str(REDIS_REPLY_STATUS, s, n);
        free(s);
        return r;
    default: {
        size_t k = depth > 2 ? 0 : (v >> 3) % 5;
        r = rr_array(k);
        for (size_t i = 0; i < k; i++)
            r->element[i] = rr_odd(mix32(v + (uint32_t)i + 1), depth + 1);
        return r;
    }
    }
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* What a healthy Redis answers to argv (for a script: its keys and args). */
static redisReply *plausible_kv(bool script, int argc, const char *const *argv, uint32_t v)
{
    const char *cmd = argc > 0 ? argv[0] : "";
    if (script) {
        if (has_prefix(cmd, "rl:")) {
            redisReply *r = rr_array(2);
            r->element[0] = rr_int(v % 8 == 0 ? 1000000 : 1);
            r->element[1] = rr_int(v % 16 == 0 ? 0 : 60000);
            return r;
        }
        if (has_prefix(cmd, "login:addr:")) {
            if (argc == 1)
                return rr_int(1); /* login_throttle's address undo */
            redisReply *r = rr_array(2);
            r->element[0] = rr_int(v % 8 == 0 ? 1 : 0);
            r->element[1] = rr_int(30000);
            return r;
        }
        if (has_prefix(cmd, "login:{")) {
            if (argc < 11)
                return rr_int(1); /* login_throttle's success script */
            static const long long verdict[] = {0, 0, 0, 0, 0, 1, 3, 2};
            redisReply *r = rr_array(3);
            r->element[0] = rr_int(verdict[v % 8]);
            r->element[1] = rr_int(v % 16 == 0 ? 0 : 2000);
            r->element[2] = rr_int((v >> 4) & 1);
            return r;
        }
        if (has_prefix(cmd, "gate:"))
            return rr_int(v % 3 == 0 ? 0 : v % 3 == 1 ? 1 : -1);
        if (has_prefix(cmd, "rank:")) {
            if (v % 4 == 0)
                return rr_new(REDIS_REPLY_NIL);
            redisReply *r = rr_array(3);
            r->element[0] = rr_int(120);
            r->element[1] = rr_int(3);
            r->element[2] = rr_int(40);
            return r;
        }
        return rr_str(REDIS_REPLY_STATUS, "OK", 2);
    }
    if (!strcasecmp(cmd, "GET") && argc > 1) {
        if (v % 4 == 0)
            return rr_new(REDIS_REPLY_NIL); /* a miss */
        if (has_prefix(argv[1], "sess:")) {
            /* auth.c's cached principal: p2:<person>:<unit>:<roles>:<worker>:<area> */
            char s[96];
            unsigned bits = role_bits(v >> 2);
            int n = snprintf(s, sizeof s, "p2:1:1:%u:%u:%s", bits, bits & 1, v & 2 ? "1.2.3" : "");
            return rr_str(REDIS_REPLY_STRING, s, (size_t)n);
        }
        if (has_prefix(argv[1], "mkey:{")) {
            char id[MAUTH_KEY_ID_LEN + 1] = "";
            const char *k = argv[1] + strlen("mkey:{");
            if (strlen(k) == MAUTH_KEY_ID_LEN + 1 && k[MAUTH_KEY_ID_LEN] == '}')
                memcpy(id, k, MAUTH_KEY_ID_LEN);
            char *sealed = sealed_secret(id);
            json_t *j = json_pack("{s:I, s:s}", "merchant_id", (json_int_t)7, "secret_ct", sealed);
            free(sealed);
            char *text = dump_free(j);
            redisReply *r = rr_str(REDIS_REPLY_STRING, text, strlen(text));
            free(text);
            return r;
        }
        return rr_new(REDIS_REPLY_NIL);
    }
    if (!strcasecmp(cmd, "SET")) {
        for (int i = 2; i < argc; i++)
            if (!strcasecmp(argv[i], "NX") && v % 6 == 0)
                return rr_new(REDIS_REPLY_NIL); /* seen before */
        return rr_str(REDIS_REPLY_STATUS, "OK", 2);
    }
    if (!strcasecmp(cmd, "PING"))
        return rr_str(REDIS_REPLY_STATUS, "PONG", 4);
    if (!strcasecmp(cmd, "HMGET")) {
        if (v % 4 == 0) {
            redisReply *r = rr_array(3);
            for (int i = 0; i < 3; i++)
                r->element[i] = rr_new(REDIS_REPLY_NIL);
            return r;
        }
        redisReply *r = rr_array(3);
        r->element[0] = rr_str(REDIS_REPLY_STRING, "10", 2);
        r->element[1] = rr_str(REDIS_REPLY_STRING, "0", 1);
        r->element[2] = rr_str(REDIS_REPLY_STRING, "3", 1);
        return r;
    }
    if (!strcasecmp(cmd, "DEL") || !strcasecmp(cmd, "ZADD"))
        return rr_int(1);
    return rr_str(REDIS_REPLY_STATUS, "OK", 2);
}

static redisReply *answer_kv(bool script, int argc, const char *const *argv, enum status *st)
{
    /* The choice text: the command name, or for a script its first key's prefix. */
    char text[64];
    snprintf(text, sizeof text, "%s%.40s", script ? "EVAL " : "", argc > 0 ? argv[0] : "");
    uint32_t v;
    uint8_t b = choose(text, &v);
    unsigned mode = b & 15;
    *st = ST_OK;
    if (mode < 8)
        return plausible_kv(script, argc, argv, v);
    B.faulted = true;
    if (mode == 14) {
        *st = ST_UNAVAILABLE; /* down, timeout, connection lost */
        return NULL;
    }
    redisReply *r = rr_odd(v ^ mode, 0);
    if (r->type == REDIS_REPLY_ERROR)
        *st = ST_INTERNAL;
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* The queue                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static void job_run(struct job *j)
{
    if (j->is_db) {
        j->dcb(j->res, j->arg);
        result_free(j->res);
    } else {
        j->kcb(j->reply, j->kst, j->arg);
        rr_free(j->reply);
    }
    free(j);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    /* Only what was queued before this turn; replies queued by these callbacks wait for the
     * next turn, as they would on a real connection. */
    struct job *j = B.head;
    B.head = B.tail = NULL;
    while (j) {
        struct job *next = j->next;
        B.pending--;
        job_run(j);
        j = next;
    }
}

static void enqueue(struct job *j)
{
    j->next = NULL;
    if (B.tail)
        B.tail->next = j;
    else
        B.head = j;
    B.tail = j;
    B.pending++;
    if (!evtimer_pending(B.tick, NULL)) {
        struct timeval zero = {0, 0};
        evtimer_add(B.tick, &zero);
    }
}

/* Replaces every queued reply of one side with ST_UNAVAILABLE and delivers it now. */
static void fail_pending(bool db)
{
    struct job *keep = NULL, **kt = &keep, *fail = NULL, **ft = &fail;
    for (struct job *j = B.head, *next; j; j = next) {
        next = j->next;
        j->next = NULL;
        if (j->is_db == db) {
            *ft = j;
            ft = &j->next;
        } else {
            *kt = j;
            kt = &j->next;
        }
    }
    B.head = keep;
    B.tail = NULL;
    for (struct job *j = keep; j; j = j->next)
        B.tail = j;
    while (fail) {
        struct job *j = fail;
        fail = j->next;
        B.pending--;
        if (db) {
            result_free(j->res);
            j->res = result_error(ST_UNAVAILABLE, "", NULL, NULL, NULL,
                                  strdup("database pool shut down"));
        } else {
            rr_free(j->reply);
            j->reply = NULL;
            j->kst = ST_UNAVAILABLE;
        }
        job_run(j);
    }
}

static void base_use(struct event_base *base)
{
    if (B.users++ == 0) {
        B.base = base;
        B.tick = evtimer_new(base, tick_cb, NULL);
    }
}

static void base_release(void)
{
    if (--B.users == 0) {
        event_free(B.tick);
        B.tick = NULL;
        free(B.kek_hex);
        free(B.secret);
        free(B.pw_hash);
        B.kek_hex = B.secret = B.pw_hash = NULL;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Harness API                                                                               */
/* ---------------------------------------------------------------------------------------- */

void fuzz_backend_setup(const char *kek_hex, const char *merchant_secret, const char *pw_hash)
{
    free(B.kek_hex);
    free(B.secret);
    free(B.pw_hash);
    B.kek_hex = strdup(kek_hex);
    B.secret = strdup(merchant_secret);
    B.pw_hash = strdup(pw_hash);
}

void fuzz_backend_begin(const uint8_t *script, size_t len)
{
    B.script_len = len < sizeof B.script ? len : sizeof B.script;
    memcpy(B.script, script, B.script_len);
    B.script_hash = 0x12345678u;
    for (size_t i = 0; i < B.script_len; i++)
        B.script_hash = mix32(B.script_hash ^ B.script[i]);
    B.calls = 0;
    B.faulted = false;
}

bool fuzz_backend_faulted(void)
{
    return B.faulted;
}

int fuzz_backend_pending(void)
{
    return B.pending;
}

unsigned fuzz_backend_calls(void)
{
    return B.calls;
}

/* ---------------------------------------------------------------------------------------- */
/* db.h                                                                                      */
/* ---------------------------------------------------------------------------------------- */

struct db_pool *db_pool_new(struct event_base *base, const struct db_pool_config *cfg)
{
    struct db_pool *p = calloc(1, sizeof *p);
    p->base = base;
    p->stats.size = cfg->size;
    p->stats.connected = cfg->size;
    base_use(base);
    return p;
}

void db_pool_shutdown(struct db_pool *pool)
{
    pool->down = true;
    fail_pending(true);
}

void db_pool_free(struct db_pool *pool)
{
    if (!pool)
        return;
    fail_pending(true);
    free(pool);
    base_release();
}

void db_pool_get_stats(const struct db_pool *pool, struct db_pool_stats *out)
{
    *out = pool->stats;
    out->waiting = 0;
    for (struct job *j = B.head; j; j = j->next)
        out->in_use += j->is_db;
}

bool db_pool_is_up(const struct db_pool *pool)
{
    return !pool->down;
}

void db_query(struct db_pool *pool, const char *sql, int nparams, const char *const *params,
              db_cb cb, void *arg)
{
    struct job *j = calloc(1, sizeof *j);
    j->is_db = true;
    j->dcb = cb;
    j->arg = arg;
    pool->stats.queries++;
    if (pool->down) {
        j->res = result_error(ST_UNAVAILABLE, "", NULL, NULL, NULL, strdup("pool is shut down"));
    } else {
        j->res = answer_db(sql, nparams, params);
        if (j->res->st != ST_OK)
            pool->stats.errors++;
    }
    enqueue(j);
}

enum status db_result_status(const struct db_result *res)
{
    return res->st;
}

const char *db_result_sqlstate(const struct db_result *res)
{
    return res->sqlstate;
}

const char *db_result_error_code(const struct db_result *res)
{
    return res->code ? res->code : status_code(res->st);
}

const char *db_result_error_message(const struct db_result *res)
{
    return res->message ? res->message : "";
}

const char *db_result_error_field(const struct db_result *res)
{
    return res->field ? res->field : "";
}

const char *db_result_log_detail(const struct db_result *res)
{
    return res->detail ? res->detail : "";
}

int db_result_ntuples(const struct db_result *res)
{
    return res->ntuples;
}

int db_result_nfields(const struct db_result *res)
{
    return res->nfields;
}

const char *db_result_value(const struct db_result *res, int row, int col)
{
    if (row < 0 || row >= res->ntuples || col < 0 || col >= res->nfields)
        return NULL;
    return res->values[row * res->nfields + col];
}

/* As db.c: row 0 column 0 of a success, parsed as jansson does by default (object or array). */
json_t *db_result_json(const struct db_result *res)
{
    if (db_result_status(res) != ST_OK)
        return NULL;
    const char *v = db_result_value(res, 0, 0);
    return v ? json_loads(v, 0, NULL) : NULL;
}

struct pg_result *db_result_pg(const struct db_result *res)
{
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* kv.h                                                                                      */
/* ---------------------------------------------------------------------------------------- */

struct kv *kv_new(struct event_base *base, const struct kv_config *cfg)
{
    struct kv *kv = calloc(1, sizeof *kv);
    kv->base = base;
    kv->stats.up = true;
    base_use(base);
    return kv;
}

void kv_shutdown(struct kv *kv)
{
    kv->down = true;
    kv->stats.up = false;
    fail_pending(false);
}

void kv_free(struct kv *kv)
{
    if (!kv)
        return;
    fail_pending(false);
    while (kv->scripts) {
        struct kv_script *s = kv->scripts;
        kv->scripts = s->next;
        free(s->lua);
        free(s);
    }
    free(kv);
    base_release();
}

bool kv_is_up(const struct kv *kv)
{
    return !kv->down;
}

void kv_get_stats(const struct kv *kv, struct kv_stats *out)
{
    *out = kv->stats;
    out->pending = 0;
    for (struct job *j = B.head; j; j = j->next)
        out->pending += !j->is_db;
}

static void kv_send(struct kv *kv, bool script, kv_cb cb, void *arg, int argc,
                    const char *const *argv)
{
    kv->stats.commands++;
    if (!cb)
        return; /* fire-and-forget: nobody reads the reply */
    struct job *j = calloc(1, sizeof *j);
    j->kcb = cb;
    j->arg = arg;
    if (kv->down) {
        j->kst = ST_UNAVAILABLE;
    } else {
        j->reply = answer_kv(script, argc, argv, &j->kst);
        if (j->kst != ST_OK)
            kv->stats.errors++;
    }
    enqueue(j);
}

void kv_command(struct kv *kv, kv_cb cb, void *arg, int argc, const char *const *argv,
                const size_t *argvlen)
{
    /* Binary arguments (argvlen) are only keys and values we never need to read here. */
    (void)argvlen;
    kv_send(kv, false, cb, arg, argc, argv);
}

struct kv_script *kv_script_new(struct kv *kv, const char *lua)
{
    struct kv_script *s = calloc(1, sizeof *s);
    s->lua = strdup(lua);
    s->next = kv->scripts;
    kv->scripts = s;
    return s;
}

void kv_eval(struct kv *kv, const struct kv_script *script, int nkeys, int argc,
             const char *const *argv, kv_cb cb, void *arg)
{
    (void)script;
    (void)nkeys;
    kv_send(kv, true, cb, arg, argc, argv);
}
