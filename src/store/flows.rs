//! Pending flows in a table in memory, each also kept on disk, sealed with
//! the vault's key, in the vault's journal of flows, so a restart between
//! `/connect` and the callback loses nothing. A flow is named on disk by a
//! hash of its state, never the state itself: the file must not hand out
//! live states.
//!
//! What changes on a flow once it is written, where its link was posted
//! and which browser took it, goes to the vault's notes beside the journal
//! (see [`Note`]), not into a record sealed again.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    BindError, ChatMessage, FlowState, FlowStore, InsertError, PendingFlow, StoreError, TakeError,
};
use crate::logging::chain;
use crate::vault::Vault;
use crate::vault::journal::{Journal, Name};

/// The journal's name, and the folder where earlier versions kept a file
/// per flow.
const FOLDER: &str = "flows";

#[derive(Default)]
pub struct FlowTable {
    flows: DashMap<FlowState, PendingFlow>,
    /// start id → state.
    starts: DashMap<FlowState, FlowState>,
    /// Where flows are kept across restarts; `None` in memory only.
    disk: Option<Disk>,
}

struct Disk {
    vault: Arc<Vault>,
    journal: Journal,
    /// Each flow's [`Note`], under the flow's name.
    notes: Journal,
}

/// What may change on a pending flow after it is sealed: kept beside the
/// sealed record, in clear, and laid over it when the flow is read back.
/// Neither is secret: a message's place in its owner's own chat (whose id
/// the vault's file names show anyway) and a SHA-256 of the browser's
/// cookie. Sealing the whole flow again for them cost an X25519 agreement
/// per link sent, a tenth of the bot's CPU per connect.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Note {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    binding: Option<String>,
}

impl Note {
    fn of(flow: &PendingFlow) -> Self {
        Self {
            message: flow.message,
            binding: flow.binding.clone(),
        }
    }

    /// A note as written; an unreadable one is logged and left out (its
    /// flow is kept without it).
    fn read(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes)
            .inspect_err(|error| {
                tracing::warn!(%error, "a pending flow's note is unreadable; the flow is kept without it");
            })
            .ok()
    }

    fn lay_over(self, flow: &mut PendingFlow) {
        if self.message.is_some() {
            flow.message = self.message;
        }
        if self.binding.is_some() {
            flow.binding = self.binding;
        }
    }
}

impl FlowTable {
    /// A table kept only in memory (tests, and stores that persist
    /// elsewhere).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A table whose flows are also written to the vault's journal, loaded
    /// with the flows a previous run left (a file per flow, as earlier
    /// versions kept them, moves into the journal). Those that expired
    /// meanwhile are kept until the next sweep, so their owners hear of it.
    pub async fn durable(vault: Arc<Vault>) -> Result<Self, StoreError> {
        let (journal, records) = vault.open_journal(FOLDER).await?;
        let (notes, noted) = vault.open_notes(FOLDER).await?;
        let mut noted: HashMap<Name, Vec<u8>> = noted.into_iter().collect();
        let table = Self {
            disk: Some(Disk {
                vault: vault.clone(),
                journal,
                notes,
            }),
            ..Self::default()
        };
        for (name, sealed) in records {
            match vault.open_value::<PendingFlow>(FOLDER, &sealed) {
                Ok(mut flow) if digest(&flow.state) == name => {
                    if let Some(note) = noted.remove(&name).and_then(|bytes| Note::read(&bytes)) {
                        note.lay_over(&mut flow);
                    }
                    table.remember(flow);
                }
                Ok(_) => {
                    tracing::warn!("a stored pending flow is filed under another name; dropped");
                    table.unpersist_name(name).await?;
                }
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "a stored pending flow is unreadable; dropped");
                    table.unpersist_name(name).await?;
                }
            }
        }
        // Notes of flows no longer there (the process stopped between
        // the two removals).
        if let Some(disk) = &table.disk {
            for name in noted.into_keys() {
                disk.notes.remove(name).await?;
            }
        }
        for (name, record) in vault.records::<PendingFlow>(FOLDER).await? {
            match record {
                Ok(flow) => {
                    table.persist(&flow).await?;
                    table.remember(flow);
                }
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "a stored pending flow is unreadable; dropped");
                }
            }
            vault.remove_record(FOLDER, &name).await?;
        }
        if !table.flows.is_empty() {
            tracing::info!(count = table.flows.len(), "pending flows restored");
        }
        Ok(table)
    }

    fn remember(&self, flow: PendingFlow) {
        self.starts
            .insert(flow.start_id.clone(), flow.state.clone());
        self.flows.insert(flow.state.clone(), flow);
    }

    fn forget(&self, flow: &PendingFlow) {
        self.starts.remove(&flow.start_id);
    }

    async fn persist(&self, flow: &PendingFlow) -> Result<(), StoreError> {
        if let Some(disk) = &self.disk {
            let sealed = disk.vault.seal_value(FOLDER, flow)?;
            disk.journal.put(digest(&flow.state), sealed).await?;
        }
        Ok(())
    }

    /// Writes what changed on a flow since it was sealed (see [`Note`]).
    async fn note(&self, flow: &PendingFlow) -> Result<(), StoreError> {
        if let Some(disk) = &self.disk {
            let note = serde_json::to_vec(&Note::of(flow)).map_err(|source| {
                crate::vault::VaultError::Serialize {
                    key: format!("{FOLDER} note"),
                    source,
                }
            })?;
            disk.notes.put(digest(&flow.state), note).await?;
        }
        Ok(())
    }

    async fn unpersist(&self, state: &FlowState) -> Result<(), StoreError> {
        self.unpersist_name(digest(state)).await
    }

    async fn unpersist_name(&self, name: Name) -> Result<(), StoreError> {
        if let Some(disk) = &self.disk {
            disk.journal.remove(name).await?;
            disk.notes.remove(name).await?;
        }
        Ok(())
    }

    fn state_of(&self, start_id: &str) -> Result<FlowState, TakeError> {
        self.starts
            .get(&FlowState::from(start_id))
            .map(|state| state.clone())
            .ok_or(TakeError::Unknown)
    }
}

/// A flow's name on disk: the SHA-256 of its state.
fn digest(state: &FlowState) -> Name {
    Sha256::digest(state.as_str().as_bytes()).into()
}
#[async_trait::async_trait]
impl FlowStore for FlowTable {
    async fn insert(&self, flow: PendingFlow, max_per_user: u32) -> Result<(), InsertError> {
        let mut replaced = Vec::new();
        let mut waiting = 0;
        for entry in self.flows.iter() {
            let old = entry.value();
            if old.owner.user_id != flow.owner.user_id || old.is_expired() {
                continue;
            }
            if old.server_id == flow.server_id {
                replaced.push(old.state.clone());
            } else {
                waiting += 1;
            }
        }
        if waiting >= max_per_user {
            return Err(InsertError::TooMany(max_per_user));
        }
        for state in replaced {
            if let Some((_, old)) = self.flows.remove(&state) {
                self.forget(&old);
                self.unpersist(&state).await?;
            }
        }
        self.persist(&flow).await?;
        self.remember(flow);
        Ok(())
    }

    async fn by_start_id(&self, start_id: &str) -> Result<PendingFlow, TakeError> {
        let state = self.state_of(start_id)?;
        let flow = self
            .flows
            .get(&state)
            .map(|f| f.clone())
            .ok_or(TakeError::Unknown)?;
        if flow.is_expired() {
            return Err(TakeError::Expired {
                owner: flow.owner,
                server_id: flow.server_id,
            });
        }
        Ok(flow)
    }

    async fn bind(&self, start_id: &str, binding: &str) -> Result<PendingFlow, BindError> {
        let state = self.state_of(start_id)?;
        let bound = {
            // The entry guard makes check-and-set one step.
            let mut entry = self.flows.get_mut(&state).ok_or(TakeError::Unknown)?;
            let flow = entry.value_mut();
            if flow.is_expired() {
                return Err(TakeError::Expired {
                    owner: flow.owner,
                    server_id: flow.server_id.clone(),
                }
                .into());
            }
            if flow.binding.is_some() {
                return Err(BindError::AlreadyBound {
                    owner: flow.owner,
                    server_id: flow.server_id.clone(),
                });
            }
            flow.binding = Some(binding.to_owned());
            flow.clone()
        };
        self.note(&bound).await.map_err(TakeError::from)?;
        Ok(bound)
    }

    async fn set_message(&self, start_id: &str, message: ChatMessage) -> Result<(), StoreError> {
        let Ok(state) = self.state_of(start_id) else {
            return Ok(());
        };
        let updated = self.flows.get_mut(&state).map(|mut entry| {
            entry.message = Some(message);
            entry.clone()
        });
        match updated {
            Some(flow) => self.note(&flow).await,
            None => Ok(()),
        }
    }

    async fn take(&self, state: &str) -> Result<PendingFlow, TakeError> {
        let state = FlowState::from(state);
        let (_, flow) = self.flows.remove(&state).ok_or(TakeError::Unknown)?;
        self.forget(&flow);
        self.unpersist(&state).await?;
        if flow.is_expired() {
            return Err(TakeError::Expired {
                owner: flow.owner,
                server_id: flow.server_id,
            });
        }
        Ok(flow)
    }

    async fn restore(&self, flow: PendingFlow) -> Result<(), StoreError> {
        self.persist(&flow).await?;
        self.remember(flow);
        Ok(())
    }

    async fn sweep(&self) -> Result<Vec<PendingFlow>, StoreError> {
        let expired: Vec<FlowState> = self
            .flows
            .iter()
            .filter(|entry| entry.is_expired())
            .map(|entry| entry.key().clone())
            .collect();
        let mut swept = Vec::with_capacity(expired.len());
        for state in expired {
            if let Some((_, flow)) = self.flows.remove(&state) {
                self.forget(&flow);
                self.unpersist(&state).await?;
                swept.push(flow);
            }
        }
        Ok(swept)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.flows.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::flow_contract::{ALICE, BOB, TTL, flow, put};
    use crate::vault::KeySource;

    crate::flow_store_contract!(async { ((), FlowTable::in_memory()) });

    #[tokio::test]
    async fn flows_survive_a_restart_and_expired_ones_are_swept() {
        let temp = tempfile::tempdir().unwrap();
        let vault =
            || Arc::new(Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap());
        let live;
        let gone;
        let taken;
        {
            let table = FlowTable::durable(vault()).await.unwrap();
            live = put(&table, flow(ALICE, "demo", TTL)).await;
            gone = put(&table, flow(BOB, "demo", Duration::ZERO)).await;
            taken = put(&table, flow(BOB, "other", TTL)).await;
            table
                .set_message(
                    live.start_id.as_str(),
                    ChatMessage {
                        chat_id: 1,
                        message_id: 9,
                    },
                )
                .await
                .unwrap();
            table.take(taken.state.as_str()).await.unwrap();
        }
        // Nothing on disk holds a state in clear.
        let journal = std::fs::read(temp.path().join("flows.journal")).unwrap();
        for state in [&live.state, &gone.state, &taken.state] {
            let needle = state.as_str().as_bytes();
            assert!(!journal.windows(needle.len()).any(|w| w == needle));
        }
        let table = FlowTable::durable(vault()).await.unwrap();
        assert_eq!(
            table.count().await.unwrap(),
            2,
            "the taken flow stays taken"
        );
        let swept = table.sweep().await.unwrap();
        assert_eq!(swept.len(), 1, "the flow that expired meanwhile is swept");
        assert_eq!(swept[0].state, gone.state);
        let restored = table.take(live.state.as_str()).await.unwrap();
        assert_eq!(restored.message.map(|m| m.message_id), Some(9));
        drop(table);
        let table = FlowTable::durable(vault()).await.unwrap();
        assert_eq!(table.count().await.unwrap(), 0);
    }

    /// Where the link went and which browser took the flow are noted
    /// beside the sealed record, not sealed again, and come back with the
    /// flow after a restart; a note whose flow is gone goes too.
    #[tokio::test]
    async fn changes_to_a_flow_are_noted_not_sealed_again() {
        let temp = tempfile::tempdir().unwrap();
        let vault =
            || Arc::new(Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap());
        let sealed_len = || {
            std::fs::metadata(temp.path().join("flows.journal"))
                .unwrap()
                .len()
        };
        let message = ChatMessage {
            chat_id: 1,
            message_id: 9,
        };
        let (kept, taken);
        {
            let table = FlowTable::durable(vault()).await.unwrap();
            kept = put(&table, flow(ALICE, "demo", TTL)).await;
            taken = put(&table, flow(BOB, "demo", TTL)).await;
            let before = sealed_len();
            for f in [&kept, &taken] {
                table
                    .set_message(f.start_id.as_str(), message)
                    .await
                    .unwrap();
                table
                    .bind(f.start_id.as_str(), "cookie-hash")
                    .await
                    .unwrap();
            }
            assert_eq!(sealed_len(), before, "nothing sealed again");
            table.take(taken.state.as_str()).await.unwrap();
        }
        let notes = std::fs::read(temp.path().join("flows.notes")).unwrap();
        assert!(
            notes.windows(11).any(|w| w == b"cookie-hash"),
            "the binding is in the notes"
        );
        let table = FlowTable::durable(vault()).await.unwrap();
        let back = table.take(kept.state.as_str()).await.unwrap();
        assert_eq!(back.message, Some(message));
        assert_eq!(back.binding.as_deref(), Some("cookie-hash"));
        assert!(matches!(
            table.take(taken.state.as_str()).await,
            Err(TakeError::Unknown)
        ));
        drop(table);
        // Both flows gone: so are their notes, once compacted at open.
        let _table = FlowTable::durable(vault()).await.unwrap();
        let notes = std::fs::read(temp.path().join("flows.notes")).unwrap();
        assert!(!notes.windows(11).any(|w| w == b"cookie-hash"));
    }

    /// A note left without its flow (the process stopped between the two
    /// removals) is dropped at the next start.
    #[tokio::test]
    async fn a_note_without_its_flow_is_dropped() {
        let temp = tempfile::tempdir().unwrap();
        let vault =
            Arc::new(Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap());
        {
            let (notes, _) = vault.open_notes(FOLDER).await.unwrap();
            notes.put([7; 32], b"{}".to_vec()).await.unwrap();
        }
        drop(FlowTable::durable(vault.clone()).await.unwrap());
        let (_notes, live) = vault.open_notes(FOLDER).await.unwrap();
        assert!(live.is_empty());
    }

    /// Earlier versions kept a file per flow: those move into the journal.
    #[tokio::test]
    async fn flows_kept_a_file_each_are_taken_over() {
        let temp = tempfile::tempdir().unwrap();
        let vault =
            Arc::new(Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap());
        let old = flow(ALICE, "demo", TTL);
        let name = hex::encode(digest(&old.state));
        vault.put_record(FOLDER, &name, &old).await.unwrap();
        let table = FlowTable::durable(vault.clone()).await.unwrap();
        assert_eq!(
            table
                .by_start_id(old.start_id.as_str())
                .await
                .unwrap()
                .state,
            old.state
        );
        assert_eq!(
            std::fs::read_dir(temp.path().join(FOLDER)).unwrap().count(),
            0,
            "the old file is gone"
        );
        drop(table);
        let table = FlowTable::durable(vault).await.unwrap();
        assert!(
            table.take(old.state.as_str()).await.is_ok(),
            "kept in the journal"
        );
    }
}
