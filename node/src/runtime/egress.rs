//! A guest's HTTP requests to the world, fenced after name resolution. A host name in
//! `allowedOutboundHosts` is resolved here, every address it resolves to is checked against
//! the ranges a guest must not reach (loopback, link-local with the cloud metadata address,
//! private and shared ranges, unspecified, multicast; IPv4 inside IPv6 too), and the connection
//! goes to a checked address, never to a second resolution: a name that resolves to a public
//! address for the check and to `169.254.169.254` for the connect (DNS rebinding) reaches
//! nothing. The TLS name is the host the guest asked for. A namespace the cluster's admin
//! allows (`Namespace.spec.allowPrivateEgress`) may reach private addresses.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long a connection (resolution, TCP, TLS, HTTP handshake) and the first byte of an
/// answer may take when the guest sets no timeout; a guest cannot hold a request open forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an address is out of a guest's reach, if it is.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address (cloud metadata lives there)")
            } else if v4.is_private() {
                Some("a private address")
            } else if a == 100 && (64..128).contains(&b) {
                Some("a shared (carrier-grade NAT) address")
            } else if (a == 192 && b == 0 && v4.octets()[2] == 0) || (a == 198 && (18..20).contains(&b)) {
                Some("a reserved (protocol assignment or benchmarking) address")
            } else if v4.octets() == [168, 63, 129, 16] {
                Some("a cloud host's service address")
            } else if v4.is_unspecified() || a == 0 {
                Some("an unspecified address")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("a multicast, broadcast or reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            // IPv4 inside IPv6: compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
            // reach the IPv4 address they carry.
            let embedded = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            if segments[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return forbidden(IpAddr::V4(embedded(segments[6], segments[7])));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return forbidden(IpAddr::V4(embedded(segments[6], segments[7])));
            }
            if segments[0] == 0x2002 {
                return forbidden(IpAddr::V4(embedded(segments[1], segments[2])));
            }
            let first = segments[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private (unique local) address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

/// Whether a guest may reach `ip`; one whose namespace may reach private addresses still never
/// reaches loopback, link-local (the metadata address) or unspecified ones: the node's own
/// services and the cloud's metadata are never a tenant's to call.
fn reachable(ip: IpAddr, allow_private: bool) -> Result<(), &'static str> {
    let Some(why) = forbidden(ip) else { return Ok(()) };
    let never = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if allow_private && !never { Ok(()) } else { Err(why) }
}

/// A refusal, with what the guest's operator is told.
#[derive(Debug)]
pub struct Refusal(pub String);

static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
});

type Sent = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

/// Resolves and checks the request's host, then sends the request to a checked address. A
/// refusal (the host resolves to nothing within reach) is `Err(Ok(refusal))`.
pub async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    allow_private: bool,
) -> Result<Sent, Result<Refusal, Error>> {
    let uri = request.uri().clone();
    let host = uri.host().ok_or(Err(Error::HttpRequestUriInvalid))?.trim_matches(['[', ']']).to_owned();
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT);

    let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(connect_timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| Err(Error::ConnectionTimeout))?
            .map_err(|_| Err(Error::DnsError { rcode: None, info_code: None }))?
            .collect(),
    };
    let mut refused = None;
    let checked: Vec<SocketAddr> = candidates
        .into_iter()
        .filter(|a| match reachable(a.ip(), allow_private) {
            Ok(()) => true,
            Err(why) => {
                refused = Some(format!("{host} resolves to {} ({why})", a.ip()));
                false
            }
        })
        .collect();
    let Some(addr) = checked.first().copied() else {
        let why = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
        return Err(Ok(Refusal(why)));
    };

    let connect = async {
        let stream = TcpStream::connect(addr).await.map_err(Error::Connect)?;
        let _ = stream.set_nodelay(true);
        let io: Box<dyn Io> = if tls {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| Error::HttpRequestUriInvalid)?;
            let connector = tokio_rustls::TlsConnector::from(TLS.clone());
            Box::new(connector.connect(name, stream).await.map_err(Error::Tls)?)
        } else {
            Box::new(stream)
        };
        hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(io)).await.map_err(Error::from)
    };
    let (mut sender, connection) = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| Err(Error::ConnectionTimeout))?
        .map_err(Err)?;
    // The request line carries the path only (the host is in the Host header), as to a server.
    let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or(host);
    request
        .headers_mut()
        .entry(http::header::HOST)
        .or_insert(http::HeaderValue::from_str(&authority).map_err(|_| Err(Error::HttpRequestUriInvalid))?);
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Err(Error::HttpRequestUriInvalid))?;
    let mut connection = Box::pin(connection);
    let response = tokio::time::timeout(first_byte_timeout, async {
        let sent = sender.send_request(request);
        tokio::pin!(sent);
        // Drive the connection while waiting for the answer.
        loop {
            tokio::select! {
                response = &mut sent => return response.map_err(Error::from),
                done = &mut connection => {
                    done.map_err(Error::from)?;
                }
            }
        }
    })
    .await
    .map_err(|_| Err(Error::ConnectionReadTimeout))?
    .map_err(Err)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
        Box::new(async move { connection.await.map_err(Error::from) });
    Ok((response, io))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranges_a_guest_must_not_reach() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "192.0.0.1",
            "198.18.0.1",
            "168.63.129.16",
        ] {
            assert!(forbidden(ip.parse().unwrap()).is_some(), "{ip} must be out of reach");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1", "172.32.0.1"] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip} is public");
        }
        // A namespace allowed private egress reaches private ranges, never loopback or metadata.
        assert!(reachable("10.1.2.3".parse().unwrap(), true).is_ok());
        assert!(reachable("fd00::1".parse().unwrap(), true).is_ok());
        for ip in ["127.0.0.1", "169.254.169.254", "::1", "fe80::1", "::ffff:169.254.169.254", "0.0.0.0"] {
            assert!(reachable(ip.parse().unwrap(), true).is_err(), "{ip} stays out of reach");
        }
    }
}
