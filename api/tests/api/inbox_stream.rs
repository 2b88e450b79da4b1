//! The live stream (`GET /api/v1/notifications/stream`): across real `comet-api` processes,
//! resume by `Last-Event-ID` under a forced disconnect while deliveries continue, tickets,
//! tokens in URLs, the per-user cap, slow clients, keep-alives, pushes of acknowledgements
//! and deletions, shutdown, and the memory an open stream costs.

use std::{collections::HashSet, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    ApiProcess, SseReader, TestApp, assert_error, deliver, inbox_user, new_notification, notify,
    open_stream,
};

const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_notification_reaches_a_stream_held_by_another_api_process_within_milliseconds() {
    let app = TestApp::spawn().await;
    let p = app.project_id();
    let (alice, token) = inbox_user(&app.env, p, "alice@example.com").await;
    let one = ApiProcess::spawn_with_env(&app.env, &[]).await;
    let two = ApiProcess::spawn_with_env(&app.env, &[]).await;
    // a ticket from one process opens the stream on the other (tickets live in Redis)
    let ticket_resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/notifications/stream-ticket",
            one.address
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("ticket");
    let ticket: Value = ticket_resp.json().await.expect("json");
    let ticket = ticket["data"]["ticket"].as_str().expect("a ticket");
    let resp = open_stream(&two.address, None, &format!("?ticket={ticket}"), None).await;
    let mut stream = SseReader::new(resp);

    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let n = notify(&app.env, p, None, &[alice]).await;
        let e = stream.next(SOON).await.expect("the notification arrives");
        worst = worst.max(started.elapsed());
        assert_eq!(e.event, "notification");
        assert_eq!(e.data["id"], n.to_string());
        assert_eq!(e.data["unread"], true);
    }
    println!("delivery (commit + publish) to receipt on the other process: worst {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
}

#[tokio::test]
async fn a_resume_by_last_event_id_loses_nothing_and_repeats_nothing_while_deliveries_continue() {
    let app = TestApp::spawn().await;
    let p = app.project_id();
    let (alice, token) = inbox_user(&app.env, p, "alice@example.com").await;
    let one = ApiProcess::spawn_with_env(&app.env, &[]).await;
    let two = ApiProcess::spawn_with_env(&app.env, &[]).await;
    let mut stream = SseReader::new(open_stream(&one.address, Some(&token), "", None).await);

    // four writers deliver concurrently: seqs are published out of commit order at times
    let total = 80;
    let mut writers = Vec::new();
    for w in 0..4 {
        let env = app.env.share(app.env.settings.clone());
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..total / 4 {
                ids.push(notify(&env, p, None, &[alice]).await);
                if (i + w) % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            ids
        }));
    }
    let mut seen: Vec<(i64, String)> = Vec::new();
    while seen.len() < 15 {
        let e = stream
            .next(SOON)
            .await
            .expect("events before the disconnect");
        seen.push((
            e.id.expect("an id"),
            e.data["id"].as_str().expect("id").to_owned(),
        ));
    }
    drop(stream); // forced disconnect, mid-flow
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = seen.last().expect("events").0;
    let resp = open_stream(&two.address, Some(&token), "", Some(last)).await;
    let mut resumed = SseReader::new(resp);
    while seen.len() < total {
        let e = resumed
            .next(SOON)
            .await
            .expect("every event, after the resume");
        seen.push((
            e.id.expect("an id"),
            e.data["id"].as_str().expect("id").to_owned(),
        ));
    }
    let mut delivered = HashSet::new();
    for w in writers {
        delivered.extend(w.await.expect("writer").into_iter().map(|n| n.to_string()));
    }

    let ids: Vec<i64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=total as i64).collect::<Vec<_>>(),
        "in order, no gap, no repeat"
    );
    let received: HashSet<String> = seen.into_iter().map(|(_, n)| n).collect();
    assert_eq!(received, delivered);
    assert!(
        resumed.next(Duration::from_millis(300)).await.is_none(),
        "nothing more"
    );
}

#[tokio::test]
async fn a_lost_publish_is_recovered_from_the_feed_at_the_next_event_in_order() {
    let app = TestApp::spawn().await;
    let p = app.project_id();
    let (alice, token) = inbox_user(&app.env, p, "alice@example.com").await;
    let mut stream = SseReader::new(open_stream(&app.address, Some(&token), "", None).await);
    // delivered and committed, but its message never published (as if Redis dropped it)
    let lost = new_notification(&app.env, p, None, "lost", &[alice]).await;
    let mut tx = app.env.pool.begin().await.expect("begin");
    shared::db::inbox::lock_users(&mut tx, p, &[alice])
        .await
        .expect("lock");
    shared::db::inbox::mark_delivered(&mut tx, p, lost, &[alice])
        .await
        .expect("deliver");
    shared::db::inbox::append(&mut tx, p, &[(alice, "notification", lost)])
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    assert!(
        stream.next(Duration::from_millis(300)).await.is_none(),
        "premise: nothing live"
    );

    let next = notify(&app.env, p, None, &[alice]).await;

    let first = stream
        .next(SOON)
        .await
        .expect("the lost one, read from the feed");
    let second = stream.next(SOON).await.expect("then the live one");
    assert_eq!(
        (first.id, first.data["id"].as_str()),
        (Some(1), Some(&*lost.to_string()))
    );
    assert_eq!(
        (second.id, second.data["id"].as_str()),
        (Some(2), Some(&*next.to_string()))
    );
    assert!(
        stream.next(Duration::from_millis(300)).await.is_none(),
        "no duplicate"
    );
}

/// The URL of every Redis server the tests use: the one server, or each live node of a
/// cluster (a subscription lives on one node).
async fn redis_servers(app: &TestApp) -> Vec<String> {
    if !app.env.queues.client().is_cluster() {
        return vec![shared::testing::redis_url()];
    }
    let mut conn = app.env.queues.connection();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER NODES");
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            (!fields.get(2)?.contains("fail")).then(|| format!("redis://{addr}"))
        })
        .collect()
}

/// Kills every pattern-subscribed Redis connection (the inbox hubs' only: queue wake-ups use
/// plain `SUBSCRIBE`); returns how many. A hub that loses its connection resyncs by design.
async fn kill_pattern_subscribers(app: &TestApp) -> usize {
    let mut killed = 0;
    for url in redis_servers(app).await {
        let client = redis::Client::open(url).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        killed += kill_pattern_subscribers_on(&mut conn).await;
    }
    killed
}

async fn kill_pattern_subscribers_on(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .expect("CLIENT LIST");
    let mut killed = 0;
    for line in list.lines() {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name))
                .unwrap_or_default()
                .to_owned()
        };
        if field("psub=") != "0" && field("sub=") == "0" {
            let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(field("id="))
                .query_async(conn)
                .await;
            killed += 1;
        }
    }
    killed
}

#[tokio::test]
async fn a_stream_gets_what_was_published_while_its_process_was_reconnecting_to_redis() {
    let app = TestApp::spawn().await;
    let p = app.project_id();
    let (alice, token) = inbox_user(&app.env, p, "alice@example.com").await;
    let mut stream = SseReader::new(open_stream(&app.address, Some(&token), "", None).await);

    assert!(
        kill_pattern_subscribers(&app).await >= 1,
        "premise: the hub was subscribed"
    );
    // published while the hub is down (it waits 100 ms before reconnecting): lost live
    let n = notify(&app.env, p, None, &[alice]).await;

    let e = stream
        .next(SOON)
        .await
        .expect("read back from the feed after the reconnect");
    assert_eq!(
        (e.id, e.data["id"].as_str()),
        (Some(1), Some(&*n.to_string()))
    );
    let later = notify(&app.env, p, None, &[alice]).await;
    let e = stream.next(SOON).await.expect("live again");
    assert_eq!(
        (e.id, e.data["id"].as_str()),
        (Some(2), Some(&*later.to_string()))
    );
}

#[tokio::test]
async fn acknowledgements_and_deletions_reach_every_open_stream_concerned() {
    let app = TestApp::spawn().await;
    let p = app.project_id();
    let (alice, alice_token) = inbox_user(&app.env, p, "alice@example.com").await;
    let (bob, bob_token) = inbox_user(&app.env, p, "bob@example.com").await;
    let second = app.second_instance().await;
    let mut tab1 = SseReader::new(open_stream(&app.address, Some(&alice_token), "", None).await);
    let mut tab2 = SseReader::new(open_stream(&second.address, Some(&alice_token), "", None).await);
    let mut bobs = SseReader::new(open_stream(&second.address, Some(&bob_token), "", None).await);
    let n = notify(&app.env, p, None, &[alice, bob]).await;
    for s in [&mut tab1, &mut tab2, &mut bobs] {
        assert_eq!(s.next(SOON).await.expect("delivered").event, "notification");
    }

    let resp = app.acknowledge(&alice_token, n).await;
    assert_eq!(resp.status(), StatusCode::OK);
    for s in [&mut tab1, &mut tab2, &mut bobs] {
        let e = s.next(SOON).await.expect("the acknowledgement");
        assert_eq!(e.event, "acknowledged");
        assert_eq!(e.data["notificationId"], n.to_string());
        assert_eq!(e.data["acknowledgedBy"], alice.to_string());
    }
    let resp = app.delete_notification(&alice_token, n).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for s in [&mut tab1, &mut tab2] {
        let e = s.next(SOON).await.expect("the deletion");
        assert_eq!((e.event.as_str(), e.id), ("deleted", Some(3)));
    }
    assert!(
        bobs.next(Duration::from_millis(300)).await.is_none(),
        "bob keeps it"
    );
}

#[tokio::test]
async fn a_ticket_opens_one_stream_once_and_expires() {
    let app = TestApp::spawn_with(|s| s.inbox.ticket_ttl = Duration::from_secs(1)).await;
    let p = app.project_id();
    let (_, token) = inbox_user(&app.env, p, "alice@example.com").await;

    let ticket = app.stream_ticket(&token).await;
    let first = open_stream(&app.address, None, &format!("?ticket={ticket}"), None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = open_stream(&app.address, None, &format!("?ticket={ticket}"), None).await;
    assert_error(again, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let late = app.stream_ticket(&token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = open_stream(&app.address, None, &format!("?ticket={late}"), None).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:inbox:ticket:*", app.env.settings.redis.prefix))
        .query_async(&mut app.env.queues.connection())
        .await
        .expect("keys");
    assert!(stored.iter().all(|k| !k.contains(&late)), "stored hashed");
}

#[tokio::test]
async fn a_long_lived_token_in_the_url_is_refused() {
    let app = TestApp::spawn().await;
    let (_, token) = inbox_user(&app.env, app.project_id(), "alice@example.com").await;

    for query in [
        format!("?ticket={token}"),
        format!("?token={token}"),
        format!("?access_token={token}"),
    ] {
        let resp = open_stream(&app.address, None, &query, None).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let resp = open_stream(&app.address, None, "", None).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = open_stream(&app.address, Some(&app.admin_token()), "", None).await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_user_may_hold_only_so_many_streams_and_a_closed_one_frees_its_slot() {
    // a closed connection is noticed at the next write: keep-alives make that soon
    let app = TestApp::spawn_with(|s| {
        s.inbox.max_per_user = 2;
        s.inbox.keepalive = Duration::from_millis(200);
    })
    .await;
    let second = app.second_instance().await;
    let (_, token) = inbox_user(&app.env, app.project_id(), "alice@example.com").await;
    let (_, bob) = inbox_user(&app.env, app.project_id(), "bob@example.com").await;

    let a = open_stream(&app.address, Some(&token), "", None).await;
    let b = open_stream(&second.address, Some(&token), "", None).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let third = open_stream(&app.address, Some(&token), "", None).await;
    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let others = open_stream(&app.address, Some(&bob), "", None).await;
    assert_eq!(others.status(), StatusCode::OK, "the cap is per user");

    drop(a);
    let reopened = shared::testing::eventually(SOON, "the slot is freed", || async {
        let r = open_stream(&second.address, Some(&token), "", None).await;
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await;
    assert_eq!(reopened.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let app = TestApp::spawn_with(|s| s.inbox.keepalive = Duration::from_millis(100)).await;
    let (_, token) = inbox_user(&app.env, app.project_id(), "alice@example.com").await;
    let mut stream = SseReader::new(open_stream(&app.address, Some(&token), "", None).await);

    for _ in 0..3 {
        let e = stream
            .next_any(Duration::from_secs(1))
            .await
            .expect("a keep-alive");
        assert!(e.comment, "{e:?}");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_resumes_without_loss() {
    let app = TestApp::spawn_with(|s| s.inbox.buffer = 4).await;
    let p = app.project_id();
    let (alice, token) = inbox_user(&app.env, p, "alice@example.com").await;
    let mut stalled = SseReader::new(open_stream(&app.address, Some(&token), "", None).await);

    // ~40 MB of events while the client reads nothing: more than the socket buffers hold
    let body = "x".repeat(512 * 1024);
    let total = 80;
    for _ in 0..total {
        let n = new_notification(&app.env, p, None, &body, &[alice]).await;
        deliver(&app.env, p, n, &[alice]).await;
    }
    let (ended, got) = stalled.until_end(Duration::from_secs(30)).await;
    assert!(ended, "the server ended the stream");
    let last = got.last().and_then(|e| e.id).unwrap_or(0);
    assert!(
        (got.len() as i64) < total,
        "it was cut short: {}",
        got.len()
    );

    let mut resumed = SseReader::new(open_stream(&app.address, Some(&token), "", Some(last)).await);
    let mut next = last;
    while next < total {
        let e = resumed
            .next(SOON)
            .await
            .expect("the rest, after the resume");
        assert_eq!(e.id, Some(next + 1));
        next += 1;
    }
}

#[tokio::test]
async fn open_streams_end_when_the_api_shuts_down() {
    let app = TestApp::spawn().await;
    let (_, token) = inbox_user(&app.env, app.project_id(), "alice@example.com").await;
    let mut stream = SseReader::new(open_stream(&app.address, Some(&token), "", None).await);

    let stopped = tokio::time::timeout(Duration::from_secs(5), app.cleanup()).await;

    assert!(stopped.is_ok(), "the server stopped with a stream open");
    let (ended, _) = stream.until_end(SOON).await;
    assert!(ended);
}

/// Resident memory of an API process with 0 and 1000 open streams.
#[tokio::test]
#[ignore = "a measurement: cargo test -- --ignored memory_per_open_stream"]
async fn memory_per_open_stream() {
    let app = TestApp::spawn().await;
    let (_, token) = inbox_user(&app.env, app.project_id(), "alice@example.com").await;
    let api = ApiProcess::spawn_with_env(&app.env, &[("STREAM_MAX_PER_USER", "2000")]).await;
    let rss = || {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", api.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
    };
    // warm up: pools, first stream
    drop(open_stream(&api.address, Some(&token), "", None).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss();
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let r = open_stream(&api.address, Some(&token), "", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        streams.push(r);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss();
    println!(
        "RSS {before} kB with no stream, {after} kB with 1000: {:.1} kB per open stream",
        (after.saturating_sub(before)) as f64 / 1000.0
    );
    drop(streams);
}
