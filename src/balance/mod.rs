//! Picking one endpoint for `/v1/pick`.
//!
//! Only the per-request pickers live here: the tiers they choose among are
//! index state, computed at merge time (`crate::index::topology`). This
//! module reads the index's types and never the other way round.
//!
//! - Without a key: smooth weighted round-robin (nginx's algorithm), one
//!   sequence per Service and port, restarted when the Service's revision
//!   changes. Over any window of `sum(weights)` picks each endpoint is chosen
//!   exactly `weight` times, evenly interleaved.
//! - With `key=`: weighted rendezvous hashing. Every key maps to the endpoint
//!   with the highest score `-weight / ln(hash(key, endpoint))`; when an
//!   endpoint leaves, only the keys it held move (about 1/N of them), and a
//!   weight-2 endpoint holds twice the keys of a weight-1 one.
//!
//! Weight 0 means "drain": such endpoints are picked only when every
//! candidate has weight 0.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::index::ServiceKey;

/// One candidate: its identity (for hashing) and weight.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub weight: u32,
}

fn effective_weights(candidates: &[Candidate<'_>]) -> Vec<i64> {
    if candidates.iter().all(|c| c.weight == 0) {
        vec![1; candidates.len()]
    } else {
        candidates.iter().map(|c| i64::from(c.weight)).collect()
    }
}

/// Smooth weighted round-robin state for one candidate list.
#[derive(Debug, Default)]
pub struct SmoothRoundRobin {
    current: Vec<i64>,
}

impl SmoothRoundRobin {
    pub fn next(&mut self, candidates: &[Candidate<'_>]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let weights = effective_weights(candidates);
        if self.current.len() != weights.len() {
            self.current = vec![0; weights.len()];
        }
        let total: i64 = weights.iter().sum();
        let mut best = 0;
        for (i, weight) in weights.iter().enumerate() {
            self.current[i] += weight;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Some(best)
    }
}

/// A stable 64-bit hash (FNV-1a, then a splitmix64 finaliser for
/// avalanche), so every agent maps a key to the same endpoint.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Weighted rendezvous hashing: the candidate `key` belongs to.
pub fn pick_by_key(candidates: &[Candidate<'_>], key: &str) -> Option<usize> {
    let weights = effective_weights(candidates);
    let mut best: Option<(usize, f64)> = None;
    for (i, candidate) in candidates.iter().enumerate() {
        if weights[i] == 0 {
            continue;
        }
        let hash = stable_hash(&[key.as_bytes(), candidate.id.as_bytes()]);
        // Map to (0, 1): never 0, never 1, so ln() is finite and negative.
        let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -(weights[i] as f64) / unit.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// Weighted random: each candidate with probability weight / total.
pub fn pick_weighted_random(
    candidates: &[Candidate<'_>],
    rng: &mut impl rand::Rng,
) -> Option<usize> {
    let weights = effective_weights(candidates);
    let total: i64 = weights.iter().sum();
    if total <= 0 {
        return None;
    }
    let mut point = rng.random_range(0..total);
    for (i, weight) in weights.iter().enumerate() {
        if point < *weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

/// Round-robin sequences per Service and port.
#[derive(Default)]
pub struct Pickers {
    sequences: Mutex<HashMap<(ServiceKey, String), (u64, SmoothRoundRobin)>>,
}

impl Pickers {
    /// The next endpoint of the round-robin for this Service and port. The
    /// sequence restarts when `revision` changes (the candidates did).
    pub fn round_robin(
        &self,
        key: &ServiceKey,
        port: &str,
        revision: u64,
        candidates: &[Candidate<'_>],
    ) -> Option<usize> {
        let mut sequences = self.sequences.lock().unwrap_or_else(|e| e.into_inner());
        // Bound the map: Services come and go, their sequences need not stay.
        if sequences.len() > 100_000 {
            sequences.clear();
        }
        let entry = sequences
            .entry((key.clone(), port.to_string()))
            .or_insert_with(|| (revision, SmoothRoundRobin::default()));
        if entry.0 != revision {
            *entry = (revision, SmoothRoundRobin::default());
        }
        entry.1.next(candidates)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn candidates(weights: &[u32]) -> (Vec<String>, Vec<u32>) {
        let ids = (0..weights.len())
            .map(|i| format!("10.0.0.{i}:80"))
            .collect();
        (ids, weights.to_vec())
    }

    fn as_candidates<'a>(ids: &'a [String], weights: &[u32]) -> Vec<Candidate<'a>> {
        ids.iter()
            .zip(weights)
            .map(|(id, &weight)| Candidate { id, weight })
            .collect()
    }

    #[test]
    fn smooth_round_robin_is_exact_and_interleaved() {
        let (ids, weights) = candidates(&[5, 1, 1]);
        let list = as_candidates(&ids, &weights);
        let mut rr = SmoothRoundRobin::default();
        let picks: Vec<usize> = (0..7).map(|_| rr.next(&list).unwrap()).collect();
        // nginx's documented sequence for weights 5,1,1.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weight_is_picked_only_when_all_are_zero() {
        let (ids, weights) = candidates(&[0, 3]);
        let list = as_candidates(&ids, &weights);
        let mut rr = SmoothRoundRobin::default();
        assert!((0..10).all(|_| rr.next(&list) == Some(1)));
        assert!((0..100).all(|k| pick_by_key(&list, &k.to_string()) == Some(1)));
        let (ids, weights) = candidates(&[0, 0]);
        let list = as_candidates(&ids, &weights);
        let picks: Vec<_> = (0..4).map(|_| rr.next(&list).unwrap()).collect();
        assert!(picks.contains(&0) && picks.contains(&1));
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_removed_endpoint() {
        let (ids, weights) = candidates(&[1; 10]);
        let all = as_candidates(&ids, &weights);
        let fewer = as_candidates(&ids[1..], &weights[1..]);
        let keys: Vec<String> = (0..10_000).map(|k| format!("user-{k}")).collect();
        let mut moved = 0;
        for key in &keys {
            let before = ids[pick_by_key(&all, key).unwrap()].clone();
            let after = ids[1..][pick_by_key(&fewer, key).unwrap()].clone();
            if before != after {
                assert_eq!(before, ids[0], "a key moved off a remaining endpoint");
                moved += 1;
            }
        }
        // About 1/10 of the keys lived on the removed endpoint.
        assert!((800..1200).contains(&moved), "moved {moved}");
    }

    /// Pearson's chi-square statistic of observed counts against expected
    /// shares; with k-1 = 3 degrees of freedom the p = 0.001 critical value
    /// is 16.27.
    fn chi_square(counts: &[u64], weights: &[u32]) -> f64 {
        let n: u64 = counts.iter().sum();
        let total: u32 = weights.iter().sum();
        counts
            .iter()
            .zip(weights)
            .map(|(&observed, &w)| {
                let expected = n as f64 * f64::from(w) / f64::from(total);
                (observed as f64 - expected).powi(2) / expected
            })
            .sum()
    }

    const CHI_SQUARE_3DF_P001: f64 = 16.27;

    #[test]
    fn every_picker_matches_the_weights_over_100k_picks() {
        let weights = [1, 2, 3, 10];
        let (ids, w) = candidates(&weights);
        let list = as_candidates(&ids, &w);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut random = [0u64; 4];
        let mut rr = SmoothRoundRobin::default();
        let mut smooth = [0u64; 4];
        let mut hashed = [0u64; 4];
        for k in 0..100_000 {
            random[pick_weighted_random(&list, &mut rng).unwrap()] += 1;
            smooth[rr.next(&list).unwrap()] += 1;
            hashed[pick_by_key(&list, &format!("key-{k}")).unwrap()] += 1;
        }
        for (name, counts) in [("random", random), ("smooth", smooth), ("hash", hashed)] {
            let statistic = chi_square(&counts, &weights);
            assert!(
                statistic < CHI_SQUARE_3DF_P001,
                "{name}: chi2 {statistic} {counts:?}"
            );
        }
        // Smooth WRR is exact, not just statistically right.
        assert_eq!(smooth, [6250, 12500, 18750, 62500]);
    }

    #[test]
    fn rendezvous_honours_weights() {
        let (ids, weights) = candidates(&[1, 3]);
        let list = as_candidates(&ids, &weights);
        let heavy = (0..20_000)
            .filter(|k| pick_by_key(&list, &format!("k{k}")) == Some(1))
            .count();
        let share = heavy as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "share {share}");
    }
}
