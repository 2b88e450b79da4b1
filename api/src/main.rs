//! `comet-api`: serves the API, or runs one of its admin commands (migrate, seed, token).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shared::{auth::Claims, config::Settings};
use uuid::Uuid;

/// mimalloc: allocation-heavy request handling spends less CPU in the allocator than with
/// glibc's malloc (BENCHMARKS.md, "Events and rules").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "comet-api",
    about = "Comet's HTTP API and admin commands",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on PORT (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create the demo project and print an admin token for it; also the way back into a
    /// project locked out of its admins (`--project`).
    Seed {
        /// Recover this existing project instead of the demo project: its `admin` role gets its
        /// default permissions back and admin@comet.local becomes an ACTIVE admin of it, with a
        /// new password.
        #[arg(long)]
        project: Option<Uuid>,
    },
    /// Mint an access token for local use.
    Token {
        /// A permission to grant (repeatable), e.g. jobs:read. With --platform, default
        /// projects:manage, queues:read, schedules:read and schedules:manage.
        #[arg(long = "permission", short = 'p', required_unless_present = "platform")]
        permissions: Vec<String>,
        /// The project (default: the demo project).
        #[arg(long, conflicts_with = "platform")]
        project: Option<Uuid>,
        /// A platform operator's token: bound to no project, the only kind that grants
        /// projects:manage (create, suspend and delete projects).
        #[arg(long)]
        platform: bool,
        /// The subject.
        #[arg(long, default_value = "cli")]
        sub: String,
        /// Lifetime in seconds (default JWT_TTL_SECS).
        #[arg(long)]
        ttl: Option<i64>,
    },
    /// Enqueue a `bucket_monitor` sweep now (platform-wide unless --project), print its job
    /// id, and with --wait follow it to its end and print its result.
    BucketMonitor {
        /// Sweep one project's buckets only.
        #[arg(long)]
        project: Option<Uuid>,
        /// Wait for the job to finish (a worker must run it) and print its result as JSON.
        #[arg(long)]
        wait: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    shared::telemetry::init_tracing(settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let pool = shared::db::pool(&settings)?;
            shared::db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed { project: recover } => {
            let pool = shared::db::pool(&settings)?;
            let mut conn = pool
                .acquire()
                .await
                .context("Failed to connect to Postgres")?;
            let project = match recover {
                None => shared::db::projects::ensure(&mut conn, "demo").await?,
                Some(id) => {
                    shared::db::projects::find(&mut conn, id)
                        .await?
                        .with_context(|| format!("No live project {id}"))?;
                    shared::db::roles::ensure_defaults(&mut conn, id).await?;
                    id
                }
            };
            let (user, email, password) = seed_admin(&mut conn, project).await?;
            // the demo admin user's own token (its `sub`), so user-only routes (invitations,
            // /users/me) work with it
            let claims = Claims::new(
                &user.to_string(),
                project,
                // every project permission: a project's token cannot use a platform one
                comet_api::auth::ALL
                    .iter()
                    .filter(|p| !shared::permissions::is_platform_only(p))
                    .map(|p| (*p).to_owned())
                    .collect(),
                settings.auth.jwt_ttl.as_secs() as i64,
            );
            let token = shared::auth::mint(&settings.auth.jwt_secret, &claims)?;
            let platform = shared::auth::mint(
                &settings.auth.jwt_secret,
                &Claims::platform(
                    "platform-operator",
                    platform_permissions(),
                    settings.auth.jwt_ttl.as_secs() as i64,
                ),
            )?;
            match recover {
                None => println!("demo project: {project}"),
                Some(_) => println!("recovered project: {project}"),
            }
            // before the admin token: `./dev up` takes the last token printed as its $TOKEN
            println!(
                "platform operator token (projects:manage, queues:*, schedules:*; no project; {}s):",
                settings.auth.jwt_ttl.as_secs()
            );
            println!("{platform}");
            println!(
                "demo admin token (the demo admin user's, every project permission, {}s):",
                settings.auth.jwt_ttl.as_secs()
            );
            println!("{token}");
            println!("demo admin user (role admin; log in with POST /api/v1/auth/login):");
            println!("  email:    {email}");
            println!("  password: {password}");
            println!("  (a new password on every seed; it is not stored anywhere but here)");
            Ok(())
        }
        Command::Token {
            permissions,
            project,
            platform,
            sub,
            ttl,
        } => {
            let ttl = ttl.unwrap_or(settings.auth.jwt_ttl.as_secs() as i64);
            check_permissions(&permissions)?;
            if platform {
                let permissions = if permissions.is_empty() {
                    platform_permissions()
                } else {
                    permissions
                };
                let claims = Claims::platform(&sub, permissions, ttl);
                println!(
                    "{}",
                    shared::auth::mint(&settings.auth.jwt_secret, &claims)?
                );
                return Ok(());
            }
            let project = match project {
                Some(p) => p,
                None => {
                    let pool = shared::db::pool(&settings)?;
                    let mut conn = pool
                        .acquire()
                        .await
                        .context("Failed to connect to Postgres")?;
                    shared::db::projects::ensure(&mut conn, "demo").await?
                }
            };
            let claims = Claims::new(&sub, project, permissions, ttl);
            println!(
                "{}",
                shared::auth::mint(&settings.auth.jwt_secret, &claims)?
            );
            Ok(())
        }
        Command::BucketMonitor { project, wait } => bucket_monitor(&settings, project, wait).await,
    }
}

/// `comet-api bucket-monitor`: enqueues the sweep straight to Redis (a platform-wide job has no
/// project, so no outbox row), and with `wait` polls it until it finishes.
async fn bucket_monitor(
    settings: &Settings,
    project: Option<Uuid>,
    wait: bool,
) -> anyhow::Result<()> {
    use shared::jobs::{BucketMonitor, EnqueueOptions, Job as _};
    let queues = shared::queue::Queues::from_settings(settings)?;
    let job = BucketMonitor {
        project_id: project.unwrap_or(BucketMonitor::PLATFORM),
        run: None,
    };
    let enqueued = job
        .enqueue_now(&queues, EnqueueOptions::default())
        .await
        .context("Failed to enqueue bucket_monitor")?;
    println!("{}", enqueued.id);
    if !wait {
        return Ok(());
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Some(record) = queues.job(BucketMonitor::QUEUE, enqueued.id).await? else {
            anyhow::bail!("job {} is gone", enqueued.id);
        };
        use shared::queue::JobState;
        match record.state {
            JobState::Completed => {
                println!("{}", record.result.unwrap_or_default());
                return Ok(());
            }
            JobState::Dead | JobState::Cancelled => {
                anyhow::bail!(
                    "bucket_monitor ended {:?}: {:?}",
                    record.state,
                    record.last_error
                )
            }
            _ => {}
        }
    }
}

/// Refuses a permission no route checks (a typo would mint a token that fails everywhere),
/// listing the valid ones. `*` grants every permission.
fn check_permissions(permissions: &[String]) -> anyhow::Result<()> {
    let unknown: Vec<&str> = permissions
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "*" && !comet_api::auth::ALL.contains(p))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let valid = shared::permissions::ALL
        .iter()
        .map(|p| format!("  {:<18} {}", p.name, p.description))
        .collect::<Vec<_>>()
        .join("\n");
    anyhow::bail!(
        "unknown permission {}; the valid ones are (or `*` for all):\n{valid}",
        unknown.join(", ")
    )
}

/// What a platform operator's token grants by default.
fn platform_permissions() -> Vec<String> {
    vec![
        "projects:manage".into(),
        "queues:read".into(),
        "queues:write".into(),
        "schedules:read".into(),
        "schedules:manage".into(),
        // with queues:read/queues:write, every project's jobs (search, failures, controls)
        "jobs:read".into(),
        "jobs:write".into(),
    ]
}

/// The demo admin's email.
const DEMO_ADMIN_EMAIL: &str = "admin@comet.local";

/// Creates (or re-activates) the demo admin user with a fresh random password and the `admin`
/// role (with every permission its defaults have); returns its id, email and password, to be
/// printed once. This is the documented way back into a project locked out of its admins.
async fn seed_admin(
    conn: &mut sqlx::PgConnection,
    project: Uuid,
) -> anyhow::Result<(Uuid, &'static str, String)> {
    let password = shared::secrets::new_token();
    let hash = shared::secrets::hash_password(&password)
        .map_err(|e| anyhow::anyhow!("Failed to hash the demo admin's password: {e}"))?;
    let user = shared::db::users::ensure_active(
        &mut *conn,
        project,
        DEMO_ADMIN_EMAIL,
        "Demo admin",
        &hash,
    )
    .await
    .context("Failed to create the demo admin user")?;
    let admin = shared::db::roles::by_name(&mut *conn, project, "admin")
        .await?
        .context("The demo project has no admin role")?;
    shared::db::roles::assign(&mut *conn, project, user, admin)
        .await
        .context("Failed to give the demo admin its role")?;
    Ok((user, DEMO_ADMIN_EMAIL, password))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let addr = ("0.0.0.0", settings.http.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("Failed to bind PORT {}", settings.http.port))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let state = comet_api::state(settings)?;
    comet_api::serve(listener, state, shared::shutdown::signal()).await?;
    tracing::info!("API stopped");
    Ok(())
}
