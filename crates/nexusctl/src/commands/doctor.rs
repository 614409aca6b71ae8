//! `nexusctl doctor`: local checks of what this host can enforce. Needs no daemon.

use nexus_host::doctor::{self, DefaultDriver, DoctorOptions};

use crate::output::Output;

/// Prints the report; fails when a check the default driver needs fails.
pub fn run(out: Output) -> anyhow::Result<()> {
    let report = doctor::run(&DoctorOptions {
        default_driver: DefaultDriver::Bwrap,
        ..DoctorOptions::default()
    });
    if out.json {
        out.json(&report)?;
    } else {
        out.text(&report.render(out.color))?;
    }
    if report.ok() {
        Ok(())
    } else {
        Err(crate::Quiet.into())
    }
}
