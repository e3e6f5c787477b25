//! The Buddy.Works connector: HTTP client, wire types, mapping to the unified model and the
//! `Provider` implementation.

pub mod base_url;
pub mod client;
pub mod error;
pub mod governor;
pub mod mapping;
pub mod provider;
pub mod retry;
pub mod transport;
pub mod wire;

pub use provider::BuddyProvider;
