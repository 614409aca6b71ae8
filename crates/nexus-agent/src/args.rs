//! Command-line options. Hand-parsed: the agent is in every sandbox and has five flags, so
//! it does without an argument-parsing dependency.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// An inherited, already listening socket.
    Fd(i32),
    /// A path to bind.
    Path(PathBuf),
}

/// The agent's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where to listen.
    pub listen: Listen,
    /// Bytes kept per output stream for re-attaching.
    pub window: usize,
    /// Exited process records kept.
    pub max_exited: usize,
    /// How long to wait for pipes after a process's leader exited.
    pub linger: Duration,
    /// Working directory of requests naming none.
    pub workdir: Option<PathBuf>,
    /// `KEY=VALUE` pairs every process gets (below the request's own).
    pub env: Vec<(String, String)>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the agent.
    Run(Config),
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

/// The usage text.
pub const USAGE: &str = "\
usage: nexus-agent (--listen-fd N | --listen PATH) [options]

The in-sandbox agent of Nexus: serves the host-agent protocol on a Unix socket.

  --listen-fd N        accept on the inherited listening socket N (how nexusd starts it)
  --listen PATH        bind PATH and accept on it (development, tests)
  --window-bytes N     output bytes kept per stream for re-attaching [default: 1048576]
  --max-exited N       exited process records kept [default: 64]
  --linger-ms N        wait this long for pipes after a process exited [default: 1000]
  --workdir PATH       cwd of commands that name none [default: /workspace, else /]
  --env KEY=VALUE      give every process this variable (repeatable); a request's own
                       env overrides it. Nothing of the agent's environment is passed on.
  --version, --help

Logs go to stderr; NEXUS_AGENT_LOG=error|warn|info|debug|trace sets the level (info).
";

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> anyhow::Result<Command> {
    let mut listen = None;
    let mut window = 1024 * 1024;
    let mut max_exited = 64;
    let mut linger_ms = 1000;
    let mut workdir = None;
    let mut env = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--listen-fd" => listen = Some(Listen::Fd(number(&flag, &value()?)?)),
            "--listen" => listen = Some(Listen::Path(PathBuf::from(value()?))),
            "--window-bytes" => window = number(&flag, &value()?)?,
            "--max-exited" => max_exited = number(&flag, &value()?)?,
            "--linger-ms" => linger_ms = number(&flag, &value()?)?,
            "--workdir" => workdir = Some(PathBuf::from(value()?)),
            "--env" => {
                let pair = value()?;
                match pair.split_once('=') {
                    Some((key, val)) if !key.is_empty() && !pair.contains('\0') => {
                        env.push((key.to_owned(), val.to_owned()));
                    }
                    _ => bail!("--env {pair:?} must be KEY=VALUE with a non-empty KEY"),
                }
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let Some(listen) = listen else {
        bail!("one of --listen-fd or --listen is required\n\n{USAGE}");
    };
    if window == 0 {
        bail!("--window-bytes must be at least 1");
    }
    Ok(Command::Run(Config {
        listen,
        window,
        max_exited,
        linger: Duration::from_millis(linger_ms),
        workdir,
        env,
    }))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("{flag} {value:?} is not a valid number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> anyhow::Result<Command> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn env_pairs_are_collected_in_order_and_checked() {
        let Command::Run(config) = parse_strs(&[
            "--listen-fd",
            "3",
            "--env",
            "HTTP_PROXY=http://127.0.0.1:3128",
            "--env=NO_PROXY=a=b",
        ])
        .unwrap() else {
            panic!("expected run");
        };
        assert_eq!(
            config.env,
            [
                ("HTTP_PROXY".to_owned(), "http://127.0.0.1:3128".to_owned()),
                ("NO_PROXY".to_owned(), "a=b".to_owned()),
            ]
        );
        for bad in ["novalue", "=x"] {
            let err = parse_strs(&["--listen-fd", "3", "--env", bad]).unwrap_err();
            assert!(err.to_string().contains("KEY=VALUE"), "{err}");
        }
    }

    #[test]
    fn parses_fd_and_options() {
        let Command::Run(config) = parse_strs(&[
            "--listen-fd",
            "3",
            "--window-bytes=4096",
            "--linger-ms",
            "5",
        ])
        .unwrap() else {
            panic!("expected run");
        };
        assert_eq!(config.listen, Listen::Fd(3));
        assert_eq!(config.window, 4096);
        assert_eq!(config.linger, Duration::from_millis(5));
        assert_eq!(config.max_exited, 64);
    }

    #[test]
    fn refuses_missing_listen_and_bad_values() {
        let err = parse_strs(&[]).unwrap_err().to_string();
        assert!(err.contains("--listen-fd or --listen"), "{err}");
        let err = parse_strs(&["--listen-fd", "x"]).unwrap_err().to_string();
        assert!(err.contains("--listen-fd \"x\""), "{err}");
        let err = parse_strs(&["--listen"]).unwrap_err().to_string();
        assert!(err.contains("needs a value"), "{err}");
        assert!(parse_strs(&["--bogus"]).is_err());
        assert_eq!(parse_strs(&["--help"]).unwrap(), Command::Help);
    }
}
