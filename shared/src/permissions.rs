//! Every permission Comet checks, declared once.
//!
//! Each entry gives the type routes name in their first argument (`Authorized<UserRead>` in the
//! API), the name tokens carry, the one-line description shown to admins, and the default roles
//! that hold it. Everything else follows from this list: the `permissions` table is brought in
//! line with it after every migration (`db::migrate`), a project's default roles are
//! built from it (`db::roles::ensure_defaults`), and a permission added here is granted
//! to the default roles of existing projects once, when it first appears.

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
    /// The default roles that hold it (none: platform operators' tokens only).
    pub default_roles: &'static [&'static str],
}

/// Every project's default roles, with their descriptions.
pub const DEFAULT_ROLES: &[(&str, &str)] = &[
    ("admin", "Manages users, roles and jobs"),
    ("member", "Reads users and jobs"),
];

macro_rules! permissions {
    ($($ty:ident => $name:literal, $description:literal, [$($role:literal),*];)*) => {
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
        }),*];
        /// Every permission's name, in declaration order.
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

permissions! {
    UserCreate => "user:create", "Invite users and resend invitations", ["admin"];
    UserRead => "user:read", "List, view and export users", ["admin", "member"];
    UserUpdate => "user:update", "Change users' roles", ["admin"];
    UserDeactivate => "user:deactivate", "Deactivate users", ["admin"];
    AuditRead => "audit:read", "Read and export the audit log", ["admin"];
    JobsRead => "jobs:read", "See the status of jobs", ["admin", "member"];
    JobsWrite => "jobs:write", "Enqueue, retry and cancel jobs", ["admin"];
    EventsWrite => "events:write", "Send events", ["admin"];
    EventsRead => "events:read", "See events and what they matched", ["admin", "member"];
    RuleRead => "rule:read", "See alert rules", ["admin", "member"];
    RuleWrite => "rule:write", "Create, change and delete alert rules", ["admin"];
    QueuesRead => "queues:read", "Platform operators: queue counts and job lists across projects", [];
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
        assert!(!of_default_role("admin").contains(&"queues:read"));
        assert_eq!(
            of_default_role("member"),
            ["user:read", "jobs:read", "events:read", "rule:read"]
        );
    }
}
