//! The invitation phase: invitations through the API while the API and a worker are SIGKILLed
//! once each; every acknowledged invitation must have its email (a loopback SMTP server).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};
use shared::{queue::Queues, testing::smtp::SmtpServer};
use tokio::process::Child;

use crate::{
    Args,
    world::{World, healthy},
};

/// What the invitation phase works with.
pub struct Phase<'a> {
    pub world: &'a World,
    pub http: &'a reqwest::Client,
    pub base: &'a str,
    pub token: &'a str,
    pub queues: &'a Queues,
    pub smtp: &'a SmtpServer,
}

/// How one invitation request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// 2xx: acknowledged, exactly one email is owed.
    Acknowledged,
    /// A retry found it done: an earlier request committed it but its answer was lost.
    CommittedUnanswered,
    /// Never accepted.
    Refused,
}

impl Phase<'_> {
    /// Sends the invitations while the API and a worker are SIGKILLed once each, waits for
    /// their emails and prints what arrived; returns the acknowledged invitations without one.
    pub async fn invitations(
        &self,
        args: &Args,
        api: &mut Child,
        workers: &mut [Child],
    ) -> anyhow::Result<usize> {
        let roles: Value = self
            .http
            .get(format!("{}/api/v1/roles", self.base))
            .bearer_auth(self.token)
            .send()
            .await?
            .json()
            .await?;
        let member = roles["data"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "member"))
            .and_then(|r| r["id"].as_str())
            .context("no member role")?
            .to_owned();
        let emails: Vec<String> = (0..args.invitations)
            .map(|i| format!("chaos-{i}@example.com"))
            .collect();
        let outcomes: Arc<Mutex<HashMap<String, Sent>>> = Arc::default();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut senders = Vec::new();
        for _ in 0..8 {
            let (http, base, token) = (
                self.http.clone(),
                self.base.to_owned(),
                self.token.to_owned(),
            );
            let (emails, outcomes, next, member) = (
                emails.clone(),
                outcomes.clone(),
                next.clone(),
                member.clone(),
            );
            senders.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(email) = emails.get(i) else { return };
                    let mut outcome = Sent::Refused;
                    for attempt in 0..600 {
                        let sent = http
                            .post(format!("{base}/api/v1/users/invite"))
                            .bearer_auth(&token)
                            .json(&json!({"email": email, "roleIds": [member]}))
                            .send()
                            .await;
                        match sent.map(|r| r.status().as_u16()) {
                            Ok(s) if (200..300).contains(&s) => {
                                outcome = Sent::Acknowledged;
                                break;
                            }
                            // the same address again: a request whose answer was lost made it
                            Ok(409) if attempt > 0 => {
                                outcome = Sent::CommittedUnanswered;
                                break;
                            }
                            Ok(s) if (400..500).contains(&s) && s != 408 && s != 429 => break,
                            _ => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                    outcomes
                        .lock()
                        .expect("lock")
                        .insert(email.clone(), outcome);
                }
            }));
        }
        // the API dies a third of the way, a worker two thirds of the way
        let t0 = Instant::now();
        let third = args.invitations / 3;
        let count = |o: &Arc<Mutex<HashMap<String, Sent>>>| o.lock().expect("lock").len();
        while count(&outcomes) < third && t0.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = api.kill().await;
        let api_killed_at = count(&outcomes);
        tokio::time::sleep(Duration::from_millis(500)).await;
        *api = self
            .world
            .spawn("comet-api", &[("RUST_LOG", "error".into())])?;
        healthy(self.http, self.base).await?;
        while count(&outcomes) < 2 * third && t0.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = workers[0].kill().await;
        workers[0] = self.world.spawn("comet-worker", &[])?;
        for s in senders {
            let _ = s.await;
        }
        let outcomes = outcomes.lock().expect("lock").clone();
        let owed = outcomes
            .values()
            .filter(|o| matches!(o, Sent::Acknowledged | Sent::CommittedUnanswered))
            .count();
        // every invitation made has its job finished (sent, or dead)
        let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
        loop {
            let c = self.queues.counts("send_invitation").await.ok();
            if c.is_some_and(|c| {
                c.waiting + c.delayed + c.active + c.retrying == 0
                    && c.completed_total + c.dead_total >= owed as u64
            }) || Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut received: HashMap<String, usize> = HashMap::new();
        for m in self.smtp.messages() {
            for to in m.to {
                *received.entry(to.to_lowercase()).or_default() += 1;
            }
        }
        let acked: Vec<&String> = outcomes
            .iter()
            .filter(|(_, o)| **o == Sent::Acknowledged)
            .map(|(e, _)| e)
            .collect();
        let missing: Vec<&&String> = acked
            .iter()
            .filter(|e| !received.contains_key(**e))
            .collect();
        let duplicates: usize = received.values().map(|n| n.saturating_sub(1)).sum();
        let unanswered = outcomes
            .values()
            .filter(|o| **o == Sent::CommittedUnanswered)
            .count();
        let refused = outcomes.values().filter(|o| **o == Sent::Refused).count();
        println!();
        println!(
            "| invitations (API SIGKILLed once after {api_killed_at} answers, a worker once) | value |"
        );
        println!("|---|---|");
        println!(
            "| acknowledged (2xx) | {} of {} |",
            acked.len(),
            args.invitations
        );
        println!(
            "| made but unanswered (the API died before answering; a retry found it) | {unanswered} |"
        );
        println!("| never accepted | {refused} |");
        println!("| emails received | {} |", received.values().sum::<usize>());
        println!(
            "| **acknowledged without an email** | **{}** |",
            missing.len()
        );
        println!(
            "| duplicate emails (a worker killed between the SMTP server's acceptance and the record of it) | {duplicates} |"
        );
        if !missing.is_empty() {
            println!(
                "without an email, first ten: {:?}",
                &missing[..missing.len().min(10)]
            );
        }
        Ok(missing.len())
    }
}
