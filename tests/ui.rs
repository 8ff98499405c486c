//! Compile-time checks of the macros and typed proxies (trybuild): every `ui-tests/fail/`
//! case must fail to compile, with the compiler output in the `.stderr` snapshot beside it,
//! and every `ui-tests/pass/` case must compile and run. See `ui-tests/README.md`.
//!
//! The snapshots hold the compiler's wording, which changes between compiler versions. So
//! they are compared only on the version recorded in `ui-tests/TOOLCHAIN`, the one they
//! were made with. On any other compiler the test still checks that every `fail/` case
//! fails to compile and every `pass/` case compiles, prints a notice saying which snapshots
//! differ and how to re-bless them, and passes: `cargo test` must not fail on a newer
//! stable compiler over a reworded message.
//!
//! trybuild has no mode that checks a failure without comparing its output; it does write
//! the output of a case without a snapshot when `TRYBUILD=overwrite` is set, after checking
//! that the case failed. So on another compiler the `fail/` cases are copied, without
//! their snapshots, to a scratch directory, and checked there by this test binary run again
//! as a child process with `TRYBUILD=overwrite` (a test cannot set its own environment);
//! the snapshots are then compared here, only to be listed in the notice.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Holds the version of the compiler the snapshots were made with (`1.95.0`).
const TOOLCHAIN_FILE: &str = "ui-tests/TOOLCHAIN";

/// Overrides the version read from [`TOOLCHAIN_FILE`], to try the gate: with
/// `DURABLE_UI_TOOLCHAIN=0.0.0` this compiler counts as another one.
const TOOLCHAIN_OVERRIDE: &str = "DURABLE_UI_TOOLCHAIN";

/// Set, to the scratch directory, in the child process that checks the `fail/` cases
/// without their snapshots.
const SCRATCH: &str = "DURABLE_UI_SCRATCH";

/// The directory of the workspace root package, which holds `ui-tests/`.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How the cases are checked.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// With trybuild as it is: outputs compared with the snapshots (or, with
    /// `TRYBUILD=overwrite`, written to them).
    Snapshots,
    /// Only that `fail/` cases fail and `pass/` cases compile: this compiler (`current`;
    /// `None` when it cannot be told) is not the one the snapshots were made with.
    FailuresOnly { current: Option<String> },
}

/// How to check the cases, given the version the snapshots were made with, this
/// compiler's and whether snapshots are being re-blessed (`TRYBUILD=overwrite`).
fn check(recorded: &str, current: Option<&str>, reblessing: bool) -> Check {
    if reblessing || current == Some(recorded) {
        Check::Snapshots
    } else {
        Check::FailuresOnly {
            current: current.map(str::to_owned),
        }
    }
}

/// The version in `rustc --version`'s output: `rustc 1.95.0 (59807616e 2026-04-14)` gives
/// `1.95.0`.
fn version_of(output: &str) -> Option<&str> {
    let version = output.strip_prefix("rustc ")?.split_whitespace().next()?;
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// The version of the compiler cargo builds the cases with (`$RUSTC`, else `rustc`, which
/// rustup resolves to the toolchain of this `cargo` run).
fn current_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let output = String::from_utf8(output.stdout).ok()?;
    version_of(&output).map(str::to_owned)
}

fn recorded_version() -> String {
    if let Ok(version) = std::env::var(TOOLCHAIN_OVERRIDE) {
        return version;
    }
    let path = root().join(TOOLCHAIN_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.trim().to_owned()
}

#[test]
fn ui() {
    let reblessing = std::env::var_os("TRYBUILD").is_some_and(|mode| mode == "overwrite");
    let current = current_version();
    match check(&recorded_version(), current.as_deref(), reblessing) {
        Check::Snapshots => {
            let cases = trybuild::TestCases::new();
            cases.compile_fail("ui-tests/fail/*.rs");
            cases.pass("ui-tests/pass/*.rs");
            drop(cases); // runs them
            if let (true, Some(current)) = (reblessing, current) {
                let path = root().join(TOOLCHAIN_FILE);
                std::fs::write(&path, format!("{current}\n")).unwrap();
            }
        }
        Check::FailuresOnly { current } => failures_only(current.as_deref()),
    }
}

/// Checks the cases without their snapshots (in a child process), then says so.
fn failures_only(current: Option<&str>) {
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-unblessed");
    let _ = std::fs::remove_dir_all(&scratch);
    let fail = scratch.join("fail");
    std::fs::create_dir_all(&fail).unwrap();
    let cases = cases_in(&root().join("ui-tests/fail"));
    for case in &cases {
        std::fs::copy(root().join("ui-tests/fail").join(case), fail.join(case)).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args([
            "ui_without_snapshots",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("TRYBUILD", "overwrite")
        .env(SCRATCH, &scratch)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "a ui case did not do what it must (see `ui-tests/README.md`):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let differing = differing_snapshots(&cases, &fail);
    let notice = notice(current, cases.len(), &differing);
    // Straight to stderr, past the test harness's capture: a passing test must say this.
    let _ = writeln!(std::io::stderr(), "{notice}");
}

/// The `.rs` files in `dir`, by name, sorted.
fn cases_in(dir: &Path) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".rs"))
        .collect();
    cases.sort();
    cases
}

/// The `fail/` cases whose output on this compiler (written to `scratch_fail`) differs
/// from their snapshot.
fn differing_snapshots(cases: &[String], scratch_fail: &Path) -> Vec<String> {
    // The output names the copy: in full (trybuild leaves paths into the target directory
    // as they are) or relative to the package.
    let absolute = scratch_fail.to_string_lossy().into_owned();
    let relative = scratch_fail
        .strip_prefix(root())
        .unwrap_or(scratch_fail)
        .to_string_lossy()
        .into_owned();
    // A path inside the package is also written `$DIR/...` in some places (a type's
    // location), and the copy is outside it when the target directory is (as with
    // `CARGO_TARGET_DIR` elsewhere): compared without `$DIR/`.
    let as_original = |output: String| {
        output
            .replace(&absolute, "ui-tests/fail")
            .replace(&relative, "ui-tests/fail")
            .replace("$DIR/", "")
    };
    cases
        .iter()
        .filter(|case| {
            let stderr = Path::new(case.as_str()).with_extension("stderr");
            let snapshot = std::fs::read_to_string(root().join("ui-tests/fail").join(&stderr))
                .map(|snapshot| snapshot.replace("$DIR/", ""));
            let output = std::fs::read_to_string(scratch_fail.join(&stderr)).map(as_original);
            !matches!((snapshot, output), (Ok(snapshot), Ok(output)) if snapshot == output)
        })
        .cloned()
        .collect()
}

fn notice(current: Option<&str>, cases: usize, differing: &[String]) -> String {
    let recorded = recorded_version();
    let current = current.unwrap_or("a compiler whose version could not be read");
    let differ = if differing.is_empty() {
        "all still match".to_owned()
    } else {
        format!("{} differ: {}", differing.len(), differing.join(", "))
    };
    format!(
        "\nnotice (tests/ui.rs): the ui-tests snapshots were made with rustc {recorded} and \
         this is {current}. Every fail/ case still fails to compile and every pass/ case \
         compiles; the compiler's messages may differ from the {cases} snapshots without \
         failing the test ({differ}). To re-bless the snapshots on this compiler: \
         `TRYBUILD=overwrite cargo test --test ui`, then review the diff of ui-tests/ (the \
         command also records this version in {TOOLCHAIN_FILE}).\n"
    )
}

/// The child side of [`failures_only`]: checks the copied `fail/` cases (which have no
/// snapshot, so trybuild only checks that each fails, and writes its output beside it)
/// and the `pass/` cases. Does nothing unless started by `ui`.
#[test]
#[ignore = "run by `ui` in a child process on a compiler the snapshots were not made with"]
fn ui_without_snapshots() {
    let Some(scratch) = std::env::var_os(SCRATCH) else {
        return;
    };
    let fail = PathBuf::from(scratch).join("fail");
    let fail = fail.strip_prefix(root()).unwrap_or(&fail).to_owned();
    let cases = trybuild::TestCases::new();
    cases.compile_fail(fail.join("*.rs"));
    cases.pass("ui-tests/pass/*.rs");
}

/// The proxies `#[entity]` generates are named as a user would read them (`CounterCalls`),
/// so no compile error shows a hidden `__Name`: the snapshots are what users see.
#[test]
fn no_compile_error_shows_a_hidden_generated_name() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-tests/fail");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "stderr") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let hidden = text.match_indices("__").find(|(at, _)| {
            let next = text[at + 2..].chars().next();
            next.is_some_and(|c| c.is_ascii_uppercase())
        });
        if let Some((at, _)) = hidden {
            let line = text[..at].matches('\n').count() + 1;
            panic!("{}:{line} shows a generated `__` name", path.display());
        }
        checked += 1;
    }
    assert!(
        checked > 50,
        "only {checked} snapshots in {}",
        dir.display()
    );
}

#[test]
fn snapshots_are_compared_only_on_the_compiler_that_made_them() {
    assert_eq!(check("1.95.0", Some("1.95.0"), false), Check::Snapshots);
    let other = |current: &str| Check::FailuresOnly {
        current: Some(current.to_owned()),
    };
    assert_eq!(check("1.95.0", Some("1.97.0"), false), other("1.97.0"));
    assert_eq!(
        check("1.95.0", Some("1.97.0-nightly"), false),
        other("1.97.0-nightly")
    );
    let unknown = Check::FailuresOnly { current: None };
    assert_eq!(check("1.95.0", None, false), unknown);
    // Re-blessing writes the snapshots on whatever compiler runs.
    assert_eq!(check("1.95.0", Some("1.97.0"), true), Check::Snapshots);
}

#[test]
fn the_compiler_version_is_read_from_rustc_version() {
    let read = version_of("rustc 1.95.0 (59807616e 2026-04-14)\n");
    assert_eq!(read, Some("1.95.0"));
    let nightly = version_of("rustc 1.97.0-nightly (0123abcd 2026-06-01)");
    assert_eq!(nightly, Some("1.97.0-nightly"));
    assert_eq!(version_of("error: no such command"), None);
    assert_eq!(version_of("rustc"), None);
    // The version this test runs on is readable, and the recorded one is a version too.
    assert!(current_version().is_some());
    assert!(version_of(&format!("rustc {}", recorded_version())).is_some());
}
