//! Pending flows in a table in memory, each also kept on disk as its own
//! age-encrypted file, so a restart between `/connect` and the callback
//! loses nothing. The file is named by a hash of the state, never the
//! state itself: a directory listing must not hand out live states.

use std::sync::Arc;

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::{
    BindError, ChatMessage, FlowState, FlowStore, InsertError, PendingFlow, StoreError, TakeError,
};
use crate::logging::chain;
use crate::vault::Vault;

const FOLDER: &str = "flows";

#[derive(Default)]
pub struct FlowTable {
    flows: DashMap<FlowState, PendingFlow>,
    /// start id → state.
    starts: DashMap<FlowState, FlowState>,
    /// Where flows are kept across restarts; `None` in memory only.
    vault: Option<Arc<Vault>>,
}

impl FlowTable {
    /// A table kept only in memory (tests, and stores that persist
    /// elsewhere).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A table whose flows are also written to the vault, loaded with the
    /// flows a previous run left. Those that expired meanwhile are kept
    /// until the next sweep, so their owners hear of it.
    pub async fn durable(vault: Arc<Vault>) -> Result<Self, StoreError> {
        let table = Self {
            vault: Some(vault.clone()),
            ..Self::default()
        };
        for (name, record) in vault.records::<PendingFlow>(FOLDER).await? {
            match record {
                Ok(flow) => table.remember(flow),
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "a stored pending flow is unreadable; dropped");
                    vault.remove_record(FOLDER, &name).await?;
                }
            }
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
        if let Some(vault) = &self.vault {
            vault
                .put_record(FOLDER, &file_name(&flow.state), flow)
                .await?;
        }
        Ok(())
    }

    async fn unpersist(&self, state: &FlowState) -> Result<(), StoreError> {
        if let Some(vault) = &self.vault {
            vault.remove_record(FOLDER, &file_name(state)).await?;
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

/// A file name for a state: its SHA-256, hex.
fn file_name(state: &FlowState) -> String {
    hex::encode(Sha256::digest(state.as_str().as_bytes()))
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
        self.persist(&bound).await.map_err(TakeError::from)?;
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
            Some(flow) => self.persist(&flow).await,
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
        {
            let table = FlowTable::durable(vault()).await.unwrap();
            live = put(&table, flow(ALICE, "demo", TTL)).await;
            gone = put(&table, flow(BOB, "demo", Duration::ZERO)).await;
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
        }
        // No file is named by a state.
        for entry in std::fs::read_dir(temp.path().join(FOLDER)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains(live.state.as_str()), "{name}");
        }
        let table = FlowTable::durable(vault()).await.unwrap();
        let swept = table.sweep().await.unwrap();
        assert_eq!(swept.len(), 1, "the flow that expired meanwhile is swept");
        assert_eq!(swept[0].state, gone.state);
        let restored = table.take(live.state.as_str()).await.unwrap();
        assert_eq!(restored.message.map(|m| m.message_id), Some(9));
        assert_eq!(
            std::fs::read_dir(temp.path().join(FOLDER)).unwrap().count(),
            0,
            "a taken flow leaves no file"
        );
    }
}
