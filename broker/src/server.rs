//! The network front: accepts connections and moves frames between sockets and the protocol.
//!
//! Each connection has a reader task, which decodes and handles requests in arrival order, and
//! a writer, which sends responses in that same order even when a later request (acks=1
//! produce) finishes before an earlier one (a long-polling fetch, an acks=all produce). A bad
//! frame or request closes that connection and is logged with the peer address; nothing else is
//! affected. Works the same on real tokio and on the simulator's network.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, Latch};
use crate::config::BrokerConfig;
use crate::protocol::{self, Fallback, Reply};
use wire::frame;

/// Responses a connection may have outstanding before it stops reading more requests.
const MAX_IN_FLIGHT: usize = 64;

/// Serves `listener` until `shutdown` resolves and, in a cluster, the controlled shutdown that
/// follows it has moved this broker's leaderships away (Kafka's order: clients meanwhile get
/// NOT_LEADER_OR_FOLLOWER here and find the new leaders, instead of hanging on a closed
/// listener or a connection that stopped reading while this broker still leads), then stops
/// within `shutdown-timeout-ms`:
/// the listener closes first, parked requests are answered ([`Broker::begin_shutdown`]),
/// every connection stops reading and flushes the responses to what it has read; connections
/// still busy when the bound passes are closed regardless. The caller then closes the logs.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::broadcast::channel::<()>(1);
    let kill = Arc::new(Latch::default());
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let quotas = Arc::new(ConnectionQuotas::new(&broker.config));
    let maintenance = tokio::spawn(maintain(Arc::clone(&broker), stop_tx.subscribe()));
    let cleaner = broker
        .config
        .log_cleaner_enable
        .then(|| tokio::spawn(clean_logs(Arc::clone(&broker), stop_tx.subscribe())));
    let shutdown = async {
        shutdown.await;
        // A broker alone has nobody to hand its leaderships to: it answers what is parked and
        // stops, its controlled shutdown then a formality (`Broker::shutdown`).
        if broker.image().live_brokers().count() > 1 {
            broker.controlled_shutdown().await;
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = ConnectionQuotas::admit(&quotas, peer.ip()) else {
                        // Over a limit: closed at once, as Kafka does, and counted.
                        broker.count_refused_connection();
                        tracing::info!(%peer, "closing a new connection: connection limit reached");
                        drop(stream);
                        continue;
                    };
                    let broker = Arc::clone(&broker);
                    let stop = stop_tx.subscribe();
                    let kill = Arc::clone(&kill);
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        connection(broker, stream, peer, stop, kill).await;
                        drop(slot);
                        drop(done);
                    });
                }
                Err(e) => {
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    // Listeners first: no new connection may start a request the shutdown would cut.
    drop(listener);
    broker.begin_shutdown();
    let _ = stop_tx.send(());
    drop(stop_rx);
    drop(done_tx);
    // Every connection holds a `done` sender until it has flushed its last response.
    let bound = Duration::from_millis(broker.config.shutdown_timeout_ms);
    if tokio::time::timeout(bound, done_rx.recv()).await.is_err() {
        tracing::warn!(
            timeout_ms = broker.config.shutdown_timeout_ms,
            "connections still busy at the shutdown bound: closing them"
        );
        kill.set();
        let _ = done_rx.recv().await;
    }
    let _ = maintenance.await;
    if let Some(cleaner) = cleaner {
        let _ = cleaner.await;
    }
}

/// `max.connections`, `max.connections.per.ip` and `max.connections.per.ip.overrides`: how
/// many connections are open, in all and per client address.
struct ConnectionQuotas {
    max: usize,
    per_ip: usize,
    overrides: BTreeMap<IpAddr, usize>,
    open: Mutex<OpenConnections>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    by_ip: BTreeMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
struct ConnectionSlot {
    quotas: Arc<ConnectionQuotas>,
    ip: IpAddr,
}

impl ConnectionQuotas {
    fn new(config: &BrokerConfig) -> ConnectionQuotas {
        ConnectionQuotas {
            max: config.max_connections as usize,
            per_ip: config.max_connections_per_ip as usize,
            overrides: config
                .max_connections_per_ip_overrides
                .iter()
                .map(|(ip, max)| (*ip, *max as usize))
                .collect(),
            open: Mutex::new(OpenConnections::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `ip`, or `None` if a limit is reached.
    fn admit(quotas: &Arc<ConnectionQuotas>, ip: IpAddr) -> Option<ConnectionSlot> {
        let limit = quotas.overrides.get(&ip).copied().unwrap_or(quotas.per_ip);
        let mut open = quotas.lock();
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= quotas.max || from_ip >= limit {
            return None;
        }
        open.total += 1;
        *open.by_ip.entry(ip).or_insert(0) += 1;
        assert!(open.total <= quotas.max);
        Some(ConnectionSlot {
            quotas: Arc::clone(quotas),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.quotas.lock();
        assert!(open.total > 0, "an admitted connection is counted");
        open.total -= 1;
        let from_ip = open
            .by_ip
            .get_mut(&self.ip)
            .expect("an admitted address is counted");
        assert!(*from_ip > 0);
        *from_ip -= 1;
        if *from_ip == 0 {
            open.by_ip.remove(&self.ip);
        }
    }
}

/// Periodic retention and lazy-flush work.
async fn maintain(broker: Arc<Broker>, mut stop: tokio::sync::broadcast::Receiver<()>) {
    let tick = Duration::from_millis(250);
    let retention_every =
        Duration::from_millis(broker.config.log_retention_check_interval_ms.max(1));
    let expiry_every =
        Duration::from_millis(broker.config.offsets_retention_check_interval_ms.max(1));
    let mut since_retention = Duration::ZERO;
    let mut since_expiry = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            _ = stop.recv() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        since_retention += tick;
        since_expiry += tick;
        let retention = since_retention >= retention_every;
        if retention {
            since_retention = Duration::ZERO;
        }
        broker.run_maintenance(retention).await;
        broker.store_changed_groups().await;
        if since_expiry >= expiry_every {
            since_expiry = Duration::ZERO;
            broker.expire_offsets().await;
        }
    }
}

/// The log cleaner (Kafka's cleaner thread): cleans the dirtiest compacted log, again at once
/// while there is one, else after `log.cleaner.backoff.ms`.
async fn clean_logs(broker: Arc<Broker>, mut stop: tokio::sync::broadcast::Receiver<()>) {
    let backoff = Duration::from_millis(broker.config.log_cleaner_backoff_ms.max(1));
    let abort = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut cleaner = broker.log_cleaner(Arc::clone(&abort));
    loop {
        tokio::select! {
            biased;
            _ = stop.recv() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        loop {
            // A cleaning is never dropped midway (its swap must finish once committed): the
            // stop sets the abort flag, and the cleaning stops before its commit point.
            let cleaning = broker.clean_dirtiest_log(&mut cleaner);
            tokio::pin!(cleaning);
            let cleaned = tokio::select! {
                biased;
                _ = stop.recv() => {
                    abort.store(true, std::sync::atomic::Ordering::Release);
                    cleaning.await;
                    return;
                }
                cleaned = &mut cleaning => cleaned,
            };
            if !cleaned {
                break;
            }
        }
    }
}

/// The sender of a deferred reply. If the task making the reply dies (panics, or is dropped)
/// before sending, the drop sends the API's error response instead, so the client is answered
/// at once rather than waiting out its request timeout.
struct DeferredSender {
    tx: Option<oneshot::Sender<Option<Bytes>>>,
    fallback: Option<Fallback>,
    peer: SocketAddr,
}

impl DeferredSender {
    fn send(mut self, frame: Bytes) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(frame));
        }
    }
}

impl Drop for DeferredSender {
    fn drop(&mut self) {
        if let (Some(tx), Some(fallback)) = (self.tx.take(), self.fallback.take()) {
            tracing::error!(peer = %self.peer, "a deferred reply's task died: answering with an error");
            let _ = tx.send(Some(fallback()));
        }
    }
}

/// Sends `reply` through `tx` once it is ready: now, or from a task of its own.
fn start_reply(reply: Reply, tx: oneshot::Sender<Option<Bytes>>, peer: SocketAddr) {
    match reply {
        Reply::None => {
            let _ = tx.send(None);
        }
        Reply::Now(frame) => {
            let _ = tx.send(Some(frame));
        }
        Reply::Later(deferred) => {
            let (future, fallback) = deferred.into_parts();
            let sender = DeferredSender {
                tx: Some(tx),
                fallback: Some(fallback),
                peer,
            };
            tokio::spawn(async move {
                // Moved in before the await: dropped with the task if it dies.
                let sender = sender;
                sender.send(future.await);
            });
        }
    }
}

/// Aborts the writer task when the connection is dropped (closed at the shutdown bound), so
/// the socket closes with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: tokio::sync::broadcast::Receiver<()>,
    kill: Arc<Latch>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (queue_tx, mut queue_rx) = mpsc::channel::<oneshot::Receiver<Option<Bytes>>>(MAX_IN_FLIGHT);
    let (closed_tx, mut closed_rx) = watch_closed();
    let write_task = AbortOnDrop(tokio::spawn(async move {
        while let Some(pending) = queue_rx.recv().await {
            let Ok(response) = pending.await else {
                continue;
            };
            if let Some(frame) = response {
                if let Err(e) = frame::write_frame(&mut writer, &frame).await {
                    tracing::debug!(%peer, %e, "client went away");
                    break;
                }
            }
        }
        drop(closed_tx);
    }));
    let max = broker.config.socket_request_max_bytes;
    let mut requests: u64 = 0;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.recv() => break,
            _ = closed_rx.changed() => break,
            frame = frame::read_frame(&mut reader, max) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(frame::FrameError::Io(e)) => {
                tracing::debug!(%peer, %e, "connection closed");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, %e, "closing connection: bad frame");
                break;
            }
        };
        // The slot is taken before the request runs, so responses keep request order.
        let (tx, rx) = oneshot::channel();
        // Waits while MAX_IN_FLIGHT responses are pending; the shutdown bound ends the wait
        // (this request, read but not begun, then gets no answer).
        let queued = match queue_tx.try_send(rx) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(rx)) => tokio::select! {
                biased;
                queued = queue_tx.send(rx) => queued.is_ok(),
                () = kill.wait() => false,
            },
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if !queued {
            break;
        }
        requests += 1;
        match protocol::handle_request(&broker, peer, frame).await {
            Ok(reply) => start_reply(reply, tx, peer),
            Err(e) => {
                tracing::warn!(%peer, %e, "closing connection: bad request");
                drop(tx);
                break;
            }
        }
    }
    drop(queue_tx);
    // Past the shutdown bound the writer is aborted (and the socket closed) even if responses
    // are still pending. A request being handled inline is never cut mid-way (an append is
    // not cancelled between its write and its bookkeeping): the kill waits for it here.
    let mut write_task = write_task;
    tokio::select! {
        biased;
        _ = &mut write_task.0 => {}
        () = kill.wait() => {
            tracing::debug!(%peer, "connection closed at the shutdown bound");
        }
    }
    // tests/librdkafka/run.sh sums these to tell a test that reached the broker from one that
    // passed without a request.
    tracing::debug!(%peer, requests, "connection ended");
}

/// A signal from the writer that the connection is unusable (the reader stops too).
fn watch_closed() -> (WriterAlive, ClosedRx) {
    let (tx, rx) = oneshot::channel::<()>();
    (WriterAlive(tx), ClosedRx(Some(rx)))
}

struct WriterAlive(#[allow(dead_code)] oneshot::Sender<()>);
struct ClosedRx(Option<oneshot::Receiver<()>>);

impl ClosedRx {
    async fn changed(&mut self) {
        match self.0.as_mut() {
            Some(rx) => {
                let _ = rx.await;
                self.0 = None;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::protocol::Deferred;

    #[tokio::test]
    async fn a_deferred_reply_whose_task_dies_is_answered_with_its_error_response() {
        // Before: the writer skipped a reply whose sender was dropped, and the client waited out
        // its whole request timeout.
        let (tx, rx) = oneshot::channel();
        let reply = Reply::Later(Deferred::new(
            async { panic!("a bug in a handler, after its request was read") },
            || Bytes::from_static(b"UNKNOWN_SERVER_ERROR response"),
        ));
        start_reply(reply, tx, "127.0.0.1:1".parse().unwrap());
        assert_eq!(
            rx.await.expect("answered"),
            Some(Bytes::from_static(b"UNKNOWN_SERVER_ERROR response"))
        );
    }

    #[tokio::test]
    async fn a_deferred_reply_that_completes_sends_its_own_response_not_the_error() {
        let (tx, rx) = oneshot::channel();
        let reply = Reply::Later(Deferred::new(
            async { Bytes::from_static(b"response") },
            || Bytes::from_static(b"error"),
        ));
        start_reply(reply, tx, "127.0.0.1:1".parse().unwrap());
        assert_eq!(rx.await.unwrap(), Some(Bytes::from_static(b"response")));
    }
}
