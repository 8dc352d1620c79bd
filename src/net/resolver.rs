//! DNS resolver for the outgoing client that drops addresses the [`AddressGuard`] refuses.
//!
//! Invariant: the client only ever connects to addresses this resolver returned, so a name
//! that resolves (or re-binds) to a refused address can never be reached through it.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{AddressGuard, UpstreamError};

/// A `reqwest` resolver that looks names up with the system resolver and keeps only the
/// addresses the guard accepts; it fails with [`UpstreamError::Refused`] if none remain.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<AddressGuard>,
}

impl GuardedResolver {
    /// A resolver that filters through `guard`.
    pub fn new(guard: Arc<AddressGuard>) -> Self {
        Self { guard }
    }

    /// Resolves `host` and filters the result; shared by [`Resolve::resolve`] and tests.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, UpstreamError> {
        let found =
            tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| UpstreamError::Transport {
                    message: format!("dns lookup of {host} failed: {e}"),
                    timeout: false,
                })?;
        let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            found.partition(|addr| self.guard.check_ip(addr.ip()).is_ok());
        if !refused.is_empty() {
            tracing::debug!(%host, ?refused, "dropped refused addresses from dns answer");
        }
        if kept.is_empty() {
            if refused.is_empty() {
                return Err(UpstreamError::Transport {
                    message: format!("host {host} resolves to no addresses"),
                    timeout: false,
                });
            }
            let list: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
            return Err(UpstreamError::Refused {
                reason: format!(
                    "host {host} resolves only to refused addresses: {}",
                    list.join(", ")
                ),
            });
        }
        Ok(kept)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addrs = resolver.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_is_refused_without_allow_list() {
        let resolver = GuardedResolver::new(Arc::new(AddressGuard::default()));
        match resolver.lookup("localhost").await {
            Err(UpstreamError::Refused { reason }) => {
                assert!(
                    reason.starts_with("host localhost resolves only to refused addresses: "),
                    "{reason}"
                );
            }
            other => panic!("expected refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn allow_listed_addresses_are_kept_and_others_dropped() {
        let guard = AddressGuard::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let resolver = GuardedResolver::new(Arc::new(guard));
        let addrs = resolver.lookup("localhost").await.unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST),
            "{addrs:?}"
        );
    }

    #[tokio::test]
    async fn numeric_names_are_filtered_too() {
        let resolver = GuardedResolver::new(Arc::new(AddressGuard::default()));
        assert!(matches!(
            resolver.lookup("10.0.0.1").await,
            Err(UpstreamError::Refused { .. })
        ));
    }
}
