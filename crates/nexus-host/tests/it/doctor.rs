//! The whole doctor on this host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nexus_host::doctor::{self, CHECK_NAMES};
use nexus_host::{CheckStatus, DefaultDriver, DoctorOptions, DoctorReport, tools};

use crate::skipped;

fn status(report: &DoctorReport, name: &str) -> CheckStatus {
    report.check(name).map(|check| check.status).expect(name)
}

#[test]
fn real_doctor_reports_every_check_in_order() {
    let started = Instant::now();
    let report = doctor::run(&DoctorOptions::default());
    let took = started.elapsed();
    eprintln!("{}(took {took:?})", report.render(false));

    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECK_NAMES);
    for check in &report.checks {
        if check.status == CheckStatus::Fail {
            assert!(
                check.fix.is_some(),
                "every failure carries a fix: {check:?}"
            );
        }
        assert!(
            !check.detail.contains('\n'),
            "details are one line: {check:?}"
        );
        assert_eq!(check.required, DefaultDriver::Bwrap.requires(&check.name));
    }

    let table = report.render(false);
    for name in CHECK_NAMES {
        assert!(
            table.contains(&format!(" {name} ")),
            "{name} missing from\n{table}"
        );
    }
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["ok"], report.ok());
    assert_eq!(json["default_driver"], "bwrap");
    assert_eq!(
        json["checks"].as_array().map(Vec::len),
        Some(CHECK_NAMES.len())
    );
}

#[test]
fn installed_bwrap_passes_both_bwrap_checks() {
    if tools::find_program(Path::new("bwrap")).is_none() {
        skipped(
            "installed_bwrap_passes_both_bwrap_checks",
            "bubblewrap is not installed",
        );
        return;
    }
    let report = doctor::run(&DoctorOptions::default());
    assert_eq!(
        status(&report, "bwrap"),
        CheckStatus::Pass,
        "{}",
        report.render(false)
    );
    let detail = &report.check("bwrap").expect("bwrap").detail;
    assert!(detail.starts_with("bubblewrap "), "{detail}");
    assert_eq!(
        status(&report, "bwrap_functional"),
        CheckStatus::Pass,
        "{}",
        report.render(false)
    );
}

#[test]
fn bogus_bwrap_path_fails_the_bwrap_driver_but_not_the_host_driver() {
    let bogus = PathBuf::from("/nonexistent/nexus/bwrap");
    let report = doctor::run(&DoctorOptions {
        default_driver: DefaultDriver::Bwrap,
        bwrap_path: bogus.clone(),
    });
    for name in ["bwrap", "bwrap_functional"] {
        let check = report.check(name).expect(name);
        assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
        assert!(check.required);
    }
    assert!(!report.ok());
    let table = report.render(false);
    assert!(
        table.contains("required check(s) failed: bwrap, bwrap_functional"),
        "{table}"
    );
    assert!(
        table.contains("/nonexistent/nexus/bwrap not found"),
        "{table}"
    );

    let report = doctor::run(&DoctorOptions {
        default_driver: DefaultDriver::Host,
        bwrap_path: bogus,
    });
    assert_eq!(status(&report, "bwrap"), CheckStatus::Fail);
    assert!(report.checks.iter().all(|check| !check.required));
    assert!(report.ok(), "the host driver needs nothing");
    assert!(report.render(false).contains("All required checks passed."));
}

#[test]
fn a_hanging_bwrap_cannot_hang_the_doctor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bwrap = dir.path().join("bwrap");
    // Written by a child process: an fd open for writing in this multi-threaded test
    // process could leak into a concurrent fork and make exec fail with ETXTBSY.
    let written = Command::new("sh")
        .args([
            "-c",
            "printf '#!/bin/sh\\nsleep 30\\n' > \"$1\" && chmod 755 \"$1\"",
            "sh",
        ])
        .arg(&bwrap)
        .status()
        .expect("sh runs");
    assert!(written.success());

    let started = Instant::now();
    let report = doctor::run(&DoctorOptions {
        default_driver: DefaultDriver::Bwrap,
        bwrap_path: bwrap,
    });
    // Both bwrap probes time out concurrently; far below the fake's 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let check = report.check("bwrap_functional").expect("bwrap_functional");
    assert_eq!(check.status, CheckStatus::Fail);
    assert!(check.detail.contains("did not finish within"), "{check:?}");
    assert!(!report.ok());
}
