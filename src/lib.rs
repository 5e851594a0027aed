//! redlock: a typed Redlock distributed lock for Rust services.
//!
//! This facade re-exports [`redlock_core`]; see its documentation.

pub use redlock_core::*;
