//! Integration tests: the real storage layer on real filesystems (the machine's temporary
//! directory, and a loop-mounted btrfs image made by the test when it runs as root with
//! btrfs-progs installed), checked against independent evidence (`du`, `btrfs`).

mod btrfs;
mod local;
mod support;
mod timings;
