/* test_config_strict.c -- cmocka tests of the strict parsing in config.c (numbers with trailing
 * bytes, redis.url with credentials, listen addresses, the metrics token) and of the migration
 * file names cli.c accepts. Table-driven: each case is a line of data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/gp-test-strict-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    return path;
}

/* config_load of one file: true/false, the message in err. */
static bool load_text(const char *text, char *err, size_t errlen)
{
    struct config cfg;
    char *p = write_tmp(text);
    bool ok = config_load(&cfg, p, err, errlen);
    config_free(&cfg);
    unlink(p);
    return ok;
}

/* ---- redis.url ---- */

static void test_redis_url_accepted(void **state)
{
    static const struct {
        const char *url;
        const char *host, *unix_path, *user, *password;
        int port, db;
    } ok[] = {
        {"redis://127.0.0.1:6379/0", "127.0.0.1", "", "", "", 6379, 0},
        {"redis://localhost", "localhost", "", "", "", 6379, 0},
        {"redis://localhost/", "localhost", "", "", "", 6379, 0},
        {"redis://cache.internal:6380/15", "cache.internal", "", "", "", 6380, 15},
        {"redis://:s3cret@10.0.0.5:6379/2", "10.0.0.5", "", "", "s3cret", 6379, 2},
        {"redis://gp:s3cret@h:1/0", "h", "", "gp", "s3cret", 1, 0},
        {"redis://gp:s3cret@h:65535", "h", "", "gp", "s3cret", 65535, 0},
        /* %-decoding, and a raw '@' inside the password (the last '@' ends the credentials) */
        {"redis://u%40x:p%2Fw%3Ad%25@h/1", "h", "", "u@x", "p/w:d%", 6379, 1},
        {"redis://:p@ss@h:7000", "h", "", "", "p@ss", 7000, 0},
        {"redis://[::1]:6379/3", "::1", "", "", "", 6379, 3},
        {"redis://[::1]", "::1", "", "", "", 6379, 0},
        {"unix:///run/redis.sock", "", "/run/redis.sock", "", "", 6379, 0},
        {"unix:///run/redis.sock?db=4", "", "/run/redis.sock", "", "", 6379, 4},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct config_redis r;
        char err[256] = "";
        if (!config_parse_redis_url(ok[i].url, &r, err, sizeof err))
            fail_msg("%s refused: %s", ok[i].url, err);
        assert_string_equal(r.host, ok[i].host);
        assert_string_equal(r.unix_path, ok[i].unix_path);
        assert_string_equal(r.user, ok[i].user);
        assert_string_equal(r.password, ok[i].password);
        assert_int_equal(r.port, ok[i].port);
        assert_int_equal(r.db, ok[i].db);
    }
}

static void test_redis_url_refused(void **state)
{
    static const char *bad[] = {
        "redis://127.0.0.1:6379abc/0", /* the reported defect: trailing bytes after the port */
        "redis://127.0.0.1:6379abc",
        "redis://127.0.0.1:+6379/0",
        "redis://127.0.0.1: 6379/0",
        "redis://127.0.0.1:-1/0",
        "redis://127.0.0.1:0/0",
        "redis://127.0.0.1:65536/0",
        "redis://127.0.0.1:99999999999999999999/0",
        "redis://127.0.0.1:/0",
        "redis://127.0.0.1:6379/0abc",
        "redis://127.0.0.1:6379/-1",
        "redis://127.0.0.1:6379/+1",
        "redis://127.0.0.1:6379/0?timeout=1",
        "redis://127.0.0.1:6379/0/1",
        "redis://127.0.0.1:6379/99999999999",
        "redis://",
        "redis://:6379/0",
        "redis://:pw@:6379/0",
        "redis://:pw@/0",
        "redis://ho st:6379",
        "redis://[::1:6379",
        "redis://[::1]x:6379",
        "redis://:bad%zzescape@h",
        "redis://:trunc%4@h",
        "redis://:nul%00@h",
        "redis://:ctl%0a@h",
        "rediss://h:6379/0",
        "http://h:6379/0",
        "127.0.0.1:6379",
        "",
        "unix://",
        "unix://relative.sock",
        "unix:///run/redis.sock?db=1x",
        "unix:///run/redis.sock?db=",
        "unix:///run/redis.sock?password=x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct config_redis r;
        char err[256] = "";
        if (config_parse_redis_url(bad[i], &r, err, sizeof err))
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(strlen(err) > 0);
        assert_non_null(strstr(err, "redis.url"));
    }
}

/* A bad URL's message must not repeat it: it may carry the password. */
static void test_redis_url_error_hides_password(void **state)
{
    char err[512] = "";
    assert_false(
        load_text("[redis]\nurl = redis://:Hunter2Secret@127.0.0.1:6379abc/0\n", err, sizeof err));
    assert_non_null(strstr(err, "port"));
    assert_null(strstr(err, "Hunter2Secret"));
}

static void test_redis_password_override(void **state)
{
    struct config cfg;
    char err[256] = "";
    struct config_redis r;

    setenv("GRIDPOINTS_REDIS_URL", "redis://:from-url@127.0.0.1:6390/1", 1);
    assert_true(config_load(&cfg, NULL, err, sizeof err));
    assert_true(config_redis(&cfg, &r, err, sizeof err));
    assert_string_equal(r.password, "from-url");
    config_free(&cfg);

    /* the environment's password wins over the URL's */
    setenv("GRIDPOINTS_REDIS_PASSWORD", "from-env", 1);
    assert_true(config_load(&cfg, NULL, err, sizeof err));
    assert_true(config_redis(&cfg, &r, err, sizeof err));
    assert_string_equal(r.password, "from-env");
    assert_int_equal(r.port, 6390);
    assert_int_equal(r.db, 1);
    config_free(&cfg);

    /* a user from the URL with the password from the environment */
    setenv("GRIDPOINTS_REDIS_URL", "redis://gp@127.0.0.1/0", 1);
    assert_true(config_load(&cfg, NULL, err, sizeof err));
    assert_true(config_redis(&cfg, &r, err, sizeof err));
    assert_string_equal(r.user, "gp");
    assert_string_equal(r.password, "from-env");
    config_free(&cfg);

    /* a user and no password anywhere: refused at load */
    unsetenv("GRIDPOINTS_REDIS_PASSWORD");
    assert_false(config_load(&cfg, NULL, err, sizeof err));
    assert_non_null(strstr(err, "GRIDPOINTS_REDIS_PASSWORD"));
    config_free(&cfg);
    unsetenv("GRIDPOINTS_REDIS_URL");
}

/* print-config masks the secrets this change added. */
static void dump_line(const char *line, void *arg)
{
    char *acc = arg;
    strncat(acc, line, 16383 - strlen(acc));
    strncat(acc, "\n", 16383 - strlen(acc));
}

static void test_dump_masks_secrets(void **state)
{
    struct config cfg;
    char err[256] = "";
    static char out[16384];
    out[0] = '\0';
    setenv("GRIDPOINTS_REDIS_PASSWORD", "Hunter2Secret", 1);
    setenv("GRIDPOINTS_SERVER_METRICS_TOKEN", "MetricsTokenSecret0123", 1);
    assert_true(config_load(&cfg, NULL, err, sizeof err));
    config_dump(&cfg, dump_line, out);
    config_free(&cfg);
    unsetenv("GRIDPOINTS_REDIS_PASSWORD");
    unsetenv("GRIDPOINTS_SERVER_METRICS_TOKEN");
    assert_null(strstr(out, "Hunter2Secret"));
    assert_null(strstr(out, "MetricsTokenSecret0123"));
    assert_non_null(strstr(out, "password = (set)"));
    assert_non_null(strstr(out, "metrics_token = (set)"));
}

/* ---- numbers and addresses in the file ---- */

static void test_numbers_refused(void **state)
{
    static const char *bad[] = {
        "[database]\npool_size = +5\n",
        "[database]\npool_size = 5x\n",
        "[database]\npool_size = 0x5\n",
        "[database]\npool_size = 1e1\n",
        "[database]\npool_size = 5.0\n",
        "[database]\npool_size = -\n",
        "[database]\npool_size = 99999999999999999999999\n",
        "[database]\npool_size = 4294967302\n", /* would wrap to 6 as an int */
        "[server]\nread_timeout = +5s\n",
        "[server]\nread_timeout = 5s5\n",
        "[server]\nread_timeout = 5ss\n",
        "[server]\nread_timeout = s\n",
        "[server]\nread_timeout = 0x10s\n",
        "[auth]\nsession_ttl = 90500ms\n", /* a seconds key: 90.5 s would silently be 90 s */
        "[server]\nmax_body_size = +64k\n",
        "[server]\nmax_body_size = 64kk\n",
        "[server]\nmax_body_size = 64kb\n",
        "[server]\nmax_body_size = k\n",
        "[server]\nlisten = 127.0.0.1:8080x\n",
        "[server]\nlisten = 127.0.0.1:+8080\n",
        "[server]\nlisten = 127.0.0.1:\n",
        "[server]\nlisten = 127.0.0.1:65536\n",
        "[server]\nlisten = :8080\n",
        "[server]\nlisten = 8080\n",
        "[server]\nmetrics_listen = 127.0.0.1:9x\n",
        "[server]\nlisten = 127.0.0.1:8080\nmetrics_listen = 127.0.0.1:8080\n",
        "[server]\nmetrics_token = short\n",
        "[redis]\nurl = redis://127.0.0.1:6379abc/0\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        if (load_text(bad[i], err, sizeof err))
            fail_msg("accepted: %s", bad[i]);
        assert_true(strlen(err) > 0);
    }
}

static void test_numbers_accepted(void **state)
{
    static const char *ok[] = {
        "[database]\npool_size = 5\n",
        "[server]\nread_timeout = 15 s\n",
        "[server]\nread_timeout = 1500ms\n",
        "[auth]\nsession_ttl = 90000ms\n",
        "[server]\nmax_body_size = 64K\n",
        "[server]\nlisten = 0.0.0.0:0\nmetrics_listen = 127.0.0.1:9100\n",
        "[server]\nmetrics_token = 0123456789abcdef\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char err[256] = "";
        if (!load_text(ok[i], err, sizeof err))
            fail_msg("refused: %s: %s", ok[i], err);
    }
}

static void test_hostport(void **state)
{
    char host[64];
    int port;
    assert_true(config_parse_hostport("127.0.0.1:8080", host, sizeof host, &port));
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_false(config_parse_hostport("127.0.0.1:8080abc", host, sizeof host, &port));
    assert_false(config_parse_hostport("127.0.0.1", host, sizeof host, &port));
    assert_false(config_parse_hostport("a b:80", host, sizeof host, &port));
}

/* ---- migration file names ---- */

static void test_migration_names(void **state)
{
    static const struct {
        const char *name;
        int version;
    } cases[] = {
        {"0001_foundation.sql", 1},
        {"0010_suspend_drops_cached_sessions.sql", 10},
        {"9999_x.sql", 9999},
        {"0002_v2.sql", 2},
        {"+001_x.sql", -1}, /* the reported defect: sscanf("%4d") read it as 1 */
        {" 001_x.sql", -1},
        {"-001_x.sql", -1},
        {"0x01_x.sql", -1},
        {"0000_x.sql", -1},
        {"00001_x.sql", -1},
        {"001_x.sql", -1},
        {"0001_.sql", -1},
        {"0001_X.sql", -1},
        {"0001-x.sql", -1},
        {"0001_x y.sql", -1},
        {"0001_x.sql.sql", -1},
        {"0001_x.SQL", -1},
        {"0001_x.sql~", -1},
        {"0001_é.sql", -1},
        {".sql", -1},
        {"", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cli_migration_version(cases[i].name) != cases[i].version)
            fail_msg("%s: expected %d, got %d", cases[i].name, cases[i].version,
                     cli_migration_version(cases[i].name));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_url_accepted),
        cmocka_unit_test(test_redis_url_refused),
        cmocka_unit_test(test_redis_url_error_hides_password),
        cmocka_unit_test(test_redis_password_override),
        cmocka_unit_test(test_dump_masks_secrets),
        cmocka_unit_test(test_numbers_refused),
        cmocka_unit_test(test_numbers_accepted),
        cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_migration_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
