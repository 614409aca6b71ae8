//! Network egress for sandboxes: what a sandbox may reach ([`policy`]), and the machinery
//! that makes every outbound connection of a sandbox pass that policy.

pub mod audit;
pub mod capture;
pub mod dns;
pub mod netns;
pub mod policy;
pub mod proxy;
pub mod resolve;
mod routes;
pub mod target;
pub mod wire;
