//! Direct access to a test gateway's database, whichever engine holds it: a test that checks what is stored
//! (an audit row, an erased secret) or plants what the gateway would refuse writes its SQL once, with `?1`
//! placeholders, and runs on SQLite and PostgreSQL alike.

use serde_json::Value;

use super::gateway::TestGateway;

/// A parameter of a query.
#[derive(Debug, Clone)]
pub(crate) enum P {
    Text(String),
    Int(i64),
}

impl From<&str> for P {
    fn from(s: &str) -> P {
        P::Text(s.to_owned())
    }
}

impl From<&String> for P {
    fn from(s: &String) -> P {
        P::Text(s.clone())
    }
}

impl From<i64> for P {
    fn from(i: i64) -> P {
        P::Int(i)
    }
}

/// A connection to the database of a [`TestGateway`].
pub(crate) enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Db {
    pub(crate) async fn open(s: &TestGateway) -> Db {
        Self::connect(s.data_dir(), s.database_url()).await
    }

    /// The database of the server whose data directory is `data_dir` (PostgreSQL when the directory notes one).
    pub(crate) async fn open_dir(data_dir: &std::path::Path) -> Db {
        let url = std::fs::read_to_string(data_dir.join(super::process::DATABASE_URL_NOTE)).ok();
        Self::connect(data_dir, url.as_deref()).await
    }

    async fn connect(data_dir: &std::path::Path, database_url: Option<&str>) -> Db {
        match database_url {
            None => {
                let db = rusqlite::Connection::open(data_dir.join(opgate::DB_FILE)).unwrap();
                db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                Db::Sqlite(db)
            }
            Some(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test database");
                tokio::spawn(connection);
                Db::Postgres(client)
            }
        }
    }

    /// The rows of `sql`, each column as JSON (integers as numbers, text and bytes as strings, NULL as null).
    pub(crate) async fn rows(&self, sql: &str, params: &[P]) -> Vec<Vec<Value>> {
        match self {
            Db::Sqlite(db) => {
                let mut stmt = db.prepare(sql).unwrap();
                let columns = stmt.column_count();
                let params = sqlite_params(params);
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(params.iter()))
                    .unwrap();
                let mut out = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    out.push(
                        (0..columns)
                            .map(|i| match row.get_ref(i).unwrap() {
                                rusqlite::types::ValueRef::Null => Value::Null,
                                rusqlite::types::ValueRef::Integer(n) => n.into(),
                                rusqlite::types::ValueRef::Real(f) => f.into(),
                                rusqlite::types::ValueRef::Text(t)
                                | rusqlite::types::ValueRef::Blob(t) => {
                                    String::from_utf8_lossy(t).into_owned().into()
                                }
                            })
                            .collect(),
                    );
                }
                out
            }
            Db::Postgres(client) => {
                let sql = dollar_placeholders(sql);
                let params = pg_params(params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as _).collect();
                let rows = client.query(&sql, &refs).await.unwrap();
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                use tokio_postgres::types::Type;
                                let ty = row.columns()[i].type_().clone();
                                if ty == Type::INT8 {
                                    row.get::<_, Option<i64>>(i).map_or(Value::Null, Into::into)
                                } else if ty == Type::INT4 {
                                    row.get::<_, Option<i32>>(i).map_or(Value::Null, Into::into)
                                } else if ty == Type::BOOL {
                                    row.get::<_, Option<bool>>(i)
                                        .map_or(Value::Null, Into::into)
                                } else if ty == Type::BYTEA {
                                    row.get::<_, Option<Vec<u8>>>(i).map_or(Value::Null, |b| {
                                        String::from_utf8_lossy(&b).into_owned().into()
                                    })
                                } else {
                                    row.get::<_, Option<String>>(i)
                                        .map_or(Value::Null, Into::into)
                                }
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The one integer `sql` returns (a count).
    pub(crate) async fn count(&self, sql: &str, params: &[P]) -> i64 {
        self.rows(sql, params).await[0][0].as_i64().unwrap()
    }

    /// Runs a statement that changes rows; returns how many.
    pub(crate) async fn execute(&self, sql: &str, params: &[P]) -> u64 {
        match self {
            Db::Sqlite(db) => {
                let params = sqlite_params(params);
                db.execute(sql, rusqlite::params_from_iter(params.iter()))
                    .unwrap() as u64
            }
            Db::Postgres(client) => {
                let sql = dollar_placeholders(sql);
                let params = pg_params(params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as _).collect();
                client.execute(&sql, &refs).await.unwrap()
            }
        }
    }
}

fn sqlite_params(params: &[P]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|p| match p {
            P::Text(t) => rusqlite::types::Value::Text(t.clone()),
            P::Int(i) => rusqlite::types::Value::Integer(*i),
        })
        .collect()
}

fn pg_params(params: &[P]) -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
    params
        .iter()
        .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
            match p {
                P::Text(t) => Box::new(t.clone()),
                P::Int(i) => Box::new(*i),
            }
        })
        .collect()
}

/// `?1` → `$1`: the tests write SQLite's placeholders.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}
