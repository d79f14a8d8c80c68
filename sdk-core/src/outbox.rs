//! The ordered offline send queue.

use std::collections::VecDeque;

use crate::event::MessageStatus;
use crate::json::{ObjectWriter, ToJson};
use crate::store::{OutboxEntry, PersistId};

/// A message in the outbox with its current status, as shown to the app.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PendingMessage {
    /// The stored message.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub entry: OutboxEntry,
    /// Where it stands.
    pub status: MessageStatus,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub entry: OutboxEntry,
    pub status: MessageStatus,
    /// The store write that makes it durable, while `Persisting`.
    pub persist_id: Option<PersistId>,
}

/// Messages in publish order. Acked and failed messages leave the queue.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    slots: VecDeque<Slot>,
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn push(&mut self, slot: Slot) {
        self.slots.push_back(slot);
    }

    /// Inserts restored messages before anything queued in this session.
    pub fn restore_front(&mut self, restored: Vec<Slot>) {
        for slot in restored.into_iter().rev() {
            if !self.contains(&slot.entry.msg_id) {
                self.slots.push_front(slot);
            }
        }
    }

    pub fn contains(&self, msg_id: &str) -> bool {
        self.slots.iter().any(|s| s.entry.msg_id == msg_id)
    }

    pub fn get_mut(&mut self, msg_id: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.entry.msg_id == msg_id)
    }

    pub fn by_persist_id(&mut self, id: PersistId) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.persist_id == Some(id))
    }

    pub fn remove(&mut self, msg_id: &str) -> Option<Slot> {
        let index = self.slots.iter().position(|s| s.entry.msg_id == msg_id)?;
        self.slots.remove(index)
    }

    /// The oldest message not yet on the wire (for the drop-oldest policy).
    pub fn oldest_unsent(&self) -> Option<String> {
        self.slots
            .iter()
            .find(|s| !matches!(s.status, MessageStatus::Sent))
            .map(|s| s.entry.msg_id.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.status, MessageStatus::Sent))
            .count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    pub fn has_queued(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.status, MessageStatus::Queued))
    }

    /// Queued messages in order, ready to send.
    pub fn queued_ids(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| matches!(s.status, MessageStatus::Queued))
            .map(|s| s.entry.msg_id.clone())
            .collect()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Slot> + '_ {
        self.slots.drain(..)
    }

    pub fn view(&self) -> Vec<PendingMessage> {
        self.slots
            .iter()
            .map(|s| PendingMessage {
                entry: s.entry.clone(),
                status: s.status.clone(),
            })
            .collect()
    }
}

/// The entry's members plus `"status": {...}`.
impl ToJson for PendingMessage {
    fn write_json(&self, out: &mut String) {
        let mut obj = ObjectWriter::new(out);
        crate::store::write_entry_fields(&mut obj, &self.entry);
        self.status.write_json(obj.key("status"));
        obj.end();
    }
}
