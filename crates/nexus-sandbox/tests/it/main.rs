//! Integration tests against the real thing: bubblewrap, cgroups, seccomp and uids on
//! this machine. Every isolation property is checked from inside a sandbox, in a way
//! that fails when the protection is removed (the comment on each test says which).

mod builds;
mod isolation;
mod lifecycle;
mod limits;
mod seccomp;
mod support;
mod workspaces;
