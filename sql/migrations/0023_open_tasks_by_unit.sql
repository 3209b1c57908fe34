-- sql/migrations/0023_open_tasks_by_unit.sql
-- The worker's task list ("tasks near me": open tasks of the units above the worker) read
-- tasks_unit (unit_id, id), which holds every task a unit ever had, and kept the open ones by
-- a BitmapAnd with tasks_open_ends: its cost grew with the closed history of the worker's grid
-- (make bench, "cost independent of history": 141 shared buffers per call on a tenth of the
-- history, 1,096 on the full set). The open tasks of a unit, and only those, are this index.
-- (A task row is written once at publication and its status changes only on close/cancel, so
-- the index costs one entry per task, not per claim or report.)
CREATE INDEX tasks_open_unit ON tasks (unit_id, id) WHERE status = 'open';
