//! Live resource statistics of a sandbox on the wire (`GET /v1/sandboxes/{id}/stats`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One sample of a running or paused sandbox's resource usage, read from its cgroups
/// when asked.
///
/// Every counter field is always present: a number, or `null` where this host cannot
/// measure it, and then its name is listed in `unmeasured`. CPU time, I/O and OOM kills
/// count from the sandbox's last start; memory and pids are current values. CPU use
/// between two samples `a` and `b`, in percent of one CPU, is
/// `(b.cpu_usec - a.cpu_usec) / (b.timestamp_ms - a.timestamp_ms) / 10`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxStats {
    /// Sandbox id.
    #[schema(example = "sb-3f9a1c0e5b7d2a64")]
    pub id: String,
    /// Sandbox name.
    #[schema(example = "web-1")]
    pub name: String,
    /// `running` or `paused`.
    #[schema(example = "running")]
    pub state: String,
    /// When the counters were read, RFC 3339 with milliseconds, UTC.
    #[schema(example = "2025-01-01T12:00:00.250Z")]
    pub timestamp: String,
    /// The same instant in milliseconds since the Unix epoch, for arithmetic.
    #[schema(example = 1735732800250_u64)]
    pub timestamp_ms: u64,
    /// CPU time used, microseconds.
    pub cpu_usec: Option<u64>,
    /// CPU time in user mode, microseconds. On cgroup v1 the user/kernel split is
    /// sampled at timer ticks, so user + system may differ a little from `cpu_usec`.
    pub cpu_user_usec: Option<u64>,
    /// CPU time in the kernel, microseconds (see `cpu_user_usec`).
    pub cpu_system_usec: Option<u64>,
    /// Memory in use (including page cache), bytes.
    pub memory_bytes: Option<u64>,
    /// Highest memory use since the sandbox started, bytes.
    pub memory_peak_bytes: Option<u64>,
    /// The memory limit in force, bytes; `null` when there is none (or it cannot be read).
    pub memory_limit_bytes: Option<u64>,
    /// Processes and threads now.
    pub pids: Option<u64>,
    /// The process limit in force; `null` when there is none (or it cannot be read).
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub io_write_bytes: Option<u64>,
    /// Read operations on block devices.
    pub io_read_ops: Option<u64>,
    /// Write operations on block devices.
    pub io_write_ops: Option<u64>,
    /// Processes the kernel's OOM killer ended because the memory limit was hit.
    pub oom_kills: Option<u64>,
    /// Names of the counter fields above that this host cannot measure (and are `null`),
    /// e.g. `["io_read_bytes", "io_write_bytes", "io_read_ops", "io_write_ops"]` where
    /// block I/O is not accounted. Limits are never listed: `null` there means no limit.
    pub unmeasured: Vec<String>,
}

impl SandboxStats {
    /// Every counter field by its JSON name, in declaration order (limits excluded).
    pub fn counters(&self) -> [(&'static str, Option<u64>); 11] {
        [
            ("cpu_usec", self.cpu_usec),
            ("cpu_user_usec", self.cpu_user_usec),
            ("cpu_system_usec", self.cpu_system_usec),
            ("memory_bytes", self.memory_bytes),
            ("memory_peak_bytes", self.memory_peak_bytes),
            ("pids", self.pids),
            ("io_read_bytes", self.io_read_bytes),
            ("io_write_bytes", self.io_write_bytes),
            ("io_read_ops", self.io_read_ops),
            ("io_write_ops", self.io_write_ops),
            ("oom_kills", self.oom_kills),
        ]
    }

    /// CPU use between an earlier sample and this one, in percent of one CPU (`200.0`
    /// is two CPUs busy); `None` without CPU time or elapsed time.
    pub fn cpu_percent_since(&self, earlier: &SandboxStats) -> Option<f64> {
        let used = self.cpu_usec?.checked_sub(earlier.cpu_usec?)?;
        let elapsed_ms = self.timestamp_ms.checked_sub(earlier.timestamp_ms)?;
        (elapsed_ms > 0).then(|| used as f64 / elapsed_ms as f64 / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu_usec: Option<u64>, timestamp_ms: u64) -> SandboxStats {
        SandboxStats {
            id: "sb-1".into(),
            name: "web".into(),
            state: "running".into(),
            timestamp: String::new(),
            timestamp_ms,
            cpu_usec,
            cpu_user_usec: None,
            cpu_system_usec: None,
            memory_bytes: None,
            memory_peak_bytes: None,
            memory_limit_bytes: None,
            pids: None,
            pids_limit: None,
            io_read_bytes: None,
            io_write_bytes: None,
            io_read_ops: None,
            io_write_ops: None,
            oom_kills: None,
            unmeasured: Vec::new(),
        }
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let a = sample(Some(1_000_000), 10_000);
        let b = sample(Some(1_500_000), 11_000);
        assert_eq!(b.cpu_percent_since(&a), Some(50.0));
        assert_eq!(a.cpu_percent_since(&a), None, "no time passed");
        assert_eq!(sample(None, 11_000).cpu_percent_since(&a), None);
    }

    #[test]
    fn unmeasured_counters_serialize_as_null() {
        let json = serde_json::to_value(sample(None, 1)).expect("json");
        assert!(json["cpu_usec"].is_null());
        assert!(
            json.as_object()
                .expect("object")
                .contains_key("io_read_bytes")
        );
    }
}
