// A small seeded generator (SplitMix64) for percentage rolls: deterministic under a simulated
// clock, because the filter seeds it from the proxy's time and its context id.

/// SplitMix64: fast, tiny, and good enough for fault percentages.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    pub fn roll(&mut self, percent: f64) -> bool {
        if percent >= 100.0 {
            return true;
        }
        if percent <= 0.0 {
            return false;
        }
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) * 100.0 < percent
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rolls_hit_their_percentage() {
        let mut rng = Rng::new(42);
        let hits = (0..100_000).filter(|_| rng.roll(30.0)).count();
        assert!((29_000..31_000).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| rng.roll(100.0)) && !(0..1000).any(|_| rng.roll(0.0)));
    }
}
