//! `prism-load`: drives KeyValueService Get/Set at a running gateway (or any server of
//! the same API) and reports throughput, latency percentiles and errors.
//!
//!   prism-load run --target http://127.0.0.1:8980 --workload mixed --concurrency 64 --duration 10s
//!   prism-load baseline --listen 127.0.0.1:8981     # bare tonic server over an in-process map
//!   prism-load compare --target URL --baseline URL  # same load against both, one run, with the ratio
//!   prism-load responder --listen 127.0.0.1:8982    # do-nothing HTTP/2 server: the floor under any gRPC server
//!   prism-load compression --target URL --size N --encoding zstd  # Gets with compressed responses
//!   prism-load pubsub --target URL --namespace N    # publish→receive vs NATS direct
//!   prism-load objects --target URL --namespace N   # 100 MiB SetStream/GetStream vs S3 direct
//!   prism-load stream --target URL --namespace N    # Kafka append/read vs rdkafka direct

#![forbid(unsafe_code)]

mod baseline;
mod compression;
mod multicast;
mod objects;
mod otlp_sink;
mod pubsub;
mod responder;
mod sqlite_baseline;
mod stream;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use workload::{Report, Workload};

#[derive(Parser)]
#[command(name = "prism-load", version, about = "Load generator for the Prism gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one workload against one server.
    Run {
        /// Server URL.
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Serve the baseline: KeyValueService Get/Set/Delete/Exists from an in-process map,
    /// or straight from Redis with --redis.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:8981")]
        listen: std::net::SocketAddr,
        /// Answer from this Redis server (plain GET/SET) instead of an in-process map.
        #[arg(long, conflicts_with = "postgres")]
        redis: Option<String>,
        /// Answer from this PostgreSQL database (table prism_baseline_kv) instead.
        #[arg(long, conflicts_with = "sqlite")]
        postgres: Option<String>,
        /// Answer from this SQLite database file (table prism_baseline_kv) instead.
        #[arg(long, conflicts_with = "redis")]
        sqlite: Option<String>,
    },
    /// KV Gets of one JSON-like value with responses uncompressed, gzip or zstd (the
    /// benchmark measures the server's CPU and bytes written around it).
    Compression {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Bytes in the value.
        #[arg(long, default_value_t = 65536)]
        size: usize,
        /// none, gzip or zstd.
        #[arg(long, default_value = "none")]
        encoding: String,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Serve the do-nothing floor: an HTTP/2 server answering every call with the same
    /// pre-framed GetResponse (100-byte value), no gRPC stack.
    Responder {
        #[arg(long, default_value = "127.0.0.1:8982")]
        listen: std::net::SocketAddr,
    },
    /// Receive OpenTelemetry spans over OTLP/gRPC and count them (the collector for a
    /// tracing benchmark).
    OtlpSink {
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: std::net::SocketAddr,
        /// Keep the number of spans received in this file.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// Publish→receive through the gateway's PubSubService and straight on NATS, in one run.
    Pubsub {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        /// A pubsub namespace of the target (bind it to the nats plugin to compare like with like).
        #[arg(long, default_value = "events")]
        namespace: String,
        /// NATS server for the direct baseline.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// Bytes per message (at least 8: the send time).
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Publish through the gateway over PublishStream, as fast as flow control allows
        /// (open loop: past what the subscriber sustains, at-most-once delivery drops),
        /// instead of one unary Publish per message (closed loop, the default).
        #[arg(long)]
        stream: bool,
        /// With --stream: pace publishing to this many messages per second in total.
        #[arg(long, requires = "stream")]
        rate: Option<u64>,
    },
    /// A large value (`--size-mib`) written with SetStream and read with GetStream through
    /// a keyvalue namespace with a claim check, against the same object written and read
    /// straight on the S3 store, in alternating rounds of one run.
    Objects {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        /// A keyvalue namespace of the target with a claim_check slot on the same store.
        #[arg(long, default_value = "big")]
        namespace: String,
        #[arg(long, default_value_t = 100)]
        size_mib: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// The S3 endpoint for the direct baseline.
        #[arg(long, default_value = "http://127.0.0.1:9000")]
        s3_endpoint: String,
        #[arg(long, default_value = "prism-test")]
        bucket: String,
        #[arg(long, default_value = "prism")]
        access_key: String,
        #[arg(long, default_value = "prism-secret")]
        secret_key: String,
    },
    /// Multicast-registry figures (register, filtered Enumerate over 1 000, Multicast to
    /// 100 subscribers) against KeyValueService / PubSubService baselines on the same plugins.
    Multicast {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        #[arg(long, default_value = "devices")]
        namespace: String,
        /// A keyvalue namespace on the registry's plugin, for the Set and Scan baselines.
        #[arg(long, default_value = "default")]
        kv_namespace: String,
        /// A pubsub namespace on the messaging plugin, for the publish baseline.
        #[arg(long, default_value = "events")]
        pubsub_namespace: String,
        #[arg(long, default_value_t = 1000)]
        identities: u32,
        #[arg(long, default_value_t = 50)]
        rounds: u32,
        /// Open the subscriptions on this gateway instead of --target (Multicast across
        /// gateways sharing the registry and messaging backends).
        #[arg(long)]
        subscriber_target: Option<String>,
    },
    /// Append and read-back throughput through the gateway's StreamService and straight
    /// on Kafka with rdkafka, in one run.
    Stream {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        /// A stream namespace of the target (bind it to the kafka plugin to compare like with like).
        #[arg(long, default_value = "logs")]
        namespace: String,
        /// Kafka brokers for the direct baseline.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Concurrent closed-loop appenders (each waits for its delivery report).
        #[arg(long, default_value_t = 32)]
        appenders: usize,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Partitions of the direct run's topic (match the plugin's `partitions`).
        #[arg(long, default_value_t = 3)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Run the same workload against the target and the baseline, and print the ratio.
    Compare {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        #[arg(long, default_value = "http://127.0.0.1:8981")]
        baseline: String,
        /// Alternating baseline/target rounds; the median ratio is reported.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// CA to verify an https:// target with (the baseline gets --ca).
        #[arg(long)]
        target_ca: Option<std::path::PathBuf>,
        /// Metadata for the target only, NAME=VALUE (repeatable).
        #[arg(long)]
        target_header: Vec<String>,
        /// Writes to the target only carry a fresh idempotency token each (the cost of
        /// tokens, with the same server as baseline and target).
        #[arg(long)]
        target_tokens: bool,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// New connections per second (connect, TLS handshake for https://, one Get).
    Handshakes {
        #[arg(long, default_value = "http://127.0.0.1:8980")]
        target: String,
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// Metadata sent with the Get, NAME=VALUE (repeatable).
        #[arg(long)]
        header: Vec<String>,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
    },
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// get, set, mixed (see --read-percent), or queue (enqueue + dequeue + ack per iteration).
    #[arg(long, default_value = "get")]
    workload: Workload,
    /// Reads in a mixed workload, in percent.
    #[arg(long, default_value_t = 90)]
    read_percent: u8,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long to measure, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured run-in before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Target total request rate per second; unlimited when absent. Latency is then
    /// measured from each request's scheduled time, so queueing is not hidden.
    #[arg(long)]
    rate: Option<u64>,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Namespace to address (empty = default).
    #[arg(long, default_value = "")]
    namespace: String,
    /// Queue name for the queue workload.
    #[arg(long, default_value = "prism-load")]
    queue: String,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// CA certificate to verify an https:// server with.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Metadata sent with every call, NAME=VALUE (repeatable), e.g.
    /// "authorization=Bearer …" or "x-api-key=…".
    #[arg(long)]
    header: Vec<String>,
    /// Give every Set and Enqueue a fresh idempotency token.
    #[arg(long)]
    idempotency_tokens: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration like 10s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("'{text}': use a unit of ms, s or m")),
    }
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Baseline { listen, redis, postgres, sqlite } => {
            let backend = match (redis, postgres, sqlite) {
                (Some(url), _, _) => baseline::Backend::Redis(url),
                (_, Some(url), _) => baseline::Backend::Postgres(url),
                (_, _, Some(path)) => baseline::Backend::Sqlite(path),
                (None, None, None) => baseline::Backend::Map,
            };
            runtime(2).block_on(baseline::serve(listen, backend));
            ExitCode::SUCCESS
        }
        Command::Compression { target, namespace, size, encoding, duration } => {
            let result = compression::parse_encoding(&encoding).and_then(|encoding| {
                runtime(1).block_on(compression::run(&target, &namespace, size, encoding, duration))
            });
            match result {
                Ok(calls) => {
                    println!("calls {calls} in {:.1} s", duration.as_secs_f64());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Responder { listen } => {
            runtime(2).block_on(responder::serve(listen));
            ExitCode::SUCCESS
        }
        Command::OtlpSink { listen, report } => {
            runtime(1).block_on(otlp_sink::serve(listen, report));
            ExitCode::SUCCESS
        }
        Command::Run { target, load } => {
            let plan = match load.to_plan() {
                Ok(plan) => plan,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            let report = match runtime(load.threads).block_on(workload::run(&target, &plan)) {
                Ok(report) => report,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            };
            if load.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json()).expect("json"));
            } else {
                print!("{}", report.render());
            }
            if report.errors_total() > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Compare { target, baseline, rounds, target_ca, target_header, target_tokens, load } => {
            let target_access = match workload::Access::new(target_ca, &target_header) {
                Ok(access) => access,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            compare(&target, &baseline, &load, rounds, target_access, target_tokens)
        }
        Command::Handshakes { target, ca, header, concurrency, duration } => {
            let access = match workload::Access::new(ca, &header) {
                Ok(access) => access,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            match runtime(2).block_on(workload::handshakes(&target, &access, concurrency, duration)) {
                Ok(rate) => {
                    println!("{target}: {rate:.0} new connections/s (connect + handshake + one Get, {concurrency} at once)");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Multicast {
            target,
            namespace,
            kv_namespace,
            pubsub_namespace,
            identities,
            rounds,
            subscriber_target,
        } => {
            let plan = multicast::MulticastPlan {
                namespace,
                kv_namespace,
                pubsub_namespace,
                identities,
                rounds,
                subscriber_target,
            };
            match runtime(2).block_on(multicast::run(&target, &plan)) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Stream { target, namespace, brokers, appenders, duration, payload, partitions, threads } => {
            let plan = stream::StreamPlan { appenders, duration, payload, partitions };
            let runtime = runtime(threads);
            let direct = runtime.block_on(stream::direct_kafka(&brokers, &plan));
            let gateway = runtime.block_on(stream::through_gateway(&target, &namespace, &plan));
            match (direct, gateway) {
                (Ok(direct), Ok(gateway)) => {
                    print!("{}{}", direct.render(), gateway.render());
                    println!(
                        "append ratio (gateway / kafka): {:.3}; read ratio: {:.3}",
                        gateway.append_rate() / direct.append_rate(),
                        gateway.read_rate() / direct.read_rate()
                    );
                    ExitCode::SUCCESS
                }
                (Err(error), _) | (_, Err(error)) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Objects {
            target,
            namespace,
            size_mib,
            rounds,
            s3_endpoint,
            bucket,
            access_key,
            secret_key,
        } => {
            let plan = objects::ObjectsPlan {
                size_mib,
                rounds: rounds.max(1),
                endpoint: s3_endpoint,
                bucket,
                access_key,
                secret_key,
            };
            match runtime(2).block_on(objects::compare(&target, &namespace, &plan)) {
                Ok((gateway, direct)) => {
                    for (label, report) in [("s3 direct", &direct), ("gateway claim check", &gateway)] {
                        println!(
                            "{label:<24} {size_mib} MiB x {}: write {:.1} MiB/s, read {:.1} MiB/s (medians)",
                            report.writes.len(),
                            report.write_mib_s(size_mib),
                            report.read_mib_s(size_mib)
                        );
                    }
                    println!(
                        "write ratio (gateway / direct): {:.3}; read ratio: {:.3}",
                        gateway.write_mib_s(size_mib) / direct.write_mib_s(size_mib),
                        gateway.read_mib_s(size_mib) / direct.read_mib_s(size_mib)
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Pubsub { target, namespace, nats, publishers, duration, payload, threads, stream, rate } => {
            let plan = pubsub::PubSubPlan { publishers, duration, payload, unary: !stream, rate };
            let runtime = runtime(threads);
            let direct = runtime.block_on(pubsub::direct_nats(&nats, &plan));
            let gateway = runtime.block_on(pubsub::through_gateway(&target, &namespace, &plan));
            match (direct, gateway) {
                (Ok(direct), Ok(gateway)) => {
                    print!("{}{}", direct.render(), gateway.render());
                    println!(
                        "received throughput ratio (gateway / nats): {:.3}",
                        gateway.throughput() / direct.throughput()
                    );
                    ExitCode::SUCCESS
                }
                (Err(error), _) | (_, Err(error)) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn compare(
    target: &str,
    baseline: &str,
    load: &LoadArgs,
    rounds: usize,
    target_access: workload::Access,
    target_tokens: bool,
) -> ExitCode {
    let runtime = runtime(load.threads);
    let plan = match load.to_plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let target_plan = workload::Plan {
        access: target_access,
        idempotency_tokens: plan.idempotency_tokens || target_tokens,
        ..plan.clone()
    };
    let mut pairs: Vec<(Report, Report)> = Vec::new();
    // Alternate baseline and target so drift on a shared machine hits both alike.
    for round in 1..=rounds.max(1) {
        let run = |url: &str, plan: &workload::Plan| {
            runtime.block_on(workload::run(url, plan)).map_err(|e| format!("{url}: {e}"))
        };
        let pair = match (run(baseline, &plan), run(target, &target_plan)) {
            (Ok(base), Ok(gateway)) => (base, gateway),
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        if !load.json {
            println!("== round {round}: baseline ==\n{}", pair.0.render());
            println!("== round {round}: target ==\n{}", pair.1.render());
            println!(
                "round {round} throughput ratio (target / baseline): {:.3}\n",
                pair.1.throughput() / pair.0.throughput()
            );
        }
        pairs.push(pair);
    }
    let mut ratios: Vec<f64> =
        pairs.iter().map(|(base, gateway)| gateway.throughput() / base.throughput()).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    if load.json {
        let rounds: Vec<_> = pairs
            .iter()
            .map(|(base, gateway)| serde_json::json!({ "baseline": base.to_json(), "target": gateway.to_json() }))
            .collect();
        let json = serde_json::json!({ "rounds": rounds, "median_throughput_ratio": median });
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        println!("median throughput ratio over {} round(s) (target / baseline): {median:.3}", pairs.len());
    }
    let errors: u64 = pairs.iter().map(|(base, gateway)| base.errors_total() + gateway.errors_total()).sum();
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

impl LoadArgs {
    fn to_plan(&self) -> Result<workload::Plan, String> {
        Ok(workload::Plan {
            workload: self.workload,
            read_percent: self.read_percent.min(100),
            concurrency: self.concurrency.max(1),
            connections: self.connections.max(1),
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            keys: self.keys.max(1),
            value_size: self.value_size,
            namespace: self.namespace.clone(),
            queue: self.queue.clone(),
            access: workload::Access::new(self.ca.clone(), &self.header)?,
            idempotency_tokens: self.idempotency_tokens,
        })
    }
}
