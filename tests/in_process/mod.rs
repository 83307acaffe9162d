//! One request through the broker's protocol entry point, in process: encode the request and its
//! header, hand the frame to `protocol::handle_request` (awaiting a deferred reply), decode the
//! response. For tests that drive the broker on a faulty disk without sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use broker::broker::Broker;
use broker::protocol::{handle_request, Reply};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub async fn call<Req: Encodable, Resp: Decodable>(
    broker: &Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("in-process-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    request.encode(&mut buf, version).unwrap();
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let mut frame: Bytes = match handle_request(broker, peer, buf.freeze()).await.unwrap() {
        Reply::Now(frame) => frame,
        Reply::Later(future) => future.await,
        Reply::None => panic!("no response"),
    };
    frame.advance(4);
    ResponseHeader::decode(&mut frame, api_key.response_header_version(version)).unwrap();
    Resp::decode(&mut frame, version).unwrap()
}
