/* status.h -- the one status family of the service and its mapping to HTTP.
 *
 * Every fallible function returns an enum status; the HTTP layer alone turns it into a
 * status line and an error body (SPEC §5). */
#ifndef GP_STATUS_H
#define GP_STATUS_H

enum status {
    ST_OK = 0,
    ST_INVALID,             /* 400: malformed or semantically wrong input */
    ST_UNAUTHORIZED,        /* 401: no or bad credentials */
    ST_FORBIDDEN,           /* 403: authenticated but the role does not allow it */
    ST_NOT_FOUND,           /* 404: absent, or outside the caller's scope */
    ST_METHOD_NOT_ALLOWED,  /* 405 */
    ST_CONFLICT,            /* 409: state conflict, duplicate, request in flight */
    ST_TOO_LARGE,           /* 413: body over the route's limit */
    ST_UNSUPPORTED_MEDIA,   /* 415: body is not application/json */
    ST_UNPROCESSABLE,       /* 422: idempotency key reused with another body */
    ST_INSUFFICIENT_POINTS, /* 409: a balance or budget cannot cover the amount */
    ST_RATE_LIMITED,        /* 429: with Retry-After */
    ST_UNAVAILABLE,         /* 503: a dependency is down or saturated, with Retry-After */
    ST_INTERNAL,            /* 500: a bug or an unexpected dependency answer */
    /* HTTP framing, answered by the connection guard (http_guard.h) */
    ST_TIMEOUT,            /* 408: request head or body not received in time */
    ST_URI_TOO_LONG,       /* 414 */
    ST_EXPECTATION_FAILED, /* 417: an Expect other than 100-continue */
    ST_HEADERS_TOO_LARGE,  /* 431 */
    ST_NOT_IMPLEMENTED,    /* 501: an unknown request method */
    ST__COUNT
};

/* HTTP status code for a status (ST_OK -> 200). */
int status_http(enum status st);
/* Stable machine-readable default code, e.g. "not_found". Never NULL. */
const char *status_code(enum status st);
/* Inverse of the GPxxx SQLSTATE family raised by our SQL functions ("GP404" -> ST_NOT_FOUND);
 * ST_INTERNAL when the state is not ours. */
enum status status_from_sqlstate(const char *sqlstate);

#endif
