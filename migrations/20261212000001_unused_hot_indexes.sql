-- Two indexes that every event paid for and no query used (issue 10; BENCHMARKS.md,
-- "Notifications"). At 1,000 events/s an event writes about 75 index entries; these were 11.

-- Every read of a user's recipient rows also asks for delivered and not deleted rows
-- (the inbox list, one item, acknowledge, delete, webview actions): the partial index
-- `notification_recipients_inbox` serves them, and the primary key serves the reads by
-- notification. This one cost an entry per recipient: ten per event in the bench.
DROP INDEX notification_recipients_user;

-- No query looks events up by "not processed yet" (the events list filters on
-- `processed_at IS NOT NULL` in either sense, which this partial index cannot serve), and its
-- predicate made `process_event`'s processed mark a non-HOT update: a new entry in each of the
-- events' indexes for every event processed.
DROP INDEX events_unprocessed;
