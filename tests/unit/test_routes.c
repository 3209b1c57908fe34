/* test_routes.c -- the guards named by the route table (routes.c): which routes each scheme
 * protects, and the shape the HTTP core relies on (a name and a check for every guard; only
 * the /metrics guard runs before the body). The API tests (tests/api/test_route_guards.py)
 * check what the guards answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api.h"
#include "api_exchange.h"
#include "auth.h"
#include "merchant_auth.h"
#include "router.h"

#include <stdio.h>
#include <string.h>

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The guard each route must have, from its path alone: the rule routes.c follows. */
static const struct route_guard *expected_guard(const struct route *r)
{
    if (starts_with(r->pattern, "/merchant/v1/"))
        return &merchant_auth_guard;
    if (starts_with(r->pattern, "/exchange/v1/"))
        return &exchange_partner_guard; /* partner schemes, signed (docs/EXCHANGE.md) */
    if (!strcmp(r->pattern, "/audit/v1/transactions/{id}/proof"))
        return &auth_guard_session; /* a worker may ask about their own transaction */
    if (starts_with(r->pattern, "/audit/v1/"))
        return &auth_guard_auditor;
    if (!strcmp(r->pattern, "/metrics"))
        return &api_guard_metrics;
    if (!strcmp(r->pattern, "/api/v1/auth/login") || starts_with(r->pattern, "/api/v1/public/"))
        return NULL;
    /* WeChat login and binding: credentials in the body, like the password login */
    if (!strcmp(r->pattern, "/api/v1/auth/wechat") ||
        !strcmp(r->pattern, "/api/v1/auth/wechat/bind"))
        return NULL;
    if (starts_with(r->pattern, "/api/v1/"))
        return &auth_guard_session;
    return NULL; /* /healthz, /readyz, /.well-known/... */
}

static void test_every_route_has_its_guard(void **state)
{
    (void)state;
    assert_true(routes_count > 50);
    size_t merchant = 0, auditor = 0, open = 0;
    for (size_t i = 0; i < routes_count; i++) {
        const struct route *r = &routes_table[i];
        const struct route_guard *want = expected_guard(r);
        if (r->guard != want)
            fail_msg("%s %s: guard %s, want %s", r->method, r->pattern,
                     r->guard ? r->guard->name : "none", want ? want->name : "none");
        merchant += r->guard == &merchant_auth_guard;
        auditor += r->guard == &auth_guard_auditor;
        open += r->guard == NULL;
    }
    assert_true(merchant >= 10 && auditor >= 10 && open >= 5);
}

static void test_guard_shapes(void **state)
{
    (void)state;
    const struct route_guard *all[] = {&auth_guard_session, &auth_guard_auditor,
                                       &merchant_auth_guard, &api_guard_metrics,
                                       &exchange_partner_guard};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        assert_non_null(all[i]->name);
        assert_non_null(all[i]->check);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(all[i]->name, all[j]->name);
    }
    /* Signatures cover the body and session routes refuse a bad body first: both run after
     * it. Only /metrics refuses before reading anything. */
    assert_false(auth_guard_session.before_body);
    assert_false(auth_guard_auditor.before_body);
    assert_false(merchant_auth_guard.before_body);
    assert_false(exchange_partner_guard.before_body);
    assert_true(api_guard_metrics.before_body);
}

/* A path the pattern matches: each {name} as "7", a trailing {*} as "a/b" (or nothing, and
 * then without the slash: "/app" matches "/app/{*}"). */
static void example_path(const char *pattern, bool bare_wildcard, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = pattern; *p && n + 8 < cap;) {
        if (!strcmp(p, "/{*}")) {
            if (!bare_wildcard)
                n += (size_t)snprintf(out + n, cap - n, "/a/b");
            break;
        }
        if (*p == '{') {
            out[n++] = '7';
            p = strchr(p, '}') + 1;
            continue;
        }
        out[n++] = *p++;
    }
    out[n] = '\0';
}

/* The router's prefilter (each route's literal prefix) rules out no route that matches: a
 * path made from every route's pattern reaches that route, or an earlier one of the same
 * method that matches it too (the first match in table order wins); another method on it is
 * a 405 that names the route's method. */
static void test_every_route_is_reached(void **state)
{
    for (size_t i = 0; i < routes_count; i++) {
        const struct route *want = &routes_table[i];
        for (int bare = 0; bare <= 1; bare++) {
            if (bare && !strstr(want->pattern, "{*}"))
                continue;
            char path[512], allow[128];
            example_path(want->pattern, bare, path, sizeof path);
            const struct route *got = NULL;
            struct router_params p;
            enum router_result r = router_match(routes_table, routes_count, want->method, path,
                                                &got, &p, allow, sizeof allow);
            if (r != ROUTER_MATCH || got > want || strcmp(got->method, want->method) != 0)
                fail_msg("%s %s (route %s): result %d, route %s", want->method, path, want->pattern,
                         (int)r, got ? got->pattern : "-");
            r = router_match(routes_table, routes_count, "TRACE", path, &got, &p, allow,
                             sizeof allow);
            if (r != ROUTER_METHOD_NOT_ALLOWED || !strstr(allow, want->method))
                fail_msg("TRACE %s: result %d, allow \"%s\"", path, (int)r, allow);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_has_its_guard),
        cmocka_unit_test(test_guard_shapes),
        cmocka_unit_test(test_every_route_is_reached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
