//! The one place that turns SIGINT/SIGTERM into cancellation.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Cancelled on a second signal; process-wide, as signals are.
static HURRY: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

/// After a second signal, what each stage still draining may take: the summary is printed
/// before an orchestrator's kill, whatever `--shutdown-grace` is.
const HURRIED_STAGE: Duration = Duration::from_secs(1);

/// A signal this soon after the one before is the same request delivered twice (`timeout`
/// signals its child and then its process group; a terminal's Ctrl-C reaches a wrapper too).
const SAME_REQUEST: Duration = Duration::from_secs(1);

/// Sleeps until `deadline`, or at most [`HURRIED_STAGE`] more once a second signal came.
pub async fn sleep_unless_hurried(deadline: Instant) {
    tokio::select! {
        () = sleep_until(deadline) => {}
        () = HURRY.cancelled() => sleep_until(deadline.min(Instant::now() + HURRIED_STAGE)).await,
    }
}

/// A token cancelled on the first SIGINT or SIGTERM; a second one cuts the drain short
/// ([`sleep_unless_hurried`]); a third ends the process at once (exit 130). Each is logged.
pub fn cancel_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        let term = signal(SignalKind::terminate()).ok();
        let mut signals = signal(SignalKind::interrupt()).ok().zip(term);
        let signal = next(&mut signals).await;
        tracing::info!(
            signal,
            "stopping: no new transactions, draining in-flight ones"
        );
        cancel.cancel();
        let signal = next_request(&mut signals).await;
        tracing::warn!(
            signal,
            "second signal: writes still in flight are given up now; the summary follows"
        );
        HURRY.cancel();
        // A third: the user wants out now, whatever is still running.
        let signal = next_request(&mut signals).await;
        tracing::error!(signal, "third signal: exiting at once, without the summary");
        std::process::exit(130);
    });
    stop
}

/// The next signal that is a request of its own, not one delivered again ([`SAME_REQUEST`]).
async fn next_request(signals: &mut Option<(Signal, Signal)>) -> &'static str {
    let before = Instant::now();
    loop {
        let signal = next(signals).await;
        if before.elapsed() >= SAME_REQUEST {
            return signal;
        }
        tracing::info!(
            signal,
            "the same stop request again, within 1 s of the last: not a second one"
        );
    }
}

/// The next SIGINT or SIGTERM (SIGINT only, through `ctrl_c`, if they cannot be listened to).
async fn next(signals: &mut Option<(Signal, Signal)>) -> &'static str {
    match signals {
        Some((int, term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        None => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
