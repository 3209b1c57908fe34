/* static.h -- the browser apps (and docs/openapi.yaml), served from memory.
 *
 * static_load reads every file under web.dir into memory at start-up, with its Content-Type,
 * its Cache-Control, a strong ETag (the quoted hex SHA-256 of its bytes) and, for text types,
 * a gzip copy: serving never touches the disk, so it never blocks the event loop. There is no
 * reload: a new build of an app is picked up by a restart.
 *
 * A route serves one app with the pattern "/<name>/{*}" and the handler static_serve: the rest
 * of the URL path is percent-decoded once, checked (static_normalize) and looked up as
 * "<name>/<rest>" in the table, exactly. Nothing else is ever opened, so dot segments, encoded
 * or doubled forms and backslashes can reach no file outside the loaded set; symlinks that
 * leave web.dir are skipped when loading. Adding an app (/console/, /board/) is one line in
 * routes.c plus its build output under web.dir/<name>/. */
#ifndef GP_STATIC_H
#define GP_STATIC_H

#include "common.h"

struct config;
struct req_ctx;
struct static_files;

/* The longest relative path of a served file (and of a looked-up key), in bytes. */
#define STATIC_MAX_PATH 1024

/* Loads cfg->web_dir and cfg->web_openapi_file. An absent web.dir (or openapi file) is not an
 * error: a warning is logged and the apps answer 404 web_app_not_built (/openapi.yaml 404).
 * Returns NULL and writes err when the files exceed web.max_size or web.max_files or one cannot
 * be read: the server then refuses to start. Free with static_free. */
struct static_files *static_load(const struct config *cfg, char *err, size_t errlen) MUSTCHECK;
/* Frees the table. Replies borrow its bytes: call it only after the HTTP server is freed. */
void static_free(struct static_files *sf);

/* Route handler of "/<name>/{*}": the file, the app's index.html for a path without an
 * extension (client-side routes), 404 otherwise; "/<name>" redirects to "/<name>/". */
void static_serve(struct req_ctx *rc);
/* Route handler of /openapi.yaml. */
void static_openapi(struct req_ctx *rc);

/* --- the pieces, exposed for tests/unit/test_static.c --- */

/* What a file of the table looks like to a client. */
struct static_info {
    const char *content_type;
    const char *cache_control;
    const char *etag;    /* quoted */
    const char *etag_gz; /* quoted; NULL when there is no gzip copy */
    size_t len;          /* identity length */
    size_t gz_len;       /* 0 when there is no gzip copy */
};

/* Number of files loaded (0 when web.dir is absent; the openapi file is not counted). */
size_t static_count(const struct static_files *sf);
/* True when web.dir existed at load. */
bool static_present(const struct static_files *sf);
/* Looks a relative path ("app/index.html") up; false when it is not in the table. */
bool static_lookup(const struct static_files *sf, const char *key, struct static_info *out);
/* Percent-decodes the part of a URL path after the mount ("assets/x.js") into out (cap bytes).
 * False when it holds a bad escape, a NUL, a control byte, a backslash, a '%' after decoding
 * (double encoding), an empty segment other than a trailing slash, a "." or ".." segment, or
 * does not fit. */
bool static_normalize(const char *rest, char *out, size_t cap) MUSTCHECK;
/* Content-Type for a file name by its extension; application/octet-stream when unknown. */
const char *static_content_type(const char *name);
/* True for a file in an assets/ directory whose name carries a content hash as Vite writes
 * it ("index-B3xq_9Zk.js", "logo.5f2a9c1e.svg"): it may be cached for a year, immutable. */
bool static_is_hashed(const char *relpath);
/* If-None-Match against a strong ETag, with the weak comparison RFC 9110 §13.1.2 asks for
 * (W/"x" matches "x"); "*" matches. */
bool static_etag_matches(const char *if_none_match, const char *etag);
/* True when an Accept-Encoding header allows gzip (gzip, x-gzip or *, with q > 0). */
bool static_accepts_gzip(const char *accept_encoding);

#endif
