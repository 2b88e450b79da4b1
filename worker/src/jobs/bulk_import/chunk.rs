//! Writing one chunk of an import in one transaction: its claim in `user_import_chunks` (the
//! checkpoint: a chunk another attempt committed, or an import cancelled meanwhile, writes
//! nothing), the users (one `INSERT … SELECT FROM unnest` for the chunk, so the user-count
//! triggers see one statement), their roles, their invitations and `send_invitation` jobs
//! (outbox), the updates of existing users, the rows' errors, and last the import's counters
//! (so that chunks written in parallel hold the import's row only while they commit).

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use shared::{
    db::{
        self,
        imports::{ChunkCounts, RowError},
    },
    imports::{ImportOptions, OnDuplicate},
    jobs::{EnqueueOptions, Job as _, SendInvitation},
    queue::NewJob,
    secrets,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::rows::{Judged, ValidRow};
use crate::context::JobContext;

/// Rows per chunk of a new import (an import keeps the size its first attempt used, so a
/// resumed attempt cuts the file where the first one did).
pub const CHUNK_ROWS: u32 = 5000;

/// A chunk of judged rows.
#[derive(Debug)]
pub struct Chunk {
    /// Its number: data rows `index × rows per chunk` onwards.
    pub index: u32,
    /// The rows.
    pub rows: Vec<Judged>,
    /// Bytes of the file read up to the chunk's last row (CSV).
    pub bytes_at: u64,
    /// Data rows estimated from the bytes read so far (CSV), if any.
    pub estimate: Option<u64>,
}

/// What one import is, for the chunk writer.
pub struct Target<'a> {
    /// The tenant.
    pub project_id: Uuid,
    /// The import.
    pub import_id: Uuid,
    /// Its uploader (the invitations' inviter).
    pub created_by: Option<Uuid>,
    /// Its options.
    pub options: &'a ImportOptions,
    /// The job's request (for the invitation jobs).
    pub request_id: Option<String>,
    /// The email column's header (for duplicate errors).
    pub email_header: String,
}

/// What happened to a chunk.
#[derive(Debug)]
pub enum Written {
    /// Committed, with these counts.
    Done(ChunkCounts),
    /// Already committed by an earlier attempt.
    AlreadyDone,
    /// The import was cancelled (or has ended): nothing written.
    Stopped,
}

/// Writes `chunk` (see the module docs).
pub async fn write(ctx: &JobContext, t: &Target<'_>, chunk: &Chunk) -> Result<Written, sqlx::Error> {
    let mut tx = ctx.pool.begin().await?;
    if db::imports::stopping(&mut tx, t.project_id, t.import_id).await? {
        return Ok(Written::Stopped);
    }
    if !db::imports::claim_chunk(&mut tx, t.import_id, chunk.index as i32).await? {
        return Ok(Written::AlreadyDone);
    }
    let rows = &chunk.rows[..];

    let mut errors: Vec<RowError> = Vec::new();
    let mut valid: Vec<&ValidRow> = Vec::with_capacity(rows.len());
    for r in rows {
        match r {
            Judged::Valid(v) => valid.push(v),
            Judged::Invalid(e) => errors.extend(e.iter().cloned()),
        }
    }
    let mut counts = ChunkCounts {
        rows: rows.len() as i64,
        bytes_done: chunk.bytes_at as i64,
        failed: (rows.len() - valid.len()) as i64,
        total_rows: chunk.estimate.map(|e| e as i64),
        ..ChunkCounts::default()
    };

    let existing: HashMap<String, Uuid>;
    if t.options.dry_run {
        let emails: Vec<&str> = valid.iter().map(|v| v.email.as_str()).collect();
        existing = existing_users(&mut tx, t.project_id, &emails).await?;
        counts.created = valid.iter().filter(|v| !existing.contains_key(&v.email)).count() as i64;
    } else {
        // one statement inserts the chunk's users; the rows it leaves out (the email is taken)
        // are the existing users, looked up in one more
        let created = insert_users(&mut tx, t.project_id, &valid).await?;
        let taken: Vec<&str> = valid
            .iter()
            .filter(|v| !created.contains_key(&v.email))
            .map(|v| v.email.as_str())
            .collect();
        existing = existing_users(&mut tx, t.project_id, &taken).await?;
        let fresh: Vec<&ValidRow> = valid.iter().copied().filter(|v| created.contains_key(&v.email)).collect();
        counts.created = created.len() as i64;
        let mut grants: Vec<(Uuid, Uuid)> = Vec::new();
        for v in &fresh {
            if let Some(id) = created.get(&v.email) {
                grants.extend(v.role_ids.iter().map(|r| (*id, *r)));
            }
        }
        let invited: Vec<Uuid> = fresh
            .iter()
            .filter(|v| v.status == shared::db::users::UserStatus::Invited)
            .filter_map(|v| created.get(&v.email).copied())
            .collect();
        if t.options.on_duplicate == OnDuplicate::Update {
            let updates: Vec<(Uuid, Option<&str>)> = valid
                .iter()
                .filter_map(|v| existing.get(&v.email).map(|id| (*id, v.name.as_deref())))
                .collect();
            update_names(&mut tx, t.project_id, &updates).await?;
            for v in &valid {
                if let Some(id) = existing.get(&v.email) {
                    grants.extend(v.role_ids.iter().map(|r| (*id, *r)));
                }
            }
        }
        grant_roles(&mut tx, t.project_id, &grants).await?;
        if !invited.is_empty() {
            invite(ctx, &mut tx, t, &invited).await?;
        }
    }
    for v in &valid {
        let Some(id) = existing.get(&v.email) else { continue };
        match t.options.on_duplicate {
            OnDuplicate::Skip => counts.skipped += 1,
            OnDuplicate::Update => counts.updated += 1,
            OnDuplicate::Fail => {
                counts.failed += 1;
                errors.push(RowError {
                    row_number: v.number as i64,
                    column_name: Some(t.email_header.clone()),
                    value: Some(v.email.clone()),
                    message: format!("a user with this email already exists ({id})"),
                });
            }
        }
    }
    errors.sort_by_key(|e| e.row_number);
    db::imports::insert_errors(&mut tx, t.project_id, t.import_id, &errors).await?;
    db::imports::advance(&mut tx, t.project_id, t.import_id, counts).await?;
    tx.commit().await?;
    Ok(Written::Done(counts))
}

/// Users of the project with these emails: email → id.
async fn existing_users(
    conn: &mut PgConnection,
    project_id: Uuid,
    emails: &[&str],
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    if emails.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT email, user_id FROM users WHERE project_id = $1 AND email = ANY($2)",
    )
    .bind(project_id)
    .bind(emails)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts the rows' users in one statement; returns email → id of those created (a conflict
/// on the email leaves the existing user alone).
async fn insert_users(
    conn: &mut PgConnection,
    project_id: Uuid,
    rows: &[&ValidRow],
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    let emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
    let names: Vec<Option<&str>> = rows.iter().map(|r| r.name.as_deref()).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let created: Vec<(String, Uuid)> = sqlx::query_as(
        "INSERT INTO users (user_id, project_id, email, name, status) \
         SELECT u.id, $1, u.email, u.name, u.status \
         FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) AS u (id, email, name, status) \
         ON CONFLICT (project_id, email) DO NOTHING RETURNING email, user_id",
    )
    .bind(project_id)
    .bind(ids)
    .bind(emails)
    .bind(names)
    .bind(statuses)
    .fetch_all(conn)
    .await?;
    Ok(created.into_iter().collect())
}

/// Sets the names of existing users (a row without a name leaves the name as it is).
async fn update_names(
    conn: &mut PgConnection,
    project_id: Uuid,
    updates: &[(Uuid, Option<&str>)],
) -> Result<(), sqlx::Error> {
    let (ids, names): (Vec<Uuid>, Vec<&str>) = updates
        .iter()
        .filter_map(|(id, name)| name.map(|n| (*id, n)))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE users u SET name = v.name \
         FROM unnest($2::uuid[], $3::text[]) AS v (id, name) \
         WHERE u.project_id = $1 AND u.user_id = v.id AND u.name IS DISTINCT FROM v.name",
    )
    .bind(project_id)
    .bind(ids)
    .bind(names)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives roles (user, role) in one statement; roles already held stay.
async fn grant_roles(
    conn: &mut PgConnection,
    project_id: Uuid,
    grants: &[(Uuid, Uuid)],
) -> Result<(), sqlx::Error> {
    if grants.is_empty() {
        return Ok(());
    }
    let (users, roles): (Vec<Uuid>, Vec<Uuid>) = grants.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO user_roles (project_id, user_id, role_id) \
         SELECT $1, g.u, g.r FROM unnest($2::uuid[], $3::uuid[]) AS g (u, r) \
         ON CONFLICT DO NOTHING",
    )
    .bind(project_id)
    .bind(users)
    .bind(roles)
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates the invitations of the chunk's new `INVITED` users and queues their emails through
/// the outbox, in the chunk's transaction.
async fn invite(
    ctx: &JobContext,
    conn: &mut PgConnection,
    t: &Target<'_>,
    users: &[Uuid],
) -> Result<(), sqlx::Error> {
    let expires_at: DateTime<Utc> = (Utc::now()
        + chrono::Duration::days(i64::from(ctx.settings.users.invitation_expiry_days)))
    .trunc_subsecs(6);
    let mut invitation_ids = Vec::with_capacity(users.len());
    let mut hashes = Vec::with_capacity(users.len());
    let mut jobs: Vec<NewJob> = Vec::with_capacity(users.len());
    for &user_id in users {
        let token = secrets::new_token();
        let invitation_id = Uuid::now_v7();
        let token_hash = secrets::token_hash(&token);
        let job = SendInvitation {
            project_id: t.project_id,
            invitation_id,
            user_id,
            inviter_id: t.created_by,
            sealed_token: secrets::seal(&ctx.settings.auth.jwt_secret, &token),
            token_hash: token_hash.clone(),
            resent: false,
        };
        let opts = EnqueueOptions {
            request_id: t.request_id.clone(),
            ..EnqueueOptions::default()
        };
        jobs.push(job.to_new_job(opts).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        invitation_ids.push(invitation_id);
        hashes.push(token_hash);
    }
    sqlx::query(
        "INSERT INTO user_invitations (invitation_id, project_id, user_id, token_hash, invited_by, expires_at) \
         SELECT i.id, $1, i.u, i.h, $5, $6 FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS i (id, u, h)",
    )
    .bind(t.project_id)
    .bind(&invitation_ids)
    .bind(users)
    .bind(&hashes)
    .bind(t.created_by)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    db::outbox::insert_many(conn, &jobs).await
}
