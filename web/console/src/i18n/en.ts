import type { Messages } from './zh-CN';

const en: Messages = {
  app: { title: 'Gridpoints Console', logout: 'Sign out', noScreens: 'Your roles open no console screen (workers use the phone app).' },
  nav: { dashboard: 'Dashboard', people: 'People', tasks: 'Tasks', review: 'Review', budgets: 'Budgets & policy', merchants: 'Merchants', audit: 'Audit', shop: 'My merchant', board: 'Points board' },
  login: { hint: 'Street, community and grid staff, auditors and merchant staff sign in with phone and password.', phone: 'Phone', password: 'Password', submit: 'Sign in', badPhone: 'Enter an 11-digit phone number' },
  common: { actions: 'Actions', cancel: 'Cancel', save: 'Save', saved: 'Saved', empty: 'Nothing here', more: 'Load more', shownOnce: 'Shown this once only: store it now.' },
  err: { network: 'Network unavailable, try again later', server: 'The server could not handle this now, try again later', invalid_credentials: 'Wrong phone or password', not_found: 'Not found, or outside your scope', forbidden: 'You are not allowed to do this' },
  role: { worker: 'Worker', volunteer: 'Volunteer', grid_staff: 'Grid staff', community_admin: 'Community admin', street_admin: 'Street admin', auditor: 'Auditor', merchant_staff: 'Merchant staff' },
  status: { active: 'Active', suspended: 'Suspended', open: 'Open', closed: 'Closed', cancelled: 'Cancelled', paused: 'Paused', expired: 'Expired', revoked: 'Revoked' },
  state: { claimed: 'Claimed', submitted: 'To review', approved: 'Approved', rejected: 'Rejected', expired: 'Expired', released: 'Released' },
  level: { street: 'Street', community: 'Community', grid: 'Grid', micro_grid: 'Micro-grid' },
  flag: { flagged_report: 'Flagged report', outside_geofence: 'Outside geofence', report_too_soon: 'Reported too soon', too_many_completions: 'Too many completions', shared_device: 'Shared device', shared_evidence: 'Reused photo', self_approval: 'Self-approval', late_sync: 'Synced late' },
  event: { published: 'Published', claimed: 'Claimed', submitted: 'Report submitted', approved: 'Approved', rejected: 'Rejected', expired: 'Expired', released: 'Released', cancelled: 'Cancelled', closed: 'Closed', edited: 'Edited' },
  adjcat: { correction: 'Correction', objection: 'Objection', bonus: 'Bonus', penalty: 'Penalty', other: 'Other' },
  people: {
    tree: 'Organisation', allUnits: 'Show all', search: 'Name or phone', import: 'Import roster', create: 'New person', name: 'Name', phone: 'Phone', unit: 'Unit',
    roles: 'Roles', role: 'Role', tags: 'Tags', tagsHint: 'Type and press Enter', status: 'Status', invite: 'WeChat code', suspend: 'Suspend', reactivate: 'Reactivate',
    suspendConfirm: 'Suspend {name}? Their sessions end at once.', createdTitle: 'Person created', createdText: "{name}'s initial password:",
    inviteTitle: 'WeChat binding code of {name}', inviteUntil: 'Valid until {at}',
  },
  import: {
    title: 'Import a roster', help: 'Choose an XLSX or CSV file whose first row names the columns (name, phone, unit, tags, role, external_id). Every row is checked first (nothing written); only a file without errors can be imported, all or nothing; uploading the same file again changes nothing.',
    rows: '{n} rows', unknownCols: 'Columns not recognised (ignored): {cols}', emptyFile: 'The file has no data rows', state: 'Result', dryRun: 'Checked (not written)', imported: 'Imported',
    created: 'New', updated: 'Updated', unchanged: 'Unchanged', errors: 'Errors', row: 'Row', field: 'Field', code: 'Error', message: 'Details',
    commit: 'Import {n} rows', fixFirst: 'Fix the errors above and choose the file again', done: 'Imported: {created} new, {updated} updated, {unchanged} unchanged', refused: 'The file has errors: nothing was imported',
  },
  tasks: { publish: 'Publish a task', status: 'Status', category: 'Category', title: 'Title', reward: 'Points', slots: 'Slots', submitted: 'To review', endsAt: 'Ends' },
  publish: {
    description: 'Description', tags: 'Required tags', place: 'Place (lat, lng)', lat: 'Latitude', lng: 'Longitude', useDevice: "Use this device's location", geofence: 'Geofence radius',
    enforce: 'Refuse outside', flagOnly: 'Flag outside', window: 'Window', claimTtl: 'Time after claiming', reviewWindow: 'Auto-approval after', evidence: 'Evidence', photos: 'photos',
    checkin: 'On-site check-in', reserve: '{n} points will be reserved from the budget', noGeo: 'This browser cannot locate', geoDenied: 'Location unavailable (not allowed or no signal)', needUnit: 'Choose the unit', done: 'Task published',
  },
  task: {
    cancel: 'Cancel task', cancelReason: 'Reason for cancelling', needReason: 'A reason is needed', cancelled: 'Task cancelled', history: 'History', assignment: 'claim #{id}',
    byTimer: 'timer ({timer})', byPerson: 'by person #{id}', counts: 'Progress', evidence: '{n} photo(s)',
  },
  review: {
    count: '{n} to review', flaggedOnly: 'Flagged only', keys: 'Keys: J/K next/previous, A approve, R reject', empty: 'No report awaits review', approve: 'Approve', reject: 'Reject',
    reason: 'Give the reason', approved: 'Approved', rejected: 'Rejected', worker: 'Worker', submitted: 'Submitted', distance: 'Distance from place', autoAt: 'Auto-approval at',
    flags: 'Flags', noFlags: 'None', notes: 'Notes', checkins: 'Check-ins', hashOk: 'hash matches', hashBad: 'hash mismatch', noPhotos: 'No photos',
  },
  budgets: {
    total: 'Budget total', reserved: 'Reserved by tasks', level: 'Level', available: 'Available', openTasks: 'Open tasks', grant: 'Grant', from: 'From', to: 'To', amount: 'Points',
    memo: 'Memo', issue: 'Issue points', policy: 'Points policy', objection: 'Objection window', days: 'days', expiry: 'Expiry', expiryNone: 'Never', expiryNextYear: 'End of next year',
    adjust: 'Manual adjustment', worker: 'Person id', category: 'Category', reason: 'Reason', adjustHint: 'Adjustments are audited and appear on the public points board with their category (never the reason text).',
  },
  merchants: {
    onboard: 'Onboard merchant', name: 'Name', address: 'Address', contact: 'Contact', contactPhone: 'Contact phone', keys: 'API keys', created: 'Created', revoke: 'Revoke',
    revokeConfirm: 'Revoke key {key} now?', newKey: 'New key', rotate: 'Rotate keys', secretTitle: 'New key', staff: 'Staff', personId: 'Person id', addStaff: 'Add',
    openPeriod: 'Open period', captures: 'Captures', charges: 'Charges', refunds: 'Refunds', net: 'Net', settle: 'Settle period', settled: 'Settled', settlements: 'Settlements', period: 'Period',
    suspend: 'Suspend', reinstate: 'Reinstate', offers: 'Offers', offer: 'Offer', price: 'Price', stock: 'Stock', sold: 'Sold',
  },
  audit: {
    status: 'Checkpoints', logSize: 'Log size', signedSize: 'Latest signed size', signedAt: 'Signed at', none: 'none yet', unsealed: 'Unsealed', alarm: 'Alarm', noAlarm: 'OK',
    trialBalance: 'Trial balance', tbTotal: 'Total {total} (inside {inside}, outside {outside})', mismatched: '{n} mismatched accounts', kind: 'Kind', balance: 'Balance', accounts: 'Accounts',
    log: 'Audit log', actionFilter: 'Action (e.g. report.)', at: 'Time', actor: 'Actor', action: 'Action', object: 'Object', anomalies: 'Anomalies', rule: 'Rule', subject: 'Subject', evidence: 'Evidence',
    statement: 'Statements', show: 'Show', xlsx: 'Export XLSX', available: 'Available', pending: 'Pending', logIndex: 'Log index', export: 'Export', format: 'Format', range: 'Range',
    download: 'Download', exporting: 'Exporting…', pages: '{n} page(s) fetched',
  },
  dash: {
    title: 'Street dashboard', published: 'Tasks published today', claimed: 'Claimed', reported: 'Reported', approved: 'Approved', issued: 'Points issued', redeemed: 'Points redeemed', active: 'Active workers',
    pending: 'Points pending', workers: 'Workers', trend: 'Last {n} days', children: 'Completion and points per worker', completion: 'Completion', perWorker: 'Points per worker', anomalies: 'Anomalies today',
    noAnomalies: 'No anomalies', redemptions: 'Merchant redemptions', todayRedeemed: 'today {n} points / {c}', byUnit: 'Units today', asOf: 'As of {at}, refreshed every {s} s',
  },
};
export default en;
