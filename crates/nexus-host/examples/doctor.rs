//! Runs the doctor on this host: `cargo run -p nexus-host --example doctor [-- --json] [BWRAP]`.
#![expect(clippy::print_stdout, reason = "an example prints its report")]

use nexus_host::{DoctorOptions, doctor};

fn main() {
    let mut options = DoctorOptions::default();
    let mut json = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => json = true,
            path => options.bwrap_path = path.into(),
        }
    }
    let started = std::time::Instant::now();
    let report = doctor::run(&options);
    let took = started.elapsed();
    if json {
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        println!("{text}");
    } else {
        print!("{}", report.render(std::env::var_os("NO_COLOR").is_none()));
        println!("(took {took:?})");
    }
    std::process::exit(if report.ok() { 0 } else { 1 });
}
