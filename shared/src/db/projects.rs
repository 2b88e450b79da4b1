//! Projects: the tenants. Every tenant table carries a `project_id`.

use sqlx::PgConnection;
use uuid::Uuid;

/// Creates a project (with its default roles) if none has this name; returns its id.
pub async fn ensure(conn: &mut PgConnection, name: &str) -> Result<Uuid, sqlx::Error> {
    let id: Uuid = sqlx::query_scalar(
        r#"
        WITH ins AS (
            INSERT INTO projects (project_id, name) VALUES ($1, $2)
            ON CONFLICT (name) DO NOTHING RETURNING project_id
        )
        SELECT project_id FROM ins
        UNION ALL SELECT project_id FROM projects WHERE name = $2
        LIMIT 1
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    super::roles::ensure_defaults(conn, id).await?;
    Ok(id)
}
