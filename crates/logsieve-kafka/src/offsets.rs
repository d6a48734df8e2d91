//! Which input offsets are safe to store: a record's offset may be stored
//! only once its output (or dead-letter) record has been acknowledged by the
//! broker, and then only if every earlier record of its partition has been
//! too. Acknowledgements may come out of order across partitions (and, if
//! the producer is configured without idempotence, within one); the
//! tracker keeps each partition's records in flight in offset order and
//! releases the longest acknowledged prefix.

use std::collections::{HashMap, VecDeque};

/// A partition of an input topic: the topic's index in the subscription and
/// the partition number.
pub type PartitionKey = (u32, i32);

/// What the producer's delivery callback carries back for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub topic: u32,
    pub partition: i32,
    pub offset: i64,
    /// The partition's assignment generation when the record was sent: an
    /// acknowledgement from before a revoke is not applied to records of a
    /// later assignment of the same partition.
    pub generation: u64,
}

#[derive(Debug, Default)]
struct Partition {
    generation: u64,
    /// Offsets in flight, ascending, each with whether it has been acknowledged.
    in_flight: VecDeque<(i64, bool)>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    parts: HashMap<PartitionKey, Partition>,
    in_flight: usize,
}

impl Tracker {
    /// Records sent and not yet released.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The generation records of `key` are sent with now.
    pub fn generation(&self, key: PartitionKey) -> u64 {
        self.parts.get(&key).map_or(0, |p| p.generation)
    }

    /// A record is about to be produced. Offsets of a partition must come in
    /// ascending order (as the consumer delivers them).
    pub fn sent(&mut self, key: PartitionKey, offset: i64) -> Ack {
        let p = self.parts.entry(key).or_default();
        debug_assert!(p.in_flight.back().is_none_or(|(o, _)| *o < offset));
        p.in_flight.push_back((offset, false));
        self.in_flight += 1;
        Ack {
            topic: key.0,
            partition: key.1,
            offset,
            generation: p.generation,
        }
    }

    /// The broker acknowledged a record: the offset to store for its
    /// partition (one past the last record of the acknowledged prefix), if
    /// the prefix grew.
    pub fn acked(&mut self, ack: Ack) -> Option<i64> {
        let p = self.parts.get_mut(&(ack.topic, ack.partition))?;
        if p.generation != ack.generation {
            return None;
        }
        let i = p.in_flight.binary_search_by_key(&ack.offset, |(o, _)| *o).ok()?;
        p.in_flight[i].1 = true;
        let mut next = None;
        while let Some(&(o, true)) = p.in_flight.front() {
            p.in_flight.pop_front();
            self.in_flight -= 1;
            next = Some(o + 1);
        }
        next
    }

    /// The partition was revoked: what is still in flight for it is
    /// forgotten (its records will be consumed again by the next owner),
    /// and later acknowledgements of them are ignored. Returns how many.
    pub fn revoke(&mut self, key: PartitionKey) -> usize {
        let Some(p) = self.parts.get_mut(&key) else {
            return 0;
        };
        let n = p.in_flight.len();
        p.in_flight.clear();
        p.generation += 1;
        self.in_flight -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_acknowledged_prefix_is_released() {
        let mut t = Tracker::default();
        let a: Vec<Ack> = (10..14).map(|o| t.sent((0, 1), o)).collect();
        let b = t.sent((0, 2), 5);
        assert_eq!(t.in_flight(), 5);
        // 12 before 10 and 11: nothing may be stored yet.
        assert_eq!(t.acked(a[2]), None);
        assert_eq!(t.acked(b), Some(6));
        assert_eq!(t.acked(a[0]), Some(11));
        // 11 completes the prefix through 12.
        assert_eq!(t.acked(a[1]), Some(13));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.acked(a[3]), Some(14));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn acknowledgements_from_before_a_revoke_are_ignored() {
        let mut t = Tracker::default();
        let old = t.sent((0, 0), 7);
        assert_eq!(t.revoke((0, 0)), 1);
        assert_eq!(t.in_flight(), 0);
        // Assigned again, the partition restarts at the committed offset 7.
        let new = t.sent((0, 0), 7);
        assert_eq!(t.acked(old), None, "a stale ack must not release the new record");
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.acked(new), Some(8));
    }
}
