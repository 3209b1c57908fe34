/* static.c -- the browser apps served from memory (see static.h for the design).
 *
 * Owns: the table of loaded files (sorted by relative path, searched with bsearch), each with
 * its bytes, its gzip copy, its headers and its ETag. Loaded once in main() before the HTTP
 * server starts, freed after it: replies borrow the bytes without copying them. */
#include "static.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "http.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <event2/http.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Content-Security-Policy of every file served here (it matters for HTML, SVG and the service
 * worker script). Vite's production build has no inline script or style element and Vue sets
 * style bindings through the CSSOM (el.style), which CSP does not govern, so neither script nor
 * style needs 'unsafe-inline'. img-src: data: for the small images Vite inlines and QR codes
 * drawn as data URLs, blob: for photo previews before upload. font-src: data: for fonts Vite
 * inlines (icon fonts must be bundled: a CDN font is refused, and would not work offline). */
#define STATIC_CSP                                                                                 \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "        \
    "font-src 'self' data:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "          \
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"

#define CACHE_IMMUTABLE "public, max-age=31536000, immutable"
/* Revalidate every time (a 304 costs one round trip): entry HTML, service worker, manifest
 * and every file whose name does not change with its content. */
#define CACHE_REVALIDATE "no-cache"

struct static_file {
    char *path; /* relative to web.dir, '/'-separated: "app/assets/index-B3xq.js" */
    unsigned char *data;
    size_t len;
    unsigned char *gz; /* gzip copy, NULL when not worth it */
    size_t gz_len;
    const char *content_type;
    const char *cache_control;
    char etag[67];    /* "\"" 64 hex "\"" */
    char etag_gz[70]; /* the gzip copy is another representation: its own strong ETag */
};

struct static_files {
    bool present; /* web.dir existed */
    struct static_file *files;
    size_t n;
    size_t total;               /* bytes of all files (identity) */
    struct static_file openapi; /* data NULL when absent */
};

/* ---------------------------------------------------------------------------------------- */
/* Types and caching                                                                         */
/* ---------------------------------------------------------------------------------------- */

static const struct {
    const char *ext;
    const char *type;
    bool compress; /* text: worth a gzip copy */
} types[] = {
    {"css", "text/css; charset=utf-8", true},
    {"html", "text/html; charset=utf-8", true},
    {"ico", "image/x-icon", true},
    {"jpeg", "image/jpeg", false},
    {"jpg", "image/jpeg", false},
    {"js", "text/javascript; charset=utf-8", true},
    {"json", "application/json", true},
    {"map", "application/json", true},
    {"mjs", "text/javascript; charset=utf-8", true},
    {"png", "image/png", false},
    {"svg", "image/svg+xml", true},
    {"txt", "text/plain; charset=utf-8", true},
    {"webmanifest", "application/manifest+json", true},
    {"webp", "image/webp", false},
    {"woff2", "font/woff2", false},
    {"yaml", "application/yaml", true},
    {"yml", "application/yaml", true},
};

static int type_index(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash + 1 : name, '.');
    if (!dot)
        return -1;
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (!strcasecmp(dot + 1, types[i].ext))
            return (int)i;
    return -1;
}

const char *static_content_type(const char *name)
{
    int i = type_index(name);
    return i < 0 ? "application/octet-stream" : types[i].type;
}

static bool hash_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Vite names emitted assets "[name]-[hash].[ext]" (Rollup's hash: 8 or more base64url
 * characters, which may themselves hold '-'); older setups write "[name].[hash].[ext]". So: some
 * '.' in the name ends a stem whose last k >= 8 characters are hash characters right after a
 * '-' or '.', and hold a digit or a capital letter (so that "vendor-components.js" is not
 * taken for hashed: a false "immutable" would pin a changed file for a year, a miss only costs
 * a revalidation). A plain "logo.svg" or "index-legacy.js" is not hashed. */
bool static_is_hashed(const char *relpath)
{
    const char *name = strrchr(relpath, '/');
    if (!name)
        return false;
    /* Only the assets/ directory of an app: its files are what the build hashes. */
    size_t dirlen = (size_t)(name - relpath);
    if (!(dirlen >= 6 && !strncmp(name - 6, "assets", 6) && (dirlen == 6 || name[-7] == '/')))
        return false;
    name++;
    for (const char *dot = strchr(name, '.'); dot; dot = strchr(dot + 1, '.')) {
        size_t stem = (size_t)(dot - name);
        bool mixed = false; /* a digit or a capital: "-components" is a word, not a hash */
        for (size_t k = 1; k + 1 <= stem && k <= 32; k++) {
            char c = name[stem - k];
            if (!hash_char(c))
                break;
            mixed = mixed || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
            char sep = name[stem - k - 1];
            if (k >= 8 && mixed && (sep == '-' || sep == '.'))
                return true;
        }
    }
    return false;
}

/* ---------------------------------------------------------------------------------------- */
/* Request helpers                                                                           */
/* ---------------------------------------------------------------------------------------- */

bool static_normalize(const char *rest, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = rest; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '%') {
            int hi = crypto_hexval(p[1]), lo = hi < 0 ? -1 : crypto_hexval(p[2]);
            if (lo < 0)
                return false;
            c = (unsigned char)(hi * 16 + lo);
            p += 2;
            /* "%252e" decodes to "%2e": a second decoding anywhere else would make it "."; no
             * file name of ours holds '%', so refuse the form outright. */
            if (c == '%')
                return false;
        }
        if (c < 0x20 || c == 0x7f || c == '\\')
            return false;
        if (n + 1 >= cap)
            return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    /* Segment checks on the decoded text, so that %2e%2e and %2f count like ".." and "/". */
    const char *seg = out;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0 && end) /* "//" or a leading "/"; a trailing "/" is a client route */
            return false;
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        if (!end)
            break;
        seg = end + 1;
    }
    return true;
}

/* The next comma-separated element of a header list: *p advances past it; the element, its
 * surrounding blanks removed, is [*start, *start + *len). False at the end of the list. */
static bool next_element(const char **p, const char **start, size_t *len)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t' || *s == ',')
        s++;
    if (!*s)
        return false;
    const char *e = strchr(s, ',');
    if (!e)
        e = s + strlen(s);
    *p = e;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *start = s;
    *len = (size_t)(e - s);
    return true;
}

bool static_etag_matches(const char *if_none_match, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = if_none_match, *s;
    size_t len;
    while (next_element(&p, &s, &len)) {
        if (len == 1 && s[0] == '*')
            return true;
        if (len > 2 && s[0] == 'W' && s[1] == '/')
            s += 2, len -= 2;
        if (len == elen && !memcmp(s, etag, len))
            return true;
    }
    return false;
}

/* q=0, 0., 0.0, 0.00, 0.000 (RFC 9110 §12.4.2): the coding is refused. */
static bool q_is_zero(const char *params, size_t len)
{
    const char *q = NULL;
    for (size_t i = 0; i + 1 < len; i++)
        if (params[i] == ';') {
            size_t j = i + 1;
            while (j < len && (params[j] == ' ' || params[j] == '\t'))
                j++;
            if (j + 1 < len && (params[j] == 'q' || params[j] == 'Q') && params[j + 1] == '=')
                q = params + j + 2;
        }
    if (!q)
        return false;
    const char *end = params + len;
    if (q >= end || *q != '0')
        return false;
    for (q++; q < end && (*q == '.' || *q == '0'); q++)
        ;
    return q == end || *q == ' ' || *q == '\t' || *q == ';';
}

bool static_accepts_gzip(const char *accept_encoding)
{
    if (!accept_encoding)
        return false;
    const char *p = accept_encoding, *s;
    size_t len;
    bool gzip = false, gzip_seen = false, star = false;
    while (next_element(&p, &s, &len)) {
        size_t name = 0;
        while (name < len && s[name] != ';' && s[name] != ' ' && s[name] != '\t')
            name++;
        bool ok = !q_is_zero(s + name, len - name);
        if ((name == 4 && !strncasecmp(s, "gzip", 4)) ||
            (name == 6 && !strncasecmp(s, "x-gzip", 6)))
            gzip = gzip_seen ? gzip && ok : ok, gzip_seen = true;
        else if (name == 1 && s[0] == '*')
            star = ok;
    }
    return gzip_seen ? gzip : star;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading                                                                                   */
/* ---------------------------------------------------------------------------------------- */

struct loader {
    const struct config *cfg;
    char root[PATH_MAX]; /* realpath of web.dir */
    struct static_files *sf;
    size_t cap;
    char *err;
    size_t errlen;
};

/* Reads a regular file fully; false with errno set. O_NOFOLLOW and the fstat check make sure
 * it is the regular file we looked at (never a FIFO that would block, never a swapped link). */
static bool read_file(const char *path, size_t max, unsigned char **data, size_t *len,
                      bool *too_large)
{
    *too_large = false;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return false;
    }
    if ((unsigned long long)st.st_size > max) {
        close(fd);
        *too_large = true;
        return false;
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = xmalloc(size ? size : 1);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO; /* shorter than its size: it changed under us */
            free(buf);
            close(fd);
            errno = e;
            return false;
        }
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *len = size;
    return true;
}

static void gzip_copy(struct static_file *f)
{
    int ti = type_index(f->path);
    if (ti < 0 || !types[ti].compress || f->len < 256)
        return;
    z_stream z = {0};
    /* windowBits 15 + 16: a gzip wrapper, which every browser takes as Content-Encoding: gzip */
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return;
    uLong bound = deflateBound(&z, (uLong)f->len);
    unsigned char *out = xmalloc(bound);
    z.next_in = f->data;
    z.avail_in = (uInt)f->len;
    z.next_out = out;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    size_t n = z.total_out;
    deflateEnd(&z);
    /* Keep it only when it saves at least an eighth: otherwise the identity bytes are as good
     * and the client is spared the inflating. */
    if (rc != Z_STREAM_END || n > f->len - f->len / 8) {
        free(out);
        return;
    }
    f->gz = xrealloc(out, n);
    f->gz_len = n;
}

/* Type, cache policy, ETags and gzip copy of a file whose path and bytes are set. */
static void finish_file(struct static_file *f)
{
    f->content_type = static_content_type(f->path);
    f->cache_control = static_is_hashed(f->path) ? CACHE_IMMUTABLE : CACHE_REVALIDATE;
    unsigned char d[32];
    char hex[65];
    crypto_sha256(f->data, f->len, d);
    crypto_hex(d, sizeof d, hex);
    snprintf(f->etag, sizeof f->etag, "\"%s\"", hex);
    gzip_copy(f);
    if (f->gz)
        snprintf(f->etag_gz, sizeof f->etag_gz, "\"%s-gz\"", hex);
}

static bool add_file(struct loader *ld, const char *rel, const char *path)
{
    struct static_files *sf = ld->sf;
    if (sf->n >= (size_t)ld->cfg->web_max_files) {
        snprintf(ld->err, ld->errlen, "web.dir %s holds more than web.max_files (%d) files",
                 ld->cfg->web_dir, ld->cfg->web_max_files);
        return false;
    }
    size_t left = (size_t)ld->cfg->web_max_size - sf->total;
    unsigned char *data;
    size_t len;
    bool too_large;
    if (!read_file(path, left, &data, &len, &too_large)) {
        if (too_large)
            snprintf(ld->err, ld->errlen,
                     "web.dir %s holds more than web.max_size (%d bytes): reached at %s",
                     ld->cfg->web_dir, ld->cfg->web_max_size, rel);
        else
            snprintf(ld->err, ld->errlen, "cannot read %s/%s: %s", ld->cfg->web_dir, rel,
                     strerror(errno));
        return false;
    }
    if (sf->n == ld->cap) {
        ld->cap = ld->cap ? 2 * ld->cap : 64;
        sf->files = xrealloc(sf->files, ld->cap * sizeof *sf->files);
    }
    struct static_file *f = &sf->files[sf->n++];
    memset(f, 0, sizeof *f);
    f->path = xstrdup(rel);
    f->data = data;
    f->len = len;
    sf->total += len;
    return true;
}

/* A name we can serve: no control byte and no backslash (static_normalize refuses both, so
 * such a file could never be asked for), not hidden ("." and ".." among them). */
static bool servable_name(const char *name)
{
    if (name[0] == '.')
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\' || *p == '%')
            return false;
    return true;
}

/* Walks web.dir/<rel> depth first. Directories are entered only when they are real
 * directories (lstat): a symlinked directory could loop or lead anywhere. A symlinked file is
 * served only when its target resolves inside web.dir. */
static bool walk(struct loader *ld, const char *rel)
{
    char dirpath[PATH_MAX];
    if (snprintf(dirpath, sizeof dirpath, "%s%s%s", ld->root, *rel ? "/" : "", rel) >=
        (int)sizeof dirpath) {
        log_warn("web.dir: skipping %s: path too long", rel);
        return true;
    }
    DIR *d = opendir(dirpath);
    if (!d) {
        snprintf(ld->err, ld->errlen, "cannot read directory %s/%s: %s", ld->cfg->web_dir, rel,
                 strerror(errno));
        return false;
    }
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        if (!servable_name(e->d_name)) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                log_debug("web.dir: not serving %s%s%s (hidden or unaddressable name)", rel,
                          *rel ? "/" : "", e->d_name);
            continue;
        }
        char child[STATIC_MAX_PATH], path[PATH_MAX];
        if (snprintf(child, sizeof child, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >=
                (int)sizeof child ||
            snprintf(path, sizeof path, "%s/%s", dirpath, e->d_name) >= (int)sizeof path) {
            log_warn("web.dir: skipping %s/%s: path too long", rel, e->d_name);
            continue;
        }
        struct stat st;
        if (lstat(path, &st) != 0) {
            snprintf(ld->err, ld->errlen, "cannot stat %s/%s: %s", ld->cfg->web_dir, child,
                     strerror(errno));
            ok = false;
        } else if (S_ISDIR(st.st_mode)) {
            ok = walk(ld, child);
        } else if (S_ISREG(st.st_mode)) {
            ok = add_file(ld, child, path);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            struct stat ts;
            size_t rl = strlen(ld->root);
            if (realpath(path, target) && !strncmp(target, ld->root, rl) && target[rl] == '/' &&
                stat(target, &ts) == 0 && S_ISREG(ts.st_mode))
                ok = add_file(ld, child, target);
            else
                log_warn("web.dir: not serving symlink %s: its target is not a file inside %s",
                         child, ld->cfg->web_dir);
        } else {
            log_warn("web.dir: not serving %s: not a regular file", child);
        }
    }
    closedir(d);
    return ok;
}

static int file_cmp(const void *a, const void *b)
{
    return strcmp(((const struct static_file *)a)->path, ((const struct static_file *)b)->path);
}

static void load_openapi(struct static_files *sf, const char *path)
{
    if (!*path)
        return;
    unsigned char *data;
    size_t len;
    bool too_large;
    /* A document of our own: the bound is only there so that a wrong path cannot load a huge
     * file. */
    if (!read_file(path, 16u << 20, &data, &len, &too_large)) {
        log_warn("web.openapi_file %s not loaded (%s): /openapi.yaml answers 404", path,
                 too_large ? "larger than 16 MiB" : strerror(errno));
        return;
    }
    sf->openapi.path = xstrdup("openapi.yaml");
    sf->openapi.data = data;
    sf->openapi.len = len;
    finish_file(&sf->openapi);
}

struct static_files *static_load(const struct config *cfg, char *err, size_t errlen)
{
    struct static_files *sf = xcalloc(1, sizeof *sf);
    struct loader ld = {.cfg = cfg, .sf = sf, .err = err, .errlen = errlen};
    load_openapi(sf, cfg->web_openapi_file);
    struct stat st;
    if (!*cfg->web_dir || stat(cfg->web_dir, &st) != 0) {
        log_warn("web.dir %s is absent: the web apps answer 404 until it is built (run make)",
                 *cfg->web_dir ? cfg->web_dir : "(empty)");
        return sf;
    }
    if (!S_ISDIR(st.st_mode) || !realpath(cfg->web_dir, ld.root)) {
        snprintf(err, errlen, "web.dir %s is not a readable directory", cfg->web_dir);
        static_free(sf);
        return NULL;
    }
    sf->present = true;
    if (!walk(&ld, "")) {
        static_free(sf);
        return NULL;
    }
    qsort(sf->files, sf->n, sizeof *sf->files, file_cmp);
    size_t gz = 0;
    for (size_t i = 0; i < sf->n; i++) {
        finish_file(&sf->files[i]);
        gz += sf->files[i].gz_len;
    }
    log_info("web.dir %s: %zu files, %zu bytes (+%zu bytes of gzip copies) in memory", cfg->web_dir,
             sf->n, sf->total, gz);
    return sf;
}

static void file_free(struct static_file *f)
{
    free(f->path);
    free(f->data);
    free(f->gz);
}

void static_free(struct static_files *sf)
{
    if (!sf)
        return;
    for (size_t i = 0; i < sf->n; i++)
        file_free(&sf->files[i]);
    free(sf->files);
    file_free(&sf->openapi);
    free(sf);
}

size_t static_count(const struct static_files *sf)
{
    return sf ? sf->n : 0;
}

bool static_present(const struct static_files *sf)
{
    return sf && sf->present;
}

static const struct static_file *find(const struct static_files *sf, const char *key)
{
    if (!sf || !sf->n)
        return NULL;
    struct static_file probe = {.path = (char *)key};
    return bsearch(&probe, sf->files, sf->n, sizeof *sf->files, file_cmp);
}

bool static_lookup(const struct static_files *sf, const char *key, struct static_info *out)
{
    const struct static_file *f = find(sf, key);
    if (!f)
        return false;
    *out = (struct static_info){f->content_type,           f->cache_control, f->etag,
                                f->gz ? f->etag_gz : NULL, f->len,           f->gz_len};
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Serving                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void send_file(struct req_ctx *rc, const struct static_file *f)
{
    bool gz = f->gz && static_accepts_gzip(http_header(rc, "Accept-Encoding"));
    const char *etag = gz ? f->etag_gz : f->etag;
    /* What a 304 must repeat of the 200 (RFC 9110 §15.4.5) goes on both. */
    http_set_header(rc, "ETag", etag);
    http_set_header(rc, "Cache-Control", f->cache_control);
    if (f->gz)
        http_set_header(rc, "Vary", "Accept-Encoding");
    http_set_header(rc, "Content-Security-Policy", STATIC_CSP);
    http_set_header(rc, "Referrer-Policy", "no-referrer");
    http_set_header(rc, "X-Frame-Options", "DENY");
    const char *inm = http_header(rc, "If-None-Match");
    if (inm && static_etag_matches(inm, etag)) {
        http_reply_borrowed(rc, 304, NULL, NULL, 0);
        return;
    }
    if (gz)
        http_set_header(rc, "Content-Encoding", "gzip");
    http_reply_borrowed(rc, 200, f->content_type, gz ? f->gz : f->data, gz ? f->gz_len : f->len);
}

/* "/app" -> "/app/", keeping the query (a WeChat OAuth redirect carries its code there). */
static void redirect_to_slash(struct req_ctx *rc)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(rc->req);
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    const char *loc = arena_printf(rc->arena, "%s/%s%s", rc->path, q ? "?" : "", q ? q : "");
    http_set_header(rc, "Location", loc);
    http_reply_raw(rc, 301, "text/plain; charset=utf-8", "moved\n", 6);
}

void static_serve(struct req_ctx *rc)
{
    /* The mount is the route's pattern up to its wildcard: "/app/{*}" serves "app/...". */
    const char *pat = rc->route->pattern;
    const char *star = strstr(pat, "{*}");
    ASSERT(star && star > pat + 1 && star[-1] == '/');
    size_t plen = (size_t)(star - pat); /* "/app/" */
    if (strlen(rc->path) < plen) {      /* "/app": the router's prefix form */
        redirect_to_slash(rc);
        return;
    }
    char key[STATIC_MAX_PATH];
    size_t mlen = plen - 1; /* "app/" */
    ASSERT(mlen < sizeof key);
    memcpy(key, pat + 1, mlen);
    if (!static_normalize(rc->path + plen, key + mlen, sizeof key - mlen)) {
        http_reply_error(rc, ST_INVALID, "invalid_path", NULL,
                         "the path holds a dot or empty segment, a backslash, a control byte, "
                         "a bad or double escape, or is too long");
        return;
    }
    const struct static_files *sf = rc->app->web;
    if (!static_present(sf)) {
        http_reply_error(rc, ST_NOT_FOUND, "web_app_not_built", NULL,
                         "the web app is not built: run make");
        return;
    }
    const struct static_file *f = find(sf, key);
    if (f) {
        send_file(rc, f);
        return;
    }
    /* A path whose last segment has no extension is a client-side route of the app: its
     * index.html answers, and the app's router shows the screen. A missing file is a 404, not
     * the HTML page (a script tag would otherwise get HTML). */
    const char *last = strrchr(key, '/');
    if (strchr(last + 1, '.')) {
        http_reply_error(rc, ST_NOT_FOUND, "not_found", NULL, "no such file");
        return;
    }
    memcpy(key + mlen, "index.html", sizeof "index.html");
    f = find(sf, key);
    if (!f) {
        http_reply_error(rc, ST_NOT_FOUND, "web_app_not_built", NULL,
                         "the web app is not built: run make");
        return;
    }
    send_file(rc, f);
}

void static_openapi(struct req_ctx *rc)
{
    const struct static_files *sf = rc->app->web;
    if (!sf || !sf->openapi.data) {
        http_reply_error(rc, ST_NOT_FOUND, "not_found", NULL,
                         "the OpenAPI document is not loaded (web.openapi_file)");
        return;
    }
    send_file(rc, &sf->openapi);
}
