//! The network front: accepts connections and moves frames between sockets and the protocol.
//!
//! Each connection has a reader task, which decodes and handles requests in arrival order, and
//! a writer, which sends responses in that same order even when a later request (acks=1
//! produce) finishes before an earlier one (a long-polling fetch, an acks=all produce). A bad
//! frame or request closes that connection and is logged with the peer address; nothing else is
//! affected. Works the same on real tokio and on the simulator's network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::broker::Broker;
use crate::protocol::{self, Reply};
use wire::frame;

/// Responses a connection may have outstanding before it stops reading more requests.
const MAX_IN_FLIGHT: usize = 64;

/// Serves `listener` until `shutdown` resolves; then stops accepting, lets every connection
/// finish the requests it has read, and returns.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let maintenance = tokio::spawn(maintain(Arc::clone(&broker), stop_tx.subscribe()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let broker = Arc::clone(&broker);
                    let stop = stop_tx.subscribe();
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        connection(broker, stream, peer, stop).await;
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
    drop(listener);
    let _ = stop_tx.send(());
    drop(stop_rx);
    drop(done_tx);
    // Every connection holds a `done` sender until it has flushed its last response.
    let _ = done_rx.recv().await;
    let _ = maintenance.await;
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

async fn connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (queue_tx, mut queue_rx) = mpsc::channel::<oneshot::Receiver<Option<Bytes>>>(MAX_IN_FLIGHT);
    let (closed_tx, mut closed_rx) = watch_closed();
    let write_task = tokio::spawn(async move {
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
    });
    let max = broker.config.socket_request_max_bytes;
    loop {
        let frame = tokio::select! {
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
        let (tx, rx) = oneshot::channel();
        if queue_tx.send(rx).await.is_err() {
            break;
        }
        match protocol::handle_request(&broker, peer, frame).await {
            Ok(Reply::None) => {
                let _ = tx.send(None);
            }
            Ok(Reply::Now(frame)) => {
                let _ = tx.send(Some(frame));
            }
            Ok(Reply::Later(future)) => {
                tokio::spawn(async move {
                    let _ = tx.send(Some(future.await));
                });
            }
            Err(e) => {
                tracing::warn!(%peer, %e, "closing connection: bad request");
                drop(tx);
                break;
            }
        }
    }
    drop(queue_tx);
    let _ = write_task.await;
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
