-- Paused queues (`POST /api/v1/queues/{queue}/pause`): workers fetch nothing from a paused
-- queue and finish what they hold. Postgres holds the state (Redis keeps nothing on disk here);
-- every worker copies it into Redis (`<prefix><queue>:paused`, which the fetch script checks)
-- every two seconds, so a pause survives restarts of the API, the workers and Redis.
CREATE TABLE queue_pauses (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    -- who paused it (the token's subject)
    paused_by text
);
