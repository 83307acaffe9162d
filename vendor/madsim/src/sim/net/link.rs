//! Faultline patch: one direction of a simulated connection (a TCP stream's or an endpoint
//! connection's), replacing upstream's tokio channel read through an `async_stream`.
//!
//! Upstream, a flushed write went into an unbounded channel, which woke the reader; the reader's
//! stream then took the packet and slept until its arrival time, and the delivery timer woke the
//! reader a second time: two polls of the reading task per packet, the first with nothing to
//! read. Here the packet waits in the link's queue and the reader is woken once, by the timer
//! at its delivery time. When the reader is already waiting, the sender arms that timer with the
//! reader's waker; otherwise the reader arms it when it next looks at the packet.
//!
//! The timing is upstream's: packets are delivered in order, each no earlier than its arrival
//! time (drawn when it was sent) and no earlier than 1 ms after the reader started waiting for
//! it (upstream's `sleep_until` has a 1 ms minimum). A packet lost or sent over a clogged link
//! is retried by the reader after 1 ms, then after doubling waits up to 10 s, drawing the link
//! again each time, as upstream's stream did. What changed is the schedule: a reader waiting
//! for a packet is no longer polled when it is sent, only when it arrives, so its delivery time
//! counts from the send (upstream counted from that extra poll, some executor steps later).

use super::{network::IpProtocol, NetSim, Payload};
use crate::{
    task::NodeId,
    time::{Duration, Instant, SleepKey, TimeHandle},
};
use bytes::Bytes;
use futures_util::Stream;
use spin::Mutex;
use std::{
    collections::VecDeque,
    future::poll_fn,
    mem,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

/// What a connection carries: a TCP stream's flushed bytes (unboxed: one allocation less per
/// write), or an endpoint connection's message.
#[doc(hidden)]
pub enum Packet {
    Bytes(Bytes),
    Message(Payload),
}

impl Packet {
    pub(super) fn into_message(self) -> Payload {
        match self {
            Packet::Message(message) => message,
            Packet::Bytes(_) => unreachable!("an endpoint connection carries messages"),
        }
    }
}

/// The earliest a packet waiting on a link is delivered, counted from when the reader started
/// waiting for it (upstream's `sleep_until` minimum).
const MIN_WAIT: Duration = Duration::from_millis(1);
/// The longest a lost packet's retries back off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Creates a link from `node` to the socket at `dst`.
pub(super) fn link(
    net: Arc<NetSim>,
    node: NodeId,
    dst: SocketAddr,
    protocol: IpProtocol,
) -> (PayloadSender, PayloadReceiver) {
    let link = Arc::new(Link {
        time: net.time.clone(),
        net,
        node,
        dst,
        protocol,
        state: Mutex::new(State::default()),
    });
    (
        PayloadSender { link: link.clone() },
        PayloadReceiver { link },
    )
}

struct Link {
    net: Arc<NetSim>,
    time: TimeHandle,
    /// The sending node and where its packets go, to draw the link's loss and latency.
    node: NodeId,
    dst: SocketAddr,
    protocol: IpProtocol,
    state: Mutex<State>,
}

impl Link {
    /// When a packet sent now arrives; `None` if it is lost or the link is clogged.
    fn arrival(&self) -> Option<Instant> {
        let latency = (self.net.network.lock()).link_latency(self.node, self.dst, self.protocol)?;
        Some(self.time.now_instant() + latency)
    }
}

#[derive(Default)]
struct State {
    /// Packets in flight, in order, each with its arrival time (`None`: lost or clogged).
    queue: VecDeque<(Packet, Option<Instant>)>,
    /// Where the packet at the front of the queue is.
    head: Head,
    /// The timer armed for `head`'s instant, with that instant.
    timer: Option<(SleepKey, Instant)>,
    /// The reader's waker, while it waits.
    reader: Option<Waker>,
    sender_dropped: bool,
    receiver_dropped: bool,
    /// Tasks waiting for the receiver to go (`PayloadSender::closed`).
    closed: Vec<Waker>,
}

/// The front packet's progress.
#[derive(Default, Clone, Copy)]
enum Head {
    /// Nobody waits for it yet (or the queue is empty).
    #[default]
    Unseen,
    /// Delivered at this instant.
    Due(Instant),
    /// Lost or clogged: the link is drawn again at `at`; the next wait is twice `backoff`.
    Retry { at: Instant, backoff: Duration },
}

impl State {
    /// Moves the front packet on at `now`, for a reader starting to wait for it or woken at its
    /// instant; returns the packet when it is delivered.
    fn advance(&mut self, link: &Link, now: Instant) -> Option<Packet> {
        loop {
            let (_, arrival) = self.queue.front()?;
            self.head = match self.head {
                Head::Unseen => match arrival {
                    Some(arrival) => Head::Due((*arrival).max(now + MIN_WAIT)),
                    None => Head::Retry {
                        at: now + MIN_WAIT,
                        backoff: MIN_WAIT,
                    },
                },
                Head::Due(due) if now >= due => {
                    self.head = Head::Unseen;
                    let (packet, _) = self.queue.pop_front().expect("a front packet");
                    return Some(packet);
                }
                Head::Retry { at, backoff } if now >= at => {
                    let backoff = (backoff * 2).min(MAX_BACKOFF);
                    match link.arrival() {
                        Some(arrival) => Head::Due(arrival.max(now + MIN_WAIT)),
                        None => Head::Retry {
                            at: now + backoff,
                            backoff,
                        },
                    }
                }
                // Not yet: the caller arms the timer for it.
                Head::Due(_) | Head::Retry { .. } => return None,
            };
        }
    }

    /// The instant the reader must be woken at for the front packet, if it waits for one.
    fn wake_at(&self) -> Option<Instant> {
        match self.head {
            Head::Unseen => None,
            Head::Due(at) | Head::Retry { at, .. } => Some(at),
        }
    }

    /// Makes sure a timer wakes `waker` at the front packet's instant.
    fn arm(&mut self, time: &TimeHandle, waker: &Waker) {
        let Some(at) = self.wake_at() else {
            return;
        };
        if let Some((key, armed_at)) = self.timer {
            if armed_at == at && time.set_sleep_waker(key, waker) {
                return;
            }
            time.cancel_sleep(key);
        }
        self.timer = Some((time.add_sleep_at(at, waker), at));
    }

    fn disarm(&mut self, time: &TimeHandle) {
        if let Some((key, _)) = self.timer.take() {
            time.cancel_sleep(key);
        }
    }
}

/// The sending half of a link.
#[doc(hidden)]
pub struct PayloadSender {
    link: Arc<Link>,
}

impl PayloadSender {
    /// Sends `packet`; `None` if the receiver is gone.
    pub(super) fn send(&self, packet: Packet) -> Option<()> {
        let link = &*self.link;
        // Drawn before anything else, as upstream did.
        let arrival = link.arrival();
        let mut state = link.state.lock();
        if state.receiver_dropped {
            return None;
        }
        state.queue.push_back((packet, arrival));
        if state.queue.len() == 1 {
            if let Some(reader) = state.reader.clone() {
                // The reader waits for this packet from now on: arm its delivery timer instead
                // of waking the reader to arm it.
                let now = link.time.now_instant();
                let delivered = state.advance(link, now);
                debug_assert!(delivered.is_none(), "a packet takes at least 1 ms");
                state.arm(&link.time, &reader);
            }
        }
        Some(())
    }

    pub(super) fn is_closed(&self) -> bool {
        self.link.state.lock().receiver_dropped
    }

    pub(super) async fn closed(&self) {
        poll_fn(|cx| {
            let mut state = self.link.state.lock();
            if state.receiver_dropped {
                return Poll::Ready(());
            }
            if !state.closed.iter().any(|w| w.will_wake(cx.waker())) {
                state.closed.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for PayloadSender {
    fn drop(&mut self) {
        let mut state = self.link.state.lock();
        state.sender_dropped = true;
        // A reader waiting on an empty link learns of the end now; one waiting for a packet
        // learns of it after the packet's delivery.
        let reader = if state.queue.is_empty() {
            state.reader.take()
        } else {
            None
        };
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// The receiving half of a link: a stream of the packets, ending when the sender is dropped
/// and every packet it sent is delivered.
#[doc(hidden)]
pub struct PayloadReceiver {
    link: Arc<Link>,
}

impl Stream for PayloadReceiver {
    type Item = Packet;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Packet>> {
        let link = &*self.link;
        let mut state = link.state.lock();
        if state.queue.is_empty() {
            if state.sender_dropped {
                state.reader = None;
                return Poll::Ready(None);
            }
        } else {
            let now = link.time.now_instant();
            if let Some(packet) = state.advance(link, now) {
                state.disarm(&link.time);
                state.reader = None;
                return Poll::Ready(Some(packet));
            }
            state.arm(&link.time, cx.waker());
        }
        match &state.reader {
            Some(reader) if reader.will_wake(cx.waker()) => {}
            _ => state.reader = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for PayloadReceiver {
    fn drop(&mut self) {
        let mut state = self.link.state.lock();
        state.receiver_dropped = true;
        state.disarm(&self.link.time);
        state.reader = None;
        let queue = mem::take(&mut state.queue);
        let closed = mem::take(&mut state.closed);
        drop(state);
        // Dropped unlocked: a message may own anything.
        drop(queue);
        for waker in closed {
            waker.wake();
        }
    }
}
