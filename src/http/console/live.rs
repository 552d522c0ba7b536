//! Live updates: `GET /console/events`, the event bus as server-sent events, filtered to the
//! session's tenant subtree. Pages work without it; console.js uses it to turn rollout rows
//! Registered and to prepend boot events on the overview.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::session::Session;
use super::{ConsoleError, ConsoleState, SignedIn};
use crate::events::{Event, Next, Refused, Subscription};
use crate::manage::Scope;

/// How long a browser waits before reconnecting a dropped stream.
const RETRY: Duration = Duration::from_secs(5);
/// Boot events the overview shows.
pub(super) const RECENT_SHOWN: usize = 20;

/// An event as the pages see it: its fields, and its time in RFC 3339 (UTC) for `<time>`.
fn event_json(e: &Event) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "time".into(),
            Value::String(crate::manage::rollouts::rfc3339(e.at)),
        );
    }
    v
}

/// The last boot events of the session's subtree, newest first, for the overview.
pub(super) fn recent_boots(state: &ConsoleState, me: &SignedIn) -> Vec<Value> {
    state
        .api
        .files
        .events
        .recent_boots(RECENT_SHOWN, |tenant| me.scope.reaches(tenant))
        .iter()
        .map(|e| event_json(e))
        .collect()
}

/// One open stream.
struct Live {
    sub: Subscription,
    /// The session's subtree, as of the last check.
    scope: Scope,
    id: String,
    session: Session,
    console: Arc<ConsoleState>,
    tick: tokio::time::Interval,
    hello: bool,
}

impl Live {
    fn session_alive(&self) -> bool {
        self.console.sessions.alive(&self.id, Instant::now())
    }

    /// What a request checks, again: the user or token still there with its tenant, the
    /// tenant still in the tree. The subtree is taken anew (a tenant moved out of it is no
    /// longer shown); `false` ends the stream.
    async fn recheck(&mut self) -> bool {
        if !self.session_alive() {
            return false;
        }
        match SignedIn::check(&self.console, &self.id, &self.session).await {
            Ok(Some(scope)) => {
                self.scope = scope;
                true
            }
            Ok(None) => false,
            Err(e) => {
                // The page reconnects, and its request is checked as any other.
                tracing::warn!(
                    "console event stream ended: its session check failed: {}",
                    e.message
                );
                false
            }
        }
    }

    /// The next frame to send; `None` ends the stream (signed out, user or token gone,
    /// daemon stopping).
    async fn next(&mut self) -> Option<SseEvent> {
        if self.hello {
            // Tells the page that it is listening: what happens from now on reaches it.
            self.hello = false;
            return Some(SseEvent::default().event("ready").data("{}").retry(RETRY));
        }
        loop {
            tokio::select! {
                next = self.sub.next() => match next {
                    Next::Event(e) if self.scope.reaches(&e.tenant) => {
                        if !self.session_alive() {
                            return None;
                        }
                        let frame = SseEvent::default()
                            .event(e.what.name())
                            .id(e.seq.to_string())
                            .json_data(event_json(&e))
                            .ok()?;
                        return Some(frame);
                    }
                    // Another tenant's: never sent, not even its existence.
                    Next::Event(_) => continue,
                    Next::Lagged(n) => {
                        return Some(SseEvent::default().event("lagged").data(n.to_string()))
                    }
                    Next::Closed => return None,
                },
                _ = self.tick.tick() => {
                    if !self.recheck().await {
                        return None;
                    }
                    return Some(SseEvent::default().comment("keep-alive"));
                }
            }
        }
    }
}

pub(super) async fn events(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    let sub = match state.api.files.events.subscribe(&me.id) {
        Ok(sub) => sub,
        Err(why) => {
            let text = match why {
                Refused::HolderFull => {
                    "This session already has its share of pages listening for live updates; \
                     close one or reload later."
                }
                Refused::Full | Refused::Closing => {
                    "Too many pages are listening for live updates; reload later."
                }
            };
            let mut refused =
                ConsoleError::new(StatusCode::SERVICE_UNAVAILABLE, text).into_response();
            refused
                .headers_mut()
                .insert(header::RETRY_AFTER, "30".parse().expect("static"));
            return Ok(refused);
        }
    };
    let every = state.live_check;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Live {
        sub,
        scope: me.scope,
        id: me.id,
        session: me.session,
        console: Arc::clone(&state),
        tick,
        hello: true,
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        let frame = live.next().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), live))
    });
    let mut response = Sse::new(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    // A buffering reverse proxy would hold the events back.
    headers.insert("x-accel-buffering", "no".parse().expect("static"));
    // A stream ends for a reason (sign-out, shutdown): the browser reconnects on a fresh
    // connection anyway, so this one is not kept for another request.
    headers.insert(header::CONNECTION, "close".parse().expect("static"));
    Ok(response)
}
