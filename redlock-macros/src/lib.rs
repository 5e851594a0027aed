//! The `#[meta_redlock]` attribute macro of redlock (see `redlock_core::meta_redlock`).
