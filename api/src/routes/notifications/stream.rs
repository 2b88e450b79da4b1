//! `GET /api/v1/notifications/stream` (Server-Sent Events) and its tickets.
//!
//! Each event is an entry of the user's feed: `id` is its seq (per user, committed in order),
//! `event` is `notification`, `acknowledged` or `deleted`. A stream:
//! 1. takes a slot under the user's cap (Redis, across processes; 429 beyond it);
//! 2. registers with the process's hub (`crate::live`) — *before* reading Postgres;
//! 3. with `Last-Event-ID` (header, or `lastEventId` for a browser's new `EventSource`),
//!    reads the feed after it from Postgres; without, starts at the user's current seq;
//! 4. forwards live events: a seq it already sent is dropped, the next seq is sent, and a seq
//!    further on (a publish overtaken by a later one, or one lost) makes it read the feed from
//!    Postgres again. Since a user's seqs commit in order, what the feed holds up to a seq is
//!    final once that seq is visible: nothing is skipped and nothing sent twice.
//!
//! A keep-alive comment every `STREAM_KEEPALIVE_MS`, which also renews the cap slot. The
//! stream ends when its buffer fills (a slow client: it resumes), and at shutdown.

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use serde::Serialize;
use shared::{db::inbox as feed, inbox::StreamEvent, inbox::streams::StreamStore};
use sqlx::PgPool;
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::inbox_owner;
use crate::{
    AppState,
    auth::Authenticated,
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, ErrorEnvelope, Result},
    extract::ApiQuery,
    live::{LiveEvent, Registration, Signal},
};

/// Feed entries read from Postgres per query.
const PAGE: i64 = 500;
/// The longest ticket accepted (they are 43 characters).
const MAX_TICKET: usize = 128;

/// A stream ticket.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamTicket {
    /// Pass as `?ticket=`; valid once, for `expiresIn` seconds.
    pub ticket: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
    /// The stream's URL with the ticket.
    pub url: String,
}

/// A one-use ticket (valid `STREAM_TICKET_TTL_SECS`, 30 s by default) to open the caller's
/// stream from a browser, whose `EventSource` cannot send `Authorization`: pass it as
/// `?ticket=`. Stored hashed, bound to the caller's project and user.
///
/// Any user's token of the project (no permission needed); 404 for a token that is not a user's.
#[utoipa::path(post, path = "/api/v1/notifications/stream-ticket", tag = "inbox",
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<StreamTicket>)),
              (status = 404, body = ErrorEnvelope, description = "The token is not a user's"),
              AuthRefusals))]
pub(super) async fn stream_ticket(
    auth: Authenticated,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<StreamTicket>>> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    let ttl = s.settings.inbox.ticket_ttl;
    let ticket = s
        .streams
        .issue_ticket(project_id, user_id, ttl)
        .await
        .map_err(ApiError::session_store)?;
    Ok(ApiJson(Data::new(StreamTicket {
        url: format!("/api/v1/notifications/stream?ticket={ticket}"),
        ticket,
        expires_in: ttl.as_secs(),
    })))
}

/// Query parameters of the stream.
#[derive(Debug, Default, serde::Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// A ticket from `POST /api/v1/notifications/stream-ticket`, instead of `Authorization`
    /// (not with it: 400). Access tokens are never accepted in the URL.
    #[param(max_length = 128)]
    pub ticket: Option<String>,
    /// Resume after this event id (as the `Last-Event-ID` header, which wins when both are
    /// sent): for a browser opening a new `EventSource` with a new ticket.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub last_event_id: Option<String>,
}

/// The caller's notifications, live (Server-Sent Events): `notification` (a new item in the
/// inbox, as `GET /api/v1/notifications/{id}`), `acknowledged` (`{notificationId,
/// acknowledgedBy, acknowledgedAt, readAt}`), `deleted` (`{notificationId}`), and `reset`
/// (the feed no longer holds what a resume asked for: reload the inbox). Each event's `id`
/// is its position in the user's feed: reconnect with `Last-Event-ID` to get what was missed,
/// then the live feed, with no gap and no duplicate. A comment line every
/// `STREAM_KEEPALIVE_MS` (15 s) keeps idle connections open.
///
/// Authenticate with a user's token in `Authorization`, or with `?ticket=` (from
/// `POST /api/v1/notifications/stream-ticket`), not both (400); a token in the URL is refused
/// (400). 429 when
/// the user has `STREAM_MAX_PER_USER` streams open (across every API process). A client that
/// does not read fast enough is disconnected once its buffer (`STREAM_BUFFER` events) is
/// full; it resumes with `Last-Event-ID`.
#[utoipa::path(get, path = "/api/v1/notifications/stream", tag = "inbox",
    params(StreamParams,
           ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = Object,
               description = "The event stream; each event's `data` is a JSON object"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope, description = "The token is not a user's"),
              (status = 429, body = ErrorEnvelope,
               description = "The user has STREAM_MAX_PER_USER streams open"),
              AuthRefusals))]
pub(super) async fn stream(
    auth: std::result::Result<Authenticated, ApiError>,
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> Result<Response> {
    let (project_id, user_id) = match params.ticket.as_deref() {
        Some(ticket) => {
            if headers.contains_key(axum::http::header::AUTHORIZATION) {
                return Err(ApiError::BadRequest(
                    "send either Authorization or ?ticket=, not both".into(),
                ));
            }
            redeem(&s.streams, ticket).await?
        }
        None => inbox_owner(&auth?)?,
    };
    let resume = last_event_id(&headers, params.last_event_id.as_deref())?;
    if s.live.is_closing() {
        return Err(ApiError::Unavailable("the stream (shutting down)"));
    }
    let settings = &s.settings.inbox;
    let slot = Slot::open(&s.streams, project_id, user_id, settings).await?;
    // registered before the feed is read: whatever commits after the read reaches it live
    let registration = s.live.register(project_id, user_id, settings.buffer);
    let (current, _) = feed::counters(&s.pool, project_id, user_id).await?;
    let mut live = Live {
        pool: s.pool.clone(),
        project_id,
        user_id,
        last: current,
        pending: VecDeque::new(),
        more: false,
        registration,
        closing: s.live.closing(),
        renew: renew_interval(settings.keepalive),
        lease: settings.slot_lease(),
        slot,
    };
    if let Some(after) = resume {
        live.resume(after.min(current)).await?;
    }
    tracing::info!(%project_id, %user_id, resume = ?resume, "notification stream opened");
    let events = futures::stream::unfold(live, Live::next);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(settings.keepalive))
        .into_response())
}

/// The (project, user) of a ticket, consuming it.
async fn redeem(store: &StreamStore, ticket: &str) -> Result<(Uuid, Uuid)> {
    if ticket.matches('.').count() == 2 {
        // a JWT: never accepted in a URL, where logs and histories keep it
        return Err(ApiError::BadRequest(
            "an access token is never accepted in the URL: get a ticket from \
             POST /api/v1/notifications/stream-ticket"
                .into(),
        ));
    }
    if ticket.is_empty() || ticket.len() > MAX_TICKET {
        return Err(ApiError::Unauthorized(
            "invalid, used or expired stream ticket",
        ));
    }
    store
        .redeem_ticket(ticket)
        .await
        .map_err(ApiError::session_store)?
        .ok_or(ApiError::Unauthorized(
            "invalid, used or expired stream ticket",
        ))
}

/// The resume point: the `Last-Event-ID` header, else `lastEventId`.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<Option<i64>> {
    let raw = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| bad_id())?.trim().to_owned()),
        None => query.map(str::to_owned),
    };
    match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(bad_id),
    }
}

fn bad_id() -> ApiError {
    ApiError::BadRequest("Last-Event-ID must be an event id from this stream".into())
}

fn renew_interval(every: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// A slot under the user's cap of open streams, given back when the stream ends.
struct Slot {
    store: StreamStore,
    project_id: Uuid,
    user_id: Uuid,
    id: Uuid,
}

impl Slot {
    async fn open(
        store: &StreamStore,
        project_id: Uuid,
        user_id: Uuid,
        settings: &shared::config::InboxSettings,
    ) -> Result<Self> {
        let id = Uuid::now_v7();
        let lease = settings.slot_lease();
        let taken = store
            .open_slot(project_id, user_id, id, settings.max_per_user, lease)
            .await
            .map_err(ApiError::session_store)?;
        if !taken {
            tracing::info!(%project_id, %user_id, "notification stream refused: cap reached");
            return Err(ApiError::TooManyRequests {
                retry_after: settings.keepalive.as_secs().max(1),
            });
        }
        Ok(Self {
            store: store.clone(),
            project_id,
            user_id,
            id,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (store, p, u, id) = (self.store.clone(), self.project_id, self.user_id, self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.close_slot(p, u, id).await {
                    tracing::warn!(error = %e, "could not free a stream slot; it expires");
                }
            });
        }
    }
}

/// One open stream's state.
struct Live {
    pool: PgPool,
    project_id: Uuid,
    user_id: Uuid,
    /// The last seq sent (or the starting point).
    last: i64,
    /// Events to send before waiting again.
    pending: VecDeque<Arc<LiveEvent>>,
    /// The feed must be read (a gap, a resync, or a backlog longer than a page).
    more: bool,
    registration: Registration,
    closing: watch::Receiver<bool>,
    renew: tokio::time::Interval,
    lease: Duration,
    slot: Slot,
}

impl Live {
    /// Starts after `after`, reading the feed from there (a `reset` first if it was pruned).
    async fn resume(&mut self, after: i64) -> Result<(), sqlx::Error> {
        self.last = after;
        let first = feed::first_seq(&self.pool, self.project_id, self.user_id).await?;
        if let Some(first) = first.filter(|f| *f > after + 1) {
            self.last = first - 1;
            self.pending.push_back(Arc::new(LiveEvent {
                seq: self.last,
                event: "reset".into(),
                data: serde_json::value::to_raw_value(&serde_json::json!({
                    "reason": "the feed no longer holds the events after Last-Event-ID: \
                        reload the inbox"}))
                .map_err(|e| sqlx::Error::Encode(e.into()))?,
            }));
        }
        self.more = true;
        Ok(())
    }

    /// Reads one page of the feed after `last`.
    async fn read_feed(&mut self) -> Result<(), sqlx::Error> {
        let rows =
            feed::backlog(&self.pool, self.project_id, self.user_id, self.last, PAGE).await?;
        self.more = rows.len() as i64 == PAGE;
        for r in &rows {
            self.last = r.entry.seq;
            let event = LiveEvent::from_event(&StreamEvent::from_rendered(r))
                .map_err(|e| sqlx::Error::Encode(e.into()))?;
            self.pending.push_back(Arc::new(event));
        }
        Ok(())
    }

    fn accept(&mut self, event: Arc<LiveEvent>) {
        if event.seq <= self.last {
            metrics::counter!("comet_inbox_duplicates_dropped_total").increment(1);
        } else if event.seq == self.last + 1 && !self.more {
            self.last = event.seq;
            self.pending.push_back(event);
        } else {
            // a gap: an earlier seq is committed but its publish is late or lost
            self.more = true;
        }
    }

    async fn next(mut self) -> Option<(std::result::Result<Event, Infallible>, Self)> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                let event = Event::default()
                    .id(e.seq.to_string())
                    .event(&e.event)
                    .data(e.data.get());
                return Some((Ok(event), self));
            }
            if self.more {
                if let Err(e) = self.read_feed().await {
                    tracing::warn!(error = %e, "notification stream: cannot read the feed; closing");
                    return None;
                }
                continue;
            }
            tokio::select! {
                biased;
                () = async { let _ = self.closing.wait_for(|c| *c).await; } => return None,
                signal = self.registration.rx.recv() => match signal {
                    // the hub dropped this stream: its buffer filled
                    None => return None,
                    Some(Signal::Resync) => self.more = true,
                    Some(Signal::Event(e)) => self.accept(e),
                },
                _ = self.renew.tick() => {
                    let s = &self.slot;
                    if let Err(e) = s.store.refresh_slot(s.project_id, s.user_id, s.id, self.lease).await {
                        tracing::warn!(error = %e, "could not renew a stream slot");
                    }
                }
            }
        }
    }
}
