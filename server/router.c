/* router.c -- segment-by-segment matching of a path against route patterns. Linear over the
 * table, with a prefilter on each route's literal prefix (see prefilter_build). */
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

/* A prefilter over the table, built at the first match against it: a route can match only a
 * path that starts with its literal prefix (the pattern up to its first parameter; for a
 * wildcard, up to the slash before it, since "/app" matches "/app/{*}"). Comparing one byte of
 * that prefix, then the prefix, rules out almost every route in a few instructions; match()
 * runs on the few left. One table is cached (the server has one; a different table rebuilds
 * it); routes beyond PREFILTER_MAX are not filtered. The event loop is the only caller. */
#define PREFILTER_MAX 1024
static struct {
    const struct route *table;
    size_t n;
    unsigned short llen[PREFILTER_MAX]; /* literal prefix length */
    unsigned short at[PREFILTER_MAX];   /* the byte compared first: likely to differ */
} pf;

static void prefilter_build(const struct route *routes, size_t nroutes)
{
    pf.table = routes;
    pf.n = nroutes;
    for (size_t i = 0; i < nroutes && i < PREFILTER_MAX; i++) {
        const char *pat = routes[i].pattern;
        const char *brace = strchr(pat, '{');
        size_t l = brace ? (size_t)(brace - pat) : strlen(pat);
        if (brace && !strcmp(brace, "{*}") && l > 0)
            l--; /* "/app/{*}" also matches "/app" */
        if (l > 0xffff)
            l = 0; /* never: no prefilter for this route */
        pf.llen[i] = (unsigned short)l;
        /* "/api/v1/" is common to most: the byte after it tells them apart */
        pf.at[i] = (unsigned short)(l > 8 ? 8 : l > 0 ? l - 1 : 0);
    }
}

static inline bool may_match(const struct route *r, size_t i, const char *path, size_t plen)
{
    if (i >= PREFILTER_MAX)
        return true;
    size_t l = pf.llen[i];
    if (l == 0)
        return true;
    return plen >= l && path[pf.at[i]] == r->pattern[pf.at[i]] && memcmp(path, r->pattern, l) == 0;
}

enum router_result router_match(const struct route *routes, size_t nroutes, const char *method,
                                const char *path, const struct route **out,
                                struct router_params *params, char *allow, size_t allowlen)
{
    bool path_known = false;
    if (allow && allowlen)
        allow[0] = '\0';
    if (pf.table != routes || pf.n != nroutes)
        prefilter_build(routes, nroutes);
    size_t plen = strlen(path);
    /* The routes of this method first (the first match in table order, as below); the rest
     * only to tell 405 from 404. */
    for (size_t i = 0; i < nroutes; i++) {
        const struct route *r = &routes[i];
        if (r->method[0] == method[0] && may_match(r, i, path, plen) &&
            strcmp(r->method, method) == 0 && match(r->pattern, path, params)) {
            *out = r;
            return ROUTER_MATCH;
        }
    }
    for (size_t i = 0; i < nroutes; i++) {
        struct router_params p;
        if (!may_match(&routes[i], i, path, plen) || !match(routes[i].pattern, path, &p))
            continue;
        path_known = true;
        if (allow && !strstr(allow, routes[i].method)) {
            size_t len = strlen(allow);
            snprintf(allow + len, allowlen - len, "%s%s", len ? ", " : "", routes[i].method);
        }
    }
    return path_known ? ROUTER_METHOD_NOT_ALLOWED : ROUTER_NOT_FOUND;
}
