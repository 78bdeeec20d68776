//! The operating system's glue: neighbours and links through netlink, network namespaces.

pub mod link;
pub mod neigh;
pub mod netns;
