-- A job's kind is its queue (one queue per kind): the outbox no longer stores it twice.
-- Outbox rows written before this migration keep their queue, which is all the relay reads.
ALTER TABLE job_outbox DROP COLUMN kind;
