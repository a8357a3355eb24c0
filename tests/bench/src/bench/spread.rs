//! The spread of the call-latency figures (Version and the Lists): min, p50,
//! p90 and max of every side, and a List's cost per item. A p50 alone hid why
//! two runs differed; the min shows what the call costs without noise, the
//! p90 how much the noise added. The cost per item is how much the List's
//! p50 exceeds the same side's p50 of the List narrowed to one item, over the
//! items beyond that one.

use super::report::{Metric, Side, num, one_item};
use super::samples::Series;

/// Metrics shown in the spread section: the ones with many calls each.
const KEYS: [&str; 8] = [
    "rpc_version",
    "list_containers",
    "list_containers_one",
    "list_containers_decode",
    "list_pods",
    "list_pods_one",
    "list_pods_decode",
    "list_stats",
];

/// The section's rows, a header first; `None` when none of its metrics ran.
pub fn rows(metrics: &[Metric]) -> Option<Vec<[String; 8]>> {
    let mut rows = vec![
        [
            "CALL", "SIDE", "MIN ms", "p50 ms", "p90 ms", "MAX ms", "CALLS", "us/ITEM",
        ]
        .map(String::from),
    ];
    for m in metrics.iter().filter(|m| KEYS.contains(&m.key)) {
        for (side, name, series) in [
            (Side::Berth, "berth", &m.berth),
            (Side::Containerd, "containerd", &m.containerd),
            (Side::Floor, "floor", &m.floor),
        ] {
            if let Some(row) = row(m, name, series, one_item(metrics, m, side)) {
                rows.push(row);
            }
        }
    }
    (rows.len() > 1).then_some(rows)
}

fn row(m: &Metric, side: &str, series: &Series, one: Option<f64>) -> Option<[String; 8]> {
    let s = series.summary()?;
    let per_item = m
        .per_item_us(series, one)
        .map(num)
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
        let mut one = Metric::new("list_pods_one", "one pod", Unit::Ms);
        for v in [0.02, 0.03] {
            one.berth.push(v);
        }
        let mut m = Metric::new("list_pods", "ListPodSandbox, 51 pods", Unit::Ms)
            .items(51, "list_pods_one");
        for v in [0.1, 0.05, 0.2, 0.06] {
            m.berth.push(v);
        }
        m.floor.push(0.045);
        let rows = rows(&[one, m]).unwrap();
        assert_eq!(rows.len(), 4, "containerd measured nothing: no row");
        assert_eq!(rows[1][7], "-", "the one-item call has no cost per item");
        assert_eq!(rows[2][2], "0.050");
        assert_eq!(rows[2][5], "0.20");
        // p50 0.08 ms less the one-item call's 0.025, over the 50 pods beyond
        // it: 1.1 us each.
        assert_eq!(rows[2][7], "1.10");
        assert_eq!(rows[3][1], "floor");
        assert_eq!(
            rows[3][7], "-",
            "the floor's one-item call was not measured"
        );
        let other = Metric::new("pod_start", "RunPodSandbox", Unit::Ms);
        assert!(super::rows(&[other]).is_none());
    }
}
