//! What an MCP session may see and touch: its tool profile and, optionally, the one
//! sandbox it is bound to. The binding comes from the token (and, for the daemon's own
//! token, from narrowing headers set by `nexusctl mcp serve`), never from tool arguments.

use std::fmt;
use std::str::FromStr;

use axum::http::HeaderMap;

/// Header with which a caller holding a token narrows its session to a profile.
pub const PROFILE_HEADER: &str = "nexus-mcp-profile";
/// Header with which a caller holding a token binds its session to one sandbox.
pub const SANDBOX_HEADER: &str = "nexus-mcp-sandbox";

/// Which tools a session sees. Each profile includes the one before it, as in the
/// profile matrix of the agent filesystem guide (`shared/seeds/000_a1b30304ff71321c.txt`,
/// section 9.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Profile {
    /// Read, list, stat, glob.
    Minimal,
    /// Minimal plus write, edit, delete, move, mkdir, grep.
    Coding,
    /// Coding plus commands and background processes.
    Execution,
    /// Execution plus sandbox lifecycle.
    Full,
}

impl Profile {
    /// Every profile, smallest first.
    pub const ALL: [Profile; 4] = [
        Profile::Minimal,
        Profile::Coding,
        Profile::Execution,
        Profile::Full,
    ];

    /// The profile's name as written in config, flags and headers.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Minimal => "minimal",
            Profile::Coding => "coding",
            Profile::Execution => "execution",
            Profile::Full => "full",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| {
                format!("unknown MCP profile {text:?}: use one of minimal, coding, execution, full")
            })
    }
}

/// The profile and sandbox a session is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The tools it sees.
    pub profile: Profile,
    /// The only sandbox it may touch (id or name), when bound.
    pub sandbox: Option<String>,
}

impl Binding {
    /// What the daemon's own token gets: everything.
    pub fn unrestricted() -> Self {
        Self {
            profile: Profile::Full,
            sandbox: None,
        }
    }

    /// Narrows this binding by the request's headers. Headers can only take away: a
    /// larger profile than the token's, or another sandbox than the token's, is refused.
    pub fn narrowed(&self, headers: &HeaderMap) -> Result<Self, String> {
        let mut binding = self.clone();
        if let Some(value) = header(headers, PROFILE_HEADER)? {
            let wanted: Profile = value.parse()?;
            if wanted > self.profile {
                return Err(format!(
                    "{PROFILE_HEADER}: {wanted} is more than this token allows ({}); ask for {} or less",
                    self.profile, self.profile
                ));
            }
            binding.profile = wanted;
        }
        if let Some(value) = header(headers, SANDBOX_HEADER)? {
            if value.is_empty() {
                return Err(format!(
                    "{SANDBOX_HEADER} is empty: name a sandbox or leave the header out"
                ));
            }
            match &self.sandbox {
                Some(own) if own != value => {
                    return Err(format!(
                        "{SANDBOX_HEADER}: this token is bound to sandbox {own:?} and cannot reach {value:?}"
                    ));
                }
                _ => binding.sandbox = Some(value.to_owned()),
            }
        }
        Ok(binding)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| format!("{name} is not printable ASCII"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("valid header value"));
        }
        map
    }

    #[test]
    fn profiles_are_ordered_and_parse_by_name() {
        assert!(Profile::Minimal < Profile::Coding);
        assert!(Profile::Execution < Profile::Full);
        for profile in Profile::ALL {
            assert_eq!(profile.name().parse::<Profile>(), Ok(profile));
        }
        let err = "admin".parse::<Profile>().expect_err("unknown profile");
        assert!(err.contains("minimal, coding, execution, full"), "{err}");
    }

    #[test]
    fn headers_narrow_the_daemon_token() {
        let binding = Binding::unrestricted()
            .narrowed(&headers(&[
                (PROFILE_HEADER, "coding"),
                (SANDBOX_HEADER, "sb1"),
            ]))
            .expect("narrowing is allowed");
        assert_eq!(binding.profile, Profile::Coding);
        assert_eq!(binding.sandbox.as_deref(), Some("sb1"));
    }

    #[test]
    fn headers_cannot_widen_a_scoped_token() {
        let scoped = Binding {
            profile: Profile::Coding,
            sandbox: Some("sb1".into()),
        };
        let err = scoped
            .narrowed(&headers(&[(PROFILE_HEADER, "full")]))
            .expect_err("widening the profile");
        assert!(err.contains("more than this token allows"), "{err}");
        let err = scoped
            .narrowed(&headers(&[(SANDBOX_HEADER, "sb2")]))
            .expect_err("another sandbox");
        assert!(err.contains("bound to sandbox \"sb1\""), "{err}");
        let same = scoped
            .narrowed(&headers(&[
                (SANDBOX_HEADER, "sb1"),
                (PROFILE_HEADER, "minimal"),
            ]))
            .expect("narrowing further");
        assert_eq!(same.profile, Profile::Minimal);
    }
}
