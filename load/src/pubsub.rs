//! Publish→receive through the gateway (Publish RPCs, one Subscribe stream) against the
//! same load straight on NATS (one client publishing, one subscription), in one run.
//! Each payload starts with its send time, so the subscriber measures latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use prism_api::pub_sub_service_client::PubSubServiceClient;
use prism_api::{PublishRequest, SubscribeRequest};
use tonic::transport::Endpoint;

pub struct PubSubPlan {
    pub publishers: usize,
    pub duration: Duration,
    pub payload: usize,
    /// Publish with one unary call per message instead of PublishStream.
    pub unary: bool,
    /// With PublishStream: total messages per second across publishers; unlimited when absent.
    pub rate: Option<u64>,
}

pub struct PubSubReport {
    pub label: String,
    pub published: u64,
    pub received: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl PubSubReport {
    pub fn throughput(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    pub fn render(&self) -> String {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{:<24} published {} received {} in {:.1}s: {:.0} msg/s received; latency p50 {:.3} ms p90 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms\n",
            self.label,
            self.published,
            self.received,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
        )
    }
}

fn payload(start: Instant, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(8)];
    payload[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
    payload
}

fn record(histogram: &mut Histogram<u64>, start: Instant, payload: &[u8]) {
    if let Some(sent) = payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) {
        let now = start.elapsed().as_nanos() as u64;
        histogram.saturating_record((now.saturating_sub(sent) / 1000).max(1));
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Through the gateway: `publishers` tasks calling Publish, one Subscribe stream counting.
pub async fn through_gateway(
    target: &str,
    namespace: &str,
    plan: &PubSubPlan,
) -> Result<PubSubReport, String> {
    let channel = Endpoint::from_shared(target.to_owned())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let topic = format!("bench.{}", std::process::id());
    let subscriber = PubSubServiceClient::new(channel.clone())
        .subscribe(SubscribeRequest {
            namespace: namespace.into(),
            topic: topic.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("subscribe: {e}"))?
        .into_inner();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for _ in 0..plan.publishers {
        let mut client = PubSubServiceClient::new(channel.clone());
        let (stop, published, topic, namespace, size, unary) =
            (stop.clone(), published.clone(), topic.clone(), namespace.to_owned(), plan.payload, plan.unary);
        let (rate, publishers_count) = (plan.rate, plan.publishers.max(1));
        let request = move || PublishRequest {
            namespace: namespace.clone(),
            topic: topic.clone(),
            payload: payload(start, size).into(),
            metadata: Default::default(),
            ..Default::default()
        };
        publishers.push(tokio::spawn(async move {
            if unary {
                while !stop.load(Ordering::Relaxed) {
                    if client.publish(request()).await.is_ok() {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else {
                // As fast as HTTP/2 flow control takes them, or paced: each message is due at
                // `sent / per_publisher` seconds; when ahead, wait (in whole timer ticks).
                let per_publisher = rate.map(|rate| rate as f64 / publishers_count as f64);
                let paced_from = tokio::time::Instant::now();
                let requests = futures_util::stream::unfold((stop, 0u64), move |(stop, sent)| {
                    let request = request.clone();
                    async move {
                        if let Some(per_second) = per_publisher {
                            let due = paced_from + Duration::from_secs_f64(sent as f64 / per_second);
                            tokio::time::sleep_until(due).await;
                        }
                        (!stop.load(Ordering::Relaxed)).then(|| (request(), (stop, sent + 1)))
                    }
                });
                if let Ok(reply) = client.publish_stream(requests).await {
                    published.fetch_add(reply.into_inner().published, Ordering::Relaxed);
                }
            }
        }));
    }
    let label = match (plan.unary, plan.rate) {
        (true, _) => "gateway (unary Publish)".into(),
        (false, None) => "gateway (PublishStream)".into(),
        (false, Some(rate)) => format!("gateway (stream {rate}/s)"),
    };
    let payloads = subscriber
        .filter_map(|event| std::future::ready(event.ok().and_then(|e| e.message).map(|m| m.payload)));
    let run = Run { start, stop, published, publishers };
    Ok(run.measure(label, payloads, plan.duration).await)
}

/// Straight on NATS: the same publishers and one subscription, no gateway.
pub async fn direct_nats(url: &str, plan: &PubSubPlan) -> Result<PubSubReport, String> {
    let client = async_nats::connect(url).await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let subject = format!("prism.bench.direct.{}", std::process::id());
    let subscriber = client.subscribe(subject.clone()).await.map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for _ in 0..plan.publishers {
        let (client, stop, published, subject, size) =
            (client.clone(), stop.clone(), published.clone(), subject.clone(), plan.payload);
        publishers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client.publish(subject.clone(), payload(start, size).into()).await.is_ok() {
                    published.fetch_add(1, Ordering::Relaxed);
                }
                // Publishing only buffers; yield so the subscriber gets its share of the thread.
                tokio::task::yield_now().await;
            }
        }));
    }
    let run = Run { start, stop, published, publishers };
    Ok(run.measure("nats".into(), subscriber.map(|message| message.payload), plan.duration).await)
}

/// A run under way: its clock, its publishers and what they have sent.
struct Run {
    start: Instant,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
}

impl Run {
    /// Receives for `duration`, recording each payload's latency, then stops the publishers.
    async fn measure(
        self,
        label: String,
        mut payloads: impl futures_util::Stream<Item = bytes::Bytes> + Unpin,
        duration: Duration,
    ) -> PubSubReport {
        let mut latency = histogram();
        let mut received = 0u64;
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(payload)) = tokio::time::timeout_at(deadline, payloads.next()).await {
            record(&mut latency, self.start, &payload);
            received += 1;
        }
        self.stop.store(true, Ordering::Relaxed);
        for publisher in self.publishers {
            let _ = publisher.await;
        }
        PubSubReport {
            label,
            published: self.published.load(Ordering::Relaxed),
            received,
            elapsed: duration,
            latency_us: latency,
        }
    }
}
