/* evidence_store.h -- where the bytes of evidence photos live, addressed by their SHA-256.
 *
 * A small interface (put / get / remove by hash) so that the directory implementation here can
 * be replaced by an object store (S3, MinIO, OSS) later without touching the HTTP side: a new
 * implementation fills a struct evidence_store_ops and a constructor. The database, not the
 * store, knows who uploaded what and when it expires (sql/functions/70_evidence.sql).
 *
 * Every operation BLOCKS (disk or network I/O): call them only from the worker pool
 * (workpool.h), never from the event loop. Implementations are safe to call from several
 * threads at once, including for the same hash: two identical uploads racing end with one
 * object, both calls succeed. */
#ifndef GP_EVIDENCE_STORE_H
#define GP_EVIDENCE_STORE_H

#include "common.h"
#include "status.h"

/* Lower-case hex of a SHA-256, plus NUL. */
#define EVIDENCE_HASH_HEX 65

struct evidence_store;

struct evidence_store_ops {
    const char *name; /* "dir", ... */
    /* Stores data under hash unless an object of that hash is already there (content
     * addressing: same hash, same bytes). Durable when it returns ST_OK. */
    enum status (*put)(struct evidence_store *es, const char *hash, const void *data, size_t len,
                       char *err, size_t errlen);
    /* Reads the object into *data (malloc'd, the caller frees) and *len. ST_NOT_FOUND when
     * there is none; ST_TOO_LARGE when it holds more than max bytes. */
    enum status (*get)(struct evidence_store *es, const char *hash, size_t max, void **data,
                       size_t *len, char *err, size_t errlen);
    /* Deletes the object; ST_OK also when there was none (a retried removal). */
    enum status (*remove)(struct evidence_store *es, const char *hash, char *err, size_t errlen);
    void (*free)(struct evidence_store *es);
};

/* Every implementation starts with this. */
struct evidence_store {
    const struct evidence_store_ops *ops;
};

/* The directory implementation: <dir>/<first two hex digits>/<hash>, written to a temporary
 * file in <dir>/tmp, fsync'd, renamed into place and the directory fsync'd. Creates dir (and
 * its parents) and dir/tmp, and removes temporary files older than an hour that a crash left
 * behind: start-up I/O, before the event loop runs. NULL with a reason in err when the
 * directory cannot be created or written. */
struct evidence_store *evidence_store_dir_new(const char *dir, char *err, size_t errlen) MUSTCHECK;

static inline enum status evidence_store_put(struct evidence_store *es, const char *hash,
                                             const void *data, size_t len, char *err, size_t errlen)
{
    return es->ops->put(es, hash, data, len, err, errlen);
}

static inline enum status evidence_store_get(struct evidence_store *es, const char *hash,
                                             size_t max, void **data, size_t *len, char *err,
                                             size_t errlen)
{
    return es->ops->get(es, hash, max, data, len, err, errlen);
}

static inline enum status evidence_store_remove(struct evidence_store *es, const char *hash,
                                                char *err, size_t errlen)
{
    return es->ops->remove(es, hash, err, errlen);
}

/* NULL is fine. */
void evidence_store_free(struct evidence_store *es);

#endif
