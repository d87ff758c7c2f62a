//! Cutting the bytes read from a pipe into lines for the writer. It owns the line-length limit;
//! it must never drop, reorder or alter a byte (except the `\n` that ends a line) and never
//! allocate more than one line's worth of buffer.

/// The longest text of one record: a longer line is split into `P` records of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Splits a byte stream into lines. Feed it what `read(2)` returned with [`push`](Self::push);
/// call [`finish`](Self::finish) at end of file.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// Bytes of the current line not yet emitted; never longer than [`MAX_LINE`].
    buf: Vec<u8>,
}

impl LineSplitter {
    /// A splitter with nothing buffered.
    pub fn new() -> Self {
        LineSplitter::default()
    }

    /// Feeds a chunk. `emit(text, partial)` is called for every line completed by it (text without
    /// the `\n`, `partial == false`) and for every [`MAX_LINE`] bytes of a longer line
    /// (`partial == true`). A line of exactly [`MAX_LINE`] bytes is one full record.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let room = MAX_LINE - self.buf.len();
            // One byte past the room: a '\n' there still ends a line of exactly MAX_LINE bytes.
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                self.emit(&data[..i], false, &mut emit);
                data = &data[i + 1..];
            } else if window.len() > room {
                // More than MAX_LINE bytes without a newline: the first MAX_LINE are a part.
                self.emit(&data[..room], true, &mut emit);
                data = &data[room..];
            } else {
                self.buf.extend_from_slice(data);
                data = &[];
            }
        }
    }

    /// Flushes a last line that had no `\n` (the pipe was closed) as a full record.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, false);
            self.buf.clear();
        }
    }

    /// Emits the buffered bytes followed by `tail`, without copying when nothing is buffered.
    fn emit(&mut self, tail: &[u8], partial: bool, emit: &mut impl FnMut(&[u8], bool)) {
        if self.buf.is_empty() {
            emit(tail, partial);
        } else {
            self.buf.extend_from_slice(tail);
            emit(&self.buf, partial);
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks`, finishes, and returns every emitted record as (text, partial).
    fn split(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new();
        for chunk in chunks {
            s.push(chunk, |line, partial| out.push((line.to_vec(), partial)));
        }
        s.finish(|line, partial| out.push((line.to_vec(), partial)));
        out
    }

    #[test]
    fn lines_in_one_chunk_keep_cr_and_empty_lines() {
        assert_eq!(
            split(&[b"a\n\nb c\r\nlast"]),
            vec![
                (b"a".to_vec(), false),
                (b"".to_vec(), false),
                (b"b c\r".to_vec(), false),
                (b"last".to_vec(), false)
            ]
        );
    }

    #[test]
    fn a_line_fed_one_byte_at_a_time() {
        let input = b"hello world\nsecond\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            split(&chunks),
            vec![
                (b"hello world".to_vec(), false),
                (b"second".to_vec(), false)
            ]
        );
    }

    #[test]
    fn a_40_kib_line_is_p_p_f_in_any_chunking() {
        let mut line: Vec<u8> = (0..40 * 1024)
            .map(|i| b'a' + u8::try_from(i % 26).unwrap())
            .collect();
        line.push(b'\n');
        for chunk_size in [1, 7, 4096, MAX_LINE, MAX_LINE + 1, line.len()] {
            let chunks: Vec<&[u8]> = line.chunks(chunk_size).collect();
            let out = split(&chunks);
            let shape: Vec<(usize, bool)> = out.iter().map(|(l, p)| (l.len(), *p)).collect();
            assert_eq!(
                shape,
                vec![(MAX_LINE, true), (MAX_LINE, true), (8 * 1024, false)]
            );
            let joined: Vec<u8> = out.into_iter().flat_map(|(l, _)| l).collect();
            assert_eq!(joined, line[..line.len() - 1]);
        }
    }

    #[test]
    fn exactly_max_line_is_one_full_record_even_when_the_newline_comes_later() {
        let line = vec![b'x'; MAX_LINE];
        assert_eq!(split(&[&line, b"\n"]), vec![(line.clone(), false)]);
        assert_eq!(split(&[&line]), vec![(line.clone(), false)]);
        let mut one_more = line.clone();
        one_more.push(b'y');
        assert_eq!(
            split(&[&one_more, b"\n"]),
            vec![(line, true), (b"y".to_vec(), false)]
        );
    }
}
