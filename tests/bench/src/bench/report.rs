//! The bench's results: every metric with its samples on each side (berth,
//! containerd, the physical floor), the ratios berth/containerd and berth/floor
//! on p50 and p90, the targets, the leak checks; written as JSON and as a short
//! table (the PNG chart is in `chart.rs`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::Result;
use super::crash;
use super::kubelet;
use super::leaks::LeakCheck;
use super::samples::{Series, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Berth,
    Containerd,
    Floor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    S,
    MiB,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::S => "s",
            Unit::MiB => "MiB",
        }
    }
}

/// What berth's p50 should be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At most this fraction of containerd's p50.
    VsContainerd(f64),
    /// At most this multiple of the floor's p50.
    VsFloor(f64),
    /// At most this value, in the metric's unit.
    AtMost(f64),
    /// A List's cost per item at most this many us: how much its p50 exceeds
    /// the p50 of the same List narrowed to one item (same side, same run),
    /// over the items beyond that one. A p50 over the count alone charged
    /// every item a share of the call; a p50 less Version's charged them the
    /// difference between two different calls' paths, and swung with it. On
    /// berth the one-item call goes the filtered way (an index lookup, the
    /// frame memo) where the whole List is kept as is: a few microseconds the
    /// subtraction takes off, under 0.1 us per item at 50 items.
    PerItemUs(f64),
}

impl Target {
    fn describe(self, unit: Unit) -> String {
        match self {
            Target::VsContainerd(r) => format!("<={}x containerd", num(r)),
            Target::VsFloor(r) => format!("<={}x floor", num(r)),
            Target::AtMost(v) => format!("<={} {}", num(v), unit.name()),
            Target::PerItemUs(v) => format!("<={} us/item", num(v)),
        }
    }
}

pub struct Metric {
    pub key: &'static str,
    pub title: String,
    pub unit: Unit,
    /// What the floor side measures, when there is one.
    pub floor_is: Option<&'static str>,
    pub targets: Vec<Target>,
    /// Items one call returns (a List's), and the key of the metric of the
    /// same call narrowed to one item: its cost per item.
    pub items: Option<(usize, &'static str)>,
    pub berth: Series,
    pub containerd: Series,
    pub floor: Series,
}

impl Metric {
    pub fn new(key: &'static str, title: impl Into<String>, unit: Unit) -> Metric {
        Metric {
            key,
            title: title.into(),
            unit,
            floor_is: None,
            targets: Vec::new(),
            items: None,
            berth: Series::default(),
            containerd: Series::default(),
            floor: Series::default(),
        }
    }

    pub fn floor(mut self, what: &'static str) -> Metric {
        self.floor_is = Some(what);
        self
    }

    /// `n` items a call, against `one`: the same call answering one.
    pub fn items(mut self, n: usize, one: &'static str) -> Metric {
        self.items = Some((n, one));
        self
    }

    pub fn target(mut self, target: Target) -> Metric {
        self.targets.push(target);
        self
    }

    pub fn side(&mut self, side: Side) -> &mut Series {
        match side {
            Side::Berth => &mut self.berth,
            Side::Containerd => &mut self.containerd,
            Side::Floor => &mut self.floor,
        }
    }

    /// berth/containerd on (p50, p90).
    pub fn vs_containerd(&self) -> Option<(f64, f64)> {
        ratio(self.berth.summary()?, self.containerd.summary()?)
    }

    /// berth/floor on (p50, p90).
    pub fn vs_floor(&self) -> Option<(f64, f64)> {
        ratio(self.berth.summary()?, self.floor.summary()?)
    }

    /// The cost per item in us of one side's p50 over `one` (that side's p50
    /// of the call answering one item, ms), for a metric with items; `None`
    /// when the whole List was the faster, which is noise, not a cost.
    pub fn per_item_us(&self, series: &Series, one: Option<f64>) -> Option<f64> {
        let (items, _) = self.items.filter(|&(n, _)| n > 1)?;
        let over = series.summary()?.p50 - one?;
        (over >= 0.0).then(|| over * US_PER_MS / (items - 1) as f64)
    }

    /// Each target, with the value it is judged on and whether it is met
    /// (`None` when a side is missing). `one` is berth's p50 of the call
    /// answering one item.
    pub fn verdicts(&self, one: Option<f64>) -> Vec<(Target, Option<(f64, bool)>)> {
        self.targets
            .iter()
            .map(|&t| {
                let value = match t {
                    Target::VsContainerd(_) => self.vs_containerd().map(|r| r.0),
                    Target::VsFloor(_) => self.vs_floor().map(|r| r.0),
                    Target::AtMost(_) => self.berth.summary().map(|s| s.p50),
                    Target::PerItemUs(_) => self.per_item_us(&self.berth, one),
                };
                let limit = match t {
                    Target::VsContainerd(l)
                    | Target::VsFloor(l)
                    | Target::AtMost(l)
                    | Target::PerItemUs(l) => l,
                };
                (t, value.map(|v| (v, v <= limit)))
            })
            .collect()
    }
}

const US_PER_MS: f64 = 1000.0;

/// One side's p50 (ms) of the call `m` is measured against for its cost per
/// item: the same call answering one item.
pub fn one_item(metrics: &[Metric], m: &Metric, side: Side) -> Option<f64> {
    let (_, key) = m.items?;
    let m = metrics.iter().find(|m| m.key == key)?;
    let series = match side {
        Side::Berth => &m.berth,
        Side::Containerd => &m.containerd,
        Side::Floor => &m.floor,
    };
    Some(series.summary()?.p50)
}

fn ratio(a: Summary, b: Summary) -> Option<(f64, f64)> {
    (b.p50 > 0.0 && b.p90 > 0.0).then(|| (a.p50 / b.p50, a.p90 / b.p90))
}

#[derive(Default)]
pub struct Report {
    pub meta: Map<String, Value>,
    pub metrics: Vec<Metric>,
    pub leaks: Vec<LeakCheck>,
    /// The crash loop's figures, one per runtime (`--crash-loop`).
    pub crash: Vec<crash::Outcome>,
    /// The kubelet scale scenario's points, and its containers per pod.
    pub kubelet: Vec<kubelet::Point>,
    pub kubelet_containers: usize,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(metrics: Vec<Metric>) -> Report {
        Report {
            metrics,
            ..Default::default()
        }
    }

    /// The series of metric `key` on `side`. Panics on an unknown key: the keys
    /// are the bench's own constants.
    pub fn series(&mut self, key: &str, side: Side) -> &mut Series {
        self.metrics
            .iter_mut()
            .find(|m| m.key == key)
            .unwrap_or_else(|| panic!("no metric {key}"))
            .side(side)
    }

    pub fn record(&mut self, key: &str, side: Side, value: f64) {
        self.series(key, side).push(value);
    }

    pub fn fail(&mut self, key: &str, side: Side, error: &str) {
        self.series(key, side).fail(error);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    pub fn to_json(&self) -> Value {
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|m| {
                let pair =
                    |r: Option<(f64, f64)>| r.map(|(p50, p90)| json!({"p50": p50, "p90": p90}));
                json!({
                    "key": m.key,
                    "title": m.title,
                    "unit": m.unit.name(),
                    "floor_is": m.floor_is,
                    "berth": series_json(&m.berth),
                    "containerd": series_json(&m.containerd),
                    "floor": series_json(&m.floor),
                    "berth_over_containerd": pair(m.vs_containerd()),
                    "berth_over_floor": pair(m.vs_floor()),
                    "targets": m.verdicts(one_item(&self.metrics, m, Side::Berth)).iter().map(|(t, v)| json!({
                        "target": t.describe(m.unit),
                        "value": v.map(|v| v.0),
                        "met": v.map(|v| v.1),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "meta": self.meta,
            "metrics": metrics,
            "leaks": self.leaks.iter().map(LeakCheck::to_json).collect::<Vec<_>>(),
            "crash_loop": self.crash.iter().map(crash::Outcome::to_json).collect::<Vec<_>>(),
            "kubelet_scale": kubelet::to_json(&self.kubelet),
            "notes": self.notes,
        })
    }

    /// The short table: one line per metric, then the leak checks and the notes.
    pub fn table(&self) -> String {
        let mut rows = vec![
            [
                "METRIC",
                "UNIT",
                "BERTH p50/p90",
                "CONTAINERD p50/p90",
                "B/C",
                "FLOOR p50/p90",
                "B/F",
                "TARGETS",
            ]
            .map(String::from),
        ];
        for m in &self.metrics {
            let targets: Vec<String> = m
                .verdicts(one_item(&self.metrics, m, Side::Berth))
                .iter()
                .map(|(t, v)| {
                    let verdict = match v {
                        Some((_, true)) => "met",
                        Some((_, false)) => "MISSED",
                        None => "n/a",
                    };
                    format!("{} {verdict}", t.describe(m.unit))
                })
                .collect();
            rows.push([
                m.title.clone(),
                m.unit.name().to_string(),
                cell(&m.berth),
                cell(&m.containerd),
                m.vs_containerd().map(|r| num(r.0)).unwrap_or("-".into()),
                cell(&m.floor),
                m.vs_floor().map(|r| num(r.0)).unwrap_or("-".into()),
                targets.join(", "),
            ]);
        }
        // A run of the crash loop alone measured no metric: no table of dashes.
        let measured = self.metrics.iter().any(|m| {
            [&m.berth, &m.containerd, &m.floor]
                .iter()
                .any(|s| s.summary().is_some() || s.error.is_some())
        });
        let mut out = if measured {
            render(&rows)
        } else {
            String::new()
        };
        if let Some(rows) = super::spread::rows(&self.metrics) {
            out.push('\n');
            out.push_str(&render(&rows));
        }
        if !self.kubelet.is_empty() {
            out.push('\n');
            out.push_str(&render(&kubelet::table(
                &self.kubelet,
                self.kubelet_containers,
            )));
            for v in kubelet::verdicts(&self.kubelet, self.kubelet_containers) {
                let _ = writeln!(out, "kubelet scale: {v}");
            }
        }
        if !self.leaks.is_empty() {
            out.push('\n');
            let mut rows = vec![["LEAK CHECK", "AFTER", "LEFT OVER (vs idle)"].map(String::from)];
            for l in &self.leaks {
                let left = if l.leaked.is_empty() {
                    "nothing".to_string()
                } else {
                    l.leaked.join(", ")
                };
                rows.push([l.runtime.to_string(), l.after.to_string(), left]);
            }
            out.push_str(&render(&rows));
        }
        if !self.crash.is_empty() {
            out.push('\n');
            out.push_str(&render(&crash::table(&self.crash)));
            if self.crash.iter().any(|o| !o.failures.is_empty()) {
                out.push_str("crash loop: first failed calls\n");
            }
            for o in &self.crash {
                for f in &o.failures {
                    let _ = writeln!(out, "  [{}] {f}", o.runtime);
                }
            }
            for o in self.crash.iter().filter(|o| !o.left_ids.is_empty()) {
                let _ = writeln!(
                    out,
                    "crash loop [{}]: left over: {}",
                    o.runtime,
                    o.left_ids.join(", ")
                );
            }
        }
        let failures: Vec<String> = self
            .metrics
            .iter()
            .flat_map(|m| {
                [
                    ("berth", &m.berth),
                    ("containerd", &m.containerd),
                    ("floor", &m.floor),
                ]
                .into_iter()
                .filter_map(move |(side, s)| {
                    s.error
                        .as_ref()
                        .map(|e| format!("{} [{side}]: {e}", m.title))
                })
            })
            .collect();
        for (heading, lines) in [("errors", &failures), ("notes", &self.notes)] {
            if !lines.is_empty() {
                let _ = write!(out, "\n{heading}:\n");
                for line in lines {
                    let _ = writeln!(out, "  - {line}");
                }
            }
        }
        out
    }

    /// `results.json` and `results.txt` in `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(&self.to_json()).map_err(|e| e.to_string())?;
        for (name, text) in [("results.json", json), ("results.txt", self.table())] {
            let path = out.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }
}

fn series_json(s: &Series) -> Value {
    let mut v = match s.summary() {
        Some(x) => json!({
            "p50": x.p50, "p90": x.p90, "min": x.min, "max": x.max, "mean": x.mean, "n": x.n,
            "samples": s.values,
        }),
        None => json!({}),
    };
    if let Some(e) = &s.error {
        v["error"] = json!(e);
    }
    v
}

fn cell(s: &Series) -> String {
    match (s.summary(), &s.error) {
        (Some(x), _) if x.n == 1 => num(x.p50),
        (Some(x), _) => format!("{} / {}", num(x.p50), num(x.p90)),
        (None, Some(_)) => "error".to_string(),
        (None, None) => "-".to_string(),
    }
}

/// Three significant digits or so, without exponent.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn render<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .as_ref()
            .iter()
            .zip(widths.iter().copied())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric() -> Metric {
        let mut m = Metric::new("pod_start", "RunPodSandbox", Unit::Ms)
            .target(Target::VsContainerd(0.6))
            .target(Target::VsFloor(1.2))
            .target(Target::AtMost(40.0));
        for v in [40.0, 50.0, 60.0] {
            m.berth.push(v);
        }
        for v in [100.0, 100.0, 100.0] {
            m.containerd.push(v);
        }
        m
    }

    #[test]
    fn targets_are_judged_on_p50() {
        let verdicts = metric().verdicts(None);
        assert_eq!(verdicts[0].1, Some((0.5, true)));
        assert_eq!(verdicts[1].1, None, "no floor measured");
        assert_eq!(verdicts[2].1, Some((50.0, false)));
    }

    #[test]
    fn the_cost_per_item_is_over_the_call_answering_one() {
        let mut m = Metric::new("list_pods", "ListPodSandbox", Unit::Ms)
            .items(101, "list_pods_one")
            .target(Target::PerItemUs(1.5));
        m.berth.push(0.3);
        let judged = |one| {
            m.verdicts(Some(one))[0]
                .1
                .map(|(v, met)| ((v * 100.0).round() / 100.0, met))
        };
        // (0.3 - 0.1) ms over the 100 items beyond the one: 2 us each.
        assert_eq!(judged(0.1), Some((2.0, false)));
        assert_eq!(judged(0.2), Some((1.0, true)));
        assert_eq!(m.verdicts(None)[0].1, None, "no one-item call measured");
        assert_eq!(judged(0.31), None, "a faster whole List is noise, not met");
        let mut one = Metric::new("list_pods_one", "one pod", Unit::Ms);
        one.berth.push(0.2);
        // Another side's one-item call does not count for berth.
        one.containerd.push(0.29);
        let table = Report::new(vec![one, m]).table();
        assert!(table.contains("<=1.50 us/item met"), "{table}");
    }

    #[test]
    fn table_and_json_carry_ratios_and_errors() {
        let mut report = Report::new(vec![metric()]);
        report.fail("pod_start", Side::Floor, "runc: not found");
        let table = report.table();
        assert!(table.contains("50.0 / 58.0"), "{table}");
        assert!(table.contains("<=0.60x containerd met"), "{table}");
        assert!(table.contains("runc: not found"), "{table}");
        let json = report.to_json();
        assert_eq!(json["metrics"][0]["berth_over_containerd"]["p50"], 0.5);
        assert_eq!(json["metrics"][0]["floor"]["error"], "runc: not found");
    }
}
