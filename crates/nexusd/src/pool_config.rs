//! The `warm_pool` section of `nexus.yaml`: which sandboxes to keep started ahead of
//! need (see `nexus_core::service::pool`), checked into the core's profiles.
//!
//! ```yaml
//! warm_pool:
//!   - image: host        # default host
//!     size: 4            # sandboxes kept ready, 0 to 64
//!     limits: {memory_mib: 512, pids: 256, cpus: 1, tmp_mib: 512}  # as in a create
//!     network: {allow: ["pypi.org:443"]}   # as in a create; default: network.allow/deny
//! ```
//!
//! There is no pool by default: each pooled sandbox holds about a megabyte of memory, a
//! host uid and a workspace while it waits, so users opt in to that cost. Two entries
//! describing the same sandboxes (image, limits and network policy after defaults) are
//! refused, naming both, rather than merged: the sizes a reader sees are the sizes kept.
//! An image that does not exist is not an error here (the daemon cannot know its images
//! before opening the store): the profile stays empty, says why in `GET /v1/status`, and
//! fills once an image of that name exists.

use anyhow::bail;
use nexus_core::service::{MAX_POOL_SIZE, PoolProfile};
use nexus_core::{DriverKind, HOST_IMAGE, ImageName, Limits, NetworkSpec};
use serde::Deserialize;

/// One entry of `warm_pool` in `nexus.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWarmPool {
    /// The image, by name [default: `host`].
    pub image: Option<String>,
    /// Sandboxes kept ready, 0 to 64.
    pub size: usize,
    /// Limits, as in a create request [default: none, `/tmp` 512 MiB].
    #[serde(default)]
    pub limits: nexus_api::LimitsBody,
    /// Network policy, as in a create request [default: `network.allow`/`network.deny`].
    pub network: Option<nexus_api::NetworkPolicyBody>,
}

/// Checks the entries into profiles, with the defaults a create request would get:
/// `default_tmp_mib` for `/tmp` and `default_network` for the policy.
pub fn check(
    entries: Vec<FileWarmPool>,
    default_tmp_mib: u64,
    default_network: &NetworkSpec,
) -> anyhow::Result<Vec<PoolProfile>> {
    let mut profiles: Vec<PoolProfile> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        if entry.size > MAX_POOL_SIZE {
            bail!(
                "invalid warm_pool[{i}].size {}: keep at most {MAX_POOL_SIZE} sandboxes ready per entry",
                entry.size
            );
        }
        let image = entry.image.unwrap_or_else(|| HOST_IMAGE.to_owned());
        if image != HOST_IMAGE {
            ImageName::parse(&image).map_err(|e| {
                anyhow::anyhow!("invalid warm_pool[{i}].image: {e}; give an image by its name")
            })?;
        }
        let limits = Limits {
            memory_mib: entry.limits.memory_mib,
            cpus: entry.limits.cpus,
            pids: entry.limits.pids,
            tmp_mib: Some(entry.limits.tmp_mib.unwrap_or(default_tmp_mib)),
        };
        limits
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid warm_pool[{i}].{e}"))?;
        let network = match entry.network {
            Some(body) => NetworkSpec {
                allow: body.allow,
                deny: body.deny,
            },
            None => default_network.clone(),
        };
        nexus_core::NetworkPolicy::parse(&network)
            .map_err(|e| anyhow::anyhow!("invalid warm_pool[{i}].network.{e}"))?;
        let profile = PoolProfile {
            image,
            driver: DriverKind::Bwrap,
            limits,
            network,
            size: entry.size,
        };
        let same = |p: &PoolProfile| {
            p.image == profile.image && p.limits == profile.limits && p.network == profile.network
        };
        if let Some(first) = profiles.iter().position(same) {
            bail!(
                "warm_pool[{i}] describes the same sandboxes as warm_pool[{first}] (image, limits and network after defaults); merge them into one entry whose size is the sum"
            );
        }
        profiles.push(profile);
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_file_config;

    fn profiles(yaml: &str) -> anyhow::Result<Vec<PoolProfile>> {
        let file = parse_file_config(yaml).map_err(anyhow::Error::msg)?;
        check(file.warm_pool, 512, &NetworkSpec::default())
    }

    #[test]
    fn no_pool_by_default() {
        assert!(profiles("listen: 127.0.0.1:1\n").expect("valid").is_empty());
    }

    #[test]
    fn an_entry_gets_a_create_requests_defaults() {
        let got = profiles("warm_pool:\n  - size: 2\n").expect("valid");
        assert_eq!(
            got,
            vec![PoolProfile {
                image: "host".into(),
                driver: DriverKind::Bwrap,
                limits: Limits {
                    tmp_mib: Some(512),
                    ..Limits::default()
                },
                network: NetworkSpec::default(),
                size: 2,
            }]
        );
        let file = parse_file_config("warm_pool:\n  - size: 1\n").expect("valid");
        let default = NetworkSpec {
            allow: vec!["pypi.org:443".into()],
            deny: vec![],
        };
        let got = check(file.warm_pool, 64, &default).expect("valid");
        assert_eq!(got[0].network, default, "the configured default policy");
        assert_eq!(got[0].limits.tmp_mib, Some(64));
    }

    #[test]
    fn a_full_entry_parses() {
        let got = profiles(
            "warm_pool:\n  - image: tools\n    size: 4\n    limits: {memory_mib: 512, pids: 256, cpus: 1, tmp_mib: 128}\n    network: {allow: [\"pypi.org:443\"]}\n",
        )
        .expect("valid");
        assert_eq!(got[0].image, "tools");
        assert_eq!(
            got[0].limits,
            Limits {
                memory_mib: Some(512),
                cpus: Some(1.0),
                pids: Some(256),
                tmp_mib: Some(128),
            }
        );
        assert_eq!(got[0].network.allow, ["pypi.org:443"]);
    }

    #[test]
    fn bad_entries_name_the_field_and_the_fix() {
        for (yaml, expected) in [
            ("warm_pool:\n  - size: 65\n", "warm_pool[0].size 65"),
            (
                "warm_pool:\n  - size: 1\n  - size: 1\n    limits: {memory_mib: 1}\n",
                "warm_pool[1].limits.memory_mib",
            ),
            (
                "warm_pool:\n  - size: 1\n    network: {allow: [\"no port\"]}\n",
                "warm_pool[0].network.",
            ),
            (
                "warm_pool:\n  - size: 1\n    image: Bad_Name\n",
                "warm_pool[0].image",
            ),
            (
                "warm_pool:\n  - size: 1\n  - size: 3\n    limits: {tmp_mib: 512}\n",
                "warm_pool[1] describes the same sandboxes as warm_pool[0]",
            ),
        ] {
            let err = profiles(yaml).expect_err(yaml).to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
        let err = profiles("warm_pool:\n  - image: host\n").expect_err("no size");
        assert!(err.to_string().contains("size"), "{err}");
        let err = profiles("warm_pool:\n  - size: 1\n    sise: 2\n").expect_err("typo");
        assert!(err.to_string().contains("sise"), "{err}");
    }
}
