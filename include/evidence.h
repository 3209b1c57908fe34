/* evidence.h -- evidence photos: what an upload must be, and the retention sweep.
 *
 * A photo is uploaded with PUT /api/v1/evidence/{sha256} (api_evidence.c): the server checks
 * that the body hashes to the path and that its bytes are a JPEG, PNG or WebP (evidence_sniff;
 * the declared Content-Type must say the same), records it in PostgreSQL (who uploaded it,
 * size, type, when it expires: sql/functions/70_evidence.sql) and stores the bytes
 * content-addressed (evidence_store.h). Reports refer to it by URL + SHA-256 (SPEC §3); only
 * the uploaders and those who may read a report that refers to it can download it.
 *
 * Retention: evidence.retention after upload, or evidence.flagged_retention when a flagged or
 * rejected report refers to it. The "evidence" sweep (sweeps.c) claims what expired
 * (gp_evidence_sweep, leased so that one instance deletes each item), evidence_swept removes
 * the bytes on the worker pool and gp_evidence_deleted marks the rows and writes the audit
 * log, once. */
#ifndef GP_EVIDENCE_H
#define GP_EVIDENCE_H

#include "common.h"

#include <jansson.h>

struct app;
struct config;

/* The media types evidence may have. */
#define EVIDENCE_JPEG "image/jpeg"
#define EVIDENCE_PNG  "image/png"
#define EVIDENCE_WEBP "image/webp"

/* The type of an image by its first bytes (JPEG SOI marker, PNG signature, RIFF....WEBP), or
 * NULL when the bytes are none of the three. Returns one of the EVIDENCE_* strings. */
const char *evidence_sniff(const void *data, size_t len);
/* The declared Content-Type (parameters and case ignored) as one of the EVIDENCE_* strings,
 * or NULL when it is absent or not one of them. */
const char *evidence_declared_type(const char *content_type);
/* A path's hash: 64 hex digits of either case, written lower-case into out. */
bool evidence_hash_parse(const char *in, char out[65]) MUSTCHECK;

/* Sweep table hooks (sweeps.h): the settings gp_evidence_sweep reads ($2), and what to do with
 * the items it claimed (remove them from the store off the loop, then mark them deleted). */
void evidence_sweep_args(const struct config *cfg, char *buf, size_t len);
int64_t evidence_swept(struct app *app, json_t *reply);

#endif
