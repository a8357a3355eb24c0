//! The PNG chart of the ratios: for every metric with one, a bar from 1 to
//! berth/containerd and one to berth/floor (p50), on a log scale so that 0.5x
//! and 2x look alike, with each target marked. Drawn with plotters into an RGB
//! buffer, encoded with png; text needs a TrueType font (Debian's
//! fonts-dejavu-core), read at run time.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Result;
use super::report::{Report, Target, num};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const WIDTH: u32 = 1200;
const ROW: u32 = 34;
const CONTAINERD: RGBColor = RGBColor(52, 101, 164);
const FLOOR: RGBColor = RGBColor(230, 145, 56);
const TARGET: RGBColor = RGBColor(204, 0, 0);

struct Row {
    title: String,
    vs_containerd: Option<f64>,
    vs_floor: Option<f64>,
    /// Targets as ratios: (to containerd, to the floor).
    targets: (Option<f64>, Option<f64>),
}

/// Writes `path`; an error says why not (no font, nothing to draw).
pub fn write(report: &Report, path: &Path) -> Result<()> {
    let rows: Vec<Row> = report
        .metrics
        .iter()
        .filter_map(|m| {
            let (c, f) = (m.vs_containerd().map(|r| r.0), m.vs_floor().map(|r| r.0));
            (c.is_some() || f.is_some()).then(|| Row {
                title: m.title.clone(),
                vs_containerd: c,
                vs_floor: f,
                targets: (
                    m.targets.iter().find_map(|t| match t {
                        Target::VsContainerd(r) => Some(*r),
                        _ => None,
                    }),
                    m.targets.iter().find_map(|t| match t {
                        Target::VsFloor(r) => Some(*r),
                        _ => None,
                    }),
                ),
            })
        })
        .collect();
    if rows.is_empty() {
        return Err("no ratios to chart".into());
    }
    register_font()?;

    let height = 110 + ROW * rows.len() as u32;
    let mut buffer = vec![0u8; (WIDTH * height * 3) as usize];
    draw(&rows, &mut buffer, height).map_err(|e| format!("drawing the chart: {e}"))?;
    encode(path, &buffer, WIDTH, height)
}

/// Text needs a TrueType font: Debian's DejaVu Sans, read at run time.
pub fn register_font() -> Result<()> {
    let font = std::fs::read(FONT).map_err(|e| format!("{FONT} (fonts-dejavu-core): {e}"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| format!("{FONT}: not a usable font"))?;
    Ok(())
}

fn draw(rows: &[Row], buffer: &mut [u8], height: u32) -> std::result::Result<(), String> {
    let values = rows.iter().flat_map(|r| {
        [r.vs_containerd, r.vs_floor, r.targets.0, r.targets.1]
            .into_iter()
            .flatten()
    });
    let (low, high) = values.fold((1.0f64, 1.0f64), |(l, h), v| (l.min(v), h.max(v)));
    let (low, high) = ((low / 1.5).max(0.01), (high * 1.5).min(100.0));
    let n = rows.len() as f64;

    let root = BitMapBackend::with_buffer(buffer, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "berth / containerd (blue) and berth / floor (orange), p50; red: target",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(380)
        .build_cartesian_2d((low..high).log_scale(), 0f64..n)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(12)
        .x_label_formatter(&|x| num(*x))
        .light_line_style(WHITE)
        .x_desc("ratio (log scale; below 1 berth is faster or smaller)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    let bar = |from: f64, to: f64, y0: f64, y1: f64, color: RGBColor| {
        Rectangle::new([(from.min(to), y0), (from.max(to), y1)], color.filled())
    };
    for (i, row) in rows.iter().enumerate() {
        // Row 0 at the top.
        let y = n - 1.0 - i as f64;
        let bars = [
            (
                row.vs_containerd,
                row.targets.0,
                y + 0.52,
                y + 0.88,
                CONTAINERD,
            ),
            (row.vs_floor, row.targets.1, y + 0.12, y + 0.48, FLOOR),
        ];
        for (ratio, target, y0, y1, color) in bars {
            if let Some(r) = ratio {
                let r = r.clamp(low, high);
                chart
                    .draw_series([bar(1.0, r, y0, y1, color)])
                    .map_err(|e| e.to_string())?;
                let anchor = if r >= 1.0 { HPos::Left } else { HPos::Right };
                let style = ("sans-serif", 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(anchor, VPos::Center));
                let x = if r >= 1.0 { r * 1.03 } else { r / 1.03 };
                chart
                    .draw_series([Text::new(
                        format!("{}x", num(r)),
                        (x, (y0 + y1) / 2.0),
                        style,
                    )])
                    .map_err(|e| e.to_string())?;
            }
            if let Some(t) = target.filter(|t| (low..=high).contains(t)) {
                chart
                    .draw_series([PathElement::new(
                        vec![(t, y0 - 0.04), (t, y1 + 0.04)],
                        TARGET.stroke_width(3),
                    )])
                    .map_err(|e| e.to_string())?;
            }
        }
        let (px, py) = chart.backend_coord(&(low, y + 0.5));
        let style = ("sans-serif", 14)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(row.title.clone(), (px - 8, py), style))
            .map_err(|e| e.to_string())?;
    }
    chart
        .draw_series([PathElement::new(
            vec![(1.0, 0.0), (1.0, n)],
            BLACK.stroke_width(2),
        )])
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

pub fn encode(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(rgb))
        .map_err(|e| format!("{}: {e}", path.display()))
}
