//! Compile-fail tests of `network!`'s error messages, and a few programs that must compile.
//!
//! Regenerate the `.stderr` snapshots with `TRYBUILD=overwrite cargo test --test ui`, then read
//! every one: each should name the problem in plain words and point at the offending token.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}
