-- Bulk user imports (`POST /api/v1/users/imports`, the `bulk_import` job).
--
-- The uploaded file lives in Postgres, in 1 MiB parts, so that any worker can read it and the
-- API never holds it in memory; its parts are deleted once the import has finished. The job's
-- checkpoint is the set of committed chunks (`user_import_chunks`): every chunk of rows commits
-- in one transaction with its row in that table, the users it creates, their invitations and
-- `send_invitation` jobs (outbox), its errors and the import's counters, so an attempt that
-- dies resumes with the chunks that did not commit. Chunks commit out of order (the job writes
-- two at once), so the checkpoint is a set rather than a row count.

CREATE TABLE user_imports (
    import_id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    created_by uuid,
    job_id uuid NOT NULL,
    -- queued → running → completed | failed | cancelled
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    file_name text,
    file_sha256 text NOT NULL,
    file_bytes bigint NOT NULL CHECK (file_bytes > 0),
    format text NOT NULL CHECK (format IN ('csv', 'xlsx')),
    -- the options as given (dryRun, onDuplicate, sendInvitations, defaultRoleIds, columns, ...)
    options jsonb NOT NULL,
    -- the column mapping found at upload: field → header, and the unknown headers
    columns jsonb NOT NULL,
    total_rows bigint,
    total_estimated boolean NOT NULL DEFAULT true,
    -- rows in committed chunks
    rows_done bigint NOT NULL DEFAULT 0,
    -- rows per chunk, fixed by the first attempt (a resumed attempt cuts the file the same way)
    chunk_rows integer CHECK (chunk_rows > 0),
    bytes_done bigint NOT NULL DEFAULT 0,
    created bigint NOT NULL DEFAULT 0,
    updated bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    error text,
    cancel_requested_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    progress_at timestamptz,
    finished_at timestamptz,
    CONSTRAINT user_imports_project_import_key UNIQUE (project_id, import_id)
);
CREATE INDEX user_imports_project_created ON user_imports (project_id, created_at DESC, import_id);

CREATE TABLE user_import_chunks (
    import_id uuid NOT NULL REFERENCES user_imports (import_id) ON DELETE CASCADE,
    chunk integer NOT NULL CHECK (chunk >= 0),
    PRIMARY KEY (import_id, chunk)
);

CREATE TABLE user_import_parts (
    import_id uuid NOT NULL REFERENCES user_imports (import_id) ON DELETE CASCADE,
    seq integer NOT NULL CHECK (seq >= 0),
    data bytea NOT NULL,
    PRIMARY KEY (import_id, seq)
);
-- the parts are written once and read once or twice: no compression attempt (CSV compresses
-- well, but pglz on 1 MiB values costs more CPU than the disk it saves here)
ALTER TABLE user_import_parts ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE user_import_errors (
    import_id uuid NOT NULL REFERENCES user_imports (import_id) ON DELETE CASCADE,
    project_id uuid NOT NULL,
    -- the file's row number as a spreadsheet shows it (the header is row 1)
    row_number bigint NOT NULL,
    seq smallint NOT NULL DEFAULT 0,
    column_name text,
    value text,
    message text NOT NULL,
    PRIMARY KEY (import_id, row_number, seq)
);
