//! One log line per request (and the server's own events) on stderr, for a program that embeds the gateway:
//! `opgate serve` calls [`init`] too. The filter comes from `OPGATE_LOG` (default `info`); colours only on a
//! terminal.

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `key=value` lines for people.
    #[default]
    Human,
    /// One JSON object per line, for collectors.
    Json,
}

/// The log writer's worker, kept until [`flush`] so that no buffered line is lost.
static WORKER: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> =
    std::sync::Mutex::new(None);

/// Lines buffered for the writer thread before a request waits for it (it never drops one).
const BUFFERED_LINES: usize = 64 * 1024;

/// Installs the process-wide `tracing` subscriber writing to stderr in `format`; a second call is ignored.
///
/// Lines are formatted on the request's thread but written by a thread of their own, so a request never
/// waits for stderr unless that thread is a whole buffer behind (then it waits rather than losing lines).
/// Call [`flush`] before the process exits (`opgate serve` does, after the service's shutdown) to write out
/// what is buffered.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, worker) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("opgate-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match format {
        // On a terminal, tracing's own colourful format; elsewhere (a file, a journal) the plain one, which
        // costs a fraction of it per line.
        LogFormat::Human if ansi => builder.try_init(),
        LogFormat::Human => builder.event_format(Plain).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if installed.is_ok() {
        *WORKER.lock().unwrap_or_else(|e| e.into_inner()) = Some(worker);
    }
}

/// Writes out every buffered log line and stops the writer thread; later lines are not written. For the very
/// end of a program that called [`init`].
pub fn flush() {
    drop(WORKER.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// The human format for lines that are not read on a terminal: `2026-11-26T09:16:04.123456Z  INFO target:
/// message field=value ...`, as tracing's own format prints it without colours, but written directly: the date
/// is formatted once a second, strings that need no quoting are written as they are, and nothing goes through
/// colour styling. Control characters in values are escaped, so no value can forge a line.
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        SECOND.with(|second| {
            let mut second = second.borrow_mut();
            if second.0 != now.as_secs() || second.1.is_empty() {
                let text = opgate_core::Timestamp(now.as_secs() as i64).to_rfc3339();
                *second = (now.as_secs(), text.trim_end_matches('Z').to_owned());
            }
            writer.write_str(&second.1)
        })?;
        let meta = event.metadata();
        write!(
            writer,
            ".{:06}Z {:>5} {}: ",
            now.subsec_micros(),
            meta.level().as_str(),
            meta.target()
        )?;
        let mut fields = Fields {
            out: NoControls(&mut writer),
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

thread_local! {
    /// The second last formatted on this thread, and its text without the `Z`.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Writes an event's fields: the message first as it is, then `name=value`.
struct Fields<W> {
    out: NoControls<W>,
    first: bool,
    result: std::fmt::Result,
}

impl<W: std::fmt::Write> Fields<W> {
    fn field(&mut self, name: &str, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.out, "{separator}{value}")
        } else {
            write!(self.out, "{separator}{name}={value}")
        };
    }
}

impl<W: std::fmt::Write> tracing::field::Visit for Fields<W> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // Quoted only when a reader could misread it: empty, or holding a space, a quote or an `=`.
        if field.name() != "message" && (value.is_empty() || value.contains([' ', '"', '=', '\\']))
        {
            self.field(field.name(), format_args!("{value:?}"));
        } else {
            self.field(field.name(), format_args!("{value}"));
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.field(field.name(), format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.field(field.name(), format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.field(field.name(), format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.field(field.name(), format_args!("{value:?}"));
    }
}

/// A writer that spells control characters out (`\u{1b}`), so a value cannot end the line or colour it.
struct NoControls<W>(W);

impl<W: std::fmt::Write> std::fmt::Write for NoControls<W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        if !text.chars().any(char::is_control) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            if c.is_control() {
                write!(self.0, "\\u{{{:x}}}", c as u32)?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// Lines written to a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_plain_format_quotes_only_what_needs_it_and_escapes_controls() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .event_format(super::Plain)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                request_id = %"req_01",
                op = "auth.whoami",
                principal = "a session subject",
                status = 200u64,
                "request"
            );
            tracing::warn!(error = %"line one\nforged line \u{1b}[31m", empty = "", "it failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert!(
            time.len() == 27 && time.ends_with('Z') && time.contains('T'),
            "{time}"
        );
        assert_eq!(
            rest,
            " INFO opgate::logging::tests: request request_id=req_01 op=auth.whoami \
             principal=\"a session subject\" status=200"
        );
        assert!(
            lines[1].ends_with(
                " WARN opgate::logging::tests: it failed error=line one\\u{a}forged line \\u{1b}[31m empty=\"\""
            ),
            "{}",
            lines[1]
        );
    }
}
