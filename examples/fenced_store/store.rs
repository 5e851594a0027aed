//! The protected side of fencing: a store that remembers, per resource, the
//! highest fencing token it has seen, and rejects writes with a lower one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// A write refused because a later lock holder has written already.
#[derive(Debug, PartialEq, Eq)]
pub struct StaleToken {
    /// The resource written.
    pub resource: String,
    /// The token the write carried.
    pub token: u64,
    /// The highest token the store has seen for the resource.
    pub highest: u64,
}

impl fmt::Display for StaleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write to {:?} with fencing token {} rejected: token {} was seen already (the writer's lock expired)",
            self.resource, self.token, self.highest
        )
    }
}

impl std::error::Error for StaleToken {}

/// A key-value store guarded by fencing tokens.
#[derive(Default)]
pub struct FencedStore {
    entries: Mutex<HashMap<String, (u64, String)>>,
}

impl FencedStore {
    /// Writes `value` if `token` is at least the highest seen for `resource`.
    pub fn write(&self, resource: &str, token: u64, value: &str) -> Result<(), StaleToken> {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries
            .entry(resource.to_owned())
            .or_insert((0, String::new()));
        if token < entry.0 {
            return Err(StaleToken {
                resource: resource.to_owned(),
                token,
                highest: entry.0,
            });
        }
        *entry = (token, value.to_owned());
        Ok(())
    }

    /// The value last written to `resource`.
    pub fn read(&self, resource: &str) -> Option<String> {
        self.entries
            .lock()
            .unwrap()
            .get(resource)
            .map(|(_, v)| v.clone())
    }
}
