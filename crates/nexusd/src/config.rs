//! The daemon's configuration: defaults, overridden by `nexus.yaml`, overridden by
//! `NEXUS_*` environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nexus_core::paths::XdgDirs;
use serde::Deserialize;

use crate::cli::{Args, LogFormat};

/// Everything the daemon needs to know to start, with every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// How long in-flight requests may take after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// The API token, when configured; otherwise one is generated into `token_file`.
    pub token: Option<String>,
    /// Where the generated token lives.
    pub token_file: PathBuf,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter directive.
    pub log_level: String,
    /// Directory of the state database.
    pub state_dir: PathBuf,
    /// Directory of images and workspaces.
    pub data_dir: PathBuf,
    /// Directory of sockets and pid files.
    pub runtime_dir: PathBuf,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Whether sandboxes may use the `host` driver, which isolates nothing.
    pub allow_host_driver: bool,
    /// The in-sandbox agent binary.
    pub agent_path: PathBuf,
    /// The bubblewrap binary.
    pub bwrap_path: PathBuf,
    /// The mmdebstrap binary image builds run.
    pub mmdebstrap_path: PathBuf,
    /// Host uids given to sandboxes when the daemon runs as root, one per sandbox.
    pub uid_range: std::ops::RangeInclusive<u32>,
    /// Network egress: default policy, name overrides, log bounds.
    pub network: NetworkConfig,
    /// The MCP endpoint: scoped tokens, accepted hosts and origins, conformance fixtures.
    pub mcp: McpConfig,
    /// `/metrics`: how many sandboxes get series of their own.
    pub metrics: MetricsConfig,
    /// Sandboxes kept started ahead of need (see `pool_config`); none by default.
    pub warm_pool: Vec<nexus_core::service::PoolProfile>,
}

/// The `metrics` section, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Running or paused sandboxes that get per-sandbox series in `/metrics` (the oldest
    /// first); the rest are counted in `nexus_sandbox_series_omitted`. Bounds the
    /// scrape's label cardinality whatever the number of sandboxes.
    pub max_sandboxes: usize,
}

/// The default of `metrics.max_sandboxes`.
pub const DEFAULT_METRICS_MAX_SANDBOXES: usize = 1000;

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_sandboxes: DEFAULT_METRICS_MAX_SANDBOXES,
        }
    }
}

/// The `metrics` section of `nexus.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    /// Running or paused sandboxes with series of their own in `/metrics`; `0` for none
    /// [default: 1000].
    pub max_sandboxes: Option<usize>,
}

/// The `mcp` section, checked.
#[derive(Debug, Clone, Default)]
pub struct McpConfig {
    /// Host names (or `host:port`) accepted in `Host` besides loopback and the listen address.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted in `Origin`, e.g. `https://console.example.com:443`; any
    /// other request carrying an `Origin` is refused (DNS-rebinding protection).
    pub allowed_origins: Vec<String>,
    /// Serve the conformance suite's fixtures at `/mcp/conformance` (tests only).
    pub conformance: bool,
    /// Tokens that open `/mcp` with a narrower profile or one sandbox only.
    pub tokens: Vec<ScopedToken>,
}

/// A token of `mcp.tokens`: what it opens.
#[derive(Debug, Clone)]
pub struct ScopedToken {
    /// The secret.
    pub token: crate::token::ApiToken,
    /// What a session opened with it may see and touch.
    pub binding: crate::mcp::binding::Binding,
}

impl McpConfig {
    /// The binding of the scoped token presented, if it is one. Every token is compared,
    /// in constant time, so timing does not tell which one nearly matched.
    pub fn binding_for(&self, presented: &str) -> Option<crate::mcp::binding::Binding> {
        let mut found = None;
        for scoped in &self.tokens {
            if scoped.token.matches(presented) && found.is_none() {
                found = Some(scoped.binding.clone());
            }
        }
        found
    }
}

/// The `mcp` section of `nexus.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMcp {
    /// Extra accepted `Host` names, e.g. `["nexus.internal"]`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Accepted browser origins, e.g. `["https://console.example.com:443"]`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Serve the conformance fixtures at `/mcp/conformance` [default: false].
    #[serde(default)]
    pub conformance: bool,
    /// Scoped tokens.
    #[serde(default)]
    pub tokens: Vec<FileMcpToken>,
}

/// One entry of `mcp.tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMcpToken {
    /// The secret, at least 16 printable characters.
    pub token: String,
    /// `minimal`, `coding`, `execution` or `full`.
    pub profile: String,
    /// The only sandbox (id or name) sessions with this token may touch.
    pub sandbox: Option<String>,
}

impl FileMcp {
    fn check(self) -> anyhow::Result<McpConfig> {
        let mut tokens = Vec::with_capacity(self.tokens.len());
        for (i, entry) in self.tokens.into_iter().enumerate() {
            validate_token(&entry.token)
                .with_context(|| format!("invalid mcp.tokens[{i}].token"))?;
            let profile = entry
                .profile
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid mcp.tokens[{i}].profile: {e}"))?;
            if entry
                .sandbox
                .as_deref()
                .is_some_and(|s| s.trim().is_empty())
            {
                bail!(
                    "invalid mcp.tokens[{i}].sandbox: empty; name a sandbox or leave the key out"
                );
            }
            tokens.push(ScopedToken {
                token: crate::token::ApiToken::new(entry.token),
                binding: crate::mcp::binding::Binding {
                    profile,
                    sandbox: entry.sandbox,
                },
            });
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if origin != "null" && !origin.contains("://") {
                bail!(
                    "invalid mcp.allowed_origins[{i}] {origin:?}: write scheme://host:port, e.g. https://console.example.com:443"
                );
            }
        }
        Ok(McpConfig {
            allowed_hosts: self.allowed_hosts,
            allowed_origins: self.allowed_origins,
            conformance: self.conformance,
            tokens,
        })
    }
}

/// The `network` section, checked.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    /// The policy of sandboxes whose request sets none (default: nothing allowed).
    pub default: nexus_core::NetworkSpec,
    /// Names the policy proxy resolves to fixed addresses instead of asking the system
    /// resolver. Meant for tests (`allowed.test` pointing at a loopback server) and for
    /// pinning internal names; every rule still applies to the addresses given.
    pub hosts: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
    /// Bounds of the network log.
    pub log: crate::netlog::LogLimits,
}

/// The `network` section of `nexus.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNetwork {
    /// Rules sandboxes get when their request sets none, e.g. `["pypi.org:443"]`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Deny rules sandboxes get when their request sets none.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Fixed addresses for names, e.g. `{"allowed.test": ["127.0.0.1"]}`.
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, Vec<String>>,
    /// Bounds of the network log.
    #[serde(default)]
    pub log: FileNetworkLog,
}

/// `network.log` of `nexus.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNetworkLog {
    /// Entries kept, all sandboxes together [default: 100000].
    pub max_records: Option<usize>,
    /// Entries older than this are dropped, e.g. `24h` [default: 24h].
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub max_age: Option<Duration>,
}

impl FileNetwork {
    fn check(self) -> anyhow::Result<NetworkConfig> {
        let default = nexus_core::NetworkSpec {
            allow: self.allow,
            deny: self.deny,
        };
        nexus_core::NetworkPolicy::parse(&default)
            .map_err(|e| anyhow::anyhow!("invalid network.{e}"))?;
        let hosts = nexus_net::resolve::Resolver::parse_overrides(&self.hosts)
            .map_err(|e| anyhow::anyhow!("invalid network.hosts: {e}"))?;
        let defaults = crate::netlog::LogLimits::default();
        let log = crate::netlog::LogLimits {
            max_records: self.log.max_records.unwrap_or(defaults.max_records),
            max_age: self.log.max_age.unwrap_or(defaults.max_age),
        };
        if log.max_records == 0 {
            anyhow::bail!("invalid network.log.max_records 0: keep at least 1 entry");
        }
        Ok(NetworkConfig {
            default,
            hosts,
            log,
        })
    }
}

/// The shape of `nexus.yaml`. Unknown keys are refused so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address of the HTTP API, e.g. `127.0.0.1:9600`.
    pub listen: Option<SocketAddr>,
    /// Grace period for in-flight requests at shutdown, e.g. `30s`.
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub shutdown_timeout: Option<Duration>,
    /// A fixed API token instead of the generated one.
    pub token: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Log filter directive.
    pub log_level: Option<String>,
    /// Directory of the state database.
    pub state_dir: Option<PathBuf>,
    /// Directory of images and workspaces.
    pub data_dir: Option<PathBuf>,
    /// Directory of sockets and pid files.
    pub runtime_dir: Option<PathBuf>,
    /// Allow the `host` driver (no isolation at all) [default: false].
    pub allow_host_driver: Option<bool>,
    /// The in-sandbox agent binary [default: `nexus-agent` beside `nexusd`].
    pub agent_path: Option<PathBuf>,
    /// The bubblewrap binary [default: `bwrap` on the PATH].
    pub bwrap_path: Option<PathBuf>,
    /// The mmdebstrap binary image builds run [default: `mmdebstrap` on the PATH].
    pub mmdebstrap_path: Option<PathBuf>,
    /// Host uids for sandboxes when running as root, `FIRST-LAST` [default: 200000-265535].
    pub uid_range: Option<String>,
    /// Network egress of sandboxes.
    #[serde(default)]
    pub network: FileNetwork,
    /// The MCP endpoint.
    #[serde(default)]
    pub mcp: FileMcp,
    /// Prometheus metrics at `/metrics`.
    #[serde(default)]
    pub metrics: FileMetrics,
    /// Sandboxes kept started ahead of need, per image, limits and network policy.
    #[serde(default)]
    pub warm_pool: Vec<crate::pool_config::FileWarmPool>,
}

/// The default grace period at shutdown (as in the deployment guide's `shutdown_timeout`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl Config {
    /// Builds the configuration from flags (with their environment variables already
    /// folded in by clap), the config file and the XDG directories.
    pub fn load(args: &Args, dirs: &XdgDirs) -> anyhow::Result<Self> {
        let (file, config_file) = match &args.config {
            Some(path) => (read_file_config(path)?, Some(path.clone())),
            None => {
                let path = dirs.daemon_config_file();
                if path.exists() {
                    (read_file_config(&path)?, Some(path))
                } else {
                    (FileConfig::default(), None)
                }
            }
        };
        let token = std::env::var("NEXUS_TOKEN").ok().or(file.token);
        if let Some(token) = &token {
            validate_token(token).context("invalid token in NEXUS_TOKEN or the config file")?;
        }
        let log_level = match args.log_level.clone().or(file.log_level) {
            Some(level) => crate::cli::parse_log_filter(&level)
                .map_err(|e| anyhow::anyhow!("invalid log_level {level:?}: {e}"))?,
            None => "info".to_owned(),
        };
        let default_listen: SocketAddr = nexus_api::DEFAULT_LISTEN
            .parse()
            .expect("the default listen address is valid");
        let warm_pool = file.warm_pool;
        let mut config = Self {
            listen: args.listen.or(file.listen).unwrap_or(default_listen),
            shutdown_timeout: args
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            token,
            token_file: dirs.token_file(),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level,
            state_dir: absolute(args.state_dir.clone().or(file.state_dir))
                .unwrap_or_else(|| dirs.state_dir()),
            data_dir: absolute(file.data_dir).unwrap_or_else(|| default_data_dir(dirs)),
            runtime_dir: absolute(file.runtime_dir).unwrap_or_else(|| dirs.runtime_dir()),
            config_file,
            allow_host_driver: file.allow_host_driver.unwrap_or(false),
            agent_path: args
                .agent_path
                .clone()
                .or(file.agent_path)
                .unwrap_or_else(default_agent_path),
            bwrap_path: file.bwrap_path.unwrap_or_else(|| PathBuf::from("bwrap")),
            mmdebstrap_path: file
                .mmdebstrap_path
                .unwrap_or_else(|| PathBuf::from("mmdebstrap")),
            uid_range: match file.uid_range {
                Some(text) => parse_uid_range(&text)
                    .map_err(|e| anyhow::anyhow!("invalid uid_range {text:?}: {e}"))?,
                None => DEFAULT_UID_RANGE,
            },
            warm_pool: Vec::new(),
            network: file.network.check()?,
            mcp: file.mcp.check()?,
            metrics: MetricsConfig {
                max_sandboxes: file
                    .metrics
                    .max_sandboxes
                    .unwrap_or(DEFAULT_METRICS_MAX_SANDBOXES),
            },
        };
        config.warm_pool = crate::pool_config::check(
            warm_pool,
            nexus_core::service::ServiceConfig::default().default_tmp_mib,
            &config.network.default,
        )?;
        Ok(config)
    }
}

/// Host uids handed to sandboxes when the daemon runs as root: far above regular users
/// (and above the 100000-165535 subordinate range tools like podman default to).
pub const DEFAULT_UID_RANGE: std::ops::RangeInclusive<u32> = 200_000..=265_535;

/// `FIRST-LAST`, with at least one uid, above the system range.
pub fn parse_uid_range(text: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or("expected FIRST-LAST, e.g. 200000-265535")?;
    let first: u32 = first
        .trim()
        .parse()
        .map_err(|e| format!("first uid: {e}"))?;
    let last: u32 = last.trim().parse().map_err(|e| format!("last uid: {e}"))?;
    if first < 65_536 || last < first {
        return Err("the range must start at 65536 or above and not be empty".into());
    }
    Ok(first..=last)
}

/// Where workspaces go by default. As root, each sandbox runs as its own unprivileged
/// host uid that must reach its workspace, and root's home is closed to other users; so
/// unless `XDG_DATA_HOME` says otherwise, a root daemon keeps its data in `/var/lib/nexus`.
fn default_data_dir(dirs: &XdgDirs) -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && !dirs.data_home_explicit {
        PathBuf::from(ROOT_DATA_DIR)
    } else {
        dirs.data_dir()
    }
}

/// The data directory of a daemon running as root without `XDG_DATA_HOME`.
pub const ROOT_DATA_DIR: &str = "/var/lib/nexus";

/// `nexus-agent` next to the running `nexusd`, as the install script and cargo put it.
fn default_agent_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("nexus-agent"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nexus-agent"))
}

/// Reads and parses a config file; errors name the file, the line and the field.
pub fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = fs_err::read_to_string(path).context("cannot read config file")?;
    parse_file_config(&text)
        .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
}

/// Parses the text of a config file. The error says where (line, column, field) and what.
pub fn parse_file_config(text: &str) -> Result<FileConfig, String> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, FileConfig>(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.inner();
        // Errors raised after a value was read (a bad duration) carry no position, so the
        // line of a top-level key is found by looking for it; the YAML position otherwise.
        let top_key = field.split(['.', '[']).next().unwrap_or_default();
        let key_line = (!top_key.is_empty() && top_key != ".")
            .then(|| {
                text.lines()
                    .position(|l| l.starts_with(&format!("{top_key}:")))
            })
            .flatten();
        let location = match (key_line, inner.location()) {
            (Some(line), _) => format!("line {}: ", line + 1),
            (None, Some(l)) => format!("line {}, column {}: ", l.line(), l.column()),
            (None, None) => String::new(),
        };
        // serde_yaml_ng appends its own "at line X column Y"; drop it, we said it first.
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        if field.is_empty() || field == "." {
            format!("{location}{message}")
        } else {
            format!("{location}field `{field}`: {message}")
        }
    })
}

fn deserialize_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} (examples: `30s`, `2m`, `500ms`)"
        ))
    })
}

/// A token must be long enough to resist guessing and printable without quoting.
pub fn validate_token(token: &str) -> anyhow::Result<()> {
    if token.len() < 16 {
        bail!("a token must be at least 16 characters long");
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        bail!("a token may only contain printable ASCII characters without spaces");
    }
    Ok(())
}

fn absolute(path: Option<PathBuf>) -> Option<PathBuf> {
    path.map(|p| {
        if p.is_absolute() {
            p
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let cfg = parse_file_config(
            "listen: 127.0.0.1:9700\nshutdown_timeout: 5s\nlog_format: json\nlog_level: debug\n",
        )
        .expect("valid");
        assert_eq!(cfg.listen, Some("127.0.0.1:9700".parse().expect("addr")));
        assert_eq!(cfg.shutdown_timeout, Some(Duration::from_secs(5)));
        assert_eq!(cfg.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn the_metrics_cap_is_read_and_its_keys_checked() {
        let cfg = parse_file_config("metrics:\n  max_sandboxes: 5\n").expect("valid");
        assert_eq!(cfg.metrics.max_sandboxes, Some(5));
        let err = parse_file_config("metrics:\n  max_sandbox: 5\n").expect_err("typo");
        assert!(err.contains("max_sandbox"), "{err}");
        assert_eq!(
            MetricsConfig::default().max_sandboxes,
            DEFAULT_METRICS_MAX_SANDBOXES
        );
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let cfg = parse_file_config("\n# nothing\n").expect("valid");
        assert!(cfg.listen.is_none());
    }

    #[test]
    fn a_bad_value_names_line_and_field() {
        let err = parse_file_config("log_format: text\nlisten: not-an-address\n").expect_err("bad");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("field `listen`"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = parse_file_config("lisen: 127.0.0.1:1\n").expect_err("typo");
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn broken_yaml_names_the_line() {
        let err = parse_file_config("listen: [1, 2\nfoo: bar\n").expect_err("broken");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn a_bad_duration_names_the_field() {
        let err =
            parse_file_config("listen: 127.0.0.1:1\nshutdown_timeout: soon\n").expect_err("bad");
        assert!(
            err.contains("line 2") && err.contains("field `shutdown_timeout`"),
            "{err}"
        );
        assert!(err.contains("invalid duration \"soon\""), "{err}");
    }

    #[test]
    fn uid_ranges_are_checked() {
        assert_eq!(parse_uid_range("200000-200009"), Ok(200_000..=200_009));
        assert!(parse_uid_range("1000-2000").is_err());
        assert!(parse_uid_range("300000-200000").is_err());
        assert!(parse_uid_range("nope").is_err());
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(validate_token("short").is_err());
        assert!(validate_token("has a space in it, long enough").is_err());
        assert!(validate_token("0123456789abcdef").is_ok());
    }
}
