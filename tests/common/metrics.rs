//! berthd's Prometheus endpoint (`[metrics] address`) as the tests read it.

use super::world::World;

/// The `[metrics]` table that has berthd serve on a free loopback port.
pub const CONFIG: &str = "[metrics]\naddress = \"127.0.0.1:0\"\n";

/// A metric's value, by its exact series (`name{labels}` as berthd writes them).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

pub fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// The address berthd logged it serves metrics on (the config asks for port 0).
pub fn url(world: &World) -> String {
    // The last start's: a restarted berthd picks another port.
    let log = strip_ansi(&world.berthd.log());
    let address = log
        .lines()
        .rfind(|l| l.contains("serving metrics"))
        .and_then(|l| l.split("address=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or_else(|| panic!("berthd did not log its metrics address:\n{log}"));
    format!("http://{address}/metrics")
}

/// The log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scraping /metrics");
    assert!(response.status().is_success(), "{}", response.status());
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}
