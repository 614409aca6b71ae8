//! The seccomp filter on its own, installed in a child on the host: every listed syscall
//! is refused, and for the ones that are safe to run unfiltered the errno differs
//! without the filter, so each assertion fails when its rule is removed.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nexus_sandbox::seccomp::{DENIED, SeccompProgram, When};

use crate::support::{PYTHON, skipped};

/// Runs `syscall(nr, args)` for each probe in a Python child, with or without the
/// filter; returns `name errno` lines (errno 0 when the call succeeded).
fn probe(filtered: bool, probes: &[(&str, i64, &str)]) -> String {
    let mut script = String::from(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         def p(name, nr, *args):\n    ctypes.set_errno(0)\n    r = libc.syscall(nr, *args)\n    \
         print(name, ctypes.get_errno() if r == -1 else 0, flush=True)\n",
    );
    for (name, nr, args) in probes {
        script.push_str(&format!("p({name:?}, {nr}{args})\n"));
    }
    let program = SeccompProgram::native().expect("compiles");
    let instructions = program.instructions().to_vec();
    let mut command = Command::new(PYTHON);
    command.args(["-c", &script]);
    if filtered {
        // SAFETY: between fork and exec this only calls prctl and seccomp on memory
        // (the instructions) owned by the closure; nothing allocates.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                seccompiler::apply_filter(&instructions).map_err(std::io::Error::other)
            });
        }
    }
    let output = command.output().expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Syscalls whose unfiltered result here (as root, in a throwaway child) is harmless
/// and differs from EPERM, with arguments that make them fail or do nothing.
const DISCRIMINATING: &[(&str, i64, &str)] = &[
    ("ptrace", libc::SYS_ptrace, ", 0, 0, 0, 0"), // PTRACE_TRACEME succeeds
    (
        "mount",
        libc::SYS_mount,
        ", b'none', b'/nonexistent-nexus', b'tmpfs', 0, 0",
    ), // ENOENT
    ("umount2", libc::SYS_umount2, ", b'/nonexistent-nexus', 0"), // ENOENT
    ("io_uring_setup", libc::SYS_io_uring_setup, ", 1, 0"), // EFAULT
    ("unshare", libc::SYS_unshare, ", 0x10000000"), // CLONE_NEWUSER: succeeds
    ("setns", libc::SYS_setns, ", -1, 0"),        // EBADF
    ("bpf", libc::SYS_bpf, ", 9999, 0, 0"),       // EINVAL
    (
        "perf_event_open",
        libc::SYS_perf_event_open,
        ", 0, 0, -1, -1, 0",
    ), // EFAULT
    ("keyctl", libc::SYS_keyctl, ", 9999, 0, 0, 0, 0"), // EOPNOTSUPP
    ("userfaultfd", libc::SYS_userfaultfd, ", 0xffff"), // EINVAL
    (
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        ", 0, 0, 0, 0, 0, 0",
    ), // ESRCH
    (
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        ", -1, 0, 0",
    ), // EBADF
    ("clock_settime", libc::SYS_clock_settime, ", 9999, 0"), // EINVAL
    ("clone3", libc::SYS_clone3, ", 0, 0"),       // EINVAL (filtered: ENOSYS)
    ("personality", libc::SYS_personality, ", 0x0040000"), // succeeds
];

#[test]
fn each_discriminating_syscall_is_refused_only_with_the_filter() {
    if !std::path::Path::new(PYTHON).exists() {
        skipped("seccomp_rules", "python3 is missing");
        return;
    }
    let filtered = probe(true, DISCRIMINATING);
    let unfiltered = probe(false, DISCRIMINATING);
    for ((name, _, _), (with, without)) in DISCRIMINATING
        .iter()
        .zip(filtered.lines().zip(unfiltered.lines()))
    {
        let expected = if *name == "clone3" {
            libc::ENOSYS
        } else {
            libc::EPERM
        };
        assert_eq!(with, format!("{name} {expected}"), "filtered");
        assert_ne!(
            without,
            format!("{name} {expected}"),
            "the kernel alone gives another answer"
        );
    }
    assert_eq!(filtered.lines().count(), DISCRIMINATING.len(), "{filtered}");
}

#[test]
fn every_unconditional_entry_is_refused_by_the_kernel() {
    if !std::path::Path::new(PYTHON).exists() {
        skipped("seccomp_all", "python3 is missing");
        return;
    }
    let arch = nexus_sandbox::seccomp::Arch::native().expect("supported arch");
    let probes: Vec<(&str, i64, &str)> = DENIED
        .iter()
        .filter(|entry| entry.when == When::Always)
        .filter_map(|entry| Some((entry.name, entry.number(arch)?, ", 0, 0, 0, 0, 0, 0")))
        .collect();
    // Filtered, nothing runs: every call stops at the filter.
    let output = probe(true, &probes);
    for ((name, _, _), line) in probes.iter().zip(output.lines()) {
        let errno = DENIED
            .iter()
            .find(|e| e.name == *name)
            .expect("listed")
            .errno;
        assert_eq!(line, format!("{name} {errno}"));
    }
    assert_eq!(output.lines().count(), probes.len());
}
