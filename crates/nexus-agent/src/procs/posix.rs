//! Owned `posix_spawn` attribute and file-action objects, and the call itself.
//!
//! glibc runs `posix_spawn` as `clone(CLONE_VM | CLONE_VFORK)`: the child borrows the
//! agent's memory until it execs, so nothing is copied, whatever the agent's size (a
//! `fork` copies every page table, and is what a `pre_exec` hook forces). The child's
//! `setsid`, signal resets, working directory and descriptors are all expressed as
//! attributes and file actions instead of code run in the child. A failure in the child
//! (a missing directory, a program that cannot be executed) comes back as the call's
//! error number.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

/// `posix_spawnattr_t`, destroyed on drop.
pub struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    /// Attributes making the child a session leader (so also a group leader) with an
    /// empty signal mask and `default_signals` back at their default disposition.
    pub fn new(default_signals: &[libc::c_int]) -> std::io::Result<Self> {
        let mut raw = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        // SAFETY: init writes a valid object into the buffer; it is used only on success.
        check(unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        let mut attrs = Self(unsafe { raw.assume_init() });
        let mut mask = MaybeUninit::<libc::sigset_t>::uninit();
        let mut defaults = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: the sigset functions only write the sets passed; each set is
        // initialised by sigemptyset before any other use, and the attribute setters copy
        // them.
        unsafe {
            libc::sigemptyset(mask.as_mut_ptr());
            libc::sigemptyset(defaults.as_mut_ptr());
            for &signal in default_signals {
                libc::sigaddset(defaults.as_mut_ptr(), signal);
            }
            check(libc::posix_spawnattr_setsigmask(
                &mut attrs.0,
                mask.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut attrs.0,
                defaults.as_ptr(),
            ))?;
        }
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
        // SAFETY: a valid, initialised attributes object.
        check(unsafe { libc::posix_spawnattr_setflags(&mut attrs.0, flags) })?;
        Ok(attrs)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` and destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop. The actions run in the child, in the
/// order added, before the program is executed.
pub struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    /// No actions.
    pub fn new() -> std::io::Result<Self> {
        let mut raw = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        // SAFETY: init writes a valid object into the buffer; it is used only on success.
        check(unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        Ok(Self(unsafe { raw.assume_init() }))
    }

    /// `dup2(fd, target)` in the child (the copy does not inherit close-on-exec).
    pub fn dup2(&mut self, fd: libc::c_int, target: libc::c_int) -> std::io::Result<()> {
        // SAFETY: a valid object; the call only records the numbers.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) })
    }

    /// `open(path, flags)` onto `target` in the child.
    pub fn open(
        &mut self,
        target: libc::c_int,
        path: &CStr,
        flags: libc::c_int,
    ) -> std::io::Result<()> {
        // SAFETY: a valid object; glibc copies the path.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, target, path.as_ptr(), flags, 0)
        })
    }

    /// `chdir(dir)` in the child.
    pub fn chdir(&mut self, dir: &CStr) -> std::io::Result<()> {
        // SAFETY: a valid object; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` and destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// Starts `program` (a path: no `PATH` search) with exactly `argv` and `env`. Returns the
/// child's pid, or the error number of whatever failed, in the parent or in the child.
pub fn spawn(
    program: &CStr,
    argv: &[CString],
    env: &[CString],
    actions: &FileActions,
    attrs: &Attributes,
) -> std::io::Result<libc::pid_t> {
    let pointers = |strings: &[CString]| -> Vec<*mut libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr().cast_mut())
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect()
    };
    let argv = pointers(argv);
    let env = pointers(env);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the objects are initialised, argv and
    // env are NUL-terminated arrays of NUL-terminated strings that outlive the call, and
    // posix_spawn never writes through them.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attrs.0,
            argv.as_ptr(),
            env.as_ptr(),
        )
    })?;
    Ok(pid)
}

/// The posix_spawn family returns an error number instead of setting `errno`.
fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}
