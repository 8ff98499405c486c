//! Compile-time checks of the macros and typed proxies (trybuild). The `.stderr` snapshots
//! depend on the compiler version: see `ui-tests/README.md`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui-tests/fail/*.rs");
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
