//! Routes: the collector's logspout-style forwarding of container lines to
//! syslog and other receivers, and the `/logs` stream.
//!
//! Data flow: the collector [publishes](hub::Hub::publish) every container
//! line (and every metric from ingress) to the [`hub`]. Each route and each
//! `/logs` client holds a [`hub::Tap`]: its [`filter`]s and a diode of its
//! own. A route's task ([`route`]) drains its tap through its [`adapter`]s
//! (syslog, raw, multiline), which make messages, and its [`transport`]
//! (UDP, TCP, TLS), which delivers them. [`table`] keeps the running
//! routes (from `--route` flags and from the routes API in [`http`]) and
//! saves the API's routes in the state directory.
//!
//! Routes are written as logspout URIs ([`spec`]):
//! `ADAPTER[+TRANSPORT]://HOST:PORT[?QUERY]`.

pub mod adapter;
pub mod event;
pub mod file;
pub mod filter;
pub mod http;
pub mod hub;
pub mod route;
pub mod spec;
pub mod table;
pub mod template;
pub mod transport;

pub use event::{ContainerInfo, Event, Stream};
pub use hub::Hub;
pub use table::{RouteMetrics, Routes};
