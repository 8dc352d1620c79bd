//! Address guard: decides whether an outgoing request may reach an IP address or URL.
//!
//! Invariant: loopback, private, link-local, CGNAT, multicast and other special ranges (and
//! IPv6 forms embedding such IPv4 addresses) are refused unless an allow-listed network holds them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

use super::UpstreamError;

/// IPv4 ranges that are never reached without an allow-list entry, with a readable name.
const V4_REFUSED: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "\"this network\""),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "carrier-grade NAT"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignment"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
];

/// IPv6 ranges that are refused outright (embedded-IPv4 forms are handled separately).
const V6_REFUSED: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo tunnel"),
    (v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28), "ORCHID"),
    (v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), "ORCHIDv2"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), "segment routing"),
    (
        v6([0x64, 0xff9b, 0x1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local (private)",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// `::ffff:0:0/96`: IPv4-mapped addresses; the socket really talks to the embedded IPv4.
const V4_MAPPED: Ipv6Net = v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96);
/// `::/96`: deprecated IPv4-compatible addresses (refused whatever they embed).
const V4_COMPATIBLE: Ipv6Net = v6([0, 0, 0, 0, 0, 0, 0, 0], 96);
/// `64:ff9b::/96`: well-known NAT64 prefix; the translator talks to the embedded IPv4.
const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// `2002::/16`: 6to4; the relay talks to the IPv4 held in bits 16..48.
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// Refuses outgoing requests to special-purpose addresses unless allow-listed.
///
/// The allow-list wins over the refused ranges, so tests and internal deployments can reach
/// exactly the networks they name and nothing else.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allow: Vec<IpNet>,
}

impl AddressGuard {
    /// A guard that lets through the refused ranges only where `allow` covers them.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// The allow-listed networks.
    pub fn allow_list(&self) -> &[IpNet] {
        &self.allow
    }

    /// Accepts `ip` if it is public or allow-listed; otherwise says which range refused it.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), UpstreamError> {
        if self.is_allowed(ip) {
            return Ok(());
        }
        match refusal(ip) {
            None => Ok(()),
            Some(reason) => Err(UpstreamError::Refused { reason }),
        }
    }

    /// Accepts an http(s) URL whose host is a domain (checked later, at resolution) or a
    /// permitted IP literal. The `url` crate has already normalised decimal, octal, hex and
    /// shortened IPv4 forms into IP hosts, so they are checked here like any other literal.
    pub fn check_url(&self, url: &Url) -> Result<(), UpstreamError> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(UpstreamError::Refused {
                    reason: format!("scheme `{other}` is not allowed (only http and https)"),
                });
            }
        }
        match url.host() {
            None => Err(UpstreamError::Refused {
                reason: "url has no host".to_owned(),
            }),
            Some(Host::Domain(_)) => Ok(()),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
        }
    }

    /// Whether an allow-listed network holds `ip` (or, for an IPv4-mapped address, the IPv4
    /// address the socket will really connect to).
    fn is_allowed(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) if V4_MAPPED.contains(&v6) => Some(IpAddr::V4(embedded_low_v4(v6))),
            _ => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }
}

/// Why `ip` must not be reached, or `None` when it is an ordinary public address.
fn refusal(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => {
            v4_range(v4).map(|(net, name)| format!("address {v4} is in a {name} range ({net})"))
        }
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<(Ipv4Net, &'static str)> {
    V4_REFUSED
        .iter()
        .copied()
        .find(|(net, _)| net.contains(&ip))
}

fn v6_refusal(ip: Ipv6Addr) -> Option<String> {
    // `::` and `::1` are inside `::/96`, so the exact refused entries are consulted first.
    if let Some((net, name)) = V6_REFUSED
        .iter()
        .copied()
        .find(|(net, _)| net.contains(&ip))
    {
        return Some(format!("address {ip} is in a {name} range ({net})"));
    }
    let embedded = |v4: Ipv4Addr, form: &str| {
        v4_range(v4).map(|(net, name)| {
            format!("address {ip} embeds IPv4 {v4} ({form}), which is in a {name} range ({net})")
        })
    };
    if V4_MAPPED.contains(&ip) {
        return embedded(embedded_low_v4(ip), "IPv4-mapped");
    }
    if V4_COMPATIBLE.contains(&ip) {
        let v4 = embedded_low_v4(ip);
        return embedded(v4, "IPv4-compatible").or_else(|| {
            Some(format!(
                "address {ip} is in the deprecated IPv4-compatible range ({V4_COMPATIBLE})"
            ))
        });
    }
    if NAT64.contains(&ip) {
        return embedded(embedded_low_v4(ip), "NAT64");
    }
    if SIX_TO_FOUR.contains(&ip) {
        let s = ip.segments();
        let v4 = Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]));
        return embedded(v4, "6to4");
    }
    None
}

/// The IPv4 address held in the low 32 bits of `ip`.
fn embedded_low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    // Truncation is the point: the low 32 bits are the embedded address.
    Ipv4Addr::from(u128::from(ip) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &[&str]) -> AddressGuard {
        AddressGuard::new(allow.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn refused_url(guard: &AddressGuard, url: &str) -> String {
        let parsed = Url::parse(url).unwrap();
        match guard.check_url(&parsed) {
            Err(UpstreamError::Refused { reason }) => reason,
            other => panic!("{url} (parsed as {parsed}) should be refused, got {other:?}"),
        }
    }

    #[test]
    fn refuses_special_url_forms() {
        let g = AddressGuard::default();
        let cases = [
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/x",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:10.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[::8.8.8.8]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[64:ff9b:1::1]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://[fd12::1]/",
            "http://[fec0::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://100.127.255.254/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://192.0.0.8/",
            "http://192.0.2.1/",
            "http://198.51.100.7/",
            "http://203.0.113.9/",
            "http://0.0.0.0/",
            "http://0/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
            "http://198.18.0.1/",
            "http://198.19.255.1/",
            "http://[ff02::1]/",
            "http://[::]/",
            "http://[2001::1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://[2001:db8::1]/",
            "http://[100::1]/",
            "https://[::ffff:169.254.169.254]/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "ws://example.com/",
        ];
        assert!(cases.len() >= 25);
        for url in cases {
            refused_url(&g, url);
        }
    }

    #[test]
    fn refusal_reasons_are_readable() {
        let g = AddressGuard::default();
        assert_eq!(
            refused_url(&g, "http://10.0.0.1/"),
            "address 10.0.0.1 is in a private range (10.0.0.0/8)"
        );
        assert_eq!(
            refused_url(&g, "http://[::ffff:127.0.0.1]/"),
            "address ::ffff:127.0.0.1 embeds IPv4 127.0.0.1 (IPv4-mapped), which is in a loopback range (127.0.0.0/8)"
        );
        assert_eq!(
            refused_url(&g, "http://[2002:7f00:1::]/"),
            "address 2002:7f00:1:: embeds IPv4 127.0.0.1 (6to4), which is in a loopback range (127.0.0.0/8)"
        );
        assert_eq!(
            refused_url(&g, "http://[::8.8.8.8]/"),
            "address ::808:808 is in the deprecated IPv4-compatible range (::/96)"
        );
        assert_eq!(
            refused_url(&g, "http://[2001::1]/"),
            "address 2001::1 is in a Teredo tunnel range (2001::/32)"
        );
        assert_eq!(
            refused_url(&g, "ftp://example.com/"),
            "scheme `ftp` is not allowed (only http and https)"
        );
    }

    #[test]
    fn allows_public_addresses_and_domains() {
        let g = AddressGuard::default();
        for url in [
            "http://8.8.8.8/",
            "https://1.1.1.1:8443/x?y=1",
            "http://[2606:4700::1]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::1]/",
            "https://example.com/",
            "http://localhost/",
            "http://100.128.0.1/",
            "http://172.32.0.1/",
            "http://198.20.0.1/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(g.check_url(&parsed), Ok(()), "{url}");
        }
        for ip in ["8.8.8.8", "2606:4700::1", "2a00:1450:4001:81c::200e"] {
            assert_eq!(g.check_ip(ip.parse().unwrap()), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allow_list_wins_over_refused_ranges() {
        let g = guard(&["127.0.0.1/32"]);
        assert_eq!(
            g.check_url(&Url::parse("http://127.0.0.1:3000/").unwrap()),
            Ok(())
        );
        assert_eq!(
            g.check_url(&Url::parse("http://2130706433/").unwrap()),
            Ok(())
        );
        assert_eq!(
            g.check_url(&Url::parse("http://[::ffff:127.0.0.1]/").unwrap()),
            Ok(())
        );
        refused_url(&g, "http://127.0.0.2/");
        refused_url(&g, "http://[::1]/");
        refused_url(&g, "http://10.0.0.1/");
        refused_url(&g, "ftp://127.0.0.1/");

        let g = guard(&["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(g.check_ip("10.200.0.1".parse().unwrap()), Ok(()));
        assert_eq!(g.check_ip("fd12::1".parse().unwrap()), Ok(()));
        assert!(g.check_ip("fc00::1".parse().unwrap()).is_err());
        assert!(g.check_ip("192.168.0.1".parse().unwrap()).is_err());
    }
}
