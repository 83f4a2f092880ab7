#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use token_cleanup_core::*;

/// The admin API for axum 0.8 (`token-cleanup-axum`).
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use token_cleanup_axum as axum;

/// The admin API for actix-web 4 (`token-cleanup-actix`).
#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub use token_cleanup_actix as actix;
