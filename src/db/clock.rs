//! The database server's clock against the run's: the processes of a drill run by several
//! (`--drill-id`) each measure it at the end of their run, so that `pgdrill report` can
//! tell whether their clocks agree (they all write to the same primary).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::clock::WallClock;
use crate::db::pool::DbPool;

/// Round trips taken; the one with the shortest round trip is kept (as NTP does).
const SAMPLES: usize = 5;
/// The whole measurement, connecting included.
const LIMIT: Duration = Duration::from_secs(5);

const SQL: &str = "SELECT extract(epoch FROM clock_timestamp())::float8";

/// The server's clock minus the run's, in seconds, at the time of the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClockOffset {
    pub offset_seconds: f64,
    /// Half the round trip of the sample kept: the offset is exact to within this.
    pub uncertainty_seconds: f64,
}

/// Measures the server's clock against `clock` (the run's, which dates the outages) on a
/// connection of its own; `None` when the server cannot be reached within 5 s.
pub async fn measure(pool: &DbPool, clock: WallClock) -> Option<ClockOffset> {
    let probe = async {
        let conn = pool.dedicated().await.map_err(|e| e.to_string())?;
        let mut best: Option<ClockOffset> = None;
        for _ in 0..SAMPLES {
            let sent = Instant::now();
            let rows = conn.client.query_typed(SQL, &[]).await;
            let rows = rows.map_err(|e| super::error_text(&e))?;
            let received = Instant::now();
            let server = rows.first().map(|row| row.try_get::<_, f64>(0));
            let server = server.ok_or("no row")?.map_err(|e| e.to_string())?;
            let sample = offset(clock.unix(sent), server, clock.unix(received));
            if best.is_none_or(|b| sample.uncertainty_seconds < b.uncertainty_seconds) {
                best = Some(sample);
            }
        }
        best.ok_or_else(|| "no sample".to_string())
    };
    let measured = tokio::time::timeout(LIMIT, probe).await;
    let measured = measured.unwrap_or_else(|_| Err(format!("no answer within {LIMIT:?}")));
    if let Err(error) = &measured {
        tracing::warn!(%error, "could not read the server's clock: the merged report cannot compare this process's clock");
    }
    measured.ok()
}

/// The offset of a server time read between `sent` and `received` (both ours).
fn offset(sent: f64, server: f64, received: f64) -> ClockOffset {
    ClockOffset {
        offset_seconds: server - (sent + received) / 2.0,
        uncertainty_seconds: (received - sent).max(0.0) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_at_the_middle_of_the_round_trip() {
        let o = offset(100.0, 150.5, 101.0);
        assert_eq!(o.offset_seconds, 50.0);
        assert_eq!(o.uncertainty_seconds, 0.5);
    }
}
