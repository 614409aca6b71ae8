//! Command-line flags of `nexus-bench` and the measurement plan they make.

use std::path::PathBuf;

use clap::Parser;

use crate::measure::Plan;

/// Measures Nexus (create→running, exec, memory, many sandboxes at once, the density
/// curve of create latency and memory up to 1,000 sandboxes, the file API,
/// workspace snapshots, restores and forks, also on a loop-mounted btrfs, network egress
/// through the policy proxy) next to plain bubblewrap, fork+exec, podman and direct
/// loopback connections on this machine, and prints the figures. It starts
/// its own `nexusd` (the one built beside this binary) with temporary directories.
/// Timings are printed, never asserted: the exit code is 0 unless the harness failed.
#[derive(Debug, Clone, Parser)]
#[command(name = "nexus-bench", version, about, long_about = None)]
pub struct Args {
    /// Quick mode (under 2 minutes): 20 iterations, 10 idle sandboxes, 50 at once, 256 MiB
    /// transfers and workspaces (5 iterations), the density curve at 1, 10 and 100
    /// sandboxes (10 creates timed at each). Full mode: 100 iterations, 50 idle
    /// sandboxes, 200 at once, 1 GiB transfers and workspaces (10 iterations), the curve
    /// at 1, 10, 100 and 1,000 sandboxes (100 creates timed at each, so the p99 is not
    /// simply the slowest create).
    #[arg(long)]
    pub quick: bool,

    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Iterations of each latency measurement [default: 20 quick, 100 full].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub iterations: Option<u16>,

    /// Idle sandboxes for the memory measurement [default: 10 quick, 50 full].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    pub idle: Option<u16>,

    /// Sandboxes created at once [default: 50 quick, 200 full].
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u16).range(1..))]
    pub many: Option<u16>,

    /// Requests in flight at once while creating many sandboxes (and filling the curve).
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Largest point of the density curve: it is measured at the powers of ten up to N,
    /// and at N itself [default: 100 quick, 1000 full].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub curve_max: Option<u16>,
}

impl Args {
    /// `quick` or `full`.
    pub fn mode(&self) -> &'static str {
        if self.quick { "quick" } else { "full" }
    }

    /// What to measure.
    pub fn plan(&self) -> Plan {
        let (iterations, idle, many, curve_max, curve_probes) = if self.quick {
            (20, 10, 50, 100, 10)
        } else {
            (100, 50, 200, 1_000, 100)
        };
        let iterations = self.iterations.map_or(iterations, usize::from);
        // Transfers of big files and workspace copies take seconds each.
        let (heavy_cap, transfer_mib, workspace_mib, small_files) = if self.quick {
            (5, 256, 256, 1_000)
        } else {
            (10, 1024, 1024, 10_000)
        };
        Plan {
            iterations,
            heavy_iterations: iterations.min(heavy_cap),
            transfer_mib,
            workspace_mib,
            small_files,
            idle: self.idle.map_or(idle, usize::from),
            many: self.many.map_or(many, usize::from),
            concurrency: usize::from(self.concurrency),
            curve_levels: curve_levels(self.curve_max.map_or(curve_max, usize::from)),
            curve_probes,
        }
    }
}

/// The powers of ten up to `max`, then `max` itself when it is not one of them.
fn curve_levels(max: usize) -> Vec<usize> {
    let mut levels: Vec<usize> = std::iter::successors(Some(1_usize), |l| l.checked_mul(10))
        .take_while(|&l| l <= max)
        .collect();
    if levels.last() != Some(&max) {
        levels.push(max);
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_and_full_plans_and_overrides() {
        let quick = Args::parse_from(["nexus-bench", "--quick"]).plan();
        assert_eq!((quick.iterations, quick.idle, quick.many), (20, 10, 50));
        assert_eq!(
            (
                quick.heavy_iterations,
                quick.transfer_mib,
                quick.small_files
            ),
            (5, 256, 1_000)
        );
        let full = Args::parse_from(["nexus-bench"]).plan();
        assert_eq!((full.iterations, full.idle, full.many), (100, 50, 200));
        assert_eq!((full.workspace_mib, full.small_files), (1024, 10_000));
        let custom = Args::parse_from(["nexus-bench", "--quick", "--many", "7"]).plan();
        assert_eq!((custom.many, custom.concurrency), (7, 8));
        assert!(Args::try_parse_from(["nexus-bench", "--iterations", "0"]).is_err());
    }

    #[test]
    fn curve_levels_by_mode_and_curve_max() {
        let quick = Args::parse_from(["nexus-bench", "--quick"]).plan();
        assert_eq!(
            (quick.curve_levels, quick.curve_probes),
            (vec![1, 10, 100], 10)
        );
        let full = Args::parse_from(["nexus-bench"]).plan();
        assert_eq!(
            (full.curve_levels, full.curve_probes),
            (vec![1, 10, 100, 1_000], 100)
        );
        let levels = |max: &str| {
            Args::parse_from(["nexus-bench", "--quick", "--curve-max", max])
                .plan()
                .curve_levels
        };
        assert_eq!(levels("10"), [1, 10]);
        assert_eq!(levels("1"), [1]);
        assert_eq!(levels("250"), [1, 10, 100, 250]);
        assert_eq!(levels("1000"), [1, 10, 100, 1_000]);
        assert_eq!(levels("10000"), [1, 10, 100, 1_000, 10_000]);
        let custom = Args::parse_from(["nexus-bench", "--curve-max", "5"]).plan();
        assert_eq!(
            (custom.curve_levels, custom.curve_probes),
            (vec![1, 5], 100)
        );
        assert!(Args::try_parse_from(["nexus-bench", "--curve-max", "0"]).is_err());
    }
}
