/* evidence_store.c -- the directory implementation of the evidence store (evidence_store.h).
 *
 * Layout: <dir>/ab/abcdef... (the first two hex digits fan the files out over 256
 * directories, so that no directory grows to millions of entries) and <dir>/tmp for uploads in
 * progress. A file appears under its hash only complete and on disk: it is written to tmp,
 * fsync'd, renamed (atomic within one file system, which tmp and the fan-out directories share)
 * and the directory entry fsync'd. Two uploads of the same bytes racing both rename a complete
 * file onto the same name; the last rename wins and the content is the same. */
#include "evidence_store.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Temporary files older than this at start-up were left by a crash. */
#define STALE_TMP_SECONDS 3600

struct dir_store {
    struct evidence_store base; /* first: the interface */
    char *dir;
};

static bool hash_ok(const char *h)
{
    size_t n = 0;
    for (; h[n]; n++)
        if (!((h[n] >= '0' && h[n] <= '9') || (h[n] >= 'a' && h[n] <= 'f')))
            return false;
    return n == 64;
}

static void fail(char *err, size_t errlen, const char *what, const char *path)
{
    snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
}

/* mkdir that accepts an existing directory. */
static bool ensure_dir(const char *path)
{
    if (mkdir(path, 0750) == 0 || errno == EEXIST) {
        struct stat st;
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    }
    return false;
}

/* mkdir -p */
static bool ensure_dirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return false;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        bool ok = ensure_dir(buf);
        *p = '/';
        if (!ok)
            return false;
    }
    return ensure_dir(buf);
}

/* The rename or unlink of an entry is durable only once its directory is synced. */
static bool sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    int r = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return r == 0;
}

static bool write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static enum status dir_put(struct evidence_store *es, const char *hash, const void *data,
                           size_t len, char *err, size_t errlen)
{
    struct dir_store *ds = (struct dir_store *)es;
    if (!hash_ok(hash)) {
        snprintf(err, errlen, "not a lower-case hex SHA-256");
        return ST_INVALID;
    }
    char fan[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX];
    snprintf(fan, sizeof fan, "%s/%.2s", ds->dir, hash);
    snprintf(path, sizeof path, "%s/%.2s/%s", ds->dir, hash, hash);
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.XXXXXX", ds->dir, hash);

    /* Content addressing: a complete file of that name holds these bytes already. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == len)
        return ST_OK;
    if (!ensure_dir(fan)) {
        fail(err, errlen, "cannot create", fan);
        return ST_INTERNAL;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        fail(err, errlen, "cannot create", tmp);
        return ST_INTERNAL;
    }
    if (!write_all(fd, data, len) || fsync(fd) != 0) {
        fail(err, errlen, "cannot write", tmp);
        close(fd);
        unlink(tmp);
        return ST_INTERNAL;
    }
    if (close(fd) != 0) {
        fail(err, errlen, "cannot write", tmp);
        unlink(tmp);
        return ST_INTERNAL;
    }
    if (rename(tmp, path) != 0) {
        fail(err, errlen, "cannot rename into", path);
        unlink(tmp);
        return ST_INTERNAL;
    }
    if (!sync_dir(fan)) {
        fail(err, errlen, "cannot sync", fan);
        return ST_INTERNAL;
    }
    return ST_OK;
}

static enum status dir_get(struct evidence_store *es, const char *hash, size_t max, void **data,
                           size_t *len, char *err, size_t errlen)
{
    struct dir_store *ds = (struct dir_store *)es;
    *data = NULL;
    *len = 0;
    if (!hash_ok(hash))
        return ST_NOT_FOUND;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%.2s/%s", ds->dir, hash, hash);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return ST_NOT_FOUND;
        fail(err, errlen, "cannot open", path);
        return ST_INTERNAL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ST_NOT_FOUND;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        snprintf(err, errlen, "%s holds %lld bytes, more than %zu", path, (long long)st.st_size,
                 max);
        return ST_TOO_LARGE;
    }
    size_t want = (size_t)st.st_size;
    char *buf = xmalloc(want ? want : 1);
    size_t got = 0;
    while (got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    int saved = errno;
    close(fd);
    if (got != want) {
        errno = saved;
        fail(err, errlen, "short read of", path);
        free(buf);
        return ST_INTERNAL;
    }
    *data = buf;
    *len = got;
    return ST_OK;
}

static enum status dir_remove(struct evidence_store *es, const char *hash, char *err, size_t errlen)
{
    struct dir_store *ds = (struct dir_store *)es;
    if (!hash_ok(hash))
        return ST_OK; /* nothing can be stored under such a name */
    char fan[PATH_MAX], path[PATH_MAX];
    snprintf(fan, sizeof fan, "%s/%.2s", ds->dir, hash);
    snprintf(path, sizeof path, "%s/%.2s/%s", ds->dir, hash, hash);
    if (unlink(path) != 0) {
        if (errno == ENOENT)
            return ST_OK;
        fail(err, errlen, "cannot remove", path);
        return ST_INTERNAL;
    }
    if (!sync_dir(fan)) {
        fail(err, errlen, "cannot sync", fan);
        return ST_INTERNAL;
    }
    return ST_OK;
}

static void dir_free(struct evidence_store *es)
{
    struct dir_store *ds = (struct dir_store *)es;
    free(ds->dir);
    free(ds);
}

static const struct evidence_store_ops dir_ops = {
    .name = "dir",
    .put = dir_put,
    .get = dir_get,
    .remove = dir_remove,
    .free = dir_free,
};

/* Uploads that a crash interrupted leave their temporary file; an hour is far longer than any
 * upload may take (server.body_timeout), so an older one belongs to nobody. */
static void remove_stale_tmp(const char *tmpdir)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    time_t now = time(NULL);
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (now - st.st_mtime > STALE_TMP_SECONDS && unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    if (removed)
        log_info("evidence store: removed %d stale temporary file%s from %s", removed,
                 removed == 1 ? "" : "s", tmpdir);
}

struct evidence_store *evidence_store_dir_new(const char *dir, char *err, size_t errlen)
{
    if (!dir || !*dir) {
        snprintf(err, errlen, "evidence.dir is empty");
        return NULL;
    }
    /* Room for "/ab/" + the hash and for "/tmp/" + the hash + ".XXXXXX". */
    if (strlen(dir) + 80 >= PATH_MAX) {
        snprintf(err, errlen, "evidence.dir is too long");
        return NULL;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    if (!ensure_dirs(dir) || !ensure_dir(tmp)) {
        snprintf(err, errlen, "cannot create the evidence directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (access(dir, W_OK | X_OK) != 0 || access(tmp, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "cannot write to the evidence directory %s: %s", dir,
                 strerror(errno));
        return NULL;
    }
    remove_stale_tmp(tmp);
    struct dir_store *ds = xcalloc(1, sizeof *ds);
    ds->base.ops = &dir_ops;
    ds->dir = xstrdup(dir);
    /* A trailing slash would double in every path; harmless, but keep the log lines clean. */
    size_t n = strlen(ds->dir);
    while (n > 1 && ds->dir[n - 1] == '/')
        ds->dir[--n] = '\0';
    return &ds->base;
}

void evidence_store_free(struct evidence_store *es)
{
    if (es)
        es->ops->free(es);
}
