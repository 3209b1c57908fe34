/* api_care.h -- care visits from the red / yellow / blue lists (docs/CARE.md): the handlers of
 * /api/v1/care/... (server/api_care.c). Personal fields are sealed here before they reach
 * SQL and opened here on the way out (care_crypto.h); sql/functions/80_care.sql decides
 * scope, state and what each audience sees. */
#ifndef GP_API_CARE_H
#define GP_API_CARE_H

struct req_ctx;

void api_care_policy_get(struct req_ctx *rc);
void api_care_policy_set(struct req_ctx *rc);
void api_care_resident_create(struct req_ctx *rc);
void api_care_resident_list(struct req_ctx *rc);
void api_care_resident_get(struct req_ctx *rc);
void api_care_resident_update(struct req_ctx *rc);
void api_care_resident_pause(struct req_ctx *rc);
void api_care_resident_resume(struct req_ctx *rc);
void api_care_resident_remove(struct req_ctx *rc);
void api_care_resident_open(struct req_ctx *rc);
void api_care_lookup(struct req_ctx *rc);
void api_care_due(struct req_ctx *rc);
void api_care_visit_submit(struct req_ctx *rc);
void api_care_followup_list(struct req_ctx *rc);
void api_care_followup_close(struct req_ctx *rc);
void api_care_coverage(struct req_ctx *rc);
void api_care_export(struct req_ctx *rc);
void api_care_budget_get(struct req_ctx *rc);
void api_care_budget_fund(struct req_ctx *rc);

#endif
