//! Durable state: the last state per (connector, user), the outbox of changes not yet
//! acknowledged by every sink, each sink's cursor into it, and handled command ids.
//!
//! Everything lives in one embedded `redb` file, so "update the last state" and "append the
//! change to the outbox" are one ACID transaction: after a crash either both happened or
//! neither did. The outbox is an ordered table keyed by a global `u64`; every sink has a
//! cursor (the next id it has not yet had acknowledged) and an entry is deleted once every
//! sink's cursor has passed it.

use crate::codec::avro_ser::{write_bytes, write_long};
use crate::model::{CommandResult, PresenceState};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("last_state");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("sink_cursor");
const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("command_result");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META` key: the next outbox id to assign. Kept explicitly because the outbox may be
/// empty (fully drained) and ids must never be reused.
const NEXT_ID: &str = "outbox_next_id";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Db(String),
    #[error("state store record {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What is stored per (connector, user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    /// Sequence of the last change emitted for this user (the next one is `sequence + 1`).
    pub sequence: i64,
    pub state: PresenceState,
}

impl StoredState {
    /// `sequence` (Avro long) then the `PresenceState` Avro datum: compact, so the state
    /// table's B-tree pages (rewritten on every commit) stay small.
    pub fn encode_into(sequence: i64, state: &PresenceState, out: &mut Vec<u8>) {
        write_long(out, sequence);
        // The model types always encode; an error would be a bug in the model.
        crate::codec::encode_state(state, out).expect("presence state encodes");
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        Self::encode_into(self.sequence, &self.state, &mut out);
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<StoredState, String> {
        let sequence = read_long(&mut b)?;
        let state = crate::codec::decode_state(b).map_err(|e| e.to_string())?;
        Ok(StoredState { sequence, state })
    }
}

fn read_long(b: &mut &[u8]) -> Result<i64, String> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        n |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
        }
    }
    Err("varint too long".into())
}

/// Key of the state table. NUL cannot occur in connector names or user ids.
pub fn state_key(connector: &str, user: &str) -> String {
    let mut k = String::with_capacity(connector.len() + user.len() + 1);
    k.push_str(connector);
    k.push('\0');
    k.push_str(user);
    k
}

/// One change waiting to be published, with what sinks need besides the datum (routing
/// key, headers) so they never decode the datum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: u64,
    pub event_id: String,
    pub kind: String,
    pub connector: String,
    pub user: String,
    pub sequence: i64,
    pub observed_at: i64,
    /// Avro datum of the `PresenceChange` (no framing).
    pub datum: Vec<u8>,
}

impl OutboxEntry {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.datum.len() + 96);
        write_bytes(&mut out, self.event_id.as_bytes());
        write_bytes(&mut out, self.kind.as_bytes());
        write_bytes(&mut out, self.connector.as_bytes());
        write_bytes(&mut out, self.user.as_bytes());
        write_long(&mut out, self.sequence);
        write_long(&mut out, self.observed_at);
        out.extend_from_slice(&self.datum);
        out
    }

    fn decode(id: u64, mut b: &[u8]) -> Result<OutboxEntry, String> {
        fn string(b: &mut &[u8]) -> Result<String, String> {
            let n = read_long(b)?;
            if n < 0 || n as usize > b.len() {
                return Err("bad string length".into());
            }
            let (s, rest) = b.split_at(n as usize);
            *b = rest;
            String::from_utf8(s.to_vec()).map_err(|_| "not UTF-8".to_string())
        }
        Ok(OutboxEntry {
            id,
            event_id: string(&mut b)?,
            kind: string(&mut b)?,
            connector: string(&mut b)?,
            user: string(&mut b)?,
            sequence: read_long(&mut b)?,
            observed_at: read_long(&mut b)?,
            datum: b.to_vec(),
        })
    }
}

/// A change computed by the pipeline, not yet committed.
#[derive(Debug, Clone)]
pub struct PendingChange {
    pub key: String,
    /// The new [`StoredState`], encoded ([`StoredState::encode_into`]).
    pub state: Vec<u8>,
    pub entry: OutboxEntry,
}

/// Counts of the outbox, for metrics and backpressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Next id to assign (one past the newest entry).
    pub head: u64,
    /// Oldest id some sink still needs.
    pub tail: u64,
}

impl OutboxStats {
    pub fn depth(&self) -> u64 {
        self.head.saturating_sub(self.tail)
    }
}

/// The embedded store. Cheap to clone; all methods are blocking (call them from
/// `spawn_blocking` or a dedicated thread on hot paths).
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    sinks: Arc<Vec<String>>,
}

impl Store {
    /// Opens (or creates) the store at `path`, registering the sinks that must acknowledge
    /// every entry. A sink seen for the first time starts at the current tail, so adding a
    /// sink does not replay history into it; a sink no longer configured stops holding
    /// entries back.
    pub fn open(path: &Path, sinks: &[String]) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Db(format!("create {}: {e}", dir.display())))?;
        }
        let db = Database::builder()
            .set_cache_size(64 * 1024 * 1024)
            .create(path)?;
        let store = Store {
            db: Arc::new(db),
            sinks: Arc::new(sinks.to_vec()),
        };
        store.init_cursors()?;
        Ok(store)
    }

    fn init_cursors(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let meta = txn.open_table(META)?;
            let outbox = txn.open_table(OUTBOX)?;
            let next = match meta.get(NEXT_ID)? {
                Some(v) => v.value(),
                None => 1,
            };
            let first = outbox.first()?.map(|(k, _)| k.value()).unwrap_or(next);
            let mut cursors = txn.open_table(CURSORS)?;
            let stale: Vec<String> = cursors
                .iter()?
                .filter_map(|r| r.ok())
                .map(|(k, _)| k.value().to_string())
                .filter(|k| !self.sinks.contains(k))
                .collect();
            for k in stale {
                cursors.remove(k.as_str())?;
            }
            for s in self.sinks.iter() {
                if cursors.get(s.as_str())?.is_none() {
                    cursors.insert(s.as_str(), first)?;
                }
            }
        }
        txn.commit()?;
        self.compact(Durability::Immediate)?;
        Ok(())
    }

    /// Reads one value from a table that may not exist yet.
    fn get_raw<T>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
        decode: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(key)? {
            None => Ok(None),
            Some(v) => decode(v.value())
                .map(Some)
                .map_err(|reason| StoreError::Corrupt {
                    key: format!("{}/{}", def.name(), key.replace('\0', "/")),
                    reason,
                }),
        }
    }

    /// The last stored state of (connector, user).
    pub fn get_state(&self, key: &str) -> Result<Option<StoredState>, StoreError> {
        self.get_raw(STATES, key, StoredState::decode)
    }

    /// Every stored state (for `state` tooling and tests).
    pub fn all_states(&self) -> Result<Vec<(String, StoredState)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(STATES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let s = StoredState::decode(v.value()).map_err(|reason| StoreError::Corrupt {
                key: k.value().replace('\0', "/"),
                reason,
            })?;
            out.push((k.value().to_string(), s));
        }
        Ok(out)
    }

    /// Writes new states and appends their changes to the outbox in ONE durable
    /// transaction. Assigns outbox ids in order and returns the new head.
    pub fn commit_changes(&self, changes: &mut [PendingChange]) -> Result<u64, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let head;
        {
            let mut meta = txn.open_table(META)?;
            let mut next = match meta.get(NEXT_ID)? {
                Some(v) => v.value(),
                None => 1,
            };
            let mut states = txn.open_table(STATES)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            for c in changes.iter_mut() {
                states.insert(c.key.as_str(), c.state.as_slice())?;
                c.entry.id = next;
                outbox.insert(next, c.entry.encode().as_slice())?;
                next += 1;
            }
            meta.insert(NEXT_ID, next)?;
            head = next;
        }
        txn.commit()?;
        Ok(head)
    }

    /// Reads up to `max` entries starting at `from` (inclusive), in id order.
    pub fn read_outbox(&self, from: u64, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::with_capacity(max.min(4096));
        for row in table.range(from..)?.take(max) {
            let (k, v) = row?;
            let id = k.value();
            out.push(
                OutboxEntry::decode(id, v.value()).map_err(|reason| StoreError::Corrupt {
                    key: format!("outbox/{id}"),
                    reason,
                })?,
            );
        }
        Ok(out)
    }

    /// The cursor of `sink`: the next outbox id it has not had acknowledged.
    pub fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let cursors = txn.open_table(CURSORS)?;
        Ok(cursors.get(sink)?.map(|v| v.value()).unwrap_or(1))
    }

    /// Records that `sink` has had every entry below `next` acknowledged, and deletes the
    /// entries every sink is past. Not fsynced on its own: losing it in a crash only means
    /// re-publishing entries with the same event ids; the next state commit makes it durable.
    pub fn ack(&self, sink: &str, next: u64) -> Result<OutboxStats, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let stats;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            let cur = cursors.get(sink)?.map(|v| v.value()).unwrap_or(0);
            if next > cur {
                cursors.insert(sink, next)?;
            }
            let meta = txn.open_table(META)?;
            let head = meta.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
            let tail = self.tail(&cursors, head)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            outbox.retain_in(..tail, |_, _| false)?;
            stats = OutboxStats { head, tail };
        }
        txn.commit()?;
        Ok(stats)
    }

    /// Oldest entry some configured sink still needs (`head` when all are caught up).
    fn tail<T: ReadableTable<&'static str, u64>>(
        &self,
        cursors: &T,
        head: u64,
    ) -> Result<u64, StoreError> {
        let mut tail = head;
        for s in self.sinks.iter() {
            if let Some(c) = cursors.get(s.as_str())? {
                tail = tail.min(c.value());
            }
        }
        Ok(tail)
    }

    /// Deletes outbox entries below every sink's cursor and returns the counts.
    fn compact(&self, durability: Durability) -> Result<OutboxStats, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        let stats;
        {
            let meta = txn.open_table(META)?;
            let head = meta.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
            let cursors = txn.open_table(CURSORS)?;
            let tail = self.tail(&cursors, head)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            outbox.retain_in(..tail, |_, _| false)?;
            stats = OutboxStats { head, tail };
        }
        txn.commit()?;
        Ok(stats)
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let head = meta.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
        let cursors = txn.open_table(CURSORS)?;
        let tail = self.tail(&cursors, head)?;
        Ok(OutboxStats { head, tail })
    }

    /// Drops the `n` oldest entries (outbox full with policy `drop_oldest`): every cursor
    /// moves past them. Returns how many were dropped.
    pub fn drop_oldest(&self, n: u64) -> Result<u64, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let dropped;
        {
            let head = {
                let meta = txn.open_table(META)?;
                let next = meta.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
                next
            };
            let mut cursors = txn.open_table(CURSORS)?;
            let tail = self.tail(&cursors, head)?;
            let new_tail = (tail + n).min(head);
            for s in self.sinks.iter() {
                let c = cursors.get(s.as_str())?.map(|v| v.value()).unwrap_or(0);
                if c < new_tail {
                    cursors.insert(s.as_str(), new_tail)?;
                }
            }
            let mut outbox = txn.open_table(OUTBOX)?;
            outbox.retain_in(..new_tail, |_, _| false)?;
            dropped = new_tail - tail;
        }
        txn.commit()?;
        Ok(dropped)
    }

    /// The recorded result of a command id, if it was handled before.
    pub fn command_result(&self, command_id: &str) -> Result<Option<CommandResult>, StoreError> {
        self.get_raw(COMMANDS, command_id, |b| {
            serde_json::from_slice(b).map_err(|e| e.to_string())
        })
    }

    /// Records a command's result durably (before it is published, so a redelivered
    /// command is recognised even if the process dies right after applying it).
    pub fn record_command(&self, result: &CommandResult) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut t = txn.open_table(COMMANDS)?;
            let v = serde_json::to_vec(result).map_err(|e| StoreError::Db(e.to_string()))?;
            t.insert(result.command_id.as_str(), v.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces the whole state table (used by `state rebuild`).
    pub fn put_states(&self, states: &[(String, StoredState)]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut t = txn.open_table(STATES)?;
            for (k, s) in states {
                t.insert(k.as_str(), s.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Availability;

    fn change(key: &str, seq: i64) -> PendingChange {
        PendingChange {
            key: key.to_string(),
            state: StoredState {
                sequence: seq,
                state: PresenceState::new(Availability::Busy),
            }
            .encode(),
            entry: OutboxEntry {
                id: 0,
                event_id: format!("e{seq}"),
                kind: "synthetic".into(),
                connector: "c".into(),
                user: key.into(),
                sequence: seq,
                observed_at: 1000 + seq,
                datum: vec![1, 2, 3, seq as u8],
            },
        }
    }

    #[test]
    fn entries_leave_only_after_every_sink_acked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &["a".into(), "b".into()]).unwrap();
        let mut batch: Vec<_> = (1..=5).map(|i| change("u", i)).collect();
        assert_eq!(store.commit_changes(&mut batch).unwrap(), 6);
        assert_eq!(batch[0].entry.id, 1);
        let all = store.read_outbox(1, 100).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[3], batch[3].entry);

        let st = store.ack("a", 6).unwrap();
        assert_eq!(st, OutboxStats { head: 6, tail: 1 });
        assert_eq!(
            store.read_outbox(1, 100).unwrap().len(),
            5,
            "b still needs them"
        );
        let st = store.ack("b", 3).unwrap();
        assert_eq!(st.depth(), 3);
        assert_eq!(store.read_outbox(0, 100).unwrap()[0].id, 3);
        assert_eq!(store.cursor("b").unwrap(), 3);
        // A stale (lower) ack never moves a cursor back.
        store.ack("b", 2).unwrap();
        assert_eq!(store.cursor("b").unwrap(), 3);
    }

    #[test]
    fn ids_and_cursors_survive_reopen_and_new_sinks_start_at_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path, &["a".into()]).unwrap();
            let mut batch: Vec<_> = (1..=4).map(|i| change("u", i)).collect();
            store.commit_changes(&mut batch).unwrap();
            store.ack("a", 3).unwrap();
            // Make the non-durable ack durable, as the next state commit would.
            store.commit_changes(&mut []).unwrap();
        }
        let store = Store::open(&path, &["a".into(), "new".into()]).unwrap();
        assert_eq!(store.cursor("a").unwrap(), 3);
        assert_eq!(store.cursor("new").unwrap(), 3);
        let mut batch = vec![change("u", 5)];
        store.commit_changes(&mut batch).unwrap();
        assert_eq!(batch[0].entry.id, 5, "ids are never reused");
        assert_eq!(
            store.get_state(&state_key("c", "u")).unwrap(),
            None,
            "key in test is just `u`"
        );
        assert_eq!(store.get_state("u").unwrap().unwrap().sequence, 5);
    }

    #[test]
    fn drop_oldest_moves_every_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &["a".into(), "b".into()]).unwrap();
        let mut batch: Vec<_> = (1..=10).map(|i| change("u", i)).collect();
        store.commit_changes(&mut batch).unwrap();
        store.ack("a", 5).unwrap();
        assert_eq!(store.drop_oldest(3).unwrap(), 3);
        assert_eq!(store.cursor("a").unwrap(), 5);
        assert_eq!(store.cursor("b").unwrap(), 4);
        assert_eq!(store.outbox_stats().unwrap().depth(), 7);
    }

    #[test]
    fn outbox_entry_codec_round_trips_and_rejects_garbage() {
        let e = change("alice", 42).entry;
        assert_eq!(OutboxEntry::decode(9, &e.encode()).unwrap().event_id, "e42");
        assert!(OutboxEntry::decode(1, &[0xff, 0xff]).is_err());
        assert!(OutboxEntry::decode(1, &[0x7f]).is_err());
    }
}
