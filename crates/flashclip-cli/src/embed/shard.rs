//! Which inputs a process embeds (`--shard K/N`) and how they are cut into output shards.
//!
//! Process `K` of `N` takes the inputs whose listing index `i` has `i % N == K`; its own inputs are numbered
//! `0, 1, 2, ...` (the local index, `(i - K) / N`) and output shard `s` holds local inputs
//! `s * shard_rows .. (s + 1) * shard_rows`. Boundaries depend on the listing only, never on which decode
//! finished first, so a resumed job rewrites exactly the shards an uninterrupted one would.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `--shard K/N`: this process's part of the inputs (`K` counts from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub index: u64,
    pub count: u64,
}

impl Partition {
    /// Every input (`0/1`).
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad shard {s:?}: expected K/N with 0 <= K < N, e.g. 0/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Partition { index, count })
    }
}

/// The shards of one process's inputs, and which of them an earlier run already wrote.
#[derive(Debug, Clone)]
pub struct Plan {
    local_total: u64,
    partition: Partition,
    shard_rows: u64,
    finished: BTreeSet<u64>,
}

impl Plan {
    /// `inputs` listed in all; `shard_rows` is at least 1.
    pub fn new(
        partition: Partition,
        inputs: u64,
        shard_rows: u64,
        finished: BTreeSet<u64>,
    ) -> Self {
        let local_total = inputs
            .saturating_sub(partition.index)
            .div_ceil(partition.count);
        Self {
            local_total,
            partition,
            shard_rows: shard_rows.max(1),
            finished,
        }
    }

    /// The local index of listing index `index`, if this process takes it.
    pub fn local(&self, index: u64) -> Option<u64> {
        (index % self.partition.count == self.partition.index)
            .then(|| (index - self.partition.index) / self.partition.count)
    }

    /// The number of inputs this process takes.
    pub fn local_total(&self) -> u64 {
        self.local_total
    }

    pub fn shard_count(&self) -> u64 {
        self.local_total.div_ceil(self.shard_rows)
    }

    pub fn shard_of(&self, local: u64) -> u64 {
        local / self.shard_rows
    }

    /// The local indices of shard `shard`.
    pub fn shard_range(&self, shard: u64) -> Range<u64> {
        let start = shard * self.shard_rows;
        start..start.saturating_add(self.shard_rows).min(self.local_total)
    }

    pub fn is_finished(&self, shard: u64) -> bool {
        self.finished.contains(&shard)
    }

    /// The first local index at or after `from` in a shard still to write (`local_total` when none is left).
    pub fn next_pending(&self, mut from: u64) -> u64 {
        while from < self.local_total && self.is_finished(self.shard_of(from)) {
            from = self.shard_range(self.shard_of(from)).end;
        }
        from.min(self.local_total)
    }

    /// The number of inputs in shards still to write.
    pub fn pending_inputs(&self) -> u64 {
        (0..self.shard_count())
            .filter(|&s| !self.is_finished(s))
            .map(|s| {
                let r = self.shard_range(s);
                r.end - r.start
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_every_input_once() {
        let total = 10;
        let mut seen = vec![0; total as usize];
        for k in 0..3 {
            let plan = Plan::new(Partition { index: k, count: 3 }, total, 2, BTreeSet::new());
            let mine: Vec<u64> = (0..total).filter(|&i| plan.local(i).is_some()).collect();
            assert_eq!(mine.len() as u64, plan.local_total());
            for (j, i) in mine.iter().enumerate() {
                assert_eq!(plan.local(*i), Some(j as u64));
                seen[*i as usize] += 1;
            }
        }
        assert_eq!(seen, vec![1; total as usize]);
        // More processes than inputs: the last ones get none.
        assert_eq!(
            Plan::new(Partition { index: 4, count: 5 }, 3, 2, BTreeSet::new()).local_total(),
            0
        );
    }

    #[test]
    fn shards_and_resume_skips() {
        let plan = Plan::new(Partition::WHOLE, 7, 3, BTreeSet::from([0, 2]));
        assert_eq!(plan.shard_count(), 3);
        assert_eq!(plan.shard_range(2), 6..7);
        assert_eq!(plan.next_pending(0), 3);
        assert_eq!(plan.next_pending(5), 5);
        assert_eq!(plan.next_pending(6), 7);
        assert_eq!(plan.pending_inputs(), 3);
    }

    #[test]
    fn parses_k_of_n() {
        assert_eq!("1/4".parse(), Ok(Partition { index: 1, count: 4 }));
        assert!("4/4".parse::<Partition>().is_err());
        assert!("0/0".parse::<Partition>().is_err());
        assert!("x".parse::<Partition>().is_err());
    }
}
