//! Integration tests of `nexusd`: a real daemon process, real SQLite file, real HTTP.

mod api;
mod config;
mod harness;
mod lifecycle;
mod pause;
mod processes;
mod sandboxes;
mod security;
