//! The doctor table for terminals (format of seed 003, "Self-Check").

use std::fmt::Write as _;

use super::{Check, CheckStatus, DoctorReport};

/// Width of the `─` rule above and below the checks.
const RULE_WIDTH: usize = 50;
/// Column where details start, counted from the name.
const NAME_WIDTH: usize = 26;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

pub(super) fn render(report: &DoctorReport, color: bool) -> String {
    let rule = "─".repeat(RULE_WIDTH);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "nexus doctor\n{rule}");
    for check in &report.checks {
        render_check(&mut out, check, color);
    }
    let _ = writeln!(out, "{rule}");

    let names = |checks: &[&Check]| {
        checks
            .iter()
            .map(|check| check.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let required: Vec<&Check> = report.failed(true).collect();
    let other: Vec<&Check> = report.failed(false).collect();
    if required.is_empty() {
        let _ = writeln!(out, "  All required checks passed.");
    } else {
        let _ = writeln!(
            out,
            "  {} required check(s) failed: {}",
            required.len(),
            names(&required)
        );
    }
    if !other.is_empty() {
        let _ = writeln!(
            out,
            "  {} other check(s) failed: {} (not required by the {} driver)",
            other.len(),
            names(&other),
            report.default_driver.name()
        );
    }
    out
}

fn render_check(out: &mut String, check: &Check, color: bool) {
    let (mark, paint, label) = match check.status {
        CheckStatus::Pass => ("✓", GREEN, None),
        CheckStatus::Fail => ("✗", RED, Some("fix")),
        CheckStatus::Skip => ("─", DIM, Some("hint")),
    };
    let mark = if color {
        format!("{paint}{mark}{RESET}")
    } else {
        mark.to_owned()
    };
    // Names are ASCII, so byte and column counts agree; a long name still gets a space.
    let name = format!("{:<width$}", check.name, width = NAME_WIDTH - 1);
    let line = format!("  {mark} {name} {}", check.detail);
    let _ = writeln!(out, "{}", line.trim_end());
    if let (Some(label), Some(fix)) = (label, &check.fix) {
        let _ = writeln!(out, "      {label}: {fix}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::DefaultDriver;
    use super::*;

    fn check(name: &str, status: CheckStatus, detail: &str, fix: Option<&str>) -> Check {
        Check {
            name: name.to_owned(),
            status,
            detail: detail.to_owned(),
            fix: fix.map(str::to_owned),
            required: false,
        }
    }

    fn sample() -> DoctorReport {
        let mut bwrap = check("bwrap", CheckStatus::Pass, "bubblewrap 0.8.0", None);
        bwrap.required = true;
        DoctorReport {
            default_driver: DefaultDriver::Bwrap,
            checks: vec![
                bwrap,
                check(
                    "cgroup_memory",
                    CheckStatus::Fail,
                    "not delegated by /sys/fs/cgroup",
                    Some("run nexusd with Delegate=yes"),
                ),
                check(
                    "mmdebstrap",
                    CheckStatus::Skip,
                    "not installed (needed for hermetic images)",
                    Some("sudo apt-get install -y mmdebstrap"),
                ),
                check("kvm", CheckStatus::Pass, "", None),
            ],
        }
    }

    #[test]
    fn renders_the_seed_table_format() {
        let expected = "\
nexus doctor
──────────────────────────────────────────────────
  ✓ bwrap                     bubblewrap 0.8.0
  ✗ cgroup_memory             not delegated by /sys/fs/cgroup
      fix: run nexusd with Delegate=yes
  ─ mmdebstrap                not installed (needed for hermetic images)
      hint: sudo apt-get install -y mmdebstrap
  ✓ kvm
──────────────────────────────────────────────────
  All required checks passed.
  1 other check(s) failed: cgroup_memory (not required by the bwrap driver)
";
        assert_eq!(render(&sample(), false), expected);
    }

    #[test]
    fn details_start_at_the_same_column_as_the_seed() {
        // From seed 003: "  ✓ git                       git version 2.x.x".
        let seed_column = "  ✓ git                       ".chars().count();
        let table = render(&sample(), false);
        let line = table
            .lines()
            .find(|line| line.contains("bubblewrap"))
            .expect("bwrap line");
        let column = line.chars().count() - "bubblewrap 0.8.0".len();
        assert_eq!(column, seed_column);
        assert_eq!(
            table.lines().nth(1).map(|rule| rule.chars().count()),
            Some(50)
        );
    }

    #[test]
    fn summary_lists_required_failures() {
        let mut report = sample();
        report.checks[0].status = CheckStatus::Fail;
        report.checks[0].fix = Some("sudo apt-get install -y bubblewrap".to_owned());
        let table = render(&report, false);
        assert!(
            table.contains("  1 required check(s) failed: bwrap\n"),
            "{table}"
        );
        assert!(!table.contains("All required checks passed"));
    }

    #[test]
    fn long_names_keep_a_space_before_the_detail() {
        let mut report = sample();
        report.checks = vec![check(&"n".repeat(30), CheckStatus::Pass, "d", None)];
        let table = render(&report, false);
        assert!(table.contains(&format!("  ✓ {} d\n", "n".repeat(30))));
    }

    #[test]
    fn color_paints_only_the_marks() {
        let table = render(&sample(), true);
        assert!(table.contains("  \x1b[32m✓\x1b[0m bwrap "));
        assert!(table.contains("  \x1b[31m✗\x1b[0m cgroup_memory "));
        assert!(table.contains("  \x1b[2m─\x1b[0m mmdebstrap "));
        assert!(!render(&sample(), false).contains('\x1b'));
    }
}
