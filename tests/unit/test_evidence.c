/* test_evidence.c -- cmocka tests of evidence.c's upload rules (type by content, declared
 * type, hash) and of the directory store (evidence_store.c) on a real temporary directory:
 * put / get / remove, idempotence, racing identical puts, crash leftovers; and the body limit
 * the route table gives the upload route. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "crypto.h"
#include "evidence.h"
#include "evidence_store.h"
#include "router.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- the rules ---- */

static void test_sniff(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *want;
    } cases[] = {
        {"\xff\xd8\xff\xe0\x00\x10JFIF", 10, EVIDENCE_JPEG},
        {"\xff\xd8\xff", 3, EVIDENCE_JPEG},
        {"\xff\xd8", 2, NULL},
        {"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, EVIDENCE_PNG},
        {"\x89PNG\r\n\x1a", 7, NULL},
        {"\x89PNG\n\n\x1a\n", 8, NULL},
        {"RIFF\x24\0\0\0WEBPVP8 ", 16, EVIDENCE_WEBP},
        {"RIFF\x24\0\0\0WAVEfmt ", 16, NULL},
        {"RIFF\x24\0\0\0WEB", 11, NULL},
        {"GIF89a", 6, NULL},
        {"<svg xmlns=", 11, NULL},
        {"", 0, NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const char *got = evidence_sniff(cases[i].bytes, cases[i].len);
        if (cases[i].want == NULL ? got != NULL : (got == NULL || strcmp(got, cases[i].want)))
            fail_msg("case %zu: got %s want %s", i, got ? got : "NULL",
                     cases[i].want ? cases[i].want : "NULL");
    }
}

static void test_declared_type(void **state)
{
    static const struct {
        const char *ct, *want;
    } cases[] = {
        {"image/jpeg", EVIDENCE_JPEG},
        {"IMAGE/PNG", EVIDENCE_PNG},
        {" image/webp", EVIDENCE_WEBP},
        {"image/png; charset=binary", EVIDENCE_PNG},
        {"image/png ; x=1", EVIDENCE_PNG},
        {"image/pngx", NULL},
        {"image/png x", NULL},
        {"image/jpg", NULL},
        {"image/gif", NULL},
        {"application/octet-stream", NULL},
        {"", NULL},
        {NULL, NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const char *got = evidence_declared_type(cases[i].ct);
        if (cases[i].want == NULL ? got != NULL : (got == NULL || strcmp(got, cases[i].want)))
            fail_msg("case %zu (%s): got %s", i, cases[i].ct ? cases[i].ct : "NULL",
                     got ? got : "NULL");
    }
}

static void test_hash_parse(void **state)
{
    char out[65];
    const char *lower = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_true(evidence_hash_parse(lower, out));
    assert_string_equal(out, lower);
    assert_true(evidence_hash_parse(
        "0123456789ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef", out));
    assert_string_equal(out, lower);
    assert_false(evidence_hash_parse("0123456789abcdef", out));
    assert_false(evidence_hash_parse(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", out));
    assert_false(evidence_hash_parse(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0", out));
    assert_false(evidence_hash_parse(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg", out));
    assert_false(evidence_hash_parse(
        "../3456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", out));
    assert_false(evidence_hash_parse("", out));
}

/* ---- the directory store ---- */

struct tmpdir {
    char path[64];
};

static void rm_rf(const char *path)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static int setup_dir(void **state)
{
    struct tmpdir *t = calloc(1, sizeof *t);
    snprintf(t->path, sizeof t->path, "/tmp/gp-test-evidence-XXXXXX");
    if (!mkdtemp(t->path))
        return -1;
    *state = t;
    return 0;
}

static int teardown_dir(void **state)
{
    struct tmpdir *t = *state;
    rm_rf(t->path);
    free(t);
    return 0;
}

static void hex_of(const void *data, size_t len, char out[65])
{
    unsigned char d[32];
    crypto_sha256(data, len, d);
    crypto_hex(d, 32, out);
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void test_store_roundtrip(void **state)
{
    struct tmpdir *t = *state;
    char root[PATH_MAX], err[256], hash[65], path[PATH_MAX + 100];
    snprintf(root, sizeof root, "%s/a/b/evidence/", t->path); /* parents and a trailing slash */
    struct evidence_store *es = evidence_store_dir_new(root, err, sizeof err);
    assert_non_null(es);
    const char data[] = "\xff\xd8\xff some photo bytes";
    hex_of(data, sizeof data, hash);

    void *got = NULL;
    size_t len = 0;
    assert_int_equal(evidence_store_get(es, hash, 1 << 20, &got, &len, err, sizeof err),
                     ST_NOT_FOUND);
    assert_int_equal(evidence_store_put(es, hash, data, sizeof data, err, sizeof err), ST_OK);
    snprintf(path, sizeof path, "%s/a/b/evidence/%.2s/%s", t->path, hash, hash);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, sizeof data);
    /* idempotent: the second put leaves the file as it is */
    assert_int_equal(evidence_store_put(es, hash, data, sizeof data, err, sizeof err), ST_OK);
    assert_int_equal(evidence_store_get(es, hash, 1 << 20, &got, &len, err, sizeof err), ST_OK);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(got, data, sizeof data);
    free(got);
    /* a reader's limit below the size */
    assert_int_equal(evidence_store_get(es, hash, 4, &got, &len, err, sizeof err), ST_TOO_LARGE);
    assert_null(got);
    /* nothing left behind in tmp */
    snprintf(path, sizeof path, "%s/a/b/evidence/tmp", t->path);
    assert_int_equal(count_entries(path), 0);

    assert_int_equal(evidence_store_remove(es, hash, err, sizeof err), ST_OK);
    assert_int_equal(evidence_store_get(es, hash, 1 << 20, &got, &len, err, sizeof err),
                     ST_NOT_FOUND);
    /* removing again is fine (a retried sweep) */
    assert_int_equal(evidence_store_remove(es, hash, err, sizeof err), ST_OK);

    /* names that are not hashes never reach the file system */
    assert_int_equal(evidence_store_put(es, "../../etc/passwd", data, 4, err, sizeof err),
                     ST_INVALID);
    assert_int_equal(
        evidence_store_get(es, "../../etc/passwd", 1 << 20, &got, &len, err, sizeof err),
        ST_NOT_FOUND);
    char upper[65];
    snprintf(upper, sizeof upper, "%s", hash);
    upper[0] = 'A';
    assert_int_equal(evidence_store_put(es, upper, data, 4, err, sizeof err), ST_INVALID);
    evidence_store_free(es);
}

/* A file of another size under the hash (a torn copy someone made by hand) is replaced. */
static void test_store_replaces_wrong_size(void **state)
{
    struct tmpdir *t = *state;
    char err[256], hash[65], path[PATH_MAX + 100];
    struct evidence_store *es = evidence_store_dir_new(t->path, err, sizeof err);
    assert_non_null(es);
    const char data[] = "\x89PNG\r\n\x1a\n the whole photo";
    hex_of(data, sizeof data, hash);
    snprintf(path, sizeof path, "%s/%.2s", t->path, hash);
    assert_int_equal(mkdir(path, 0750), 0);
    snprintf(path, sizeof path, "%s/%.2s/%s", t->path, hash, hash);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("torn", f);
    fclose(f);
    assert_int_equal(evidence_store_put(es, hash, data, sizeof data, err, sizeof err), ST_OK);
    void *got;
    size_t len;
    assert_int_equal(evidence_store_get(es, hash, 1 << 20, &got, &len, err, sizeof err), ST_OK);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(got, data, sizeof data);
    free(got);
    evidence_store_free(es);
}

struct racer {
    struct evidence_store *es;
    const char *hash;
    const char *data;
    size_t len;
    enum status st;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char err[256];
    r->st = evidence_store_put(r->es, r->hash, r->data, r->len, err, sizeof err);
    return NULL;
}

static void test_store_racing_puts(void **state)
{
    struct tmpdir *t = *state;
    char err[256], hash[65], path[PATH_MAX + 100];
    struct evidence_store *es = evidence_store_dir_new(t->path, err, sizeof err);
    assert_non_null(es);
    size_t len = 256 * 1024;
    char *data = malloc(len);
    assert_true(crypto_random(data, len));
    hex_of(data, len, hash);
    pthread_t th[8];
    struct racer r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (struct racer){es, hash, data, len, ST_INTERNAL};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].st, ST_OK);
    }
    snprintf(path, sizeof path, "%s/%.2s", t->path, hash);
    assert_int_equal(count_entries(path), 1);
    snprintf(path, sizeof path, "%s/tmp", t->path);
    assert_int_equal(count_entries(path), 0);
    void *got;
    size_t n;
    assert_int_equal(evidence_store_get(es, hash, len, &got, &n, err, sizeof err), ST_OK);
    assert_int_equal(n, len);
    assert_memory_equal(got, data, len);
    free(got);
    free(data);
    evidence_store_free(es);
}

/* Temporary files a crash left behind are removed at start-up once they are old; a recent one
 * (an upload of another instance sharing the directory) stays. */
static void test_store_stale_tmp(void **state)
{
    struct tmpdir *t = *state;
    char err[256], path[PATH_MAX + 100];
    struct evidence_store *es = evidence_store_dir_new(t->path, err, sizeof err);
    assert_non_null(es);
    evidence_store_free(es);
    snprintf(path, sizeof path, "%s/tmp/old.ABCDEF", t->path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    struct timeval old[2] = {{1000000000, 0}, {1000000000, 0}};
    assert_int_equal(utimes(path, old), 0);
    snprintf(path, sizeof path, "%s/tmp/new.ABCDEF", t->path);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    es = evidence_store_dir_new(t->path, err, sizeof err);
    assert_non_null(es);
    snprintf(path, sizeof path, "%s/tmp", t->path);
    assert_int_equal(count_entries(path), 1);
    snprintf(path, sizeof path, "%s/tmp/new.ABCDEF", t->path);
    assert_int_equal(access(path, F_OK), 0);
    evidence_store_free(es);
}

static void test_store_refuses_bad_dir(void **state)
{
    struct tmpdir *t = *state;
    char err[256], path[PATH_MAX + 100];
    assert_null(evidence_store_dir_new("", err, sizeof err));
    snprintf(path, sizeof path, "%s/file", t->path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    /* a file where the directory should be, and a directory below a file */
    assert_null(evidence_store_dir_new(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    snprintf(path, sizeof path, "%s/file/sub", t->path);
    assert_null(evidence_store_dir_new(path, err, sizeof err));
}

/* ---- the route's body ---- */

static void test_upload_body_limit(void **state)
{
    struct config cfg;
    char err[256];
    assert_true(config_load(&cfg, NULL, err, sizeof err));
    const struct route *put = NULL, *get = NULL, *login = NULL;
    struct router_params p;
    char allow[64];
    const char *path = "/api/v1/evidence/"
                       "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_int_equal(
        router_match(routes_table, routes_count, "PUT", path, &put, &p, allow, sizeof allow),
        ROUTER_MATCH);
    assert_int_equal(
        router_match(routes_table, routes_count, "GET", path, &get, &p, allow, sizeof allow),
        ROUTER_MATCH);
    assert_int_equal(router_match(routes_table, routes_count, "POST", "/api/v1/auth/login", &login,
                                  &p, allow, sizeof allow),
                     ROUTER_MATCH);
    assert_int_equal(put->body.kind, ROUTE_BODY_RAW);
    assert_int_equal(router_body_limit(put, &cfg), 8 * 1024 * 1024);
    cfg.evidence_max_size = 12345;
    assert_int_equal(router_body_limit(put, &cfg), 12345);
    assert_int_equal(get->body.kind, ROUTE_BODY_JSON);
    assert_int_equal(router_body_limit(get, &cfg), 0);
    assert_int_equal(login->body.kind, ROUTE_BODY_JSON);
    assert_int_equal(router_body_limit(login, &cfg), 4096);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_declared_type),
        cmocka_unit_test(test_hash_parse),
        cmocka_unit_test_setup_teardown(test_store_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_store_replaces_wrong_size, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_store_racing_puts, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_store_stale_tmp, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_store_refuses_bad_dir, setup_dir, teardown_dir),
        cmocka_unit_test(test_upload_body_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
