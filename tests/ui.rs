//! Compile-time checks of the macros and typed proxies (trybuild). The `.stderr` snapshots
//! depend on the compiler version: see `ui-tests/README.md`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui-tests/fail/*.rs");
    cases.pass("ui-tests/pass/*.rs");
}
