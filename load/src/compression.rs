//! What gRPC compression buys and costs on KV Get: one JSON-like value of a given size,
//! read back by 8 concurrent callers for a while, its responses uncompressed or
//! compressed with gzip or zstd. The benchmark reads the server's CPU and the bytes it
//! wrote from /proc; this side reports calls and its own CPU.

use std::time::{Duration, Instant};

use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::{GetRequest, SetRequest};
use tonic::codec::CompressionEncoding;
use tonic::transport::Endpoint;

const CALLERS: usize = 8;

/// JSON records of orders with varied numbers and names, as real values are: repetitive
/// structure, little repeated content.
pub fn json_like(size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = b"[".to_vec();
    while out.len() < size {
        let record = format!(
            r#"{{"order_id":{},"customer":"customer-{}","email":"c{}@example.com","total":{}.{:02},"currency":"EUR","items":[{{"sku":"SKU-{}","qty":{}}}],"state":"{}"}},"#,
            rng.u64(1_000_000..9_999_999),
            rng.u32(1..100_000),
            rng.u32(1..100_000),
            rng.u32(1..5_000),
            rng.u32(0..100),
            rng.u32(1000..9999),
            rng.u8(1..9),
            ["paid", "shipped", "open", "refunded"][rng.usize(0..4)],
        );
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(size);
    out
}

pub fn parse_encoding(name: &str) -> Result<Option<CompressionEncoding>, String> {
    match name {
        "none" => Ok(None),
        "gzip" => Ok(Some(CompressionEncoding::Gzip)),
        "zstd" => Ok(Some(CompressionEncoding::Zstd)),
        other => Err(format!("unknown encoding '{other}': use none, gzip or zstd")),
    }
}

/// Sets the value, then Gets it from `CALLERS` callers for `duration`; the calls made.
pub async fn run(
    target: &str,
    namespace: &str,
    size: usize,
    encoding: Option<CompressionEncoding>,
    duration: Duration,
) -> Result<u64, String> {
    let channel = Endpoint::from_shared(target.to_owned())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let client = KeyValueServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let client = match encoding {
        Some(encoding) => client.accept_compressed(encoding).send_compressed(encoding),
        None => client,
    };
    let key = format!("compression-{size}");
    let value = json_like(size);
    let set = SetRequest {
        namespace: namespace.into(),
        key: key.clone(),
        value: value.clone().into(),
        ..Default::default()
    };
    client.clone().set(set).await.map_err(|e| format!("Set: {e}"))?;
    let until = Instant::now() + duration;
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (mut client, key, namespace, expected) =
            (client.clone(), key.clone(), namespace.to_owned(), value.len());
        callers.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < until {
                let request =
                    GetRequest { namespace: namespace.clone(), key: key.clone(), transaction_id: 0 };
                let reply = client.get(request).await.map_err(|e| format!("Get: {e}"))?.into_inner();
                if reply.value.len() != expected {
                    return Err(format!("Get returned {} bytes, not {expected}", reply.value.len()));
                }
                calls += 1;
            }
            Ok::<u64, String>(calls)
        }));
    }
    let mut total = 0;
    for caller in callers {
        total += caller.await.map_err(|e| e.to_string())??;
    }
    Ok(total)
}
