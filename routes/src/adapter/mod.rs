//! Adapters turn events into messages for one kind of receiver.
//!
//! To add one: write a module with a [`AdapterKind`] and add one line to
//! [`ADAPTERS`] behind its cargo feature.

use std::time::Instant;

use bytes::Bytes;

use crate::event::Event;
use crate::spec::Options;
use crate::transport::Framing;

#[cfg(feature = "adapter-multiline")]
pub mod multiline;
#[cfg(feature = "adapter-raw")]
pub mod raw;
#[cfg(feature = "adapter-syslog")]
pub mod syslog;

/// Every adapter compiled in, by scheme name.
pub static ADAPTERS: &[AdapterKind] = &[
    #[cfg(feature = "adapter-syslog")]
    syslog::KIND,
    #[cfg(feature = "adapter-raw")]
    raw::KIND,
    #[cfg(feature = "adapter-multiline")]
    multiline::KIND,
];

/// Turns events into messages (one frame or datagram each).
pub trait Adapter: Send {
    /// Appends the messages for `event` to `out` (none if the adapter
    /// holds it back, or does not send this kind of event).
    fn write(&mut self, event: &Event, out: &mut Vec<Bytes>);

    /// Whether it renders templates: CPU work bounded per event (see
    /// [`crate::template`]) but too much for the runtime's threads, so
    /// the route adapts its events on the blocking pool.
    fn renders_templates(&self) -> bool {
        false
    }

    /// When [`Adapter::flush`] must next be called, if the adapter holds
    /// events back (multiline).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Sends what is held back and due at `now`; `now = None` sends
    /// everything (the route is going away).
    fn flush(&mut self, _now: Option<Instant>, _out: &mut Vec<Bytes>) {}
}

/// What an adapter wraps: the next adapter in `multiline+raw`.
pub type Inner = Option<Box<dyn Adapter>>;

/// Builds an adapter from its options (and what it wraps).
pub type Build = fn(&mut Options, Inner) -> Result<Box<dyn Adapter>, String>;

/// One adapter's registration.
pub struct AdapterKind {
    /// Its name in route URIs.
    pub name: &'static str,
    /// Whether it wraps another adapter (`multiline+syslog`).
    pub wraps: bool,
    /// How its messages are framed on stream transports unless the route
    /// says `framing=`; `None` takes the wrapped adapter's.
    pub framing: Option<Framing>,
    /// Builds one, taking its options.
    pub build: Build,
}

pub fn find(name: &str) -> Option<&'static AdapterKind> {
    ADAPTERS.iter().find(|a| a.name == name)
}

pub fn names() -> String {
    ADAPTERS
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the adapter chain named by `names` (`["multiline", "raw"]`),
/// and its framing.
pub fn build_chain(
    names: &[&str],
    options: &mut Options,
) -> Result<(Box<dyn Adapter>, Framing), String> {
    let kinds = names
        .iter()
        .map(|n| {
            find(n).ok_or_else(|| format!("unknown adapter {n:?} (compiled in: {})", names_list()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let Some((last, wrappers)) = kinds.split_last() else {
        return Err("a route needs an adapter".into());
    };
    if last.wraps {
        return Err(format!(
            "adapter {:?} wraps another adapter: write {}+ADAPTER",
            last.name, last.name
        ));
    }
    if let Some(w) = wrappers.iter().find(|w| !w.wraps) {
        return Err(format!("adapter {:?} cannot wrap another adapter", w.name));
    }
    let mut framing = last.framing.unwrap_or(Framing::Lf);
    let mut adapter = (last.build)(options, None)?;
    for w in wrappers.iter().rev() {
        framing = w.framing.unwrap_or(framing);
        adapter = (w.build)(options, Some(adapter))?;
    }
    Ok((adapter, framing))
}

fn names_list() -> String {
    let n = names();
    if n.is_empty() { "none".into() } else { n }
}
