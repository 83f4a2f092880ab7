pub use token_cleanup_core::*;
