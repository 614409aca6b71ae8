//! Host-side name resolution for the policy proxy and the sandbox's resolver: the system
//! resolver behind a timeout, with fixed per-name overrides.
//!
//! Overrides exist so tests can point names such as `allowed.test` at servers on
//! loopback without touching `/etc/hosts` or a real DNS server; an override is answered
//! without asking the system at all.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use crate::target::normalise_name;

/// How long a lookup through the system resolver may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a name could not be resolved. Every message names the host.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The system resolver did not answer in time.
    #[error("looking up {host} took longer than {timeout:?}")]
    Timeout {
        /// The name looked up.
        host: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The lookup succeeded but gave no address.
    #[error("{host} has no addresses")]
    NotFound {
        /// The name looked up.
        host: String,
    },
    /// The system resolver failed. `getaddrinfo` does not tell std whether the name does
    /// not exist or the lookup itself failed, so both end here.
    #[error("could not look up {host}")]
    Lookup {
        /// The name looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
}

/// Resolves host names to addresses: an override when one is set for the name, the
/// system resolver (`getaddrinfo`, through tokio) otherwise.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Normalised name to its addresses (canonical, without duplicates).
    overrides: HashMap<String, Vec<IpAddr>>,
    /// How long a system lookup may take.
    timeout: Duration,
}

impl Resolver {
    /// A resolver with these overrides and the [`LOOKUP_TIMEOUT`]. Names are normalised
    /// with [`normalise_name`] and addresses canonicalised; an entry whose name is not a
    /// host name could never match and is dropped with a warning (use [`parse_overrides`]
    /// to reject such entries instead). An empty address list makes its name not found.
    ///
    /// [`parse_overrides`]: Resolver::parse_overrides
    pub fn new(overrides: HashMap<String, Vec<IpAddr>>) -> Self {
        let overrides = overrides
            .into_iter()
            .filter_map(|(name, addrs)| match normalise_name(&name) {
                Ok(key) => Some((key, dedup(addrs))),
                Err(err) => {
                    tracing::warn!(%err, "ignoring a resolver override whose name is not a host name");
                    None
                }
            })
            .collect();
        Self {
            overrides,
            timeout: LOOKUP_TIMEOUT,
        }
    }

    /// The same resolver with another time limit for system lookups.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Parses overrides as configuration writes them: host name to a list of addresses
    /// in text. The error names the entry at fault.
    pub fn parse_overrides(
        map: &BTreeMap<String, Vec<String>>,
    ) -> Result<HashMap<String, Vec<IpAddr>>, String> {
        let mut overrides = HashMap::with_capacity(map.len());
        for (name, addrs) in map {
            let key =
                normalise_name(name).map_err(|err| format!("resolver override {name:?}: {err}"))?;
            let addrs = addrs
                .iter()
                .map(|addr| {
                    addr.trim().parse::<IpAddr>().map_err(|_| {
                        format!("resolver override {name:?}: {addr:?} is not an IP address")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if overrides.insert(key.clone(), dedup(addrs)).is_some() {
                return Err(format!(
                    "resolver override {name:?}: {key:?} is overridden more than once"
                ));
            }
        }
        Ok(overrides)
    }

    /// The addresses of `name`, in the resolver's order without duplicates, IPv4-mapped
    /// IPv6 addresses given as IPv4. An address literal resolves to itself.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(key) = normalise_name(name)
            && let Some(addrs) = self.overrides.get(&key)
        {
            tracing::debug!(host = %key, ?addrs, "resolved through an override");
            return non_empty(name, addrs.clone());
        }
        let lookup = async {
            tokio::net::lookup_host((name, 0))
                .await
                .map(|addrs| dedup(addrs.map(|addr| addr.ip())))
        };
        let addrs = bounded(name, self.timeout, lookup).await?;
        non_empty(name, addrs)
    }
}

/// Runs a lookup within `timeout`, naming `host` in its errors. The lookup's blocking
/// thread is not stopped by the timeout: `getaddrinfo` cannot be cancelled.
async fn bounded<F>(host: &str, timeout: Duration, lookup: F) -> Result<Vec<IpAddr>, ResolveError>
where
    F: Future<Output = io::Result<Vec<IpAddr>>>,
{
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(source)) => Err(ResolveError::Lookup {
            host: host.to_owned(),
            source,
        }),
        Err(_) => Err(ResolveError::Timeout {
            host: host.to_owned(),
            timeout,
        }),
    }
}

/// The addresses, or [`ResolveError::NotFound`] when there are none.
fn non_empty(host: &str, addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, ResolveError> {
    if addrs.is_empty() {
        Err(ResolveError::NotFound {
            host: host.to_owned(),
        })
    } else {
        Ok(addrs)
    }
}

/// Canonical addresses in their first order, each once.
fn dedup(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut unique = Vec::new();
    for addr in addrs.into_iter().map(|addr| addr.to_canonical()) {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn overrides(entries: &[(&str, &[&str])]) -> HashMap<String, Vec<IpAddr>> {
        entries
            .iter()
            .map(|(name, addrs)| (name.to_string(), addrs.iter().map(|a| ip(a)).collect()))
            .collect()
    }

    #[tokio::test]
    async fn overrides_win_whatever_the_case_or_trailing_dot() {
        let resolver = Resolver::new(overrides(&[
            ("Allowed.Test.", &["127.0.0.1"]),
            // Wins over /etc/hosts.
            ("localhost", &["192.0.2.7"]),
        ]));
        for name in ["allowed.test", "ALLOWED.test", "allowed.test."] {
            assert_eq!(
                resolver.resolve(name).await.expect(name),
                vec![ip("127.0.0.1")]
            );
        }
        assert_eq!(
            resolver.resolve("localhost").await.expect("localhost"),
            vec![ip("192.0.2.7")]
        );
    }

    #[tokio::test]
    async fn override_addresses_are_canonical_and_unique() {
        let resolver = Resolver::new(overrides(&[(
            "dual.test",
            &["::ffff:127.0.0.1", "127.0.0.1", "::1", "::1"],
        )]));
        assert_eq!(
            resolver.resolve("dual.test").await.expect("dual.test"),
            vec![ip("127.0.0.1"), ip("::1")]
        );
    }

    #[tokio::test]
    async fn an_empty_override_is_not_found() {
        let resolver = Resolver::new(overrides(&[("gone.test", &[])]));
        let err = resolver
            .resolve("gone.test")
            .await
            .expect_err("no addresses");
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err:?}");
        assert_eq!(err.to_string(), "gone.test has no addresses");
    }

    #[test]
    fn overrides_with_bad_names_are_dropped() {
        let resolver = Resolver::new(overrides(&[
            ("bad name", &["127.0.0.1"]),
            ("good.test", &["127.0.0.1"]),
        ]));
        assert_eq!(resolver.overrides.len(), 1);
        assert!(resolver.overrides.contains_key("good.test"));
    }

    #[test]
    fn parsed_overrides_are_normalised() {
        let map = BTreeMap::from([
            ("Allowed.Test.".to_string(), vec!["127.0.0.1".to_string()]),
            (
                "v6.test".to_string(),
                vec!["::1".to_string(), " ::ffff:127.0.0.2 ".to_string()],
            ),
        ]);
        let parsed = Resolver::parse_overrides(&map).expect("valid overrides");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed["allowed.test"], vec![ip("127.0.0.1")]);
        assert_eq!(parsed["v6.test"], vec![ip("::1"), ip("127.0.0.2")]);
    }

    #[test]
    fn override_errors_name_the_entry() {
        let bad_addr = BTreeMap::from([
            ("ok.test".to_string(), vec!["127.0.0.1".to_string()]),
            ("broken.test".to_string(), vec!["127.0.0".to_string()]),
        ]);
        let err = Resolver::parse_overrides(&bad_addr).expect_err("bad address");
        assert!(
            err.contains("broken.test") && err.contains("127.0.0"),
            "{err}"
        );

        let bad_name = BTreeMap::from([("no spaces.test".to_string(), vec![])]);
        let err = Resolver::parse_overrides(&bad_name).expect_err("bad name");
        assert!(err.contains("no spaces.test"), "{err}");

        let twice = BTreeMap::from([
            ("twice.test".to_string(), vec!["127.0.0.1".to_string()]),
            ("TWICE.test.".to_string(), vec!["127.0.0.2".to_string()]),
        ]);
        let err = Resolver::parse_overrides(&twice).expect_err("duplicate");
        assert!(err.contains("twice.test"), "{err}");
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_through_the_system() {
        let resolver = Resolver::new(HashMap::new());
        let addrs = resolver.resolve("localhost").await.expect("localhost");
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
        assert_eq!(addrs, dedup(addrs.clone()), "no duplicates");
    }

    #[tokio::test]
    async fn address_literals_resolve_to_themselves() {
        let resolver = Resolver::new(HashMap::new());
        assert_eq!(
            resolver.resolve("127.0.0.9").await.expect("v4"),
            vec![ip("127.0.0.9")]
        );
        assert_eq!(
            resolver.resolve("::ffff:127.0.0.9").await.expect("mapped"),
            vec![ip("127.0.0.9")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_lookups_time_out_naming_the_host() {
        let never = std::future::pending::<io::Result<Vec<IpAddr>>>();
        let err = bounded("slow.test", LOOKUP_TIMEOUT, never)
            .await
            .expect_err("timeout");
        assert!(matches!(err, ResolveError::Timeout { .. }), "{err:?}");
        assert_eq!(err.to_string(), "looking up slow.test took longer than 5s");
    }

    #[tokio::test]
    async fn failed_lookups_name_the_host_and_keep_the_cause() {
        let failing = async { Err(io::Error::other("name or service not known")) };
        let err = bounded("missing.test", LOOKUP_TIMEOUT, failing)
            .await
            .expect_err("failure");
        assert_eq!(err.to_string(), "could not look up missing.test");
        let source = std::error::Error::source(&err).expect("cause kept");
        assert_eq!(source.to_string(), "name or service not known");
    }

    #[test]
    fn dedup_keeps_first_order_and_canonical_form() {
        assert_eq!(
            dedup([
                ip("10.1.1.1"),
                ip("::1"),
                ip("::ffff:10.1.1.1"),
                ip("10.1.1.2"),
                ip("::1"),
            ]),
            vec![ip("10.1.1.1"), ip("::1"), ip("10.1.1.2")]
        );
    }
}
