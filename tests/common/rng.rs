//! The randomised tests' generator, shared with the bench's crash loop: see
//! [`berth_testkit::rng`].

pub use berth_testkit::rng::{Rng, seed};
