//! A tiny deterministic PRNG, so workloads need no `rand` dependency and
//! produce the same request sequence (and checksum) under every allocator.

/// xorshift64* generator. Not cryptographic; fast and reproducible per seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Creates a generator; `seed` is scrambled first so that consecutive
    /// seeds (thread 0, thread 1, ...) give unrelated streams.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // xorshift has a fixed point at zero.
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift rather than modulo.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A precomputed size distribution: sampling is one table lookup, so drawing
/// a size costs the same whatever the distribution's formula.
#[derive(Clone, Debug)]
pub struct SizeTable(Vec<usize>);

impl SizeTable {
    const ENTRIES: usize = 4096;

    /// Sizes whose logarithm is uniform in `[ln lo, ln hi]`: most requests
    /// small, a long tail of large ones (rpmalloc-style "realistic" mix).
    pub fn log_uniform(lo: usize, hi: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        SizeTable(
            (0..Self::ENTRIES)
                .map(|_| ((l + (h - l) * rng.unit()).exp() as usize).clamp(lo, hi))
                .collect(),
        )
    }

    /// Pareto-distributed sizes `min / u^(1/alpha)`, capped at `max`.
    pub fn pareto(min: usize, max: usize, alpha: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        SizeTable(
            (0..Self::ENTRIES)
                .map(|_| {
                    let u = 1.0 - rng.unit(); // (0, 1]
                    ((min as f64 / u.powf(1.0 / alpha)) as usize).clamp(min, max)
                })
                .collect(),
        )
    }

    /// Picks a size.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> usize {
        self.0[rng.below(self.0.len())]
    }

    /// Mean of the table (for tests and sanity checks).
    pub fn mean(&self) -> f64 {
        self.0.iter().sum::<usize>() as f64 / self.0.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn distributions_are_skewed_small() {
        let p = SizeTable::pareto(8, 1024, 1.0, 1);
        assert!(p.mean() > 8.0 && p.mean() < 128.0, "{}", p.mean());
        let l = SizeTable::log_uniform(16, 16000, 2);
        assert!(l.mean() > 16.0 && l.mean() < 4000.0, "{}", l.mean());
    }
}
