//! A DDSketch (Masson, Rim & Lee, VLDB 2019) with 1 % relative accuracy: quantile estimates are
//! within 1 % of the exact order statistic, for positive, negative and zero values.
//!
//! A value `x > 0` lands in bucket `i = ceil(ln x / ln γ)` with `γ = (1 + α) / (1 − α)`; the
//! bucket stands for `2γ^i / (γ + 1)`, which is within `α` of every value in `(γ^(i−1), γ^i]`.
//! Negative values use a second store on `|x|`, zero has its own count. Each store keeps at most
//! `MAX_BINS` contiguous buckets; beyond that the buckets of the smallest magnitudes are merged
//! (the range before collapsing spans a ratio of about 10^18, so real data rarely gets there).
//! Written in-house (not `sketches-ddsketch`) so the serialised form is ours and stays stable.

use serde::{Deserialize, Serialize};

/// Relative accuracy of every quantile estimate.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Most buckets per sign; memory is at most `2 × MAX_BINS × 8` bytes.
pub const MAX_BINS: usize = 2048;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// A mergeable quantile sketch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    positive: Store,
    negative: Store,
    zero: u64,
    count: u64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Sketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value; non-finite values are ignored (they are refused at ingest).
    pub fn add(&mut self, value: f64) {
        debug_assert!(value.is_finite(), "non-finite value reached the sketch");
        if !value.is_finite() {
            return;
        }
        if value > 0.0 {
            self.positive.add(index_of(value), 1);
        } else if value < 0.0 {
            self.negative.add(index_of(-value), 1);
        } else {
            self.zero += 1;
        }
        self.count += 1;
        self.min = Some(self.min.map_or(value, |min| min.min(value)));
        self.max = Some(self.max.map_or(value, |max| max.max(value)));
    }

    /// Adds every value of `other` to this sketch.
    pub fn merge(&mut self, other: &Sketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero += other.zero;
        self.count += other.count;
        for value in [other.min, other.max].into_iter().flatten() {
            self.min = Some(self.min.map_or(value, |min| min.min(value)));
            self.max = Some(self.max.map_or(value, |max| max.max(value)));
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The estimated `q`-quantile (`0 ≤ q ≤ 1`): the value of rank `floor(q × (count − 1))` in
    /// sorted order, within 1 %. `None` when empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let (min, max) = (self.min?, self.max?);
        let estimate = self.value_at_rank(rank);
        Some(estimate.clamp(min, max))
    }

    fn value_at_rank(&self, rank: u64) -> f64 {
        let mut seen = 0u64;
        // Most negative first: the highest magnitude bucket of the negative store.
        for (index, count) in self.negative.buckets().rev() {
            seen += count;
            if seen > rank {
                return -value_of(index);
            }
        }
        seen += self.zero;
        if seen > rank {
            return 0.0;
        }
        for (index, count) in self.positive.buckets() {
            seen += count;
            if seen > rank {
                return value_of(index);
            }
        }
        debug_assert!(false, "rank {rank} beyond count {}", self.count);
        self.max.unwrap_or(0.0)
    }
}

fn index_of(magnitude: f64) -> i32 {
    (magnitude.ln() / gamma().ln()).ceil() as i32
}

fn value_of(index: i32) -> f64 {
    let gamma = gamma();
    2.0 * (f64::from(index) * gamma.ln()).exp() / (gamma + 1.0)
}

/// Contiguous bucket counts: `bins[i]` counts bucket `offset + i`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Store {
    offset: i32,
    bins: Vec<u64>,
}

impl Store {
    fn add(&mut self, index: i32, count: u64) {
        if self.bins.is_empty() {
            self.offset = index;
            self.bins.push(count);
            return;
        }
        let top = self.offset + self.bins.len() as i32 - 1;
        let mut index = index;
        if index < self.offset {
            // Below the range: grow downwards, but never past MAX_BINS (collapse into the lowest).
            let floor = top - MAX_BINS as i32 + 1;
            index = index.max(floor);
            let grow = (self.offset - index) as usize;
            self.bins.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        } else if index > top {
            self.bins
                .extend(std::iter::repeat_n(0, (index - top) as usize));
            if self.bins.len() > MAX_BINS {
                let excess = self.bins.len() - MAX_BINS;
                let folded: u64 = self.bins.drain(..excess).sum();
                self.bins[0] += folded;
                self.offset += excess as i32;
            }
        }
        let slot = (index - self.offset) as usize;
        self.bins[slot] += count;
    }

    fn merge(&mut self, other: &Store) {
        for (index, count) in other.buckets() {
            self.add(index, count);
        }
    }

    /// Non-empty buckets in ascending index order.
    fn buckets(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(i, count)| (self.offset + i as i32, *count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const QUANTILES: [f64; 5] = [0.5, 0.9, 0.95, 0.99, 0.999];

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    fn assert_within(estimate: f64, exact: f64, q: f64) {
        let tolerance = RELATIVE_ACCURACY * exact.abs() * (1.0 + 1e-9);
        assert!(
            (estimate - exact).abs() <= tolerance,
            "q={q}: estimate {estimate} vs exact {exact}"
        );
    }

    fn sample(distribution: u8, rng: &mut StdRng) -> f64 {
        match distribution {
            // Uniform latencies in milliseconds.
            0 => rng.random_range(0.0..2_000.0),
            // Log-uniform over nine decades.
            1 => 10f64.powf(rng.random_range(-3.0..6.0)),
            // Both signs with a lump of zeros.
            2 => match rng.random_range(0..10) {
                0 => 0.0,
                1..5 => -10f64.powf(rng.random_range(-2.0..4.0)),
                _ => 10f64.powf(rng.random_range(-2.0..4.0)),
            },
            // Heavy tail (Pareto, shape 1.2).
            _ => 1.0 / (1.0 - rng.random::<f64>()).powf(1.0 / 1.2),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn quantiles_within_one_percent_of_exact(seed in any::<u64>(), distribution in 0u8..4) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut values: Vec<f64> = (0..100_000).map(|_| sample(distribution, &mut rng)).collect();
            let mut sketch = Sketch::new();
            for value in &values {
                sketch.add(*value);
            }
            values.sort_by(f64::total_cmp);
            for q in QUANTILES {
                assert_within(sketch.quantile(q).unwrap(), exact(&values, q), q);
            }
            prop_assert_eq!(sketch.count(), 100_000);
        }
    }

    #[test]
    fn merge_equals_adding_everything_to_one_sketch() {
        let mut rng = StdRng::seed_from_u64(7);
        let values: Vec<f64> = (0..20_000).map(|_| sample(2, &mut rng)).collect();
        let (left, right) = values.split_at(7_000);
        let mut whole = Sketch::new();
        values.iter().for_each(|v| whole.add(*v));
        let mut a = Sketch::new();
        left.iter().for_each(|v| a.add(*v));
        let mut b = Sketch::new();
        right.iter().for_each(|v| b.add(*v));
        a.merge(&b);
        for q in [0.0, 0.25, 0.5, 0.75, 0.99, 1.0] {
            assert_eq!(a.quantile(q), whole.quantile(q));
        }
        assert_eq!(a.count(), whole.count());
    }

    #[test]
    fn small_samples_zero_and_extremes() {
        let mut sketch = Sketch::new();
        assert_eq!(sketch.quantile(0.5), None);
        for value in [100.0, 50.0, 300.0] {
            sketch.add(value);
        }
        assert_within(sketch.quantile(0.5).unwrap(), 100.0, 0.5);
        assert_eq!(sketch.quantile(0.0), Some(50.0));
        assert_eq!(sketch.quantile(1.0), Some(300.0));
        assert_eq!(sketch.quantile(1.5), None);

        let mut zeros = Sketch::new();
        (0..10).for_each(|_| zeros.add(0.0));
        assert_eq!(zeros.quantile(0.99), Some(0.0));
    }

    #[test]
    fn collapses_the_smallest_magnitudes_beyond_max_bins() {
        let mut sketch = Sketch::new();
        for exponent in -300..=300 {
            sketch.add(10f64.powi(exponent));
        }
        assert!(sketch.positive.bins.len() <= MAX_BINS);
        assert_within(sketch.quantile(1.0).unwrap(), 1e300, 1.0);
        assert_within(sketch.quantile(0.99).unwrap(), 1e294, 0.99);
    }

    #[test]
    fn serde_round_trip() {
        let mut sketch = Sketch::new();
        for value in [-3.5, 0.0, 1.0, 2.0, 1e6] {
            sketch.add(value);
        }
        let json = serde_json::to_string(&sketch).unwrap();
        let back: Sketch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sketch);
    }
}
