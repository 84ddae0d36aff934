//! Kafka append and read throughput through the gateway's StreamService against the same
//! work done straight with rdkafka (same producer settings: idempotent, acks=all), in
//! one run. Appends are closed-loop: each appender waits for its delivery report (the
//! Append reply) before sending the next. Reads take every partition back from offset 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prism_api::read_request::Start;
use prism_api::stream_service_client::StreamServiceClient;
use prism_api::{AppendRequest, GetOffsetsRequest, ReadRequest};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tonic::transport::{Channel, Endpoint};

pub struct StreamPlan {
    pub appenders: usize,
    pub duration: Duration,
    pub payload: usize,
    pub partitions: u32,
}

pub struct StreamReport {
    pub label: String,
    pub appended: u64,
    pub append_elapsed: Duration,
    pub append_latency_us: Histogram<u64>,
    pub read: u64,
    pub read_elapsed: Duration,
}

impl StreamReport {
    pub fn append_rate(&self) -> f64 {
        self.appended as f64 / self.append_elapsed.as_secs_f64()
    }

    pub fn read_rate(&self) -> f64 {
        self.read as f64 / self.read_elapsed.as_secs_f64()
    }

    pub fn render(&self) -> String {
        let ms = |q: f64| self.append_latency_us.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{:<10} append: {} in {:.1}s = {:.0} records/s (p50 {:.3} ms, p99 {:.3} ms); read back: {} in {:.2}s = {:.0} records/s\n",
            self.label,
            self.appended,
            self.append_elapsed.as_secs_f64(),
            self.append_rate(),
            ms(0.5),
            ms(0.99),
            self.read,
            self.read_elapsed.as_secs_f64(),
            self.read_rate(),
        )
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Runs `appenders` closed loops of `append` for `duration`; returns count and latencies.
async fn append_loops<F, Fut>(plan: &StreamPlan, append: F) -> (u64, Duration, Histogram<u64>)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for appender in 0..plan.appenders as u64 {
        let append = append.clone();
        let deadline = start + plan.duration;
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut count = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if append(appender * 1_000_000_000 + count).await {
                    latency.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                    count += 1;
                }
            }
            (count, latency)
        }));
    }
    let mut total = 0;
    let mut latency = histogram();
    for task in tasks {
        let (count, part) = task.await.expect("appender task");
        total += count;
        latency.add(part).expect("histogram add");
    }
    (total, start.elapsed(), latency)
}

pub async fn through_gateway(
    target: &str,
    namespace: &str,
    plan: &StreamPlan,
) -> Result<StreamReport, String> {
    let channel: Channel = Endpoint::from_shared(target.to_owned())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let stream = format!("bench-gateway-{}", std::process::id());
    let payload = bytes::Bytes::from(vec![7u8; plan.payload]);
    let (client, name, ns) =
        (StreamServiceClient::new(channel.clone()), stream.clone(), namespace.to_owned());
    // Create the topic outside the measured window.
    StreamServiceClient::new(channel.clone())
        .append(AppendRequest { namespace: ns.clone(), stream: name.clone(), ..Default::default() })
        .await
        .map_err(|e| format!("append: {e}"))?;
    let (appended, append_elapsed, append_latency_us) = append_loops(plan, move |n| {
        let (mut client, name, ns, payload) = (client.clone(), name.clone(), ns.clone(), payload.clone());
        async move {
            let request = AppendRequest {
                namespace: ns,
                stream: name,
                key: Some(n.to_be_bytes().to_vec().into()),
                payload,
                ..Default::default()
            };
            client.append(request).await.is_ok()
        }
    })
    .await;

    let mut client = StreamServiceClient::new(channel);
    let offsets = client
        .get_offsets(GetOffsetsRequest {
            namespace: namespace.into(),
            stream: stream.clone(),
            group: String::new(),
        })
        .await
        .map_err(|e| format!("offsets: {e}"))?
        .into_inner();
    let start = Instant::now();
    let mut readers = Vec::new();
    for partition in offsets.partitions {
        let mut client = client.clone();
        let request = ReadRequest {
            namespace: namespace.into(),
            stream: stream.clone(),
            partition: partition.partition,
            start: Some(Start::FromOffset(0)),
            follow: false,
            max_records: 0,
        };
        readers.push(tokio::spawn(async move {
            let mut records = client.read(request).await.map_err(|e| format!("read: {e}"))?.into_inner();
            let mut count = 0u64;
            while let Some(_record) = records.message().await.map_err(|e| format!("read: {e}"))? {
                count += 1;
            }
            Ok::<u64, String>(count)
        }));
    }
    let mut read = 0;
    for reader in readers {
        read += reader.await.map_err(|e| e.to_string())??;
    }
    Ok(StreamReport {
        label: "gateway".into(),
        appended,
        append_elapsed,
        append_latency_us,
        read,
        read_elapsed: start.elapsed(),
    })
}

pub async fn direct_kafka(brokers: &str, plan: &StreamPlan) -> Result<StreamReport, String> {
    let topic = format!("bench-direct-{}", std::process::id());
    let base = |extra: &[(&str, &str)]| {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config
    };
    let admin: AdminClient<DefaultClientContext> = base(&[]).create().map_err(|e| e.to_string())?;
    let new_topic = NewTopic::new(&topic, plan.partitions as i32, TopicReplication::Fixed(1));
    admin
        .create_topics([&new_topic], &AdminOptions::new())
        .await
        .map_err(|e| format!("create topic: {e}"))?;
    let producer: FutureProducer =
        base(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "1")])
            .create()
            .map_err(|e| e.to_string())?;
    let payload: Arc<[u8]> = vec![7u8; plan.payload].into();
    let name: Arc<str> = topic.clone().into();
    let (appended, append_elapsed, append_latency_us) = append_loops(plan, move |n| {
        let (producer, payload, name) = (producer.clone(), payload.clone(), name.clone());
        async move {
            let key = n.to_be_bytes();
            let record = FutureRecord::to(&name).key(&key[..]).payload(&payload[..]);
            producer.send(record, Timeout::After(Duration::from_secs(10))).await.is_ok()
        }
    })
    .await;

    let start = Instant::now();
    let consumer: StreamConsumer =
        // A short fetch wait, so the tail of a partition is not held back by the default 500 ms.
        base(&[("group.id", "prism-bench-direct"), ("enable.auto.commit", "false"), ("fetch.wait.max.ms", "10")])
            .create()
            .map_err(|e| e.to_string())?;
    // Read back what was acknowledged. (tansu 0.6 can report a high watermark below the
    // last acknowledged offset after concurrent appends, so watermarks would undercount.)
    let total = appended;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..plan.partitions as i32 {
        assignment.add_partition_offset(&topic, partition, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut read = 0;
    while read < total {
        tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .map_err(|_| format!("read stalled after {read} of {total}"))?
            .map_err(|e| format!("read: {e}"))?;
        read += 1;
    }
    Ok(StreamReport {
        label: "kafka".into(),
        appended,
        append_elapsed,
        append_latency_us,
        read,
        read_elapsed: start.elapsed(),
    })
}
