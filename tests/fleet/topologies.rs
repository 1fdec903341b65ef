//! Fleets on production Redis topologies (issue 10): TLS with a private CA,
//! Sentinel failover, an endpoint repointed at failover, Cluster.
//!
//! Workers (the `fleet_worker` test of `fleet.rs`, run as separate OS
//! processes) build their store with [`store_from_env`] and run the
//! scenarios of this module with [`scenario`].

use myinvois_auth::{RedisTokenStore, TokenCache};

/// The store a worker uses for a topology named in `FLEET_TOPOLOGY`, if any.
pub fn store_from_env() -> Option<RedisTokenStore> {
    let _topology = std::env::var("FLEET_TOPOLOGY").ok()?;
    None
}

/// Runs a worker scenario this module owns.
pub async fn scenario(name: &str, _cache: &TokenCache, _identity: &str) {
    panic!("unknown scenario {name}")
}
