//! A queue's partitions as a backend holds them ([`Part`]: keys, and whether its Redis just
//! failed), the lease it holds on a fetched job ([`Lease`]: token and partition), and the
//! grouping of a batch's jobs by partition ([`by_part`]): every script call goes to one
//! partition (one slot).

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use uuid::Uuid;

use crate::queue::Queues;

/// One partition of the queue (the queue itself when it is not partitioned, see
/// `queue::partitions`): its keys, declared to every script ([`crate::queue::QUEUE_KEYS`]).
#[derive(Debug)]
pub(super) struct Part {
    /// Its position among the queue's partitions.
    pub(super) index: usize,
    pub(super) base: String,
    pub(super) keys: Vec<String>,
    /// Until when fetches pass it over (ms since the backend started) after its Redis failed
    /// to answer: a master failing over holds each call for seconds, and the other partitions
    /// are fetched meanwhile.
    pub(super) down_until: AtomicU64,
}

/// How long a partition whose fetch failed is passed over while others can be fetched.
pub(super) const PART_DOWN: Duration = Duration::from_secs(3);

impl Part {
    pub(super) fn new(queues: &Queues, queue: &str, index: usize) -> Self {
        let base = queues.base(&crate::queue::partition_name(queue, index));
        Self {
            index,
            keys: crate::queue::queue_keys(&base),
            base,
            down_until: AtomicU64::new(0),
        }
    }
}

/// A lease this process holds: the attempt's token and the partition of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lease {
    pub(super) token: u64,
    pub(super) part: usize,
}

pub(super) struct FetchedJob {
    pub(super) id: Uuid,
    pub(super) payload: String,
    pub(super) attempt: u32,
    pub(super) max_attempts: u32,
    pub(super) token: u64,
    pub(super) project: String,
    pub(super) request_id: String,
    pub(super) part: Arc<Part>,
}

impl FetchedJob {
    pub(super) fn lease(&self) -> Lease {
        Lease {
            token: self.token,
            part: self.part.index,
        }
    }
}

/// `items` grouped by partition (`part_of`), in the order each partition first appears.
pub(super) fn by_part<T: Copy>(items: &[T], part_of: impl Fn(&T) -> usize) -> Vec<(usize, Vec<T>)> {
    let mut groups: Vec<(usize, Vec<T>)> = Vec::new();
    for item in items {
        let part = part_of(item);
        match groups.iter_mut().find(|(p, _)| *p == part) {
            Some((_, g)) => g.push(*item),
            None => groups.push((part, vec![*item])),
        }
    }
    groups
}
