//! `bulk_import` under kill -9: a 200,000-row import with invitations, its worker process
//! killed at random points and started again, ends with every valid row imported once, none
//! skipped, and exactly one invitation and one `send_invitation` job per invited user.

use std::{io::Write as _, time::Duration};

use rand::Rng as _;
use shared::{
    db::{self, imports::NewImport},
    imports::{self, ColumnMap, ImportOptions, ReadOptions},
    jobs::{BulkImport, EnqueueOptions, Job as _},
    testing::{TestEnv, eventually},
};
use uuid::Uuid;

use crate::helpers::WorkerProcess;

const ROWS: usize = 200_000;

/// Stores an import of the CSV at `path` and its job, as the upload route does.
async fn store_import(env: &TestEnv, path: &std::path::Path, options: &ImportOptions) -> Uuid {
    let layout = imports::inspect(path, &ReadOptions::default()).expect("the file passes");
    let map = ColumnMap::new(&layout.headers, &options.columns).expect("columns");
    let bytes = std::fs::read(path).expect("read");
    let import_id = Uuid::now_v7();
    let mut tx = env.pool.begin().await.expect("begin");
    let job = BulkImport {
        project_id: env.project_id,
        import_id,
    };
    let job_id = job
        .enqueue(&mut tx, EnqueueOptions::default())
        .await
        .expect("enqueue");
    db::imports::create(
        &mut tx,
        NewImport {
            import_id,
            project_id: env.project_id,
            created_by: None,
            job_id,
            file_name: Some("big.csv"),
            file_sha256: &"0".repeat(64),
            file_bytes: bytes.len() as i64,
            format: layout.format.as_str(),
            options: serde_json::to_value(options).expect("options"),
            columns: serde_json::json!({ "layout": &layout, "map": &map }),
            total_rows: layout.rows as i64,
            total_exact: layout.rows_exact,
        },
    )
    .await
    .expect("import");
    for (seq, part) in bytes.chunks(db::imports::PART_BYTES).enumerate() {
        db::imports::insert_part(&mut tx, import_id, seq as i32, part)
            .await
            .expect("part");
    }
    tx.commit().await.expect("commit");
    import_id
}

async fn scalar(env: &TestEnv, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(env.project_id)
        .fetch_one(&env.pool)
        .await
        .expect("query")
}

#[tokio::test]
async fn an_import_killed_at_random_points_resumes_to_the_exact_counts() {
    let env = TestEnv::with(|s| s.queue.max_open_per_project = 1_000_000).await;
    // every 97th row is invalid, every 89th repeats the row before it
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    let mut valid = 0usize;
    let mut w = std::io::BufWriter::new(file.as_file_mut());
    writeln!(w, "email,name").expect("write");
    for i in 0..ROWS {
        if i % 97 == 0 {
            writeln!(w, "broken-{i},Broken").expect("write");
        } else if i % 89 == 0 {
            writeln!(w, "u{}@example.com,Repeat", i - 1).expect("write");
        } else {
            writeln!(w, "u{i}@example.com,User {i}").expect("write");
            valid += 1;
        }
    }
    drop(w);
    // a repeat of an invalid row (i - 1 divisible by 97) is the first valid row of its email
    let repeats_of_invalid = (0..ROWS)
        .filter(|i| i % 97 != 0 && i % 89 == 0 && (i - 1) % 97 == 0)
        .count();
    valid += repeats_of_invalid;
    let options = ImportOptions {
        send_invitations: true,
        ..ImportOptions::default()
    };
    let import_id = store_import(&env, file.path(), &options).await;

    // this worker runs imports only: the invitation jobs stay queued, to be counted
    let extra = [
        ("WORKER_QUEUES", "bulk_import"),
        ("JOB_MAX_OPEN_PER_PROJECT", "1000000"),
    ];
    let mut worker = WorkerProcess::spawn(&env, &extra);
    let mut kills_mid_import = 0;
    for _ in 0..3 {
        let wait = rand::rng().random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let done = db::imports::get(&env.pool, env.project_id, import_id)
            .await
            .expect("import")
            .expect("exists");
        worker.signal("KILL");
        worker.wait(Duration::from_secs(10)).await;
        if done.finished_at.is_none() {
            kills_mid_import += 1;
        }
        worker = WorkerProcess::spawn(&env, &extra);
    }
    let import = eventually(Duration::from_secs(300), "the import ends", || async {
        let i = db::imports::get(&env.pool, env.project_id, import_id)
            .await
            .expect("import")
            .expect("exists");
        i.finished_at.is_some().then_some(i)
    })
    .await;
    assert!(kills_mid_import >= 1, "no kill landed while the import ran");
    assert_eq!(import.status, "completed", "{:?}", import.error);
    assert_eq!(import.rows_done, ROWS as i64);
    assert_eq!(import.created, valid as i64);
    assert_eq!(import.failed, (ROWS - valid) as i64);
    assert_eq!(
        scalar(&env, "SELECT count(*) FROM users WHERE project_id = $1").await,
        valid as i64,
        "every valid row once, none skipped"
    );
    assert_eq!(
        scalar(
            &env,
            "SELECT count(*) FROM user_import_errors WHERE project_id = $1"
        )
        .await,
        (ROWS - valid) as i64,
        "one error per refused row"
    );
    assert_eq!(
        scalar(
            &env,
            "SELECT count(*) FROM user_invitations WHERE project_id = $1"
        )
        .await,
        valid as i64
    );
    // every invitation's job reached Redis once: the outbox drained, one job per invitation
    let queued = eventually(Duration::from_secs(60), "the outbox drains", || async {
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM job_outbox")
            .fetch_one(&env.pool)
            .await
            .expect("outbox");
        let counts = env.queues.counts("send_invitation").await.expect("counts");
        (outbox == 0).then_some(counts.waiting + counts.delayed)
    })
    .await;
    assert_eq!(
        queued, valid as u64,
        "one send_invitation job per invitation"
    );
    drop(worker);
    env.cleanup().await;
}
