//! [`RateCells`] on PostgreSQL: one GCRA cell per limited key in an unlogged table. An instance takes a lease
//! of several requests in one statement, so a busy key costs a round trip only every few dozen requests.

use opgate_core::{Error, RateCells, Taken};
use opgate_store::StoreError;

use crate::{pg, PgStore};

#[async_trait::async_trait]
impl RateCells for PgStore {
    async fn take(&self, key: &str, limit: u32, want: u32, now_us: i64) -> Result<Taken, Error> {
        let key = key.to_owned();
        // Microseconds per request, and the window a full burst spans (the limit's minute).
        let interval = (60_000_000 / i64::from(limit.max(1))).max(1);
        let window = interval * i64::from(limit.max(1));
        let want = i64::from(want.max(1));
        // Reads, not a write: this runs before the call's handler and must not join its unit of work.
        self.read(move |tx| {
            Box::pin(async move {
                for _ in 0..2 {
                    // As many as the cell has room for now, up to `want`; the row lock serializes instances.
                    let taken = tx
                        .query_opt(
                            "UPDATE rate_cells c SET tat = GREATEST(g.tat, $2::bigint) + g.n * $4::bigint
                             FROM (SELECT tat, LEAST($3::bigint,
                                          ($2::bigint + $5::bigint - GREATEST(tat, $2::bigint)) / $4::bigint) AS n
                                   FROM rate_cells WHERE key = $1 FOR UPDATE) g
                             WHERE c.key = $1 AND g.n > 0
                             RETURNING g.n, c.tat",
                            &[&key, &now_us, &want, &interval, &window],
                        )
                        .await?;
                    if let Some(row) = taken {
                        let n: i64 = row.try_get(0).map_err(pg)?;
                        let tat: i64 = row.try_get(1).map_err(pg)?;
                        return Ok(Taken {
                            granted: n as u32,
                            next_free_us: now_us,
                            remaining: ((now_us + window - tat) / interval).max(0) as u32,
                            full_at_us: tat,
                        });
                    }
                    let tat: Option<i64> = tx
                        .query_opt("SELECT tat FROM rate_cells WHERE key = $1", &[&key])
                        .await?
                        .map(|r| r.try_get(0).map_err(pg))
                        .transpose()?;
                    match tat {
                        Some(tat) => {
                            return Ok(Taken {
                                granted: 0,
                                next_free_us: tat - window + interval,
                                remaining: 0,
                                full_at_us: tat,
                            })
                        }
                        None => {
                            // First use: an empty cell, then take from it.
                            tx.execute(
                                "INSERT INTO rate_cells (key, tat) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                                &[&key, &now_us],
                            )
                            .await?;
                        }
                    }
                }
                Err(StoreError::Corrupt("a rate cell vanished while in use".into()))
            })
        })
        .await
        .map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn instances_take_from_one_allowance() {
        let Some(url) = crate::fresh_test_database().await else {
            return;
        };
        let (a, b) = (
            PgStore::connect(&url).await.unwrap(),
            PgStore::connect(&url).await.unwrap(),
        );
        let now = 1_000_000_000_000;
        // 100 a minute: 100 at once, taken 7 at a time from either instance.
        let mut got = 0;
        for i in 0..40 {
            let store = if i % 2 == 0 { &a } else { &b };
            got += store.take("k", 100, 7, now).await.unwrap().granted;
        }
        assert_eq!(got, 100);
        let spent = a.take("k", 100, 1, now).await.unwrap();
        assert_eq!(spent.granted, 0);
        // The next frees one interval (0.6 s) after the burst's start moves on.
        assert_eq!(spent.next_free_us, now + 600_000);
        assert_eq!(a.take("k", 100, 5, now + 600_000).await.unwrap().granted, 1);
    }
}
