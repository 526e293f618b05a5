//! RPO: ask the (new) primary which acknowledged writes it still has.

use tokio::time::Instant;

use crate::db::pool::DbPool;
use crate::db::table::Workload;
use crate::rpo::ledger::{Snapshot, Verdict};

/// Rows are fetched from a little below the lowest acknowledged id, since ids
/// from concurrent connections are not ordered like the schedule.
const ID_SLACK: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("connecting for verification: {0}")]
    Connect(#[from] crate::db::pool::ConnectError),
    #[error("the server reached is a standby; waiting for a primary")]
    Standby,
    #[error("verification query: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// One pass over `snapshot` against the primary the pool reaches now.
pub async fn verify(
    pool: &DbPool,
    workload: &Workload,
    snapshot: &Snapshot,
    window_end: Instant,
) -> Result<Verdict, VerifyError> {
    if snapshot.acked.is_empty() && snapshot.unknown.is_empty() {
        return Ok(Verdict::default());
    }
    let conn = pool.dedicated().await?;
    if conn.broken {
        return Err(VerifyError::Standby);
    }
    let from_id = snapshot.min_id.unwrap_or(0).saturating_sub(ID_SLACK);
    // Unnamed statement: no server-side state, so it also works through PgBouncer in
    // transaction mode (a named one may be executed on another server connection).
    let rows = conn
        .client
        .query_typed(
            &workload.table.verify_sql(),
            &[
                (&from_id, tokio_postgres::types::Type::INT8),
                (&workload.run_id, tokio_postgres::types::Type::INT8),
            ],
        )
        .await?;
    let mut present = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(seq) = row.try_get::<_, Option<i64>>(0)? {
            present.push(seq as u64);
        }
    }
    Ok(snapshot.judge(present, window_end))
}
