//! The load loop: tasks spread over a few HTTP/2 connections, each recording latency
//! in its own histogram, merged at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::queue_service_client::QueueServiceClient;
use prism_api::{AckRequest, DequeueRequest, EnqueueRequest, GetRequest, SetRequest};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Get,
    Set,
    Mixed,
    /// Enqueue, Dequeue and Ack one message per iteration (QueueService).
    Queue,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub workload: Workload,
    pub read_percent: u8,
    pub concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub rate: Option<u64>,
    pub keys: u64,
    pub value_size: usize,
    pub namespace: String,
    /// The queue a `queue` workload uses.
    pub queue: String,
    /// How to reach the server and what to present to it.
    pub access: Access,
    /// Every Set and Enqueue carries a fresh idempotency token.
    pub idempotency_tokens: bool,
}

/// A fresh idempotency token (`{unix_ms}-{random}`), or none.
fn token(plan: &Plan) -> String {
    if !plan.idempotency_tokens {
        return String::new();
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{:016x}", now.as_millis(), fastrand::u64(..))
}

/// TLS (a CA to verify the server with, for https:// targets) and metadata sent with
/// every call (e.g. `authorization: Bearer …`).
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub tls_ca: Option<std::path::PathBuf>,
    pub headers: Vec<(tonic::metadata::AsciiMetadataKey, tonic::metadata::AsciiMetadataValue)>,
}

impl Access {
    /// Parses `NAME=VALUE` header arguments.
    pub fn new(tls_ca: Option<std::path::PathBuf>, headers: &[String]) -> Result<Access, String> {
        let mut parsed = Vec::new();
        for header in headers {
            let (name, value) =
                header.split_once('=').ok_or_else(|| format!("--header {header}: write NAME=VALUE"))?;
            let name = name.parse().map_err(|_| format!("--header {name}: not a metadata name"))?;
            let value =
                value.parse().map_err(|_| format!("--header {name}: the value is not ASCII metadata"))?;
            parsed.push((name, value));
        }
        Ok(Access { tls_ca, headers: parsed })
    }

    pub fn endpoint(&self, target: &str) -> Result<Endpoint, String> {
        let endpoint =
            Endpoint::from_shared(target.to_owned()).map_err(|e| format!("bad target URL: {e}"))?;
        let Some(ca) = &self.tls_ca else { return Ok(endpoint) };
        let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem));
        endpoint.tls_config(tls).map_err(|e| format!("TLS settings: {e}"))
    }

    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (name, value) in &self.headers {
            request.metadata_mut().insert(name.clone(), value.clone());
        }
        request
    }
}

pub struct Report {
    pub target: String,
    pub plan: Plan,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

struct TaskResult {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

fn key(index: u64) -> String {
    format!("load-{index:08}")
}

async fn connect(target: &str, connections: usize, access: &Access) -> Result<Vec<Channel>, String> {
    let endpoint = access.endpoint(target)?;
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(endpoint.connect().await.map_err(|e| format!("cannot connect to {target}: {e}"))?);
    }
    Ok(channels)
}

/// Writes every key once so reads hit.
async fn preload(channel: Channel, plan: &Plan, value: &Bytes) -> Result<(), String> {
    let mut client = KeyValueServiceClient::new(channel);
    for index in 0..plan.keys {
        client
            .set(plan.access.request(SetRequest {
                namespace: plan.namespace.clone(),
                key: key(index),
                value: value.clone(),
                ..Default::default()
            }))
            .await
            .map_err(|status| format!("preloading keys failed: {status}"))?;
    }
    Ok(())
}

pub async fn run(target: &str, plan: &Plan) -> Result<Report, String> {
    let channels = connect(target, plan.connections, &plan.access).await?;
    let value = Bytes::from(vec![b'x'; plan.value_size]);
    if matches!(plan.workload, Workload::Get | Workload::Mixed) {
        preload(channels[0].clone(), plan, &value).await?;
    }
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    // With a rate, each task sends on its own schedule of `interval`.
    let interval =
        plan.rate.map(|rate| Duration::from_secs_f64(plan.concurrency as f64 / rate.max(1) as f64));
    let mut tasks = Vec::with_capacity(plan.concurrency);
    for task in 0..plan.concurrency {
        let channel = channels[task % channels.len()].clone();
        let plan = plan.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            drive(channel, plan, value, task as u64, start, measure_from, end, interval).await
        }));
    }
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for task in tasks {
        let result = task.await.map_err(|e| format!("a load task failed: {e}"))?;
        ok += result.ok;
        for (code, count) in result.errors {
            *errors.entry(code).or_insert(0) += count;
        }
        latency_us.add(result.latency_us).expect("same histogram bounds");
    }
    Ok(Report {
        target: target.to_owned(),
        plan: plan.clone(),
        ok,
        errors,
        elapsed: plan.duration,
        latency_us,
    })
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    channel: Channel,
    plan: Plan,
    value: Bytes,
    seed: u64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    interval: Option<Duration>,
) -> TaskResult {
    let mut client = KeyValueServiceClient::new(channel.clone());
    let mut queue = QueueServiceClient::new(channel);
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef);
    let mut result = TaskResult {
        ok: 0,
        errors: BTreeMap::new(),
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    };
    tokio::time::sleep_until(start.into()).await;
    // Spread the tasks' schedules over one interval so they do not fire in lockstep.
    let mut scheduled = interval.map(|every| start + every.mul_f64(rng.f64()));
    loop {
        // Latency counts from the scheduled time only when this task was still busy with
        // the previous request at that time (so server queueing is not hidden); when it
        // was idle, waiting on the timer, it counts from the actual send, so the timer's
        // coarse granularity is not charged to the server.
        let sent = match scheduled {
            Some(at) if Instant::now() < at => {
                tokio::time::sleep_until(at.into()).await;
                Instant::now()
            }
            Some(at) => at,
            None => Instant::now(),
        };
        if scheduled.unwrap_or(sent) >= end {
            break;
        }
        let index = rng.u64(0..plan.keys);
        let outcome = match plan.workload {
            Workload::Queue => queue_cycle(&mut queue, &plan, &value).await,
            Workload::Get => get(&mut client, &plan, index).await,
            Workload::Set => set(&mut client, &plan, index, &value).await,
            Workload::Mixed if rng.u8(0..100) < plan.read_percent => get(&mut client, &plan, index).await,
            Workload::Mixed => set(&mut client, &plan, index, &value).await,
        };
        let done = Instant::now();
        if sent >= measure_from {
            match outcome {
                Ok(()) => {
                    result.ok += 1;
                    let micros = done.duration_since(sent).as_micros().max(1) as u64;
                    result.latency_us.saturating_record(micros);
                }
                Err(status) => *result.errors.entry(format!("{:?}", status.code())).or_insert(0) += 1,
            }
        }
        if let (Some(at), Some(every)) = (scheduled.as_mut(), interval) {
            *at += every;
        }
    }
    result
}

async fn get(client: &mut KeyValueServiceClient<Channel>, plan: &Plan, index: u64) -> Result<(), Status> {
    client
        .get(plan.access.request(GetRequest {
            namespace: plan.namespace.clone(),
            key: key(index),
            ..Default::default()
        }))
        .await?;
    Ok(())
}

async fn set(
    client: &mut KeyValueServiceClient<Channel>,
    plan: &Plan,
    index: u64,
    value: &Bytes,
) -> Result<(), Status> {
    let request = SetRequest {
        namespace: plan.namespace.clone(),
        key: key(index),
        value: value.clone(),
        idempotency_token: token(plan),
        ..Default::default()
    };
    client.set(plan.access.request(request)).await?;
    Ok(())
}

/// One message through the queue: Enqueue, Dequeue, Ack. A Dequeue that finds nothing
/// (another task took the message) still counts as a completed cycle.
async fn queue_cycle(
    queue: &mut QueueServiceClient<Channel>,
    plan: &Plan,
    value: &Bytes,
) -> Result<(), Status> {
    let (namespace, name) = (plan.namespace.clone(), plan.queue.clone());
    let request = EnqueueRequest {
        namespace: namespace.clone(),
        queue: name.clone(),
        payload: value.clone(),
        idempotency_token: token(plan),
        ..Default::default()
    };
    queue.enqueue(plan.access.request(request)).await?;
    let request = DequeueRequest {
        namespace: namespace.clone(),
        queue: name.clone(),
        max_messages: 1,
        ..Default::default()
    };
    for message in queue.dequeue(plan.access.request(request)).await?.into_inner().messages {
        let ack = AckRequest { namespace: namespace.clone(), queue: name.clone(), receipt: message.receipt };
        if !queue.ack(plan.access.request(ack)).await?.into_inner().acked {
            return Err(Status::internal("a fresh receipt did not ack"));
        }
    }
    Ok(())
}

impl Report {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn render(&self) -> String {
        let plan = &self.plan;
        let workload = match plan.workload {
            Workload::Mixed => format!("mixed ({}% get)", plan.read_percent),
            other => format!("{other:?}").to_lowercase(),
        };
        let rate = plan.rate.map_or("unlimited".to_owned(), |r| format!("{r}/s"));
        let errors = if self.errors.is_empty() {
            "0".to_owned()
        } else {
            self.errors.iter().map(|(code, n)| format!("{code}: {n}")).collect::<Vec<_>>().join(", ")
        };
        format!(
            "target      {} (namespace '{}')\n\
             workload    {workload}, {} in flight over {} connections, rate {rate}, {} keys, {}-byte values\n\
             measured    {:.1}s after {:.1}s warm-up\n\
             requests    {} ok, errors {errors}\n\
             throughput  {:.0} req/s\n\
             latency     p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms\n",
            self.target,
            if plan.namespace.is_empty() { "default" } else { &plan.namespace },
            plan.concurrency,
            plan.connections,
            plan.keys,
            plan.value_size,
            self.elapsed.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            self.ok,
            self.throughput(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.9),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.latency_us.max() as f64 / 1000.0,
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.target,
            "workload": self.plan.workload,
            "read_percent": self.plan.read_percent,
            "concurrency": self.plan.concurrency,
            "connections": self.plan.connections,
            "rate": self.plan.rate,
            "keys": self.plan.keys,
            "value_size": self.plan.value_size,
            "duration_s": self.elapsed.as_secs_f64(),
            "ok": self.ok,
            "errors": self.errors,
            "throughput_rps": self.throughput(),
            "latency_ms": {
                "p50": self.percentile_ms(0.5),
                "p90": self.percentile_ms(0.9),
                "p99": self.percentile_ms(0.99),
                "p999": self.percentile_ms(0.999),
                "max": self.latency_us.max() as f64 / 1000.0,
            },
        })
    }
}

/// New connections per second: each task connects (TCP, and TLS for https://), makes
/// one Get, and drops the connection, for `duration`.
pub async fn handshakes(
    target: &str,
    access: &Access,
    concurrency: usize,
    duration: Duration,
) -> Result<f64, String> {
    let endpoint = access.endpoint(target)?;
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (endpoint, access) = (endpoint.clone(), access.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end {
                let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
                let mut client = KeyValueServiceClient::new(channel);
                client
                    .get(access.request(GetRequest { key: "handshake".into(), ..Default::default() }))
                    .await
                    .map_err(|status| format!("Get: {status}"))?;
                done += 1;
            }
            Ok::<u64, String>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / duration.as_secs_f64())
}
