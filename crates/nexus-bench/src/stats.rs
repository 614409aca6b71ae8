//! Percentiles (nearest rank) and the summary line of one measured operation.

use std::time::Duration;

use serde::Serialize;

/// The distribution of one operation's samples, in `unit`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// `ms` or `MiB`.
    pub unit: &'static str,
}

impl Summary {
    /// Summarises samples; `None` when there are none.
    pub fn of(samples: &[f64], unit: &'static str) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let pick = |p: f64| percentile(&sorted, p).expect("sorted is not empty");
        Some(Self {
            n: sorted.len(),
            p50: pick(50.0),
            p90: pick(90.0),
            p99: pick(99.0),
            max: *sorted.last().expect("sorted is not empty"),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            unit,
        })
    }

    /// Summarises durations in milliseconds.
    pub fn of_durations(samples: &[Duration]) -> Option<Self> {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Self::of(&ms, "ms")
    }
}

/// Timings of one operation as they come in, with its failures counted apart.
#[derive(Debug, Default)]
pub struct Samples {
    /// Time of each successful attempt.
    pub durations: Vec<Duration>,
    /// Failed attempts.
    pub errors: usize,
    /// The first failure's message, to show the reader what went wrong.
    pub first_error: Option<String>,
}

impl Samples {
    /// Records one attempt that took `elapsed`; failures are counted, not timed.
    pub fn record<T>(&mut self, elapsed: Duration, result: anyhow::Result<T>) -> Option<T> {
        match result {
            Ok(value) => {
                self.durations.push(elapsed);
                Some(value)
            }
            Err(e) => {
                self.fail(&e);
                None
            }
        }
    }

    /// Counts a failure.
    pub fn fail(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{error:#}"));
    }
}

/// Rates of a throughput measurement as they come in, with failures counted apart.
#[derive(Debug, Default)]
pub struct Rates {
    /// MiB per second of each successful attempt.
    pub mib_per_s: Vec<f64>,
    /// Failed attempts.
    pub errors: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
}

impl Rates {
    /// Records one attempt that moved `bytes` in `elapsed`; failures are counted, not rated.
    pub fn record(&mut self, bytes: u64, elapsed: Duration, result: anyhow::Result<()>) {
        match result {
            Ok(()) => self
                .mib_per_s
                .push(bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

/// The `p`-th percentile (0-100) of ascending `sorted` samples by the nearest-rank
/// method: the smallest sample with at least `p`% of the samples at or below it.
/// Always one of the samples, never an interpolation; `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Summary::of(&[], "ms"), None);
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample() {
        for p in [0.0, 50.0, 99.0, 100.0] {
            assert_eq!(percentile(&[7.0], p), Some(7.0));
        }
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        // The textbook example: 15, 20, 35, 40, 50.
        let s = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert_eq!(percentile(&s, 5.0), Some(15.0));
        assert_eq!(percentile(&s, 30.0), Some(20.0));
        assert_eq!(percentile(&s, 40.0), Some(20.0));
        assert_eq!(percentile(&s, 50.0), Some(35.0));
        assert_eq!(percentile(&s, 100.0), Some(50.0));
    }

    #[test]
    fn percentile_of_one_to_hundred() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 90.0), Some(90.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&s, 250.0), Some(100.0));
    }

    #[test]
    fn p99_of_twenty_samples_is_the_max() {
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 99.0), Some(20.0));
        assert_eq!(percentile(&s, 90.0), Some(18.0));
        assert_eq!(percentile(&s, 50.0), Some(10.0));
    }

    #[test]
    fn summary_sorts_and_drops_non_finite_samples() {
        let s = Summary::of(&[3.0, f64::NAN, 1.0, 2.0, 4.0], "ms").expect("samples");
        assert_eq!(s.n, 4);
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.p90, 4.0);
        assert_eq!(s.max, 4.0);
        assert_eq!(s.mean, 2.5);
    }

    #[test]
    fn rates_are_mib_per_second_and_failures_are_counted() {
        let mut rates = Rates::default();
        rates.record(512 * 1024 * 1024, Duration::from_secs(2), Ok(()));
        rates.record(1, Duration::from_secs(1), Err(anyhow::anyhow!("broke")));
        assert_eq!(rates.mib_per_s, [256.0]);
        assert_eq!(
            (rates.errors, rates.first_error.as_deref()),
            (1, Some("broke"))
        );
    }

    #[test]
    fn durations_are_summarised_in_milliseconds() {
        let s = Summary::of_durations(&[Duration::from_micros(1500), Duration::from_millis(3)])
            .expect("samples");
        assert_eq!(s.unit, "ms");
        assert_eq!(s.p50, 1.5);
        assert_eq!(s.max, 3.0);
    }
}
