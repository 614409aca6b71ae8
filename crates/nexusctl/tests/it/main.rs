//! Integration tests of `nexusctl`: the real binary against a real daemon (started
//! in-process on an ephemeral port, with its own temporary XDG directories).

mod attach;
mod commands;
mod files;
mod harness;
mod images;
mod mcp;
mod network;
mod sandboxes;
mod stats;
mod workspaces;
