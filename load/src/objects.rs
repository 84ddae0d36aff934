//! Large values: a SetStream and a GetStream of one value through the gateway's
//! claim check, against the same object written and read straight on the S3 store with
//! the `object_store` crate (multipart upload of the same part size, streamed read), in
//! alternating rounds of one run.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::{GetStreamRequest, SetStreamRequest};
use tonic::transport::Endpoint;

const CHUNK: usize = 1024 * 1024;
/// The s3 plugin's default part size, so both sides upload alike.
const PART: usize = 8 * 1024 * 1024;

pub struct ObjectsPlan {
    pub size_mib: usize,
    pub rounds: usize,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

/// One side's write and read times, per round.
#[derive(Default)]
pub struct ObjectsReport {
    pub writes: Vec<Duration>,
    pub reads: Vec<Duration>,
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

impl ObjectsReport {
    pub fn write_mib_s(&self, size_mib: usize) -> f64 {
        size_mib as f64 / median(&self.writes).as_secs_f64()
    }

    pub fn read_mib_s(&self, size_mib: usize) -> f64 {
        size_mib as f64 / median(&self.reads).as_secs_f64()
    }
}

fn chunk(index: usize) -> Vec<u8> {
    (0..CHUNK).map(|offset| (offset as u8).wrapping_add(index as u8)).collect()
}

async fn through_gateway(
    client: &mut KeyValueServiceClient<tonic::transport::Channel>,
    namespace: &str,
    key: &str,
    size_mib: usize,
) -> Result<(Duration, Duration), String> {
    let started = Instant::now();
    let first = (namespace.to_owned(), key.to_owned());
    let messages = futures_util::stream::iter((0..size_mib).map(move |index| {
        let (namespace, key) = if index == 0 { first.clone() } else { Default::default() };
        SetStreamRequest { namespace, key, chunk: chunk(index).into(), ..Default::default() }
    }));
    client.set_stream(messages).await.map_err(|status| format!("SetStream: {status}"))?;
    let wrote = started.elapsed();
    let started = Instant::now();
    let request = GetStreamRequest { namespace: namespace.into(), key: key.into() };
    let mut stream =
        client.get_stream(request).await.map_err(|status| format!("GetStream: {status}"))?.into_inner();
    let mut read = 0;
    while let Some(message) = stream.next().await {
        read += message.map_err(|status| format!("GetStream: {status}"))?.chunk.len();
    }
    if read != size_mib * CHUNK {
        return Err(format!("GetStream read {read} bytes, expected {}", size_mib * CHUNK));
    }
    Ok((wrote, started.elapsed()))
}

async fn direct(
    store: &object_store::aws::AmazonS3,
    key: &str,
    size_mib: usize,
) -> Result<(Duration, Duration), String> {
    let path = Path::from(key);
    let started = Instant::now();
    let upload = store.put_multipart(&path).await.map_err(|error| format!("put: {error}"))?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
    for index in 0..size_mib {
        parts.write(&chunk(index));
        parts.wait_for_capacity(2).await.map_err(|error| format!("part: {error}"))?;
    }
    parts.finish().await.map_err(|error| format!("complete: {error}"))?;
    let wrote = started.elapsed();
    let started = Instant::now();
    let mut body = store.get(&path).await.map_err(|error| format!("get: {error}"))?.into_stream();
    let mut read = 0;
    while let Some(bytes) = body.next().await {
        read += bytes.map_err(|error| format!("read: {error}"))?.len();
    }
    if read != size_mib * CHUNK {
        return Err(format!("read {read} bytes, expected {}", size_mib * CHUNK));
    }
    store.delete(&path).await.map_err(|error| format!("delete: {error}"))?;
    Ok((wrote, started.elapsed()))
}

/// Runs both sides `plan.rounds` times, alternating which goes first.
pub async fn compare(
    target: &str,
    namespace: &str,
    plan: &ObjectsPlan,
) -> Result<(ObjectsReport, ObjectsReport), String> {
    let channel = Endpoint::from_shared(target.to_owned())
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("cannot connect to {target}: {error}"))?;
    let mut client = KeyValueServiceClient::new(channel).max_decoding_message_size(2 * CHUNK);
    // reqwest is built without a crypto provider of its own (as in the s3 plugin): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = AmazonS3Builder::new()
        .with_endpoint(&plan.endpoint)
        .with_allow_http(true)
        .with_bucket_name(&plan.bucket)
        .with_region("us-east-1")
        .with_access_key_id(&plan.access_key)
        .with_secret_access_key(&plan.secret_key)
        .build()
        .map_err(|error| error.to_string())?;
    let (mut gateway, mut baseline) = (ObjectsReport::default(), ObjectsReport::default());
    for round in 0..plan.rounds {
        let key = format!("bench-objects/{round}");
        for side in [round % 2, 1 - round % 2] {
            let (wrote, read) = match side {
                0 => through_gateway(&mut client, namespace, &key, plan.size_mib).await?,
                _ => direct(&store, &format!("bench-direct/{round}"), plan.size_mib).await?,
            };
            let report = if side == 0 { &mut gateway } else { &mut baseline };
            report.writes.push(wrote);
            report.reads.push(read);
        }
    }
    Ok((gateway, baseline))
}
