//! Integration tests of `nexusd`: a real daemon process, real SQLite file, real HTTP.

mod api;
mod config;
mod console;
mod egress;
mod files;
mod harness;
mod image_builds;
mod images;
mod lifecycle;
mod mcp;
mod network;
mod pause;
mod processes;
mod sandboxes;
mod security;
mod stats;
mod terminal;
mod unprivileged;
mod warm_pool;
mod workspaces;
