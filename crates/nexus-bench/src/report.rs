//! The report: every figure of a run, the peers' ratios, the targets of issue 3 with
//! whether they were met, rendered as tables on stdout and as JSON.

use std::io::Write;

use comfy_table::{Table, presets};
use serde::Serialize;

use crate::curve::Curve;
use crate::machine::Machine;
use crate::measure::{IdleMemory, Many, Plan};
use crate::stats::{Rates, Samples, Summary};
use crate::workspaces;

/// Whose figure an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Nexus itself.
    Nexus,
    /// A tool it is compared with.
    Peer,
}

/// One measured (or skipped) operation.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// Its name in the table, e.g. `create_running`.
    pub name: String,
    /// Nexus or peer.
    pub group: Group,
    /// The distribution of its successful attempts.
    pub summary: Option<Summary>,
    /// Failed attempts.
    pub errors: usize,
    /// What the first failure said.
    pub first_error: Option<String>,
    /// Why it was not measured.
    pub skipped: Option<String>,
    /// What exactly was measured, when the name does not say it all (sizes, backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Operation {
    /// A measured operation.
    pub fn measured(name: &str, group: Group, samples: Samples) -> Self {
        Self {
            name: name.into(),
            group,
            summary: Summary::of_durations(&samples.durations),
            errors: samples.errors,
            first_error: samples.first_error,
            skipped: None,
            note: None,
        }
    }

    /// A measured throughput: one rate per successful attempt, in MiB/s.
    pub fn throughput(name: &str, group: Group, rates: &Rates) -> Self {
        Self {
            name: name.into(),
            group,
            summary: Summary::of(&rates.mib_per_s, "MiB/s"),
            errors: rates.errors,
            first_error: rates.first_error.clone(),
            skipped: None,
            note: None,
        }
    }

    /// The same operation with a note saying what exactly was measured.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// An operation that could not be measured here.
    pub fn skipped(name: &str, group: Group, reason: String) -> Self {
        Self {
            name: name.into(),
            group,
            summary: None,
            errors: 0,
            first_error: None,
            skipped: Some(reason),
            note: None,
        }
    }
}

/// A Nexus figure next to a peer's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The Nexus operation.
    pub nexus: &'static str,
    /// The peer operation.
    pub peer: &'static str,
    /// Nexus p50, when measured.
    pub nexus_p50_ms: Option<f64>,
    /// Peer p50, when measured.
    pub peer_p50_ms: Option<f64>,
    /// `nexus_p50 / peer_p50`: below 1 means Nexus is faster.
    pub ratio: Option<f64>,
}

/// Whether a target of issue 3 holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It holds.
    Met,
    /// It does not.
    NotMet,
    /// This run did not measure it (skipped, or quick mode too small).
    NotMeasured,
}

/// One target and what this run measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: &'static str,
    /// The goal, as issue 3 states it.
    pub goal: &'static str,
    /// The figure, as text.
    pub measured: String,
    /// Whether it holds.
    pub verdict: Verdict,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Version of this benchmark (that of the workspace).
    pub version: &'static str,
    /// `quick` or `full`.
    pub mode: &'static str,
    /// The machine.
    pub machine: Machine,
    /// How much was measured.
    pub plan: Plan,
    /// Every operation, Nexus first.
    pub operations: Vec<Operation>,
    /// Idle memory details.
    pub idle_memory: Option<IdleMemory>,
    /// Many-sandboxes details.
    pub many: Option<Many>,
    /// The density curve: create latency and memory at each number of sandboxes.
    pub curve: Option<Curve>,
    /// Nexus against its peers.
    pub comparisons: Vec<Comparison>,
    /// The targets of issue 3.
    pub targets: Vec<Target>,
    /// Cleanup and harness remarks.
    pub notes: Vec<String>,
    /// Wall time of the whole run, in seconds.
    pub wall_s: f64,
}

/// Sandboxes below which the curve's host memory per sandbox is not judged: the host's
/// `MemAvailable` moves by a few MiB on its own, which at 10 sandboxes is a few hundred
/// KiB each.
const OVERHEAD_MIN_SANDBOXES: usize = 100;

/// Pairs shown side by side: (Nexus operation, peer operation).
const PAIRS: [(&str, &str); 10] = [
    ("create_running", "bwrap_spawn"),
    ("create_running", "podman_run"),
    ("exec_true_api", "fork_exec_true"),
    ("exec_true_api", "podman_exec"),
    ("nexusctl_exec_true", "fork_exec_true"),
    ("nexusctl_exec_true", "podman_exec"),
    ("net_connect_transparent", "net_connect_direct"),
    ("net_connect_proxy", "net_connect_direct"),
    ("mcp_file_read_1k", "file_read_1k"),
    ("mcp_run_true", "exec_true_api"),
];

impl Report {
    /// Derives comparisons and targets from the figures.
    pub fn finish(&mut self) {
        self.comparisons = PAIRS
            .iter()
            .map(|&(nexus, peer)| {
                let nexus_p50_ms = self.p50(nexus);
                let peer_p50_ms = self.p50(peer);
                let ratio = match (nexus_p50_ms, peer_p50_ms) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                Comparison {
                    nexus,
                    peer,
                    nexus_p50_ms,
                    peer_p50_ms,
                    ratio,
                }
            })
            .collect();
        self.targets = vec![
            self.latency_target("create→running p50", "≤ 15 ms", "create_running", 15.0),
            self.latency_target(
                "create→running from the warm pool p50 (issue 8)",
                "≤ 2 ms",
                "create_running_pooled",
                2.0,
            ),
            self.latency_target(
                "exec round trip of `true` p50",
                "≤ 2 ms",
                "exec_true_api",
                2.0,
            ),
            self.latency_target(
                "exec round trip of `true` p50 (issue 8)",
                "≤ 1 ms",
                "exec_true_api",
                1.0,
            ),
            self.latency_target(
                "`nexusctl exec SB -- true` as a whole process p50 (issue 8)",
                "≤ 5 ms",
                "nexusctl_exec_true",
                5.0,
            ),
            self.memory_target(),
            self.many_target(),
            self.density_target(),
            self.overhead_target(),
            self.latency_target("pause p50 (issue 4)", "≤ 5 ms", "pause", 5.0),
            self.latency_target("resume p50 (issue 4)", "≤ 5 ms", "resume", 5.0),
            self.latency_target(
                "file read of 1 KiB p50 (issue 4)",
                "≤ 0.1 ms",
                "file_read_1k",
                0.1,
            ),
            self.latency_target(
                "bulk stat of 100 files p50 (issue 4)",
                "≤ 0.5 ms",
                "file_stat_100",
                0.5,
            ),
            self.throughput_target(
                "file download throughput p50 (issue 4)",
                "≥ 500 MiB/s",
                "file_download_1g",
                500.0,
                "file",
            ),
            self.throughput_target(
                "output streaming throughput p50 (issue 8)",
                "≥ 1024 MiB/s",
                crate::streaming::NAME,
                1024.0,
                "of stdout",
            ),
            self.throughput_target(
                "download through the egress proxy p50 (issue 5)",
                "≥ 1024 MiB/s",
                "net_download_transparent",
                1024.0,
                "per connection",
            ),
            self.full_size_target(
                "snapshot of a 1 GiB workspace on btrfs p50 (issue 4)",
                "≤ 50 ms",
                "snapshot_btrfs",
                50.0,
            ),
            self.full_size_target(
                "fork of a 1 GiB workspace on btrfs p50 (issue 4)",
                "≤ 50 ms",
                "workspace_fork_btrfs",
                50.0,
            ),
        ];
    }

    /// Writes the human-readable report.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let m = &self.machine;
        writeln!(out, "# nexus-bench {} ({} mode)", self.version, self.mode)?;
        writeln!(out)?;
        writeln!(
            out,
            "machine: {} cores, {} memory, kernel {}, cgroups {}, {}, load average {} at start",
            m.cores,
            m.memory_mib
                .map_or_else(|| "unknown".into(), |mib| format!("{mib} MiB")),
            m.kernel,
            m.cgroup.label(),
            if m.root { "as root" } else { "not root" },
            m.load_1m
                .map_or_else(|| "unknown".into(), |l| format!("{l:.2}"))
        )?;
        let p = &self.plan;
        let levels: Vec<String> = p.curve_levels.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "plan: {} iterations per latency, {} idle sandboxes, {} at once ({} concurrent), curve at {} ({} creates each); run took {:.1} s",
            p.iterations,
            p.idle,
            p.many,
            p.concurrency,
            levels.join("/"),
            p.curve_probes,
            self.wall_s
        )?;
        writeln!(out)?;
        writeln!(out, "{}", self.operations_table())?;
        for op in &self.operations {
            if let Some(reason) = &op.skipped {
                writeln!(out, "{}: skipped: {reason}", op.name)?;
            } else if let Some(error) = &op.first_error {
                writeln!(out, "{}: {} error(s), first: {error}", op.name, op.errors)?;
            }
            if let Some(note) = &op.note {
                writeln!(out, "{}: {note}", op.name)?;
            }
        }
        if let Some(idle) = &self.idle_memory {
            write_idle(out, idle)?;
        }
        if let Some(many) = &self.many {
            writeln!(
                out,
                "many: {} sandboxes, {} at a time: creates {:.2} s ({} errors), exec `true` in each {:.2} s ({} errors), deletes {:.2} s ({} errors)",
                many.count,
                many.concurrency,
                many.create_total_s,
                many.create_errors,
                many.exec_total_s,
                many.exec_errors,
                many.delete_total_s,
                many.delete_errors
            )?;
        }
        if let Some(curve) = &self.curve {
            write_curve(out, curve)?;
        }
        writeln!(out)?;
        writeln!(out, "## Against peers (p50; ratio = Nexus / peer)")?;
        writeln!(out)?;
        writeln!(out, "{}", self.comparisons_table())?;
        writeln!(out)?;
        writeln!(out, "## Targets (issue 3 unless marked)")?;
        writeln!(out)?;
        writeln!(out, "{}", self.targets_table())?;
        for note in &self.notes {
            writeln!(out, "note: {note}")?;
        }
        Ok(())
    }

    fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.name == name)
    }

    fn p50(&self, name: &str) -> Option<f64> {
        self.operation(name)?.summary.as_ref().map(|s| s.p50)
    }

    fn latency_target(
        &self,
        what: &'static str,
        goal: &'static str,
        name: &str,
        limit_ms: f64,
    ) -> Target {
        let (measured, verdict) = match self.p50(name) {
            Some(p50) => (format!("{} ms", fmt(p50)), verdict(p50 <= limit_ms)),
            None => ("not measured".into(), Verdict::NotMeasured),
        };
        Target {
            what,
            goal,
            measured,
            verdict,
        }
    }

    /// A rate that should be at least `min`, judged on its median; the figure says it
    /// moved `transfer_mib` MiB `moved` (`file`, `per connection`).
    fn throughput_target(
        &self,
        what: &'static str,
        goal: &'static str,
        name: &str,
        min: f64,
        moved: &str,
    ) -> Target {
        let summary = self.operation(name).and_then(|op| op.summary.as_ref());
        let (measured, verdict) = match summary {
            Some(s) => (
                format!(
                    "{} {} ({} MiB {moved})",
                    fmt(s.p50),
                    s.unit,
                    self.plan.transfer_mib
                ),
                verdict(s.p50 >= min),
            ),
            None => ("not measured".into(), Verdict::NotMeasured),
        };
        Target {
            what,
            goal,
            measured,
            verdict,
        }
    }

    /// A latency target stated for the full-mode workspace: a quick run shows its
    /// figure but does not judge it.
    fn full_size_target(
        &self,
        what: &'static str,
        goal: &'static str,
        name: &str,
        limit_ms: f64,
    ) -> Target {
        let mut target = self.latency_target(what, goal, name, limit_ms);
        if target.verdict != Verdict::NotMeasured {
            target.measured = format!(
                "{} with {}",
                target.measured,
                workspaces::contents(&self.plan)
            );
            if self.mode != "full" {
                target.verdict = Verdict::NotMeasured;
            }
        }
        target
    }

    fn memory_target(&self) -> Target {
        let mean = self
            .idle_memory
            .as_ref()
            .and_then(|i| i.per_sandbox.as_ref())
            .map(|s| s.mean);
        let (measured, verdict) = match mean {
            Some(mib) => (format!("{} MiB (mean Pss)", fmt(mib)), verdict(mib <= 4.0)),
            None => ("not measured".into(), Verdict::NotMeasured),
        };
        Target {
            what: "idle host memory per sandbox",
            goal: "≤ 4 MiB",
            measured,
            verdict,
        }
    }

    fn many_target(&self) -> Target {
        let what = "sandboxes running at once without errors";
        let goal = "200, 0 errors";
        let Some(many) = &self.many else {
            return Target {
                what,
                goal,
                measured: "not measured".into(),
                verdict: Verdict::NotMeasured,
            };
        };
        let errors = many.create_errors + many.exec_errors;
        let measured = format!("{} at once, {errors} errors", many.count);
        let verdict = if errors > 0 {
            Verdict::NotMet
        } else if many.count >= 200 {
            Verdict::Met
        } else {
            Verdict::NotMeasured
        };
        Target {
            what,
            goal,
            measured,
            verdict,
        }
    }

    /// Create→running p99 with 1,000 idle sandboxes running (issue 8), from the curve.
    fn density_target(&self) -> Target {
        const LEVEL: usize = 1_000;
        let what = "1,000 idle sandboxes at once, create→running p99 (issue 8)";
        let goal = "≤ 50 ms";
        let not_measured = |measured: String| Target {
            what,
            goal,
            measured,
            verdict: Verdict::NotMeasured,
        };
        let Some(op) = self.operation(&format!("curve_create_running_at_{LEVEL}")) else {
            return not_measured(if self.plan.curve_levels.contains(&LEVEL) {
                "not measured".into()
            } else if self.mode == "quick" {
                "not measured in quick mode".into()
            } else {
                let largest = self.plan.curve_levels.last().copied().unwrap_or(0);
                format!("not measured (the curve stopped at {largest})")
            });
        };
        let running = self.curve_level(LEVEL).map_or(0, |level| level.sandboxes);
        let Some(summary) = &op.summary else {
            return if op.errors > 0 {
                Target {
                    what,
                    goal,
                    measured: format!("every create failed ({} errors)", op.errors),
                    verdict: Verdict::NotMet,
                }
            } else {
                not_measured("not measured".into())
            };
        };
        let mut measured = format!("{} ms with {running} running", fmt(summary.p99));
        if op.errors > 0 {
            measured.push_str(&format!(", {} create errors", op.errors));
        }
        Target {
            what,
            goal,
            measured,
            verdict: verdict(summary.p99 <= 50.0 && op.errors == 0 && running >= LEVEL),
        }
    }

    /// Host memory per idle sandbox at the curve's largest point (issue 8): the drop of
    /// `MemAvailable`, so everything a sandbox costs the host. A whole-host figure is
    /// judged only with [`OVERHEAD_MIN_SANDBOXES`] or more and `MemAvailable` settled.
    fn overhead_target(&self) -> Target {
        let what = "idle overhead per sandbox, host MemAvailable drop (issue 8)";
        let goal = "≤ 3 MiB";
        let largest = self.plan.curve_levels.last().copied();
        let mib = largest.and_then(|level| {
            let name = format!("curve_host_memory_per_sandbox_at_{level}");
            Some((level, self.operation(&name)?.summary.as_ref()?.p50))
        });
        let (measured, verdict) = match mib {
            Some((level, mib)) => {
                let point = self.curve_level(level);
                let running = point.map_or(level, |l| l.sandboxes);
                let settled = point.is_some_and(|l| l.memory_settled)
                    && self.curve.as_ref().is_some_and(|c| c.baseline_settled);
                let measured = format!("{} MiB with {running} running", fmt(mib));
                if running < OVERHEAD_MIN_SANDBOXES {
                    (
                        format!("{measured} (too few to judge: {OVERHEAD_MIN_SANDBOXES} or more)"),
                        Verdict::NotMeasured,
                    )
                } else if !settled {
                    (
                        format!("{measured} (MemAvailable had not settled)"),
                        Verdict::NotMeasured,
                    )
                } else {
                    (measured, verdict(mib <= 3.0))
                }
            }
            None => ("not measured".into(), Verdict::NotMeasured),
        };
        Target {
            what,
            goal,
            measured,
            verdict,
        }
    }

    /// The point of the curve measured for `level` sandboxes.
    fn curve_level(&self, level: usize) -> Option<&crate::curve::Level> {
        let index = self.plan.curve_levels.iter().position(|&l| l == level)?;
        self.curve.as_ref()?.levels.get(index)
    }

    fn operations_table(&self) -> Table {
        let mut table = new_table(&[
            "operation",
            "kind",
            "n",
            "p50",
            "p90",
            "p99",
            "max",
            "unit",
            "errors",
        ]);
        for op in &self.operations {
            let kind = match op.group {
                Group::Nexus => "nexus",
                Group::Peer => "peer",
            };
            let row: Vec<String> = match (&op.summary, &op.skipped) {
                (Some(s), _) => vec![
                    op.name.clone(),
                    kind.into(),
                    s.n.to_string(),
                    fmt(s.p50),
                    fmt(s.p90),
                    fmt(s.p99),
                    fmt(s.max),
                    s.unit.into(),
                    op.errors.to_string(),
                ],
                (None, skipped) => {
                    let dash = if skipped.is_some() { "skipped" } else { "-" };
                    let mut row = vec![op.name.clone(), kind.into(), "0".into()];
                    row.extend(std::iter::repeat_n(dash.to_owned(), 5));
                    row.push(op.errors.to_string());
                    row
                }
            };
            table.add_row(row);
        }
        table
    }

    fn comparisons_table(&self) -> Table {
        let mut table = new_table(&["nexus", "p50 ms", "peer", "p50 ms", "ratio"]);
        for c in &self.comparisons {
            let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), fmt);
            let ratio = match (c.ratio, c.peer_p50_ms) {
                (Some(r), _) => format!("{r:.2}×"),
                (None, None) => "peer skipped".into(),
                (None, Some(_)) => "-".into(),
            };
            table.add_row(vec![
                c.nexus.to_owned(),
                ms(c.nexus_p50_ms),
                c.peer.to_owned(),
                ms(c.peer_p50_ms),
                ratio,
            ]);
        }
        table
    }

    fn targets_table(&self) -> Table {
        let mut table = new_table(&["target", "goal", "measured", "status"]);
        for t in &self.targets {
            let status = match t.verdict {
                Verdict::Met => "met",
                Verdict::NotMet => "NOT MET",
                Verdict::NotMeasured => "not measured (run full mode)",
            };
            table.add_row(vec![t.what, t.goal, &t.measured, status]);
        }
        table
    }
}

fn write_idle(out: &mut impl Write, idle: &IdleMemory) -> std::io::Result<()> {
    let mean = idle
        .per_sandbox
        .as_ref()
        .map_or_else(|| "-".into(), |s| fmt(s.mean));
    let charged = idle
        .cgroup_per_sandbox
        .as_ref()
        .map_or_else(|| "-".into(), |s| fmt(s.mean));
    let opt = |v: Option<f64>| v.map_or_else(|| "?".into(), fmt);
    writeln!(
        out,
        "idle memory: {} of {} sandboxes measured, mean {mean} MiB Pss each over {:.1} host processes (found by {}), mean {charged} MiB charged to each memory cgroup; daemon RSS {} → {} MiB, {} MiB per sandbox",
        idle.measured,
        idle.requested,
        idle.processes_per_sandbox,
        idle.found_by,
        opt(idle.daemon_rss_before_mib),
        opt(idle.daemon_rss_after_mib),
        opt(idle.daemon_growth_per_sandbox_mib),
    )
}

fn write_curve(out: &mut impl Write, curve: &Curve) -> std::io::Result<()> {
    let start = match curve.baseline_wait_s {
        Some(s) if curve.baseline_settled => {
            format!("start read once MemAvailable settled ({s:.0} s)")
        }
        Some(s) => format!("start read with MemAvailable still moving after {s:.0} s"),
        None => "MemAvailable not readable".into(),
    };
    writeln!(
        out,
        "curve: {} creates timed at each point, fills {} at a time, {start}, {} deletes failed at the end:",
        curve.probes, curve.concurrency, curve.delete_errors
    )?;
    let opt = |v: Option<f64>| v.map_or_else(|| "?".into(), fmt);
    for level in &curve.levels {
        let unsettled = if level.memory_settled {
            ""
        } else {
            " (MemAvailable not settled)"
        };
        writeln!(
            out,
            "  {} running: create p50 {} ms, p99 {} ms; host {} MiB per sandbox{unsettled}; daemon RSS {} MiB; filled in {:.2} s ({} errors)",
            level.sandboxes,
            opt(level.create_p50_ms),
            opt(level.create_p99_ms),
            opt(level.host_mib_per_sandbox),
            opt(level.daemon_rss_mib),
            level.fill_s,
            level.fill_errors
        )?;
    }
    Ok(())
}

fn verdict(met: bool) -> Verdict {
    if met { Verdict::Met } else { Verdict::NotMet }
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::ASCII_MARKDOWN);
    table.set_header(header.to_vec());
    table
}

/// Three decimals below 1 (sub-millisecond connects), two below 100, one above: enough
/// for milliseconds and MiB alike.
fn fmt(value: f64) -> String {
    if value.abs() < 1.0 {
        format!("{value:.3}")
    } else if value.abs() < 100.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::args::Args;
    use crate::curve::Level;

    /// A report of the plan `flags` make, its whole curve measured with `create_ms` as the
    /// create time and `mib` as the memory per sandbox at every point.
    fn report(flags: &[&str], create_ms: u64, mib: f64) -> Report {
        let plan = Args::parse_from(flags).plan();
        let mut operations = Vec::new();
        let mut levels = Vec::new();
        for &level in &plan.curve_levels {
            let samples = Samples {
                durations: vec![Duration::from_millis(create_ms); plan.curve_probes],
                ..Samples::default()
            };
            operations.push(Operation::measured(
                &format!("curve_create_running_at_{level}"),
                Group::Nexus,
                samples,
            ));
            operations.push(Operation {
                name: format!("curve_host_memory_per_sandbox_at_{level}"),
                group: Group::Nexus,
                summary: Summary::of(&[mib], "MiB"),
                errors: 0,
                first_error: None,
                skipped: None,
                note: None,
            });
            levels.push(Level {
                sandboxes: level,
                fill_errors: 0,
                fill_s: 0.5,
                create_p50_ms: Some(create_ms as f64),
                create_p99_ms: Some(create_ms as f64),
                host_mib_per_sandbox: Some(mib),
                daemon_rss_mib: Some(30.0),
                memory_settled: true,
            });
        }
        let mut report = Report {
            version: "test",
            mode: if flags.contains(&"--quick") {
                "quick"
            } else {
                "full"
            },
            machine: Machine::probe(),
            curve: Some(Curve {
                probes: plan.curve_probes,
                concurrency: plan.concurrency,
                levels,
                delete_errors: 0,
                baseline_wait_s: Some(2.0),
                baseline_settled: true,
            }),
            plan,
            operations,
            idle_memory: None,
            many: None,
            comparisons: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
            wall_s: 1.0,
        };
        report.finish();
        report
    }

    fn target<'a>(report: &'a Report, prefix: &str) -> &'a Target {
        report
            .targets
            .iter()
            .find(|t| t.what.starts_with(prefix))
            .expect("the target is listed")
    }

    #[test]
    fn density_targets_are_judged_from_the_curve() {
        let full = report(&["nexus-bench"], 40, 2.5);
        let density = target(&full, "1,000 idle sandboxes");
        assert_eq!(density.verdict, Verdict::Met);
        assert_eq!(density.measured, "40.00 ms with 1000 running");
        let overhead = target(&full, "idle overhead");
        assert_eq!(overhead.verdict, Verdict::Met);
        assert_eq!(overhead.measured, "2.50 MiB with 1000 running");

        let slow = report(&["nexus-bench"], 60, 3.5);
        assert_eq!(
            target(&slow, "1,000 idle sandboxes").verdict,
            Verdict::NotMet
        );
        assert_eq!(target(&slow, "idle overhead").verdict, Verdict::NotMet);

        let quick = report(&["nexus-bench", "--quick"], 40, 2.5);
        let density = target(&quick, "1,000 idle sandboxes");
        assert_eq!(density.verdict, Verdict::NotMeasured);
        assert_eq!(density.measured, "not measured in quick mode");
        let overhead = target(&quick, "idle overhead");
        assert_eq!(overhead.measured, "2.50 MiB with 100 running");
        assert_eq!(overhead.verdict, Verdict::Met);
        let smoke = report(&["nexus-bench", "--quick", "--curve-max", "10"], 40, 2.5);
        let overhead = target(&smoke, "idle overhead");
        assert_eq!(
            overhead.measured,
            "2.50 MiB with 10 running (too few to judge: 100 or more)"
        );
        assert_eq!(overhead.verdict, Verdict::NotMeasured);
        let mut unsettled = report(&["nexus-bench"], 40, 2.5);
        if let Some(curve) = &mut unsettled.curve {
            curve.baseline_settled = false;
        }
        unsettled.finish();
        assert_eq!(
            target(&unsettled, "idle overhead").verdict,
            Verdict::NotMeasured
        );

        let short = report(&["nexus-bench", "--curve-max", "250"], 40, 2.5);
        assert_eq!(
            target(&short, "1,000 idle sandboxes").measured,
            "not measured (the curve stopped at 250)"
        );
        assert_eq!(
            target(&short, "idle overhead").measured,
            "2.50 MiB with 250 running"
        );
    }

    #[test]
    fn the_curve_section_has_a_line_per_point() {
        let quick = report(&["nexus-bench", "--quick"], 20, 1.25);
        let mut out = Vec::new();
        quick.print(&mut out).expect("printed");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            text.contains("curve at 1/10/100 (10 creates each)"),
            "{text}"
        );
        assert!(
            text.contains(
                "  100 running: create p50 20.00 ms, p99 20.00 ms; host 1.25 MiB per sandbox; daemon RSS 30.00 MiB; filled in 0.50 s (0 errors)"
            ),
            "{text}"
        );
    }
}
