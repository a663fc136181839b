//! A small seeded PRNG (SplitMix64) and deterministic train/dev/test splitting.
//!
//! The generator is fully specified here (no external crate), so a split is reproducible
//! from `(n, fractions, seed)` alone on every platform and crate version.

/// SplitMix64 (Steele, Lea & Flood 2014): a 64-bit state advanced by a Weyl increment and
/// finalised with a variant of the MurmurHash3 mixer. Not cryptographic; good enough for
/// shuffling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Creates a generator from a seed (any value, including 0, is fine).
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform float in `[0, 1)` built from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box-Muller on two uniforms), as `f32`: the initialiser of new
    /// weights (classification heads, ApproxNet projections, ViT patches).
    pub fn next_normal(&mut self) -> f32 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Uniform integer in `0..bound` without modulo bias (rejection sampling).
    /// Returns 0 when `bound` is 0.
    pub fn next_below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Largest multiple of `bound` that fits; values at or above it are rejected.
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % bound;
            }
        }
    }

    /// Fisher–Yates shuffle (from the back: for `i = len-1 ..= 1` swap `i` with a uniform
    /// `j` in `0..=i`).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.next_below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Part sizes for `n` items and fractions `[train, dev, test]`: `train = round(n·f0)`,
/// `dev = round(n·f1)` (clamped so the total never exceeds `n`), `test` = the remainder.
/// With `n = 12752` and `[0.8, 0.1, 0.1]` this gives `10202 / 1275 / 1275`.
///
/// # Panics
/// If a fraction is negative or not finite, or `f0 + f1 > 1 + 1e-9` (programming errors:
/// fractions are constants, not user data).
pub fn split_sizes(n: usize, fractions: [f64; 3]) -> [usize; 3] {
    assert!(fractions.iter().all(|f| f.is_finite() && *f >= 0.0), "split fractions must be finite and non-negative, got {fractions:?}");
    assert!(fractions[0] + fractions[1] <= 1.0 + 1e-9, "train + dev fractions exceed 1: {fractions:?}");
    let train = ((n as f64 * fractions[0]).round() as usize).min(n);
    let dev = ((n as f64 * fractions[1]).round() as usize).min(n - train);
    [train, dev, n - train - dev]
}

/// Splits the indices `0..n` into train/dev/test: the indices are shuffled with
/// [`SplitMix64::new(seed)`](SplitMix64::new) and cut into consecutive parts of
/// [`split_sizes`]. Each part keeps the shuffled order. The three parts are disjoint and
/// together cover `0..n`.
///
/// # Panics
/// As [`split_sizes`].
pub fn split_three(n: usize, fractions: [f64; 3], seed: u64) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let [train, dev, _test] = split_sizes(n, fractions);
    let mut idx: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed).shuffle(&mut idx);
    let test_part = idx.split_off(train + dev);
    let dev_part = idx.split_off(train);
    (idx, dev_part, test_part)
}
