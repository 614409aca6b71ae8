//! Where an outbound connection wants to go: a host (a domain name or an address) and a
//! port, in the one normalised form the policy, the proxy and the audit log share.

use std::fmt;
use std::net::IpAddr;

/// The host part of a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name: lowercase ASCII, no trailing dot, validated by [`Host::parse`].
    Name(String),
    /// An address, in canonical form (an IPv4-mapped IPv6 address is its IPv4 address).
    Ip(IpAddr),
}

/// Why a host could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

impl Host {
    /// Parses a host as programs write it: an IPv4 address, an IPv6 address with or
    /// without brackets, or a domain name (case-insensitive, one trailing dot allowed).
    pub fn parse(text: &str) -> Result<Self, HostError> {
        let bare = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Ip(ip.to_canonical()));
        }
        normalise_name(text).map(Self::Name)
    }

    /// The domain name, if this is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Name(name) => Some(name),
            Self::Ip(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Name or address.
    pub host: Host,
    /// TCP or UDP port.
    pub port: u16,
}

impl Target {
    /// A target from its parts.
    pub fn new(host: Host, port: u16) -> Self {
        Self { host, port }
    }

    /// Parses `host:port` (`[v6]:port` for IPv6 addresses), as in an HTTP `CONNECT` line
    /// or a `Host` header; `default_port` applies when the port is missing.
    pub fn parse_authority(text: &str, default_port: Option<u16>) -> Result<Self, HostError> {
        let (host, port) = split_host_port(text);
        let port = match (port, default_port) {
            (Some(port), _) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| HostError(format!("bad port {port:?} in {text:?}")))?,
            (None, Some(port)) => port,
            (None, None) => return Err(HostError(format!("{text:?} has no port"))),
        };
        Ok(Self::new(Host::parse(host)?, port))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]` (a bare IPv6 address has no port).
pub(crate) fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if text.starts_with('[') {
        return match text.find(']') {
            Some(end) => match text[end + 1..].strip_prefix(':') {
                Some(port) => (&text[..=end], Some(port)),
                None => (text, None),
            },
            None => (text, None),
        };
    }
    match text.rsplit_once(':') {
        // More than one colon and no brackets: an IPv6 address without a port.
        Some((host, _)) if host.contains(':') => (text, None),
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
}

/// Lowercases and checks a domain name: labels of letters, digits, `-` and `_`, each 1 to
/// 63 characters, 253 in all; one trailing dot is dropped.
pub fn normalise_name(text: &str) -> Result<String, HostError> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() {
        return Err(HostError("empty host name".into()));
    }
    if name.len() > 253 {
        return Err(HostError(format!(
            "host name {text:?} is longer than 253 characters"
        )));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostError(format!(
                "host name {text:?} has an empty or over-long label"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError(format!(
                "host name {text:?} has a label starting or ending with '-'"
            )));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(HostError(format!(
                "host name {text:?} contains {bad:?}: only letters, digits, '-', '_' and '.' are allowed"
            )));
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_to_one_normal_form() {
        assert_eq!(
            Host::parse("PyPI.org.").expect("name"),
            Host::Name("pypi.org".into())
        );
        assert_eq!(
            Host::parse("[::ffff:10.0.0.1]").expect("mapped"),
            Host::Ip("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(
            Host::parse("::1").expect("v6"),
            Host::Ip("::1".parse().expect("ip"))
        );
        assert!(Host::parse("a..b").is_err());
        assert!(Host::parse("exa mple.com").is_err());
        assert!(Host::parse("-x.com").is_err());
    }

    #[test]
    fn authorities_split_host_and_port() {
        let t = Target::parse_authority("example.com:8443", None).expect("name");
        assert_eq!(t.to_string(), "example.com:8443");
        let t = Target::parse_authority("[2001:db8::1]:443", None).expect("v6");
        assert_eq!(t.to_string(), "[2001:db8::1]:443");
        let t = Target::parse_authority("example.com", Some(80)).expect("default");
        assert_eq!(t.port, 80);
        assert!(Target::parse_authority("example.com", None).is_err());
        assert!(Target::parse_authority("example.com:0", None).is_err());
        assert!(Target::parse_authority("example.com:99999", None).is_err());
    }
}
