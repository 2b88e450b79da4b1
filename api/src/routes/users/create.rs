//! Creating an ACTIVE user directly with a password, for setups without email (no invitation,
//! no job): the admin hands the password over by other means.

use axum::extract::State;
use serde::Deserialize;
use shared::{
    db::{self, audit::NewEntry, users::User},
    domain::{DisplayName, EmailAddress, FieldErrors, Invalid, Password, required},
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::invite::{MAX_ROLES, email_taken, is_email_taken};
use crate::{
    AppState,
    auth::{Authorized, UserCreate},
    envelope::Created,
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ValidJson, Validate},
    passwords, request_id,
};

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Its email, its login (stored lower-cased).
    #[schema(required = true, nullable = false, value_type = EmailAddress)]
    pub email: Option<String>,
    /// Display name (blank: none).
    #[schema(value_type = Option<DisplayName>)]
    pub name: Option<String>,
    /// Its password (the same rules as any password a user chooses).
    #[schema(required = true, nullable = false, value_type = Password)]
    pub password: Option<String>,
    /// Its roles: 1 to 50 ids of the caller's project's roles.
    #[schema(required = true, nullable = false, min_items = 1, max_items = 50)]
    pub role_ids: Option<Vec<Uuid>>,
}

/// A valid [`CreateUserRequest`].
#[derive(Debug)]
pub struct NewUser {
    email: EmailAddress,
    name: Option<DisplayName>,
    password: Password,
    /// Sorted, without duplicates.
    role_ids: Vec<Uuid>,
}

impl Validate for CreateUserRequest {
    type Valid = NewUser;

    fn validate(self) -> Result<NewUser, FieldErrors> {
        let mut errors = FieldErrors::new();
        let email = errors.check(
            "email",
            required(self.email).and_then(|e| EmailAddress::parse(&e)),
        );
        let name = errors.check("name", DisplayName::parse_optional(self.name.as_deref()));
        // `Password::parse` is the one place a chosen password is checked
        let password = errors.check(
            "password",
            required(self.password).and_then(Password::parse),
        );
        let role_ids = errors.check(
            "roleIds",
            required(self.role_ids).and_then(|mut ids| {
                if ids.is_empty() {
                    return Err(Invalid::new("give at least one role"));
                }
                if ids.len() > MAX_ROLES {
                    return Err(Invalid::new(format!("at most {MAX_ROLES} roles")));
                }
                ids.sort();
                ids.dedup();
                Ok(ids)
            }),
        );
        match (email, name, password, role_ids) {
            (Some(email), Some(name), Some(password), Some(role_ids)) => Ok(NewUser {
                email,
                name,
                password,
                role_ids,
            }),
            _ => Err(errors),
        }
    }
}

/// Creates an `ACTIVE` user with a password and roles (`201`, `Location`: the user); it logs in
/// at once. Audited as `user.created`. For setups without email; `POST /users/invite` lets the
/// user choose its own password.
///
/// Permission: `user:create`. 409 if the email is a user of the project already (for a
/// deactivated one, the message names its reactivation); 422 for a bad email, a password
/// outside the rules, no or unknown roles; 503 with `Retry-After` while password hashing is at
/// capacity.
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    request_body = CreateUserRequest,
    security(("bearer" = ["user:create"])),
    responses((status = 201, body = inline(crate::envelope::Data<User>),
               headers(("Location" = String, description = "The user's URL"))),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn create_user(
    auth: Authorized<UserCreate>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<CreateUserRequest>,
) -> Result<Created<User>> {
    let project = auth.claims.project_id;
    // hashed before the transaction: no row stays locked during the Argon2 work
    let hash = passwords::hash(req.password).await?;
    let mut tx = s.pool.begin().await?;
    let name = req.name.as_ref().map(AsRef::as_ref);
    let user_id =
        match db::users::create_active(&mut tx, project, req.email.as_ref(), name, &hash).await {
            Err(e) if is_email_taken(&e) => {
                drop(tx);
                return Err(email_taken(&s, project, req.email.as_ref()).await);
            }
            other => other?,
        };
    let found = db::roles::existing(&mut tx, project, &req.role_ids).await?;
    if found.len() != req.role_ids.len() {
        let unknown = req
            .role_ids
            .iter()
            .filter(|id| !found.iter().any(|r| r.id == **id))
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // dropping `tx` rolls the new user back
        return Err(ApiError::invalid(
            "roleIds",
            format!("no such role in this project: {unknown}"),
        ));
    }
    for role in &req.role_ids {
        db::roles::assign(&mut tx, project, user_id, *role).await?;
    }
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "user.created")
            .actor(auth.user_id())
            .user(user_id)
            .metadata(serde_json::json!({ "roleIds": req.role_ids }))
            .request(Some(request_id::current())),
    )
    .await?;
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the new user vanished")))?;
    tx.commit().await?;
    tracing::info!(%user_id, "user created with a password");
    Ok(Created {
        location: format!("/api/v1/users/{user_id}"),
        data: user,
    })
}
