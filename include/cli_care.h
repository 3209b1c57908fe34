/* cli_care.h -- the care lists of the demo street (server/cli_care.c, `gridpointsd demo-data`). */
#ifndef GP_CLI_CARE_H
#define GP_CLI_CARE_H

#include "common.h"

#include <libpq-fe.h>

struct config;

/* Puts residents of the demo street (id street) on the care lists, sealed with the key of
 * cfg, schedules their first visits and funds each grid's care budget; in the caller's
 * transaction. 0, or -1 after logging. Without merchant.key_encryption_key: a line, 0. */
int cli_demo_care(PGconn *c, const struct config *cfg, const char *street);
/* Whether the street already has care lists (a demo loaded before them gets them later). */
bool cli_demo_care_loaded(PGconn *c, const char *street);

#endif
