-- Users, roles and permissions, invitations, audit: the user-management panel.
-- Every tenant table carries project_id; every query filters on it.

CREATE TABLE permissions (
    name text PRIMARY KEY,
    description text NOT NULL
);

INSERT INTO permissions (name, description) VALUES
    ('user:create', 'Invite users and resend invitations'),
    ('user:read', 'List, view and export users'),
    ('user:update', 'Change users'' roles'),
    ('user:deactivate', 'Deactivate users'),
    ('audit:read', 'Read and export the audit log'),
    ('jobs:read', 'See the status of jobs'),
    ('jobs:write', 'Enqueue, retry and cancel jobs'),
    ('queues:read', 'Platform operators: queue counts and job lists across projects');

CREATE TABLE roles (
    role_id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_project_name_key UNIQUE (project_id, name),
    -- lets user_roles reference (project_id, role_id): a role of another project cannot be given
    CONSTRAINT roles_project_role_key UNIQUE (project_id, role_id)
);
CREATE TRIGGER roles_updated_at BEFORE UPDATE ON roles
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE role_permissions (
    role_id uuid NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
    permission text NOT NULL REFERENCES permissions (name) ON DELETE CASCADE,
    PRIMARY KEY (role_id, permission)
);

CREATE TABLE users (
    user_id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    email text NOT NULL CHECK (email = lower(email)),
    name text,
    status text NOT NULL CHECK (status IN ('INVITED', 'ACTIVE', 'DEACTIVATED')),
    password_hash text,
    last_seen_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_project_email_key UNIQUE (project_id, email),
    CONSTRAINT users_project_user_key UNIQUE (project_id, user_id)
);
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX users_project_status ON users (project_id, status);
CREATE INDEX users_project_created ON users (project_id, created_at, user_id);

CREATE TABLE user_roles (
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role_id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, role_id) REFERENCES roles (project_id, role_id) ON DELETE CASCADE
);
CREATE INDEX user_roles_role ON user_roles (project_id, role_id);

CREATE TABLE user_invitations (
    invitation_id uuid PRIMARY KEY,
    project_id uuid NOT NULL,
    user_id uuid NOT NULL UNIQUE,
    token_hash text NOT NULL UNIQUE,
    invited_by uuid,
    expires_at timestamptz NOT NULL,
    -- PENDING until the email is accepted by the mail server, SENT after, FAILED when sending gave up
    delivery text NOT NULL DEFAULT 'PENDING' CHECK (delivery IN ('PENDING', 'SENT', 'FAILED')),
    delivery_error text,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, user_id) ON DELETE CASCADE
);
CREATE INDEX user_invitations_expiry ON user_invitations (expires_at);

CREATE TABLE audit_log (
    audit_id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    actor_id uuid,
    action text NOT NULL,
    target_type text,
    target_id text,
    metadata jsonb NOT NULL DEFAULT '{}',
    request_id text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_project_at ON audit_log (project_id, at DESC, audit_id DESC);
CREATE INDEX audit_log_project_action ON audit_log (project_id, action, at DESC);
