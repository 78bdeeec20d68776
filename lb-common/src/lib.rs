//! Types and pure logic shared by the XDP program (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every map key and value is defined here once, `#[repr(C)]`, with explicit padding and a
//! compile-time size check, so both sides agree byte for byte. The flow hash is here too: the
//! agent computes exactly what the data path computes (`xlb where`). The Maglev table builder
//! needs `alloc` and lives behind the `std` feature.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub mod hash;
#[cfg(feature = "std")]
pub mod maglev;
pub mod maps;
pub mod stick;

pub use maps::*;
pub use stick::{StickPrefixes, addr_bytes, family_of};
