-- Transfer buckets (issue 12, seed 002 phase 12): a project's balances in one currency each,
-- moved by credits and debits, with a low-balance threshold that raises a `bucket.low_balance`
-- event once per crossing.
--
-- Amounts are exact: numeric(19,4) holds every ISO 4217 minor unit in use (0 to 4 decimal
-- places) below 10^15; the API refuses more decimal places than the bucket's currency has
-- (`scale`), so nothing is ever rounded. No floating point anywhere.
--
-- `alerting` is the hysteresis state: set (and `alert_seq` counted) when the balance goes below
-- `low_threshold`, cleared when it goes back above `low_threshold + rearm_margin`. Movements
-- set it in the statement that moves the balance; `bucket_monitor` catches rows whose state is
-- stale (changed by SQL, a crash) through `transfer_buckets_stale`, a partial index holding
-- exactly the rows whose state should change: empty when all is in order, so a sweep over a
-- million buckets reads nothing. (Its predicate names `balance`, so a movement is never a HOT
-- update: an accepted cost, each movement writes a transaction row anyway.)

CREATE TABLE transfer_buckets (
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    bucket_id uuid NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- the currency's minor units (ISO 4217): JPY 0, USD 2, KWD 3, CLF 4
    scale smallint NOT NULL CHECK (scale BETWEEN 0 AND 4),
    balance numeric(19, 4) NOT NULL,
    low_threshold numeric(19, 4) NOT NULL CHECK (low_threshold >= 0),
    rearm_margin numeric(19, 4) NOT NULL DEFAULT 0 CHECK (rearm_margin >= 0),
    allow_negative boolean NOT NULL DEFAULT false,
    alerting boolean NOT NULL DEFAULT false,
    -- when the current alert began (NULL while armed)
    alerting_since timestamptz,
    -- crossings so far: the n-th crossing's event has idempotency key
    -- `bucket.low_balance:<bucket_id>:<n>`
    alert_seq bigint NOT NULL DEFAULT 0,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, bucket_id),
    CONSTRAINT transfer_buckets_non_negative CHECK (allow_negative OR balance >= 0)
);
CREATE TRIGGER transfer_buckets_updated_at BEFORE UPDATE ON transfer_buckets
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE UNIQUE INDEX transfer_buckets_name ON transfer_buckets (project_id, name);
CREATE INDEX transfer_buckets_project_created
    ON transfer_buckets (project_id, created_at, bucket_id);
-- the rows whose `alerting` is stale (see above); the predicate is written exactly as
-- `shared::db::buckets` writes it, so the planner uses the index
CREATE INDEX transfer_buckets_stale ON transfer_buckets (project_id, bucket_id)
    WHERE (NOT alerting AND balance < low_threshold)
       OR (alerting AND balance > low_threshold + rearm_margin);

CREATE TABLE bucket_transactions (
    project_id uuid NOT NULL,
    bucket_id uuid NOT NULL,
    transaction_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('credit', 'debit')),
    amount numeric(19, 4) NOT NULL CHECK (amount > 0),
    reference text CHECK (length(reference) BETWEEN 1 AND 200),
    idempotency_key text NOT NULL,
    balance_after numeric(19, 4) NOT NULL,
    actor_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, bucket_id, transaction_id),
    FOREIGN KEY (project_id, bucket_id)
        REFERENCES transfer_buckets (project_id, bucket_id) ON DELETE CASCADE,
    CONSTRAINT bucket_transactions_key UNIQUE (project_id, bucket_id, idempotency_key)
);
CREATE INDEX bucket_transactions_created
    ON bucket_transactions (project_id, bucket_id, created_at, transaction_id);
