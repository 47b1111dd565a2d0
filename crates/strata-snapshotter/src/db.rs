//! Snapshot metadata in SQLite (`<home>/.containerd/snapshots.db`): one
//! row per snapshot (its containerd key or name, kind, parent, times,
//! usage at commit) and one per label. A row's integer id names the
//! snapshot's layer in the store (`ctrd-<id>`), so keys, which are opaque
//! client strings, never become paths.
//!
//! SQLite rather than an embedded store that locks its file: `strata ls`
//! (another process) reads names while `strata serve` runs. The journal is
//! a write-ahead log, so such readers never wait for the server, and every
//! transaction is synced on commit (`synchronous=FULL`). Writers use
//! `BEGIN IMMEDIATE`, so a transaction that has read a row can rely on it
//! until it commits.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::error::{Result, SnapshotError};
use crate::model::{Kind, Labels, Usage};

/// Directory of the database under the home (a dot name: never a layer id).
pub const DB_DIR: &str = ".containerd";
/// The database file in it.
pub const DB_FILE: &str = "snapshots.db";
/// Schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
    parent INTEGER REFERENCES snapshots(id),
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX snapshots_parent ON snapshots(parent);
CREATE TABLE labels (
    snapshot INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (snapshot, key)
) WITHOUT ROWID;
";

/// One snapshot as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Internal id (names the layer).
    pub id: i64,
    /// Key (active, view) or name (committed).
    pub key: String,
    /// Kind.
    pub kind: Kind,
    /// The parent's id.
    pub parent: Option<i64>,
    /// The parent's key, empty without a parent.
    pub parent_key: String,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
    /// Last update, nanoseconds since the epoch.
    pub updated: i64,
    /// Labels.
    pub labels: Labels,
    /// Usage recorded at commit (zero for active snapshots and views).
    pub usage: Usage,
}

/// The database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

fn db_err(path: &Path, what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SnapshotError {
    let path = path.display().to_string();
    let what = what.into();
    move |source| SnapshotError::Db {
        path,
        what,
        source: Box::new(source),
    }
}

impl Db {
    /// Opens (creating if needed) the database of the store at `home`.
    pub fn open(home: &Path) -> Result<Db> {
        let dir = home.join(DB_DIR);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SnapshotError::io(format!("create {}", dir.display()), e)),
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| SnapshotError::io(format!("chmod {}", dir.display()), e))?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err(&path, "open"))?;
        let mut db = Db { conn, path };
        db.configure()?;
        db.migrate()?;
        Ok(db)
    }

    /// Opens the database of `home` for reading only, from a process
    /// other than the server; `None` when the home has none.
    pub fn open_read_only(home: &Path) -> Result<Option<Db>> {
        let path = home.join(DB_DIR).join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        // Read-write without create: a reader of a write-ahead-logged
        // database must be able to map its shared-memory index, which a
        // read-only connection cannot create when the server closed it.
        // `query_only` keeps this connection from changing anything.
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err(&path, "open"))?;
        let db = Db { conn, path };
        db.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(db_err(&db.path, "set busy timeout"))?;
        db.conn
            .pragma_update(None, "query_only", true)
            .map_err(db_err(&db.path, "set query_only"))?;
        let version: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err(&db.path, "read schema version"))?;
        if version != SCHEMA_VERSION {
            return Err(SnapshotError::Corrupt {
                path: db.path.display().to_string(),
                reason: format!("schema version {version}, this strata reads {SCHEMA_VERSION}"),
            });
        }
        Ok(Some(db))
    }

    fn configure(&self) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(10))
            .map_err(db_err(&self.path, "set busy timeout"))?;
        let mode: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(db_err(&self.path, "set journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SnapshotError::Corrupt {
                path: self.path.display().to_string(),
                reason: format!("cannot use a write-ahead log (journal mode is {mode})"),
            });
        }
        c.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err(&self.path, "set synchronous=FULL"))?;
        c.pragma_update(None, "foreign_keys", true)
            .map_err(db_err(&self.path, "set foreign_keys"))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err(&path, "begin schema transaction"))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err(&path, "read schema version"))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)
                    .map_err(db_err(&path, "create tables"))?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(db_err(&path, "set schema version"))?;
            }
            SCHEMA_VERSION => {}
            v => {
                return Err(SnapshotError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!(
                        "schema version {v} is newer than this strata's ({SCHEMA_VERSION})"
                    ),
                });
            }
        }
        tx.commit().map_err(db_err(&path, "commit schema"))
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`): rolled back unless
    /// committed.
    pub fn write(&mut self) -> Result<Tx<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err(&self.path, "begin write transaction"))?;
        Ok(Tx {
            tx,
            path: &self.path,
        })
    }

    /// Starts a read transaction: one consistent view for several queries.
    pub fn read(&mut self) -> Result<Tx<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(db_err(&self.path, "begin read transaction"))?;
        Ok(Tx {
            tx,
            path: &self.path,
        })
    }
}

/// A transaction on the database.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
}

const SELECT: &str = "SELECT s.id, s.key, s.kind, s.parent, COALESCE(p.key, ''), s.created, \
                      s.updated, s.size, s.inodes FROM snapshots s \
                      LEFT JOIN snapshots p ON p.id = s.parent";

impl Tx<'_> {
    fn err(&self, what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SnapshotError {
        db_err(self.path, what)
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<(Record, i64)> {
        let kind: i64 = r.get(2)?;
        Ok((
            Record {
                id: r.get(0)?,
                key: r.get(1)?,
                kind: Kind::View,
                parent: r.get(3)?,
                parent_key: r.get(4)?,
                created: r.get(5)?,
                updated: r.get(6)?,
                labels: Labels::new(),
                usage: Usage {
                    size: r.get(7)?,
                    inodes: r.get(8)?,
                },
            },
            kind,
        ))
    }

    fn with_kind(&self, (mut rec, kind): (Record, i64)) -> Result<Record> {
        rec.kind = Kind::from_number(kind).ok_or_else(|| SnapshotError::Corrupt {
            path: self.path.display().to_string(),
            reason: format!("snapshot {:?} has unknown kind {kind}", rec.key),
        })?;
        Ok(rec)
    }

    /// Runs one statement, compiled once per connection and cached.
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.tx.prepare_cached(sql)?.execute(p)
    }

    /// The snapshot with key or name `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let what = format!("read snapshot {key:?}");
        let found = self
            .tx
            .prepare_cached(&format!("{SELECT} WHERE s.key = ?1"))
            .and_then(|mut stmt| stmt.query_row([key], |r| self.row(r)).optional())
            .map_err(self.err(what.clone()))?;
        let Some(found) = found else { return Ok(None) };
        let mut rec = self.with_kind(found)?;
        let mut stmt = self
            .tx
            .prepare_cached("SELECT key, value FROM labels WHERE snapshot = ?1")
            .map_err(self.err(what.clone()))?;
        let rows = stmt
            .query_map([rec.id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.err(what.clone()))?;
        for row in rows {
            let (k, v) = row.map_err(self.err(what.clone()))?;
            rec.labels.insert(k, v);
        }
        Ok(Some(rec))
    }

    /// Every snapshot, sorted by key.
    pub fn all(&self) -> Result<Vec<Record>> {
        let what = "list snapshots";
        let mut labels: HashMap<i64, Labels> = HashMap::new();
        let mut stmt = self
            .tx
            .prepare_cached("SELECT snapshot, key, value FROM labels")
            .map_err(self.err(what))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.err(what))?;
        for row in rows {
            let (id, k, v) = row.map_err(self.err(what))?;
            labels.entry(id).or_default().insert(k, v);
        }
        let mut stmt = self
            .tx
            .prepare_cached(&format!("{SELECT} ORDER BY s.key"))
            .map_err(self.err(what))?;
        let rows = stmt
            .query_map([], |r| self.row(r))
            .map_err(self.err(what))?;
        let mut out = Vec::new();
        for row in rows {
            let mut rec = self.with_kind(row.map_err(self.err(what))?)?;
            rec.labels = labels.remove(&rec.id).unwrap_or_default();
            out.push(rec);
        }
        Ok(out)
    }

    /// Up to `limit` keys of the children of snapshot `id`, sorted.
    pub fn children(&self, id: i64, limit: usize) -> Result<Vec<String>> {
        let what = format!("read children of snapshot {id}");
        let mut stmt = self
            .tx
            .prepare_cached("SELECT key FROM snapshots WHERE parent = ?1 ORDER BY key LIMIT ?2")
            .map_err(self.err(what.clone()))?;
        let rows = stmt
            .query_map(params![id, limit as i64], |r| r.get::<_, String>(0))
            .map_err(self.err(what.clone()))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err(what))
    }

    /// Every snapshot id.
    pub fn ids(&self) -> Result<HashSet<i64>> {
        let what = "list snapshot ids";
        let mut stmt = self
            .tx
            .prepare_cached("SELECT id FROM snapshots")
            .map_err(self.err(what))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(self.err(what))?;
        rows.collect::<rusqlite::Result<HashSet<_>>>()
            .map_err(self.err(what))
    }

    /// Adds a snapshot; returns its id.
    pub fn insert(
        &self,
        key: &str,
        kind: Kind,
        parent: Option<i64>,
        now: i64,
        labels: &Labels,
    ) -> Result<i64> {
        let what = format!("add snapshot {key:?}");
        self.exec(
            "INSERT INTO snapshots (key, kind, parent, created, updated) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            params![key, kind.number(), parent, now],
        )
        .map_err(self.err(what))?;
        let id = self.tx.last_insert_rowid();
        self.write_labels(id, key, labels)?;
        Ok(id)
    }

    /// Turns active snapshot `id` into the committed snapshot `name`, with
    /// `labels` instead of its own and `usage` recorded.
    pub fn commit_active(
        &self,
        id: i64,
        name: &str,
        now: i64,
        labels: &Labels,
        usage: Usage,
    ) -> Result<()> {
        self.exec(
            "UPDATE snapshots SET key = ?2, kind = ?3, created = ?4, updated = ?4, \
                 size = ?5, inodes = ?6 WHERE id = ?1",
            params![
                id,
                name,
                Kind::Committed.number(),
                now,
                usage.size,
                usage.inodes
            ],
        )
        .map_err(self.err(format!("commit snapshot {name:?}")))?;
        self.write_labels(id, name, labels)
    }

    /// Replaces the labels of snapshot `id` and sets its update time.
    pub fn set_labels(&self, id: i64, key: &str, labels: &Labels, now: i64) -> Result<()> {
        self.exec(
            "UPDATE snapshots SET updated = ?2 WHERE id = ?1",
            params![id, now],
        )
        .map_err(self.err(format!("update snapshot {key:?}")))?;
        self.write_labels(id, key, labels)
    }

    fn write_labels(&self, id: i64, key: &str, labels: &Labels) -> Result<()> {
        let what = format!("write labels of snapshot {key:?}");
        self.exec("DELETE FROM labels WHERE snapshot = ?1", [id])
            .map_err(self.err(what.clone()))?;
        let mut stmt = self
            .tx
            .prepare_cached("INSERT INTO labels (snapshot, key, value) VALUES (?1, ?2, ?3)")
            .map_err(self.err(what.clone()))?;
        for (k, v) in labels {
            stmt.execute(params![id, k, v])
                .map_err(self.err(what.clone()))?;
        }
        Ok(())
    }

    /// Deletes snapshot `id` and its labels.
    pub fn delete(&self, id: i64, key: &str) -> Result<()> {
        self.exec("DELETE FROM snapshots WHERE id = ?1", [id])
            .map_err(self.err(format!("remove snapshot {key:?}")))?;
        Ok(())
    }

    /// Commits the transaction (synced).
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        self.tx.commit().map_err(db_err(path, "commit"))
    }
}
