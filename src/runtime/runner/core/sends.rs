//! Sends in flight and their settling: every record handed to the producer waits here,
//! numbered, until the broker acknowledges it, so a checkpoint can wait for exactly the
//! sends before it.
//!
//! When the producer's queue is full (the broker is slow or away) a send is not retried
//! in a loop: it joins a backlog, in order, and so does every send after it until the
//! backlog drains. The runner stops reading while there is a backlog and waits for it
//! without holding its lock or a worker thread. Nothing is dropped and per-key order
//! holds.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::runtime::runner::StageProducer;
use crate::telemetry;

/// What a send carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    Output,
    DeadLetter,
    State,
}

impl Sent {
    /// The topic it goes to, in words (for errors).
    pub(super) fn topic_words(self) -> &'static str {
        match self {
            Sent::Output => "the output topic",
            Sent::DeadLetter => "the dead-letter topic",
            Sent::State => "the state topic",
        }
    }
}

/// Deliveries waiting this long without any acknowledgement make the stage report itself
/// unhealthy (`perfpilot_healthy` 0, one log line) until they move again.
const UNHEALTHY_AFTER: Duration = Duration::from_secs(10);

/// A record the producer had no room for yet.
struct Queued {
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    what: Sent,
    seq: u64,
}

/// One record to send; `payload` `None` is a tombstone.
pub(super) struct Outgoing<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: Option<i32>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) what: Sent,
}

/// What settling found.
#[derive(Default)]
pub(super) struct Settled {
    /// Outputs acknowledged.
    pub(super) produced: u64,
    /// The first failed delivery, and what it carried.
    pub(super) failure: Option<(Sent, KafkaError)>,
}

/// See the module docs.
pub(super) struct Sends {
    name: &'static str,
    /// Handed to the producer, not yet acknowledged, with their sequence numbers.
    inflight: Vec<(DeliveryFuture, Sent, u64)>,
    /// Waiting for room in the producer's queue, in order.
    backlog: VecDeque<Queued>,
    /// When the backlog began.
    backlog_since: Option<Instant>,
    /// Sequence number of the next send.
    next_seq: u64,
    /// When a delivery was last acknowledged, or nothing was waiting.
    last_progress: Instant,
    /// Deliveries have been waiting longer than [`UNHEALTHY_AFTER`].
    waiting_for_broker: bool,
}

impl Sends {
    pub(super) fn new(name: &'static str) -> Self {
        Sends {
            name,
            inflight: Vec::new(),
            backlog: VecDeque::new(),
            backlog_since: None,
            next_seq: 0,
            last_progress: Instant::now(),
            waiting_for_broker: false,
        }
    }

    /// Sequence number the next send will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sends not yet acknowledged, queued ones included.
    pub(super) fn pending(&self) -> usize {
        self.inflight.len() + self.backlog.len()
    }

    /// How long the backlog has waited for room, if there is one.
    pub(super) fn backlog_waited(&self) -> Option<Duration> {
        self.backlog_since.map(|t| t.elapsed())
    }

    /// True when every send numbered below `seq` is acknowledged.
    pub(super) fn acknowledged_below(&self, seq: u64) -> bool {
        self.inflight.iter().all(|(_, _, s)| *s >= seq) && self.backlog.iter().all(|q| q.seq >= seq)
    }

    /// Hands a record to the producer, or queues it behind the backlog. `Ok(true)` when
    /// it joined the backlog. `Err` for a refusal other than a full queue.
    pub(super) fn send(
        &mut self,
        producer: &StageProducer,
        out: Outgoing<'_>,
    ) -> Result<bool, KafkaError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.backlog.is_empty() {
            match try_send(producer, &out) {
                Ok(fut) => {
                    self.inflight.push((fut, out.what, seq));
                    return Ok(false);
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    self.backlog_since = Some(Instant::now());
                }
                Err(e) => return Err(e),
            }
        }
        self.backlog.push_back(Queued {
            topic: out.topic.to_string(),
            partition: out.partition,
            key: out.key.map(<[u8]>::to_vec),
            payload: out.payload.map(<[u8]>::to_vec),
            what: out.what,
            seq,
        });
        Ok(true)
    }

    /// Moves what the producer now has room for from the backlog into it.
    fn drain(&mut self, producer: &StageProducer) -> Result<(), KafkaError> {
        while let Some(q) = self.backlog.front() {
            let out = Outgoing {
                topic: &q.topic,
                partition: q.partition,
                key: q.key.as_deref(),
                payload: q.payload.as_deref(),
                what: q.what,
            };
            match try_send(producer, &out) {
                Ok(fut) => {
                    self.inflight.push((fut, q.what, q.seq));
                    self.backlog.pop_front();
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.backlog_since = None;
        Ok(())
    }

    /// Collects the deliveries that completed, without waiting, then hands the producer
    /// what it has room for from the backlog.
    pub(super) fn settle(&mut self, producer: &StageProducer) -> Settled {
        let mut settled = Settled::default();
        let mut cx = Context::from_waker(Waker::noop());
        let before = self.inflight.len();
        self.inflight.retain_mut(|(fut, what, _)| {
            let outcome = match Pin::new(fut).poll(&mut cx) {
                Poll::Pending => return true,
                Poll::Ready(Ok(Ok(_))) => Ok(()),
                Poll::Ready(Ok(Err((source, _)))) => Err(source),
                Poll::Ready(Err(_)) => Err(KafkaError::Canceled),
            };
            match outcome {
                Ok(()) if *what == Sent::Output => settled.produced += 1,
                Ok(()) => {}
                Err(source) => {
                    settled.failure.get_or_insert((*what, source));
                }
            }
            false
        });
        let acknowledged = self.inflight.len() < before;
        if settled.failure.is_none() {
            if let Err(e) = self.drain(producer) {
                let what = self.backlog.front().map_or(Sent::Output, |q| q.what);
                settled.failure = Some((what, e));
            }
        }
        self.watch_health(acknowledged);
        settled
    }

    /// Forgets every send: they belonged to an aborted transaction, or to a producer
    /// that was replaced, and none will be acknowledged.
    pub(super) fn clear(&mut self) {
        self.inflight.clear();
        self.backlog.clear();
        self.backlog_since = None;
    }

    /// Health: deliveries that wait long for the broker (it is away, or overloaded) make
    /// the stage unhealthy, once, until they move again. The stage keeps running.
    fn watch_health(&mut self, acknowledged: bool) {
        let now = Instant::now();
        if acknowledged || self.pending() == 0 {
            self.last_progress = now;
        }
        let waiting = now.duration_since(self.last_progress) >= UNHEALTHY_AFTER;
        if waiting != self.waiting_for_broker {
            self.waiting_for_broker = waiting;
            telemetry::healthy(self.name, !waiting);
            if waiting {
                tracing::warn!(
                    stage = self.name,
                    in_flight = self.inflight.len(),
                    queued = self.backlog.len(),
                    "deliveries have waited {UNHEALTHY_AFTER:?} for the broker; the stage keeps them and retries, and stops reading while its queue is full"
                );
            } else {
                tracing::info!(
                    stage = self.name,
                    "deliveries resumed; the stage is healthy again"
                );
            }
        }
    }
}

fn try_send(producer: &StageProducer, out: &Outgoing<'_>) -> Result<DeliveryFuture, KafkaError> {
    let mut record = FutureRecord::<[u8], [u8]>::to(out.topic);
    if let Some(p) = out.payload {
        record = record.payload(p);
    }
    if let Some(k) = out.key {
        record = record.key(k);
    }
    if let Some(p) = out.partition {
        record = record.partition(p);
    }
    producer.send_result(record).map_err(|(e, _)| e)
}
