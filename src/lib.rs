//! token-cleanup: batched, observable cleanup of expired verification tokens, embedded in
//! your Rust service. This facade re-exports [`token_cleanup_core`]; see its documentation.

pub use token_cleanup_core::*;
