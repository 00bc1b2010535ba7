//! One WebSocket: replay from PostgreSQL after `since`, then live events from the hub, with
//! type filters, pings, and the cut of a client that cannot keep up.
//!
//! Everything runs in one task per socket holding at most one frame of its own: the hub's
//! broadcast ring is the per-connection queue (`NOTIFICATIONS_QUEUE` events). The task takes
//! the next event from the ring only once the socket has accepted the previous frame, so a
//! client that does not read falls behind in the ring; once it is more than the ring holds
//! behind, it is closed with 4008 and the id to resume from.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::NotificationsState;
use super::hub::{Event, Slot};
use super::store;

/// Close code for a client that fell too far behind (RFC 6455 leaves 4000-4999 to
/// applications); it reconnects with `?since=` and loses nothing.
pub const CLOSE_TOO_SLOW: u16 = 4008;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;
/// Events read from PostgreSQL per replay query.
const REPLAY_PAGE: i64 = 200;
/// At most this many types in a filter.
pub const MAX_TYPES: usize = 50;

/// Which event types a client wants: exact types (`kb.updated`) or families (`scan.*`).
/// Empty means all.
#[derive(Clone, Debug, Default)]
pub struct Filter(Vec<String>);

impl Filter {
    pub fn parse<'a>(types: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut out = Vec::new();
        for raw in types {
            let t = raw.trim();
            if t.is_empty() {
                continue;
            }
            let base = t.strip_suffix(".*").unwrap_or(t);
            if !crate::events::valid_type(base) {
                return Err(format!(
                    "{t:?} is not an event type: use lowercase dot-separated words, optionally ending in .* (scan.*)"
                ));
            }
            out.push(t.to_string());
        }
        if out.len() > MAX_TYPES {
            return Err(format!("at most {MAX_TYPES} types"));
        }
        Ok(Self(out))
    }

    /// The same filter as SQL `LIKE` patterns (`_` escaped: it is part of type names).
    pub fn like_patterns(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|t| {
                let escaped = t.replace('_', "\\_");
                match escaped.strip_suffix('*') {
                    Some(prefix) => format!("{prefix}%"),
                    None => escaped,
                }
            })
            .collect()
    }

    pub fn matches(&self, kind: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => kind.starts_with(prefix),
                None => t == kind,
            })
    }
}

/// What a client may send: `{"subscribe": ["kb.updated", "scan.*"]}` (an empty list means all).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    subscribe: Vec<String>,
}

/// Everything one socket needs, decided before the upgrade.
pub struct Session {
    pub state: NotificationsState,
    pub since: Option<i64>,
    pub filter: Filter,
    pub slot: Slot,
}

fn close(code: u16, reason: impl Into<String>) -> Message {
    let reason: String = reason.into();
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

enum End {
    /// Send this close frame (best effort) and stop.
    Close(Message, &'static str),
    /// The peer is gone or the socket failed: nothing more can be sent.
    Gone,
}

struct Conn {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    /// A frame waiting for the socket to accept it.
    pending: Option<Message>,
    /// Frames accepted but maybe not yet flushed.
    dirty: bool,
    /// The highest id this socket has dealt with (sent or filtered out).
    seen: i64,
    /// The id a client resumes from after a cut: the last one it was sent.
    sent: i64,
    filter: Filter,
    /// When the ping still unanswered went out; any message from the peer answers it.
    ping_sent: Option<Instant>,
}

impl Conn {
    async fn drive(&mut self) -> Result<(), axum::Error> {
        drive(&mut self.sink, &mut self.pending, &mut self.dirty).await
    }

    /// Queues `event` if the client wants it. The caller only does this with nothing pending.
    fn offer(&mut self, event: &Event) {
        if event.id <= self.seen {
            return;
        }
        self.seen = event.id;
        if self.filter.matches(&event.kind) {
            self.sent = event.id;
            self.pending = Some(Message::Text(event.frame.clone()));
            metrics::counter!("notifications_messages_sent_total").increment(1);
        }
    }

    /// A message from the client: a subscription change, a close, or something we refuse.
    fn heard(&mut self, message: Message) -> Result<(), End> {
        self.ping_sent = None;
        match message {
            Message::Text(text) => {
                let parsed = serde_json::from_str::<ClientMessage>(text.as_str())
                    .map_err(|e| e.to_string())
                    .and_then(|m| Filter::parse(m.subscribe.iter().map(String::as_str)));
                match parsed {
                    Ok(filter) => {
                        self.filter = filter;
                        Ok(())
                    }
                    Err(why) => Err(End::Close(
                        close(
                            CLOSE_POLICY,
                            truncate(&format!("expected {{\"subscribe\": [types]}}: {why}")),
                        ),
                        "bad_message",
                    )),
                }
            }
            Message::Binary(_) => Err(End::Close(
                close(CLOSE_UNSUPPORTED, "binary messages are not accepted"),
                "bad_message",
            )),
            // tungstenite queues the pong itself; it goes out with the next flush.
            Message::Ping(_) => {
                self.dirty = true;
                Ok(())
            }
            Message::Pong(_) => Ok(()),
            Message::Close(_) => {
                self.dirty = true;
                Err(End::Gone)
            }
        }
    }

    /// Sends every stored event after `seen` that the client wants, oldest first, until the
    /// hub has nothing newer than what was sent; returns the live feed from there on.
    async fn replay(
        &mut self,
        state: &NotificationsState,
    ) -> Result<tokio::sync::broadcast::Receiver<Arc<Event>>, End> {
        loop {
            loop {
                let rows = store::after(&state.db, self.seen, REPLAY_PAGE)
                    .await
                    .map_err(|err| {
                        tracing::warn!(error = %err, "notification replay failed");
                        End::Close(close(1011, "replay failed; reconnect with since"), "error")
                    })?;
                let done = rows.len() < REPLAY_PAGE as usize;
                for row in rows {
                    let event = Event::new(row.id, row.kind, row.ts, row.data);
                    self.offer(&event);
                    if self.pending.is_some() {
                        self.write_within(state.config.ping_interval * 2).await?;
                    }
                }
                if done {
                    break;
                }
            }
            let (rx, hub_last) = state.hub.subscribe();
            // Everything the hub sent before this subscription is at most `hub_last`: done when
            // the table gave us that far, otherwise read the rest from the table again.
            if hub_last <= self.seen {
                return Ok(rx);
            }
        }
    }

    async fn write_within(&mut self, within: Duration) -> Result<(), End> {
        match tokio::time::timeout(within, self.drive()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Gone),
        }
    }
}

/// Pushes the pending frame into the socket and flushes. Holds no frame of its own, so
/// dropping it in a `select!` loses nothing.
async fn drive(
    sink: &mut SplitSink<WebSocket, Message>,
    pending: &mut Option<Message>,
    dirty: &mut bool,
) -> Result<(), axum::Error> {
    poll_fn(|cx| {
        if pending.is_some() {
            ready!(Sink::poll_ready(std::pin::Pin::new(&mut *sink), cx))?;
            let frame = pending.take().expect("checked above");
            std::pin::Pin::new(&mut *sink).start_send(frame)?;
            *dirty = true;
        }
        ready!(Sink::poll_flush(std::pin::Pin::new(&mut *sink), cx))?;
        *dirty = false;
        Poll::Ready(Ok(()))
    })
    .await
}

fn too_slow(resume_from: i64) -> End {
    End::Close(
        close(
            CLOSE_TOO_SLOW,
            format!("too slow: reconnect with since={resume_from}"),
        ),
        "too_slow",
    )
}

fn truncate(reason: &str) -> String {
    // A close reason must fit in a control frame (123 bytes).
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Serves one upgraded socket until it closes, the client falls behind, or shutdown.
pub async fn serve(socket: WebSocket, session: Session) {
    let Session {
        state,
        since,
        filter,
        slot,
    } = session;
    let (sink, stream) = socket.split();
    let mut conn = Conn {
        sink,
        stream,
        pending: None,
        dirty: false,
        seen: 0,
        sent: since.unwrap_or(0),
        filter,
        ping_sent: None,
    };
    let stop = state.stop.clone();
    let outcome = tokio::select! {
        () = stop.cancelled() => End::Close(close(CLOSE_GOING_AWAY, "server shutting down; reconnect with since"), "shutdown"),
        end = run(&mut conn, &state, since, &slot) => end,
    };
    // Best effort, bounded: a client that reads nothing never gets the rest. The frame already
    // promised (counted in `sent`) goes first, so the close reason's resume id stays true.
    let within = match &outcome {
        End::Close(_, "shutdown") => Duration::from_secs(2),
        End::Close(..) => state.config.ping_interval,
        // Only a pending close reply or pong: never hold the slot long for a peer that left.
        End::Gone => Duration::from_secs(1),
    };
    if let End::Close(_, reason) = &outcome
        && *reason != "shutdown"
    {
        debug_assert!(super::CUT_REASONS.contains(reason), "{reason}");
        metrics::counter!("notifications_clients_cut_total", "reason" => *reason).increment(1);
    }
    let _ = tokio::time::timeout(within, async {
        if conn.drive().await.is_err() {
            return;
        }
        if let End::Close(frame, _) = outcome {
            conn.pending = Some(frame);
            let _ = conn.drive().await;
        }
    })
    .await;
    drop(slot);
}

async fn run(conn: &mut Conn, state: &NotificationsState, since: Option<i64>, slot: &Slot) -> End {
    let mut rx = match since {
        Some(since) => {
            conn.seen = since;
            match conn.replay(state).await {
                Ok(rx) => rx,
                Err(end) => return end,
            }
        }
        None => {
            let (rx, last) = state.hub.subscribe();
            conn.seen = last;
            conn.sent = last;
            rx
        }
    };
    let period = state.config.ping_interval;
    let mut revocations = slot.revocations();
    // Revoked between authentication and this subscription: no change would tell us.
    if slot.revoked() {
        return End::Close(close(CLOSE_POLICY, "the API key was revoked"), "revoked");
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let writing = conn.pending.is_some() || conn.dirty;
        tokio::select! {
            written = drive(&mut conn.sink, &mut conn.pending, &mut conn.dirty), if writing => {
                if written.is_err() {
                    return End::Gone;
                }
            }
            event = rx.recv(), if conn.pending.is_none() => match event {
                Ok(event) => conn.offer(&event),
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, resume_from = conn.sent, "notification client too slow; closing");
                    return too_slow(conn.sent);
                }
                Err(RecvError::Closed) => {
                    return End::Close(close(CLOSE_GOING_AWAY, "server shutting down; reconnect with since"), "shutdown");
                }
            },
            message = conn.stream.next() => match message {
                Some(Ok(message)) => {
                    if let Err(end) = conn.heard(message) {
                        return end;
                    }
                }
                Some(Err(err)) => {
                    let too_big = err.to_string().contains("too long") || err.to_string().contains("Space limit");
                    return if too_big {
                        End::Close(close(CLOSE_TOO_BIG, format!("messages are limited to {} bytes", state.config.max_message_bytes)), "bad_message")
                    } else {
                        End::Gone
                    };
                }
                None => return End::Gone,
            },
            // The socket is not taking frames: check whether the client has fallen further
            // behind than the ring holds (it cannot see `Lagged` without reading the ring).
            () = tokio::time::sleep(Duration::from_millis(250)), if conn.pending.is_some() => {
                if rx.len() > state.config.queue {
                    tracing::info!(behind = rx.len(), resume_from = conn.sent, "notification client too slow; closing");
                    return too_slow(conn.sent);
                }
            }
            Ok(()) = revocations.changed() => {
                if slot.revoked() {
                    return End::Close(close(CLOSE_POLICY, "the API key was revoked"), "revoked");
                }
            }
            _ = ping.tick() => {
                // Silent for a whole period after a ping: the peer (or the path to it) is gone.
                if conn.ping_sent.is_some_and(|at| at.elapsed() >= period) {
                    metrics::counter!("notifications_clients_cut_total", "reason" => "dead").increment(1);
                    return End::Gone;
                }
                if conn.ping_sent.is_none() && conn.pending.is_none() {
                    conn.pending = Some(Message::Ping(Default::default()));
                    conn.ping_sent = Some(Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Filter;

    #[test]
    fn filters_match_exact_types_and_families() {
        let f = Filter::parse(["kb.updated", "scan.*"]).unwrap();
        assert!(f.matches("kb.updated"));
        assert!(f.matches("scan.completed"));
        assert!(!f.matches("scanner"));
        assert!(!f.matches("license.changed"));
        assert!(Filter::parse([]).unwrap().matches("anything"));
        assert!(Filter::parse(["Scan"]).is_err());
        assert!(Filter::parse(["scan.**"]).is_err());
    }
}
