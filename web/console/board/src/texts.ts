// The board's words, zh-CN by default, English with ?lang=en.
const zh = {
  title: '积分公示', street: '街道', community: '社区', grid: '网格', month: '月份', show: '查看', print: '打印 / 导出 A4',
  rank: '排名', name: '姓名', micro: '微网格', points: '本月积分', pending: '公示中', until: '公示截止', adjusted: '含人工调整',
  none: '本月暂无积分记录', adjustments: '人工调整', amount: '积分', category: '类别', at: '时间',
  period: '公示期间：{from} 至 {to}', window: '异议期：每笔积分自发放起公示 {days} 天，公示期内可提出异议。', noWindow: '异议期：本街道未设公示期，如有异议请随时提出。',
  how: '如何提出异议：请在公示截止前向所在网格长、社区居委会或街道办事处提出（写明姓名、月份和事项），也可扫描右侧二维码查看本页。',
  names: '姓名已按规定部分隐去。', generated: '生成时间 {at}', scan: '扫码查看本页', pick: '请选择社区、网格和月份。', err: '无法加载：{m}',
  cat: { correction: '更正', objection: '异议处理', bonus: '奖励', penalty: '扣减', other: '其他' } as Record<string, string>,
};
const en: typeof zh = {
  title: 'Points board', street: 'Street', community: 'Community', grid: 'Grid', month: 'Month', show: 'Show', print: 'Print / A4',
  rank: 'Rank', name: 'Name', micro: 'Micro-grid', points: 'Points this month', pending: 'Pending', until: 'Objections until', adjusted: 'incl. manual adjustment',
  none: 'No points this month', adjustments: 'Manual adjustments', amount: 'Points', category: 'Category', at: 'Time',
  period: 'Period: {from} to {to}', window: 'Objection window: each award is on notice for {days} days, during which anyone may object.', noWindow: 'Objection window: this street sets none; objections are welcome at any time.',
  how: 'How to object: before the notice ends, tell your grid leader, the community committee or the street office (your name, the month and the matter), or scan the QR code to see this page.',
  names: 'Names are partly masked.', generated: 'Generated {at}', scan: 'Scan to open this page', pick: 'Choose a community, a grid and a month.', err: 'Could not load: {m}',
  cat: { correction: 'Correction', objection: 'Objection', bonus: 'Bonus', penalty: 'Penalty', other: 'Other' },
};
export const lang = new URLSearchParams(location.search).get('lang') === 'en' ? 'en' : 'zh-CN';
export const T = lang === 'en' ? en : zh;
document.documentElement.lang = lang;
if (lang === 'en') document.title = en.title;
export function fill(s: string, p: Record<string, string | number>): string {
  return s.replace(/\{(\w+)\}/g, (_x, k: string) => String(p[k] ?? ''));
}
