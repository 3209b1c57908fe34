// zh-CN, the default language. Its shape is the type of every other language (en.ts).
const zhCN = {
  app: { title: '网格积分 · 管理后台', logout: '退出登录', noScreens: '您的角色没有可用的管理功能（网格员请使用手机端）。' },
  nav: { dashboard: '一屏统揽', people: '人员管理', tasks: '任务管理', review: '审核', budgets: '预算与政策', merchants: '商户管理', audit: '审计', shop: '我的商户', board: '积分公示' },
  login: { hint: '街道、社区、网格工作人员，审计员和商户人员使用手机号与密码登录。', phone: '手机号', password: '密码', submit: '登录', badPhone: '请输入 11 位手机号' },
  common: { actions: '操作', cancel: '取消', save: '保存', saved: '已保存', empty: '暂无数据', more: '加载更多', shownOnce: '只显示这一次，请立即妥善保存。' },
  err: { network: '网络不可用，请稍后重试', server: '服务器暂时无法处理，请稍后重试', invalid_credentials: '手机号或密码不正确', not_found: '不存在或不在您的管辖范围内', forbidden: '您没有这项权限' },
  role: { worker: '网格员', volunteer: '志愿者', grid_staff: '网格长', community_admin: '社区管理员', street_admin: '街道管理员', auditor: '审计员', merchant_staff: '商户人员' },
  status: { active: '正常', suspended: '已停用', open: '进行中', closed: '已结束', cancelled: '已取消', paused: '已暂停', expired: '已过期', revoked: '已吊销' },
  state: { claimed: '已领取', submitted: '待审核', approved: '已通过', rejected: '已驳回', expired: '已过期', released: '已放弃' },
  level: { street: '街道', community: '社区', grid: '网格', micro_grid: '微网格' },
  flag: { flagged_report: '报告带异常标记', outside_geofence: '超出地理围栏', report_too_soon: '领取后过快提交', too_many_completions: '单日完成过多', shared_device: '多人共用设备', shared_evidence: '照片重复使用', self_approval: '自审自批', late_sync: '离线补传' },
  event: { published: '发布', claimed: '领取', submitted: '提交报告', approved: '通过', rejected: '驳回', expired: '过期', released: '放弃', cancelled: '取消', closed: '结束', edited: '修改' },
  adjcat: { correction: '更正', objection: '异议处理', bonus: '奖励', penalty: '扣减', other: '其他' },
  people: {
    tree: '组织架构', allUnits: '显示全部', search: '姓名或手机号', import: '批量导入', create: '新增人员', name: '姓名', phone: '手机号', unit: '所属单位',
    roles: '角色', role: '角色', tags: '标签', tagsHint: '输入后回车', status: '状态', invite: '微信绑定码', suspend: '停用', reactivate: '恢复',
    suspendConfirm: '停用 {name}？其登录会立即失效。', createdTitle: '人员已创建', createdText: '{name} 的初始密码：',
    inviteTitle: '{name} 的微信绑定码', inviteUntil: '有效期至 {at}',
  },
  import: {
    title: '批量导入花名册', help: '选择 XLSX 或 CSV 文件：第一行为表头（姓名、手机号、单位、标签、角色、编号）。先逐行校验（不写入），全部无误后才能导入；导入要么全部成功，要么全部不生效，重复上传同一文件不会产生变化。',
    rows: '{n} 行', unknownCols: '未识别的列（已忽略）：{cols}', emptyFile: '文件中没有数据行', state: '结果', dryRun: '校验（未写入）', imported: '已导入',
    created: '新增', updated: '更新', unchanged: '无变化', errors: '错误', row: '行号', field: '字段', code: '错误类型', message: '说明',
    commit: '导入 {n} 行', fixFirst: '请修正以上错误后重新选择文件', done: '导入完成：新增 {created}，更新 {updated}，无变化 {unchanged}', refused: '文件有错误，未导入任何数据',
  },
  tasks: { publish: '发布任务', status: '状态', category: '类别', title: '任务名称', reward: '积分', slots: '名额', submitted: '待审核', endsAt: '截止时间' },
  publish: {
    description: '任务说明', tags: '所需标签', place: '地点（纬度, 经度）', lat: '纬度', lng: '经度', useDevice: '使用本设备位置', geofence: '地理围栏半径',
    enforce: '超出拒收', flagOnly: '超出仅标记', window: '起止时间', claimTtl: '领取后时限', reviewWindow: '自动通过时间', evidence: '所需凭证', photos: '张照片',
    checkin: '现场签到', reserve: '将从预算中预留 {n} 积分', noGeo: '此浏览器不支持定位', geoDenied: '无法获取位置（未授权或信号弱）', needUnit: '请选择发布单位', done: '任务已发布',
  },
  task: {
    cancel: '取消任务', cancelReason: '取消原因', needReason: '请填写原因', cancelled: '任务已取消', history: '变更记录', assignment: '领取 #{id}',
    byTimer: '系统定时（{timer}）', byPerson: '操作人 #{id}', counts: '进度', evidence: '{n} 张照片',
  },
  review: {
    count: '待审 {n} 条', flaggedOnly: '只看有标记的', keys: '快捷键：J/K 上下切换，A 通过，R 驳回', empty: '没有待审核的报告', approve: '通过', reject: '驳回',
    reason: '请填写原因', approved: '已通过', rejected: '已驳回', worker: '提交人', submitted: '提交时间', distance: '距任务地点', autoAt: '自动通过时间',
    flags: '异常标记', noFlags: '无异常', notes: '备注', checkins: '签到', hashOk: '哈希一致', hashBad: '哈希不一致', noPhotos: '无照片',
  },
  budgets: {
    total: '预算合计', reserved: '任务预留', level: '层级', available: '可用预算', openTasks: '进行中任务', grant: '下拨预算', from: '从', to: '拨给', amount: '积分',
    memo: '备注', issue: '发行积分', policy: '积分政策', objection: '公示异议期', days: '天', expiry: '积分有效期', expiryNone: '长期有效', expiryNextYear: '次年年底清零',
    adjust: '人工调整积分', worker: '人员编号', category: '类别', reason: '原因', adjustHint: '人工调整计入审计日志，并按类别在积分公示中显示（不显示原因原文）。',
  },
  merchants: {
    onboard: '新增商户', name: '商户名称', address: '地址', contact: '联系人', contactPhone: '联系电话', keys: '接口密钥', created: '创建时间', revoke: '吊销',
    revokeConfirm: '立即吊销密钥 {key}？', newKey: '新建密钥', rotate: '轮换密钥', secretTitle: '新密钥', staff: '商户人员', personId: '人员编号', addStaff: '添加',
    openPeriod: '未结算期间', captures: '核销', charges: '扫码付', refunds: '退款', net: '净额', settle: '结算本期', settled: '已结算', settlements: '结算记录', period: '期间',
    suspend: '暂停', reinstate: '恢复', offers: '商品', offer: '商品', price: '积分价', stock: '库存', sold: '已兑',
  },
  audit: {
    status: '检查点', logSize: '日志条数', signedSize: '最新签名检查点', signedAt: '签名时间', none: '尚无', unsealed: '待封存', alarm: '告警', noAlarm: '正常',
    trialBalance: '试算平衡', tbTotal: '合计 {total}（辖区内 {inside}，辖区外 {outside}）', mismatched: '不一致账户 {n} 个', kind: '类型', balance: '余额', accounts: '账户数',
    log: '审计日志', actionFilter: '操作（如 report.）', at: '时间', actor: '操作人', action: '操作', object: '对象', anomalies: '异常', rule: '规则', subject: '对象', evidence: '依据',
    statement: '个人流水', show: '查询', xlsx: '导出 XLSX', available: '可用', pending: '公示中', logIndex: '日志序号', export: '导出', format: '格式', range: '时间范围',
    download: '下载', exporting: '正在导出…', pages: '已取 {n} 页',
  },
  dash: {
    title: '一屏统揽', published: '今日发布任务', claimed: '领取', reported: '提交', approved: '通过', issued: '发放积分', redeemed: '兑换积分', active: '活跃人员',
    pending: '公示中积分', workers: '在册人员', trend: '近 {n} 天趋势', children: '各单位完成率与人均积分', completion: '完成率', perWorker: '人均积分', anomalies: '今日异常',
    noAnomalies: '暂无异常', redemptions: '商户兑换', todayRedeemed: '今日 {n} 积分 / {c} 笔', byUnit: '各单位今日', asOf: '数据时间 {at}，每 {s} 秒刷新',
  },
};
export type Messages = typeof zhCN;
export default zhCN;
