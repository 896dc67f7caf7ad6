//! Reading the gateway's Prometheus text (`/metrics` on the admin listener): summing the samples
//! of a series selector such as `gateway_deliveries_total{outcome="ok"}` over all its label sets,
//! and waiting after a load until every stored event has been delivered (the drain).
//!
//! The parser reads the text exposition format line by line: `# ` lines (HELP, TYPE, EOF) and
//! blank lines are skipped, a sample is `name{label="value",...} value [timestamp]`, label values
//! may contain escaped quotes and commas. A series with no sample counts as 0.

use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::client::{get_text, Target};

/// A metric name plus label equalities; matches every series of that name carrying them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl FromStr for Selector {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        let (name, labels) = match s.find('{') {
            None => (s, Vec::new()),
            Some(open) => {
                let rest = &s[open + 1..];
                let (labels, tail) = parse_labels(rest)
                    .ok_or_else(|| anyhow::anyhow!("bad label set in selector {s:?}"))?;
                anyhow::ensure!(tail.trim().is_empty(), "trailing text in selector {s:?}");
                (&s[..open], labels)
            }
        };
        anyhow::ensure!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "bad metric name in selector {s:?}"
        );
        Ok(Self {
            name: name.to_owned(),
            labels,
        })
    }
}

/// One sample line: name, labels, value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// Parses `k="v",k2="v2"}` (the text after `{`); returns the labels and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].trim_start();
        chars = chars.strip_prefix('"')?;
        let mut value = String::new();
        let mut iter = chars.char_indices();
        let end = loop {
            let (i, c) = iter.next()?;
            match c {
                '\\' => match iter.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = chars[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Parses one line; `None` for comments, blank lines and anything malformed.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(after) => parse_labels(after)?,
        None => (Vec::new(), &line[name_end..]),
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
}

/// The sum of every sample matching `selector` in a Prometheus text page (0 if none does).
pub fn sum(text: &str, selector: &Selector) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(name, labels, _)| {
            *name == selector.name
                && selector
                    .labels
                    .iter()
                    .all(|want| labels.iter().any(|have| have == want))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// The two figures the drain compares, at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    pub stored: f64,
    pub delivered: f64,
}

/// How the wait for delivery ended.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// From the end of the load until `delivered >= stored` (or the timeout).
    pub secs: f64,
    pub timed_out: bool,
    pub last: Counts,
}

/// A gateway's metrics endpoint and the series the drain watches.
#[derive(Debug, Clone)]
pub struct Watch {
    pub target: Target,
    pub stored: Selector,
    pub delivered: Selector,
}

impl Watch {
    /// Fetches the page once and sums both selectors.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let text = get_text(&self.target, Duration::from_secs(5)).await?;
        Ok(Counts {
            stored: sum(&text, &self.stored),
            delivered: sum(&text, &self.delivered),
        })
    }

    /// Polls every 50 ms from `since` until delivered ≥ stored or `timeout` has passed. A failed
    /// poll is retried until the timeout.
    pub async fn drain(&self, since: Instant, timeout: Duration) -> Drain {
        let mut last = Counts {
            stored: 0.0,
            delivered: 0.0,
        };
        loop {
            if let Ok(counts) = self.counts().await {
                last = counts;
                if counts.delivered >= counts.stored {
                    return Drain {
                        secs: since.elapsed().as_secs_f64(),
                        timed_out: false,
                        last,
                    };
                }
            }
            if since.elapsed() >= timeout {
                return Drain {
                    secs: since.elapsed().as_secs_f64(),
                    timed_out: true,
                    last,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP gateway_events_stored Events durably stored, by app.
# TYPE gateway_events_stored counter
gateway_events_stored_total{app="load"} 1200
gateway_events_stored_total{app="other"} 34
# HELP gateway_deliveries Plugin calls by plugin and outcome (ok, retry, reject, panicked, timeout).
# TYPE gateway_deliveries counter
gateway_deliveries_total{plugin="audit",outcome="ok"} 1000
gateway_deliveries_total{plugin="audit",outcome="retry"} 7
gateway_deliveries_total{outcome="ok",plugin="notify, \"x\"}"} 200
gateway_deliveries_total_extra{outcome="ok"} 99999
gateway_pending_deliveries 41
gateway_request_duration_seconds_bucket{le="+Inf"} 5 1700000000000
# EOF
"#;

    fn sel(s: &str) -> Selector {
        s.parse().expect("selector")
    }

    #[test]
    fn sums_over_label_sets() {
        assert_eq!(sum(PAGE, &sel("gateway_events_stored_total")), 1234.0);
        assert_eq!(
            sum(PAGE, &sel(r#"gateway_deliveries_total{outcome="ok"}"#)),
            1200.0
        );
        assert_eq!(sum(PAGE, &sel("gateway_deliveries_total")), 1207.0);
        assert_eq!(
            sum(
                PAGE,
                &sel(r#"gateway_deliveries_total{ plugin="audit", outcome="retry" }"#)
            ),
            7.0
        );
        assert_eq!(sum(PAGE, &sel("gateway_pending_deliveries")), 41.0);
        assert_eq!(
            sum(PAGE, &sel("gateway_request_duration_seconds_bucket")),
            5.0
        );
    }

    #[test]
    fn escaped_label_values_match() {
        let s = sel(r#"gateway_deliveries_total{plugin="notify, \"x\"}"}"#);
        assert_eq!(s.labels[0].1, "notify, \"x\"}");
        assert_eq!(sum(PAGE, &s), 200.0);
    }

    #[test]
    fn comment_lines_are_ignored() {
        // The HELP/TYPE lines name the series without `_total`; a comment mentioning the full
        // name must not count either.
        let text =
            "# gateway_events_stored_total{app=\"x\"} 5\n# TYPE gateway_events_stored counter\n";
        assert_eq!(sum(text, &sel("gateway_events_stored_total")), 0.0);
        assert_eq!(sum(text, &sel("gateway_events_stored")), 0.0);
    }

    #[test]
    fn missing_series_is_zero() {
        assert_eq!(sum(PAGE, &sel("gateway_nothing_total")), 0.0);
        assert_eq!(
            sum(PAGE, &sel(r#"gateway_deliveries_total{outcome="timeout"}"#)),
            0.0
        );
        assert_eq!(sum("", &sel("gateway_events_stored_total")), 0.0);
    }

    #[test]
    fn bad_selectors_are_refused() {
        assert!("".parse::<Selector>().is_err());
        assert!("x{a=\"1\"".parse::<Selector>().is_err());
        assert!("x{a=1}".parse::<Selector>().is_err());
        assert!("x{a=\"1\"} y".parse::<Selector>().is_err());
    }
}
