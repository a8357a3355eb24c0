//! Terminal output for the CLI: tables, sizes, and a pull's progress.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use crate::admin::proto;

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The first 12 hex digits of an id, as docker and crictl show them.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub fn table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Redraws per-layer progress in place on a terminal; elsewhere prints only the end.
pub struct Progress {
    started: Instant,
    first_total: Option<u64>,
    drawn: usize,
    tty: bool,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            started: Instant::now(),
            first_total: None,
            drawn: 0,
            tty: std::io::stdout().is_terminal(),
        }
    }

    pub fn show(&mut self, msg: &proto::PullProgress) {
        // Speed counts only what this pull transferred, not what was already there.
        let done = msg.layers.iter().map(|l| l.downloaded).sum();
        self.first_total.get_or_insert(done);
        if self.tty {
            self.draw(msg);
        }
    }

    pub fn finish(&mut self, msg: &proto::PullProgress) {
        if !self.tty {
            self.draw(msg);
        }
    }

    fn draw(&mut self, msg: &proto::PullProgress) {
        let mut out = std::io::stdout().lock();
        // On a terminal, go back up and clear each line; elsewhere print plainly.
        let clear = if self.tty { "\x1b[2K" } else { "" };
        if self.tty && self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        let (mut done, mut total) = (0, 0);
        for layer in &msg.layers {
            done += layer.downloaded;
            total += layer.size;
            let _ = writeln!(
                out,
                "{clear}{}  {:<11}  {:>10} / {}",
                short_id(&layer.digest),
                layer.state,
                bytes(layer.downloaded),
                bytes(layer.size)
            );
        }
        let base = self.first_total.unwrap_or(0);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let speed = (done.saturating_sub(base)) as f64 / secs;
        let _ = writeln!(
            out,
            "{clear}total         {:>10} / {}  {}/s  {:.1}s",
            bytes(done),
            bytes(total),
            bytes(speed as u64),
            secs
        );
        self.drawn = msg.layers.len() + 1;
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
        assert_eq!(
            short_id(&format!("sha256:{}", "ab".repeat(32))),
            "abababababab"
        );
    }
}
