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
        LogFormat::Human => builder.try_init(),
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
