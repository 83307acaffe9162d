//! The quorum network: raft RPCs (AppendEntries, Vote, InstallSnapshot) and controller requests
//! forwarded to the active controller (Submit), over TCP on each node's controller listener.
//!
//! One request frame, one reply frame: `[length u32 big-endian][json]`, lengths bounded, every
//! frame flushed (the simulator's TCP holds writes until a flush). A client keeps one
//! connection per peer and re-dials after any failure; every call has its own timeout, since a
//! partition in the simulator is a long stall on an established connection, not an error.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::controller::{Committed, ControllerHandle};
use super::MetadataTypes;
use crate::controller::request::{ControllerError, ControllerRequest};

/// Far above any metadata batch or snapshot chunk; a longer length is garbage, not a reason to
/// allocate.
const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    AppendEntries(AppendEntriesRequest<MetadataTypes>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<MetadataTypes>),
    Submit(ControllerRequest),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcReply {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Submit(Result<Committed, ControllerError>),
}

async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a quorum frame of {} bytes is over the limit",
                payload.len()
            ),
        ));
    }
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    writer.write_all(&frame).await?;
    writer.flush().await
}

async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a quorum frame of {len} bytes is over the limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(payload)
}

/// Why a call failed, as far as the caller can tell.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// Could not connect: the request was never sent.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    /// Sent (maybe) but no reply: the outcome is unknown.
    #[error("no reply from {0}: {1}")]
    Lost(String, io::Error),
}

/// One connection to one peer, re-dialled after a failure. Calls on it take turns.
pub(crate) struct PeerClient {
    address: String,
    connection: tokio::sync::Mutex<Option<TcpStream>>,
}

impl PeerClient {
    pub(crate) fn new(address: String) -> PeerClient {
        PeerClient {
            address,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Sends `rpc` and reads its reply, all within `timeout`.
    pub(crate) async fn call(&self, rpc: &Rpc, timeout: Duration) -> Result<RpcReply, CallError> {
        let payload = serde_json::to_vec(rpc).expect("quorum RPCs serialize");
        let deadline = super::runtime::now() + timeout;
        let mut connection =
            match tokio::time::timeout(until(deadline), self.connection.lock()).await {
                Ok(guard) => guard,
                Err(_) => return Err(self.lost(timed_out())),
            };
        let mut sent = false;
        let outcome = tokio::time::timeout(until(deadline), async {
            if connection.is_none() {
                let stream = TcpStream::connect(&self.address)
                    .await
                    .map_err(|e| CallError::Connect(self.address.clone(), e))?;
                #[cfg(not(madsim))]
                stream.set_nodelay(true).map_err(|e| self.lost(e))?;
                *connection = Some(stream);
            }
            let stream = connection.as_mut().expect("connected above");
            sent = true;
            write_frame(stream, &payload)
                .await
                .map_err(|e| self.lost(e))?;
            let reply = read_frame(stream).await.map_err(|e| self.lost(e))?;
            serde_json::from_slice(&reply)
                .map_err(|e| self.lost(io::Error::new(io::ErrorKind::InvalidData, e)))
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) if !sent => Err(CallError::Connect(self.address.clone(), timed_out())),
            Err(_) => Err(self.lost(timed_out())),
        };
        if outcome.is_err() {
            // The stream may hold half a frame either way: start afresh next time.
            *connection = None;
        }
        outcome
    }

    fn lost(&self, e: io::Error) -> CallError {
        CallError::Lost(self.address.clone(), e)
    }
}

/// The time left until `deadline` (madsim has no `timeout_at`).
fn until(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(super::runtime::now())
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// Makes openraft's per-peer clients.
pub(crate) struct NetworkFactory {
    pub(crate) rpc_timeout: Duration,
}

impl RaftNetworkFactory<MetadataTypes> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            client: Arc::new(PeerClient::new(node.addr.clone())),
            rpc_timeout: self.rpc_timeout,
        }
    }
}

/// openraft's client for one peer.
pub(crate) struct PeerNetwork {
    target: u64,
    client: Arc<PeerClient>,
    rpc_timeout: Duration,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl PeerNetwork {
    #[allow(clippy::result_large_err)] // openraft's error type
    async fn call(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<RpcReply, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        let timeout = option.hard_ttl().min(self.rpc_timeout);
        match self.client.call(&rpc, timeout).await {
            Ok(reply) => Ok(reply),
            // Not `Unreachable`: that sends openraft's replication task into its backoff loop,
            // an unbiased `select!` between the backoff sleep and the next heartbeat event,
            // which tick together. tokio's select RNG is seeded from a process-wide counter the
            // simulator cannot reset, so runs of one seed diverged. A network error retries at
            // the next heartbeat event, as the backoff (one heartbeat) did.
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    #[allow(clippy::result_large_err)] // openraft's error type
    fn remote<T, E: std::error::Error>(
        &self,
        result: Result<T, RaftError<u64, E>>,
    ) -> RpcResult<T, E> {
        result.map_err(|e| match e {
            // The peer's raft has stopped (it is shutting down). Not a `RemoteError`: openraft
            // turns a remote `Fatal` into `Unreachable`, whose backoff is the unbiased select
            // `call` avoids. A network error retries at the next heartbeat event instead.
            RaftError::Fatal(fatal) => RPCError::Network(NetworkError::new(&fatal)),
            e => RPCError::RemoteError(RemoteError::new(self.target, e)),
        })
    }
}

/// Re-types a transport error for an RPC whose remote error type differs.
fn transport<E: std::error::Error>(
    e: RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    match e {
        RPCError::Timeout(t) => RPCError::Timeout(t),
        RPCError::Unreachable(u) => RPCError::Unreachable(u),
        RPCError::PayloadTooLarge(p) => RPCError::PayloadTooLarge(p),
        RPCError::Network(n) => RPCError::Network(n),
        RPCError::RemoteError(r) => RPCError::Network(NetworkError::new(&r)),
    }
}

fn mismatched<E: std::error::Error>(
    reply: &RpcReply,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    let e = io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a mismatched reply: {reply:?}"),
    );
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<MetadataTypes> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetadataTypes>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self
            .call(Rpc::AppendEntries(rpc), &option)
            .await
            .map_err(transport)?
        {
            RpcReply::AppendEntries(result) => self.remote(result),
            other => Err(mismatched(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetadataTypes>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self.call(Rpc::InstallSnapshot(rpc), &option).await? {
            RpcReply::InstallSnapshot(result) => self.remote(result),
            other => Err(mismatched(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self
            .call(Rpc::Vote(rpc), &option)
            .await
            .map_err(transport)?
        {
            RpcReply::Vote(result) => self.remote(result),
            other => Err(mismatched(&other)),
        }
    }
}

/// Set once when the plane shuts down: the listener stops accepting and every connection closes
/// once it has answered the request it is serving.
/// (A Notify, not a watch channel: watch picks notifiers with an RNG the simulator cannot seed.)
#[derive(Default)]
pub(crate) struct Stop {
    stopped: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Serves the quorum listener until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft<MetadataTypes>,
    controller: ControllerHandle,
    stop: Arc<Stop>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.wait() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                #[cfg(not(madsim))]
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    stream,
                    raft.clone(),
                    controller.clone(),
                    Arc::clone(&stop),
                ));
            }
            Err(e) => {
                // Out of descriptors or the like: wait rather than spin.
                tracing::warn!(error = %e, "quorum listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one peer's requests until it hangs up or the plane stops. A request being served
/// when the plane stops still gets its answer; an idle connection closes at once, so a peer's
/// next call re-dials and is refused (never sent, safe to retry elsewhere). Connections must
/// not outlive the stop: each holds the listener's address, which a plane started again on
/// this node must bind (the simulator keeps it taken while any accepted stream lives).
async fn serve_connection(
    mut stream: TcpStream,
    raft: Raft<MetadataTypes>,
    controller: ControllerHandle,
    stop: Arc<Stop>,
) {
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.wait() => return,
            frame = read_frame(&mut stream) => frame,
        };
        let Ok(frame) = frame else {
            return;
        };
        let rpc: Rpc = match serde_json::from_slice(&frame) {
            Ok(rpc) => rpc,
            Err(e) => {
                tracing::warn!(error = %e, "quorum listener: an undecodable request; closing");
                return;
            }
        };
        let reply = match rpc {
            Rpc::AppendEntries(req) => RpcReply::AppendEntries(raft.append_entries(req).await),
            Rpc::Vote(req) => RpcReply::Vote(raft.vote(req).await),
            Rpc::InstallSnapshot(req) => {
                RpcReply::InstallSnapshot(raft.install_snapshot(req).await)
            }
            Rpc::Submit(request) => RpcReply::Submit(controller.submit(request).await),
        };
        let payload = serde_json::to_vec(&reply).expect("quorum replies serialize");
        if write_frame(&mut stream, &payload).await.is_err() {
            return;
        }
    }
}
