/* xlsx.c -- one-sheet workbooks for the console's exports, through libxlsxwriter (xlsx.h). */
#include "xlsx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xlsxwriter.h>

#define XLSX_CELL_MAX 32767 /* characters of one Excel cell */

/* A string cell, cut at the cell limit on a UTF-8 boundary. */
static lxw_error write_text(lxw_worksheet *ws, lxw_row_t r, lxw_col_t c, const char *s,
                            lxw_format *f)
{
    size_t n = strlen(s);
    if (n <= XLSX_CELL_MAX)
        return worksheet_write_string(ws, r, c, s, f);
    size_t cut = XLSX_CELL_MAX;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    char *t = xmalloc(cut + 1);
    memcpy(t, s, cut);
    t[cut] = '\0';
    lxw_error e = worksheet_write_string(ws, r, c, t, f);
    free(t);
    return e;
}

static lxw_error write_cell(lxw_worksheet *ws, lxw_row_t r, lxw_col_t c, const json_t *v)
{
    if (json_is_null(v))
        return LXW_NO_ERROR;
    if (json_is_integer(v))
        return worksheet_write_number(ws, r, c, (double)json_integer_value(v), NULL);
    if (json_is_real(v))
        return worksheet_write_number(ws, r, c, json_real_value(v), NULL);
    if (json_is_string(v))
        return write_text(ws, r, c, json_string_value(v), NULL);
    if (json_is_boolean(v))
        return worksheet_write_boolean(ws, r, c, json_is_true(v), NULL);
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    lxw_error e = s ? write_text(ws, r, c, s, NULL) : LXW_ERROR_MEMORY_MALLOC_FAILED;
    free(s);
    return e;
}

static bool read_all(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read the workbook back: %s", strerror(errno));
        return false;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    bool ok = !ferror(f);
    fclose(f);
    if (!ok) {
        free(buf);
        snprintf(err, errlen, "cannot read the workbook back");
        return false;
    }
    *out = buf;
    *len = n;
    return true;
}

bool xlsx_from_json(const json_t *doc, const char *tmpdir, char **out, size_t *len, char *err,
                    size_t errlen)
{
    const char *sheet = json_string_value(json_object_get(doc, "sheet"));
    const json_t *cols = json_object_get(doc, "columns");
    const json_t *rows = json_object_get(doc, "rows");
    if (!sheet || !json_is_array(cols) || !json_is_array(rows)) {
        snprintf(err, errlen, "not a sheet: {sheet, columns, rows} expected");
        return false;
    }
    if (json_array_size(rows) >= LXW_ROW_MAX || json_array_size(cols) > LXW_COL_MAX) {
        snprintf(err, errlen, "too many rows or columns for one sheet");
        return false;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/gridpoints-xlsx-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temporary file: %s", strerror(errno));
        return false;
    }
    close(fd);
    lxw_workbook_options opt = {.constant_memory = LXW_TRUE,
                                .tmpdir = (char *)(tmpdir && *tmpdir ? tmpdir : "/tmp")};
    lxw_workbook *wb = workbook_new_opt(path, &opt);
    bool ok = wb != NULL;
    if (ok) {
        lxw_worksheet *ws = workbook_add_worksheet(wb, sheet);
        lxw_format *bold = workbook_add_format(wb);
        format_set_bold(bold);
        ok = ws != NULL;
        size_t i, j;
        const json_t *c, *row;
        json_array_foreach(cols, j, c)
        {
            if (ok && write_text(ws, 0, (lxw_col_t)j, json_is_string(c) ? json_string_value(c) : "",
                                 bold) != LXW_NO_ERROR)
                ok = false;
        }
        json_array_foreach(rows, i, row)
        {
            if (!ok)
                break;
            if (!json_is_array(row)) {
                ok = false;
                break;
            }
            json_array_foreach(row, j, c)
            {
                if (j >= LXW_COL_MAX ||
                    write_cell(ws, (lxw_row_t)(i + 1), (lxw_col_t)j, c) != LXW_NO_ERROR) {
                    ok = false;
                    break;
                }
            }
        }
        lxw_error e = workbook_close(wb); /* writes the file and frees wb */
        if (ok && e != LXW_NO_ERROR) {
            snprintf(err, errlen, "libxlsxwriter: %s", lxw_strerror(e));
            ok = false;
        } else if (!ok) {
            snprintf(err, errlen, "a cell could not be written");
        }
    } else {
        snprintf(err, errlen, "libxlsxwriter cannot create the workbook");
    }
    ok = ok && read_all(path, out, len, err, errlen);
    unlink(path);
    return ok;
}
