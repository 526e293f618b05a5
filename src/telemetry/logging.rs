//! tracing setup: text or JSON lines on stderr, RUST_LOG-style filter.

use tracing_subscriber::EnvFilter;

use crate::error::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat, filter: &str) -> Result<(), ConfigError> {
    let env_filter = EnvFilter::try_new(filter)
        .map_err(|err| ConfigError::new("--log-filter", filter, err.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    // A second init (tests running several drills) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A panic is a log event like any other (one JSON line with --log-format json), not raw
    // text in between; the supervisor then says what it does about it.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(panic = %message, location, thread, "panic");
    }));
    Ok(())
}
