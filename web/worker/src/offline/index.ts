// The offline model of the worker app (docs/OPERATIONS.md, "The worker app offline"): a
// report is saved on the phone first and sent when the network allows, evidence first.
export * from './outbox';
export { preparePhoto, sha256Hex, PHOTO_MAX_SIDE } from './photo';
export { DB_NAME } from './db';
