//! The reaper task: on every SIGCHLD (and every few seconds, in case one was missed)
//! collects all exited children through [`Table::reap`].

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;

use crate::procs::Table;

/// A sweep even without SIGCHLD; costs one `waitpid` call.
const SWEEP: Duration = Duration::from_secs(5);

/// Reaps forever. `sigchld` must have been created before the first child was started.
pub async fn run(table: Arc<Table>, mut sigchld: Signal) {
    loop {
        table.reap();
        tokio::select! {
            _ = sigchld.recv() => {}
            () = tokio::time::sleep(SWEEP) => {}
        }
    }
}
