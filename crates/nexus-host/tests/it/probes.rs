//! The probes against independent evidence on this host.

use std::path::Path;
use std::process::Command;

use nexus_host::cgroups::{self, CgroupVersion, Controller, ControllerProblem, Hierarchy};
use nexus_host::{kvm, seccomp, userns};

use crate::skipped;

#[test]
fn cgroup_layout_matches_sysfs() {
    let report = cgroups::probe().expect("/proc is readable");
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        // /sys/fs/cgroup itself is cgroup2: the unified layout.
        assert_eq!(report.version, CgroupVersion::V2, "{report:?}");
        assert_eq!(report.v2_mount.as_deref(), Some(root));
    }
    if root.join("memory/memory.limit_in_bytes").exists() {
        // The v1 memory controller is mounted.
        let memory = report.controller(Controller::Memory);
        assert_eq!(memory.hierarchy, Some(Hierarchy::V1), "{memory:?}");
        let expected = if root.join("unified/cgroup.controllers").exists() {
            CgroupVersion::Hybrid
        } else {
            CgroupVersion::V1
        };
        assert_eq!(report.version, expected, "{report:?}");
    }
    if !root.exists() {
        assert_eq!(report.version, CgroupVersion::NotMounted);
    }
}

#[test]
fn usable_cgroup_controllers_accept_a_child_cgroup() {
    let report = cgroups::probe().expect("/proc is readable");
    let mut tried = 0;
    for state in &report.controllers {
        let Some(cgroup) = &state.cgroup else {
            continue;
        };
        let child = cgroup.join(format!("nexus-host-test-{}", std::process::id()));
        let created = std::fs::create_dir(&child);
        if created.is_ok() {
            std::fs::remove_dir(&child).expect("an empty cgroup can be removed");
        }
        match &state.problem {
            None => {
                assert!(created.is_ok(), "{state:?} claims usable: {created:?}");
                tried += 1;
            }
            Some(ControllerProblem::NotWritable { .. }) => {
                assert!(
                    created.is_err(),
                    "{state:?} claims not writable, but mkdir worked"
                );
            }
            Some(_) => {}
        }
    }
    if tried == 0 {
        skipped(
            "usable_cgroup_controllers_accept_a_child_cgroup",
            "no controller is usable on this host",
        );
    }
}

#[test]
fn user_namespace_verdict_matches_unshare() {
    // unshare(CLONE_NEWUSER) fails in a multi-threaded process (the test harness), so
    // ask util-linux's unshare(1) in a fresh process instead.
    let Ok(status) = Command::new("unshare").args(["--user", "true"]).status() else {
        skipped(
            "user_namespace_verdict_matches_unshare",
            "unshare(1) is not installed",
        );
        return;
    };
    let report = userns::probe();
    let privileged = nix::unistd::geteuid().is_root();
    assert_eq!(report.allowed(privileged), status.success(), "{report:?}");
}

#[test]
fn seccomp_verdict_matches_the_sysctl() {
    let Ok(actions) = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail") else {
        skipped(
            "seccomp_verdict_matches_the_sysctl",
            "no actions_avail on this kernel",
        );
        return;
    };
    let listed = |name: &str| actions.split_whitespace().any(|a| a == name);
    let result = seccomp::probe();
    assert_eq!(
        result.is_ok(),
        listed("kill_process") && listed("errno"),
        "{result:?}"
    );
    if let Ok(report) = result {
        assert!(report.actions.iter().any(|a| a == "allow"));
    }
}

#[test]
fn kvm_verdict_matches_the_device_node() {
    let result = kvm::probe();
    if !Path::new(kvm::KVM_DEVICE).exists() {
        assert_eq!(result, Err(kvm::KvmProblem::Missing));
        skipped("kvm_verdict_matches_the_device_node", "/dev/kvm is absent");
        return;
    }
    assert_ne!(result, Err(kvm::KvmProblem::Missing));
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm::KVM_DEVICE)
        .is_ok();
    if opens {
        assert_eq!(result, Ok(kvm::KVM_API_VERSION));
    } else {
        assert!(
            matches!(result, Err(kvm::KvmProblem::Open { .. })),
            "{result:?}"
        );
    }
}
