//! The simulated network's hold on clients' requests: the nemesis's `hold` fault (its model is
//! in [`chaos::nemesis`]), applied where the simulator can tell one request from another, at
//! the client's connection layer ([`client::RequestHold`]).
//!
//! madsim carries a TCP stream as whole flushed writes on one ordered channel, with no hook per
//! message; so each workload client's connections ask [`Holds`] about every request before
//! writing it. A request that a hold in force selects (by the client node it comes from, its
//! API, whether a produce is transactional, and the hold's remaining count) stays on its
//! connection, the connection's later writes queued behind it, until the hold is released;
//! then its original bytes go out on that connection and reach the broker late. Everything
//! here runs on the simulator's one thread in seed order, so which requests are held is as
//! deterministic as the run.

use std::sync::{Arc, Mutex};

use chaos::nemesis::{HeldRequests, Node};
use client::{OutgoingRequest, Release, RequestHold};
use kafka_protocol::messages::{ApiKey, ProduceRequest};
use kafka_protocol::protocol::Decodable;
use tokio::sync::Notify;

use crate::trace::Trace;

/// The Kafka API named `name` as Kafka spells it (`EndTxn`, `Produce`, ...; see
/// [`crate::scenario::is_api_name`]).
pub fn api_named(name: &str) -> Option<ApiKey> {
    ApiKey::iter().find(|k| format!("{k:?}") == name)
}

/// The holds in force; cheap to clone (every client's connections share them).
#[derive(Clone, Debug)]
pub struct Holds {
    state: Arc<Mutex<State>>,
    /// Woken by every heal. (A Notify, not a watch channel: tokio's watch picks whom to wake
    /// with a thread-local RNG, which would break the simulator's determinism.)
    healed: Arc<Notify>,
    trace: Trace,
}

#[derive(Debug)]
struct State {
    holds: Vec<Hold>,
    /// Heals so far: a request held before the current count goes out.
    heals: u64,
    /// Requests held since the last heal.
    held: u32,
}

#[derive(Debug)]
struct Hold {
    which: HeldRequests,
    api: ApiKey,
    /// Requests this hold has taken so far.
    held: u32,
}

impl Holds {
    pub fn new(trace: Trace) -> Holds {
        Holds {
            state: Arc::new(Mutex::new(State {
                holds: Vec::new(),
                heals: 0,
                held: 0,
            })),
            healed: Arc::new(Notify::new()),
            trace,
        }
    }

    /// What a client's connections ask before writing each request.
    pub fn hook(&self) -> Arc<dyn RequestHold> {
        Arc::new(self.clone())
    }

    /// Holds `which` from now on.
    pub fn hold(&self, which: &HeldRequests) {
        let api = api_named(&which.api).expect("the scenario validated the API name");
        self.lock().holds.push(Hold {
            which: which.clone(),
            api,
            held: 0,
        });
    }

    /// Ends every hold; every request still held goes out now. How many were held since the
    /// last heal.
    pub fn heal(&self) -> u32 {
        let held = {
            let mut state = self.lock();
            state.holds.clear();
            state.heals += 1;
            std::mem::take(&mut state.held)
        };
        self.healed.notify_waiters();
        held
    }

    /// Completes at the first heal after the count of heals was `heals`.
    async fn healed_since(&self, heals: u64) {
        loop {
            let healed = self.healed.notified();
            tokio::pin!(healed);
            // Registered before the check, so a heal in between still wakes it.
            healed.as_mut().enable();
            if self.lock().heals != heals {
                return;
            }
            healed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client node a connection's local address belongs to (`10.0.1.<n>`).
fn client_of(request: &OutgoingRequest<'_>) -> Option<Node> {
    match request.local?.ip() {
        std::net::IpAddr::V4(ip) if ip.octets()[..3] == [10, 0, 1] => {
            Some(Node::Client(u32::from(ip.octets()[3])))
        }
        _ => None,
    }
}

/// Whether a produce request carries a transactional id (a transactional producer's).
fn transactional_produce(request: &OutgoingRequest<'_>) -> bool {
    let mut body = request.body;
    ProduceRequest::decode(&mut body, request.version)
        .is_ok_and(|r| r.transactional_id.is_some_and(|id| !id.is_empty()))
}

impl RequestHold for Holds {
    fn hold(&self, request: &OutgoingRequest<'_>) -> Option<Release> {
        let client = client_of(request)?;
        let mut state = self.lock();
        let hold = state.holds.iter_mut().find(|h| {
            h.api == request.api
                && h.which.client.is_none_or(|c| c == client)
                && h.which.count.is_none_or(|n| h.held < n)
                && (!h.which.transactional
                    || request.api != ApiKey::Produce
                    || transactional_produce(request))
        })?;
        hold.held += 1;
        let held_for = hold.which.held_for;
        let what = format!("{:?} v{} to {}", request.api, request.version, request.peer);
        self.trace.event(
            client.to_string(),
            format!("network holds {what} ({} of {})", hold.held, hold.which),
        );
        state.held += 1;
        let heals = state.heals;
        drop(state);
        let holds = self.clone();
        Some(Box::pin(async move {
            let healed = holds.healed_since(heals);
            match held_for {
                Some(d) => {
                    // Biased: an unbiased select! draws from tokio's own RNG.
                    tokio::select! {
                        biased;
                        _ = healed => {}
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                None => healed.await,
            }
            holds
                .trace
                .event(client.to_string(), format!("network delivers held {what}"));
        }))
    }
}
