//! One module per command. Each takes parsed arguments and an [`Output`](crate::output::Output).

pub mod attach;
pub mod completion;
pub mod doctor;
pub mod exec;
pub mod fs;
pub mod image;
pub mod mcp;
pub mod network;
pub mod process;
pub mod sandbox;
pub mod stats;
pub mod status;
pub mod version;
pub mod workspace;
