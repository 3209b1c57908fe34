/* router.c -- segment-by-segment matching of a path against route patterns. Linear over the
 * table: with ~60 routes this costs less than parsing the request line. */
#include "router.h"
#include "config.h"

#include <stdio.h>
#include <string.h>

static bool param_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

/* Matches one pattern; params are captured only on success. Every request tries most of the
 * table (twice: the guard's body limit, then dispatch), so tmp is not zeroed: each value is
 * NUL-terminated as it is written, and only the first tmp.n are ever read. */
static bool match(const char *pat, const char *path, struct router_params *params)
{
    struct router_params tmp;
    tmp.n = 0;
    while (*pat && *path) {
        if (*pat != '/' || *path != '/')
            return false;
        pat++, path++;
        if (!strcmp(pat, "{*}")) {
            *params = tmp;
            return true;
        }
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            if (!close || tmp.n == ROUTER_MAX_PARAMS)
                return false;
            size_t n = 0;
            while (path[n] && path[n] != '/') {
                if (!param_char(path[n]) || n == ROUTER_MAX_PARAM_LEN)
                    return false;
                n++;
            }
            if (n == 0 || (n == 1 && path[0] == '.') || (n == 2 && !strncmp(path, "..", 2)))
                return false;
            memcpy(tmp.values[tmp.n], path, n);
            tmp.values[tmp.n][n] = '\0';
            tmp.n++;
            pat = close + 1;
            path += n;
        } else {
            while (*pat && *pat != '/') {
                if (*pat != *path)
                    return false;
                pat++, path++;
            }
            if (*path && *path != '/')
                return false;
        }
    }
    /* "/app" for "/app/{*}": its handler redirects to "/app/". */
    if (!*path && !strcmp(pat, "/{*}")) {
        *params = tmp;
        return true;
    }
    if (*pat || *path)
        return false;
    *params = tmp;
    return true;
}

size_t router_body_limit(const struct route *route, const struct config *cfg)
{
    if (route->body.max_of)
        return (size_t)route->body.max_of(cfg);
    return route->body.max < 0 ? (size_t)cfg->max_body_size : (size_t)route->body.max;
}

enum router_result router_match(const struct route *routes, size_t nroutes, const char *method,
                                const char *path, const struct route **out,
                                struct router_params *params, char *allow, size_t allowlen)
{
    bool path_known = false;
    if (allow && allowlen)
        allow[0] = '\0';
    /* The routes of this method first (the first match in table order, as below); the rest
     * only to tell 405 from 404. */
    for (size_t i = 0; i < nroutes; i++) {
        if (strcmp(routes[i].method, method) == 0 && match(routes[i].pattern, path, params)) {
            *out = &routes[i];
            return ROUTER_MATCH;
        }
    }
    for (size_t i = 0; i < nroutes; i++) {
        struct router_params p;
        if (!match(routes[i].pattern, path, &p))
            continue;
        path_known = true;
        if (allow && !strstr(allow, routes[i].method)) {
            size_t len = strlen(allow);
            snprintf(allow + len, allowlen - len, "%s%s", len ? ", " : "", routes[i].method);
        }
    }
    return path_known ? ROUTER_METHOD_NOT_ALLOWED : ROUTER_NOT_FOUND;
}
