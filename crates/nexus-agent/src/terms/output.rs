//! [`TermOutput`]: the bounded ring of a terminal's recent output, the cursors of the
//! attached readers, and the room the pseudo-terminal pump may fill: with nobody
//! attached it drains freely (old bytes are evicted, the shell never blocks); with readers
//! it reads only what fits without evicting a byte the slowest one has not sent.

use std::collections::HashMap;

use crate::procs::ring::{Chunk, PUMP_CHUNK, StreamBuf};

/// Bytes of recent output a terminal keeps for re-attaching: several screens' worth.
pub const TERM_WINDOW: usize = 64 * 1024;

/// How far into the kept bytes a replay looks for the start of a line.
const LINE_SEARCH: usize = 4096;

/// A terminal's output ring and its readers.
#[derive(Debug)]
pub struct TermOutput {
    buf: StreamBuf,
    window: usize,
    cursors: HashMap<u64, u64>,
    next_reader: u64,
    /// Keep nothing more: the session's exit is final, late output is drained and
    /// dropped.
    pub discard: bool,
    /// The pump is waiting for a reader to make room.
    pub blocked: bool,
}

impl TermOutput {
    /// An empty ring keeping the last `window` bytes.
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        Self {
            buf: StreamBuf::new(window),
            window,
            cursors: HashMap::new(),
            next_reader: 0,
            discard: false,
            blocked: false,
        }
    }

    /// Offset just past the newest byte: everything the terminal wrote so far (before
    /// the exit was final).
    pub fn end(&self) -> u64 {
        self.buf.end()
    }

    /// How many bytes the pump may read now (0: wait for a reader).
    pub fn room(&self) -> usize {
        if self.discard || self.cursors.is_empty() {
            return PUMP_CHUNK;
        }
        let end = self.buf.end();
        let slowest = self
            .cursors
            .values()
            .copied()
            .min()
            .unwrap_or(end)
            .clamp(self.buf.start(), end);
        let unsent = usize::try_from(end - slowest).unwrap_or(usize::MAX);
        self.window.saturating_sub(unsent).min(PUMP_CHUNK)
    }

    /// Records bytes read from the terminal.
    pub fn accept(&mut self, bytes: &[u8]) {
        self.buf.count_written(bytes.len());
        if !self.discard {
            self.buf.push(bytes);
        }
    }

    /// Where a new reader starts: the oldest byte kept, or, when older bytes were
    /// already evicted, the start of the first whole line kept (so a replay does not
    /// begin in the middle of a line or an escape sequence) if one starts soon enough.
    pub fn replay_start(&self) -> u64 {
        let start = self.buf.start();
        if start == 0 {
            return 0;
        }
        match self.buf.read(start, LINE_SEARCH) {
            Chunk::Data { bytes, .. } => bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(start, |i| start + i as u64 + 1),
            _ => start,
        }
    }

    /// Attaches a reader at [`TermOutput::replay_start`]; returns its id.
    pub fn attach(&mut self) -> u64 {
        let id = self.next_reader;
        self.next_reader += 1;
        self.cursors.insert(id, self.replay_start());
        id
    }

    /// Detaches a reader.
    pub fn detach(&mut self, reader: u64) {
        self.cursors.remove(&reader);
    }

    /// How many readers are attached.
    pub fn readers(&self) -> usize {
        self.cursors.len()
    }

    /// The next offset `reader` will send.
    pub fn cursor(&self, reader: u64) -> Option<u64> {
        self.cursors.get(&reader).copied()
    }

    /// Up to `max` bytes for `reader` from its cursor, moving the cursor past them (or
    /// past a gap, which an attached reader never meets since the pump waits for it).
    pub fn take(&mut self, reader: u64, max: usize) -> Option<(u64, Vec<u8>)> {
        let cursor = self.cursors.get_mut(&reader)?;
        match self.buf.read(*cursor, max) {
            Chunk::Data { offset, bytes } => {
                *cursor = offset + bytes.len() as u64;
                Some((offset, bytes))
            }
            Chunk::Gap { offset, bytes } => {
                *cursor = offset + bytes;
                None
            }
            Chunk::Nothing => None,
        }
    }

    /// Frees what an ended session no longer needs.
    pub fn shrink(&mut self) {
        self.buf.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_window_and_replays_it() {
        let mut out = TermOutput::new(8);
        out.accept(b"abc");
        let reader = out.attach();
        assert_eq!(out.take(reader, 100), Some((0, b"abc".to_vec())));
        out.detach(reader);
        out.accept(b"defghijkl");
        assert_eq!(out.end(), 12);
        let reader = out.attach();
        assert_eq!(
            out.take(reader, 100),
            Some((4, b"efghijkl".to_vec())),
            "a new reader gets the kept window, offsets absolute"
        );
        assert_eq!(out.take(reader, 100), None, "then nothing until more comes");
    }

    #[test]
    fn replay_starts_at_a_line_once_bytes_were_evicted() {
        let mut out = TermOutput::new(10);
        out.accept(b"ab\ncd\n");
        assert_eq!(out.replay_start(), 0, "nothing evicted: everything");
        out.accept(b"ef\ngh");
        // Kept: "b\ncd\nef\ngh" from offset 1; the first whole line starts at 3.
        assert_eq!(out.end(), 11);
        let reader = out.attach();
        assert_eq!(out.take(reader, 100), Some((3, b"cd\nef\ngh".to_vec())));
        let mut out = TermOutput::new(4);
        out.accept(b"0123456789");
        assert_eq!(
            out.replay_start(),
            6,
            "no line start kept: from the oldest byte"
        );
    }

    #[test]
    fn no_reader_drains_freely_and_a_stalled_reader_stops_the_pump() {
        let mut out = TermOutput::new(100);
        assert_eq!(out.room(), PUMP_CHUNK, "unwatched: never block the shell");
        for _ in 0..100 {
            out.accept(&[b'y'; 1000]);
        }
        assert_eq!(
            out.end(),
            100_000,
            "everything counted, only the window kept"
        );
        let reader = out.attach();
        let start = out.cursor(reader).unwrap();
        assert_eq!(start, 99_900);
        assert_eq!(out.room(), 0, "the whole window is unsent: wait");
        assert_eq!(
            out.take(reader, 60).map(|(o, b)| (o, b.len())),
            Some((start, 60))
        );
        assert_eq!(out.room(), 60, "sent bytes make room");
        out.accept(&[b'y'; 60]);
        assert_eq!(out.room(), 0);
        out.detach(reader);
        assert_eq!(out.room(), PUMP_CHUNK, "detached: drain again");
        out.attach();
        out.discard = true;
        assert_eq!(out.room(), PUMP_CHUNK, "an ended session never holds back");
        let end = out.end();
        out.accept(b"late");
        assert_eq!(out.end(), end, "and keeps nothing more");
    }

    #[test]
    fn the_slowest_reader_decides() {
        let mut out = TermOutput::new(10);
        let slow = out.attach();
        let fast = out.attach();
        out.accept(b"0123456");
        assert_eq!(out.take(fast, 100).map(|(_, b)| b.len()), Some(7));
        assert_eq!(out.room(), 3, "the slow reader has 7 unsent");
        assert_eq!(out.readers(), 2);
        out.detach(slow);
        assert_eq!(out.room(), 10);
    }
}
