//! The deny list: which syscalls a sandbox may not make, when, with which errno, and why.

use super::Arch;

/// When a listed syscall is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always.
    Always,
    /// When argument `arg` has any of the bits of `flags` set (one rule per bit).
    AnyFlag {
        /// Argument index, from 0.
        arg: u8,
        /// The bits that are refused.
        flags: u64,
    },
    /// When the low 32 bits of argument `arg` equal one of `values`.
    ArgIn {
        /// Argument index, from 0.
        arg: u8,
        /// The refused values.
        values: &'static [u64],
    },
    /// When the low 32 bits of argument `arg` equal none of `values`.
    ArgNotIn {
        /// Argument index, from 0.
        arg: u8,
        /// The allowed values.
        values: &'static [u64],
    },
}

/// One entry of the deny list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The syscall's name.
    pub name: &'static str,
    /// Its number on x86_64, if it exists there.
    pub x86_64: Option<i64>,
    /// Its number on aarch64, if it exists there.
    pub aarch64: Option<i64>,
    /// When it is refused.
    pub when: When,
    /// The errno returned: `EPERM`, or `ENOSYS` to make callers fall back.
    pub errno: i32,
    /// Why it is on the list.
    pub reason: &'static str,
}

/// Namespace-creating clone/unshare flags: any of them is refused.
pub const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// `CLONE_NEWTIME`: only meaningful for `unshare` (in `clone` the bit is the exit signal).
pub(super) const CLONE_NEWTIME: u64 = 0x80;

/// Personalities that change nothing security-relevant (Linux, 32-bit uname, and the
/// query value `0xffffffff`), as Docker allows.
pub(super) const SAFE_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Terminal ioctls that inject input into, or control, a terminal the sandbox may share.
/// (`TIOCSTI` 0x5412, `TIOCLINUX` 0x541C: the same on x86_64 and aarch64; libc's type
/// for them differs between C libraries.)
pub(super) const TERMINAL_INJECTION: &[u64] = &[0x5412, 0x541C];

const fn deny(name: &'static str, x86_64: i64, aarch64: i64, reason: &'static str) -> Denied {
    Denied {
        name,
        x86_64: Some(x86_64),
        aarch64: Some(aarch64),
        when: When::Always,
        errno: libc::EPERM,
        reason,
    }
}

const fn deny_x86(name: &'static str, x86_64: i64, reason: &'static str) -> Denied {
    Denied {
        name,
        x86_64: Some(x86_64),
        aarch64: None,
        when: When::Always,
        errno: libc::EPERM,
        reason,
    }
}

const fn deny_when(
    name: &'static str,
    x86_64: i64,
    aarch64: i64,
    when: When,
    reason: &'static str,
) -> Denied {
    Denied {
        name,
        x86_64: Some(x86_64),
        aarch64: Some(aarch64),
        when,
        errno: libc::EPERM,
        reason,
    }
}

const TRACE: &str = "reads or writes other processes' memory";
const MOUNT: &str = "changes the mount table (new API or old)";
const MODULE: &str = "loads kernel code";
const CLOCK: &str = "sets the host's clock";
const KEYS: &str = "kernel keyrings are not namespaced";
const ADMIN: &str = "host administration";

/// The deny list. Numbers are the kernel's (`arch/x86/entry/syscalls/syscall_64.tbl`,
/// `include/uapi/asm-generic/unistd.h`); a unit test checks them against libc.
pub const DENIED: &[Denied] = &[
    deny("ptrace", 101, 117, TRACE),
    deny("process_vm_readv", 310, 270, TRACE),
    deny("process_vm_writev", 311, 271, TRACE),
    deny("kcmp", 312, 272, "compares other processes' kernel objects"),
    deny(
        "pidfd_getfd",
        438,
        438,
        "steals another process's file descriptors",
    ),
    deny("process_madvise", 440, 440, TRACE),
    deny("mount", 165, 40, MOUNT),
    deny("umount2", 166, 39, MOUNT),
    deny("pivot_root", 155, 41, MOUNT),
    deny("open_tree", 428, 428, MOUNT),
    deny("move_mount", 429, 429, MOUNT),
    deny("fsopen", 430, 430, MOUNT),
    deny("fsconfig", 431, 431, MOUNT),
    deny("fsmount", 432, 432, MOUNT),
    deny("fspick", 433, 433, MOUNT),
    deny("mount_setattr", 442, 442, MOUNT),
    deny("kexec_load", 246, 104, MODULE),
    deny("kexec_file_load", 320, 294, MODULE),
    deny("init_module", 175, 105, MODULE),
    deny("finit_module", 313, 273, MODULE),
    deny("delete_module", 176, 106, MODULE),
    deny_x86("create_module", 174, MODULE),
    deny_x86("get_kernel_syms", 177, MODULE),
    deny_x86("query_module", 178, MODULE),
    deny("bpf", 321, 280, "eBPF is a large kernel attack surface"),
    deny(
        "perf_event_open",
        298,
        241,
        "profiling leaks and attack surface",
    ),
    deny(
        "userfaultfd",
        323,
        282,
        "widens kernel race windows for exploits",
    ),
    deny(
        "io_uring_setup",
        425,
        425,
        "io_uring bypasses seccomp and has a bug history",
    ),
    deny(
        "io_uring_enter",
        426,
        426,
        "io_uring bypasses seccomp and has a bug history",
    ),
    deny(
        "io_uring_register",
        427,
        427,
        "io_uring bypasses seccomp and has a bug history",
    ),
    deny("keyctl", 250, 219, KEYS),
    deny("add_key", 248, 217, KEYS),
    deny("request_key", 249, 218, KEYS),
    deny("setns", 308, 268, "joins other namespaces"),
    deny_when(
        "unshare",
        272,
        97,
        When::AnyFlag {
            arg: 0,
            flags: NAMESPACE_FLAGS | CLONE_NEWTIME,
        },
        "creates namespaces (user namespaces re-grant capabilities)",
    ),
    deny_when(
        "clone",
        56,
        220,
        When::AnyFlag {
            arg: 0,
            flags: NAMESPACE_FLAGS,
        },
        "creates namespaces (user namespaces re-grant capabilities)",
    ),
    Denied {
        name: "clone3",
        x86_64: Some(435),
        aarch64: Some(435),
        when: When::Always,
        errno: libc::ENOSYS,
        reason: "its flags cannot be inspected: ENOSYS makes libc fall back to clone",
    },
    deny(
        "open_by_handle_at",
        304,
        265,
        "opens files outside the mount namespace",
    ),
    deny(
        "name_to_handle_at",
        303,
        264,
        "pairs with open_by_handle_at",
    ),
    deny("fanotify_init", 300, 262, "watches the whole filesystem"),
    deny("lookup_dcookie", 212, 18, ADMIN),
    deny("swapon", 167, 224, ADMIN),
    deny("swapoff", 168, 225, ADMIN),
    deny("reboot", 169, 142, ADMIN),
    deny("acct", 163, 89, ADMIN),
    deny("quotactl", 179, 60, ADMIN),
    deny("quotactl_fd", 443, 443, ADMIN),
    deny("syslog", 103, 116, "reads the kernel log (addresses)"),
    deny("vhangup", 153, 58, ADMIN),
    deny("nfsservctl", 180, 42, ADMIN),
    deny_x86("_sysctl", 156, ADMIN),
    deny_x86("uselib", 134, "obsolete loader path"),
    deny_x86("iopl", 172, "raw I/O port access"),
    deny_x86("ioperm", 173, "raw I/O port access"),
    deny("settimeofday", 164, 170, CLOCK),
    deny("clock_settime", 227, 112, CLOCK),
    deny("clock_adjtime", 305, 266, CLOCK),
    deny("adjtimex", 159, 171, CLOCK),
    deny_when(
        "personality",
        135,
        92,
        When::ArgNotIn {
            arg: 0,
            values: SAFE_PERSONALITIES,
        },
        "other personalities disable ASLR or map page zero",
    ),
    deny_when(
        "ioctl",
        16,
        29,
        When::ArgIn {
            arg: 1,
            values: TERMINAL_INJECTION,
        },
        "TIOCSTI/TIOCLINUX inject keystrokes into a terminal",
    ),
];

impl Denied {
    /// This syscall's number on `arch`, if it exists there.
    pub fn number(&self, arch: Arch) -> Option<i64> {
        match arch {
            Arch::X86_64 => self.x86_64,
            Arch::Aarch64 => self.aarch64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::denied_names;

    #[test]
    fn numbers_match_the_native_libc_table() {
        let Ok(arch) = Arch::native() else { return };
        let libc_number = |name: &str| -> Option<i64> {
            Some(match name {
                "ptrace" => libc::SYS_ptrace,
                "mount" => libc::SYS_mount,
                "umount2" => libc::SYS_umount2,
                "pivot_root" => libc::SYS_pivot_root,
                "kexec_load" => libc::SYS_kexec_load,
                "kexec_file_load" => libc::SYS_kexec_file_load,
                "init_module" => libc::SYS_init_module,
                "finit_module" => libc::SYS_finit_module,
                "delete_module" => libc::SYS_delete_module,
                "bpf" => libc::SYS_bpf,
                "perf_event_open" => libc::SYS_perf_event_open,
                "userfaultfd" => libc::SYS_userfaultfd,
                "keyctl" => libc::SYS_keyctl,
                "add_key" => libc::SYS_add_key,
                "request_key" => libc::SYS_request_key,
                "process_vm_readv" => libc::SYS_process_vm_readv,
                "process_vm_writev" => libc::SYS_process_vm_writev,
                "io_uring_setup" => libc::SYS_io_uring_setup,
                "io_uring_enter" => libc::SYS_io_uring_enter,
                "io_uring_register" => libc::SYS_io_uring_register,
                "unshare" => libc::SYS_unshare,
                "setns" => libc::SYS_setns,
                "clone" => libc::SYS_clone,
                "clone3" => libc::SYS_clone3,
                "open_by_handle_at" => libc::SYS_open_by_handle_at,
                "name_to_handle_at" => libc::SYS_name_to_handle_at,
                "swapon" => libc::SYS_swapon,
                "swapoff" => libc::SYS_swapoff,
                "reboot" => libc::SYS_reboot,
                "acct" => libc::SYS_acct,
                "settimeofday" => libc::SYS_settimeofday,
                "clock_settime" => libc::SYS_clock_settime,
                "clock_adjtime" => libc::SYS_clock_adjtime,
                "adjtimex" => libc::SYS_adjtimex,
                "personality" => libc::SYS_personality,
                "ioctl" => libc::SYS_ioctl,
                "fsopen" => libc::SYS_fsopen,
                "fsmount" => libc::SYS_fsmount,
                "move_mount" => libc::SYS_move_mount,
                "open_tree" => libc::SYS_open_tree,
                "fspick" => libc::SYS_fspick,
                "fsconfig" => libc::SYS_fsconfig,
                "mount_setattr" => libc::SYS_mount_setattr,
                "pidfd_getfd" => libc::SYS_pidfd_getfd,
                "process_madvise" => libc::SYS_process_madvise,
                "kcmp" => libc::SYS_kcmp,
                "syslog" => libc::SYS_syslog,
                "fanotify_init" => libc::SYS_fanotify_init,
                _ => return None,
            })
        };
        let mut checked = 0;
        for entry in DENIED {
            if let (Some(ours), Some(theirs)) = (entry.number(arch), libc_number(entry.name)) {
                assert_eq!(ours, theirs, "{}", entry.name);
                checked += 1;
            }
        }
        assert!(checked >= 45, "only {checked} numbers checked");
    }

    #[test]
    fn every_entry_has_a_reason_and_no_duplicates() {
        let mut names: Vec<_> = DENIED.iter().map(|entry| entry.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DENIED.len());
        assert!(DENIED.iter().all(|entry| !entry.reason.is_empty()));
        assert!(denied_names(Arch::Aarch64).len() < denied_names(Arch::X86_64).len());
    }
}
