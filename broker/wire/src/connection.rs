//! One TCP connection to one broker: framed, pipelined requests matched to their responses by
//! correlation id, with the API versions negotiated by ApiVersions when it opens. Used by the
//! Rust client, and by anything in the broker that talks to another broker (a follower's
//! fetcher) without the client's retry policy.
//!
//! Runtime rules (the same code runs on real tokio and in the simulator): the stream is split
//! with `tokio::io::split`, every frame is flushed, and every request has its own timeout. A
//! request that times out closes the connection (its state is unknown, as in Kafka's Java
//! client), so the next request reconnects instead of queueing behind a stalled peer.
//!
//! [`RequestHold`] is the simulator's seam for a request held in the network: the bytes stay on
//! their connection (and everything written after them waits behind them, as on one TCP
//! stream) until the hold is released, then go out; the client meanwhile times out and moves
//! on. Nothing outside the simulator installs one.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::OwnedMutexGuard;
use tokio::sync::{oneshot, Notify};

use crate::frame;

/// Largest response frame accepted (Kafka's `fetch.max.bytes` default is 50 MiB).
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("cannot connect to {addr}: timed out after {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("cannot negotiate API versions with {addr}: {reason}")]
    Negotiation { addr: String, reason: String },
    #[error("no bootstrap servers given")]
    NoBootstrapServers,
}

impl ConnectError {
    /// Connection refused: nothing listens at the address.
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    }
}

/// Why a request got no decodable response. [`RequestError::maybe_sent`] says whether the
/// broker may have received (and acted on) it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("connection to {addr} is closed")]
    Closed { addr: String },
    #[error("the broker at {addr} does not support {api:?} in a version this client speaks")]
    UnsupportedVersion { addr: String, api: ApiKey },
    #[error("cannot encode {api:?} v{version}: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("writing to {addr} failed: {source}")]
    Write { addr: String, source: io::Error },
    #[error("no response from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("connection to {addr} lost while waiting for the response")]
    Disconnected { addr: String },
    #[error("cannot decode {api:?} v{version} response from {addr}: {reason}")]
    Decode {
        addr: String,
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

impl RequestError {
    /// False only when no byte of the request can have reached the broker.
    pub fn maybe_sent(&self) -> bool {
        !matches!(
            self,
            RequestError::Connect(_)
                | RequestError::Closed { .. }
                | RequestError::UnsupportedVersion { .. }
                | RequestError::Encode { .. }
        )
    }
}

/// Settings for one connection.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "faultline".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A request about to be written, as a [`RequestHold`] sees it.
#[derive(Debug)]
pub struct OutgoingRequest<'a> {
    /// This end of the connection (the client's address).
    pub local: Option<SocketAddr>,
    /// The broker it goes to (`host:port`).
    pub peer: &'a str,
    pub api: ApiKey,
    pub version: i16,
    /// The encoded request body, after the request header.
    pub body: &'a [u8],
}

/// When a hold ends: the held bytes are written once it completes.
pub type Release = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Decides, for each request a connection is about to write, whether the network holds it.
///
/// The fault model (the simulator's `hold`): a held request is delayed, never dropped. Its
/// bytes are written to the connection only when the [`Release`] completes; the requests
/// written after it on the same connection wait behind it, as they would behind a stuck
/// segment of one TCP stream. The caller sees silence: its request times out, the connection
/// is closed on this side (its reads end), and the caller retries on a new connection; the
/// held bytes still reach the broker on the old one at the release, which handles them like
/// any request, late.
pub trait RequestHold: Send + Sync + std::fmt::Debug {
    /// `Some(release)` holds `request` until `release` completes.
    fn hold(&self, request: &OutgoingRequest<'_>) -> Option<Release>;
}

struct Shared {
    pending: Mutex<BTreeMap<i32, oneshot::Sender<Bytes>>>,
    closed: AtomicBool,
    shutdown: Notify,
}

impl Shared {
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.shutdown.notify_one();
        }
        // Dropping the senders wakes every waiter with "disconnected".
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        drop(pending);
    }
}

/// A connection to one broker. Cheap to share (`Arc`); requests from many tasks pipeline on it.
pub struct Connection {
    addr: String,
    /// `config.client_id`, made once: every request header carries it.
    client_id: StrBytes,
    config: ConnectionConfig,
    writer: Arc<tokio::sync::Mutex<WriteHalf<TcpStream>>>,
    shared: Arc<Shared>,
    /// This end's address (what a [`RequestHold`] selects clients by).
    local: Option<SocketAddr>,
    hold: Option<Arc<dyn RequestHold>>,
    next_correlation_id: AtomicI32,
    /// What this side speaks, per API: (API, lowest, highest).
    speaks: &'static [(ApiKey, i16, i16)],
    versions: OnceLock<BTreeMap<i16, (i16, i16)>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions: each request goes at the
    /// highest version both the broker and `speaks` (API, lowest, highest) allow.
    pub async fn connect(
        addr: &str,
        config: ConnectionConfig,
        speaks: &'static [(ApiKey, i16, i16)],
    ) -> Result<Connection, ConnectError> {
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => {
                    return Err(ConnectError::Io {
                        addr: addr.to_string(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(ConnectError::Timeout {
                        addr: addr.to_string(),
                        timeout: config.connect_timeout,
                    })
                }
            };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let (mut reader, writer) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            pending: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
            shutdown: Notify::new(),
        });
        let task_shared = Arc::clone(&shared);
        let peer = addr.to_string();
        tokio::spawn(async move {
            // Responses are decoded and dropped by the time the next arrives (a follower's
            // fetches go one at a time): each reuses the memory of the ones before.
            let mut frames = frame::FrameReader::default();
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = task_shared.shutdown.notified() => break,
                    frame = frames.read(&mut reader, MAX_RESPONSE_BYTES) => frame,
                };
                match frame {
                    Ok(Some(frame)) if frame.len() >= 4 => {
                        let correlation_id =
                            i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                        let waiter = task_shared
                            .pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&correlation_id);
                        match waiter {
                            Some(waiter) => {
                                let _ = waiter.send(frame);
                            }
                            None => {
                                tracing::debug!(%peer, correlation_id, "response nobody waits for (timed out?)")
                            }
                        }
                    }
                    Ok(Some(_)) => {
                        tracing::warn!(%peer, "closing connection: response frame too short");
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%peer, %e, "connection closed");
                        break;
                    }
                }
            }
            task_shared.close();
        });
        let connection = Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            config,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            shared,
            local,
            hold: None,
            next_correlation_id: AtomicI32::new(0),
            speaks,
            versions: OnceLock::new(),
        };
        connection.negotiate().await?;
        Ok(connection)
    }

    async fn negotiate(&self) -> Result<(), ConnectError> {
        let fail = |reason: String| ConnectError::Negotiation {
            addr: self.addr.clone(),
            reason,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("faultline"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = match self
            .send_version(&request, 3, self.config.request_timeout)
            .await
        {
            Ok(r) => r,
            // A broker that does not know v3 answers in the v0 format (KIP-511).
            Err(RequestError::Decode { .. }) => self
                .send_version(
                    &ApiVersionsRequest::default(),
                    0,
                    self.config.request_timeout,
                )
                .await
                .map_err(|e| fail(e.to_string()))?,
            Err(RequestError::Connect(e)) => return Err(e),
            Err(e) => return Err(fail(e.to_string())),
        };
        if response.error_code == ResponseError::UnsupportedVersion.code() {
            response = self
                .send_version(
                    &ApiVersionsRequest::default(),
                    0,
                    self.config.request_timeout,
                )
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        if response.error_code != 0 {
            return Err(fail(format!("error code {}", response.error_code)));
        }
        let versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let _ = self.versions.set(versions);
        Ok(())
    }

    /// Installs the network's hold on the requests written from now on (the simulator's; see
    /// [`RequestHold`]).
    pub fn set_hold(&mut self, hold: Option<Arc<dyn RequestHold>>) {
        self.hold = hold;
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Closed by the peer, by an error, or after a request timed out: open a new one.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Closes the connection; requests waiting on it fail with `Disconnected`.
    pub fn close(&self) {
        self.shared.close();
    }

    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// The version to use for `api`: the highest both sides speak.
    pub fn version_for(&self, api: ApiKey) -> Result<i16, RequestError> {
        let unsupported = || RequestError::UnsupportedVersion {
            addr: self.addr.clone(),
            api,
        };
        let &(_, client_min, client_max) = self
            .speaks
            .iter()
            .find(|(k, _, _)| *k == api)
            .ok_or_else(unsupported)?;
        let &(broker_min, broker_max) = self
            .versions
            .get()
            .and_then(|v| v.get(&(api as i16)))
            .ok_or_else(unsupported)?;
        let codec = api.valid_versions();
        let max = client_max.min(broker_max).min(codec.max);
        let min = client_min.max(broker_min).max(codec.min);
        if max < min {
            return Err(unsupported());
        }
        Ok(max)
    }

    /// Does the broker offer `api` at all?
    pub fn supports(&self, api: ApiKey) -> bool {
        self.version_for(api).is_ok()
    }

    /// Sends `request` at the negotiated version and waits for its response, at most the
    /// request timeout.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response, RequestError> {
        self.send_with_timeout(request, self.config.request_timeout)
            .await
    }

    /// [`Connection::send`] with an explicit timeout (a long-polling fetch waits longer).
    pub async fn send_with_timeout<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, RequestError> {
        let api = api_key::<R>();
        let version = self.version_for(api)?;
        self.send_version(request, version, timeout).await
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send_version<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, RequestError> {
        let api = api_key::<R>();
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.write_request(request, version, Some(tx)).await?;
            rx.await.map_err(|_| RequestError::Disconnected {
                addr: self.addr.clone(),
            })
        };
        let frame = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                // The request's fate is unknown and the connection may be stalled: drop it.
                self.close();
                return Err(RequestError::Timeout {
                    addr: self.addr.clone(),
                    timeout,
                });
            }
        };
        let decode_error = |reason: String| RequestError::Decode {
            addr: self.addr.clone(),
            api,
            version,
            reason,
        };
        let mut body = frame;
        ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| decode_error(format!("header: {e}")))?;
        R::Response::decode(&mut body, version).map_err(|e| decode_error(e.to_string()))
    }

    /// Sends a request that gets no response (a produce with acks=0): done once it is written
    /// and flushed, within the request timeout.
    pub async fn send_without_response<R: Request>(&self, request: &R) -> Result<(), RequestError> {
        let version = self.version_for(api_key::<R>())?;
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, self.write_request(request, version, None)).await {
            Ok(result) => result,
            Err(_) => {
                self.close();
                Err(RequestError::Timeout {
                    addr: self.addr.clone(),
                    timeout,
                })
            }
        }
    }

    async fn write_request<R: Request>(
        &self,
        request: &R,
        version: i16,
        waiter: Option<oneshot::Sender<Bytes>>,
    ) -> Result<(), RequestError> {
        let api = api_key::<R>();
        if self.is_closed() {
            return Err(RequestError::Closed {
                addr: self.addr.clone(),
            });
        }
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::SeqCst) & i32::MAX;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        let encode_error = |reason: String| RequestError::Encode {
            api,
            version,
            reason,
        };
        header
            .encode(&mut buf, api.request_header_version(version))
            .map_err(|e| encode_error(e.to_string()))?;
        let body_start = buf.len();
        request
            .encode(&mut buf, version)
            .map_err(|e| encode_error(e.to_string()))?;
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        if let Some(waiter) = waiter {
            self.shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(correlation_id, waiter);
        }
        // The reader may have closed the connection since the check above.
        if self.is_closed() {
            self.shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&correlation_id);
            return Err(RequestError::Closed {
                addr: self.addr.clone(),
            });
        }
        let release = self.hold.as_ref().and_then(|hold| {
            hold.hold(&OutgoingRequest {
                local: self.local,
                peer: &self.addr,
                api,
                version,
                body: &buf[body_start..],
            })
        });
        if let Some(release) = release {
            // Held in the network: the bytes, and the connection's writes after them, wait
            // for the release; the caller meanwhile hears nothing.
            tokio::spawn(async move {
                release.await;
                let _ = write_frame(&mut writer, &buf).await;
            });
            return Ok(());
        }
        let written = write_frame(&mut writer, &buf).await;
        if let Err(source) = written {
            self.shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&correlation_id);
            self.close();
            return Err(RequestError::Write {
                addr: self.addr.clone(),
                source,
            });
        }
        Ok(())
    }
}

async fn write_frame(
    writer: &mut OwnedMutexGuard<WriteHalf<TcpStream>>,
    frame: &[u8],
) -> io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("every request type has a known API key")
}
