//! Integration tests: the real `nexus-agent` binary, started as a plain child of the test
//! (no bubblewrap), driven through the real `AgentClient` over a Unix socket.

mod exec;
mod fs;
mod fs_search;
mod harness;
mod init;
mod protocol;
mod streams;
mod terminal;
