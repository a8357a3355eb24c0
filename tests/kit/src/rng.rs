//! A deterministic generator for the randomised tests (faults, races, fuzzing)
//! and the bench's crash loop, which must draw the same sequence as
//! tests/faults.rs: xorshift64*, no dependency, replayable from the printed seed.

/// xorshift64*: the same sequence for the same seed.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next draw. Not an `Iterator`: the sequence never ends, and callers
    /// mix draws with `below` and `pick` on the same state.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `items`, or `None` (drawing nothing) when there are none.
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())].clone())
    }
}

/// The seed in environment variable `var`, or one from the clock; printed, so a
/// failing run can be replayed with `var=<seed>`.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed} ({var}={seed} replays it)");
    seed
}
