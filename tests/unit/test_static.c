/* test_static.c -- the in-memory web apps (static.c): path normalization against every
 * traversal spelling, types, the hashed-asset rule, If-None-Match and Accept-Encoding parsing,
 * and loading a real directory (symlinks in and out, hidden files, a FIFO, the size and count
 * limits, an absent directory). Tables where the cases are data. */
#include "config.h"
#include "crypto.h"
#include "router.h"
#include "static.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

struct norm_case {
    const char *in;
    const char *want; /* NULL: refused */
};

static const struct norm_case norm_cases[] = {
    {"", ""},
    {"index.html", "index.html"},
    {"assets/index-B1c2D3e4.js", "assets/index-B1c2D3e4.js"},
    {"tasks/12/", "tasks/12/"},
    {"a%2fb", "a/b"},
    {"%E4%BB%BB%E5%8A%A1", "\xe4\xbb\xbb\xe5\x8a\xa1"},
    {"...", "..."},
    {".well", ".well"},
    {"..", NULL},
    {".", NULL},
    {"./index.html", NULL},
    {"a/./b", NULL},
    {"a/../b", NULL},
    {"../../etc/passwd", NULL},
    {"a/..", NULL},
    {"%2e%2e/x", NULL},
    {"%2E%2e/x", NULL},
    {".%2e/x", NULL},
    {"%2e", NULL},
    {"%252e%252e/x", NULL},
    {"%25", NULL},
    {"a//b", NULL},
    {"/etc/passwd", NULL},
    {"%2fetc/passwd", NULL},
    {"a%2f%2fb", NULL},
    {"a\\b", NULL},
    {"..\\..\\x", NULL},
    {"a%5cb", NULL},
    {"a%5Cb", NULL},
    {"a%00b", NULL},
    {"a%0ab", NULL},
    {"a%0d%0aSet-Cookie:x", NULL},
    {"a%7f", NULL},
    {"%", NULL},
    {"%4", NULL},
    {"%zz", NULL},
    {"%%32%65", NULL},
};

static void test_normalize(void **state)
{
    for (size_t i = 0; i < sizeof norm_cases / sizeof norm_cases[0]; i++) {
        char out[64];
        bool ok = static_normalize(norm_cases[i].in, out, sizeof out);
        if (!norm_cases[i].want) {
            if (ok)
                fail_msg("\"%s\" accepted as \"%s\"", norm_cases[i].in, out);
            continue;
        }
        if (!ok)
            fail_msg("\"%s\" refused", norm_cases[i].in);
        assert_string_equal(out, norm_cases[i].want);
    }
}

static void test_normalize_bounds(void **state)
{
    char out[8];
    assert_true(static_normalize("1234567", out, sizeof out));
    assert_false(static_normalize("12345678", out, sizeof out));
    assert_false(static_normalize("%31%32%33%34%35%36%37%38", out, sizeof out));
    char big[STATIC_MAX_PATH + 10];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char key[STATIC_MAX_PATH];
    assert_false(static_normalize(big, key, sizeof key));
}

static void test_content_types(void **state)
{
    const struct {
        const char *name, *type;
    } cases[] = {
        {"app/index.html", "text/html; charset=utf-8"},
        {"a/x-1.js", "text/javascript; charset=utf-8"},
        {"a/x.mjs", "text/javascript; charset=utf-8"},
        {"a.css", "text/css; charset=utf-8"},
        {"a.svg", "image/svg+xml"},
        {"a.png", "image/png"},
        {"a.jpg", "image/jpeg"},
        {"a.JPEG", "image/jpeg"},
        {"a.webp", "image/webp"},
        {"favicon.ico", "image/x-icon"},
        {"a.json", "application/json"},
        {"manifest.webmanifest", "application/manifest+json"},
        {"a.woff2", "font/woff2"},
        {"robots.txt", "text/plain; charset=utf-8"},
        {"a.js.map", "application/json"},
        {"openapi.yaml", "application/yaml"},
        {"noext", "application/octet-stream"},
        {"a.exe", "application/octet-stream"},
        {"dir.js/file", "application/octet-stream"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(static_content_type(cases[i].name), cases[i].type);
}

static void test_hashed(void **state)
{
    const struct {
        const char *path;
        bool want;
    } cases[] = {
        {"app/assets/index-B1c2D3e4.js", true},
        {"app/assets/index-B-x_3Yq1.js", true},
        {"app/assets/index-B1c2D3e4.js.map", true},
        {"app/assets/logo.5f2a9c1e.svg", true},
        {"app/assets/vendor-Ab12Cd34Ef.css", true},
        {"app/assets/vendor-components.js", false},
        {"app/assets/index-legacy.js", false},
        {"app/assets/logo.svg", false},
        {"app/assets/x/deep-B1c2D3e4.js", false},
        {"app/index-B1c2D3e4.js", false},
        {"app/myassets/index-B1c2D3e4.js", false},
        {"app/sw.js", false},
        {"app/index.html", false},
        {"assets/index-B1c2D3e4.js", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (static_is_hashed(cases[i].path) != cases[i].want)
            fail_msg("%s: want %s", cases[i].path, cases[i].want ? "hashed" : "not hashed");
}

static void test_etag_matches(void **state)
{
    const char *e = "\"abc\"";
    assert_true(static_etag_matches("\"abc\"", e));
    assert_true(static_etag_matches("W/\"abc\"", e));
    assert_true(static_etag_matches("\"x\", \"abc\"", e));
    assert_true(static_etag_matches("\"x\",\t W/\"abc\" ", e));
    assert_true(static_etag_matches("*", e));
    assert_false(static_etag_matches("abc", e));
    assert_false(static_etag_matches("\"abcd\"", e));
    assert_false(static_etag_matches("\"ab\"", e));
    assert_false(static_etag_matches("", e));
    assert_false(static_etag_matches(",,,", e));
    assert_false(static_etag_matches("W/", e));
    assert_false(static_etag_matches("\"abc\"x", e));
}

static void test_accepts_gzip(void **state)
{
    const struct {
        const char *h;
        bool want;
    } cases[] = {
        {"gzip", true},
        {"gzip, deflate, br", true},
        {"br;q=1.0, gzip;q=0.8", true},
        {"GZIP", true},
        {"x-gzip", true},
        {"*", true},
        {"identity", false},
        {"", false},
        {"gzip;q=0", false},
        {"gzip; q=0.000", false},
        {"gzip;q=0.001", true},
        {"*;q=0", false},
        {"*, gzip;q=0", false},
        {"gzipper", false},
        {"br", false},
        {"deflate, *;q=0.1", true},
    };
    assert_false(static_accepts_gzip(NULL));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (static_accepts_gzip(cases[i].h) != cases[i].want)
            fail_msg("Accept-Encoding \"%s\": want %d", cases[i].h, cases[i].want);
}

/* The router's trailing wildcard, which the apps' routes use. */
static void handler(struct req_ctx *rc)
{
}

static void test_router_wildcard(void **state)
{
    static const struct route table[] = {
        {"GET", "/app/{*}", handler, NULL, ROUTE_JSON(0), "app", 0},
        {"GET", "/api/v1/units/{id}", handler, NULL, ROUTE_JSON(0), "unit", 0},
    };
    const struct {
        const char *method, *path;
        enum router_result want;
    } cases[] = {
        {"GET", "/app", ROUTER_MATCH},
        {"GET", "/app/", ROUTER_MATCH},
        {"GET", "/app/index.html", ROUTER_MATCH},
        {"GET", "/app/a/b/c/d/e/f/g/h.js", ROUTER_MATCH},
        {"GET", "/app/../x", ROUTER_MATCH}, /* the handler refuses it (static_normalize) */
        {"GET",
         "/app/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         ROUTER_MATCH}, /* no parameter length limit: nothing is captured */
        {"POST", "/app/x", ROUTER_METHOD_NOT_ALLOWED},
        {"GET", "/apple", ROUTER_NOT_FOUND},
        {"GET", "/ap", ROUTER_NOT_FOUND},
        {"GET", "//app/", ROUTER_NOT_FOUND},
        {"GET", "/", ROUTER_NOT_FOUND},
        {"GET", "/api/v1/units/7", ROUTER_MATCH},
        {"GET", "/api/v1/units/7/x", ROUTER_NOT_FOUND},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct route *r = NULL;
        struct router_params p;
        char allow[32];
        enum router_result got =
            router_match(table, 2, cases[i].method, cases[i].path, &r, &p, allow, sizeof allow);
        if (got != cases[i].want)
            fail_msg("%s %s: got %d, want %d", cases[i].method, cases[i].path, got, cases[i].want);
        if (got == ROUTER_MATCH && !strncmp(cases[i].path, "/app", 4))
            assert_int_equal(p.n, 0);
        if (got == ROUTER_METHOD_NOT_ALLOWED)
            assert_string_equal(allow, "GET");
    }
}

/* --- loading a directory --- */

struct fixture {
    char dir[256]; /* temp dir holding web/ and outside.txt */
    char web[300]; /* web.dir */
    struct config cfg;
};

static void write_file(const char *dir, const char *rel, const char *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void mkdirs(const char *dir, const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    assert_int_equal(mkdir(path, 0755), 0);
}

static char big_js[4096];

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/gp-static-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->web, sizeof fx->web, "%s/web", fx->dir);
    mkdirs(fx->dir, "web");
    mkdirs(fx->web, "app");
    mkdirs(fx->web, "app/assets");
    mkdirs(fx->web, "app/nested");
    mkdirs(fx->web, "app/nested/deep");
    write_file(fx->dir, "outside.txt", "secret outside\n", 15);
    write_file(fx->web, "app/index.html", "<!doctype html><title>t</title>", 31);
    for (size_t i = 0; i < sizeof big_js; i++)
        big_js[i] = "console.log(1);\n"[i % 16];
    write_file(fx->web, "app/assets/index-B1c2D3e4.js", big_js, sizeof big_js);
    write_file(fx->web, "app/sw.js", "self.x=1;", 9);
    write_file(fx->web, "app/nested/deep/file.txt", "deep\n", 5);
    write_file(fx->web, "app/.hidden", "h", 1);
    char path[512], target[512];
    snprintf(path, sizeof path, "%s/app/evil.txt", fx->web);
    snprintf(target, sizeof target, "%s/outside.txt", fx->dir);
    assert_int_equal(symlink(target, path), 0);
    snprintf(path, sizeof path, "%s/app/etc.txt", fx->web);
    assert_int_equal(symlink("/etc/passwd", path), 0);
    snprintf(path, sizeof path, "%s/app/inside.txt", fx->web);
    assert_int_equal(symlink("nested/deep/file.txt", path), 0);
    snprintf(path, sizeof path, "%s/app/linkdir", fx->web);
    assert_int_equal(symlink(fx->dir, path), 0);
    snprintf(path, sizeof path, "%s/app/fifo", fx->web);
    assert_int_equal(mkfifo(path, 0644), 0);
    char err[256];
    if (!config_load(&fx->cfg, NULL, err, sizeof err))
        return -1;
    free(fx->cfg.web_dir);
    fx->cfg.web_dir = strdup(fx->web);
    free(fx->cfg.web_openapi_file);
    fx->cfg.web_openapi_file = strdup("");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    if (system(cmd) != 0)
        return -1;
    config_free(&fx->cfg);
    free(fx);
    return 0;
}

static void test_load(void **state)
{
    struct fixture *fx = *state;
    char err[512] = "";
    struct static_files *sf = static_load(&fx->cfg, err, sizeof err);
    assert_non_null(sf);
    assert_true(static_present(sf));
    /* index.html, the asset, sw.js, deep/file.txt and the symlink inside */
    assert_int_equal(static_count(sf), 5);
    struct static_info in;
    assert_true(static_lookup(sf, "app/index.html", &in));
    assert_string_equal(in.content_type, "text/html; charset=utf-8");
    assert_string_equal(in.cache_control, "no-cache");
    assert_int_equal(in.len, 31);
    assert_null(in.etag_gz); /* too small to be worth it */

    unsigned char d[32];
    char hex[65], want[70];
    crypto_sha256("<!doctype html><title>t</title>", 31, d);
    crypto_hex(d, 32, hex);
    snprintf(want, sizeof want, "\"%s\"", hex);
    assert_string_equal(in.etag, want);

    assert_true(static_lookup(sf, "app/assets/index-B1c2D3e4.js", &in));
    assert_string_equal(in.cache_control, "public, max-age=31536000, immutable");
    assert_int_equal(in.len, sizeof big_js);
    assert_non_null(in.etag_gz);
    assert_true(in.gz_len > 0 && in.gz_len < in.len / 2);
    assert_string_not_equal(in.etag, in.etag_gz);

    assert_true(static_lookup(sf, "app/sw.js", &in));
    assert_string_equal(in.cache_control, "no-cache");
    assert_true(static_lookup(sf, "app/nested/deep/file.txt", &in));
    assert_true(static_lookup(sf, "app/inside.txt", &in));
    assert_int_equal(in.len, 5);
    assert_false(static_lookup(sf, "app/evil.txt", &in));
    assert_false(static_lookup(sf, "app/etc.txt", &in));
    assert_false(static_lookup(sf, "app/.hidden", &in));
    assert_false(static_lookup(sf, "app/fifo", &in));
    assert_false(static_lookup(sf, "app/linkdir/outside.txt", &in));
    assert_false(static_lookup(sf, "outside.txt", &in));
    assert_false(static_lookup(sf, "app/nested", &in));
    static_free(sf);
}

static void test_limits(void **state)
{
    struct fixture *fx = *state;
    char err[512] = "";
    fx->cfg.web_max_size = (int)sizeof big_js; /* the total is larger */
    assert_null(static_load(&fx->cfg, err, sizeof err));
    assert_non_null(strstr(err, "web.max_size"));
    fx->cfg.web_max_size = 1 << 20;
    fx->cfg.web_max_files = 4;
    err[0] = '\0';
    assert_null(static_load(&fx->cfg, err, sizeof err));
    assert_non_null(strstr(err, "web.max_files"));
    fx->cfg.web_max_files = 5;
    struct static_files *sf = static_load(&fx->cfg, err, sizeof err);
    assert_non_null(sf);
    static_free(sf);
}

static void test_absent(void **state)
{
    struct fixture *fx = *state;
    char err[512] = "";
    free(fx->cfg.web_dir);
    fx->cfg.web_dir = strdup("/nonexistent/gp-web");
    struct static_files *sf = static_load(&fx->cfg, err, sizeof err);
    assert_non_null(sf);
    assert_false(static_present(sf));
    assert_int_equal(static_count(sf), 0);
    struct static_info in;
    assert_false(static_lookup(sf, "app/index.html", &in));
    static_free(sf);
    /* A file where the directory should be is a configuration error, not "not built". */
    free(fx->cfg.web_dir);
    char path[512];
    snprintf(path, sizeof path, "%s/outside.txt", fx->dir);
    fx->cfg.web_dir = strdup(path);
    assert_null(static_load(&fx->cfg, err, sizeof err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_normalize_bounds),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_hashed),
        cmocka_unit_test(test_etag_matches),
        cmocka_unit_test(test_accepts_gzip),
        cmocka_unit_test(test_router_wildcard),
        cmocka_unit_test_setup_teardown(test_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
