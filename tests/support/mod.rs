//! The harness, one concern per file.

mod browser;
mod client;
mod idp;
mod moto;
mod net;
mod peers;
mod stack;

pub use browser::*;
pub use client::*;
pub use idp::*;
pub use moto::*;
pub use net::*;
pub use peers::*;
pub use stack::*;
