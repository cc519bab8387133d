//! Readiness for `/health`: a process is ready when none of its parts is
//! pending. `/health` answers 200 `ok` then, and 503 with one line per
//! pending part (what, and why) before, so that orchestrators wait.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The parts of a process that are not ready yet.
#[derive(Debug, Default)]
pub struct Health {
    pending: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    /// Ready: nothing pending.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Marks `part` not ready, for the reason `why`.
    pub fn pending(&self, part: &'static str, why: impl Into<String>) {
        self.lock().insert(part, why.into());
    }

    /// Marks `part` ready.
    pub fn ready(&self, part: &'static str) {
        self.lock().remove(part);
    }

    /// `Ok` when ready, else one line per pending part: `PART: WHY`.
    pub fn check(&self) -> Result<(), String> {
        let pending = self.lock();
        if pending.is_empty() {
            return Ok(());
        }
        Err(pending
            .iter()
            .map(|(part, why)| format!("not ready: {part}: {why}\n"))
            .collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_nothing_is_pending() {
        let h = Health::new();
        assert_eq!(h.check(), Ok(()));
        h.pending("capture", "loading");
        h.pending("shipping", "starting");
        assert_eq!(
            h.check().unwrap_err(),
            "not ready: capture: loading\nnot ready: shipping: starting\n"
        );
        h.ready("capture");
        h.ready("shipping");
        assert_eq!(h.check(), Ok(()));
    }
}
