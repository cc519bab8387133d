//! The one place where a test that cannot run on this machine (no root,
//! no Docker daemon, no eBPF support, a missing tool) decides what to do.
//!
//! Run by hand, such a test prints why it is skipped and passes. Under the
//! strict flag it fails instead: `cargo xtask test` sets
//! [`STRICT_ENV`]`=1` for every test process it starts, having installed
//! and started everything the tests need, so a skip there is a defect of
//! the machine or of the test, never a pass. `CI` set to anything but
//! empty, `0` or `false` (GitHub, GitLab and Woodpecker set `true`, some
//! runners `1` or their own name) is accepted as an alias.
//!
//! Every test that may skip goes through [`skip`] (or [`require`]); no
//! test reads `CI` itself.
//!
//! ```
//! // A test that needs something this machine lacks:
//! # let have_docker = true;
//! if !have_docker {
//!     spillway_testenv::skip("the Docker tests", "no Docker daemon answers");
//!     return;
//! }
//! ```

/// The environment variable that forbids skipping (`1` or `true`).
pub const STRICT_ENV: &str = "SPILLWAY_TEST_STRICT";

/// True when no test may skip: [`STRICT_ENV`] is `1`/`true`, or `CI` is
/// set to something other than empty, `0` or `false`.
pub fn strict() -> bool {
    strict_from(
        std::env::var(STRICT_ENV).ok().as_deref(),
        std::env::var("CI").ok().as_deref(),
    )
}

/// [`strict`] for the given values of [`STRICT_ENV`] and `CI`.
fn strict_from(strict: Option<&str>, ci: Option<&str>) -> bool {
    let on = |v: &str| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false");
    strict.is_some_and(on) || ci.is_some_and(on)
}

/// A test that cannot run here: prints `skipped: <what>: <why>` and
/// returns (the caller then returns), or panics under [`strict`].
///
/// `what` names the tests (or the part of a test) that cannot run, `why`
/// what is missing.
#[track_caller]
pub fn skip(what: &str, why: &str) {
    assert!(
        !strict(),
        "{what} must run ({STRICT_ENV}=1 or CI is set, as under `cargo xtask test`), but: {why}"
    );
    eprintln!("skipped: {what}: {why}");
}

/// `Ok(())` if `missing` is `None`; else [`skip`]s (panicking under
/// [`strict`]) and returns `Err(why)`.
///
/// ```
/// fn needs_tool() -> Option<String> { None }
/// if spillway_testenv::require("the tool test", needs_tool()).is_err() {
///     return;
/// }
/// ```
#[track_caller]
pub fn require(what: &str, missing: Option<String>) -> Result<(), String> {
    match missing {
        None => Ok(()),
        Some(why) => {
            skip(what, &why);
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strict_flag_and_its_ci_aliases() {
        assert!(!strict_from(None, None));
        for off in ["", "0", "false", "FALSE"] {
            assert!(!strict_from(Some(off), Some(off)), "{off:?}");
        }
        assert!(strict_from(Some("1"), None));
        assert!(strict_from(Some("true"), Some("false")));
        for ci in ["true", "1", "woodpecker", "True"] {
            assert!(strict_from(None, Some(ci)), "{ci:?}");
        }
    }

    /// Runs in its own process so the variable set here reaches no other
    /// test: the test binary re-runs itself with the flag on and off.
    #[test]
    fn skip_panics_only_under_the_strict_flag() {
        if let Ok(mode) = std::env::var("SPILLWAY_TESTENV_CHILD") {
            assert_eq!(strict(), mode == "strict");
            skip("the child", "nothing is missing, this is a test");
            return;
        }
        let run = |mode: &str, strict: &str| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "tests::skip_panics_only_under_the_strict_flag",
                    "--nocapture",
                ])
                .env("SPILLWAY_TESTENV_CHILD", mode)
                .env(STRICT_ENV, strict)
                .env_remove("CI")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        };
        let (ok, text) = run("lax", "0");
        assert!(ok, "{text}");
        assert!(
            text.contains("skipped: the child: nothing is missing"),
            "{text}"
        );
        let (ok, text) = run("strict", "1");
        assert!(!ok, "{text}");
        assert!(text.contains("the child must run"), "{text}");
    }
}
