//! What a function's replicas wrote: a bounded ring of lines per function.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The longest line kept; longer ones are cut (a replica printing megabytes without a
/// newline must not grow the ring without bound).
const MAX_LINE_BYTES: usize = 4096;

/// The last `capacity` lines a function's replicas wrote, each prefixed with its
/// replica.
#[derive(Debug)]
pub(crate) struct LogRing {
    capacity: usize,
    lines: Mutex<VecDeque<String>>,
}

impl LogRing {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            lines: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `tail` lines, oldest first.
    pub(crate) fn tail(&self, tail: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let skip = lines.len().saturating_sub(tail);
        lines.iter().skip(skip).cloned().collect()
    }

    /// Copies `stream` into the ring line by line, each as `<prefix> <line>`, until it
    /// ends (the process closed it or exited).
    pub(crate) async fn copy(&self, prefix: &str, stream: impl AsyncRead + Unpin) {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_bounded_line(&mut reader, &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    self.push(format!("{prefix} {}", text.trim_end_matches(['\n', '\r'])));
                }
            }
        }
    }
}

/// Reads up to a newline, keeping at most [`MAX_LINE_BYTES`] of it (the rest of a long
/// line is read and dropped). Returns the bytes consumed.
async fn read_bounded_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (&buffer[..=end], true),
            None => (buffer, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        consumed += used;
        if done {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_lines() {
        let ring = LogRing::new(3);
        for n in 0..5 {
            ring.push(format!("line {n}"));
        }
        assert_eq!(ring.tail(10), ["line 2", "line 3", "line 4"]);
        assert_eq!(ring.tail(1), ["line 4"]);
    }

    #[tokio::test]
    async fn streams_are_copied_by_line_and_long_lines_are_cut() {
        let ring = LogRing::new(10);
        let long = "x".repeat(3 * MAX_LINE_BYTES);
        let text = format!("hello\r\n{long}\nbye");
        ring.copy("[r1]", text.as_bytes()).await;
        let lines = ring.tail(10);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "[r1] hello");
        assert_eq!(lines[1].len(), "[r1] ".len() + MAX_LINE_BYTES);
        assert_eq!(lines[2], "[r1] bye");
    }
}
