//! Reading a running warehouse's metrics endpoint for `strata status`:
//! one plain HTTP GET of `/metrics`, and the few series the status table
//! shows, parsed from the text format.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long `strata status` waits for the live endpoint.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One sample: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Samples by metric name.
#[derive(Debug, Default)]
pub struct Scrape(HashMap<String, Vec<Sample>>);

impl Scrape {
    /// The samples of `name` whose label `key` is `value`.
    pub fn with<'a>(
        &'a self,
        name: &str,
        key: &'a str,
        value: &'a str,
    ) -> impl Iterator<Item = f64> + 'a {
        self.matching(name, key, move |v| v == value)
    }

    /// The samples of `name` whose label `key` satisfies `keep`.
    pub fn matching<'a>(
        &'a self,
        name: &str,
        key: &'a str,
        keep: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = f64> + 'a {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |s| s.labels.get(key).is_some_and(|v| keep(v)))
            .map(|s| s.value)
    }

    /// Every sample of `name`.
    pub fn samples<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.get(name).into_iter().flatten()
    }

    /// Parses the Prometheus / OpenMetrics text format (what Strata writes).
    pub fn parse(text: &str) -> Self {
        let mut out: HashMap<String, Vec<Sample>> = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(pair) => pair,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, HashMap::new()),
            };
            out.entry(name.to_string())
                .or_default()
                .push(Sample { labels, value });
        }
        Scrape(out)
    }
}

/// `a="x",b="y"` (Strata's label values hold no quotes or commas).
fn parse_labels(text: &str) -> HashMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

/// The endpoint's metrics, or `None` when nothing answers there.
pub async fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"))
            .then(|| Scrape::parse(body))
    };
    tokio::time::timeout(TIMEOUT, fetch).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_label() {
        let s = Scrape::parse(
            "# TYPE x gauge\nx{layer=\"a\",side=\"late\"} 3\nx{layer=\"b\"} 4.5\ny 1\n# EOF\n",
        );
        assert_eq!(s.with("x", "layer", "a").collect::<Vec<_>>(), vec![3.0]);
        assert_eq!(s.with("x", "layer", "b").sum::<f64>(), 4.5);
        assert_eq!(s.with("x", "side", "late").count(), 1);
    }
}
