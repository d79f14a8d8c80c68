//! Durability for the memory engine: an append-only log of JSON lines in the data dir,
//! plus `meta.json` holding the epoch.
//!
//! Every accepted publication is written (to the OS, no fsync) before it is acknowledged,
//! so a crashed process loses nothing it acknowledged. At start the log is replayed;
//! when it grows much larger than what is retained, it is rewritten (compacted) with
//! only the retained publications, the idempotency records still in force, and each
//! channel's top offset.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidings::json::ToJson;
use tidings::protocol::Publication;

const LOG_FILE: &str = "log.jsonl";
const META_FILE: &str = "meta.json";

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum LogRecord {
    /// An accepted publication (read and written by the core's codec, see `encode`).
    #[serde(skip)]
    Pub(Publication),
    /// An idempotency record whose publication is no longer in history (compaction only).
    Idem {
        /// Channel.
        channel: String,
        /// Message id.
        msg_id: String,
        /// Offset originally assigned.
        offset: u64,
        /// Acceptance time, ms since the Unix epoch.
        ts: u64,
    },
    /// A channel's top offset and the newest trimmed timestamp (compaction only).
    Top {
        /// Channel.
        channel: String,
        /// Top offset.
        offset: u64,
        /// `ts` of the newest publication dropped from history, 0 if none.
        #[serde(default)]
        trimmed_ts: u64,
    },
}

impl LogRecord {
    /// One line of JSON (without the newline). Publications go through the core's codec,
    /// which keeps their payload's exact text; serde cannot take a raw payload out of an
    /// internally tagged enum.
    fn encode(&self) -> io::Result<Vec<u8>> {
        match self {
            LogRecord::Pub(publication) => {
                let body = publication.to_json();
                Ok(format!("{{\"t\":\"pub\",{}", &body[1..]).into_bytes())
            }
            other => serde_json::to_vec(other).map_err(io::Error::other),
        }
    }

    /// Reads a line written by [`LogRecord::encode`].
    fn decode(line: &str) -> Result<Self, String> {
        let value = tidings::json::parse(line).map_err(|e| e.to_string())?;
        if value.get("t").and_then(|t| t.as_str()) == Some("pub") {
            tidings::codec::publication(&value)
                .map(LogRecord::Pub)
                .map_err(|e| e.to_string())
        } else {
            serde_json::from_str(line).map_err(|e| e.to_string())
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    epoch: String,
}

/// The open log of one data dir.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    file: File,
    lines: usize,
    lines_after_compaction: usize,
}

/// What [`LogStore::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The open store, positioned for appends.
    pub store: LogStore,
    /// The data dir's epoch (created on first open).
    pub epoch: String,
    /// Records to replay, in log order.
    pub records: Vec<LogRecord>,
}

impl LogStore {
    /// Opens (creating if needed) the data dir; `new_epoch` names the epoch of a new dir.
    pub fn open(dir: &Path, new_epoch: impl FnOnce() -> String) -> io::Result<Opened> {
        fs::create_dir_all(dir)?;
        let meta_path = dir.join(META_FILE);
        let epoch = match fs::read(&meta_path) {
            Ok(bytes) => {
                let meta: Meta = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                meta.epoch
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let meta = Meta { epoch: new_epoch() };
                write_atomically(dir, META_FILE, |w| {
                    serde_json::to_writer(&mut *w, &meta).map_err(io::Error::other)
                })?;
                meta.epoch
            }
            Err(err) => return Err(err),
        };

        let log_path = dir.join(LOG_FILE);
        let mut records = Vec::new();
        let mut lines = 0;
        let mut valid_len = 0u64;
        match File::open(&log_path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = reader.read_line(&mut line)?;
                    if n == 0 {
                        break;
                    }
                    if !line.ends_with('\n') {
                        // A torn last write from a crash: drop it.
                        tracing::warn!("dropping incomplete last line of the log");
                        break;
                    }
                    valid_len += n as u64;
                    lines += 1;
                    match LogRecord::decode(line.trim_end()) {
                        Ok(record) => records.push(record),
                        Err(err) => tracing::warn!(%err, "skipping unreadable log line"),
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        if file.metadata()?.len() != valid_len {
            file.set_len(valid_len)?;
        }
        Ok(Opened {
            store: LogStore {
                dir: dir.to_path_buf(),
                file,
                lines,
                lines_after_compaction: lines,
            },
            epoch,
            records,
        })
    }

    /// Appends one record and writes it to the OS before returning.
    pub fn append(&mut self, record: &LogRecord) -> io::Result<()> {
        let mut line = record.encode()?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.lines += 1;
        Ok(())
    }

    /// Whether the log is so much larger than at the last compaction (or open) that
    /// it should be rewritten; `retained` is roughly how many records would be kept.
    pub fn wants_compaction(&self, retained: usize) -> bool {
        self.lines > 1024 + 2 * retained.max(self.lines_after_compaction / 2)
    }

    /// Rewrites the log with exactly `records` (written to a temp file, synced, then
    /// renamed over the log).
    pub fn compact(&mut self, records: impl IntoIterator<Item = LogRecord>) -> io::Result<()> {
        let mut count = 0;
        write_atomically(&self.dir, LOG_FILE, |w| {
            for record in records {
                w.write_all(&record.encode()?)?;
                w.write_all(b"\n")?;
                count += 1;
            }
            Ok(())
        })?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.lines = count;
        self.lines_after_compaction = count;
        Ok(())
    }

    /// Lines currently in the log.
    pub fn lines(&self) -> usize {
        self.lines
    }
}

fn write_atomically(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp)?;
    {
        let mut writer = io::BufWriter::new(&file);
        write(&mut writer)?;
        writer.flush()?;
    }
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings::protocol::{Payload, Publisher};

    fn publication(offset: u64) -> Publication {
        Publication {
            channel: "c".into(),
            epoch: "e".into(),
            offset,
            id: format!("m{offset}"),
            event: "ev".into(),
            data: Payload::from_json(r#"{"n":1}"#).expect("json"),
            ts: 5,
            publisher: Publisher::default(),
        }
    }

    #[test]
    fn reopen_replays_and_keeps_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = LogStore::open(dir.path(), || "first".into()).expect("open");
        assert_eq!(opened.epoch, "first");
        assert!(opened.records.is_empty());
        let mut store = opened.store;
        store
            .append(&LogRecord::Pub(publication(1)))
            .expect("append");
        store
            .append(&LogRecord::Pub(publication(2)))
            .expect("append");
        drop(store);

        // Simulate a torn write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .expect("open");
        f.write_all(b"{\"t\":\"pub\",\"chan").expect("write");
        drop(f);

        let opened = LogStore::open(dir.path(), || "second".into()).expect("reopen");
        assert_eq!(opened.epoch, "first");
        assert_eq!(
            opened.records,
            vec![
                LogRecord::Pub(publication(1)),
                LogRecord::Pub(publication(2))
            ]
        );
        let mut store = opened.store;
        store
            .append(&LogRecord::Pub(publication(3)))
            .expect("append");
        store
            .compact(vec![
                LogRecord::Top {
                    channel: "c".into(),
                    offset: 3,
                    trimmed_ts: 5,
                },
                LogRecord::Pub(publication(3)),
            ])
            .expect("compact");
        store
            .append(&LogRecord::Pub(publication(4)))
            .expect("append");
        drop(store);
        let opened = LogStore::open(dir.path(), || "third".into()).expect("reopen");
        assert_eq!(opened.records.len(), 3);
        assert_eq!(opened.store.lines(), 3);
    }

    #[test]
    fn a_payload_sent_with_line_breaks_stays_one_log_line() {
        use tidings::protocol::{ClientFrame, Codec, JsonCodec};
        let text = "{\"type\":\"publish\",\"id\":1,\"channel\":\"c\",\"msg_id\":\"m\",\"event\":\"e\",\"data\":{\n \"a\":\r\n1}}";
        let Ok(ClientFrame::Publish { data, .. }) = JsonCodec.decode_client(text) else {
            panic!("publish decodes")
        };
        let mut publication = publication(1);
        publication.data = data;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path(), || "e".into())
            .expect("open")
            .store;
        store
            .append(&LogRecord::Pub(publication.clone()))
            .expect("append");
        store
            .append(&LogRecord::Pub(self::publication(2)))
            .expect("append");
        drop(store);
        let opened = LogStore::open(dir.path(), || "e".into()).expect("reopen");
        assert_eq!(
            opened.records,
            vec![
                LogRecord::Pub(publication),
                LogRecord::Pub(self::publication(2))
            ]
        );
        assert_eq!(opened.store.lines(), 2);
    }
}
