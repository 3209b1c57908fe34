/* test_pure.c -- cmocka tests of the pure modules: config parsing, router matching, JSON
 * validation, status mapping, tokens and password hashes. Table-driven where cases are data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "crypto.h"
#include "jv.h"
#include "router.h"
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- config ---- */

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/gp-test-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    return path;
}

static void test_config_defaults_and_file(void **state)
{
    struct config cfg;
    char err[256];
    char *p = write_tmp("[server]\nlisten = 127.0.0.1:9999\nmax_body_size = 1m\n"
                        "read_timeout = 2s\n[auth]\nsession_ttl = 1h\n");
    assert_true(config_load(&cfg, p, err, sizeof err));
    assert_string_equal(cfg.listen, "127.0.0.1:9999");
    assert_int_equal(cfg.max_body_size, 1024 * 1024);
    assert_int_equal(cfg.read_timeout_ms, 2000);
    assert_int_equal(cfg.session_ttl_s, 3600);
    assert_int_equal(cfg.db_pool_size, 6); /* default */
    config_free(&cfg);
    unlink(p);
}

static void test_config_errors(void **state)
{
    static const char *bad[] = {
        "[server]\nno_such_key = 1\n",     /* unknown key */
        "[nosection]\nlisten = x\n",       /* unknown section */
        "[database]\npool_size = 0\n",     /* below min */
        "[database]\npool_size = 12abc\n", /* garbage */
        "[server]\nread_timeout = 5 fortnights\n",
        "[server]\ntrust_proxy = maybe\n",
        "[server]\npage_size_default = 500\n",     /* > page_size_max */
        "[server]\ntls_listen = 127.0.0.1:8443\n", /* without cert */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct config cfg;
        char err[256] = "";
        char *p = write_tmp(bad[i]);
        assert_false(config_load(&cfg, p, err, sizeof err));
        assert_true(strlen(err) > 0);
        config_free(&cfg);
        unlink(p);
    }
}

static void test_config_env_override(void **state)
{
    struct config cfg;
    char err[256];
    setenv("GRIDPOINTS_DATABASE_URL", "postgresql://x@y/z", 1);
    setenv("GRIDPOINTS_DATABASE_POOL_SIZE", "3", 1);
    assert_true(config_load(&cfg, NULL, err, sizeof err));
    assert_string_equal(cfg.database_url, "postgresql://x@y/z");
    assert_int_equal(cfg.db_pool_size, 3);
    config_free(&cfg);
    setenv("GRIDPOINTS_DATABASE_POOL_SIZE", "-3", 1);
    assert_false(config_load(&cfg, NULL, err, sizeof err));
    config_free(&cfg);
    unsetenv("GRIDPOINTS_DATABASE_URL");
    unsetenv("GRIDPOINTS_DATABASE_POOL_SIZE");
}

static void test_config_durations(void **state)
{
    long long ms;
    assert_true(config_parse_duration_ms("500ms", &ms) && ms == 500);
    assert_true(config_parse_duration_ms("15s", &ms) && ms == 15000);
    assert_true(config_parse_duration_ms("2m", &ms) && ms == 120000);
    assert_true(config_parse_duration_ms("1d", &ms) && ms == 86400000);
    assert_false(config_parse_duration_ms("-1s", &ms));
    assert_false(config_parse_duration_ms("1y", &ms));
    assert_false(config_parse_duration_ms("", &ms));
    assert_false(config_parse_duration_ms("99999999999999999999s", &ms));
    int n;
    assert_true(config_parse_size("64k", &n) && n == 65536);
    assert_false(config_parse_size("3g", &n));
    assert_false(config_parse_size("99999999999k", &n));
}

/* ---- router ---- */

static void noop(struct req_ctx *rc)
{
}

/* Rows leave out their flags (router.h), as most rows of routes.c do. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const struct route table[] = {
    {"GET", "/healthz", noop, NULL, ROUTE_JSON(0), ""},
    {"GET", "/api/v1/tasks", noop, NULL, ROUTE_JSON(0), ""},
    {"POST", "/api/v1/tasks", noop, NULL, ROUTE_JSON(-1), ""},
    {"GET", "/api/v1/tasks/{id}", noop, NULL, ROUTE_JSON(0), ""},
    {"POST", "/api/v1/tasks/{id}/claim", noop, NULL, ROUTE_JSON(0), ""},
    {"DELETE", "/api/v1/people/{id}/roles/{role}/{unit_id}", noop, NULL, ROUTE_JSON(0), ""},
};

static void test_router_table(void **state)
{
    static const struct {
        const char *method, *path;
        enum router_result want;
        int route; /* index when matched */
        const char *p0, *p1;
    } cases[] = {
        {"GET", "/healthz", ROUTER_MATCH, 0, NULL, NULL},
        {"GET", "/healthz/", ROUTER_NOT_FOUND, -1, NULL, NULL},
        {"GET", "/api/v1/tasks", ROUTER_MATCH, 1, NULL, NULL},
        {"POST", "/api/v1/tasks", ROUTER_MATCH, 2, NULL, NULL},
        {"PUT", "/api/v1/tasks", ROUTER_METHOD_NOT_ALLOWED, -1, NULL, NULL},
        {"GET", "/api/v1/tasks/42", ROUTER_MATCH, 3, "42", NULL},
        {"POST", "/api/v1/tasks/42/claim", ROUTER_MATCH, 4, "42", NULL},
        {"GET", "/api/v1/tasks/42/claim", ROUTER_METHOD_NOT_ALLOWED, -1, NULL, NULL},
        {"GET", "/api/v1/tasks//claim", ROUTER_NOT_FOUND, -1, NULL, NULL},
        {"GET", "/api/v1/tasks/..", ROUTER_NOT_FOUND, -1, NULL, NULL},
        {"GET", "/api/v1/tasks/a%2Fb", ROUTER_NOT_FOUND, -1, NULL, NULL},
        {"GET", "/api/v1/tasksX", ROUTER_NOT_FOUND, -1, NULL, NULL},
        {"GET", "/", ROUTER_NOT_FOUND, -1, NULL, NULL},
        {"DELETE", "/api/v1/people/7/roles/worker/3", ROUTER_MATCH, 5, "7", "worker"},
        {"GET",
         "/api/v1/tasks/0123456789012345678901234567890123456789012345678901234567890123456789",
         ROUTER_NOT_FOUND, -1, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct route *r = NULL;
        struct router_params p;
        char allow[64];
        enum router_result got =
            router_match(table, sizeof table / sizeof table[0], cases[i].method, cases[i].path, &r,
                         &p, allow, sizeof allow);
        if (got != cases[i].want)
            fail_msg("case %zu (%s %s): got %d want %d", i, cases[i].method, cases[i].path, got,
                     cases[i].want);
        if (got == ROUTER_MATCH) {
            assert_ptr_equal(r, &table[cases[i].route]);
            if (cases[i].p0)
                assert_string_equal(p.values[0], cases[i].p0);
            if (cases[i].p1)
                assert_string_equal(p.values[1], cases[i].p1);
        }
        if (got == ROUTER_METHOD_NOT_ALLOWED)
            assert_true(strlen(allow) > 0);
    }
}

/* ---- JSON validation ---- */

static void test_jv_parse(void **state)
{
    static const struct {
        const char *body;
        bool ok;
        const char *code;
    } cases[] = {
        {"{\"a\":1}", true, NULL},
        {"{\"a\":1,\"a\":2}", false, "duplicate_key"},
        {"[1,2]", false, "invalid_json"},
        {"42", false, "invalid_json"}, /* a scalar: valid JSON, not an object */
        {"{\"a\":", false, "invalid_json"},
        {"", false, "invalid_json"},
        {"{\"a\":99999999999999999999999}", false, "number_out_of_range"},
        {"{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}", false, "json_too_deep"},
        {"{\"s\":\"[[[[[[[[[[[[[[[[[[[[[[\"}", true, NULL}, /* brackets inside strings */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = NULL;
        struct jv_err e = {0};
        bool ok = jv_parse(cases[i].body, strlen(cases[i].body), 16, 1000, &j, &e);
        if (ok != cases[i].ok)
            fail_msg("case %zu: ok=%d (%s)", i, ok, e.message);
        if (!ok)
            assert_string_equal(e.code, cases[i].code);
        /* A document of the wrong shape is not reported as malformed. */
        if (!ok && (!strcmp(cases[i].body, "42") || !strcmp(cases[i].body, "[1,2]")))
            assert_non_null(strstr(e.message, "must be a JSON object"));
        if (j)
            json_decref(j);
    }
    /* item budget */
    char big[4096] = "{\"a\":[";
    for (int i = 0; i < 1200; i++)
        strcat(big, i ? ",1" : "1");
    strcat(big, "]}");
    json_t *j = NULL;
    struct jv_err e = {0};
    assert_false(jv_parse(big, strlen(big), 16, 1000, &j, &e));
    assert_string_equal(e.code, "json_too_large");
}

static void test_jv_fields(void **state)
{
    json_t *o = json_pack("{s:i, s:f, s:s, s:b, s:s, s:[s,s], s:n}", "n", 5, "f", 1.5, "s", "hé",
                          "b", 1, "t", "2026-11-21T08:00:00+08:00", "arr", "x", "y", "nul");
    struct jv_err e = {0};
    int64_t n = 0;
    assert_true(jv_i64(o, "n", true, 1, 10, &n, &e) && n == 5);
    assert_false(jv_i64(o, "n", true, 6, 10, &n, &e));
    assert_string_equal(e.code, "out_of_range");
    memset(&e, 0, sizeof e);
    assert_false(jv_i64(o, "f", true, 0, 10, &n, &e)); /* 1.5 is not an integer */
    assert_string_equal(e.code, "invalid_type");
    memset(&e, 0, sizeof e);
    assert_false(jv_i64(o, "missing", true, 0, 10, &n, &e));
    assert_string_equal(e.code, "missing_field");
    assert_string_equal(e.field, "missing");
    memset(&e, 0, sizeof e);
    assert_true(jv_i64(o, "nul", false, 0, 10, &n, &e)); /* null = absent */
    const char *s = NULL;
    assert_true(jv_str(o, "s", true, 2, 2, &s, &e)); /* 2 code points, 3 bytes */
    assert_false(jv_str(o, "s", true, 3, 5, &s, &e));
    memset(&e, 0, sizeof e);
    assert_true(jv_time(o, "t", true, &s, &e));
    assert_false(jv_time(o, "s", true, &s, &e));
    memset(&e, 0, sizeof e);
    json_t *arr;
    assert_true(jv_str_array(o, "arr", true, 5, 10, &arr, &e));
    assert_false(jv_str_array(o, "arr", true, 1, 10, &arr, &e));
    memset(&e, 0, sizeof e);
    static const char *const allowed[] = {"n", "f", "s", "b", "t", "arr", NULL};
    assert_false(jv_only(o, allowed, &e)); /* "nul" not allowed */
    assert_string_equal(e.code, "unknown_field");
    json_decref(o);

    int64_t v;
    assert_true(jv_parse_i64("42", 1, 100, &v) && v == 42);
    assert_false(jv_parse_i64("-1", 0, 100, &v));
    assert_false(jv_parse_i64("4x", 0, 100, &v));
    assert_false(jv_parse_i64("99999999999999999999", 0, INT64_MAX, &v));
    assert_false(jv_parse_i64("", 0, 100, &v));
}

/* ---- status ---- */

static void test_status_mapping(void **state)
{
    assert_int_equal(status_http(ST_OK), 200);
    assert_int_equal(status_http(ST_INVALID), 400);
    assert_int_equal(status_http(ST_UNAUTHORIZED), 401);
    assert_int_equal(status_http(ST_FORBIDDEN), 403);
    assert_int_equal(status_http(ST_NOT_FOUND), 404);
    assert_int_equal(status_http(ST_CONFLICT), 409);
    assert_int_equal(status_http(ST_TOO_LARGE), 413);
    assert_int_equal(status_http(ST_UNPROCESSABLE), 422);
    assert_int_equal(status_http(ST_RATE_LIMITED), 429);
    assert_int_equal(status_http(ST_UNAVAILABLE), 503);
    assert_int_equal(status_http(ST_INTERNAL), 500);
    assert_int_equal(status_from_sqlstate("GP404"), ST_NOT_FOUND);
    assert_int_equal(status_from_sqlstate("GP402"), ST_INSUFFICIENT_POINTS);
    assert_int_equal(status_from_sqlstate("23505"), ST_INTERNAL);
    assert_int_equal(status_from_sqlstate(NULL), ST_INTERNAL);
    for (int s = 0; s < ST__COUNT; s++)
        assert_non_null(status_code((enum status)s));
}

/* ---- crypto ---- */

static void test_crypto(void **state)
{
    char a[CRYPTO_TOKEN_LEN + 1], b[CRYPTO_TOKEN_LEN + 1];
    assert_true(crypto_token(a) && crypto_token(b));
    assert_int_equal(strlen(a), CRYPTO_TOKEN_LEN);
    assert_string_not_equal(a, b);
    char stored[160];
    assert_true(crypto_password_hash("correct horse", 1000, stored, sizeof stored));
    assert_true(crypto_password_verify("correct horse", stored));
    assert_false(crypto_password_verify("correct horsf", stored));
    assert_false(crypto_password_verify("correct horse", "garbage"));
    assert_false(crypto_password_verify("x", "pbkdf2-sha256$0$AA$AA"));
    /* RFC 4231 test case 2 */
    unsigned char mac[32];
    char hex[65];
    crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    crypto_hex(mac, 32, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    unsigned char raw[32];
    assert_true(crypto_unhex(hex, raw, 32));
    assert_true(crypto_equal(raw, mac, 32));
    assert_false(crypto_unhex("zz", raw, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_and_file),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_env_override),
        cmocka_unit_test(test_config_durations),
        cmocka_unit_test(test_router_table),
        cmocka_unit_test(test_jv_parse),
        cmocka_unit_test(test_jv_fields),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_crypto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
