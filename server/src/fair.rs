//! A fair queue: jobs wait in one FIFO lane per key (a connection), and are taken round-robin
//! across keys, at most `max_running` of one key at a time. One key with a thousand jobs queued
//! delays another key's next job by at most one job per key ahead of it, not by a thousand.
//! Pure: no threads or clocks; the reader pool wraps it in a mutex.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

struct Lane<J> {
    jobs: VecDeque<J>,
    running: usize,
    /// In `ready` (once at most).
    ready: bool,
}

/// Per-key FIFO lanes served round-robin.
pub struct FairQueue<K, J> {
    lanes: HashMap<K, Lane<J>>,
    /// Keys with a job queued and fewer than `max_running` running, in turn order.
    ready: VecDeque<K>,
    max_running: usize,
}

impl<K: Hash + Eq + Clone, J> FairQueue<K, J> {
    pub fn new(max_running: usize) -> Self {
        FairQueue { lanes: HashMap::new(), ready: VecDeque::new(), max_running: max_running.max(1) }
    }

    /// Jobs queued (not running).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lanes.values().map(|l| l.jobs.len()).sum()
    }

    /// Queues a job at the end of its key's lane.
    pub fn push(&mut self, key: K, job: J) {
        let lane = self.lanes.entry(key.clone()).or_insert_with(|| Lane { jobs: VecDeque::new(), running: 0, ready: false });
        lane.jobs.push_back(job);
        if !lane.ready && lane.running < self.max_running {
            lane.ready = true;
            self.ready.push_back(key);
        }
    }

    /// The next job to run: the oldest of the key whose turn it is. Call [`FairQueue::done`]
    /// with its key when it has run.
    pub fn pop(&mut self) -> Option<(K, J)> {
        let key = self.ready.pop_front()?;
        let lane = self.lanes.get_mut(&key).expect("a ready key has a lane");
        lane.ready = false;
        let job = lane.jobs.pop_front().expect("a ready lane has a job");
        lane.running += 1;
        if !lane.jobs.is_empty() && lane.running < self.max_running {
            lane.ready = true;
            self.ready.push_back(key.clone());
        }
        Some((key, job))
    }

    /// A job of `key` has run.
    pub fn done(&mut self, key: &K) {
        let Some(lane) = self.lanes.get_mut(key) else { return };
        lane.running = lane.running.saturating_sub(1);
        if lane.jobs.is_empty() {
            if lane.running == 0 {
                self.lanes.remove(key);
            }
        } else if !lane.ready && lane.running < self.max_running {
            lane.ready = true;
            self.ready.push_back(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_take_turns_and_each_lane_keeps_its_order() {
        let mut q = FairQueue::new(1);
        for i in 0..100 {
            q.push("heavy", i);
        }
        q.push("light", 1000);
        q.push("light", 1001);
        assert_eq!(q.len(), 102);
        let (k, j) = q.pop().unwrap();
        assert_eq!((k, j), ("heavy", 0));
        // At most one of a key runs: the light key is next even before heavy's first is done.
        assert_eq!(q.pop(), Some(("light", 1000)));
        assert_eq!(q.pop(), None, "both keys are running their one job");
        q.done(&"heavy");
        q.done(&"light");
        let order: Vec<_> = std::iter::from_fn(|| {
            let (k, j) = q.pop()?;
            q.done(&k);
            Some((k, j))
        })
        .take(4)
        .collect();
        assert_eq!(order, vec![("heavy", 1), ("light", 1001), ("heavy", 2), ("heavy", 3)]);
    }

    #[test]
    fn several_running_per_key_when_allowed() {
        let mut q = FairQueue::new(2);
        for i in 0..3 {
            q.push(1, i);
        }
        assert_eq!(q.pop(), Some((1, 0)));
        assert_eq!(q.pop(), Some((1, 1)));
        assert_eq!(q.pop(), None);
        q.done(&1);
        assert_eq!(q.pop(), Some((1, 2)));
        q.done(&1);
        q.done(&1);
        assert!(q.lanes.is_empty(), "an idle key leaves nothing behind");
        assert_eq!(q.len(), 0);
    }

    /// A newcomer waits for at most one job per key already waiting, however deep their lanes.
    #[test]
    fn a_newcomer_waits_one_turn_per_key() {
        let mut q = FairQueue::new(1);
        for key in 0..10 {
            for i in 0..1_000 {
                q.push(key, i);
            }
        }
        q.push(99, 0);
        let mut before = 0;
        loop {
            let (k, _) = q.pop().unwrap();
            q.done(&k);
            if k == 99 {
                break;
            }
            before += 1;
        }
        assert_eq!(before, 10);
    }
}
