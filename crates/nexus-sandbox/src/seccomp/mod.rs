//! The sandbox's seccomp filter: which syscalls are refused, compiled to the classic BPF
//! bytes that `bwrap --seccomp FD` loads, and handed over in a sealed memfd.
//!
//! # Policy
//!
//! The default action is *allow*: the filter is a deny list of syscalls that let code
//! reach the kernel's most privileged or least hardened surfaces. Everything else is
//! already contained by the other layers (user, mount, pid, network namespaces; no
//! capabilities; `no_new_privs`; cgroup limits), so an allow list would mostly cost
//! compatibility. The list follows the reasoning of Docker's default profile and of
//! Flatpak's filter (both deny the same families: tracing, mounting, kernel modules and
//! kexec, keyrings, BPF and perf, clock setting, namespace creation, handle-based opens,
//! `TIOCSTI`), written for this product rather than copied; see [`DENIED`] for each
//! entry and the reason it is there.
//!
//! Denied syscalls fail with `EPERM`, as a missing privilege would. Two exceptions answer
//! `ENOSYS` ("not implemented here") so that well-behaved programs fall back:
//! - `clone3`, whose flags live in a struct the filter cannot read: glibc then falls back
//!   to `clone`, whose flags (a register) are checked for namespace creation;
//! - on x86_64, every x32 syscall (`nr >= 0x4000_0000`), which shares the x86_64 audit
//!   arch and would otherwise bypass the table.
//!
//! A syscall made under another architecture (i386 `int 0x80` on x86_64, AArch32 on
//! aarch64) kills the process: its numbers mean different syscalls, and the filter only
//! knows the native table. Sandboxes therefore cannot run 32-bit binaries.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use seccompiler::{
    BackendError, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

mod policy;

#[cfg(test)]
use self::policy::{CLONE_NEWTIME, SAFE_PERSONALITIES, TERMINAL_INJECTION};
pub use self::policy::{DENIED, Denied, NAMESPACE_FLAGS, When};

/// The CPU architectures the filter can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (the x32 ABI is refused, i386 kills the caller).
    X86_64,
    /// aarch64 (AArch32 kills the caller).
    Aarch64,
}

/// Building or handing over the filter failed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The process runs on an architecture the policy has no syscall table for.
    #[error("no seccomp policy for the {0} architecture")]
    UnsupportedArch(&'static str),
    /// seccompiler refused the rules.
    #[error("cannot compile the seccomp filter")]
    Compile(#[source] BackendError),
    /// The memfd holding the program could not be made.
    #[error("cannot write the seccomp program to a memfd")]
    Memfd(#[source] std::io::Error),
}

/// A compiled filter for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProgram {
    arch: Arch,
    instructions: Vec<sock_filter>,
}

/// The x32 syscall bit on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

impl Arch {
    /// The architecture this process runs on.
    pub fn native() -> Result<Arch, SeccompError> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(SeccompError::UnsupportedArch(other)),
        }
    }

    /// `AUDIT_ARCH_*`, as found in `seccomp_data.arch`.
    pub fn audit_value(self) -> u32 {
        match self {
            Arch::X86_64 => 0xC000_003E,
            Arch::Aarch64 => 0xC000_00B7,
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }
}

impl SeccompProgram {
    /// Compiles the policy for the architecture this process runs on.
    pub fn native() -> Result<Self, SeccompError> {
        Self::compile(Arch::native()?)
    }

    /// Compiles the policy for `arch`.
    ///
    /// The program is a short hand-written prologue (architecture check, x32 guard, the
    /// `ENOSYS` entries) followed by seccompiler's program for every `EPERM` entry:
    /// seccompiler gives one match action per filter, and a single program lets bwrap
    /// load it with one `--seccomp` fd.
    pub fn compile(arch: Arch) -> Result<Self, SeccompError> {
        let mut instructions = prologue(arch);
        let mut rules = std::collections::BTreeMap::new();
        for entry in DENIED.iter().filter(|entry| entry.errno == libc::EPERM) {
            let Some(number) = entry.number(arch) else {
                continue;
            };
            rules.insert(
                number,
                rules_for(entry.when).map_err(SeccompError::Compile)?,
            );
        }
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch.target(),
        )
        .map_err(SeccompError::Compile)?;
        let body: Vec<sock_filter> = filter.try_into().map_err(SeccompError::Compile)?;
        instructions.extend(body);
        Ok(SeccompProgram { arch, instructions })
    }

    /// The architecture it was compiled for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The BPF instructions.
    pub fn instructions(&self) -> &[sock_filter] {
        &self.instructions
    }

    /// The program as bwrap reads it: an array of `struct sock_filter`, native endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.instructions.len() * 8);
        for instruction in &self.instructions {
            bytes.extend_from_slice(&instruction.code.to_ne_bytes());
            bytes.push(instruction.jt);
            bytes.push(instruction.jf);
            bytes.extend_from_slice(&instruction.k.to_ne_bytes());
        }
        bytes
    }

    /// A close-on-exec memfd holding [`to_bytes`](Self::to_bytes), positioned at its
    /// start and sealed against any change, ready to become bwrap's `--seccomp` fd.
    ///
    /// Each launch needs its own: bwrap reads it to the end.
    pub fn to_memfd(&self) -> Result<OwnedFd, SeccompError> {
        let fd = memfd_create(
            c"nexus-seccomp",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|errno| SeccompError::Memfd(errno.into()))?;
        let mut file = File::from(fd);
        file.write_all(&self.to_bytes())
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
            .map_err(SeccompError::Memfd)?;
        let seals = SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_SEAL;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
            .map_err(|errno| SeccompError::Memfd(errno.into()))?;
        Ok(OwnedFd::from(file))
    }
}

/// The syscalls refused on `arch`, by name, for isolation reports.
pub fn denied_names(arch: Arch) -> Vec<&'static str> {
    DENIED
        .iter()
        .filter(|entry| entry.number(arch).is_some())
        .map(|entry| entry.name)
        .collect()
}

/// Architecture check, x32 guard and the unconditional `ENOSYS` entries.
fn prologue(arch: Arch) -> Vec<sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // Offsets in struct seccomp_data: int nr; __u32 arch; ...
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let op = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    let mut program = vec![
        op(LD_W_ABS, ARCH, 0, 0),
        op(JEQ_K, arch.audit_value(), 1, 0),
        op(RET_K, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
        op(LD_W_ABS, NR, 0, 0),
    ];
    if arch == Arch::X86_64 {
        program.push(op(JGE_K, X32_SYSCALL_BIT, 0, 1));
        program.push(op(RET_K, enosys, 0, 0));
    }
    for entry in DENIED.iter().filter(|entry| entry.errno == libc::ENOSYS) {
        debug_assert_eq!(entry.when, When::Always, "ENOSYS entries are unconditional");
        if let Some(number) = entry.number(arch) {
            let number = u32::try_from(number).expect("syscall numbers are small");
            program.push(op(JEQ_K, number, 0, 1));
            program.push(op(RET_K, enosys, 0, 0));
        }
    }
    program
}

/// seccompiler rules (OR-ed; conditions inside one rule are AND-ed) for a condition.
fn rules_for(when: When) -> Result<Vec<SeccompRule>, BackendError> {
    let dword = |arg, op, value| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value);
    match when {
        // An empty chain matches unconditionally.
        When::Always => Ok(Vec::new()),
        When::AnyFlag { arg, flags } => (0..64)
            .map(|bit| 1u64 << bit)
            .filter(|bit| flags & bit != 0)
            .map(|bit| {
                let length = if bit > u64::from(u32::MAX) {
                    SeccompCmpArgLen::Qword
                } else {
                    SeccompCmpArgLen::Dword
                };
                SeccompRule::new(vec![SeccompCondition::new(
                    arg,
                    length,
                    SeccompCmpOp::MaskedEq(bit),
                    bit,
                )?])
            })
            .collect(),
        When::ArgIn { arg, values } => values
            .iter()
            .map(|&value| SeccompRule::new(vec![dword(arg, SeccompCmpOp::Eq, value)?]))
            .collect(),
        When::ArgNotIn { arg, values } => {
            let conditions = values
                .iter()
                .map(|&value| dword(arg, SeccompCmpOp::Ne, value))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![SeccompRule::new(conditions)?])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    /// A classic-BPF interpreter for the instructions seccomp programs use, over a
    /// `struct seccomp_data` built from the arguments (little endian, as on both arches).
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_le_bytes());
        }
        let word = |offset: u32| {
            let at = offset as usize;
            u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &program[pc];
            let code = u32::from(ins.code);
            let jump = |taken: bool| 1 + usize::from(if taken { ins.jt } else { ins.jf });
            pc += match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    acc = word(ins.k);
                    1
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => {
                    acc &= ins.k;
                    1
                }
                c if c == libc::BPF_JMP | libc::BPF_JA => 1 + ins.k as usize,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => jump(acc == ins.k),
                c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => jump(acc >= ins.k),
                c if c == libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K => jump(acc > ins.k),
                c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => jump(acc & ins.k != 0),
                c if c == libc::BPF_RET | libc::BPF_K => return ins.k,
                other => panic!("unexpected BPF opcode {other:#x} at {pc}"),
            };
        }
    }

    fn check(arch: Arch, name: &str, args: [u64; 6]) -> u32 {
        let program = SeccompProgram::compile(arch).expect("compiles");
        let nr = DENIED
            .iter()
            .find(|entry| entry.name == name)
            .and_then(|entry| entry.number(arch))
            .unwrap_or_else(|| panic!("{name} on {arch:?}"));
        run(
            program.instructions(),
            arch.audit_value(),
            u32::try_from(nr).expect("small"),
            args,
        )
    }

    #[test]
    fn every_listed_syscall_is_refused_on_both_arches() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let program = SeccompProgram::compile(arch).expect("compiles");
            for entry in DENIED.iter().filter(|entry| entry.when == When::Always) {
                let Some(nr) = entry.number(arch) else {
                    continue;
                };
                let expected = libc::SECCOMP_RET_ERRNO | entry.errno as u32;
                let nr = u32::try_from(nr).expect("small");
                let got = run(program.instructions(), arch.audit_value(), nr, [0; 6]);
                assert_eq!(got, expected, "{} on {arch:?}", entry.name);
            }
        }
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        // read, write, openat, execve on x86_64 and aarch64.
        for (arch, numbers) in [
            (Arch::X86_64, [0, 1, 257, 59]),
            (Arch::Aarch64, [63, 64, 56, 221]),
        ] {
            let program = SeccompProgram::compile(arch).expect("compiles");
            for nr in numbers {
                assert_eq!(
                    run(program.instructions(), arch.audit_value(), nr, [0; 6]),
                    ALLOW,
                    "syscall {nr} on {arch:?}"
                );
            }
        }
    }

    #[test]
    fn clone_is_refused_only_with_namespace_flags() {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let fork = libc::SIGCHLD as u64 | libc::CLONE_CHILD_SETTID as u64;
        for arch in [Arch::X86_64, Arch::Aarch64] {
            assert_eq!(check(arch, "clone", [thread, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(check(arch, "clone", [fork, 0, 0, 0, 0, 0]), ALLOW);
            for flag in [
                libc::CLONE_NEWUSER,
                libc::CLONE_NEWNS,
                libc::CLONE_NEWPID,
                libc::CLONE_NEWNET,
                libc::CLONE_NEWIPC,
                libc::CLONE_NEWUTS,
                libc::CLONE_NEWCGROUP,
            ] {
                let flags = fork | flag as u64;
                assert_eq!(
                    check(arch, "clone", [flags, 0, 0, 0, 0, 0]),
                    EPERM,
                    "{flag:#x}"
                );
            }
            assert_eq!(check(arch, "clone3", [0; 6]), ENOSYS);
        }
    }

    #[test]
    fn unshare_is_refused_only_for_namespaces() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let benign = (libc::CLONE_FILES | libc::CLONE_FS | libc::CLONE_SYSVSEM) as u64;
            assert_eq!(check(arch, "unshare", [benign, 0, 0, 0, 0, 0]), ALLOW);
            let user = libc::CLONE_NEWUSER as u64;
            assert_eq!(check(arch, "unshare", [user, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(
                check(arch, "unshare", [CLONE_NEWTIME, 0, 0, 0, 0, 0]),
                EPERM
            );
        }
    }

    #[test]
    fn personality_and_ioctl_have_argument_rules() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            for safe in SAFE_PERSONALITIES {
                assert_eq!(check(arch, "personality", [*safe, 0, 0, 0, 0, 0]), ALLOW);
            }
            let no_aslr = 0x0040000; // ADDR_NO_RANDOMIZE
            assert_eq!(check(arch, "personality", [no_aslr, 0, 0, 0, 0, 0]), EPERM);
            let tiocsti = TERMINAL_INJECTION[0];
            assert_eq!(check(arch, "ioctl", [0, tiocsti, 0, 0, 0, 0]), EPERM);
            let tcgets = 0x5401; // TCGETS
            assert_eq!(check(arch, "ioctl", [0, tcgets, 0, 0, 0, 0]), ALLOW);
        }
    }

    #[test]
    fn foreign_arches_are_killed_and_x32_is_refused() {
        let program = SeccompProgram::compile(Arch::X86_64).expect("compiles");
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        let got = run(program.instructions(), AUDIT_ARCH_I386, 1, [0; 6]);
        assert_eq!(got, libc::SECCOMP_RET_KILL_PROCESS);
        // x32 read (0x40000000 | 0) and x32 ptrace (521).
        for nr in [X32_SYSCALL_BIT, X32_SYSCALL_BIT | 521] {
            let got = run(
                program.instructions(),
                Arch::X86_64.audit_value(),
                nr,
                [0; 6],
            );
            assert_eq!(got, ENOSYS);
        }
        let aarch64 = SeccompProgram::compile(Arch::Aarch64).expect("compiles");
        let got = run(
            aarch64.instructions(),
            Arch::X86_64.audit_value(),
            1,
            [0; 6],
        );
        assert_eq!(got, libc::SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn bytes_are_sock_filter_arrays_and_the_memfd_is_sealed() {
        let program = SeccompProgram::native().expect("compiles");
        let bytes = program.to_bytes();
        assert_eq!(bytes.len(), program.instructions().len() * 8);
        assert_eq!(
            bytes.len(),
            program.instructions().len() * size_of::<libc::sock_filter>()
        );
        let first = &program.instructions()[0];
        assert_eq!(&bytes[..2], &first.code.to_ne_bytes());
        assert_eq!(&bytes[4..8], &first.k.to_ne_bytes());

        let mut file = File::from(program.to_memfd().expect("memfd"));
        let mut read = Vec::new();
        file.read_to_end(&mut read).expect("read from the start");
        assert_eq!(read, bytes);
        assert!(file.write_all(b"x").is_err(), "sealed against writes");
        let seals = fcntl(&file, FcntlArg::F_GET_SEALS).expect("seals");
        assert_ne!(seals & libc::F_SEAL_SEAL, 0);
    }
}
