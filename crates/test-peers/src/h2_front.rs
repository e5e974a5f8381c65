//! An https front that speaks HTTP/2 to clients, with a small
//! `SETTINGS_MAX_CONCURRENT_STREAMS`, and HTTP/1.1 to a plain MCP server
//! behind it: a hosted server as a CDN or a load balancer serves it (they
//! allow 100 to 256 streams per connection). A client that multiplexes
//! every user's session over one connection runs out of streams there:
//! each 2025 session's GET stream holds one for as long as it lives.
//!
//! Its certificate comes from a CA made for the run, written to
//! [`H2Front::ca_file`] for the client under test to trust
//! (`SSL_CERT_FILE`). HTTP/1.1 is offered too, after h2.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::body::Incoming;
use hyper::{Request, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

pub struct H2Front {
    addr: SocketAddr,
    stop: CancellationToken,
    ca: tempfile::NamedTempFile,
    h2_connections: Arc<AtomicUsize>,
}

impl H2Front {
    /// Listens on a free loopback port and forwards every request to
    /// `backend` over HTTP/1.1, allowing `max_streams` concurrent streams
    /// on each HTTP/2 connection.
    pub async fn start(backend: SocketAddr, max_streams: u32) -> Self {
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (tls, ca) = certificates();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the h2 front");
        let addr = listener.local_addr().expect("its address");
        let stop = CancellationToken::new();
        let h2_connections = Arc::new(AtomicUsize::new(0));
        let (counter, shutdown) = (h2_connections.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                    () = shutdown.cancelled() => return,
                };
                let (acceptor, client, counter) =
                    (acceptor.clone(), client.clone(), counter.clone());
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let forward = hyper::service::service_fn(move |request| {
                        forward(client.clone(), backend, request)
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(max_streams);
                    let connection = builder.serve_connection(TokioIo::new(tls), forward);
                    tokio::select! {
                        _ = connection => {}
                        () = shutdown.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            stop,
            ca,
            h2_connections,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM file of the CA that issued the front's certificate.
    pub fn ca_file(&self) -> &Path {
        self.ca.path()
    }

    /// Connections on which a client chose HTTP/2.
    pub fn h2_connections(&self) -> usize {
        self.h2_connections.load(Ordering::SeqCst)
    }
}

impl Drop for H2Front {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The request, sent on to `backend` over HTTP/1.1; its answer streams
/// back as it comes (SSE included).
async fn forward(
    client: Client<HttpConnector, Incoming>,
    backend: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    *request.uri_mut() = format!("http://{backend}{path}")
        .parse()
        .expect("a backend URI");
    *request.version_mut() = Version::HTTP_11;
    request.headers_mut().remove(hyper::header::HOST);
    client.request(request).await
}

/// A CA for the run and a certificate for 127.0.0.1 that it signed: the
/// front's TLS config (ALPN h2, then http/1.1) and the CA's PEM file.
fn certificates() -> (ServerConfig, tempfile::NamedTempFile) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a CA key"))
        .expect("a CA certificate");
    let key = KeyPair::generate().expect("a server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("a server certificate");
    let mut tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("a TLS server config");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut file = tempfile::NamedTempFile::new().expect("a temp file");
    std::io::Write::write_all(&mut file, ca.pem().as_bytes()).expect("write the CA");
    (tls, file)
}
