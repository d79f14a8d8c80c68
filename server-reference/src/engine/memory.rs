//! The in-memory engine: per-channel history bounded by size and age, idempotency records
//! `(channel, msg_id) -> offset` kept for the history TTL, and optional durability
//! through a [`LogStore`] in a data dir.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::FutureExt;
use tidings::protocol::{Publication, StreamPosition};

use super::log_store::{LogRecord, LogStore};
use super::{
    ChannelRecovery, Engine, EngineError, EngineFuture, PatternRecovery, PublicationSink,
    PublishOutcome, PublishRequest,
};
use crate::util::{now_ms, random_short_id};

/// Limits of the memory engine.
#[derive(Debug, Clone, Copy)]
pub struct MemoryOptions {
    /// Publications kept per channel.
    pub history_size: usize,
    /// How long publications and idempotency records are kept (ms).
    pub history_ttl_ms: u64,
}

#[derive(Debug, Default)]
struct Channel {
    top: u64,
    history: VecDeque<Publication>,
    /// `ts` of the newest publication dropped from history (0: none dropped).
    trimmed_ts: u64,
    /// msg_id -> (offset, ts).
    idem: HashMap<String, (u64, u64)>,
    /// (ts, msg_id) in acceptance order, for expiry.
    idem_order: VecDeque<(u64, String)>,
}

impl Channel {
    fn trim(&mut self, opts: &MemoryOptions, now: u64) {
        let horizon = now.saturating_sub(opts.history_ttl_ms);
        while let Some(front) = self.history.front() {
            if self.history.len() > opts.history_size || front.ts < horizon {
                self.trimmed_ts = self.trimmed_ts.max(front.ts);
                self.history.pop_front();
            } else {
                break;
            }
        }
        while let Some((ts, _)) = self.idem_order.front() {
            if *ts >= horizon {
                break;
            }
            if let Some((ts, msg_id)) = self.idem_order.pop_front() {
                if self.idem.get(&msg_id).is_some_and(|(_, t)| *t == ts) {
                    self.idem.remove(&msg_id);
                }
            }
        }
    }

    fn remember(&mut self, msg_id: String, offset: u64, ts: u64) {
        self.idem_order.push_back((ts, msg_id.clone()));
        self.idem.insert(msg_id, (offset, ts));
    }

    /// Publications after `offset`, or `None` when some of them are gone.
    fn after(&self, offset: u64) -> Option<Vec<Publication>> {
        if offset >= self.top {
            return Some(Vec::new());
        }
        let first = self.history.front()?.offset;
        if first > offset + 1 {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|p| p.offset > offset)
                .cloned()
                .collect(),
        )
    }
}

struct State {
    channels: BTreeMap<String, Channel>,
    log: Option<LogStore>,
}

/// The in-memory (optionally log-backed) engine for a single node.
pub struct MemoryEngine {
    epoch: String,
    opts: MemoryOptions,
    state: Mutex<State>,
    sink: Arc<dyn PublicationSink>,
}

impl fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEngine")
            .field("epoch", &self.epoch)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl MemoryEngine {
    /// A purely in-memory engine with a new random epoch.
    pub fn new(opts: MemoryOptions, sink: Arc<dyn PublicationSink>) -> Self {
        Self {
            epoch: random_short_id(),
            opts,
            state: Mutex::new(State {
                channels: BTreeMap::new(),
                log: None,
            }),
            sink,
        }
    }

    /// An engine persisted in `dir`: replays the log, keeping the dir's epoch.
    pub fn open(
        dir: &Path,
        opts: MemoryOptions,
        sink: Arc<dyn PublicationSink>,
    ) -> std::io::Result<Self> {
        let opened = LogStore::open(dir, random_short_id)?;
        let mut channels: BTreeMap<String, Channel> = BTreeMap::new();
        for record in opened.records {
            match record {
                LogRecord::Pub(publication) => {
                    if publication.epoch != opened.epoch {
                        continue;
                    }
                    let ch = channels.entry(publication.channel.clone()).or_default();
                    if publication.offset <= ch.top {
                        continue;
                    }
                    ch.top = publication.offset;
                    ch.remember(publication.id.clone(), publication.offset, publication.ts);
                    ch.history.push_back(publication);
                    if ch.history.len() > opts.history_size {
                        if let Some(p) = ch.history.pop_front() {
                            ch.trimmed_ts = ch.trimmed_ts.max(p.ts);
                        }
                    }
                }
                LogRecord::Idem {
                    channel,
                    msg_id,
                    offset,
                    ts,
                } => {
                    let ch = channels.entry(channel).or_default();
                    ch.remember(msg_id, offset, ts);
                }
                LogRecord::Top {
                    channel,
                    offset,
                    trimmed_ts,
                } => {
                    let ch = channels.entry(channel).or_default();
                    ch.top = ch.top.max(offset);
                    ch.trimmed_ts = ch.trimmed_ts.max(trimmed_ts);
                }
            }
        }
        let now = now_ms();
        for ch in channels.values_mut() {
            ch.trim(&opts, now);
        }
        tracing::info!(
            dir = %dir.display(),
            epoch = %opened.epoch,
            channels = channels.len(),
            "opened data dir"
        );
        Ok(Self {
            epoch: opened.epoch,
            opts,
            state: Mutex::new(State {
                channels,
                log: Some(opened.store),
            }),
            sink,
        })
    }

    /// The engine's epoch (shared by all its channels).
    pub fn engine_epoch(&self) -> &str {
        &self.epoch
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way
        // that matters more than stopping the server would; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_sync(&self, req: PublishRequest) -> Result<PublishOutcome, EngineError> {
        let now = now_ms();
        let mut guard = self.lock();
        let state = &mut *guard;
        let ch = state.channels.entry(req.channel.clone()).or_default();
        ch.trim(&self.opts, now);
        if let Some((offset, _)) = ch.idem.get(&req.msg_id) {
            return Ok(PublishOutcome {
                epoch: self.epoch.clone(),
                offset: *offset,
                duplicate: true,
            });
        }
        let publication = Publication {
            channel: req.channel,
            epoch: self.epoch.clone(),
            offset: ch.top + 1,
            id: req.msg_id,
            event: req.event,
            data: req.data,
            ts: now,
            publisher: req.publisher,
        };
        let accepted_at = Instant::now();
        if let Some(log) = state.log.as_mut() {
            // Written to the OS before it is acknowledged or delivered.
            log.append(&LogRecord::Pub(publication.clone()))?;
        }
        ch.top = publication.offset;
        ch.remember(publication.id.clone(), publication.offset, now);
        ch.history.push_back(publication.clone());
        ch.trim(&self.opts, now);
        let offset = publication.offset;
        // Delivered under the lock so every node sees a channel in offset order.
        self.sink.deliver(publication, accepted_at);
        self.maybe_compact(state);
        Ok(PublishOutcome {
            epoch: self.epoch.clone(),
            offset,
            duplicate: false,
        })
    }

    fn maybe_compact(&self, state: &mut State) {
        let Some(log) = state.log.as_mut() else {
            return;
        };
        let retained: usize = state
            .channels
            .values()
            .map(|c| 1 + c.idem.len().max(c.history.len()))
            .sum();
        if !log.wants_compaction(retained) {
            return;
        }
        let now = now_ms();
        let mut records = Vec::with_capacity(retained);
        for (name, ch) in state.channels.iter_mut() {
            ch.trim(&self.opts, now);
            records.push(LogRecord::Top {
                channel: name.clone(),
                offset: ch.top,
                trimmed_ts: ch.trimmed_ts,
            });
            let first_kept = ch.history.front().map_or(u64::MAX, |p| p.offset);
            let mut idem: Vec<_> = ch
                .idem
                .iter()
                .filter(|(_, (offset, _))| *offset < first_kept)
                .collect();
            idem.sort_by_key(|(_, (_, ts))| *ts);
            for (msg_id, (offset, ts)) in idem {
                records.push(LogRecord::Idem {
                    channel: name.clone(),
                    msg_id: msg_id.clone(),
                    offset: *offset,
                    ts: *ts,
                });
            }
            for p in &ch.history {
                records.push(LogRecord::Pub(p.clone()));
            }
        }
        let before = log.lines();
        match log.compact(records) {
            Ok(()) => tracing::info!(before, after = log.lines(), "compacted log"),
            Err(err) => tracing::error!(%err, "log compaction failed"),
        }
    }

    fn recover_sync(&self, channel: &str, from: Option<StreamPosition>) -> ChannelRecovery {
        let now = now_ms();
        let mut state = self.lock();
        let (top, publications) = match state.channels.get_mut(channel) {
            Some(ch) => {
                ch.trim(&self.opts, now);
                let pubs = match &from {
                    Some(pos) if pos.epoch == self.epoch => ch.after(pos.offset),
                    _ => None,
                };
                (ch.top, pubs)
            }
            None => {
                let pubs = match &from {
                    Some(pos) if pos.epoch == self.epoch => Some(Vec::new()),
                    _ => None,
                };
                (0, pubs)
            }
        };
        let recovered = from.is_some() && publications.is_some();
        ChannelRecovery {
            epoch: self.epoch.clone(),
            offset: top,
            recovered,
            publications: if recovered {
                publications.unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    fn recover_pattern_sync(
        &self,
        pattern: &str,
        positions: &BTreeMap<String, StreamPosition>,
        since: Option<u64>,
    ) -> PatternRecovery {
        let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
        let now = now_ms();
        let mut out = PatternRecovery::default();
        let mut state = self.lock();
        let matching = state
            .channels
            .range_mut(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix));
        for (name, ch) in matching {
            ch.trim(&self.opts, now);
            if let Some(pos) = positions.get(name) {
                let pubs = if pos.epoch == self.epoch {
                    ch.after(pos.offset)
                } else {
                    None
                };
                match pubs {
                    Some(pubs) => out.publications.extend(pubs),
                    None => out.unrecovered.push(name.clone()),
                }
            } else if let Some(since) = since {
                // Something at or after `since` was dropped from history.
                if ch.trimmed_ts > 0 && ch.trimmed_ts >= since {
                    out.unrecovered.push(name.clone());
                } else {
                    out.publications
                        .extend(ch.history.iter().filter(|p| p.ts >= since).cloned());
                }
            }
        }
        // Positions in channels this engine has never seen: fine in the same epoch
        // (nothing was published), lost otherwise.
        for (name, pos) in positions {
            if name.starts_with(prefix)
                && !state.channels.contains_key(name)
                && pos.epoch != self.epoch
            {
                out.unrecovered.push(name.clone());
            }
        }
        out.unrecovered.sort();
        out
    }
}

impl Engine for MemoryEngine {
    fn publish(&self, request: PublishRequest) -> EngineFuture<'_, PublishOutcome> {
        let result = self.publish_sync(request);
        async move { result }.boxed()
    }

    fn recover(
        &self,
        channel: String,
        from: Option<StreamPosition>,
    ) -> EngineFuture<'_, ChannelRecovery> {
        let result = self.recover_sync(&channel, from);
        async move { Ok(result) }.boxed()
    }

    fn recover_pattern(
        &self,
        pattern: String,
        positions: BTreeMap<String, StreamPosition>,
        since: Option<u64>,
    ) -> EngineFuture<'_, PatternRecovery> {
        let result = self.recover_pattern_sync(&pattern, &positions, since);
        async move { Ok(result) }.boxed()
    }

    fn epoch(&self, _channel: String) -> EngineFuture<'_, String> {
        let epoch = self.epoch.clone();
        async move { Ok(epoch) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings::protocol::{Payload, Publisher};

    #[derive(Default)]
    struct Collect(Mutex<Vec<Publication>>);
    impl PublicationSink for Collect {
        fn deliver(&self, publication: Publication, _accepted_at: Instant) {
            self.0.lock().expect("lock").push(publication);
        }
    }

    fn opts(size: usize) -> MemoryOptions {
        MemoryOptions {
            history_size: size,
            history_ttl_ms: 60_000,
        }
    }

    fn req(channel: &str, msg_id: &str) -> PublishRequest {
        PublishRequest {
            channel: channel.into(),
            msg_id: msg_id.into(),
            event: "ev".into(),
            data: Payload::from_json("1").expect("json"),
            publisher: Publisher {
                user: "u".into(),
                ..Publisher::default()
            },
        }
    }

    fn pos(epoch: &str, offset: u64) -> Option<StreamPosition> {
        Some(StreamPosition {
            epoch: epoch.into(),
            offset,
        })
    }

    #[test]
    fn history_trim_and_recovery() {
        let sink = Arc::new(Collect::default());
        let e = MemoryEngine::new(opts(3), sink.clone());
        let epoch = e.engine_epoch().to_owned();
        for i in 1..=5 {
            let out = e.publish_sync(req("c", &format!("m{i}"))).expect("publish");
            assert_eq!(out.offset, i);
            assert!(!out.duplicate);
        }
        assert_eq!(sink.0.lock().expect("lock").len(), 5);
        // History holds 3..=5.
        let r = e.recover_sync("c", None);
        assert_eq!((r.offset, r.recovered, r.publications.len()), (5, false, 0));
        let r = e.recover_sync("c", pos(&epoch, 2));
        assert!(r.recovered);
        assert_eq!(
            r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let r = e.recover_sync("c", pos(&epoch, 1));
        assert!(!r.recovered);
        assert!(r.publications.is_empty());
        let r = e.recover_sync("c", pos(&epoch, 5));
        assert!(r.recovered && r.publications.is_empty());
        let r = e.recover_sync("c", pos("other", 4));
        assert!(!r.recovered);
        let r = e.recover_sync("empty", pos(&epoch, 0));
        assert!(r.recovered);
        assert_eq!(r.offset, 0);
    }

    #[test]
    fn idempotency_outlives_history() {
        let sink = Arc::new(Collect::default());
        let e = MemoryEngine::new(opts(1), sink.clone());
        e.publish_sync(req("c", "a")).expect("publish");
        e.publish_sync(req("c", "b")).expect("publish");
        let dup = e.publish_sync(req("c", "a")).expect("publish");
        assert_eq!((dup.offset, dup.duplicate), (1, true));
        let other = e.publish_sync(req("d", "a")).expect("publish");
        assert_eq!((other.offset, other.duplicate), (1, false));
        assert_eq!(sink.0.lock().expect("lock").len(), 3);
    }

    #[test]
    fn pattern_recovery() {
        let sink = Arc::new(Collect::default());
        let e = MemoryEngine::new(opts(2), sink);
        let epoch = e.engine_epoch().to_owned();
        e.publish_sync(req("p:a", "1")).expect("publish");
        e.publish_sync(req("p:b", "1")).expect("publish");
        e.publish_sync(req("p:b", "2")).expect("publish");
        e.publish_sync(req("p:b", "3")).expect("publish");
        e.publish_sync(req("q:x", "1")).expect("publish");
        let mut positions = BTreeMap::new();
        positions.insert(
            "p:a".to_string(),
            StreamPosition {
                epoch: epoch.clone(),
                offset: 0,
            },
        );
        let r = e.recover_pattern_sync("p:*", &positions, Some(0));
        // p:b lost offset 1 to trimming, so since=0 cannot be served for it.
        assert_eq!(r.unrecovered, vec!["p:b".to_string()]);
        assert_eq!(r.publications.len(), 1);
        assert_eq!(r.publications[0].channel, "p:a");
        let r = e.recover_pattern_sync("p:*", &BTreeMap::new(), Some(now_ms() + 1000));
        assert!(r.unrecovered.is_empty() && r.publications.is_empty());
        positions.insert(
            "p:b".to_string(),
            StreamPosition {
                epoch: epoch.clone(),
                offset: 1,
            },
        );
        positions.insert(
            "p:gone".to_string(),
            StreamPosition {
                epoch: "old".into(),
                offset: 1,
            },
        );
        let r = e.recover_pattern_sync("p:*", &positions, None);
        assert_eq!(r.unrecovered, vec!["p:gone".to_string()]);
        assert_eq!(
            r.publications
                .iter()
                .map(|p| (p.channel.as_str(), p.offset))
                .collect::<Vec<_>>(),
            vec![("p:a", 1), ("p:b", 2), ("p:b", 3)]
        );
    }

    #[test]
    fn new_epoch_without_data_dir() {
        let a = MemoryEngine::new(opts(10), Arc::new(Collect::default()));
        let b = MemoryEngine::new(opts(10), Arc::new(Collect::default()));
        assert_ne!(a.engine_epoch(), b.engine_epoch());
    }

    #[test]
    fn data_dir_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let epoch;
        {
            let e = MemoryEngine::open(dir.path(), opts(5), Arc::new(Collect::default()))
                .expect("open");
            epoch = e.engine_epoch().to_owned();
            // Enough to trigger at least one compaction.
            for i in 1..=3000u64 {
                e.publish_sync(req("c", &format!("m{i}"))).expect("publish");
            }
            e.publish_sync(req("d", "x")).expect("publish");
        }
        let sink = Arc::new(Collect::default());
        let e = MemoryEngine::open(dir.path(), opts(5), sink.clone()).expect("reopen");
        assert_eq!(e.engine_epoch(), epoch);
        let r = e.recover_sync("c", pos(&epoch, 2995));
        assert!(r.recovered);
        assert_eq!(r.publications.len(), 5);
        assert_eq!(r.offset, 3000);
        // Idempotency survives, also for messages trimmed from history.
        let dup = e.publish_sync(req("c", "m10")).expect("publish");
        assert_eq!((dup.offset, dup.duplicate), (10, true));
        let next = e.publish_sync(req("c", "new")).expect("publish");
        assert_eq!((next.offset, next.duplicate), (3001, false));
        let d = e.recover_sync("d", pos(&epoch, 0));
        assert_eq!(d.publications.len(), 1);
        assert!(sink.0.lock().expect("lock").len() == 1);
    }
}
