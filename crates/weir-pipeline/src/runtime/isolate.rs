//! Isolating the records whose rows the database refuses (a NUL byte in text, a value
//! too long or out of range, a constraint), by bisection under savepoints.
//!
//! The batch's groups (the rows of one record each) are written in halves, each under
//! a savepoint: a half that fails is rolled back and split again, a single group that
//! fails is a bad record and goes to the dead letters (stage `sink`). The good rows
//! stay written in the transaction, which then commits once with the offsets. A batch
//! of n groups with k bad ones costs O(k log n) statements.

use std::sync::Arc;

use sqlx::Transaction;
use weir_sql::{Dialect, Error, TransactionalSink};

use super::pending::Pending;

/// The next step of a bisection over groups `a..b` whose write failed: a single
/// group is bad, otherwise both halves are tried (left first).
pub(crate) fn split(a: usize, b: usize) -> Option<[(usize, usize); 2]> {
    if b - a <= 1 {
        None
    } else {
        let mid = a + (b - a) / 2;
        Some([(a, mid), (mid, b)])
    }
}

pub(crate) async fn isolate<DB, T, S>(
    sink: &S,
    tx: &mut Transaction<'static, DB>,
    pending: &mut Pending<T>,
) -> weir_sql::Result<()>
where
    DB: Dialect,
    T: Send + Sync,
    S: TransactionalSink<DB, T> + ?Sized,
{
    let save: Arc<str> = Arc::from("SAVEPOINT weir_isolate");
    let back: Arc<str> = Arc::from("ROLLBACK TO SAVEPOINT weir_isolate");
    let release: Arc<str> = Arc::from("RELEASE SAVEPOINT weir_isolate");
    let sp = |e| Error::db("savepoint", e);
    let mut rejected: Vec<(usize, String)> = Vec::new();
    let mut refused = Vec::new();
    let mut stack = vec![(0_usize, pending.groups.len())];
    while let Some((a, b)) = stack.pop() {
        if a >= b {
            continue;
        }
        let (start, end) = (pending.groups[a].start, pending.groups[b - 1].end);
        DB::execute(tx, &save, &[]).await.map_err(sp)?;
        match sink.write_refusing(tx, &pending.items[start..end]).await {
            Ok(r) => {
                DB::execute(tx, &release, &[]).await.map_err(sp)?;
                refused.extend(r);
            }
            Err(e) if e.is_row_error() => {
                DB::execute(tx, &back, &[]).await.map_err(sp)?;
                DB::execute(tx, &release, &[]).await.map_err(sp)?;
                match split(a, b) {
                    None => {
                        tracing::debug!(at = %pending.groups[a].record.coordinates(), error = %e, "row refused");
                        rejected.push((a, e.to_string()));
                    }
                    Some([left, right]) => {
                        stack.push(right);
                        stack.push(left);
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    pending.reject(rejected);
    pending.refuse(refused);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulate the bisection over groups where `bad` ones fail: which are found, and
    /// how many writes it takes.
    fn simulate(n: usize, bad: &[usize]) -> (Vec<usize>, usize) {
        let mut found = Vec::new();
        let mut writes = 0;
        let mut stack = vec![(0, n)];
        while let Some((a, b)) = stack.pop() {
            if a >= b {
                continue;
            }
            writes += 1;
            if !bad.iter().any(|x| (a..b).contains(x)) {
                continue;
            }
            match split(a, b) {
                None => found.push(a),
                Some([l, r]) => {
                    stack.push(r);
                    stack.push(l);
                }
            }
        }
        (found, writes)
    }

    #[test]
    fn finds_every_bad_group_in_order_with_few_writes() {
        let (found, writes) = simulate(5000, &[0, 17, 4999]);
        assert_eq!(found, [0, 17, 4999]);
        assert!(writes <= 3 * 2 * 13 + 1, "{writes} writes");
        let (found, _) = simulate(1, &[0]);
        assert_eq!(found, [0]);
        let (found, writes) = simulate(8, &[]);
        assert!(found.is_empty());
        assert_eq!(writes, 1);
    }
}
