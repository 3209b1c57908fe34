/* routes.c -- the API: every route, its handler, its authentication and its body limit.
 * This table is the one place that lists the API; docs/openapi.yaml must list the same
 * routes (tests/api/test_openapi.py checks it). */
#include "api.h"
#include "router.h"

#define BODY_NONE 0
#define BODY_DEFAULT (-1)
#define BODY_SMALL 4096

const struct route routes_table[] = {
    {"GET", "/healthz", api_healthz, AUTH_NONE, BODY_NONE, "liveness"},
    {"GET", "/readyz", api_readyz, AUTH_NONE, BODY_NONE, "readiness: PostgreSQL and Redis reachable"},
    {"GET", "/metrics", api_metrics, AUTH_NONE, BODY_NONE, "Prometheus metrics"},

    {"POST", "/api/v1/auth/login", api_login, AUTH_NONE, BODY_SMALL, "log in with phone and password"},
    {"POST", "/api/v1/auth/logout", api_logout, AUTH_SESSION, BODY_SMALL, "revoke the session"},
    {"GET", "/api/v1/me", api_me, AUTH_SESSION, BODY_NONE, "the caller, their unit and roles"},

    {"POST", "/api/v1/units", api_unit_create, AUTH_SESSION, BODY_SMALL, "create a child unit"},
    {"GET", "/api/v1/units", api_unit_list, AUTH_SESSION, BODY_NONE, "list units in scope"},
    {"GET", "/api/v1/units/{id}", api_unit_get, AUTH_SESSION, BODY_NONE, "one unit"},

    {"POST", "/api/v1/people", api_person_create, AUTH_SESSION, BODY_SMALL, "create a person"},
    {"GET", "/api/v1/people", api_person_list, AUTH_SESSION, BODY_NONE, "list people in scope"},
    {"GET", "/api/v1/people/{id}", api_person_get, AUTH_SESSION, BODY_NONE, "one person"},
    {"PATCH", "/api/v1/people/{id}", api_person_update, AUTH_SESSION, BODY_SMALL, "update name, tags, status"},
    {"POST", "/api/v1/people/{id}/roles", api_person_role_grant, AUTH_SESSION, BODY_SMALL, "grant a role"},
    {"DELETE", "/api/v1/people/{id}/roles/{role}/{unit_id}", api_person_role_revoke, AUTH_SESSION, BODY_NONE, "revoke a role"},
};

const size_t routes_count = sizeof routes_table / sizeof routes_table[0];
