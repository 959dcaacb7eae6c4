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

/// Installs the process-wide `tracing` subscriber writing to stderr in `format`; a second call is ignored.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
