//! `memory://NAME`: a sorted map in process memory, for tests and the reference model.
//!
//! A write transaction holds the map's write lock for its whole run, so transactions are
//! trivially serializable; writes go straight into the map and an undo log restores it
//! when the body fails. Engines with the same NAME in one process share one map, so a
//! test can format a volume and mount it through two handles.

use crate::error::Result;
use crate::{KvEngine, KvTxn, TxnBody};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

pub struct MemoryEngine {
    map: Arc<RwLock<Map>>,
}

impl MemoryEngine {
    /// A private, empty engine.
    pub fn new() -> Self {
        MemoryEngine {
            map: Arc::new(RwLock::new(Map::new())),
        }
    }

    /// The engine registered under `name` in this process (created on first use).
    pub fn shared(name: &str) -> Self {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<RwLock<Map>>>>> = OnceLock::new();
        let mut reg = REGISTRY.get_or_init(Default::default).lock();
        let map = reg.entry(name.to_string()).or_default().clone();
        MemoryEngine { map }
    }
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new()
    }
}

struct MemTxn<'a> {
    map: &'a mut Map,
    /// Original values of keys changed by this transaction (first change wins).
    undo: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl MemTxn<'_> {
    fn remember(&mut self, key: &[u8]) {
        if !self.undo.iter().any(|(k, _)| k == key) {
            self.undo.push((key.to_vec(), self.map.get(key).cloned()));
        }
    }
}

impl KvTxn for MemTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }
    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(scan_map(self.map, begin, end, limit))
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.remember(key);
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.remember(key);
        self.map.remove(key);
        Ok(())
    }
}

/// Pairs of `[begin, end)` in key order, at most `limit`.
fn scan_map(map: &Map, begin: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    if begin >= end {
        return Vec::new();
    }
    map.range(begin.to_vec()..end.to_vec())
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Read-only view used by read transactions under the shared lock.
struct MemReadTxn<'a> {
    map: &'a Map,
}

impl KvTxn for MemReadTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }
    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(scan_map(self.map, begin, end, limit))
    }
    fn set(&mut self, _key: &[u8], _value: &[u8]) -> Result<()> {
        Err(crate::shared::write_in_read_only())
    }
    fn delete(&mut self, _key: &[u8]) -> Result<()> {
        Err(crate::shared::write_in_read_only())
    }
}

impl KvEngine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn embedded(&self) -> bool {
        true
    }

    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
        if read_only {
            let map = self.map.read();
            return body(&mut MemReadTxn { map: &map });
        }
        let mut map = self.map.write();
        let mut tx = MemTxn {
            map: &mut map,
            undo: Vec::new(),
        };
        let res = body(&mut tx);
        if res.is_err() {
            let undo = std::mem::take(&mut tx.undo);
            for (k, v) in undo.into_iter().rev() {
                match v {
                    Some(v) => tx.map.insert(k, v),
                    None => tx.map.remove(&k),
                };
            }
        }
        res
    }

    fn reset(&self) -> Result<()> {
        self.map.write().clear();
        Ok(())
    }
}
