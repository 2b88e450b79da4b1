-- Projects become manageable tenants (slug, description, status, settings, soft delete), with
-- API keys for machine callers; platform-only permissions can never be held by a role.

ALTER TABLE projects
    ADD COLUMN slug text,
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- known keys only, checked by the API (shared::domain::ProjectSettings)
    ADD COLUMN settings jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    ADD COLUMN deleted_at timestamptz,
    -- bumped by every change of the row: orders the project-state markers kept in Redis
    ADD COLUMN version bigint NOT NULL DEFAULT 0;

-- Slugs for the projects that exist: the name's ASCII letters and digits, other runs as '-'
-- (or 'project'), and the id's first characters appended when two names give the same slug.
UPDATE projects p SET slug = s.slug
FROM (
    SELECT project_id,
           CASE WHEN row_number() OVER (PARTITION BY base ORDER BY created_at, project_id) = 1
                THEN base
                ELSE left(base, 54) || '-' || left(replace(project_id::text, '-', ''), 8)
           END AS slug
    FROM (
        SELECT project_id, created_at,
               coalesce(nullif(trim(BOTH '-' FROM left(
                   regexp_replace(lower(name), '[^a-z0-9]+', '-', 'g'), 63)), ''), 'project') AS base
        FROM projects
    ) b
) s
WHERE s.project_id = p.project_id;

ALTER TABLE projects
    ALTER COLUMN slug SET NOT NULL,
    ADD CONSTRAINT projects_slug_format
        CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    DROP CONSTRAINT projects_name_key;
-- names and slugs are unique among live projects: a deleted project's are free again
CREATE UNIQUE INDEX projects_name_key ON projects (name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX projects_slug_key ON projects (slug) WHERE deleted_at IS NULL;
CREATE INDEX projects_created ON projects (created_at DESC, project_id DESC);

-- Platform permissions (`projects:manage`) belong to platform tokens only: no role may hold one.
ALTER TABLE permissions ADD COLUMN platform_only boolean NOT NULL DEFAULT false;

CREATE FUNCTION role_permissions_project_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM permissions WHERE name = NEW.permission AND platform_only) THEN
        RAISE EXCEPTION 'permission % is for platform operators only; no role can hold it',
            NEW.permission
            USING ERRCODE = 'check_violation', CONSTRAINT = 'role_permissions_project_only';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER role_permissions_project_only BEFORE INSERT OR UPDATE ON role_permissions
    FOR EACH ROW EXECUTE FUNCTION role_permissions_project_only();

-- A project's API keys. Only the SHA-256 of a key is stored; the prefix is its visible handle
-- and how a presented key is found. After a rotation the previous secret's hash stays valid
-- until previous_valid_until (the grace period).
CREATE TABLE api_keys (
    api_key_id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    name text NOT NULL,
    prefix text NOT NULL,
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    previous_hash bytea CHECK (length(previous_hash) = 32),
    previous_valid_until timestamptz,
    expires_at timestamptz,
    last_used_at timestamptz,
    rotated_at timestamptz,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    CONSTRAINT api_keys_project_name_key UNIQUE (project_id, name),
    CONSTRAINT api_keys_previous CHECK ((previous_hash IS NULL) = (previous_valid_until IS NULL))
);
CREATE TRIGGER api_keys_updated_at BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX api_keys_project ON api_keys (project_id, created_at);
