//! Command-line flags of `nexus-bench` and the measurement plan they make.

use std::path::PathBuf;

use clap::Parser;

use crate::measure::Plan;

/// Measures Nexus (create→running, exec, memory, many sandboxes at once, the file API,
/// workspace snapshots, restores and forks, also on a loop-mounted btrfs, network egress
/// through the policy proxy) next to plain bubblewrap, fork+exec, podman and direct
/// loopback connections on this machine, and prints the figures. It starts
/// its own `nexusd` (the one built beside this binary) with temporary directories.
/// Timings are printed, never asserted: the exit code is 0 unless the harness failed.
#[derive(Debug, Clone, Parser)]
#[command(name = "nexus-bench", version, about, long_about = None)]
pub struct Args {
    /// Quick mode (under 2 minutes): 20 iterations, 10 idle sandboxes, 50 at once, 256 MiB
    /// transfers and workspaces (5 iterations). Full mode: 100 iterations, 50 idle
    /// sandboxes, 200 at once, 1 GiB transfers and workspaces (10 iterations).
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

    /// Requests in flight at once while creating many sandboxes.
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

impl Args {
    /// `quick` or `full`.
    pub fn mode(&self) -> &'static str {
        if self.quick { "quick" } else { "full" }
    }

    /// What to measure.
    pub fn plan(&self) -> Plan {
        let (iterations, idle, many) = if self.quick {
            (20, 10, 50)
        } else {
            (100, 50, 200)
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
        }
    }
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
}
