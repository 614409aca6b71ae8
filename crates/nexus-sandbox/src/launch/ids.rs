//! Host uids for sandboxes: one unprivileged uid per sandbox when the daemon is root, so
//! two sandboxes are strangers to each other even after an escape.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use nix::unistd::Uid;

use super::LaunchError;

/// The host user a sandbox runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostUser {
    /// The daemon is root: the child drops to this uid (and the same gid, with no
    /// supplementary groups) before bwrap starts, and the sandbox's uid 1000 maps to it.
    Dedicated(u32),
    /// The daemon is not root: the sandbox runs as the daemon's own uid, which the user
    /// namespace maps to uid 1000.
    Current,
}

/// Allocates host uids from a range. The caller persists which are in use (the uid is
/// part of a sandbox's record) and rebuilds the allocator with [`HostIds::mark_used`]
/// after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIds {
    range: RangeInclusive<u32>,
    used: BTreeSet<u32>,
}

impl HostUser {
    /// The host uid the sandbox's processes have.
    pub fn uid(self) -> u32 {
        match self {
            HostUser::Dedicated(uid) => uid,
            HostUser::Current => Uid::effective().as_raw(),
        }
    }

    /// A dedicated uid from `ids` when the daemon is root, else [`HostUser::Current`].
    pub fn choose(ids: &mut HostIds) -> Result<HostUser, LaunchError> {
        if Uid::effective().is_root() {
            ids.allocate().map(HostUser::Dedicated)
        } else {
            Ok(HostUser::Current)
        }
    }
}

impl HostIds {
    /// The default range: 65,536 uids from 200000. `useradd` hands out subordinate uid
    /// ranges from 100000 in blocks of 65,536, so a second user's (165536-231071)
    /// overlaps it: on hosts with several users, configure a range `/etc/subuid` does
    /// not use.
    pub const DEFAULT_RANGE: RangeInclusive<u32> = 200_000..=265_535;

    /// An allocator over `range`, which must be non-empty and exclude root and the
    /// overflow uid 65534 (`nobody`).
    pub fn new(range: RangeInclusive<u32>) -> Result<Self, LaunchError> {
        if range.is_empty() || range.contains(&0) || range.contains(&65_534) {
            return Err(LaunchError::InvalidIdRange {
                start: *range.start(),
                end: *range.end(),
            });
        }
        Ok(HostIds {
            range,
            used: BTreeSet::new(),
        })
    }

    /// The range.
    pub fn range(&self) -> &RangeInclusive<u32> {
        &self.range
    }

    /// Records `uid` as taken (e.g. by a sandbox found after a restart). Returns false
    /// when it lies outside the range or was taken already.
    pub fn mark_used(&mut self, uid: u32) -> bool {
        self.range.contains(&uid) && self.used.insert(uid)
    }

    /// Takes the lowest free uid.
    pub fn allocate(&mut self) -> Result<u32, LaunchError> {
        let mut candidate = *self.range.start();
        for &used in &self.used {
            if used != candidate {
                break;
            }
            candidate = candidate.checked_add(1).unwrap_or(candidate);
        }
        if !self.range.contains(&candidate) || self.used.contains(&candidate) {
            return Err(LaunchError::IdsExhausted {
                start: *self.range.start(),
                end: *self.range.end(),
            });
        }
        self.used.insert(candidate);
        Ok(candidate)
    }

    /// Gives `uid` back.
    pub fn release(&mut self, uid: u32) {
        self.used.remove(&uid);
    }

    /// How many uids are taken.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_and_reuses_released() {
        let mut ids = HostIds::new(200_000..=200_002).expect("valid");
        assert_eq!(ids.allocate().expect("free"), 200_000);
        assert!(ids.mark_used(200_002));
        assert!(!ids.mark_used(200_002), "taken already");
        assert!(!ids.mark_used(7), "outside the range");
        assert_eq!(ids.allocate().expect("free"), 200_001);
        assert!(matches!(
            ids.allocate(),
            Err(LaunchError::IdsExhausted { .. })
        ));
        ids.release(200_001);
        assert_eq!(ids.allocate().expect("free again"), 200_001);
        assert_eq!(ids.in_use(), 3);
    }

    #[test]
    fn the_top_of_the_u32_range_is_handled() {
        let mut ids = HostIds::new(u32::MAX..=u32::MAX).expect("valid");
        assert_eq!(ids.allocate().expect("one"), u32::MAX);
        assert!(ids.allocate().is_err());
    }

    #[test]
    fn ranges_with_root_or_nobody_are_refused() {
        #[expect(clippy::reversed_empty_ranges, reason = "an empty range is a case")]
        let empty = 10..=5;
        for range in [0..=10, 65_000..=66_000, empty] {
            assert!(HostIds::new(range).is_err());
        }
    }

    #[test]
    fn non_root_daemons_use_their_own_uid() {
        let mut ids = HostIds::new(HostIds::DEFAULT_RANGE).expect("valid");
        let user = HostUser::choose(&mut ids).expect("chosen");
        if Uid::effective().is_root() {
            assert_eq!(user, HostUser::Dedicated(200_000));
        } else {
            assert_eq!(user, HostUser::Current);
        }
        assert_ne!(user.uid(), 0, "never root");
    }
}
