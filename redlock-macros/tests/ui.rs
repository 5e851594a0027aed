//! Compile-time behaviour of `#[meta_redlock]`: what compiles, and the error
//! (with its span) for each mistake. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p redlock-macros --test ui` and review them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
