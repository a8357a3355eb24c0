//! Samples of one measurement and their summary. Percentiles interpolate linearly
//! between the two nearest ranks, as numpy's default does, so a p90 of three pull
//! runs lies between the second and the third rather than being the maximum.

use std::time::Duration;

/// Values of one measurement on one side (berth, containerd or a floor), in the
/// metric's unit, or why there are none.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub values: Vec<f64>,
    /// Set when the side could not be measured (an RPC failed, a call is not
    /// implemented); what was measured before the failure is kept.
    pub error: Option<String>,
}

impl Series {
    pub fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    pub fn fail(&mut self, error: impl Into<String>) {
        self.error.get_or_insert_with(|| error.into());
    }

    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.values)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub p50: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            p50: percentile(&sorted, 0.5),
            p90: percentile(&sorted, 0.9),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            n: sorted.len(),
        })
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.p50, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert!((s.p90 - 2.8).abs() < 1e-9);
        let s = Summary::of(&(1..=10).map(f64::from).collect::<Vec<_>>()).unwrap();
        assert!((s.p50 - 5.5).abs() < 1e-9);
        assert!((s.p90 - 9.1).abs() < 1e-9);
    }

    #[test]
    fn one_value_is_every_percentile_and_none_is_none() {
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.p50, s.p90), (7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
    }
}
