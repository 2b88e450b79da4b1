-- Partitioned queues (QUEUE_PARTITIONS): a job's partition key travels with it through the
-- outbox, so jobs of one key land in one partition (and keep their order there).
ALTER TABLE job_outbox ADD COLUMN partition_key text;
