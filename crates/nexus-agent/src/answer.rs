//! The frame that carries an operation's answer: PACKED or JSON by the connection's
//! version, and never larger than a frame may be. A frame over [`MAX_FRAME_LEN`] cannot
//! be sent at all (writing it would end the connection, and with it every operation on
//! it), so an answer that would not fit is cut or refused here: a listing, a glob or a
//! grep keeps as many results as fit and says `truncated`, like its own result cap; any
//! other answer becomes an error that names the size and what to ask for instead.

use nexus_agent_proto::frame::HEADER_LEN;
use nexus_agent_proto::{
    ErrorCode, Frame, FrameType, MAX_FRAME_LEN, PACKED_PROTOCOL_VERSION, Response,
};

/// The largest payload a frame carries.
const MAX_PAYLOAD: usize = MAX_FRAME_LEN - HEADER_LEN;

/// The frame that carries `response` on `channel` for a connection speaking `version`.
pub fn answer(channel: u32, response: Response, version: u16) -> Frame {
    answer_within(channel, response, version, MAX_PAYLOAD)
}

fn answer_within(channel: u32, mut response: Response, version: u16, budget: usize) -> Frame {
    let frame = encode(channel, &response, version);
    let size = frame.payload.len();
    if size <= budget {
        return frame;
    }
    let Some(results) = results_of(&response) else {
        return too_large(channel, &response, size, budget);
    };
    // Cut to the share of results that fits, then by a tenth until it does (a listing's
    // entries are of similar size, so this rarely takes more than two tries).
    let total = results;
    let mut keep = total.saturating_mul(budget) / size;
    loop {
        truncate(&mut response, keep);
        let frame = encode(channel, &response, version);
        if frame.payload.len() <= budget || keep == 0 {
            tracing::info!(
                kept = keep,
                of = total,
                bytes = size,
                "an answer was cut to fit in one frame"
            );
            return frame;
        }
        keep = keep * 9 / 10;
    }
}

fn encode(channel: u32, response: &Response, version: u16) -> Frame {
    match response {
        Response::FsStats { results } if version >= PACKED_PROTOCOL_VERSION => Frame::new(
            FrameType::Packed,
            channel,
            nexus_agent_proto::packed::encode_stats(results),
        ),
        _ => Frame::json(FrameType::Response, channel, response),
    }
}

/// How many results an answer that may be cut has; `None` for any other answer.
fn results_of(response: &Response) -> Option<usize> {
    match response {
        Response::FsListed(list) => Some(list.entries.len()),
        Response::FsGlobbed(glob) => Some(glob.matches.len()),
        Response::FsGrepped(grep) => Some(grep.matches.len()),
        _ => None,
    }
}

/// Keeps the first `keep` results and marks the answer truncated.
fn truncate(response: &mut Response, keep: usize) {
    match response {
        Response::FsListed(list) => {
            list.entries.truncate(keep);
            list.truncated = true;
        }
        Response::FsGlobbed(glob) => {
            glob.matches.truncate(keep);
            glob.truncated = true;
        }
        Response::FsGrepped(grep) => {
            grep.matches.truncate(keep);
            grep.truncated = true;
        }
        _ => {}
    }
}

/// The error that replaces an answer of `size` bytes that cannot be cut.
fn too_large(channel: u32, response: &Response, size: usize, budget: usize) -> Frame {
    let what = match response {
        Response::FsStats { .. } => "a stat of fewer paths at once",
        Response::FsBatch { .. } => "a batch of fewer operations",
        _ => "less at once",
    };
    tracing::warn!(
        bytes = size,
        "an answer too large for one frame was refused"
    );
    let refusal = Response::Error {
        code: ErrorCode::BadRequest,
        message: format!(
            "the answer would be {size} bytes, more than the {budget} one message can carry; ask for {what}"
        ),
    };
    Frame::json(FrameType::Response, channel, &refusal)
}

#[cfg(test)]
mod tests {
    use nexus_agent_proto::fs::{FileStat, FileType, ListResult, Outcome, StatResult};

    use super::*;

    fn entry(i: usize) -> FileStat {
        FileStat {
            path: format!("/workspace/big/file-with-a-longish-name-{i}"),
            file_type: FileType::File,
            size: 0,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_ms: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            symlink_target: None,
            sha256: None,
        }
    }

    #[test]
    fn an_answer_that_fits_is_sent_as_it_is() {
        let list = Response::FsListed(ListResult {
            entries: (0..10).map(entry).collect(),
            truncated: false,
        });
        let frame = answer(7, list.clone(), 4);
        assert_eq!(frame.channel, 7);
        assert_eq!(frame.response().unwrap(), list);
    }

    #[test]
    fn a_listing_too_large_for_a_frame_is_cut_and_marked_truncated() {
        let entries: Vec<FileStat> = (0..20_000).map(entry).collect();
        let list = Response::FsListed(ListResult {
            entries: entries.clone(),
            truncated: false,
        });
        assert!(serde_json::to_vec(&list).unwrap().len() > MAX_PAYLOAD);
        let frame = answer(1, list, 4);
        assert!(frame.payload.len() <= MAX_PAYLOAD);
        let Response::FsListed(cut) = frame.response().unwrap() else {
            panic!("not a listing");
        };
        assert!(cut.truncated);
        // What is kept is the listing's start, most of what fits.
        assert_eq!(cut.entries[..], entries[..cut.entries.len()]);
        assert!(cut.entries.len() > 2_000, "kept {}", cut.entries.len());
    }

    #[test]
    fn a_stat_too_large_for_a_frame_becomes_an_error_naming_the_fix() {
        let results: Vec<StatResult> = (0..100)
            .map(|i| StatResult {
                path: format!("p{i}"),
                result: Outcome::Ok(entry(i)),
            })
            .collect();
        // A budget of 1 KiB stands in for the frame limit.
        let frame = answer_within(3, Response::FsStats { results }, 4, 1024);
        assert_eq!(frame.kind, FrameType::Response);
        let Response::Error { code, message } = frame.response().unwrap() else {
            panic!("not an error");
        };
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("fewer paths"), "{message}");
    }
}
