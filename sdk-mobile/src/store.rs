//! The SQLite store: the outbox and recovery positions of every namespace (server URL +
//! user) in one database file, so queued messages survive the app being killed.
//!
//! One connection lives on a dedicated thread; every call is a job sent to it, so
//! SQLite's blocking calls never run on the async runtime and writes happen in the order
//! they were asked for. Each [`PersistKind`] is applied in its own transaction, committed
//! with `synchronous=FULL` (WAL journal) before the driver is told it is durable.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{params, Connection, OptionalExtension};
use tidings::native::{BoxFuture, Store};
use tidings::{OutboxEntry, Payload, PersistKind, Snapshot, StreamPosition};
use tokio::sync::oneshot;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace     TEXT    NOT NULL,
    msg_id        TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    event         TEXT    NOT NULL,
    data          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    user          TEXT,
    UNIQUE (namespace, msg_id)
);
CREATE TABLE IF NOT EXISTS positions (
    namespace TEXT    NOT NULL,
    channel   TEXT    NOT NULL,
    epoch     TEXT    NOT NULL,
    stream_offset INTEGER NOT NULL,
    PRIMARY KEY (namespace, channel)
);
CREATE TABLE IF NOT EXISTS pattern_since (
    namespace TEXT    NOT NULL,
    pattern   TEXT    NOT NULL,
    since     INTEGER NOT NULL,
    PRIMARY KEY (namespace, pattern)
);
";

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A [`Store`] in a SQLite database file. Cheap to share (`Arc`) between clients; the
/// worker thread stops when the last handle is dropped.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` and its tables. Blocks while opening.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut connection = Connection::open(&path).map_err(|e| describe(&path, e))?;
        init(&mut connection).map_err(|e| describe(&path, e))?;
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tidings-sqlite".into())
            .spawn(move || {
                while let Ok(job) = receiver.recv() {
                    job(&mut connection);
                }
            })
            .map_err(|e| format!("cannot start the store thread: {e}"))?;
        Ok(Self { path, jobs })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store thread and waits for its result without blocking the runtime.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let (reply, wait) = oneshot::channel();
        let path = self.path.clone();
        self.jobs
            .send(Box::new(move |connection| {
                let _ = reply.send(f(connection).map_err(|e| describe(&path, e)));
            }))
            .map_err(|_| "the store thread stopped".to_owned())?;
        wait.await
            .map_err(|_| "the store thread stopped".to_owned())?
    }

    /// Loads a namespace's snapshot (what the driver does at start).
    pub async fn snapshot(&self, namespace: &str) -> Result<Snapshot, String> {
        let namespace = namespace.to_owned();
        self.run(move |c| load(c, &namespace)).await
    }

    /// Applies one write in a transaction (what the driver does for each persist op).
    pub async fn write(&self, namespace: &str, kind: &PersistKind) -> Result<(), String> {
        let namespace = namespace.to_owned();
        let kind = kind.clone();
        self.run(move |c| apply(c, &namespace, &kind)).await
    }
}

impl Store for SqliteStore {
    fn load(&self, namespace: &str) -> BoxFuture<'_, Result<Snapshot, String>> {
        let namespace = namespace.to_owned();
        Box::pin(async move { self.snapshot(&namespace).await })
    }

    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a PersistKind,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.write(namespace, kind))
    }
}

fn describe(path: &Path, e: rusqlite::Error) -> String {
    format!("sqlite {}: {e}", path.display())
}

fn init(c: &mut Connection) -> rusqlite::Result<()> {
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers never block the writer. FULL: a commit is on disk when it returns,
    // so `publish_queued` resolving means the message survives a crash or power loss.
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema {version} is newer than this SDK's ({SCHEMA_VERSION})"
        )));
    }
    let tx = c.transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

fn load(c: &mut Connection, namespace: &str) -> rusqlite::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut outbox = c.prepare_cached(
        "SELECT msg_id, channel, event, data, created_at_ms, user FROM outbox
         WHERE namespace = ?1 ORDER BY seq",
    )?;
    let rows = outbox.query_map(params![namespace], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    for row in rows {
        let (msg_id, channel, event, data, created_at_ms, user) = row?;
        match Payload::from_json(&data) {
            Ok(data) => snapshot.outbox.push(OutboxEntry {
                msg_id,
                channel,
                event,
                data,
                created_at_ms: created_at_ms.max(0) as u64,
                user,
            }),
            // Only this SDK writes the table; a row that does not parse is skipped rather
            // than blocking every later message.
            Err(e) => log::warn!("outbox message {msg_id} has unreadable data, skipped: {e}"),
        }
    }
    let mut positions = c.prepare_cached(
        "SELECT channel, epoch, stream_offset FROM positions WHERE namespace = ?1",
    )?;
    let rows = positions.query_map(params![namespace], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (channel, epoch, offset) = row?;
        snapshot.positions.insert(
            channel,
            StreamPosition {
                epoch,
                offset: offset.max(0) as u64,
            },
        );
    }
    let mut patterns =
        c.prepare_cached("SELECT pattern, since FROM pattern_since WHERE namespace = ?1")?;
    let rows = patterns.query_map(params![namespace], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (pattern, since) = row?;
        snapshot.pattern_since.insert(pattern, since.max(0) as u64);
    }
    Ok(snapshot)
}

/// SQLite integers are signed; offsets and times beyond `i64::MAX` do not occur.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn apply(c: &mut Connection, namespace: &str, kind: &PersistKind) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    match kind {
        PersistKind::PutMessage { entry } => {
            // A re-put keeps the message's place in the queue (its `seq`).
            tx.execute(
                "INSERT INTO outbox (namespace, msg_id, channel, event, data, created_at_ms, user)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (namespace, msg_id) DO UPDATE SET
                     channel = excluded.channel, event = excluded.event, data = excluded.data,
                     created_at_ms = excluded.created_at_ms, user = excluded.user",
                params![
                    namespace,
                    entry.msg_id,
                    entry.channel,
                    entry.event,
                    entry.data.json(),
                    int(entry.created_at_ms),
                    entry.user,
                ],
            )?;
        }
        PersistKind::RemoveMessage { msg_id } => {
            tx.execute(
                "DELETE FROM outbox WHERE namespace = ?1 AND msg_id = ?2",
                params![namespace, msg_id],
            )?;
        }
        PersistKind::PutPosition { channel, position } => {
            tx.execute(
                "INSERT INTO positions (namespace, channel, epoch, stream_offset) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, channel) DO UPDATE SET
                     epoch = excluded.epoch, stream_offset = excluded.stream_offset",
                params![namespace, channel, position.epoch, int(position.offset)],
            )?;
        }
        PersistKind::RemovePosition { channel } => {
            tx.execute(
                "DELETE FROM positions WHERE namespace = ?1 AND channel = ?2",
                params![namespace, channel],
            )?;
        }
        PersistKind::PutPatternSince { pattern, since } => {
            tx.execute(
                "INSERT INTO pattern_since (namespace, pattern, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, pattern) DO UPDATE SET since = excluded.since",
                params![namespace, pattern, int(*since)],
            )?;
        }
        PersistKind::Clear => {
            for table in ["outbox", "positions", "pattern_since"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE namespace = ?1"),
                    params![namespace],
                )?;
            }
        }
    }
    tx.commit()
}

/// Number of messages stored for a namespace (tests and diagnostics).
pub fn outbox_len(path: impl AsRef<Path>, namespace: &str) -> Result<usize, String> {
    let path = path.as_ref();
    let c = Connection::open(path).map_err(|e| describe(path, e))?;
    c.query_row(
        "SELECT COUNT(*) FROM outbox WHERE namespace = ?1",
        params![namespace],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|n| n.unwrap_or(0).max(0) as usize)
    .map_err(|e| describe(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(id: &str, n: u64) -> OutboxEntry {
        OutboxEntry {
            msg_id: id.into(),
            channel: "posts".into(),
            event: "post.created".into(),
            data: Payload::from(json!({ "n": n, "text": "héllo ✓" })),
            created_at_ms: 1_700_000_000_000 + n,
            user: Some("david".into()),
        }
    }

    /// Every op applied to SQLite gives the same snapshot as the core's own
    /// `Snapshot::apply`, and the same again after reopening the file.
    #[tokio::test]
    async fn roundtrip_matches_the_in_memory_model_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("tidings.db");
        let ns = "tidings|ws://h/ws|david";
        let other = "tidings|ws://h/ws|emily";
        let ops = vec![
            PersistKind::PutMessage {
                entry: entry("m1", 1),
            },
            PersistKind::PutMessage {
                entry: entry("m2", 2),
            },
            PersistKind::PutMessage {
                entry: entry("m3", 3),
            },
            // A re-put keeps m1 first.
            PersistKind::PutMessage {
                entry: entry("m1", 10),
            },
            PersistKind::RemoveMessage {
                msg_id: "m2".into(),
            },
            PersistKind::PutPosition {
                channel: "posts".into(),
                position: StreamPosition {
                    epoch: "e1".into(),
                    offset: 4,
                },
            },
            PersistKind::PutPosition {
                channel: "posts".into(),
                position: StreamPosition {
                    epoch: "e1".into(),
                    offset: 7,
                },
            },
            PersistKind::PutPosition {
                channel: "gone".into(),
                position: StreamPosition {
                    epoch: "e2".into(),
                    offset: 1,
                },
            },
            PersistKind::RemovePosition {
                channel: "gone".into(),
            },
            PersistKind::PutPatternSince {
                pattern: "specs:*".into(),
                since: 123,
            },
        ];
        let mut model = Snapshot::default();
        {
            let store = SqliteStore::open(&path).expect("open");
            assert_eq!(store.snapshot(ns).await.expect("load"), Snapshot::default());
            for op in &ops {
                store.write(ns, op).await.expect("apply");
                model.apply(op);
                assert_eq!(store.snapshot(ns).await.expect("load"), model, "{op:?}");
            }
            store
                .write(
                    other,
                    &PersistKind::PutMessage {
                        entry: entry("x", 9),
                    },
                )
                .await
                .expect("apply");
        }
        assert_eq!(model.outbox.len(), 2);
        assert_eq!(model.outbox[0].msg_id, "m1");

        // Reopened (an app restart): the same snapshot, namespaces kept apart.
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.snapshot(ns).await.expect("load"), model);
        assert_eq!(
            store.snapshot(other).await.expect("load").outbox,
            vec![entry("x", 9)]
        );
        assert_eq!(outbox_len(&path, ns).expect("count"), 2);

        // Logout wipes one namespace only.
        store.write(ns, &PersistKind::Clear).await.expect("clear");
        assert_eq!(store.snapshot(ns).await.expect("load"), Snapshot::default());
        assert_eq!(store.snapshot(other).await.expect("load").outbox.len(), 1);
    }

    #[tokio::test]
    async fn outbox_order_is_kept_for_many_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        for n in 0..200 {
            store
                .write(
                    "ns",
                    &PersistKind::PutMessage {
                        entry: entry(&format!("id-{}", 199 - n), n),
                    },
                )
                .await
                .expect("apply");
        }
        let ids: Vec<String> = store
            .snapshot("ns")
            .await
            .expect("load")
            .outbox
            .into_iter()
            .map(|e| e.msg_id)
            .collect();
        let expected: Vec<String> = (0..200).map(|n| format!("id-{}", 199 - n)).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn an_unwritable_path_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        // A directory cannot be created under a regular file.
        assert!(SqliteStore::open(file.join("sub").join("t.db")).is_err());
    }
}
