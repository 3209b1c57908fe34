/* xlsx.h -- one-sheet Excel workbooks (libxlsxwriter) for the console's exports (issue 14).
 *
 * The input is the JSON the gp_*_xlsx SQL functions return: {"sheet": name, "columns":
 * [header, ...], "rows": [[cell, ...], ...]}; integers and reals become number cells, strings
 * text cells (cut at Excel's 32,767 characters), null an empty cell, anything else its JSON
 * text. CPU and file work: call it on a workpool thread (it touches only its arguments). */
#ifndef GP_XLSX_H
#define GP_XLSX_H

#include "common.h"

#include <jansson.h>

/* Builds the workbook through a temporary file in tmpdir (removed before it returns) and
 * hands its bytes back in *out (malloc'd; the caller frees). false with a message in err on
 * failure (bad shape, disk, libxlsxwriter). */
bool xlsx_from_json(const json_t *doc, const char *tmpdir, char **out, size_t *len, char *err,
                    size_t errlen) MUSTCHECK;

#endif
