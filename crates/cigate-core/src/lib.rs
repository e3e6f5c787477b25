//! The unified CI/CD model, the `Provider` trait and the cursor codec. No I/O here.

pub mod secret;

pub use secret::Secret;
