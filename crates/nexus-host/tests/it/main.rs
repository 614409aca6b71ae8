//! Integration tests: the real probes and the real doctor on this machine, checked
//! against facts established independently (other tools, direct syscalls, sysfs).

mod doctor;
mod probes;

/// Says loudly that a test could not check what it covers on this machine.
#[expect(
    clippy::print_stderr,
    reason = "a skipped test must say so in the test output"
)]
pub fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}
