//! The spread of the call-latency figures (Version and the Lists): min, p50,
//! p90 and max of every side, and a List's cost per item. A p50 alone hid why
//! two runs differed; the min shows what the call costs without noise, the
//! p90 how much the noise added.

use super::report::{Metric, num};
use super::samples::Series;

/// Metrics shown in the spread section: the ones with many calls each.
const KEYS: [&str; 4] = ["rpc_version", "list_containers", "list_pods", "list_stats"];

const US_PER_MS: f64 = 1000.0;

/// The section's rows, a header first; `None` when none of its metrics ran.
pub fn rows(metrics: &[Metric]) -> Option<Vec<[String; 8]>> {
    let mut rows = vec![
        [
            "CALL",
            "SIDE",
            "MIN ms",
            "p50 ms",
            "p90 ms",
            "MAX ms",
            "CALLS",
            "p50 us/ITEM",
        ]
        .map(String::from),
    ];
    for m in metrics.iter().filter(|m| KEYS.contains(&m.key)) {
        for (side, series) in [("berth", &m.berth), ("containerd", &m.containerd)] {
            if let Some(row) = row(m, side, series) {
                rows.push(row);
            }
        }
    }
    (rows.len() > 1).then_some(rows)
}

fn row(m: &Metric, side: &str, series: &Series) -> Option<[String; 8]> {
    let s = series.summary()?;
    let per_item = m
        .items
        .filter(|&n| n > 0)
        .map(|n| num(s.p50 * US_PER_MS / n as f64))
        .unwrap_or_else(|| "-".into());
    Some([
        m.title.clone(),
        side.to_string(),
        num(s.min),
        num(s.p50),
        num(s.p90),
        num(s.max),
        s.n.to_string(),
        per_item,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Unit;

    #[test]
    fn lists_show_their_spread_and_cost_per_item() {
        let mut m = Metric::new("list_pods", "ListPodSandbox, 50 pods", Unit::Ms).items(50);
        for v in [0.1, 0.05, 0.2, 0.06] {
            m.berth.push(v);
        }
        let rows = rows(&[m]).unwrap();
        assert_eq!(rows.len(), 2, "containerd measured nothing: no row");
        assert_eq!(rows[1][2], "0.050");
        assert_eq!(rows[1][5], "0.20");
        // p50 0.08 ms over 50 pods: 1.6 us each.
        assert_eq!(rows[1][7], "1.60");
        let other = Metric::new("pod_start", "RunPodSandbox", Unit::Ms);
        assert!(super::rows(&[other]).is_none());
    }
}
