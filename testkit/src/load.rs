//! Open-loop load for fault scenarios: requests started at a fixed rate whatever the answers
//! take (a slow or failing target does not slow the load down, as with real clients), each
//! recorded with its start time, latency and outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One request of a load run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was started, from the start of the run.
    pub at: Duration,
    /// Its method.
    pub method: reqwest::Method,
    /// How long until the whole response was read (or the error).
    pub latency: Duration,
    /// The status, or the transport error.
    pub outcome: Result<u16, String>,
    /// The response's `error.code`, when it had one.
    pub code: Option<String>,
}

impl Sample {
    /// A transport error or a 5xx.
    pub fn failed(&self) -> bool {
        !matches!(self.outcome, Ok(s) if s < 500)
    }
}

/// Send `rps` requests per second for `duration`; `make(i)` builds the i-th request. Returns
/// every sample, in start order.
pub async fn run<F>(rps: u32, duration: Duration, make: F) -> Vec<Sample>
where
    F: Fn(u64) -> reqwest::RequestBuilder,
{
    let total = (u64::from(rps) * duration.as_millis() as u64) / 1000;
    drive(rps, |i| i < total, make).await
}

/// Send `rps` requests per second until `stop` is set (checked before each request), for
/// scenarios whose length is not known in advance; as [`run`] otherwise.
pub async fn run_until<F>(rps: u32, stop: &AtomicBool, make: F) -> Vec<Sample>
where
    F: Fn(u64) -> reqwest::RequestBuilder,
{
    drive(rps, |_| !stop.load(Ordering::Relaxed), make).await
}

/// Start the i-th request at i ÷ `rps` seconds while `more(i)`, then wait for all of them.
async fn drive<F>(rps: u32, more: impl Fn(u64) -> bool, make: F) -> Vec<Sample>
where
    F: Fn(u64) -> reqwest::RequestBuilder,
{
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0;
    while more(i) {
        interval.tick().await;
        let (client, request) = make(i).build_split();
        let request = request.expect("request builds");
        let method = request.method().clone();
        tasks.push(tokio::spawn(async move {
            let at = start.elapsed();
            let sent = Instant::now();
            let outcome = match client.execute(request).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    let code = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
                    (Ok(status), code)
                }
                Err(e) => (Err(e.to_string()), None),
            };
            Sample {
                at,
                method,
                latency: sent.elapsed(),
                outcome: outcome.0,
                code: outcome.1,
            }
        }));
        i += 1;
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for t in tasks {
        samples.push(t.await.expect("load task"));
    }
    samples
}

/// Count, failures and latency percentiles of some samples.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Requests.
    pub count: usize,
    /// Transport errors and 5xx.
    pub failed: usize,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Summary {
    /// The summary of `samples`.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Summary {
        let picked: Vec<&Sample> = samples.into_iter().collect();
        let mut latencies: Vec<Duration> = picked.iter().map(|s| s.latency).collect();
        latencies.sort();
        let pct = |p: f64| -> Duration {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i]
        };
        Summary {
            count: picked.len(),
            failed: picked.iter().filter(|s| s.failed()).count(),
            p50: pct(0.50),
            p99: pct(0.99),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} failed, p50 {:.1} ms, p99 {:.1} ms",
            self.count,
            self.failed,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )
    }
}
