//! Where an account's Buddy lives, and the SSRF policy that keeps a user-typed
//! self-hosted URL from reaching the operator's own network.
//!
//! The policy is enforced twice: [`validate_base_url`] when an account is linked
//! (scheme, shape, every resolved address), and [`PolicyResolver`] at connect time,
//! installed as the HTTP pool's DNS resolver, so a name that later re-resolves to an
//! internal address (DNS rebinding) still cannot be reached. IP-literal hosts never
//! reach a resolver, so [`check_url`] re-checks them before every request.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use url::{Host, Url};

/// Buddy's US API host (accounts on app.buddy.works).
pub const US_BASE_URL: &str = "https://api.buddy.works";
/// Buddy's EU API host (accounts on eu.buddy.works).
pub const EU_BASE_URL: &str = "https://api.eu.buddy.works";

/// DNS lookups at link time must not hang the request that links an account.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The hosting location of a Buddy account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    Us,
    Eu,
    SelfHosted,
}

impl Region {
    /// The value stored in an account's non-secret context.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::SelfHosted => "self_hosted",
        }
    }

    /// Which region a base URL belongs to (anything but Buddy's cloud hosts is self-hosted).
    pub fn of(url: &Url) -> Region {
        match url.host_str() {
            Some("api.buddy.works") => Region::Us,
            Some("api.eu.buddy.works") => Region::Eu,
            _ => Region::SelfHosted,
        }
    }
}

/// Whether upstreams on private networks are allowed (`--allow-private-upstreams`).
/// The default refuses them, because end users choose the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamPolicy {
    /// Permit `http` and loopback/private/link-local addresses (simulator, tests,
    /// self-hosted Buddy on a private network).
    pub allow_private: bool,
}

impl UpstreamPolicy {
    pub const STRICT: UpstreamPolicy = UpstreamPolicy {
        allow_private: false,
    };
    pub const ALLOW_PRIVATE: UpstreamPolicy = UpstreamPolicy {
        allow_private: true,
    };

    /// Whether a connection to `ip` is permitted under this policy.
    pub fn permits(self, ip: IpAddr) -> bool {
        self.allow_private || is_public_ip(ip)
    }
}

/// Why a base URL (or a connection) was refused. Messages name the host, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("`{0}` is not a valid URL")]
    Invalid(String),
    #[error("the Buddy URL must use https (got `{0}`)")]
    Scheme(String),
    #[error("the Buddy URL must not carry a user name or password")]
    Userinfo,
    #[error("the Buddy URL must not carry a query string or fragment")]
    QueryOrFragment,
    #[error("the Buddy URL has no host")]
    NoHost,
    #[error("`{host}` resolves to {addr}, which is not a public address")]
    PrivateAddress { host: String, addr: IpAddr },
    #[error("`{0}` did not resolve to any address")]
    Unresolvable(String),
    #[error("`{0}` resolves to no public address")]
    NoPublicAddress(String),
}

/// Maps what a user picked (`us`, `eu`, or a URL such as `https://buddy.example.com/api`)
/// to a region and a parsed base URL. Only parses: call [`validate_base_url`] before
/// trusting a self-hosted URL.
pub fn resolve_base_url(region_or_url: &str) -> Result<(Region, Url), BaseUrlError> {
    let input = region_or_url.trim();
    let (region, text) = match input.to_ascii_lowercase().as_str() {
        "" | "us" => (Region::Us, US_BASE_URL),
        "eu" => (Region::Eu, EU_BASE_URL),
        _ => (Region::SelfHosted, input),
    };
    let url = Url::parse(text).map_err(|_| BaseUrlError::Invalid(text.to_owned()))?;
    let region = if region == Region::SelfHosted {
        Region::of(&url)
    } else {
        region
    };
    Ok((region, normalize(url)))
}

/// Drops a trailing slash from the path so that joining `/workspaces` gives
/// `https://host/api/workspaces`, not `.../api//workspaces`.
fn normalize(mut url: Url) -> Url {
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    url
}

/// Checks a base URL against `policy`, resolving its host and refusing it if any
/// address is not public (under the strict policy). Run when an account is linked or
/// its URL changes; the connect-time resolver repeats the address check on every new
/// connection.
pub async fn validate_base_url(url: &str, policy: UpstreamPolicy) -> Result<Url, BaseUrlError> {
    let parsed = Url::parse(url.trim()).map_err(|_| BaseUrlError::Invalid(url.to_owned()))?;
    check_url(&parsed, policy)?;
    if let Some(Host::Domain(host)) = parsed.host() {
        if !policy.allow_private {
            let port = parsed.port_or_known_default().unwrap_or(443);
            let addrs = lookup(host, port).await?;
            if let Some(bad) = addrs.iter().find(|a| !policy.permits(a.ip())) {
                return Err(BaseUrlError::PrivateAddress {
                    host: host.to_owned(),
                    addr: bad.ip(),
                });
            }
        }
    }
    Ok(normalize(parsed))
}

/// The checks that need no DNS: scheme, userinfo, query/fragment, and IP-literal hosts.
pub fn check_url(url: &Url, policy: UpstreamPolicy) -> Result<(), BaseUrlError> {
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BaseUrlError::QueryOrFragment);
    }
    check_target(url, policy)
}

/// [`check_url`] for a request URL, whose query is ours (built from the caller's
/// pairs). Called before every request, since an IP-literal host is connected to
/// without asking the resolver.
pub fn check_target(url: &Url, policy: UpstreamPolicy) -> Result<(), BaseUrlError> {
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_private => {}
        other => return Err(BaseUrlError::Scheme(other.to_owned())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BaseUrlError::Userinfo);
    }
    if url.fragment().is_some() {
        return Err(BaseUrlError::QueryOrFragment);
    }
    let literal = match url.host() {
        None => return Err(BaseUrlError::NoHost),
        Some(Host::Domain("")) => return Err(BaseUrlError::NoHost),
        Some(Host::Domain(_)) => None,
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
    };
    if let Some(ip) = literal {
        if !policy.permits(ip) {
            return Err(BaseUrlError::PrivateAddress {
                host: ip.to_string(),
                addr: ip,
            });
        }
    }
    Ok(())
}

async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, BaseUrlError> {
    let found = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| BaseUrlError::Unresolvable(host.to_owned()))?
        .map_err(|_| BaseUrlError::Unresolvable(host.to_owned()))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(BaseUrlError::Unresolvable(host.to_owned()));
    }
    Ok(addrs)
}

/// Connect-time enforcement: resolves with the system resolver and keeps only the
/// addresses the policy permits, failing when none remain. The resolver of the shared
/// HTTP pool's connector (a hyper `Service<Name>`), and of the OAuth client (reqwest's
/// `Resolve`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyResolver {
    policy: UpstreamPolicy,
}

impl PolicyResolver {
    pub fn new(policy: UpstreamPolicy) -> Self {
        Self { policy }
    }

    /// Resolves `host` and filters by the policy; the core of both resolver interfaces.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<SocketAddr>, BaseUrlError> {
        // Port 0: both connectors substitute the URL's port.
        let addrs = lookup(host, 0).await?;
        let policy = self.policy;
        let permitted: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| policy.permits(a.ip()))
            .collect();
        if permitted.is_empty() {
            return Err(BaseUrlError::NoPublicAddress(host.to_owned()));
        }
        Ok(permitted)
    }
}

/// The resolver as hyper's connector calls it: every permitted address of the name.
impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for PolicyResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = BaseUrlError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BaseUrlError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let resolver = *self;
        Box::pin(async move {
            resolver
                .resolve_host(name.as_str())
                .await
                .map(Vec::into_iter)
        })
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = *self;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.resolve_host(&host).await?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// True for globally routable unicast addresses: everything that is not loopback,
/// private, shared (CGNAT), link-local (incl. cloud metadata), unspecified, multicast,
/// broadcast, reserved, documentation or benchmarking space, in either family, with
/// IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4) judged as IPv4.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network", incl. unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, incl. 169.254.169.254 metadata
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // TEST-NET-1
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // TEST-NET-2
        ([203, 0, 113, 0], 24),  // TEST-NET-3
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, incl. 255.255.255.255 broadcast
    ];
    !BLOCKED.iter().any(|&(net, p)| in_v4(ip, net, p))
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    // IPv4-mapped ::ffff:a.b.c.d reaches the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96 reaches the embedded IPv4 address.
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return is_public_v4(Ipv4Addr::from(bits as u32));
    }
    // 6to4 2002:a.b.c.d::/48 tunnels to the embedded IPv4 address.
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return is_public_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Only global unicast 2000::/3 is routable; this excludes ::, ::1, the deprecated
    // IPv4-compatible ::/96, fc00::/7, fe80::/10, fec0::/10, ff00::/8, 100::/64, 64:ff9b:1::/48.
    if !in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return false;
    }
    const BLOCKED: &[(Ipv6Addr, u32)] = &[
        // IETF protocol assignments, incl. Teredo 2001::/32 (tunnels to arbitrary IPv4)
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
        (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation (RFC 9637)
    ];
    !BLOCKED.iter().any(|&(net, p)| in_v6(ip, net, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn refuses_every_non_public_ipv4_range() {
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.5.6.7",
            "169.254.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public_ip(v4(bad)), "{bad} must be refused");
        }
    }

    #[test]
    fn accepts_public_ipv4_next_to_blocked_ranges() {
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "52.1.2.3",
        ] {
            assert!(is_public_ip(v4(good)), "{good} must be accepted");
        }
    }

    #[test]
    fn refuses_every_non_public_ipv6_range() {
        for bad in [
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.1.1",
            "::ffff:100.64.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ] {
            assert!(!is_public_ip(v6(bad)), "{bad} must be refused");
        }
    }

    #[test]
    fn accepts_public_ipv6() {
        for good in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public_ip(v6(good)), "{good} must be accepted");
        }
    }

    #[test]
    fn allow_private_permits_everything() {
        let p = UpstreamPolicy::ALLOW_PRIVATE;
        assert!(p.permits(v4("127.0.0.1")));
        assert!(p.permits(v6("::1")));
        assert!(!UpstreamPolicy::default().permits(v4("127.0.0.1")));
    }

    #[test]
    fn resolves_regions_and_self_hosted_urls() {
        let (r, u) = resolve_base_url("us").unwrap();
        assert_eq!((r, u.as_str()), (Region::Us, "https://api.buddy.works/"));
        let (r, u) = resolve_base_url("EU").unwrap();
        assert_eq!((r, u.as_str()), (Region::Eu, "https://api.eu.buddy.works/"));
        let (r, u) = resolve_base_url("https://buddy.example.com/api/").unwrap();
        assert_eq!(r, Region::SelfHosted);
        assert_eq!(u.as_str(), "https://buddy.example.com/api");
        let (r, _) = resolve_base_url("https://api.eu.buddy.works").unwrap();
        assert_eq!(r, Region::Eu);
        assert!(resolve_base_url("not a url").is_err());
    }

    #[test]
    fn url_shape_checks() {
        let strict = UpstreamPolicy::STRICT;
        let check = |s: &str, p| check_url(&Url::parse(s).unwrap(), p);
        assert!(check("https://api.buddy.works", strict).is_ok());
        assert_eq!(
            check("http://api.buddy.works", strict),
            Err(BaseUrlError::Scheme("http".into()))
        );
        assert!(check("http://api.buddy.works", UpstreamPolicy::ALLOW_PRIVATE).is_ok());
        assert!(check("ftp://x.example", UpstreamPolicy::ALLOW_PRIVATE).is_err());
        assert_eq!(
            check("https://u:p@api.buddy.works", strict),
            Err(BaseUrlError::Userinfo)
        );
        assert_eq!(
            check("https://api.buddy.works/?a=1", strict),
            Err(BaseUrlError::QueryOrFragment)
        );
        assert_eq!(
            check("https://api.buddy.works/#x", strict),
            Err(BaseUrlError::QueryOrFragment)
        );
        for literal in [
            "https://127.0.0.1/",
            "https://169.254.169.254/latest",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://2130706433/", // decimal form of 127.0.0.1
            "https://0x7f.1/",
        ] {
            assert!(
                matches!(
                    check(literal, strict),
                    Err(BaseUrlError::PrivateAddress { .. })
                ),
                "{literal}"
            );
        }
        assert!(check("https://127.0.0.1/", UpstreamPolicy::ALLOW_PRIVATE).is_ok());
        assert!(check("https://8.8.8.8/", strict).is_ok());
    }

    #[tokio::test]
    async fn validate_refuses_localhost_and_literals_by_default() {
        let err = validate_base_url("https://localhost/api", UpstreamPolicy::STRICT)
            .await
            .unwrap_err();
        assert!(matches!(err, BaseUrlError::PrivateAddress { .. }), "{err}");
        assert!(
            validate_base_url("https://10.1.2.3", UpstreamPolicy::STRICT)
                .await
                .is_err()
        );
        let ok = validate_base_url("http://localhost:8080/api/", UpstreamPolicy::ALLOW_PRIVATE)
            .await
            .unwrap();
        assert_eq!(ok.as_str(), "http://localhost:8080/api");
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_under_default_policy() {
        use reqwest::dns::Resolve;
        let resolver = PolicyResolver::new(UpstreamPolicy::default());
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match resolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(err.to_string().contains("no public address"), "{err}");

        let open = PolicyResolver::new(UpstreamPolicy::ALLOW_PRIVATE);
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = open.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()));
    }
}
