//! Every permission Comet checks, declared once.
//!
//! Each entry gives the type routes name in their first argument (`Authorized<UserRead>` in the
//! API), the name tokens carry, the one-line description shown to admins, its scope, and the
//! default roles that hold it.
//!
//! Scope `project` permissions are granted by a project's roles. Scope `platform` permissions
//! (`projects:manage`, `queues:write`, whose pause stops every project's jobs, ...) belong to platform operators only: no role can hold one (the
//! `permissions` table marks them and a trigger on `role_permissions` refuses them), and a token
//! grants one only when it is a platform token (`comet-api token --platform`, see
//! [`crate::auth::Claims::platform`]), whatever its permission list says, `*` included. Everything else follows from this list: the `permissions` table is brought in
//! line with it after every migration (`db::migrate`), a project's default roles are
//! built from it (`db::roles::ensure_defaults`), and a permission added here is granted
//! to the default roles of existing projects once, when it first appears (or stops being a
//! platform permission).

/// A permission a route needs.
pub trait Permission {
    /// Its name as carried in tokens, e.g. `jobs:read`.
    const NAME: &'static str;
}

/// A permission as the lists see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionInfo {
    /// The name tokens carry.
    pub name: &'static str,
    /// One line for admins.
    pub description: &'static str,
    /// The default roles that hold it (none: granted only by hand, or by minted tokens).
    pub default_roles: &'static [&'static str],
    /// Platform operators only: never held by a role, granted only by platform tokens.
    pub platform_only: bool,
}

/// Every project's default roles, with their descriptions.
pub const DEFAULT_ROLES: &[(&str, &str)] = &[
    ("admin", "Manages users, roles, jobs, rules and API keys"),
    (
        "member",
        "Reads users, jobs, rules, events and transfer buckets",
    ),
];

/// Whether a scope is `platform` (the other is `project`).
macro_rules! platform_only {
    (platform) => {
        true
    };
    (project) => {
        false
    };
}

macro_rules! permissions {
    ($($ty:ident => $name:literal, $description:literal, $scope:ident [$($role:literal),*];)*) => {
        $(
            #[doc = concat!("The `", $name, "` permission: ", $description, ".")]
            #[derive(Debug)]
            pub struct $ty;
            impl Permission for $ty {
                const NAME: &'static str = $name;
            }
        )*
        /// Every permission, in declaration order.
        pub const ALL: &[PermissionInfo] = &[$(PermissionInfo {
            name: $name,
            description: $description,
            default_roles: &[$($role),*],
            platform_only: platform_only!($scope),
        }),*];
        /// Every permission's name, in declaration order.
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

permissions! {
    UserCreate => "user:create", "Invite users and resend invitations", project ["admin"];
    UserRead => "user:read", "List, view and export users", project ["admin", "member"];
    UserUpdate => "user:update", "Change users' names, invited users' emails and users' roles", project ["admin"];
    UserDeactivate => "user:deactivate", "Deactivate and reactivate users", project ["admin"];
    RoleRead => "role:read", "See roles, the permissions they grant and how many users hold them", project ["admin"];
    RoleWrite => "role:write", "Create, change and delete roles", project ["admin"];
    AuditRead => "audit:read", "Read and export the audit log", project ["admin"];
    JobsRead => "jobs:read", "See the status of jobs", project ["admin", "member"];
    JobsWrite => "jobs:write", "Enqueue, retry and cancel jobs", project ["admin"];
    EventsWrite => "events:write", "Send events (an API key of the project may too)", project ["admin"];
    EventsRead => "events:read", "See events and what they matched", project ["admin", "member"];
    RuleRead => "rule:read", "See alert rules", project ["admin", "member"];
    RuleWrite => "rule:write", "Create, change and delete alert rules", project ["admin"];
    QueuesRead => "queues:read", "See the queues: the project's jobs per queue and state and its open jobs (platform operators: every project's, the workers, the outbox and throughput)", project ["admin"];
    QueuesWrite => "queues:write", "Platform operators: pause and resume queues", platform [];
    DeliveriesRead => "deliveries:read", "See notifications' delivery attempts (channel, outcome, HTTP status, SMTP reply)", project ["admin"];
    ApiKeysManage => "api-keys:manage", "Create, rotate and revoke the project's API keys", project ["admin"];
    WebhooksManage => "webhooks:manage", "Manage the project's webhook endpoints and their secrets; told when one is disabled", project ["admin"];
    BucketsRead => "buckets:read", "See transfer buckets, their balances and movements", project ["admin", "member"];
    BucketsWrite => "buckets:write", "Create transfer buckets, set their thresholds, credit and debit them", project ["admin"];
    ProjectsManage => "projects:manage", "Platform operators: create, change, suspend and delete projects and their API keys", platform [];
    SchedulesRead => "schedules:read", "Platform operators: list the schedules with their next and last runs", platform [];
    SchedulesManage => "schedules:manage", "Platform operators: pause, resume and trigger schedules", platform [];
}

/// Whether `name` is a platform permission (see the module doc).
pub fn is_platform_only(name: &str) -> bool {
    ALL.iter().any(|p| p.platform_only && p.name == name)
}

/// The permissions default role `role` starts with.
pub fn of_default_role(role: &str) -> Vec<&'static str> {
    ALL.iter()
        .filter(|p| p.default_roles.contains(&role))
        .map(|p| p.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut names = NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NAMES.len(), "a permission is declared twice");
        for p in ALL {
            let (resource, action) = p.name.split_once(':').expect("resource:action");
            assert!(!resource.is_empty() && !action.is_empty(), "{}", p.name);
            assert!(!p.description.is_empty(), "{} has no description", p.name);
        }
    }

    #[test]
    fn default_roles_are_declared_roles() {
        for p in ALL {
            for role in p.default_roles {
                assert!(
                    DEFAULT_ROLES.iter().any(|(r, _)| r == role),
                    "{} names unknown default role {role}",
                    p.name
                );
            }
        }
        assert!(of_default_role("admin").contains(&"user:create"));
        assert!(of_default_role("admin").contains(&"queues:read"));
        assert!(!of_default_role("admin").contains(&"queues:write"));
        assert_eq!(
            of_default_role("member"),
            [
                "user:read",
                "jobs:read",
                "events:read",
                "rule:read",
                "buckets:read"
            ]
        );
    }

    #[test]
    fn platform_permissions_are_in_no_default_role() {
        assert!(is_platform_only("projects:manage"));
        assert!(!is_platform_only("api-keys:manage"));
        assert!(!is_platform_only("no:such"));
        for p in ALL.iter().filter(|p| p.platform_only) {
            assert!(p.default_roles.is_empty(), "{} is platform-only", p.name);
        }
        for (role, _) in DEFAULT_ROLES {
            assert!(
                !of_default_role(role).contains(&"projects:manage"),
                "{role}"
            );
        }
        let admin = of_default_role("admin");
        // pausing a queue stops every project's jobs: a platform permission, never a role's;
        // the queue views follow the token, so a project's admin holds queues:read
        assert!(is_platform_only("queues:write"));
        assert!(!is_platform_only("queues:read"));
        for p in ALL.iter().filter(|p| !p.platform_only) {
            assert!(admin.contains(&p.name), "admin holds {}", p.name);
        }
    }
}
