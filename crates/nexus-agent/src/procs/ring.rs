//! [`StreamBuf`]: the recent window of one output stream, addressed by absolute offsets,
//! and [`Output`]: both streams of a process with the output cap, the readers' cursors and
//! the room the pipe pumps may fill (the backpressure rule).

use std::collections::{HashMap, VecDeque};

use nexus_agent_proto::StreamKind;

/// Most bytes a pump reads from a pipe at once (and so its buffer size).
pub const PUMP_CHUNK: usize = 64 * 1024;

/// The last `window` bytes of a stream; older bytes are evicted as new ones arrive.
#[derive(Debug)]
pub struct StreamBuf {
    data: VecDeque<u8>,
    /// Offset of `data[0]`.
    start: u64,
    window: usize,
    /// Everything the process wrote to the stream, kept or discarded.
    written: u64,
    /// The pipe reached end-of-file (or was abandoned).
    pub eof: bool,
}

/// What a reader at some offset can have next.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// The bytes `offset..offset + bytes` were evicted.
    Gap {
        /// Where the gap starts.
        offset: u64,
        /// Its length.
        bytes: u64,
    },
    /// Bytes starting at `offset`.
    Data {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Nothing beyond this offset yet.
    Nothing,
}

impl StreamBuf {
    /// An empty stream keeping at most `window` bytes.
    pub fn new(window: usize) -> Self {
        Self {
            data: VecDeque::new(),
            start: 0,
            window: window.max(1),
            written: 0,
            eof: false,
        }
    }

    /// Offset of the oldest byte kept.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset just past the newest byte kept: the number of bytes recorded.
    pub fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// Bytes the process wrote, including discarded ones.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Records `bytes`, evicting the oldest kept bytes beyond the window.
    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.window {
            // Only the tail can stay; the rest counts as recorded and evicted at once.
            let cut = bytes.len() - self.window;
            self.start += (self.data.len() + cut) as u64;
            self.data.clear();
            &bytes[cut..]
        } else {
            let overflow = (self.data.len() + bytes.len()).saturating_sub(self.window);
            self.data.drain(..overflow);
            self.start += overflow as u64;
            bytes
        };
        self.data.extend(bytes);
    }

    /// Counts bytes that were written but not recorded.
    pub fn count_written(&mut self, bytes: usize) {
        self.written += bytes as u64;
    }

    /// Up to `max` bytes from `offset` on.
    pub fn read(&self, offset: u64, max: usize) -> Chunk {
        if offset < self.start {
            return Chunk::Gap {
                offset,
                bytes: self.start - offset,
            };
        }
        let end = self.end();
        if offset >= end || max == 0 {
            return Chunk::Nothing;
        }
        let from = usize::try_from(offset - self.start).expect("inside the window");
        let len = max.min(usize::try_from(end - offset).expect("inside the window"));
        let (front, back) = self.data.as_slices();
        let mut bytes = Vec::with_capacity(len);
        if from < front.len() {
            let take = len.min(front.len() - from);
            bytes.extend_from_slice(&front[from..from + take]);
            bytes.extend_from_slice(&back[..len - take]);
        } else {
            let from = from - front.len();
            bytes.extend_from_slice(&back[from..from + len]);
        }
        Chunk::Data { offset, bytes }
    }

    /// Returns memory the buffer no longer needs (for records of exited processes).
    pub fn shrink(&mut self) {
        self.data.shrink_to_fit();
    }
}

/// Both output streams of a process, the output cap, and the cursors of the attached
/// readers.
#[derive(Debug)]
pub struct Output {
    streams: [StreamBuf; 2],
    /// Cap on the bytes recorded, both streams together.
    cap: u64,
    /// Some output was not recorded because of the cap.
    pub truncated: bool,
    /// Record nothing more (the process's exit is final).
    pub discard_all: bool,
    /// The next offset each attached reader will send, per stream.
    cursors: HashMap<u64, [u64; 2]>,
    next_cursor: u64,
    /// Whether each pump is waiting for a reader to make room.
    pub blocked: [bool; 2],
}

/// The index of a stream in per-stream arrays.
pub fn index(stream: StreamKind) -> usize {
    match stream {
        StreamKind::Stdout => 0,
        StreamKind::Stderr => 1,
    }
}

impl Output {
    /// Empty streams of `window` bytes each, recording at most `cap` bytes.
    pub fn new(window: usize, cap: u64) -> Self {
        Self {
            streams: [StreamBuf::new(window), StreamBuf::new(window)],
            cap,
            truncated: false,
            discard_all: false,
            cursors: HashMap::new(),
            next_cursor: 0,
            blocked: [false; 2],
        }
    }

    /// One stream.
    pub fn stream(&self, stream: StreamKind) -> &StreamBuf {
        &self.streams[index(stream)]
    }

    /// One stream, mutable.
    pub fn stream_mut(&mut self, stream: StreamKind) -> &mut StreamBuf {
        &mut self.streams[index(stream)]
    }

    /// How many bytes the pump of `stream` may read now. With readers attached this is
    /// what fits in the window without evicting a byte the slowest one has not sent (0
    /// means: wait, which leaves the pipe full and blocks the process). With none, or when
    /// nothing more is recorded anyway, the pump drains freely.
    pub fn room(&self, stream: StreamKind) -> usize {
        let buf = self.stream(stream);
        if self.discard_all || self.truncated || self.cursors.is_empty() {
            return PUMP_CHUNK;
        }
        let slowest = self
            .cursors
            .values()
            .map(|c| c[index(stream)])
            .min()
            .unwrap_or(buf.end())
            .max(buf.start());
        let unsent = usize::try_from(buf.end() - slowest.min(buf.end())).unwrap_or(usize::MAX);
        buf.window.saturating_sub(unsent).min(PUMP_CHUNK)
    }

    /// Takes `bytes` read from `stream`'s pipe: records what the cap allows.
    pub fn accept(&mut self, stream: StreamKind, bytes: &[u8]) {
        self.stream_mut(stream).count_written(bytes.len());
        if self.discard_all {
            return;
        }
        let recorded = self.streams[0].end() + self.streams[1].end();
        let allowed = usize::try_from(self.cap.saturating_sub(recorded)).unwrap_or(usize::MAX);
        let keep = bytes.len().min(allowed);
        if keep < bytes.len() {
            self.truncated = true;
        }
        self.stream_mut(stream).push(&bytes[..keep]);
    }

    /// Attaches a reader at `from`; refused when an offset lies beyond what was recorded.
    pub fn attach(&mut self, from: [u64; 2]) -> Result<u64, String> {
        for (i, name) in ["stdout", "stderr"].iter().enumerate() {
            let end = self.streams[i].end();
            if from[i] > end {
                return Err(format!(
                    "offset {} is beyond the end of {name} ({end} bytes so far)",
                    from[i]
                ));
            }
        }
        let id = self.next_cursor;
        self.next_cursor += 1;
        self.cursors.insert(id, from);
        Ok(id)
    }

    /// A reader's cursors.
    pub fn cursor(&self, reader: u64) -> Option<[u64; 2]> {
        self.cursors.get(&reader).copied()
    }

    /// Moves a reader's cursors.
    pub fn set_cursor(&mut self, reader: u64, at: [u64; 2]) {
        if let Some(cursor) = self.cursors.get_mut(&reader) {
            *cursor = at;
        }
    }

    /// Detaches a reader.
    pub fn detach(&mut self, reader: u64) {
        self.cursors.remove(&reader);
    }

    /// Both streams at end of file.
    pub fn all_eof(&self) -> bool {
        self.streams.iter().all(|s| s.eof)
    }

    /// Frees what an exited process's record no longer needs.
    pub fn shrink(&mut self) {
        self.streams.iter_mut().for_each(StreamBuf::shrink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(chunk: Chunk) -> (u64, Vec<u8>) {
        match chunk {
            Chunk::Data { offset, bytes } => (offset, bytes),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn keeps_the_last_window_bytes_with_absolute_offsets() {
        let mut buf = StreamBuf::new(4);
        buf.push(b"abc");
        buf.push(b"def");
        assert_eq!((buf.start(), buf.end()), (2, 6));
        assert_eq!(data(buf.read(2, 10)), (2, b"cdef".to_vec()));
        assert_eq!(data(buf.read(4, 1)), (4, b"e".to_vec()));
        assert_eq!(
            buf.read(0, 10),
            Chunk::Gap {
                offset: 0,
                bytes: 2
            }
        );
        assert_eq!(buf.read(6, 10), Chunk::Nothing);
        buf.push(b"0123456789");
        assert_eq!((buf.start(), buf.end()), (12, 16));
        assert_eq!(data(buf.read(12, 10)), (12, b"6789".to_vec()));
    }

    #[test]
    fn reads_across_the_ring_wrap() {
        let mut buf = StreamBuf::new(8);
        for round in 0..50u8 {
            buf.push(&[round; 3]);
            let end = buf.end();
            let start = buf.start();
            let (offset, bytes) = data(buf.read(start, 100));
            assert_eq!(offset, start);
            assert_eq!(bytes.len() as u64, end - start);
            // Byte at offset o was written in round o / 3.
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(u64::from(*b), (start + i as u64) / 3);
            }
        }
    }

    #[test]
    fn cap_records_a_prefix_and_counts_everything() {
        let mut out = Output::new(1024, 10);
        out.accept(StreamKind::Stdout, b"123456");
        out.accept(StreamKind::Stderr, b"abcdef");
        out.accept(StreamKind::Stdout, b"789");
        assert!(out.truncated);
        assert_eq!(out.stream(StreamKind::Stdout).end(), 6);
        assert_eq!(out.stream(StreamKind::Stderr).end(), 4);
        assert_eq!(out.stream(StreamKind::Stdout).written(), 9);
        assert_eq!(out.stream(StreamKind::Stderr).written(), 6);
    }

    #[test]
    fn room_follows_the_slowest_reader() {
        let mut out = Output::new(100, u64::MAX);
        assert_eq!(
            out.room(StreamKind::Stdout),
            PUMP_CHUNK,
            "no reader: drain freely"
        );
        let slow = out.attach([0, 0]).unwrap();
        out.accept(StreamKind::Stdout, &[0; 60]);
        assert_eq!(out.room(StreamKind::Stdout), 40);
        assert_eq!(out.room(StreamKind::Stderr), 100);
        let fast = out.attach([60, 0]).unwrap();
        assert_eq!(out.room(StreamKind::Stdout), 40, "the slow reader decides");
        out.accept(StreamKind::Stdout, &[0; 40]);
        assert_eq!(out.room(StreamKind::Stdout), 0, "full: the pump must wait");
        out.set_cursor(slow, [70, 0]);
        assert_eq!(
            out.room(StreamKind::Stdout),
            60,
            "now the other one is the slowest"
        );
        out.detach(fast);
        assert_eq!(out.room(StreamKind::Stdout), 70);
        out.detach(slow);
        assert_eq!(out.room(StreamKind::Stdout), PUMP_CHUNK);
    }

    #[test]
    fn truncation_and_final_exit_stop_backpressure() {
        let mut out = Output::new(10, 10);
        out.attach([0, 0]).unwrap();
        out.accept(StreamKind::Stdout, &[0; 10]);
        assert_eq!(out.room(StreamKind::Stdout), 0);
        out.accept(StreamKind::Stdout, &[0; 1]);
        assert_eq!(
            out.room(StreamKind::Stdout),
            PUMP_CHUNK,
            "beyond the cap: discard"
        );
        let mut out = Output::new(10, 100);
        out.attach([0, 0]).unwrap();
        out.accept(StreamKind::Stdout, &[0; 10]);
        out.discard_all = true;
        assert_eq!(out.room(StreamKind::Stdout), PUMP_CHUNK);
    }

    #[test]
    fn attach_refuses_offsets_past_the_end() {
        let mut out = Output::new(10, 100);
        out.accept(StreamKind::Stderr, b"ab");
        assert!(out.attach([0, 2]).is_ok());
        let err = out.attach([1, 0]).unwrap_err();
        assert_eq!(err, "offset 1 is beyond the end of stdout (0 bytes so far)");
    }
}
