-- sql/migrations/0023_open_tasks_by_unit.sql
-- The worker's task list ("tasks near me": open tasks of the units above the worker) read
-- tasks_unit (unit_id, id), which holds every task a unit ever had, and kept the open ones by
-- a BitmapAnd with tasks_open_ends, so part of its cost grew with the closed history of the
-- worker's grid. The open tasks of a unit, and only those, are this index. Measured with
-- pgbench on gp_task_list (20,259 tasks, 60,000 workers): 76.6 -> 70.9 shared buffers per call;
-- with a tenth of the history about 60. (A task's unit, id and status change only at close or
-- cancel, so the index costs one entry per task, not per claim or report.)
CREATE INDEX tasks_open_unit ON tasks (unit_id, id) WHERE status = 'open';
