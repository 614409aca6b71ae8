//! Live resource statistics of running and paused sandboxes, read from their drivers on
//! demand: one sandbox for `GET /v1/sandboxes/{id}/stats`, every live one for a metrics
//! scrape.

use super::{SandboxService, ServiceError};
use crate::clock::Timestamp;
use crate::driver::Usage;
use crate::sandbox::{Sandbox, SandboxState};

/// One sample of a sandbox's resource usage.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSample {
    /// The sandbox, as stored when it was sampled.
    pub sandbox: Sandbox,
    /// Its counters; `None` where the host cannot tell.
    pub usage: Usage,
    /// When the counters were read.
    pub at: Timestamp,
}

/// Every sandbox counted by state, and samples of the live ones, for a metrics scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStats {
    /// How many sandboxes are in each state, every state listed.
    pub states: Vec<(SandboxState, usize)>,
    /// Samples of the oldest running or paused sandboxes, at most the cap asked for.
    pub samples: Vec<StatsSample>,
    /// Running or paused sandboxes beyond the cap, not sampled.
    pub omitted: usize,
    /// The warm pool, profile by profile (its sandboxes are in none of the above).
    pub warm_pool: Vec<super::PoolStatus>,
}

impl SandboxService {
    /// A sample of a running or paused sandbox's resource usage. Any other state is
    /// [`ServiceError::NotRunning`], as for exec.
    pub async fn stats(&self, id_or_name: &str) -> Result<StatsSample, ServiceError> {
        let sandbox = self.find(id_or_name).await?;
        if !is_live(sandbox.state) {
            return Err(ServiceError::NotRunning {
                name: sandbox.spec.name.to_string(),
                state: sandbox.state,
            });
        }
        Ok(self.sample(sandbox).await)
    }

    /// Every sandbox counted by state, and samples of at most `cap` running or paused
    /// ones (the oldest first), so a scrape's series stay bounded however many run; and
    /// the warm pool's state, whose sandboxes are counted only there.
    pub async fn live_stats(&self, cap: usize) -> Result<LiveStats, ServiceError> {
        let mut sandboxes = self.store.list_sandboxes().await?;
        sandboxes.retain(|s| !s.spec.name.is_placeholder());
        let states = SandboxState::ALL
            .iter()
            .map(|&state| {
                let count = sandboxes.iter().filter(|s| s.state == state).count();
                (state, count)
            })
            .collect();
        let live: Vec<Sandbox> = sandboxes.into_iter().filter(|s| is_live(s.state)).collect();
        let omitted = live.len().saturating_sub(cap);
        let mut samples = Vec::with_capacity(live.len().min(cap));
        for sandbox in live.into_iter().take(cap) {
            samples.push(self.sample(sandbox).await);
        }
        Ok(LiveStats {
            states,
            samples,
            omitted,
            warm_pool: self.warm_pool_status().await,
        })
    }

    async fn sample(&self, sandbox: Sandbox) -> StatsSample {
        let usage = self.usage(&sandbox).await;
        StatsSample {
            sandbox,
            usage,
            at: self.clock.now(),
        }
    }
}

/// Whether a sandbox in this state has processes whose counters can be read.
fn is_live(state: SandboxState) -> bool {
    matches!(state, SandboxState::Running | SandboxState::Paused)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{request, world};
    use super::*;

    #[tokio::test]
    async fn running_and_paused_sandboxes_are_sampled_others_refused() {
        let w = world();
        w.service.create(request("web")).await.expect("create");
        w.driver.set_usage(Usage {
            cpu_usage_usec: Some(1500),
            memory_current: Some(4096),
            ..Usage::default()
        });
        let sample = w.service.stats("web").await.expect("running");
        assert_eq!(sample.usage.cpu_usage_usec, Some(1500));
        assert_eq!(sample.at, Timestamp(1_000_000));

        w.service.pause("web").await.expect("pause");
        let sample = w.service.stats("web").await.expect("paused");
        assert_eq!(sample.sandbox.state, SandboxState::Paused);
        w.service.resume("web").await.expect("resume");

        w.service.stop("web").await.expect("stop");
        assert!(matches!(
            w.service.stats("web").await,
            Err(ServiceError::NotRunning {
                state: SandboxState::Stopped,
                ..
            })
        ));
        assert!(matches!(
            w.service.stats("nope").await,
            Err(ServiceError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn live_stats_count_every_state_and_sample_at_most_the_cap() {
        let w = world();
        for name in ["a", "b", "c"] {
            w.service.create(request(name)).await.expect("create");
        }
        w.service.stop("c").await.expect("stop");
        let live = w.service.live_stats(1).await.expect("stats");
        let count = |state| {
            live.states
                .iter()
                .find(|(s, _)| *s == state)
                .map(|(_, n)| *n)
        };
        assert_eq!(live.states.len(), SandboxState::ALL.len());
        assert_eq!(count(SandboxState::Running), Some(2));
        assert_eq!(count(SandboxState::Stopped), Some(1));
        assert_eq!(count(SandboxState::Crashed), Some(0));
        let names: Vec<String> = live
            .samples
            .iter()
            .map(|s| s.sandbox.spec.name.to_string())
            .collect();
        assert_eq!(names, ["a"], "the oldest live sandbox");
        assert_eq!(live.omitted, 1);

        let live = w.service.live_stats(1000).await.expect("stats");
        assert_eq!((live.samples.len(), live.omitted), (2, 0));
    }
}
