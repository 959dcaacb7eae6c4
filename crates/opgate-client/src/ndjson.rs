//! NDJSON decoding as the bytes arrive: a line is handed out as soon as its newline is in, so memory holds at
//! most one partial line and one network chunk, whatever the length of the stream.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde::de::DeserializeOwned;

use crate::Error;

/// A line longer than this is refused rather than buffered: no item of the contract comes near it.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// A response body, as chunks of bytes.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// The raw lines of an NDJSON response, without their newlines; blank lines are skipped. The contract's error
/// line (`{"error": {...}}`) comes out as an [`Error::Api`] with `streamed: true` and ends the stream, as does
/// a connection that breaks off.
pub struct Lines {
    body: ByteStream,
    buf: BytesMut,
    /// Bytes at the start of `buf` already searched for a newline.
    scanned: usize,
    /// The body has ended; what is left in `buf` is the last line.
    eof: bool,
    /// Nothing more will be yielded.
    done: bool,
    status: u16,
    request_id: Option<String>,
}

impl Lines {
    pub(crate) fn new(body: ByteStream, status: u16, request_id: Option<String>) -> Self {
        Lines {
            body,
            buf: BytesMut::new(),
            scanned: 0,
            eof: false,
            done: false,
            status,
            request_id,
        }
    }

    /// The request id of the response (`X-Request-Id`).
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Decodes each line as a `T`.
    pub fn items<T: DeserializeOwned>(self) -> ItemStream<T> {
        ItemStream {
            lines: self,
            item: PhantomData,
        }
    }

    /// Bytes held for a line not yet complete (tests check that memory stays flat).
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next complete line in the buffer, if any.
    fn take_line(&mut self) -> Option<Bytes> {
        let newline = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
        match newline {
            Some(i) => {
                let mut line = self.buf.split_to(self.scanned + i + 1);
                self.scanned = 0;
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                Some(line.freeze())
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// A complete line: an item, or the stream's error line (which ends the stream).
    fn classify(&mut self, line: Bytes) -> Result<Bytes, Error> {
        match Error::from_line(&line, self.request_id.as_deref()) {
            Some(e) => {
                self.done = true;
                Err(e)
            }
            None => Ok(line),
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        self.buf = BytesMut::new();
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for Lines {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(line) = this.take_line() {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                return Poll::Ready(Some(this.classify(line)));
            }
            if this.eof {
                this.done = true;
                let rest = this.buf.split().freeze();
                if rest.trim_ascii().is_empty() {
                    return Poll::Ready(None);
                }
                // The last line may lack its newline.
                let result = this.classify(rest);
                this.done = true;
                return Poll::Ready(Some(result));
            }
            if this.buf.len() > MAX_LINE_BYTES {
                let e = Error::Protocol {
                    message: format!("an NDJSON line is longer than {MAX_LINE_BYTES} bytes"),
                    status: this.status,
                    request_id: this.request_id.clone(),
                };
                return this.fail(e);
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.eof = true,
                Poll::Ready(Some(Err(e))) => return this.fail(e),
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
            }
        }
    }
}

/// The items of a streaming operation, decoded one line at a time as they arrive. A line that is not a `T`
/// yields [`Error::Protocol`], the stream's error line [`Error::Api`]; either ends the stream.
pub struct ItemStream<T> {
    lines: Lines,
    item: PhantomData<fn() -> T>,
}

impl<T> ItemStream<T> {
    /// The request id of the response (`X-Request-Id`).
    pub fn request_id(&self) -> Option<&str> {
        self.lines.request_id()
    }
}

impl<T: DeserializeOwned> Stream for ItemStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let lines = &mut self.lines;
        match Pin::new(&mut *lines).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(line))) => {
                Poll::Ready(Some(serde_json::from_slice(&line).map_err(|e| {
                    lines.done = true;
                    Error::Protocol {
                        message: format!("an NDJSON line is not the expected item: {e}"),
                        status: lines.status,
                        request_id: lines.request_id.clone(),
                    }
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt};
    use opgate_core::Code;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn lines_of(chunks: Vec<Result<&'static [u8], Error>>) -> Lines {
        let body = stream::iter(
            chunks
                .into_iter()
                .map(|c| c.map(Bytes::from_static))
                .collect::<Vec<_>>(),
        );
        Lines::new(Box::pin(body), 200, Some("req_t".into()))
    }

    fn run(lines: Lines) -> Vec<Result<String, String>> {
        block_on(lines.collect::<Vec<_>>())
            .into_iter()
            .map(|r| {
                r.map(|b| String::from_utf8(b.to_vec()).unwrap())
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_in_any_way() {
        let text: &[u8] = b"{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}";
        for cut in 0..text.len() {
            let (x, y) = text.split_at(cut);
            let got = run(lines_of(vec![Ok(x), Ok(y)]));
            let want: Vec<Result<String, String>> = vec![
                Ok("{\"a\":1}".into()),
                Ok("{\"b\":2}".into()),
                Ok("{\"c\":3}".into()),
            ];
            assert_eq!(got, want, "cut at {cut}");
        }
        // One byte at a time.
        let bytes: Vec<Result<&'static [u8], Error>> =
            (0..text.len()).map(|i| Ok(&text[i..i + 1])).collect();
        assert_eq!(run(lines_of(bytes)).len(), 3);
    }

    #[test]
    fn the_error_line_ends_the_stream_as_an_error() {
        let lines = lines_of(vec![
            Ok(b"{\"id\":\"key_1\"}\n{\"id\":\"key_2\"}\n{\"error\":{\"code\":\"unavailable\",\"message\":\"storage is unavailable; retry later\",\"request_id\":\"req_x\"}}\n"),
            Ok(b"{\"id\":\"never\"}\n"),
        ]);
        let items: Vec<_> = block_on(lines.collect::<Vec<_>>());
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        match &items[2] {
            Err(Error::Api {
                code,
                status,
                request_id,
                streamed,
                message,
            }) => {
                assert_eq!(*code, Code::Unavailable);
                assert_eq!(*status, 503);
                assert_eq!(request_id.as_deref(), Some("req_x"));
                assert!(*streamed);
                assert_eq!(message, "storage is unavailable; retry later");
            }
            other => panic!("expected the stream's error, got {other:?}"),
        }
    }

    #[test]
    fn an_item_that_is_not_the_expected_type_is_a_protocol_error() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Item {
            id: String,
        }
        let lines = lines_of(vec![Ok(b"{\"id\":\"a\"}\nnot json\n{\"id\":\"b\"}\n")]);
        let items: Vec<_> = block_on(lines.items::<Item>().collect::<Vec<_>>());
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(Error::Protocol { status: 200, .. })));
    }

    #[test]
    fn memory_stays_flat_over_a_long_stream() {
        const LINES: usize = 100_000;
        let line: &'static [u8] = b"{\"id\":\"key_01jf3m8v6k2x9q4w7e5r1t0y8z\",\"name\":\"seed\",\"permissions\":[\"api_keys:read\"]}\n";
        // Chunks of 7 lines and a bit, so that lines straddle chunk boundaries.
        let text: &'static [u8] = line.repeat(8).leak();
        let chunk = &text[..line.len() * 7 + 13];
        let rest = &text[line.len() * 7 + 13..];
        let body = stream::iter((0..LINES / 8).flat_map(move |_| [chunk, rest]))
            .map(|c| Ok(Bytes::from_static(c)));
        let mut lines = Lines::new(Box::pin(body), 200, None);
        let mut count = 0;
        let mut peak = 0;
        block_on(async {
            while let Some(item) = lines.next().await {
                assert_eq!(item.unwrap().len(), line.len() - 1);
                count += 1;
                peak = peak.max(lines.buffered_capacity());
            }
        });
        assert_eq!(count, LINES);
        assert!(peak < 4 * text.len(), "the buffer grew to {peak} bytes");
    }
}
