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

use super::{ConsoleError, ConsoleState, SignedIn};
use crate::events::{Event, Next, Subscription};
use crate::manage::Scope;

/// A comment line this often keeps proxies from closing an idle stream, and checks that the
/// session still lives.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
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
    scope: Scope,
    session: String,
    console: Arc<ConsoleState>,
    tick: tokio::time::Interval,
    hello: bool,
}

impl Live {
    fn session_alive(&self) -> bool {
        self.console.sessions.alive(&self.session, Instant::now())
    }

    /// The session lives and still stands for its stored user or token (checked against the
    /// store: a user deleted by the API or the CLI ends the stream too); a session that no
    /// longer does is ended.
    async fn still_signed_in(&self) -> bool {
        let Some(session) = self.console.sessions.peek(&self.session, Instant::now()) else {
            return false;
        };
        let console = Arc::clone(&self.console);
        match tokio::task::spawn_blocking(move || super::still_valid(&console, &session)).await {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => {
                self.console.sessions.end(&self.session);
                false
            }
            // The store could not say: this stream ends, the session is left to the next
            // request's check.
            _ => false,
        }
    }

    /// The next frame to send; `None` ends the stream (signed out, daemon stopping).
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
                    if !self.still_signed_in().await {
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
    let Some(sub) = state.api.files.events.subscribe() else {
        let mut refused = ConsoleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many pages are listening for live updates; reload later.",
        )
        .into_response();
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, "30".parse().expect("static"));
        return Ok(refused);
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Live {
        sub,
        scope: me.scope,
        session: me.id,
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
