//! The kubelet scale chart: one panel per figure, the figure against the pod
//! count, a line per runtime (berth black, containerd blue, named in each
//! panel's legend).

use std::path::Path;

use plotters::prelude::*;

use super::Result;
use super::chart;
use super::kubelet::{self, Point};

const PANEL: (u32, u32) = (420, 300);
const COLUMNS: usize = 3;
const CONTAINERD: RGBColor = RGBColor(52, 101, 164);

pub fn write(points: &[Point], path: &Path) -> Result<()> {
    if points.is_empty() {
        return Err("no kubelet scale points".into());
    }
    chart::register_font()?;
    let figures = kubelet::figures();
    let rows = figures.len().div_ceil(COLUMNS);
    let (w, h) = (PANEL.0 * COLUMNS as u32, PANEL.1 * rows as u32);
    let mut buffer = vec![0u8; (w * h * 3) as usize];
    draw(points, &figures, &mut buffer, (w, h), rows).map_err(|e| format!("drawing: {e}"))?;
    chart::encode(path, &buffer, w, h)
}

fn draw(
    points: &[Point],
    figures: &[(&str, &str)],
    buffer: &mut [u8],
    size: (u32, u32),
    rows: usize,
) -> std::result::Result<(), String> {
    let root = BitMapBackend::with_buffer(buffer, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_pods = points.iter().map(|p| p.pods).max().unwrap_or(1) as f64;
    for (panel, (key, unit)) in root.split_evenly((rows, COLUMNS)).iter().zip(figures) {
        let series: Vec<(&str, Vec<(f64, f64)>)> = ["berth", "containerd"]
            .into_iter()
            .map(|rt| {
                let mut xy: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|p| p.runtime == rt)
                    .filter_map(|p| Some((p.pods as f64, kubelet::figure(p, key)?)))
                    .collect();
                xy.sort_by(|a, b| a.0.total_cmp(&b.0));
                (rt, xy)
            })
            .collect();
        let top = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(f64::MIN_POSITIVE)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{key} ({unit})"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..max_pods * 1.05, 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("pods")
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| e.to_string())?;
        for (rt, xy) in series {
            let color = if rt == "berth" { BLACK } else { CONTAINERD };
            chart
                .draw_series([PathElement::new(xy.clone(), color.stroke_width(2))])
                .map_err(|e| e.to_string())?
                .label(rt)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(xy.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        // Upper left: every figure grows with the pods, so its lines rise to the right.
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
