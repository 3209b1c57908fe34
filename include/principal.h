/* principal.h -- who a request acts for, as the route guards establish it.
 *
 * A plain value in every request context (http.h): the session guard (auth.h) fills the
 * person's part, the merchant signature guard (merchant_auth.h) the merchant's part, and
 * public routes leave it zero. Its own header so that the HTTP core and the handlers can read
 * it without depending on any auth module. */
#ifndef GP_PRINCIPAL_H
#define GP_PRINCIPAL_H

#include <stdbool.h>
#include <stdint.h>

enum auth_role {
    ROLE_WORKER = 1 << 0,
    ROLE_VOLUNTEER = 1 << 1,
    ROLE_GRID_STAFF = 1 << 2,
    ROLE_COMMUNITY_ADMIN = 1 << 3,
    ROLE_STREET_ADMIN = 1 << 4,
    ROLE_AUDITOR = 1 << 5,
    ROLE_MERCHANT_STAFF = 1 << 6,
};
#define ROLE_STAFF (ROLE_GRID_STAFF | ROLE_COMMUNITY_ADMIN | ROLE_STREET_ADMIN)

struct principal {
    int64_t person_id; /* 0 = anonymous */
    int64_t unit_id;   /* home unit */
    unsigned roles;    /* union of enum auth_role over all the person's grants */
    /* The home unit's path (ids of the unit and its ancestors, "1.5.12"), and whether the
     * person is an active worker or volunteer there: what the claim gate needs to know that a
     * task reaches the caller (gp_task_in_area) before it may answer (task_gate.h). Empty /
     * false when unknown: then nothing but PostgreSQL answers about the caller's scope. */
    char area[96];
    bool worker;
    char token_hash[65]; /* hex SHA-256 of the session token */
    int64_t merchant_id; /* a verified merchant request (merchant signature guard): its merchant */
    char key_id[24];     /* ... and the key it was signed with (merchant_auth.h) */
};

#endif
