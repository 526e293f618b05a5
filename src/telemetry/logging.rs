//! tracing setup: text or JSON lines on stderr, RUST_LOG-style filter, every line scrubbed
//! of the secrets pgdrill knows.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::error::ConfigError;
use crate::secrets;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat, filter: &str) -> Result<(), ConfigError> {
    if filter.trim().is_empty() {
        let why = "is empty, which turns off every log line, errors included (leave it \
                   unset for the default, info,tokio_postgres=warn, or name a level such as warn)";
        return Err(ConfigError::new("--log-filter", filter, why));
    }
    let env_filter = EnvFilter::try_new(filter)
        .map_err(|err| ConfigError::new("--log-filter", filter, err.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        // Colour codes only for a person at a terminal, never in a log file or collector.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(|| ScrubbingWriter);
    // A second init (tests running several drills) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A panic is a log event like any other (one JSON line with --log-format json), not raw
    // text in between; the supervisor then says what it does about it.
    std::panic::set_hook(Box::new(|info| {
        let message = secrets::scrub(info.payload_as_str().unwrap_or_default());
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(panic = %message, location, thread, "panic");
    }));
    Ok(())
}

/// stderr, with each event scrubbed before it is written: whatever a field holds (a server
/// message, a trigger's output, an error chain), no known secret reaches the log.
struct ScrubbingWriter;

impl Write for ScrubbingWriter {
    /// The formatter hands over one whole event per call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let clean = secrets::scrub(&String::from_utf8_lossy(buf));
        // A closed stderr (a log collector gone, `| head`) loses the line, nothing else: an error
        // here would be reported on stderr again, and the panic after it would abort the run.
        let _ = std::io::stderr().lock().write_all(clean.as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
