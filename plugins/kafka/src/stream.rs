//! stream_basic, stream_partitioning and stream_replay: appends through the idempotent
//! producer, reads through a group-less consumer assigned to one partition.

use plugin_abi::PluginResult;
use std::sync::Arc;

use plugin_abi::{
    Appended, NewRecord, PartitionOffsets, RecordFeed, StreamBasic, StreamPartitioning, StreamRecord,
    StreamReplay,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::{blocking, unavailable, Kafka};

pub(crate) fn kafka_headers(headers: &[(String, String)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new_with_capacity(headers.len()), |all, (name, value)| {
        all.insert(Header { key: name, value: Some(value.as_bytes()) })
    })
}

pub(crate) fn prism_headers(message: &BorrowedMessage<'_>) -> Vec<(String, String)> {
    let Some(headers) = message.headers() else { return Vec::new() };
    headers
        .iter()
        .map(|h| {
            (h.key.to_owned(), h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default())
        })
        .collect()
}

pub(crate) fn stream_record(message: &BorrowedMessage<'_>, ack_id: String) -> StreamRecord {
    StreamRecord {
        partition: message.partition() as u32,
        offset: message.offset() as u64,
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers: prism_headers(message),
        timestamp_unix_ms: message.timestamp().to_millis().unwrap_or_default(),
        ack_id,
    }
}

impl Kafka {
    /// Produces one record and waits for its delivery report.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(String, String)],
    ) -> PluginResult<Appended> {
        let timestamp_unix_ms = plugin_abi::unix_millis();
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .payload(payload)
            .timestamp(timestamp_unix_ms)
            .headers(kafka_headers(headers));
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition as i32);
        }
        match self.producer.send(record, Timeout::After(self.timeout())).await {
            Ok(delivery) => {
                let (partition, offset) = (delivery.partition as u32, delivery.offset as u64);
                self.topics.produced(topic, partition, offset);
                Ok(Appended { partition, offset, timestamp_unix_ms })
            }
            Err((error, _)) => Err(unavailable(&format!("append to '{topic}' failed"), error)),
        }
    }

    /// Low and high watermarks of one partition. The high one is at least one past the
    /// last offset this instance was acknowledged: tansu 0.6 can report less after
    /// concurrent appends to a partition (the records are there and fetchable).
    pub(crate) async fn watermarks(&self, topic: &str, partition: u32) -> PluginResult<(u64, u64)> {
        let lookups = self.lookups.clone();
        let timeout = self.timeout();
        let name = topic.to_owned();
        let (low, high) = blocking(move || lookups.fetch_watermarks(&name, partition as i32, timeout))
            .await
            .map_err(|e| unavailable(&format!("offsets of '{topic}' partition {partition}"), e))?;
        let acknowledged = self.topics.acknowledged_end(topic, partition);
        Ok((low.max(0) as u64, (high.max(0) as u64).max(acknowledged)))
    }

    /// A consumer for reads at explicit offsets. It never subscribes or commits, so it
    /// joins no group; librdkafka still wants a group id before it will assign.
    pub(crate) fn reader(&self) -> PluginResult<StreamConsumer> {
        self.client_config()
            .set("group.id", format!("{}prism-reader", self.config.topic_prefix))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| unavailable("cannot create a consumer", e))
    }
}

/// Pumps `consumer`'s records into `sender` until `until` (exclusive), an error, or
/// the reader going away. Drops the consumer off the async workers (closing blocks).
pub(crate) async fn pump_reads(
    consumer: StreamConsumer,
    until: Option<u64>,
    sender: mpsc::Sender<PluginResult<StreamRecord>>,
) {
    let consumer = Arc::new(consumer);
    loop {
        let received = tokio::select! {
            received = consumer.recv() => received.map(|message| stream_record(&message, String::new())),
            () = sender.closed() => break,
        };
        match received {
            Ok(record) => {
                let offset = record.offset;
                if until.is_some_and(|until| offset >= until) || sender.send(Ok(record)).await.is_err() {
                    break;
                }
                if until.is_some_and(|until| offset + 1 >= until) {
                    break;
                }
            }
            Err(error) => {
                let _ = sender.send(Err(unavailable("read failed", error))).await;
                break;
            }
        }
    }
    tokio::task::spawn_blocking(move || drop(consumer));
}

impl StreamBasic for Kafka {
    async fn append(&self, stream: &str, record: NewRecord) -> PluginResult<Appended> {
        let topic = self.topic_name(stream)?;
        self.ensure_topic(&topic).await?;
        self.produce(&topic, None, record.key.as_deref(), &record.payload, &record.headers).await
    }

    async fn read(
        &self,
        stream: &str,
        partition: u32,
        from_offset: u64,
        follow: bool,
    ) -> PluginResult<RecordFeed> {
        let topic = self.topic_name(stream)?;
        let count = self.partitions(&topic).await?;
        self.check_partition(&topic, partition, count).await?;
        let (earliest, next) = self.watermarks(&topic, partition).await?;
        let (sender, receiver) = mpsc::channel(256);
        let until = (!follow).then_some(next);
        if until.is_some_and(|until| from_offset.max(earliest) >= until) {
            return Ok(RecordFeed::from_receiver(receiver)); // nothing to read: ends at once
        }
        let consumer = self.reader()?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, partition as i32, Offset::Offset(from_offset.max(earliest) as i64))
            .map_err(|e| unavailable("cannot assign the partition", e))?;
        consumer.assign(&assignment).map_err(|e| unavailable("cannot assign the partition", e))?;
        tokio::spawn(pump_reads(consumer, until, sender));
        Ok(RecordFeed::from_receiver(receiver))
    }

    async fn offsets(&self, stream: &str) -> PluginResult<Vec<PartitionOffsets>> {
        let topic = self.topic_name(stream)?;
        let count = self.partitions(&topic).await?;
        let mut offsets = Vec::with_capacity(count as usize);
        for partition in 0..count {
            let (earliest, next) = self.watermarks(&topic, partition).await?;
            offsets.push(PartitionOffsets { partition, earliest, next });
        }
        Ok(offsets)
    }
}

impl StreamPartitioning for Kafka {
    async fn append_to_partition(
        &self,
        stream: &str,
        partition: u32,
        record: NewRecord,
    ) -> PluginResult<Appended> {
        let topic = self.topic_name(stream)?;
        let count = self.ensure_topic(&topic).await?;
        self.check_partition(&topic, partition, count).await?;
        self.produce(&topic, Some(partition), record.key.as_deref(), &record.payload, &record.headers).await
    }
}

impl StreamReplay for Kafka {
    async fn offset_for_timestamp(
        &self,
        stream: &str,
        partition: u32,
        timestamp_unix_ms: i64,
    ) -> PluginResult<u64> {
        let topic = self.topic_name(stream)?;
        let count = self.partitions(&topic).await?;
        self.check_partition(&topic, partition, count).await?;
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(&topic, partition as i32, Offset::Offset(timestamp_unix_ms.max(0)))
            .map_err(|e| unavailable("cannot build the time query", e))?;
        let lookups = self.lookups.clone();
        let timeout = self.timeout();
        let answer = blocking(move || lookups.offsets_for_times(query, timeout))
            .await
            .map_err(|e| unavailable(&format!("time lookup on '{topic}'"), e))?;
        let (earliest, end) = self.watermarks(&topic, partition).await?;
        let answered = match answer.find_partition(&topic, partition as i32).map(|element| element.offset()) {
            Some(Offset::Offset(offset)) if offset >= 0 && (offset as u64) < end => offset as u64,
            // No record at or after the time: the partition's end.
            _ => return Ok(end),
        };
        // Some brokers (tansu 0.6) answer with an offset whose record is older than the
        // time asked for; check the answer, and search the partition when it is wrong.
        let probe = TimeProbe::new(self, &topic, partition)?;
        let at_or_after = |found: Option<i64>| found.is_some_and(|t| t >= timestamp_unix_ms);
        let before_is_older = answered == earliest || !at_or_after(probe.timestamp(answered - 1).await?);
        if at_or_after(probe.timestamp(answered).await?) && before_is_older {
            return Ok(answered);
        }
        let (mut low, mut high) = (earliest, end);
        while low < high {
            let middle = low + (high - low) / 2;
            if at_or_after(probe.timestamp(middle).await?) {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(low)
    }
}

/// Reads single records' timestamps from one partition, for checking time lookups.
struct TimeProbe {
    consumer: Option<StreamConsumer>,
    topic: String,
    partition: u32,
    timeout: std::time::Duration,
}

impl TimeProbe {
    fn new(kafka: &Kafka, topic: &str, partition: u32) -> PluginResult<TimeProbe> {
        Ok(TimeProbe {
            consumer: Some(kafka.reader()?),
            topic: topic.to_owned(),
            partition,
            timeout: kafka.timeout(),
        })
    }

    /// The timestamp of the record at `offset` (`None` when it is gone or never came).
    async fn timestamp(&self, offset: u64) -> PluginResult<Option<i64>> {
        let consumer = self.consumer.as_ref().expect("present until drop");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, self.partition as i32, Offset::Offset(offset as i64))
            .map_err(|e| unavailable("cannot assign the partition", e))?;
        consumer.assign(&assignment).map_err(|e| unavailable("cannot assign the partition", e))?;
        match tokio::time::timeout(self.timeout, consumer.recv()).await {
            Ok(Ok(message)) if message.offset() as u64 == offset => Ok(message.timestamp().to_millis()),
            Ok(Ok(_)) | Err(_) => Ok(None),
            Ok(Err(error)) => {
                Err(unavailable(&format!("reading '{}' at offset {offset}", self.topic), error))
            }
        }
    }
}

impl Drop for TimeProbe {
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        tokio::task::spawn_blocking(move || drop(consumer));
    }
}
