//! Multicast-registry figures against baselines on the same gateway and backends, in one
//! run: register throughput (vs KeyValueService Set of the same records), Enumerate over
//! 1 000 identities with a filter (vs a KeyValueService Scan of 1 000 equal records), and
//! Multicast to 100 subscribed identities (vs the client publishing the same 100
//! messages itself through PubSubService), with every delivery checked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prism_api::key_value_service_client::KeyValueServiceClient;
use prism_api::multicast_registry_service_client::MulticastRegistryServiceClient;
use prism_api::pub_sub_service_client::PubSubServiceClient;
use prism_api::*;
use tonic::transport::{Channel, Endpoint};

pub struct MulticastPlan {
    /// The multicast-registry namespace, and a keyvalue and a pubsub namespace on the
    /// same plugins for the baselines.
    pub namespace: String,
    pub kv_namespace: String,
    pub pubsub_namespace: String,
    pub identities: u32,
    pub rounds: u32,
    /// Where the subscriptions are opened; `None` = the target itself.
    pub subscriber_target: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn line(label: &str, histogram: &Histogram<u64>) -> String {
    format!(
        "{label:<44} p50 {:.3} ms  p99 {:.3} ms  ({} samples)",
        ms(histogram, 0.5),
        ms(histogram, 0.99),
        histogram.len()
    )
}

fn metadata(index: u32) -> BTreeMap<String, String> {
    let tier = if index.is_multiple_of(10) { "gold" } else { "silver" };
    let region = ["eu-west", "us-east", "ap-south"][index as usize % 3];
    [("tier", tier.to_string()), ("region", region.to_string()), ("age", (index % 90).to_string())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

async fn connect(target: &str) -> Result<Channel, String> {
    Endpoint::from_shared(target.to_owned())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))
}

/// Runs `count` calls of `call` over 16 concurrent tasks; returns calls per second.
async fn throughput<F, Fut>(count: u32, call: F) -> Result<f64, String>
where
    F: Fn(u32) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..16u32)
        .map(|task| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut index = task;
                while index < count {
                    call(index).await?;
                    index += 16;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(f64::from(count) / started.elapsed().as_secs_f64())
}

pub async fn run(target: &str, plan: &MulticastPlan) -> Result<String, String> {
    let channel = connect(target).await?;
    let run = std::process::id();
    let mut out = Vec::new();
    let (ns, kv_ns, ps_ns) =
        (plan.namespace.clone(), plan.kv_namespace.clone(), plan.pubsub_namespace.clone());

    // Register throughput vs Set of the same JSON records.
    let registry = MulticastRegistryServiceClient::new(channel.clone());
    let registers = throughput(plan.identities, {
        let (registry, ns) = (registry.clone(), ns.clone());
        move |index| {
            let (mut registry, ns) = (registry.clone(), ns.clone());
            async move {
                let request = RegisterRequest {
                    namespace: ns,
                    identity: format!("b{run}-{index}"),
                    metadata: metadata(index),
                    ttl_ms: 0,
                    replace: true,
                };
                registry.register(request).await.map(drop).map_err(|s| format!("register: {s}"))
            }
        }
    })
    .await?;
    let kv = KeyValueServiceClient::new(channel.clone());
    let sets = throughput(plan.identities, {
        let (kv, kv_ns) = (kv.clone(), kv_ns.clone());
        move |index| {
            let (mut kv, kv_ns) = (kv.clone(), kv_ns.clone());
            async move {
                let value =
                    format!("{{\"metadata\":{:?},\"registered_at\":1,\"expires_at\":0}}", metadata(index));
                let request = SetRequest {
                    namespace: kv_ns,
                    key: format!("mcr/b{run}-{index}"),
                    value: value.into_bytes().into(),
                    ..Default::default()
                };
                kv.set(request).await.map(drop).map_err(|s| format!("set: {s}"))
            }
        }
    })
    .await?;
    out.push(format!(
        "register {} identities: {registers:.0}/s; baseline KeyValueService Set of the same records: {sets:.0}/s; ratio {:.3}",
        plan.identities,
        registers / sets
    ));

    // Enumerate with a filter over every identity vs a raw Scan of as many records.
    let filter = "tier = gold and age >= 0 and not region ^= \"zz\"".to_string();
    let (mut enumerate, mut scan) = (histogram(), histogram());
    let mut matched = 0;
    for _ in 0..plan.rounds {
        let started = Instant::now();
        let request = EnumerateRequest {
            namespace: ns.clone(),
            filter: filter.clone(),
            page_size: 1000,
            ..Default::default()
        };
        let reply =
            registry.clone().enumerate(request).await.map_err(|s| format!("enumerate: {s}"))?.into_inner();
        enumerate.saturating_record(started.elapsed().as_micros() as u64);
        matched = reply.identities.len();
        let started = Instant::now();
        let request = ScanRequest {
            namespace: kv_ns.clone(),
            prefix: "mcr/".into(),
            limit: 1000,
            ..Default::default()
        };
        kv.clone().scan(request).await.map_err(|s| format!("scan: {s}"))?;
        scan.saturating_record(started.elapsed().as_micros() as u64);
    }
    out.push(line(&format!("Enumerate, filter over {} ({matched} match)", plan.identities), &enumerate));
    out.push(line("baseline Scan of as many records", &scan));
    out.push(format!("enumerate / scan p50 ratio {:.3}", ms(&enumerate, 0.5) / ms(&scan, 0.5)));

    // Multicast to the 100 gold identities, all subscribed, vs publishing 100 messages.
    let gold: Vec<u32> = (0..plan.identities).filter(|i| i % 10 == 0).collect();
    let (sink, mut received) = tokio::sync::mpsc::unbounded_channel::<(u32, Instant)>();
    let mut subscriptions = Vec::new();
    let subscribers = match &plan.subscriber_target {
        Some(other) => MulticastRegistryServiceClient::new(connect(other).await?),
        None => registry.clone(),
    };
    for index in &gold {
        let request =
            MulticastSubscribeRequest { namespace: ns.clone(), identity: format!("b{run}-{index}") };
        let mut stream =
            subscribers.clone().subscribe(request).await.map_err(|s| format!("subscribe: {s}"))?.into_inner();
        let (sink, index) = (sink.clone(), *index);
        subscriptions.push(tokio::spawn(async move {
            while let Ok(Some(_)) = stream.message().await {
                let _ = sink.send((index, Instant::now()));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut call, mut all_delivered, mut baseline) = (histogram(), histogram(), histogram());
    let pubsub = PubSubServiceClient::new(channel.clone());
    let mut delivered_total = 0u64;
    for _ in 0..plan.rounds {
        let started = Instant::now();
        let request = MulticastRequest {
            namespace: ns.clone(),
            filter: "tier = gold".into(),
            payload: b"bench".to_vec().into(),
            headers: Default::default(),
        };
        let reply =
            registry.clone().multicast(request).await.map_err(|s| format!("multicast: {s}"))?.into_inner();
        call.saturating_record(started.elapsed().as_micros() as u64);
        if reply.delivered as usize != gold.len() {
            return Err(format!(
                "multicast delivered to {} of {} subscribed identities",
                reply.delivered,
                gold.len()
            ));
        }
        let mut got = 0;
        while got < gold.len() {
            let (_, at) = tokio::time::timeout(Duration::from_secs(10), received.recv())
                .await
                .map_err(|_| format!("only {got} of {} subscribers received the multicast", gold.len()))?
                .ok_or("subscriptions ended")?;
            got += 1;
            if got == gold.len() {
                all_delivered.saturating_record(at.duration_since(started).as_micros() as u64);
            }
        }
        delivered_total += got as u64;
        let started = Instant::now();
        let publishes = gold.iter().map(|index| {
            let mut pubsub = pubsub.clone();
            let request = PublishRequest {
                namespace: ps_ns.clone(),
                topic: format!("bench.direct.b{run}-{index}"),
                payload: b"bench".to_vec().into(),
                metadata: Default::default(),
                ..Default::default()
            };
            async move { pubsub.publish(request).await }
        });
        for result in futures_util::future::join_all(publishes).await {
            result.map_err(|s| format!("publish: {s}"))?;
        }
        baseline.saturating_record(started.elapsed().as_micros() as u64);
    }
    for subscription in subscriptions {
        subscription.abort();
    }
    out.push(line(&format!("Multicast to {} subscribed: the call", gold.len()), &call));
    out.push(line("Multicast: until the last subscriber has it", &all_delivered));
    out.push(line("baseline: client publishes the 100 itself", &baseline));
    out.push(format!(
        "multicast call / baseline p50 ratio {:.3}; delivered {delivered_total} of {} (100%)",
        ms(&call, 0.5) / ms(&baseline, 0.5),
        u64::from(plan.rounds) * gold.len() as u64
    ));
    Ok(out.join("\n") + "\n")
}
