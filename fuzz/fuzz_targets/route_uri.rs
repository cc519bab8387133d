//! Route URIs (`--route`, `{"uri": ...}` of the routes API):
//! `RouteSpec::from_uri`, then the route built as the collector builds it.
//!
//! Invariants: errors are one line; a parsed route prints as a URI
//! (`RouteSpec::uri`, shown by the routes API) that parses back to the same
//! route and prints the same again; a route that builds from its URI builds
//! from the printed one too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_fuzz::{assert_one_line, strip_file_options};
use spillway_routes::route;
use spillway_routes::spec::RouteSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    let mut spec = match RouteSpec::from_uri("fuzz".into(), uri) {
        Ok(spec) => spec,
        Err(e) => return assert_one_line(&e),
    };
    let printed = spec.uri();
    let again = RouteSpec::from_uri("fuzz".into(), &printed)
        .unwrap_or_else(|e| panic!("{uri:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(again, spec, "{uri:?} printed as {printed:?}");
    assert_eq!(again.uri(), printed, "printing is not stable");

    strip_file_options(&mut spec.options);
    let built = route::build(&spec).map(|_| ()).map_err(|e| {
        assert_one_line(&e);
        e
    });
    let rebuilt = RouteSpec::from_uri("fuzz".into(), &spec.uri())
        .and_then(|s| route::build(&s))
        .map(|_| ());
    assert_eq!(
        built.is_ok(),
        rebuilt.is_ok(),
        "{uri:?}: {built:?} vs {rebuilt:?}"
    );
});
