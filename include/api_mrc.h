/* api_mrc.h -- statements and settlements of a merchant, for the three kinds of callers that
 * read them (api_mrc_admin.c, api_mrc_signed.c, api_mrc_console.c). */
#ifndef GP_API_MRC_H
#define GP_API_MRC_H

#include "api.h"

/* Who reads: an admin/auditor of the street, the merchant itself (signed), or its staff
 * (console). Each SQL text resolves the merchant (and with it the caller's right to read it)
 * inside the statement. */
enum api_mrc_who { API_MRC_ADMIN, API_MRC_MERCHANT, API_MRC_CONSOLE };
/* ?from, ?to, ?format=json|csv and the page (API_CURSOR_ID). */
void api_mrc_statement_for(struct req_ctx *rc, enum api_mrc_who who);
void api_mrc_settlements_for(struct req_ctx *rc, enum api_mrc_who who);
void api_mrc_settlement_get_for(struct req_ctx *rc, enum api_mrc_who who);

#endif
