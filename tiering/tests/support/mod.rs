//! Helpers for the object-store conformance suite.

pub mod hook;
#[cfg(feature = "s3")]
pub mod moto;
