//! A sandbox's egress policy: `allow` and `deny` lists of `host:port` rules, and the
//! decisions made from them.
//!
//! The rule format follows the deployment guide's `domain:port` allowlist
//! (`shared/seeds/003_4600213d8d1cfe0c.txt`, "Sandbox Profiles"), extended with
//! wildcards, port ranges and address ranges. The grammar:
//!
//! ```text
//! rule  = host ":" ports
//! host  = "*"                      any name, and any public address
//!       | "*." name                any subdomain of name (not name itself)
//!       | name                     exactly this name (case-insensitive)
//!       | ipv4 [ "/" len ]         this address or range
//!       | "[" ipv6 [ "/" len ] "]" this address or range
//! ports = "*" | port | port "-" port          (1..=65535)
//! ```
//!
//! Decisions:
//! - **Deny wins**: a connection matching any deny rule is refused, whatever allows it.
//! - **Default deny**: a connection no allow rule matches is refused.
//! - **Special addresses** (private, loopback, link-local with the metadata service,
//!   carrier-grade NAT, multicast, reserved; see [`is_special`]) are reached only through a
//!   rule that names an address range covering them: `*:443` or an allowed name that
//!   resolves to `10.0.0.5` do not reach it, `10.0.0.0/8:443` does. The check is made on
//!   the address actually dialled, so a name that re-resolves elsewhere (DNS rebinding)
//!   gains nothing.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::target::{Host, normalise_name, split_host_port};

/// The policy as written: rule texts, as stored and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Rules a connection must match to be made.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Rules that refuse a connection whatever allows it.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A parsed, checked policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

/// One `host:port` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    host: HostPattern,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    Subdomains(String),
    Range(IpNet),
}

/// A rule that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{list}[{index}] {text:?} is not a valid rule: {reason}")]
pub struct RuleError {
    /// `allow` or `deny`.
    pub list: &'static str,
    /// Its position in the list.
    pub index: usize,
    /// The rule as written.
    pub text: String,
    /// What is wrong and how to write it.
    pub reason: String,
}

/// The outcome of a check, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the connection may be made.
    pub allowed: bool,
    /// The rule that decided (its text), or why none did.
    pub rule: String,
}

/// What decides when no rule matches.
pub const DEFAULT_DENY: &str = "default deny (no allow rule matches)";

impl Verdict {
    fn allow(rule: &Rule) -> Self {
        Self {
            allowed: true,
            rule: rule.text.clone(),
        }
    }

    fn deny(rule: impl Into<String>) -> Self {
        Self {
            allowed: false,
            rule: rule.into(),
        }
    }
}

impl Rule {
    /// Parses one rule; the error says what is wrong, without position.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("empty rule: write host:port, e.g. pypi.org:443".into());
        }
        let (host, ports) = split_host_port(trimmed);
        let Some(ports) = ports else {
            return Err(format!(
                "no port: write host:port, e.g. {trimmed}:443 or {trimmed}:*"
            ));
        };
        Ok(Self {
            text: trimmed.to_owned(),
            host: parse_host_pattern(host)?,
            ports: parse_ports(ports)?,
        })
    }

    /// The rule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn covers_port(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    fn all_ports(&self) -> bool {
        self.ports == (1, u16::MAX)
    }

    fn matches_name(&self, name: &str) -> bool {
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => exact == name,
            HostPattern::Subdomains(parent) => name
                .strip_suffix(parent.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            HostPattern::Range(_) => false,
        }
    }

    /// Whether the rule names an address range holding `ip`.
    fn range_holds(&self, ip: IpAddr) -> bool {
        matches!(&self.host, HostPattern::Range(net) if net.contains(&ip))
    }

    /// Whether the rule matches a connection to the address `ip`: a range holding it, or
    /// `*` when the address is public.
    fn matches_address(&self, ip: IpAddr) -> bool {
        self.range_holds(ip) || (self.host == HostPattern::Any && !is_special(ip))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(HostPattern::Range(IpNet::from(ip.to_canonical())));
    }
    if bare.contains('/') {
        let net: IpNet = bare.parse().map_err(|_| {
            format!("{bare:?} is not an address range: write e.g. 10.1.2.0/24 or [fd00::/8]")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "{bare:?} has host bits set: did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(HostPattern::Range(net));
    }
    if let Some(parent) = host.strip_prefix("*.") {
        return normalise_name(parent)
            .map(HostPattern::Subdomains)
            .map_err(|e| e.to_string());
    }
    if host.contains('*') {
        return Err(format!(
            "{host:?} has a '*' inside: only a whole '*' or a leading '*.' (as in *.github.com) is allowed"
        ));
    }
    normalise_name(host)
        .map(HostPattern::Exact)
        .map_err(|e| e.to_string())
}

fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    if text == "*" {
        return Ok((1, u16::MAX));
    }
    let port = |p: &str| {
        p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            format!("{p:?} is not a port: use 1-65535, a range like 8000-8100, or *")
        })
    };
    match text.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (port(lo)?, port(hi)?);
            if lo > hi {
                return Err(format!(
                    "port range {text:?} runs backwards: write {hi}-{lo}"
                ));
            }
            Ok((lo, hi))
        }
        None => port(text).map(|p| (p, p)),
    }
}

impl Policy {
    /// Parses both lists; the first bad rule is reported with its list and position.
    pub fn parse(spec: &PolicySpec) -> Result<Self, RuleError> {
        let parse_list = |list: &'static str, rules: &[String]| {
            rules
                .iter()
                .enumerate()
                .map(|(index, text)| {
                    Rule::parse(text).map_err(|reason| RuleError {
                        list,
                        index,
                        text: text.clone(),
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            allow: parse_list("allow", &spec.allow)?,
            deny: parse_list("deny", &spec.deny)?,
        })
    }

    /// Whether nothing at all is allowed.
    pub fn denies_everything(&self) -> bool {
        self.allow.is_empty()
    }

    /// The decision for a connection to `host:port` before anything is dialled. For a name
    /// this is half of it: each address it resolves to must then pass
    /// [`Policy::decide_dialled`].
    pub fn decide(&self, host: &Host, port: u16) -> Verdict {
        match host {
            Host::Name(name) => self.decide_name(name, port),
            Host::Ip(ip) => self.decide_address(*ip, port),
        }
    }

    fn decide_name(&self, name: &str, port: u16) -> Verdict {
        let matching = |rule: &&Rule| rule.covers_port(port) && rule.matches_name(name);
        if let Some(rule) = self.deny.iter().find(matching) {
            return Verdict::deny(rule.text.clone());
        }
        match self.allow.iter().find(matching) {
            Some(rule) => Verdict::allow(rule),
            None => Verdict::deny(DEFAULT_DENY),
        }
    }

    fn decide_address(&self, ip: IpAddr, port: u16) -> Verdict {
        let ip = ip.to_canonical();
        let matching = |rule: &&Rule| rule.covers_port(port) && rule.matches_address(ip);
        if let Some(rule) = self.deny.iter().find(matching) {
            return Verdict::deny(rule.text.clone());
        }
        match self.allow.iter().find(matching) {
            Some(rule) => Verdict::allow(rule),
            None if is_special(ip) => Verdict::deny(special_refusal(ip, port)),
            None => Verdict::deny(DEFAULT_DENY),
        }
    }

    /// The decision for an address about to be dialled on behalf of an allowed name:
    /// deny ranges still apply, and a special address needs a range rule of its own.
    /// `name_verdict` is what [`Policy::decide`] said about the name.
    pub fn decide_dialled(&self, ip: IpAddr, port: u16, name_verdict: &Verdict) -> Verdict {
        let ip = ip.to_canonical();
        let names_range = |rule: &&Rule| rule.covers_port(port) && rule.range_holds(ip);
        if let Some(rule) = self.deny.iter().find(names_range) {
            return Verdict::deny(rule.text.clone());
        }
        if !is_special(ip) {
            return name_verdict.clone();
        }
        match self.allow.iter().find(names_range) {
            // Both rules were needed: say so.
            Some(rule) => Verdict {
                allowed: true,
                rule: format!("{}, {}", name_verdict.rule, rule.text),
            },
            None => Verdict::deny(special_refusal(ip, port)),
        }
    }

    /// Whether the sandbox's resolver answers for `name`: some allow rule matches it on
    /// some port, and no deny rule refuses it on every port.
    pub fn may_resolve(&self, name: &str) -> Verdict {
        if let Some(rule) = self
            .deny
            .iter()
            .find(|rule| rule.all_ports() && rule.matches_name(name))
        {
            return Verdict::deny(rule.text.clone());
        }
        match self.allow.iter().find(|rule| rule.matches_name(name)) {
            Some(rule) => Verdict::allow(rule),
            None => Verdict::deny(DEFAULT_DENY),
        }
    }
}

fn special_refusal(ip: IpAddr, port: u16) -> String {
    let range = match ip {
        IpAddr::V4(_) => format!("{ip}/32:{port}"),
        IpAddr::V6(_) => format!("[{ip}/128]:{port}"),
    };
    format!(
        "{ip} is a private, loopback, link-local or reserved address: only a rule naming its range reaches it, e.g. {range}"
    )
}

/// Whether an address is one a sandbox must not reach without a rule naming its range:
/// unspecified, loopback, private (RFC 1918, IPv6 unique-local), carrier-grade NAT,
/// link-local (the cloud metadata service 169.254.169.254 among them), benchmarking,
/// documentation, multicast, broadcast and reserved ranges. IPv4-mapped and NAT64
/// addresses are judged by the IPv4 address inside.
pub fn is_special(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [_, _, _, _, _, _, hi, lo] = segments;
                let inner = std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
                return is_special(IpAddr::V4(inner));
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link local
                || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy::parse(&PolicySpec {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
        })
        .expect("valid policy")
    }

    fn name(n: &str) -> Host {
        Host::Name(n.to_owned())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn the_grammar_accepts_every_documented_form() {
        for rule in [
            "pypi.org:443",
            "*.github.com:443",
            "example.com:*",
            "10.1.2.0/24:5432",
            "10.1.2.3:22",
            "[2001:db8::1]:443",
            "[fd00::/8]:*",
            "*:443",
            "api.example.com:8000-8100",
            "Files.PythonHosted.org.:443",
        ] {
            assert!(Rule::parse(rule).is_ok(), "{rule} should parse");
        }
    }

    #[test]
    fn bad_rules_are_named_with_their_list_and_position() {
        for (rule, needle) in [
            ("pypi.org", "no port"),
            ("pypi.org:0", "not a port"),
            ("pypi.org:70000", "not a port"),
            ("pypi.org:90-80", "backwards"),
            ("py*pi.org:443", "'*' inside"),
            ("10.1.2.3/24:443", "host bits"),
            ("10.1.2.0/33:443", "not an address range"),
            ("exa mple.com:443", "contains"),
            ("", "empty rule"),
        ] {
            let err = Policy::parse(&PolicySpec {
                allow: vec!["ok.example:443".into(), rule.into()],
                deny: vec![],
            })
            .expect_err(rule);
            assert_eq!((err.list, err.index), ("allow", 1), "{rule}");
            assert!(err.to_string().contains(needle), "{rule}: {err}");
        }
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let p = policy(&[], &[]);
        assert!(p.denies_everything());
        let v = p.decide(&name("pypi.org"), 443);
        assert!(!v.allowed);
        assert_eq!(v.rule, DEFAULT_DENY);
    }

    #[test]
    fn names_match_exactly_or_as_subdomains_and_ports_must_match() {
        let p = policy(
            &["pypi.org:443", "*.github.com:443", "db.example:5000-5010"],
            &[],
        );
        assert!(p.decide(&name("pypi.org"), 443).allowed);
        assert!(!p.decide(&name("pypi.org"), 80).allowed);
        assert!(!p.decide(&name("evilpypi.org"), 443).allowed);
        assert!(p.decide(&name("api.github.com"), 443).allowed);
        assert!(p.decide(&name("a.b.github.com"), 443).allowed);
        assert!(!p.decide(&name("github.com"), 443).allowed);
        assert!(!p.decide(&name("notgithub.com"), 443).allowed);
        assert!(p.decide(&name("db.example"), 5005).allowed);
        assert!(!p.decide(&name("db.example"), 5011).allowed);
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(
            &["*:*"],
            &["*.evil.example:*", "example.com:25", "203.0.113.0/24:*"],
        );
        let v = p.decide(&name("x.evil.example"), 443);
        assert!(!v.allowed);
        assert_eq!(v.rule, "*.evil.example:*");
        assert!(!p.decide(&name("example.com"), 25).allowed);
        assert!(p.decide(&name("example.com"), 443).allowed);
        // A deny range applies to the address a name resolves to.
        let named = p.decide(&name("ok.example"), 443);
        assert!(named.allowed);
        let dialled = p.decide_dialled(ip("203.0.113.9"), 443, &named);
        assert!(!dialled.allowed);
        assert_eq!(dialled.rule, "203.0.113.0/24:*");
    }

    #[test]
    fn special_addresses_need_a_rule_naming_their_range() {
        let p = policy(&["*:*", "internal.example:443"], &[]);
        for special in [
            "127.0.0.1",
            "10.0.0.5",
            "172.16.1.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let addr = ip(special);
            assert!(is_special(addr), "{special}");
            assert!(!p.decide(&Host::Ip(addr), 443).allowed, "{special} direct");
            let named = p.decide(&name("internal.example"), 443);
            let dialled = p.decide_dialled(addr, 443, &named);
            assert!(!dialled.allowed, "{special} through a name");
            assert!(dialled.rule.contains("only a rule naming its range"));
        }
        // A public address through `*` is fine.
        assert!(p.decide(&Host::Ip(ip("93.184.216.34")), 443).allowed);
        let opened = policy(&["internal.example:443", "10.0.0.0/8:443"], &[]);
        let named = opened.decide(&name("internal.example"), 443);
        let dialled = opened.decide_dialled(ip("10.0.0.5"), 443, &named);
        assert!(dialled.allowed);
        assert_eq!(dialled.rule, "internal.example:443, 10.0.0.0/8:443");
        assert!(!opened.decide_dialled(ip("10.0.0.5"), 80, &named).allowed);
        assert!(opened.decide(&Host::Ip(ip("10.9.9.9")), 443).allowed);
    }

    #[test]
    fn the_resolver_answers_for_names_some_rule_allows() {
        let p = policy(
            &["pypi.org:443", "*.github.com:*"],
            &["bad.github.com:*", "pypi.org:80"],
        );
        assert!(p.may_resolve("pypi.org").allowed);
        assert!(p.may_resolve("api.github.com").allowed);
        assert!(!p.may_resolve("bad.github.com").allowed);
        assert!(!p.may_resolve("example.com").allowed);
    }
}
