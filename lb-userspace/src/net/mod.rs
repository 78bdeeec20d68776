//! The operating system's glue: neighbours, links and the VIP routes through netlink, network
//! namespaces.

pub mod link;
pub mod neigh;
pub mod netns;
pub mod route;
