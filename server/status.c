/* status.c -- one table mapping statuses to HTTP codes and machine codes. */
#include "status.h"

#include <string.h>

static const struct {
    int http;
    const char *code;
    const char *sqlstate; /* raised by sql/ functions with USING ERRCODE */
} table[ST__COUNT] = {
    [ST_OK] = {200, "ok", NULL},
    [ST_INVALID] = {400, "invalid_request", "GP400"},
    [ST_UNAUTHORIZED] = {401, "unauthorized", "GP401"},
    [ST_FORBIDDEN] = {403, "forbidden", "GP403"},
    [ST_NOT_FOUND] = {404, "not_found", "GP404"},
    [ST_METHOD_NOT_ALLOWED] = {405, "method_not_allowed", NULL},
    [ST_CONFLICT] = {409, "conflict", "GP409"},
    [ST_TOO_LARGE] = {413, "body_too_large", NULL},
    [ST_UNSUPPORTED_MEDIA] = {415, "unsupported_media_type", NULL},
    [ST_UNPROCESSABLE] = {422, "unprocessable", "GP422"},
    [ST_INSUFFICIENT_POINTS] = {409, "insufficient_points", "GP402"},
    [ST_RATE_LIMITED] = {429, "rate_limited", "GP429"},
    [ST_UNAVAILABLE] = {503, "unavailable", "GP503"},
    [ST_INTERNAL] = {500, "internal", NULL},
    [ST_TIMEOUT] = {408, "request_timeout", NULL},
    [ST_URI_TOO_LONG] = {414, "uri_too_long", NULL},
    [ST_EXPECTATION_FAILED] = {417, "expectation_failed", NULL},
    [ST_HEADERS_TOO_LARGE] = {431, "headers_too_large", NULL},
    [ST_NOT_IMPLEMENTED] = {501, "method_not_implemented", NULL},
};

int status_http(enum status st)
{
    if ((unsigned)st >= ST__COUNT)
        return 500;
    return table[st].http;
}

const char *status_code(enum status st)
{
    if ((unsigned)st >= ST__COUNT)
        return "internal";
    return table[st].code;
}

enum status status_from_sqlstate(const char *sqlstate)
{
    if (!sqlstate)
        return ST_INTERNAL;
    for (unsigned i = 0; i < ST__COUNT; i++) {
        if (table[i].sqlstate && strcmp(table[i].sqlstate, sqlstate) == 0)
            return (enum status)i;
    }
    return ST_INTERNAL;
}
