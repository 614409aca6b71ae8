//! The detach key sequence of `nexusctl attach`: parsing `--detach-keys` and spotting the
//! sequence in what the user types, without ever swallowing keys that only began it.

/// The default: Ctrl-P then Ctrl-Q, as in `docker attach`.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// A parsed detach sequence; empty disables detaching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(Vec<u8>);

impl DetachKeys {
    /// Parses `ctrl-p,ctrl-q`-style text: comma-separated keys, each `ctrl-<letter>` (or
    /// `ctrl-@ [ \ ] ^ _`) or one printable ASCII character. An empty text disables
    /// detaching.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        text.split(',')
            .map(|key| parse_key(key.trim()))
            .collect::<Result<Vec<u8>, String>>()
            .map(Self)
    }

    /// The sequence as the user types it, for messages.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|&byte| match byte {
                0..=0x1f => format!("Ctrl-{}", char::from(byte + 0x40)),
                _ => char::from(byte).to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn parse_key(key: &str) -> Result<u8, String> {
    let invalid = || {
        format!(
            "invalid detach key {key:?}: use ctrl-<letter> (or ctrl-@, ctrl-[, ctrl-\\, ctrl-], \
             ctrl-^, ctrl-_) or one printable character, comma-separated, e.g. {DEFAULT_DETACH_KEYS}"
        )
    };
    if let Some(rest) = key.to_ascii_lowercase().strip_prefix("ctrl-") {
        let mut chars = rest.chars();
        return match (chars.next(), chars.next()) {
            (Some(c @ 'a'..='z'), None) => Ok(c as u8 - b'a' + 1),
            (Some(c @ ('@' | '[' | '\\' | ']' | '^' | '_')), None) => Ok(c as u8 - 0x40),
            _ => Err(invalid()),
        };
    }
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_graphic() => Ok(c as u8),
        _ => Err(invalid()),
    }
}

/// Watches typed bytes for the detach sequence. Bytes that begin the sequence are held
/// back until the next byte shows whether the sequence goes on; if it does not, they
/// are sent after all, in order.
#[derive(Debug)]
pub struct Detacher {
    keys: DetachKeys,
    matched: usize,
}

/// What to do with a chunk of typed bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes for the sandbox's terminal.
    pub send: Vec<u8>,
    /// The detach sequence was typed: detach (after sending `send`).
    pub detach: bool,
}

impl Detacher {
    /// A watcher for `keys`.
    pub fn new(keys: DetachKeys) -> Self {
        Self { keys, matched: 0 }
    }

    /// Filters one chunk of input.
    pub fn feed(&mut self, input: &[u8]) -> Filtered {
        let keys = &self.keys.0;
        let mut send = Vec::with_capacity(input.len());
        if keys.is_empty() {
            send.extend_from_slice(input);
            return Filtered {
                send,
                detach: false,
            };
        }
        for &byte in input {
            if byte == keys[self.matched] {
                self.matched += 1;
                if self.matched == keys.len() {
                    self.matched = 0;
                    return Filtered { send, detach: true };
                }
                continue;
            }
            // The held bytes were not the sequence after all.
            send.extend_from_slice(&keys[..self.matched]);
            self.matched = 0;
            if byte == keys[0] {
                self.matched = 1;
                if keys.len() == 1 {
                    self.matched = 0;
                    return Filtered { send, detach: true };
                }
            } else {
                send.push(byte);
            }
        }
        Filtered {
            send,
            detach: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_control_keys_and_characters() {
        assert_eq!(
            DetachKeys::parse(DEFAULT_DETACH_KEYS),
            Ok(DetachKeys(vec![0x10, 0x11]))
        );
        assert_eq!(
            DetachKeys::parse("Ctrl-], q"),
            Ok(DetachKeys(vec![0x1d, b'q']))
        );
        assert_eq!(DetachKeys::parse(""), Ok(DetachKeys(Vec::new())));
        assert_eq!(
            DetachKeys::parse(DEFAULT_DETACH_KEYS)
                .expect("valid")
                .describe(),
            "Ctrl-P Ctrl-Q"
        );
        for bad in ["ctrl-", "ctrl-pp", "ctrl-1", "ab", "ctrl-p,,ctrl-q", " "] {
            if bad.trim().is_empty() {
                continue;
            }
            let error = DetachKeys::parse(bad).expect_err(bad);
            assert!(error.contains("invalid detach key"), "{error}");
        }
    }

    fn detacher() -> Detacher {
        Detacher::new(DetachKeys::parse(DEFAULT_DETACH_KEYS).expect("valid"))
    }

    #[test]
    fn the_sequence_detaches_even_split_across_reads() {
        let mut d = detacher();
        assert_eq!(
            d.feed(b"ls\x10"),
            Filtered {
                send: b"ls".to_vec(),
                detach: false
            }
        );
        assert_eq!(
            d.feed(b"\x11rest"),
            Filtered {
                send: Vec::new(),
                detach: true
            }
        );
    }

    #[test]
    fn a_begun_sequence_that_stops_sends_every_key() {
        let mut d = detacher();
        // Ctrl-P alone (shell history) reaches the shell once the next key shows it.
        assert_eq!(d.feed(b"\x10").send, b"");
        assert_eq!(d.feed(b"a").send, b"\x10a");
        // Ctrl-P Ctrl-P Ctrl-Q: the first Ctrl-P is sent, the next two detach.
        let filtered = d.feed(b"\x10\x10\x11");
        assert_eq!(filtered.send, b"\x10");
        assert!(filtered.detach);
        // Ctrl-C and Ctrl-D pass untouched.
        assert_eq!(d.feed(b"\x03\x04").send, b"\x03\x04");
    }

    #[test]
    fn no_keys_never_detach() {
        let mut d = Detacher::new(DetachKeys::parse("").expect("valid"));
        assert_eq!(
            d.feed(b"\x10\x11"),
            Filtered {
                send: b"\x10\x11".to_vec(),
                detach: false
            }
        );
    }
}
