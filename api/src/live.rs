//! The inbox's live fan-out in this API process: **one** Redis pub/sub connection per process
//! (a pattern subscription over every user's channel, `<prefix>:inbox-live:*`), whose messages
//! go to the process's open streams of that (project, user) through a map of bounded senders.
//!
//! - A stream registers *before* it reads its backlog from Postgres, so an event committed
//!   after that read is published after the registration and reaches it.
//! - Each stream has a bounded buffer (`STREAM_BUFFER`). A message for a stream whose buffer
//!   is full drops that stream's sender: the stream ends after what it holds, and the client
//!   resumes with `Last-Event-ID`. Memory per stream never grows past its buffer.
//! - The connection reconnects with backoff; after every (re)connect each open stream is told
//!   to re-read its feed from Postgres, since messages published meanwhile were lost.
//! - Every process receives every user's messages (a pattern subscription): simple, one
//!   connection, and cheap at Comet's volumes: a message for a user with no stream in this
//!   process costs a look-up of its channel, and one that has streams is parsed once (its
//!   `data` kept as the publisher's JSON text, which the streams send as it is: no tree of
//!   values built, cloned per stream and printed again). A deployment with many API processes
//!   and heavy traffic would switch to per-user `SUBSCRIBE` on the same connection.
//! - [`Hub::close`] (at shutdown) ends every stream, so the server's graceful shutdown is not
//!   held open by them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use shared::{
    inbox::{StreamEvent, channel_pattern, parse_channel},
    redis_client::{Channel, RedisClient},
};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// A stream event ready to send: [`StreamEvent`] with its `data` as JSON text (as published,
/// or printed once from a read of the feed).
#[derive(Debug, Deserialize)]
pub struct LiveEvent {
    /// The user's feed seq: the SSE `id`.
    pub seq: i64,
    /// The SSE `event`.
    pub event: String,
    /// The SSE `data`, JSON.
    pub data: Box<RawValue>,
}

impl LiveEvent {
    /// An event read from the feed.
    pub fn from_event(e: &StreamEvent) -> serde_json::Result<Self> {
        Ok(Self {
            seq: e.seq,
            event: e.event.clone(),
            data: serde_json::value::to_raw_value(&e.data)?,
        })
    }
}

/// What the hub sends a stream.
#[derive(Debug, Clone)]
pub enum Signal {
    /// An event published on the stream's user's channel.
    Event(Arc<LiveEvent>),
    /// Events may have been missed (the pub/sub connection was re-made): re-read the feed.
    Resync,
}

type Senders = Vec<(u64, mpsc::Sender<Signal>)>;

/// The process's fan-out: (project, user) → the senders of its open streams.
#[derive(Debug)]
pub struct Hub {
    streams: Mutex<HashMap<(Uuid, Uuid), Senders>>,
    next_id: AtomicU64,
    closing: watch::Sender<bool>,
}

/// A stream's place in the hub; dropping it unregisters the stream.
#[derive(Debug)]
pub struct Registration {
    hub: Arc<Hub>,
    key: (Uuid, Uuid),
    id: u64,
    /// What the hub sends this stream; `None` once the hub dropped it (its buffer filled).
    pub rx: mpsc::Receiver<Signal>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.remove(self.key, self.id);
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            streams: Mutex::default(),
            next_id: AtomicU64::new(1),
            closing: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// Registers a stream of the user with a buffer of `buffer` signals.
    pub fn register(
        self: &Arc<Self>,
        project_id: Uuid,
        user_id: Uuid,
        buffer: usize,
    ) -> Registration {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (project_id, user_id);
        self.lock().entry(key).or_default().push((id, tx));
        metrics::gauge!("comet_inbox_streams_open").increment(1.0);
        Registration {
            hub: Arc::clone(self),
            key,
            id,
            rx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, Uuid), Senders>> {
        // a panic while holding the map leaves it usable: every operation is a single edit
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove(&self, key: (Uuid, Uuid), id: u64) {
        let mut streams = self.lock();
        if let Some(senders) = streams.get_mut(&key) {
            let before = senders.len();
            senders.retain(|(i, _)| *i != id);
            if senders.len() < before {
                metrics::gauge!("comet_inbox_streams_open").decrement(1.0);
            }
            if senders.is_empty() {
                streams.remove(&key);
            }
        }
    }

    /// Streams registered in this process.
    pub fn open_streams(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Sends to every stream of the user; a stream whose buffer is full is dropped.
    fn dispatch(&self, key: (Uuid, Uuid), signal: &Signal) {
        let mut streams = self.lock();
        let Some(senders) = streams.get_mut(&key) else {
            return;
        };
        senders.retain(|(_, tx)| keep(tx, signal.clone()));
        let left = senders.len();
        if left == 0 {
            streams.remove(&key);
        }
    }

    /// Tells every stream to re-read its feed.
    fn resync_all(&self) {
        let mut streams = self.lock();
        for senders in streams.values_mut() {
            senders.retain(|(_, tx)| keep(tx, Signal::Resync));
        }
        streams.retain(|_, s| !s.is_empty());
    }

    /// Resolves once the hub is closing (shutdown).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every stream (and refuses new ones) for shutdown.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Listens on every user's channel until [`Hub::close`]; reconnects with backoff and
    /// resyncs the open streams after every connect.
    pub async fn run(self: Arc<Self>, client: RedisClient, prefix: String) {
        let pattern = channel_pattern(&prefix);
        let mut closing = self.closing();
        let mut backoff = Duration::from_millis(100);
        loop {
            if *closing.borrow() {
                return;
            }
            let sub = async {
                let channels = [Channel::Pattern(pattern.clone())];
                client.subscribe(&channels).await
            };
            match tokio::time::timeout(Duration::from_secs(5), sub).await {
                Ok(Ok(messages)) => {
                    backoff = Duration::from_millis(100);
                    self.resync_all();
                    let mut messages = std::pin::pin!(messages);
                    loop {
                        tokio::select! {
                            msg = messages.next() => match msg {
                                Some(msg) => self.handle(&prefix, &msg),
                                None => break,
                            },
                            _ = closing.wait_for(|c| *c) => return,
                        }
                    }
                    metrics::counter!("comet_inbox_pubsub_reconnects_total").increment(1);
                    tracing::warn!("inbox pub/sub connection lost; reconnecting");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "inbox pub/sub: cannot subscribe; retrying")
                }
                Err(_) => tracing::warn!("inbox pub/sub: subscribe timed out; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn handle(&self, prefix: &str, msg: &redis::Msg) {
        let Some(key) = parse_channel(prefix, msg.get_channel_name()) else {
            return;
        };
        if !self.lock().contains_key(&key) {
            // no stream of this user here (another process holds it, or none is open)
            return;
        }
        let event = serde_json::from_slice::<LiveEvent>(msg.get_payload_bytes()).ok();
        match event {
            Some(e) => self.dispatch(key, &Signal::Event(Arc::new(e))),
            None => tracing::warn!("inbox pub/sub: a message that is not a stream event"),
        }
    }
}

/// Offers a signal to a stream; false (drop the stream) when its buffer is full or it ended.
fn keep(tx: &mpsc::Sender<Signal>, signal: Signal) -> bool {
    match tx.try_send(signal) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("comet_inbox_slow_disconnects_total").increment(1);
            tracing::info!("inbox stream too slow: its buffer is full; disconnecting it");
            metrics::gauge!("comet_inbox_streams_open").decrement(1.0);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            metrics::gauge!("comet_inbox_streams_open").decrement(1.0);
            false
        }
    }
}
