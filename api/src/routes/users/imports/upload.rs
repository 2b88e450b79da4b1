//! `POST /api/v1/users/imports`: the upload. The body (raw, or the `file` part of a multipart
//! form) is streamed to a local temporary file while it is hashed and measured, checked
//! whole ([`shared::imports::inspect`]: format by content, every CSV record bounded, the XLSX
//! container guarded, the header mapped), then copied into Postgres in 1 MiB parts in the
//! transaction that creates the import and its `bulk_import` job (outbox). The API holds at
//! most one body frame and one part in memory.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    extract::{FromRequest, Multipart, Request, State},
    http::header,
};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shared::{
    db::{self, imports::NewImport},
    imports::{self, ColumnMap, Field, FileError, ImportOptions, OnDuplicate, ReadOptions},
    jobs::{BulkImport, Job as _},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ImportView;
use crate::{
    AppState,
    auth::{Authorized, UserCreate},
    envelope::{Accepted, Data},
    error::{ApiError, AuthRefusals, EnqueueRefusals, ErrorEnvelope, Result},
    extract::ApiQuery,
    quota, request_id,
};

/// The upload's path.
pub const PATH: &str = "/api/v1/users/imports";
/// How long an upload may take (the other routes have `REQUEST_TIMEOUT_SECS`): 200 MiB at
/// about 350 KB/s.
pub const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Longest file name kept.
const MAX_FILE_NAME: usize = 255;

/// The upload's options (query parameters).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// Validate and report, write nothing (default false).
    pub dry_run: Option<bool>,
    /// A row whose email is already a user of the project: `skip` (default), `update` (name
    /// and added roles; status unchanged) or `fail`.
    pub on_duplicate: Option<OnDuplicate>,
    /// Create users `INVITED` and email each an invitation (default false: `ACTIVE` users,
    /// no email; they set a password through a password reset). Needs a user's token.
    pub send_invitations: Option<bool>,
    /// Roles every row gets, comma-separated ids of the project's roles (at most 50).
    pub default_role_ids: Option<String>,
    /// CSV separator: `comma`, `semicolon` or `tab` (empty or absent: detected from the header).
    #[param(value_type = Option<DelimiterParam>, inline)]
    pub delimiter: Option<String>,
    /// XLSX: the sheet to read (default: the first).
    #[param(max_length = 100)]
    pub sheet: Option<String>,
    /// The file's name, for the report and the audit (multipart uploads carry their own).
    #[param(max_length = 255)]
    pub file_name: Option<String>,
    /// The header of the email column, when no alias matches (`email`, `e-mail`, `email
    /// address`, `mail`).
    #[param(max_length = 200)]
    pub email_column: Option<String>,
    /// The header of the name column (aliases `name`, `full name`, `display name`).
    #[param(max_length = 200)]
    pub name_column: Option<String>,
    /// The header of the roles column (aliases `roles`, `role`); roles by name or id,
    /// separated by `;`, `|` or `,`.
    #[param(max_length = 200)]
    pub roles_column: Option<String>,
    /// The header of the status column (aliases `status`, `state`): `active`, `invited` or
    /// `deactivated`.
    #[param(max_length = 200)]
    pub status_column: Option<String>,
}

/// The OpenAPI schema of `delimiter`.
pub struct DelimiterParam;

impl utoipa::PartialSchema for DelimiterParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::filters::one_of_or_empty(["comma", "semicolon", "tab"])
    }
}

impl ToSchema for DelimiterParam {}

/// A file's bytes, as the body.
#[derive(Deserialize, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // documents the body; the route streams it
pub struct FileBytes(Vec<u8>);

/// The form a browser sends: the file in its `file` part, and no other part.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the body; the route streams it
pub struct UploadForm {
    /// The CSV or XLSX file (its name is kept as the import's `fileName`).
    file: FileBytes,
}

/// The options checked.
struct Checked {
    options: ImportOptions,
    read: ReadOptions,
    file_name: Option<String>,
}

fn bounded(
    field: &str,
    value: Option<String>,
    max: usize,
    errors: &mut shared::domain::FieldErrors,
) -> Option<String> {
    let v = value?.trim().to_owned();
    if v.is_empty() {
        return None;
    }
    if v.chars().count() > max || v.contains('\0') {
        errors.add(field, format!("at most {max} characters, no NUL"));
        return None;
    }
    Some(v)
}

impl UploadParams {
    fn check(self) -> Result<Checked> {
        let mut errors = shared::domain::FieldErrors::new();
        let mut default_role_ids = Vec::new();
        if let Some(list) = self.default_role_ids.as_deref() {
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match Uuid::parse_str(part) {
                    Ok(id) => default_role_ids.push(id),
                    Err(_) => {
                        errors.add(
                            "defaultRoleIds",
                            format!(
                                "not a role id: {}",
                                part.chars().take(40).collect::<String>()
                            ),
                        );
                        break;
                    }
                }
            }
            if default_role_ids.len() > 50 {
                errors.add("defaultRoleIds", "at most 50 roles");
            }
            default_role_ids.sort();
            default_role_ids.dedup();
        }
        let delimiter = match self.delimiter.as_deref() {
            None | Some("") => None,
            Some("comma") => Some(b','),
            Some("semicolon") => Some(b';'),
            Some("tab") => Some(b'\t'),
            Some(_) => {
                errors.add("delimiter", "must be comma, semicolon or tab");
                None
            }
        };
        let sheet = bounded("sheet", self.sheet, 100, &mut errors);
        let file_name = bounded("fileName", self.file_name, MAX_FILE_NAME, &mut errors);
        let mut columns = BTreeMap::new();
        for (field, name, value) in [
            (Field::Email, "emailColumn", self.email_column),
            (Field::Name, "nameColumn", self.name_column),
            (Field::Roles, "rolesColumn", self.roles_column),
            (Field::Status, "statusColumn", self.status_column),
        ] {
            if let Some(v) = bounded(name, value, 200, &mut errors) {
                columns.insert(field, v);
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Checked {
            options: ImportOptions {
                dry_run: self.dry_run.unwrap_or(false),
                on_duplicate: self.on_duplicate.unwrap_or_default(),
                send_invitations: self.send_invitations.unwrap_or(false),
                default_role_ids,
                columns,
            },
            read: ReadOptions { delimiter, sheet },
            file_name,
        })
    }
}

/// An import accepted: its id, and what the upload found.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportAccepted {
    /// The import (follow it at `/api/v1/users/imports/{importId}`).
    pub import_id: Uuid,
    /// The import as it starts.
    pub import: ImportView,
}

/// The spooled upload.
struct Spooled {
    file: tempfile::NamedTempFile,
    bytes: u64,
    sha256: String,
}

fn too_large(max: u64) -> ApiError {
    let limit = if max >= 1 << 20 {
        format!("{} MiB", max >> 20)
    } else {
        format!("{max} bytes")
    };
    ApiError::invalid_file(format!(
        "the file is over the {limit} limit (IMPORT_MAX_BYTES)"
    ))
}

/// Streams `body` into a temporary file, hashing and counting it; refuses past `max` bytes.
async fn spool<E: std::fmt::Display>(
    mut body: impl Stream<Item = std::result::Result<axum::body::Bytes, E>> + Unpin,
    max: u64,
) -> Result<Spooled> {
    let file = tempfile::NamedTempFile::new().map_err(|e| ApiError::Internal(e.into()))?;
    let mut out =
        tokio::fs::File::from_std(file.reopen().map_err(|e| ApiError::Internal(e.into()))?);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(frame) = body.next().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("the upload broke off: {e}")))?;
        bytes += frame.len() as u64;
        if bytes > max {
            return Err(too_large(max));
        }
        hasher.update(&frame);
        out.write_all(&frame)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Spooled {
        file,
        bytes,
        sha256,
    })
}

impl ApiError {
    /// 422 on the `file` field.
    fn invalid_file(message: impl Into<String>) -> Self {
        ApiError::invalid("file", message)
    }
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        ApiError::invalid_file(e.to_string())
    }
}

/// Uploads a CSV or XLSX file of users to import; the `bulk_import` job imports it.
///
/// The body is the file itself (`text/csv`, the XLSX media type or `application/octet-stream`)
/// or a `multipart/form-data` form whose `file` part is the file. The format is told by the
/// content, not the name or the media type: CSV in UTF-8 (a byte-order mark is fine; comma,
/// semicolon or tab, detected from the header or given), or XLSX (the first sheet, or
/// `sheet`). The header row names the columns: email (required), name, roles, status, matched
/// case-insensitively with common aliases or mapped with `emailColumn`…; other columns are
/// ignored and listed in the import's `unknownColumns`.
///
/// Refused before any work, with a 422 on `file`: an empty file or one without rows, no
/// email column, a file that is neither CSV nor XLSX, a CSV row over 64 KiB or 256 columns, an
/// XLSX whose parts decompress past their limits (zip bombs), a file over `IMPORT_MAX_BYTES`
/// (default 200 MiB). Each row's problems are reported by the import, not here.
///
/// Permission: `user:create`; `sendInvitations` needs a user's token (the inviter). 429 at the
/// project's quota of open jobs or enqueue rate.
#[utoipa::path(post, path = "/api/v1/users/imports", tag = "users",
    params(UploadParams),
    request_body(content(
        (String = "text/csv"),
        (FileBytes = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        (FileBytes = "application/octet-stream"),
        (UploadForm = "multipart/form-data")),
        description = "The file, raw or as the `file` part of a form"),
    security(("bearer" = ["user:create"])),
    responses((status = 202, body = inline(Data<Accepted<ImportAccepted>>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              EnqueueRefusals,
              AuthRefusals))]
pub(crate) async fn upload(
    auth: Authorized<UserCreate>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<UploadParams>,
    request: Request,
) -> Result<Accepted<ImportAccepted>> {
    let project = auth.claims.project_id;
    let mut checked = params.check()?;
    let created_by = auth.user_id();
    if checked.options.send_invitations && created_by.is_none() {
        return Err(ApiError::Refused(
            "sendInvitations needs a user's token: an invitation names its inviter",
        ));
    }
    if !checked.options.default_role_ids.is_empty() {
        let mut conn = s.pool.acquire().await?;
        let found =
            db::roles::existing(&mut conn, project, &checked.options.default_role_ids).await?;
        let unknown: Vec<String> = checked
            .options
            .default_role_ids
            .iter()
            .filter(|id| !found.iter().any(|r| r.id == **id))
            .map(Uuid::to_string)
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::invalid(
                "defaultRoleIds",
                format!("no such role in this project: {}", unknown.join(", ")),
            ));
        }
    }
    quota::admit(&s, project).await?;

    let max = s.settings.users.import_max_bytes;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if let Some(len) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && !multipart
        && len > max
    {
        return Err(too_large(max));
    }
    let spooled = if multipart {
        let mut form = Multipart::from_request(request, &s).await.map_err(|e| {
            ApiError::BadRequest(format!("the form does not read: {}", e.body_text()))
        })?;
        let unreadable = |e: axum::extract::multipart::MultipartError| {
            ApiError::BadRequest(format!("the form does not read: {}", e.body_text()))
        };
        let field = form
            .next_field()
            .await
            .map_err(unreadable)?
            .ok_or_else(|| ApiError::invalid_file("the form has no `file` part"))?;
        if field.name() != Some("file") {
            let name: String = field
                .name()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect();
            return Err(ApiError::invalid_file(format!(
                "the form has a part named {name:?}; it takes only `file`"
            )));
        }
        if checked.file_name.is_none() {
            checked.file_name = field.file_name().map(|n| {
                n.chars()
                    .filter(|c| *c != '\0')
                    .take(MAX_FILE_NAME)
                    .collect()
            });
        }
        let spooled = spool(Box::pin(field), max).await?;
        if form.next_field().await.map_err(unreadable)?.is_some() {
            return Err(ApiError::invalid_file(
                "the form has a part after `file`; it takes only `file`",
            ));
        }
        spooled
    } else {
        spool(Body::into_data_stream(request.into_body()), max).await?
    };
    if spooled.bytes == 0 {
        return Err(FileError::Empty("the file is empty").into());
    }

    // the whole file is checked before anything is stored
    let path = spooled.file.path().to_owned();
    let read = checked.read.clone();
    let layout = tokio::task::spawn_blocking(move || imports::inspect(&path, &read))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let map = ColumnMap::new(&layout.headers, &checked.options.columns)?;

    let import_id = Uuid::now_v7();
    let job = BulkImport {
        project_id: project,
        import_id,
    };
    let mut tx = s.pool.begin().await?;
    let job_id = job.enqueue(&mut tx, request_id::enqueue_options()).await?;
    db::imports::create(
        &mut tx,
        NewImport {
            import_id,
            project_id: project,
            created_by,
            job_id,
            file_name: checked.file_name.as_deref(),
            file_sha256: &spooled.sha256,
            file_bytes: spooled.bytes as i64,
            format: layout.format.as_str(),
            options: serde_json::to_value(&checked.options)
                .map_err(|e| ApiError::Internal(e.into()))?,
            columns: serde_json::json!({ "layout": &layout, "map": &map }),
            total_rows: layout.rows as i64,
            total_exact: layout.rows_exact,
        },
    )
    .await?;
    let mut file = tokio::fs::File::open(spooled.file.path())
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut part = vec![0u8; db::imports::PART_BYTES];
    let mut seq = 0;
    loop {
        let mut filled = 0;
        while filled < part.len() {
            let n = file
                .read(&mut part[filled..])
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        db::imports::insert_part(&mut tx, import_id, seq, &part[..filled]).await?;
        seq += 1;
    }
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(%import_id, %job_id, bytes = spooled.bytes, rows = layout.rows, "user import accepted");
    let import = db::imports::get(&s.pool, project, import_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the new import vanished")))?;
    Ok(Accepted::job(
        job_id,
        ImportAccepted {
            import_id,
            import: ImportView::new(import, Vec::new()),
        },
    ))
}
