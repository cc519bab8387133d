//! The routes API's `POST /routes` body (ours and logspout's fields):
//! `RouteRequest` from JSON, `into_spec`, then the route built as the
//! collector builds it.
//!
//! Invariants: errors are one line; a route that builds has a URI
//! (`RouteSpec::uri`, shown by the routes API: it must not panic) that
//! parses and builds, to the same adapter, address and options; it is
//! saved to `routes.json` and restored (serde) as the same route, which
//! builds again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_fuzz::{assert_one_line, strip_file_options};
use spillway_routes::route;
use spillway_routes::spec::{RouteRequest, RouteSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<RouteRequest>(data) else {
        return;
    };
    let mut spec = match request.into_spec("generated".into()) {
        Ok(spec) => spec,
        Err(e) => return assert_one_line(&e),
    };
    strip_file_options(&mut spec.options);
    if let Err(e) = route::build(&spec) {
        return assert_one_line(&e);
    }

    let uri = spec.uri();
    let from_uri = RouteSpec::from_uri(spec.id.clone(), &uri)
        .unwrap_or_else(|e| panic!("{spec:?} printed as {uri:?}, which does not parse: {e}"));
    assert_eq!(
        (&from_uri.adapter, &from_uri.address, &from_uri.options),
        (&spec.adapter, &spec.address, &spec.options),
        "printed as {uri:?}"
    );
    if let Err(e) = route::build(&from_uri) {
        panic!("{spec:?} printed as {uri:?}, which does not build: {e}");
    }

    let saved = serde_json::to_string(&spec).expect("a route serializes");
    let restored: RouteSpec = serde_json::from_str(&saved).expect("a saved route reads back");
    assert_eq!(restored, spec, "saved as {saved}");
    if let Err(e) = route::build(&restored) {
        panic!("restored {saved} does not build: {e}");
    }
});
