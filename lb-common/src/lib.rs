//! Types and pure logic shared by the XDP program (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every map key and value is defined here once (`maps`), `#[repr(C)]`, with explicit padding
//! and a compile-time size check, so both sides agree byte for byte. The flow hash is here too:
//! the agent computes exactly what the data path computes (`xlb where`). The Maglev table
//! builder needs `alloc` and lives behind the `std` feature.
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "std")]
extern crate std;

/// Declares `$t` a map key or value shared with the data path: its size is checked at compile
/// time (a change of it is a change of the pinned maps' format), and with the `user` feature it
/// is `aya::Pod` and `bytemuck::Pod`, so the agent reads and writes it as raw map bytes. Used
/// right after each type's definition.
macro_rules! map_type {
    ($t:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        #[cfg(feature = "user")]
        // SAFETY: `$t` is #[repr(C)] with only integer fields and explicit padding, so every
        // bit pattern of its size is a valid value and it has no uninitialised bytes.
        unsafe impl aya::Pod for $t {}
        #[cfg(feature = "user")]
        // SAFETY: as for `aya::Pod`; all zero is a valid value.
        unsafe impl bytemuck::Zeroable for $t {}
        #[cfg(feature = "user")]
        // SAFETY: as for `aya::Pod`.
        unsafe impl bytemuck::Pod for $t {}
    };
}

pub mod hash;
#[cfg(feature = "std")]
pub mod maglev;
pub mod maps;
pub mod stick;

pub use maps::*;
pub use stick::{StickPrefixes, addr_bytes, family_of};
