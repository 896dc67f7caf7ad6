//! What a run measured: per-connection [`Recorder`]s (HDR latency histograms in microseconds,
//! answers by HTTP status, transport failures by label), merged into one [`Report`] printed as
//! text or as a single JSON object.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::metrics::Drain;

/// Highest latency tracked (larger values are clamped): 10 minutes, in µs.
const MAX_MICROS: u64 = 600_000_000;

pub(crate) fn histogram() -> Histogram<u64> {
    // 3 significant digits from 1 µs to 10 min; these bounds are always valid.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

pub(crate) fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// Measurements of one connection (merged at the end; no sharing while the load runs).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Closed loop: from send to the end of the answer. Open loop: from the intended send time.
    pub latency: Histogram<u64>,
    /// Open loop only: from the actual send (the receiver's share, without queueing).
    pub service: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub transport: BTreeMap<String, u64>,
    /// Open loop: slots dropped because the run went past its grace period.
    pub unsent: u64,
    /// With `--slow-log`: (sent or intended, from the start of the load; latency).
    pub slow: Vec<(Duration, Duration)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            statuses: BTreeMap::new(),
            transport: BTreeMap::new(),
            unsent: 0,
            slow: Vec::new(),
        }
    }
}

impl Recorder {
    pub fn answer(&mut self, status: u16, latency: Duration, service: Option<Duration>) {
        *self.statuses.entry(status).or_default() += 1;
        self.latency.saturating_record(micros(latency));
        if let Some(s) = service {
            self.service.saturating_record(micros(s));
        }
    }

    /// An open-loop slot with no answer (a timeout, a transport error, never sent): its time
    /// from the intended send to when it was given up goes into the latency percentiles.
    pub fn unanswered(&mut self, latency: Duration) {
        self.latency.saturating_record(micros(latency));
    }

    pub fn slow(&mut self, at: Duration, latency: Duration) {
        self.slow.push((at, latency));
    }

    pub fn failure(&mut self, label: String) {
        *self.transport.entry(label).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &other.transport {
            *self.transport.entry(k.clone()).or_default() += v;
        }
        self.unsent += other.unsent;
        self.slow.extend_from_slice(&other.slow);
    }
}

/// The run's settings, for the report.
#[derive(Debug, Clone)]
pub struct Setup {
    pub url: String,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub rate: Option<f64>,
    /// Requests built before the load started (the rest were built while sending).
    pub prebuilt: usize,
}

/// Everything a run prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub setup: Setup,
    /// When the load started (Unix ms), to line the slow log up with the receiver's logs.
    pub start_unix_ms: u128,
    /// From the start of the load until the last answer.
    pub elapsed: Duration,
    pub rec: Recorder,
    /// With `--metrics`: events stored during the run and how the drain ended.
    pub drain: Option<(f64, Drain)>,
}

pub(crate) fn percentiles(h: &Histogram<u64>) -> [(&'static str, f64); 6] {
    let ms = |v: u64| v as f64 / 1000.0;
    [
        ("p50", ms(h.value_at_quantile(0.50))),
        ("p90", ms(h.value_at_quantile(0.90))),
        ("p99", ms(h.value_at_quantile(0.99))),
        ("p99.9", ms(h.value_at_quantile(0.999))),
        ("max", ms(h.max())),
        ("mean", h.mean() / 1000.0),
    ]
}

impl Report {
    pub fn answers(&self) -> u64 {
        self.rec.statuses.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.rec.statuses.get(&200).copied().unwrap_or(0)
    }

    pub fn rps(&self) -> f64 {
        self.answers() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Events stored during the run / (run + drain), when the drain was watched.
    pub fn end_to_end(&self) -> Option<f64> {
        let (stored, drain) = self.drain.as_ref()?;
        Some(stored / (self.elapsed.as_secs_f64() + drain.secs).max(1e-9))
    }

    /// The `--slow-log` file: a `# start <Unix ms>` line, then `<ms from start> <latency ms>`
    /// per slow request, in send order.
    pub fn slow_lines(&self) -> String {
        let mut slow = self.rec.slow.clone();
        slow.sort();
        let head = format!("# start {}\n", self.start_unix_ms);
        let lines: String = slow
            .iter()
            .map(|(at, l)| {
                format!(
                    "{:.3} {:.3}\n",
                    at.as_secs_f64() * 1e3,
                    l.as_secs_f64() * 1e3
                )
            })
            .collect();
        head + &lines
    }

    pub fn text(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        let mode = match s.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_owned(),
        };
        out += &format!(
            "{}: {mode}, {} connections, {} threads, {} pre-built, {:.2} s planned, {:.2} s to the last answer\n",
            s.url,
            s.connections,
            s.threads,
            s.prebuilt,
            s.duration.as_secs_f64(),
            self.elapsed.as_secs_f64()
        );
        out += &format!(
            "requests: {} answered, {} ok (200), {:.1} req/s\n",
            self.answers(),
            self.ok(),
            self.rps()
        );
        let line = |h: &Histogram<u64>| {
            percentiles(h)
                .iter()
                .map(|(name, v)| format!("{name} {v:.3}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let from = if s.rate.is_some() {
            " (from intended send time)"
        } else {
            ""
        };
        out += &format!("latency ms{from}: {}\n", line(&self.rec.latency));
        if s.rate.is_some() && !self.rec.service.is_empty() {
            out += &format!(
                "service ms (from actual send): {}\n",
                line(&self.rec.service)
            );
        }
        let mut errors: Vec<String> = self
            .rec
            .statuses
            .iter()
            .filter(|(status, _)| **status != 200)
            .map(|(status, n)| format!("status {status}: {n}"))
            .collect();
        errors.extend(self.rec.transport.iter().map(|(l, n)| format!("{l}: {n}")));
        if self.rec.unsent > 0 {
            errors.push(format!(
                "unsent (past the grace period): {}",
                self.rec.unsent
            ));
        }
        if errors.is_empty() {
            out += "errors: none\n";
        } else {
            out += &format!("errors: {}\n", errors.join(", "));
        }
        if let Some((stored, d)) = &self.drain {
            out += &format!(
                "drain: {:.2} s{} (stored {}, delivered {})\n",
                d.secs,
                if d.timed_out { " - TIMED OUT" } else { "" },
                d.last.stored,
                d.last.delivered
            );
            out += &format!(
                "end-to-end: {:.1} events/s ({stored} events stored during the run / ({:.2} s run + {:.2} s drain))\n",
                self.end_to_end().unwrap_or(0.0),
                self.elapsed.as_secs_f64(),
                d.secs
            );
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let s = &self.setup;
        let hist = |h: &Histogram<u64>| {
            serde_json::Value::Object(
                percentiles(h)
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect(),
            )
        };
        let statuses: serde_json::Map<String, serde_json::Value> = self
            .rec
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut out = json!({
            "url": s.url,
            "mode": if s.rate.is_some() { "open" } else { "closed" },
            "rate": s.rate,
            "connections": s.connections,
            "threads": s.threads,
            "prebuilt": s.prebuilt,
            "duration_s": s.duration.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests": self.answers(),
            "ok": self.ok(),
            "rps": self.rps(),
            "latency_ms": hist(&self.rec.latency),
            "statuses": statuses,
            "transport_errors": self.rec.transport,
            "unsent": self.rec.unsent,
        });
        if s.rate.is_some() {
            out["service_ms"] = hist(&self.rec.service);
        }
        if let Some((stored, d)) = &self.drain {
            out["stored_during_run"] = json!(stored);
            out["drain_s"] = json!(d.secs);
            out["drain_timed_out"] = json!(d.timed_out);
            out["stored_total"] = json!(d.last.stored);
            out["delivered_total"] = json!(d.last.delivered);
            out["end_to_end_rps"] = json!(self.end_to_end());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_percentiles() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 1..=100u64 {
            a.answer(200, Duration::from_micros(i * 10), None);
        }
        b.answer(401, Duration::from_millis(5), None);
        b.slow(Duration::from_millis(7), Duration::from_millis(5));
        a.slow(Duration::from_millis(3), Duration::from_micros(12_500));
        b.failure("connection closed".into());
        a.merge(&b);
        let r = Report {
            setup: Setup {
                url: "u".into(),
                connections: 1,
                threads: 1,
                duration: Duration::from_secs(1),
                rate: None,
                prebuilt: 0,
            },
            start_unix_ms: 1_700_000_000_000,
            elapsed: Duration::from_secs(1),
            rec: a,
            drain: None,
        };
        assert_eq!(r.answers(), 101);
        assert_eq!(r.ok(), 100);
        assert!((r.rps() - 101.0).abs() < 1e-6);
        let text = r.text();
        assert!(text.contains("status 401: 1"), "{text}");
        assert!(text.contains("connection closed: 1"), "{text}");
        let j = r.json();
        assert_eq!(j["statuses"]["401"], 1);
        assert!((j["latency_ms"]["max"].as_f64().unwrap_or(0.0) - 5.0).abs() < 0.01);
        assert_eq!(
            r.slow_lines(),
            "# start 1700000000000\n3.000 12.500\n7.000 5.000\n"
        );
    }
}
