// A roster file (XLSX or CSV) read in the browser into the rows of POST /api/v1/people/import.
// The first row names the columns (Chinese or English headers); each later row is one person,
// numbered as in the file (the header is row 1), so that an error names the row staff see.
export interface RosterRow {
  row: number;
  phone: string;
  name: string;
  unit_id?: number;
  unit_path?: string;
  tags?: string[];
  role?: 'worker' | 'volunteer';
  external_id?: string;
}

const HEADERS: Record<string, keyof RosterRow> = {
  姓名: 'name', name: 'name',
  手机: 'phone', 手机号: 'phone', 电话: 'phone', phone: 'phone', mobile: 'phone',
  单位: 'unit_path', 所属单位: 'unit_path', 网格: 'unit_path', unit: 'unit_path', unit_path: 'unit_path',
  单位id: 'unit_id', 单位编号: 'unit_id', unit_id: 'unit_id',
  标签: 'tags', tags: 'tags',
  角色: 'role', role: 'role',
  编号: 'external_id', 工号: 'external_id', external_id: 'external_id', id: 'external_id',
};
const ROLE: Record<string, 'worker' | 'volunteer'> = { 网格员: 'worker', 工作人员: 'worker', worker: 'worker', 志愿者: 'volunteer', volunteer: 'volunteer' };

/** RFC 4180 CSV (quotes, doubled quotes, CRLF), a UTF-8 BOM dropped. */
export function parseCsv(text: string): string[][] {
  const out: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  const s = text.replace(/^\uFEFF/, '');
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (c === '"' && s[i + 1] === '"') (cell += '"'), i++;
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') row.push(cell), (cell = '');
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && s[i + 1] === '\n') i++;
      row.push(cell);
      out.push(row);
      row = [];
      cell = '';
    } else cell += c;
  }
  if (cell !== '' || row.length) row.push(cell), out.push(row);
  return out;
}

/** The table of a file: its rows of cells as text. */
export async function readTable(file: File): Promise<string[][]> {
  if (/\.csv$/i.test(file.name) || file.type === 'text/csv') return parseCsv(await file.text());
  const { default: readXlsxFile } = await import('read-excel-file');
  const rows = await readXlsxFile(file);
  return rows.map((r) => r.map((c) => (c === null || c === undefined ? '' : c instanceof Date ? c.toISOString() : String(c))));
}

/** Rows for the server: cells mapped by header, blank lines skipped. The server validates. */
export function toRows(table: string[][]): { rows: RosterRow[]; unknown: string[] } {
  const [head = [], ...body] = table;
  const cols = head.map((h) => HEADERS[h.trim().toLowerCase()] ?? HEADERS[h.trim()]);
  const unknown = head.filter((_h, i) => !cols[i] && head[i].trim() !== '');
  const rows: RosterRow[] = [];
  body.forEach((cells, i) => {
    if (cells.every((c) => c.trim() === '')) return;
    const r: RosterRow = { row: i + 2, phone: '', name: '' };
    cells.forEach((raw, j) => {
      const k = cols[j];
      const v = raw.trim();
      if (!k || v === '') return;
      if (k === 'tags') r.tags = v.split(/[;；,，、|]/).map((x) => x.trim()).filter(Boolean);
      else if (k === 'unit_id') r.unit_id = Number(v);
      else if (k === 'role') r.role = ROLE[v.toLowerCase()] ?? (v as 'worker');
      else (r as unknown as Record<string, string>)[k] = v;
    });
    rows.push(r);
  });
  return { rows, unknown };
}
