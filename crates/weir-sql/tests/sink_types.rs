//! The built-in table sink on all three dialects: every column type round-trips
//! (including text that needs escaping on PostgreSQL's COPY path), and upserts replace
//! (the last value of a key within one batch wins).

mod common;

use weir_sql::{impl_row, TableName, TableSink, WriteMode};

#[derive(Clone, Debug, PartialEq)]
struct AllTypes {
    id: i64,
    b: bool,
    s: i16,
    i: i32,
    f: f64,
    t: String,
    o: Option<String>,
    bytes: Vec<u8>,
    ob: Option<Vec<u8>>,
}
impl_row!(AllTypes {
    id,
    b,
    s,
    i,
    f,
    t,
    o,
    bytes,
    ob
});

type Tuple = (
    i64,
    bool,
    i16,
    i32,
    f64,
    String,
    Option<String>,
    Vec<u8>,
    Option<Vec<u8>>,
);

fn samples() -> Vec<AllTypes> {
    vec![
        AllTypes {
            id: 1,
            b: true,
            s: i16::MIN,
            i: i32::MAX,
            f: 0.1,
            t: "tab\there\nnewline\\backslash\rcr 'quote' \"dq\" é😀".into(),
            o: None,
            bytes: vec![0, 1, 2, 255, b'\\', b'\t', b'\n'],
            ob: None,
        },
        AllTypes {
            id: 2,
            b: false,
            s: 0,
            i: -1,
            f: -1.5e300,
            t: String::new(),
            o: Some("\\N".into()),
            bytes: Vec::new(),
            ob: Some(vec![9; 3]),
        },
    ]
}

fn from_tuple(t: Tuple) -> AllTypes {
    AllTypes {
        id: t.0,
        b: t.1,
        s: t.2,
        i: t.3,
        f: t.4,
        t: t.5,
        o: t.6,
        bytes: t.7,
        ob: t.8,
    }
}

macro_rules! dialect {
    ($modname:ident, $db:ty, $pool:path) => {
        mod $modname {
            use super::*;

            const SELECT: &str =
                "SELECT id, b, s, i, f, t, o, bytes, ob FROM all_types ORDER BY id";

            #[tokio::test]
            async fn insert_round_trips_every_type() -> anyhow::Result<()> {
                let (pool, _guard) = $pool("types").await?;
                let sink = TableSink::<$db, AllTypes>::new(TableName::new("all_types")?)?;
                sink.create_table(&pool).await?;
                let rows = samples();
                let mut tx = pool.begin().await?;
                assert_eq!(sink.write_rows(&mut tx, &rows).await?, 2);
                tx.commit().await?;
                let got: Vec<Tuple> = sqlx::query_as(SELECT).fetch_all(&pool).await?;
                let got: Vec<AllTypes> = got.into_iter().map(from_tuple).collect();
                assert_eq!(got, rows);
                Ok(())
            }

            #[tokio::test]
            async fn upsert_replaces_and_last_in_batch_wins() -> anyhow::Result<()> {
                let (pool, _guard) = $pool("upsert").await?;
                let sink = TableSink::<$db, AllTypes>::new(TableName::new("all_types")?)?
                    .with_mode(WriteMode::Upsert {
                        key: vec!["id".into()],
                    })?;
                sink.create_table(&pool).await?;
                let base = samples();
                let mut a = base[0].clone();
                a.t = "first".into();
                let mut b = base[0].clone();
                b.t = "second".into();
                let mut tx = pool.begin().await?;
                sink.write_rows(&mut tx, &[a, base[1].clone(), b.clone()])
                    .await?;
                tx.commit().await?;
                let mut c = base[1].clone();
                c.o = Some("replaced".into());
                let mut tx = pool.begin().await?;
                sink.write_rows(&mut tx, &[c.clone()]).await?;
                tx.commit().await?;
                let got: Vec<Tuple> = sqlx::query_as(SELECT).fetch_all(&pool).await?;
                let got: Vec<AllTypes> = got.into_iter().map(from_tuple).collect();
                assert_eq!(got, vec![b, c]);
                Ok(())
            }

            #[tokio::test]
            async fn many_rows_cross_statement_chunks() -> anyhow::Result<()> {
                let (pool, _guard) = $pool("chunks").await?;
                let sink = TableSink::<$db, AllTypes>::new(TableName::new("all_types")?)?;
                sink.create_table(&pool).await?;
                let rows: Vec<AllTypes> = (0..1234)
                    .map(|n| AllTypes {
                        id: n,
                        b: n % 2 == 0,
                        s: (n % 100) as i16,
                        i: n as i32,
                        f: n as f64 / 3.0,
                        t: format!("row {n}"),
                        o: (n % 3 == 0).then(|| "x".to_owned()),
                        bytes: vec![(n % 256) as u8],
                        ob: None,
                    })
                    .collect();
                let mut tx = pool.begin().await?;
                sink.write_rows(&mut tx, &rows).await?;
                tx.commit().await?;
                let got: Vec<Tuple> = sqlx::query_as(SELECT).fetch_all(&pool).await?;
                let got: Vec<AllTypes> = got.into_iter().map(from_tuple).collect();
                assert_eq!(got, rows);
                Ok(())
            }
        }
    };
}

dialect!(sqlite, sqlx::Sqlite, common::sqlite);
dialect!(postgres, sqlx::Postgres, common::pg);
dialect!(mysql, sqlx::MySql, common::mysql);

#[test]
fn upsert_key_must_be_a_column() {
    let err = TableSink::<sqlx::Sqlite, AllTypes>::new(TableName::new("t").unwrap())
        .unwrap()
        .with_mode(WriteMode::Upsert {
            key: vec!["nope".into()],
        })
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
