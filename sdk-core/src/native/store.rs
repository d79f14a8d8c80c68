//! Stores for the native driver: in memory (default) and a JSON file per namespace.

use std::path::PathBuf;

use super::BoxFuture;
use crate::json::ToJson;
use crate::store::{MemoryStore, PersistKind, Snapshot};

/// Durable storage for the outbox and recovery positions, by namespace.
pub trait Store: Send + Sync + 'static {
    /// Loads a namespace's snapshot (empty if none).
    fn load(&self, namespace: &str) -> BoxFuture<'_, Result<Snapshot, String>>;
    /// Applies one write; resolves once it is durable.
    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a PersistKind,
    ) -> BoxFuture<'a, Result<(), String>>;
}

impl Store for MemoryStore {
    fn load(&self, namespace: &str) -> BoxFuture<'_, Result<Snapshot, String>> {
        let snapshot = MemoryStore::load(self, namespace);
        Box::pin(async move { Ok(snapshot) })
    }

    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a PersistKind,
    ) -> BoxFuture<'a, Result<(), String>> {
        MemoryStore::apply(self, namespace, kind);
        Box::pin(async { Ok(()) })
    }
}

/// Keeps each namespace in a JSON file under a directory, rewritten atomically
/// (write to a temporary file, then rename) on every change. Suited to CLIs and
/// small services; mobile apps use the SQLite store of `sdk-mobile`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    cache: MemoryStore,
    write_lock: tokio::sync::Mutex<()>,
}

impl FileStore {
    /// A store in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache: MemoryStore::new(),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn path(&self, namespace: &str) -> PathBuf {
        let safe: String = namespace
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let hash = namespace.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let prefix: String = safe.chars().take(80).collect();
        self.dir.join(format!("{prefix}-{hash:016x}.json"))
    }
}

impl Store for FileStore {
    fn load(&self, namespace: &str) -> BoxFuture<'_, Result<Snapshot, String>> {
        let path = self.path(namespace);
        let namespace = namespace.to_owned();
        Box::pin(async move {
            let snapshot = match tokio::fs::read(&path).await {
                Ok(bytes) => std::str::from_utf8(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|text| Snapshot::from_json(text).map_err(|e| e.to_string()))
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            for entry in &snapshot.outbox {
                self.cache.apply(
                    &namespace,
                    &PersistKind::PutMessage {
                        entry: entry.clone(),
                    },
                );
            }
            for (channel, position) in &snapshot.positions {
                self.cache.apply(
                    &namespace,
                    &PersistKind::PutPosition {
                        channel: channel.clone(),
                        position: position.clone(),
                    },
                );
            }
            for (pattern, since) in &snapshot.pattern_since {
                self.cache.apply(
                    &namespace,
                    &PersistKind::PutPatternSince {
                        pattern: pattern.clone(),
                        since: *since,
                    },
                );
            }
            Ok(snapshot)
        })
    }

    fn apply<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a PersistKind,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let _guard = self.write_lock.lock().await;
            self.cache.apply(namespace, kind);
            let snapshot = self.cache.load(namespace);
            let bytes = snapshot.to_json().into_bytes();
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| e.to_string())?;
            let path = self.path(namespace);
            let tmp = path.with_extension("json.tmp");
            tokio::fs::write(&tmp, bytes)
                .await
                .map_err(|e| e.to_string())?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}
