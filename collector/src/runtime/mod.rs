//! Container runtimes: which containers run on this node, what they are
//! called, and which process to capture.
//!
//! A runtime's watcher turns its view into a stream of [`Event`]s and keeps
//! [`Containers`] up to date; capture sources only follow those events.
//! [`docker`] is the Docker Engine API (dockerd).

pub mod docker;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::container::Container;

/// What happened to a container, as sources need to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The container runs (or ran: a container that exited before it could
    /// be inspected comes with `pid` 0, so its output can still be read
    /// through the Docker API; its `Stopped` follows). Sent at the first
    /// list, on every start and rename, and again for every running
    /// container after a reconnect: a `Running` for a known id is an
    /// update (new name, or a restart: new `pid` and `started_at`).
    Running(Arc<Container>),
    /// The container died or was removed, or was found gone after a
    /// reconnect. May come for an id never sent as `Running`, and twice
    /// for one stop (die, then destroy).
    Stopped { id: String },
    /// The container runs but opted out of collection (see
    /// [`Container::is_ignored`]): nothing it writes is to be shipped.
    OptedOut { id: String },
}

/// The containers last sent as [`Event::Running`] and not stopped since,
/// by full id; kept by [`watch_into`]. Cheap to clone and to read.
#[derive(Clone, Debug, Default)]
pub struct Containers(Arc<RwLock<HashMap<String, Arc<Container>>>>);

impl Containers {
    /// The container with this full id.
    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        self.read().get(id).cloned()
    }

    /// The container with this full id, name, or id prefix of at least 12
    /// characters (as `docker` shows ids).
    pub fn find(&self, id_or_name: &str) -> Option<Arc<Container>> {
        let map = self.read();
        if let Some(c) = map.get(id_or_name) {
            return Some(c.clone());
        }
        let name = id_or_name.strip_prefix('/').unwrap_or(id_or_name);
        map.values()
            .find(|c| c.name == name || (id_or_name.len() >= 12 && c.id.starts_with(id_or_name)))
            .cloned()
    }

    /// All of them, by name.
    pub fn all(&self) -> Vec<Arc<Container>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn insert(&self, c: Arc<Container>) {
        self.write().insert(c.id.clone(), c);
    }

    fn remove(&self, id: &str) -> Option<Arc<Container>> {
        self.write().remove(id)
    }

    // A panic elsewhere while holding the lock leaves the map consistent
    // (every write is one insert or remove), so poisoning is ignored.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Container>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Container>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_lookup() {
        let known = Containers::default();
        let c = Arc::new(Container {
            id: "0123456789ab".repeat(5) + "cdef",
            name: "web".into(),
            ..Default::default()
        });
        known.insert(c.clone());
        assert_eq!(known.get(&c.id), Some(c.clone()));
        assert_eq!(known.find("web"), Some(c.clone()));
        assert_eq!(known.find("/web"), Some(c.clone()));
        assert_eq!(known.find("0123456789ab"), Some(c.clone()));
        assert_eq!(known.find("0123"), None, "too short a prefix");
        assert_eq!(known.all(), vec![c.clone()]);
        known.remove(&c.id);
        assert!(known.is_empty());
    }
}
