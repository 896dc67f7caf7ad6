//! The console's last hour: per-minute counts of events stored, deliveries made, failed attempts
//! and dead letters, kept in memory (a ring of 60 minutes) by sampling this process's own
//! counters every few seconds. Lost on restart, local to one replica; Prometheus is the place for
//! anything longer.
//!
//! Never: touches the store or the request path; it reads the metrics registry only.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// One minute's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Minute {
    /// Unix minute (ms / 60 000) the counts belong to.
    pub minute: i64,
    pub stored: u64,
    pub delivered: u64,
    /// Attempts that ended in retry, timeout, reject or panic.
    pub failed: u64,
    pub dead: u64,
}

/// Cumulative counter values read from the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub stored: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead: u64,
}

impl Totals {
    /// Sums the counters of this process from Prometheus text.
    pub fn from_metrics(text: &str) -> Totals {
        let mut t = Totals::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let v = v.max(0.0) as u64;
            let name = series.split('{').next().unwrap_or("");
            match name {
                "gateway_events_stored_total" => t.stored += v,
                "gateway_dead_letters_total" => t.dead += v,
                "gateway_deliveries_total" if series.contains("outcome=\"ok\"") => t.delivered += v,
                "gateway_deliveries_total" => t.failed += v,
                _ => {}
            }
        }
        t
    }
}

/// The ring and the last totals seen.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<(VecDeque<Minute>, Option<Totals>)>,
}

impl History {
    /// Adds what changed since the last sample to minute `minute`.
    pub fn sample(&self, minute: i64, now: Totals) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let (ring, last) = &mut *inner;
        // The counters are this process's: they started at zero. Two samplers (the 5 s one and
        // the overview's) read them before taking this lock, so an older reading may come
        // second: the totals kept only move up, each counter on its own, so what it adds is
        // never counted again.
        let before = last.unwrap_or_default();
        let now = Totals {
            stored: now.stored.max(before.stored),
            delivered: now.delivered.max(before.delivered),
            failed: now.failed.max(before.failed),
            dead: now.dead.max(before.dead),
        };
        *last = Some(now);
        let d = |a: u64, b: u64| a.saturating_sub(b);
        if ring.back().is_none_or(|m| m.minute < minute) {
            ring.push_back(Minute {
                minute,
                ..Minute::default()
            });
        }
        if let Some(m) = ring.back_mut() {
            m.stored += d(now.stored, before.stored);
            m.delivered += d(now.delivered, before.delivered);
            m.failed += d(now.failed, before.failed);
            m.dead += d(now.dead, before.dead);
        }
        while ring
            .front()
            .is_some_and(|m| m.minute <= minute - MINUTES as i64)
        {
            ring.pop_front();
        }
    }

    /// The last hour ending at `minute`, one entry per minute (zeros where nothing was sampled),
    /// oldest first.
    pub fn last_hour(&self, minute: i64) -> Vec<Minute> {
        let ring = self.inner.lock().map(|i| i.0.clone()).unwrap_or_default();
        (minute - MINUTES as i64 + 1..=minute)
            .map(|m| {
                ring.iter()
                    .find(|x| x.minute == m)
                    .copied()
                    .unwrap_or(Minute {
                        minute: m,
                        ..Minute::default()
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_land_in_their_minute_and_old_minutes_go() {
        let h = History::default();
        let t = |stored| Totals {
            stored,
            ..Totals::default()
        };
        h.sample(100, t(5));
        h.sample(100, t(7));
        h.sample(101, t(10));
        let hour = h.last_hour(101);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!((hour[58].stored, hour[59].stored), (7, 3));
        h.sample(200, t(11));
        assert!(h.last_hour(200).iter().all(|m| m.minute > 140));
        // Minutes older than the hour leave the ring (its memory stays bounded).
        let kept: Vec<i64> = h
            .inner
            .lock()
            .expect("lock")
            .0
            .iter()
            .map(|m| m.minute)
            .collect();
        assert_eq!(kept, [200]);
        assert_eq!(h.last_hour(200)[59].stored, 1);
    }

    #[test]
    fn each_counter_has_its_own_column() {
        let h = History::default();
        let t = |n: u64| Totals {
            stored: n,
            delivered: 2 * n,
            failed: 3 * n,
            dead: 4 * n,
        };
        h.sample(100, t(1));
        h.sample(101, t(2));
        h.sample(101, t(5));
        let m = h.last_hour(101)[59];
        assert_eq!(
            (m.minute, m.stored, m.delivered, m.failed, m.dead),
            (101, 4, 8, 12, 16)
        );
    }

    /// Regression: the two samplers read the counters before the lock, so an older reading
    /// could come second; the next delta then counted again what it had undone (10, 5, 12 made
    /// a minute of 17, not 12).
    #[test]
    fn an_older_reading_that_comes_late_is_not_counted_twice() {
        let h = History::default();
        let t = |stored| Totals {
            stored,
            ..Totals::default()
        };
        for stored in [10, 5, 12] {
            h.sample(100, t(stored));
        }
        assert_eq!(h.last_hour(100)[59].stored, 12);
    }

    #[test]
    fn totals_from_metrics_text() {
        let text = "# TYPE x counter\n\
            gateway_events_stored_total{app=\"a\"} 3\n\
            gateway_events_stored_total{app=\"b\"} 2\n\
            gateway_deliveries_total{plugin=\"p\",outcome=\"ok\"} 4\n\
            gateway_deliveries_total{plugin=\"p\",outcome=\"retry\"} 1\n\
            gateway_dead_letters_total{plugin=\"p\"} 1\n";
        assert_eq!(
            Totals::from_metrics(text),
            Totals {
                stored: 5,
                delivered: 4,
                failed: 1,
                dead: 1
            }
        );
    }
}
