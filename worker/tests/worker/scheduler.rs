//! The scheduler across real `comet-worker` processes: one job per tick however many workers
//! run it, and what ticks missed while the whole fleet was down become.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use shared::{
    db::schedules,
    queue::JobState,
    testing::{TestEnv, eventually},
};

use crate::helpers::{WorkerProcess, free_port, metrics};

/// Every schedule but `keep` switched off, and the scheduler on.
fn only(keep: &[(&str, &str)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = shared::schedule::ALL
        .iter()
        .map(|d| {
            let name = d.schedule.name;
            let expr = keep
                .iter()
                .find(|(k, _)| *k == name)
                .map_or("off", |(_, e)| e);
            (d.schedule.env_var(), expr.to_owned())
        })
        .collect();
    vars.push(("SCHEDULER_ENABLED".into(), "true".into()));
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    vars
}

fn spawn(env: &TestEnv, vars: &[(String, String)]) -> WorkerProcess {
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    WorkerProcess::spawn(env, &refs)
}

async fn db_now(env: &TestEnv) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&env.pool)
        .await
        .expect("now")
}

/// Sleeps until Postgres's clock reads `t`.
async fn until(env: &TestEnv, t: DateTime<Utc>) {
    let wait = (t - db_now(env).await).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The schedule's (cursor, ticks counted missed so far).
async fn cursor(env: &TestEnv, name: &str) -> Option<(DateTime<Utc>, i64)> {
    let rows = schedules::all(&env.pool).await.ok()?;
    let row = rows.into_iter().find(|r| r.name == name)?;
    Some((row.last_tick_at, row.missed_total))
}

/// Exactly once, judged by accounting rather than by the clock: every tick between two cursor
/// readings is either one run or one counted miss, never two runs and never neither. Whether a
/// tick is missed depends on the machine (a fleet stalled past the grace, say by a slow fsync,
/// misses the ticks it slept through, by design), so the test makes one stall itself (SIGSTOP
/// of the whole fleet) and asserts its misses, and bounds no other; lateness is printed.
#[tokio::test]
async fn three_worker_processes_account_for_every_tick_once_as_one_run_or_a_counted_miss() {
    let env = TestEnv::new().await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let workers: Vec<WorkerProcess> = ports
        .iter()
        .map(|p| {
            let port = p.to_string();
            spawn(
                &env,
                &only(&[("canary", "* * * * * *")], &[("WORKER_PORT", &port)]),
            )
        })
        .collect();
    // once the canary fires, read the cursor; let the three race for 40 ticks; read it again
    let (from, missed_before) = eventually(Duration::from_secs(30), "the canary fires", || async {
        let runs = schedules::runs(&env.pool, "canary").await.ok()?;
        runs.first()?;
        cursor(&env, "canary").await
    })
    .await;
    // halfway, the whole fleet stalls for four seconds (SIGSTOP): the ticks it sleeps
    // through but the latest are counted missed, none fired twice when it wakes
    until(&env, from + chrono::Duration::milliseconds(20_500)).await;
    for w in &workers {
        w.signal("STOP");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for w in &workers {
        w.signal("CONT");
    }
    until(&env, from + chrono::Duration::seconds(42)).await;
    let mut lateness_exported = 0;
    for port in &ports {
        if metrics(*port)
            .await
            .is_some_and(|t| t.contains("comet_schedule_tick_lateness_seconds"))
        {
            lateness_exported += 1;
        }
    }
    assert!(lateness_exported >= 1, "the lateness histogram is exported");
    for mut w in workers {
        w.signal("TERM");
        assert!(w.wait(Duration::from_secs(30)).await.success());
    }
    let (to, missed_after) = cursor(&env, "canary").await.expect("canary row");
    // a worker without the scheduler runs what the three left queued
    let _drain = WorkerProcess::spawn(&env, &[]);

    let runs = schedules::runs(&env.pool, "canary").await.expect("runs");
    let ticks: Vec<DateTime<Utc>> = runs
        .iter()
        .filter_map(|r| r.tick_at)
        .filter(|t| *t > from && *t <= to)
        .collect();
    let distinct: BTreeSet<_> = ticks.iter().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick enqueued twice");
    let elapsed = usize::try_from((to - from).num_seconds()).expect("forward");
    assert!(elapsed >= 40, "the fleet kept firing: cursor {from} → {to}");
    let missed = usize::try_from(missed_after - missed_before).expect("counter only grows");
    assert_eq!(
        ticks.len() + missed,
        elapsed,
        "each tick from {from} to {to} is one run or one counted miss: {} runs, {missed} missed",
        ticks.len()
    );
    assert!(
        missed >= 2,
        "the stall's ticks but the latest are missed: {missed}"
    );
    assert!(
        runs.iter().all(|r| r.missed == 0),
        "catch-up skip carries no count into a run"
    );

    // every run's job reached Redis once and ran; and there is no other ping than these
    let ids: Vec<_> = runs.iter().map(|r| r.job_id).collect();
    let done = eventually(
        Duration::from_secs(30),
        "the runs' jobs complete",
        || async {
            let mut out = Vec::new();
            for id in &ids {
                let job = env.queues.job("ping", *id).await.ok()??;
                if job.state != JobState::Completed {
                    return None;
                }
                out.push(job);
            }
            Some(out)
        },
    )
    .await;
    assert_eq!(done.len(), runs.len());
    let counts = env.queues.counts("ping").await.expect("counts");
    assert_eq!(
        counts.completed as usize,
        runs.len(),
        "no job without its run row: {counts:?}"
    );

    // never early; how late is printed for the reader (Postgres's clock at the enqueue minus
    // the tick)
    let mut late: Vec<f64> = runs
        .iter()
        .filter(|r| r.tick_at.is_some_and(|t| t > from && t <= to))
        .filter_map(|r| Some((r.fired_at - r.tick_at?).num_microseconds()? as f64 / 1000.0))
        .collect();
    late.sort_by(f64::total_cmp);
    assert!(
        late.first().is_some_and(|l| *l >= 0.0),
        "a tick fired early: {late:?}"
    );
    let (p50, p99) = (percentile(&late, 0.5), percentile(&late, 0.99));
    eprintln!(
        "{} ticks, 3 workers: {} runs, {missed} missed; lateness p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        elapsed,
        late.len(),
        late[late.len() - 1]
    );
}

#[tokio::test]
async fn a_fleet_down_across_two_ticks_skip_fires_none_of_them_and_once_fires_one_with_the_count() {
    let env = TestEnv::new().await;
    let every5 = "*/5 * * * * *";
    let vars = only(
        &[("canary", every5), ("sweep_api_keys", every5)],
        &[("SCHEDULER_MISFIRE_GRACE_MS", "1000")],
    );
    let mut w = spawn(&env, &vars);
    // a tick both fired, and the sweep's run finished (else its overlap policy would hold the
    // catch-up back)
    let t0 = eventually(Duration::from_secs(30), "both schedules fire", || async {
        let c = schedules::runs(&env.pool, "canary").await.ok()?;
        let k = schedules::runs(&env.pool, "sweep_api_keys").await.ok()?;
        let t = c.last()?.tick_at?;
        let run = k.iter().find(|r| r.tick_at == Some(t))?;
        let job = env.queues.job("sweep_api_keys", run.job_id).await.ok()??;
        (job.state == JobState::Completed).then_some(t)
    })
    .await;
    w.signal("TERM");
    assert!(w.wait(Duration::from_secs(20)).await.success());
    for name in ["canary", "sweep_api_keys"] {
        let last = schedules::runs(&env.pool, name).await.expect("runs");
        assert_eq!(
            last.last().and_then(|r| r.tick_at),
            Some(t0),
            "{name} stopped after the same tick"
        );
    }

    // down across t1 and t2 (and past t2's grace); back before t3
    let (t2, t3) = (
        t0 + chrono::Duration::seconds(10),
        t0 + chrono::Duration::seconds(15),
    );
    until(&env, t2 + chrono::Duration::milliseconds(1500)).await;
    let _w = spawn(&env, &vars);
    eventually(Duration::from_secs(30), "t3 fires", || async {
        let c = schedules::runs(&env.pool, "canary").await.ok()?;
        c.iter().any(|r| r.tick_at == Some(t3)).then_some(())
    })
    .await;
    let rows = schedules::all(&env.pool).await.expect("rows");
    let missed = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| r.missed_total)
            .expect("row")
    };

    // skip: nothing between t0 and t3; the two ticks counted as missed
    let canary = schedules::runs(&env.pool, "canary").await.expect("runs");
    let between: Vec<_> = canary
        .iter()
        .filter(|r| r.tick_at.is_some_and(|t| t > t0 && t < t3))
        .collect();
    assert!(between.is_empty(), "skip fired a missed tick: {between:?}");
    assert_eq!(missed("canary"), 2);

    // once: one run for both, carrying the count, then t3 as usual
    let keys = schedules::runs(&env.pool, "sweep_api_keys")
        .await
        .expect("runs");
    let caught_up: Vec<_> = keys
        .iter()
        .filter(|r| r.tick_at.is_some_and(|t| t > t0 && t <= t3) && r.missed > 0)
        .collect();
    assert_eq!(caught_up.len(), 1, "{keys:?}");
    assert_eq!(caught_up[0].missed, 2);
    assert_eq!(missed("sweep_api_keys"), 2);
    let job = eventually(
        Duration::from_secs(30),
        "the catch-up run completes",
        || async {
            let j = env
                .queues
                .job("sweep_api_keys", caught_up[0].job_id)
                .await
                .ok()??;
            (j.state == JobState::Completed).then_some(j)
        },
    )
    .await;
    assert_eq!(job.result.as_ref().expect("result")["missedTicks"], 2);
    let after: Vec<_> = keys
        .iter()
        .filter(|r| r.tick_at.is_some_and(|t| t > t0 && t <= t3))
        .collect();
    assert!(
        after.len() <= 2,
        "no run per missed tick, only the catch-up (and t3): {after:?}"
    );
}

#[tokio::test]
async fn a_worker_refuses_to_start_on_a_bad_schedule_expression_naming_it() {
    let env = TestEnv::new().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comet-worker"))
        .env_clear()
        .envs(env.process_env())
        .env("SCHEDULE_SWEEP_SESSIONS", "*/5 * * *")
        .output()
        .expect("run the worker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SCHEDULE_SWEEP_SESSIONS") && stderr.contains("sweep_sessions"),
        "{stderr}"
    );
    assert!(stderr.contains("expected 5 fields"), "{stderr}");
}
