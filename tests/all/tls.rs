//! A local https identity-service stand-in: a throwaway CA (rcgen), a
//! certificate for 127.0.0.1 signed by it, and an in-process hyper server
//! behind tokio-rustls that answers every request with one redirect.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Response;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// A CA made for one test, and a server certificate for `127.0.0.1` and
/// `localhost` signed by it.
pub struct TestCa {
    pub ca_pem: String,
    pub server_cert_der: rustls::pki_types::CertificateDer<'static>,
    pub server_key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        Self::for_names(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
    }

    /// A CA, and a server certificate for `names` signed by it.
    pub fn for_names(names: Vec<String>) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: with the leaf's (rcgen's default for both),
        // OpenSSL takes the leaf for self-signed.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "myinvois-auth test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(names)
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        TestCa {
            ca_pem: ca.pem(),
            server_cert_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }

    /// A server configuration with this certificate, on an explicitly chosen
    /// crypto provider (the test binaries link more than one).
    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert_der.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into()),
            )
            .unwrap()
    }
}

/// An https identity service that answers every request with `status` and
/// `Location: target`.
pub struct TlsIdentity {
    uri: String,
    ca: TestCa,
    requests: Arc<AtomicUsize>,
}

impl TlsIdentity {
    pub async fn redirecting(status: u16, target: &str) -> Self {
        Self::redirecting_with(TestCa::new(), status, target).await
    }

    /// The same, with the certificate of `ca`.
    pub async fn redirecting_with(ca: TestCa, status: u16, target: &str) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let (counted, target) = (Arc::clone(&requests), target.to_owned());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, counted, target) =
                    (acceptor.clone(), Arc::clone(&counted), target.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_request| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let response = Response::builder()
                            .status(status)
                            .header("location", target.as_str())
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsIdentity { uri, ca, requests }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Requests the stand-in has answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// A client builder that trusts only the stand-in's CA, and follows
    /// redirects as reqwest does by default (the cache must switch that off).
    pub fn trusting_client(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.ca.ca_pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::limited(10))
    }
}
