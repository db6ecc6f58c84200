//! The wrappers' seeded generator: SplitMix64 (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014; the constants of Vigna's reference
//! `splitmix64.c`). A specified algorithm, so that a seed draws the same faults with any
//! later build; pinned against the reference outputs below.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output is the reference's first output for `seed`.
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number from `lo` to `hi`, both included (`lo` when `hi <= lo`). Multiply-shift
    /// (Lemire): the bias is below 2^-32 for the small ranges the wrappers draw.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        let wide = u128::from(self.next_u64()) * u128::from(span + 1);
        lo + (wide >> 64) as u64
    }

    /// True with probability `p` (never for `p <= 0`, always for `p >= 1`).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits: a uniform double in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_outputs() {
        // splitmix64.c with x = 0, and with x = 1234567 (the values quoted with the
        // reference implementation and in the xoshiro test suites).
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(g.next_u64(), 0x06C4_5D18_8009_454F);
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(g.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn between_stays_in_range_and_reaches_both_ends() {
        let mut g = SplitMix64::new(7);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let v = g.between(3, 6);
            assert!((3..=6).contains(&v));
            seen[(v - 3) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
        assert_eq!(g.between(5, 5), 5);
        assert_eq!(g.between(9, 2), 9);
    }

    #[test]
    fn chance_is_near_its_probability() {
        let mut g = SplitMix64::new(99);
        let hits = (0..100_000).filter(|_| g.chance(0.25)).count();
        assert!((24_000..=26_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| g.chance(0.0)));
        assert!((0..1000).all(|_| g.chance(1.0)));
    }
}
