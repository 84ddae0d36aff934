//! gRPC message compression: gzip and zstd requests are accepted, responses are
//! compressed when the client accepts it and they are at least
//! `server.compression_min_bytes`, and a request that inflates past the size limit is
//! refused with the gateway's own message.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prism_acceptance::harness::Server;
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::*;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::Code;

const CONFIG: &str = r#"
[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }
"#;

/// 64 KiB of JSON-like text: compresses well, as such values do.
fn compressible() -> Vec<u8> {
    let record = br#"{"order":12345,"customer":"ada","items":[{"sku":"A-1","qty":2}],"state":"paid"},"#;
    record.iter().copied().cycle().take(64 * 1024).collect()
}

/// A response seen on the wire: its `grpc-encoding` header and its first message's
/// compressed flag and length.
struct Wire {
    encoding: Option<String>,
    compressed: bool,
    length: usize,
}

/// A unary KeyValueService/Get over a plain HTTP/2 client, accepting `accept` (if any).
async fn get_on_the_wire(server: &Server, key: &str, accept: Option<&str>) -> Wire {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let message =
        GetRequest { namespace: "default".into(), key: key.into(), transaction_id: 0 }.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut request = http::Request::post(format!("{}/prism.v1.KeyValueService/Get", server.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(accept) = accept {
        request = request.header("grpc-accept-encoding", accept);
    }
    let response = client.request(request.body(Full::new(Bytes::from(frame))).unwrap()).await.unwrap();
    let encoding = response.headers().get("grpc-encoding").map(|v| v.to_str().unwrap().to_owned());
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").map(|v| v.to_str().unwrap()), Some("0"), "{trailers:?}");
    let body = collected.to_bytes();
    assert!(body.len() >= 5, "Get answered without a message: {body:?}");
    let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    Wire { encoding, compressed: body[0] == 1, length }
}

async fn set(kv: &mut KeyValueServiceClient<tonic::transport::Channel>, key: &str, value: Vec<u8>) {
    let request = SetRequest {
        namespace: "default".into(),
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    kv.set(request).await.unwrap();
}

#[tokio::test]
async fn responses_are_compressed_when_asked_and_large_enough() {
    let server = Server::start(CONFIG);
    let mut kv = server.keyvalue().await;
    set(&mut kv, "large", compressible()).await;
    set(&mut kv, "small", vec![b'v'; 100]).await;

    for encoding in ["gzip", "zstd"] {
        let large = get_on_the_wire(&server, "large", Some(encoding)).await;
        assert_eq!(large.encoding.as_deref(), Some(encoding));
        assert!(
            large.compressed,
            "{encoding}: a 64 KiB response the client accepts compressed is compressed"
        );
        assert!(large.length < 64 * 1024 / 4, "{encoding}: {} bytes on the wire", large.length);
        let small = get_on_the_wire(&server, "small", Some(encoding)).await;
        assert!(!small.compressed, "{encoding}: a response under compression_min_bytes is sent as it is");
    }
    let unasked = get_on_the_wire(&server, "large", None).await;
    assert_eq!(unasked.encoding, None);
    assert!(!unasked.compressed, "a client that did not ask gets the message as it is");
    assert!(unasked.length > 64 * 1024);
    let unknown = get_on_the_wire(&server, "large", Some("br")).await;
    assert!(!unknown.compressed, "an encoding the server does not send is ignored");
}

#[tokio::test]
async fn compression_min_bytes_sets_the_threshold() {
    let server = Server::start(&format!("[server]\ncompression_min_bytes = 50\n{CONFIG}"));
    let mut kv = server.keyvalue().await;
    set(&mut kv, "small", vec![b'v'; 100]).await;
    let small = get_on_the_wire(&server, "small", Some("gzip")).await;
    assert!(small.compressed, "100 bytes is above a threshold of 50");
}

#[tokio::test]
async fn compressed_requests_and_responses_round_trip_through_a_tonic_client() {
    let server = Server::start(CONFIG);
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut kv = server.keyvalue().await.send_compressed(encoding).accept_compressed(encoding);
        let key = format!("round-trip-{encoding:?}");
        set(&mut kv, &key, compressible()).await;
        let reply = kv
            .get(GetRequest { namespace: "default".into(), key: key.clone(), transaction_id: 0 })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.found);
        assert_eq!(reply.value, compressible(), "{encoding:?}");
    }
}

#[tokio::test]
async fn a_request_that_inflates_past_the_limit_is_resource_exhausted() {
    let server = Server::start(CONFIG);
    let mut kv = server.keyvalue().await.send_compressed(CompressionEncoding::Gzip);
    // 5 MiB of zeros, a few KiB compressed: past the 4 MiB the server decodes.
    let request = SetRequest {
        namespace: "default".into(),
        key: "bomb".into(),
        value: vec![0u8; 5 * 1024 * 1024].into(),
        ..Default::default()
    };
    let status = kv.set(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("once decompressed"), "{}", status.message());
    assert!(status.message().contains("server.max_value_bytes"), "{}", status.message());
    set(&mut server.keyvalue().await, "after", b"fine".to_vec()).await;
}
