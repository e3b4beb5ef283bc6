//! Connecting Strata's own clients (`strata query`, the dashboard) to a
//! server, over TLS when the endpoint is `https://`.
//!
//! The usual way to give a test or in-house server TLS is a self-signed
//! certificate (`openssl req -x509`), which OpenSSL marks as a CA
//! (`basicConstraints CA:TRUE`). webpki, which rustls uses, refuses a CA
//! certificate as a server's own certificate, where ADBC, curl and browsers
//! accept it once told to trust it. So a certificate given with `--ca` is
//! trusted as a CA (for servers whose certificates it signed) and also as
//! the server's own certificate when the server presents exactly it, for
//! the host names it names. Connection errors say what failed (the
//! certificate's issuer, its names, plain text against TLS) instead of
//! tonic's bare "transport error".

use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::debug;

use crate::server::install_crypto_provider;

/// A channel to `endpoint` (`http://host:port` or `https://host:port`),
/// trusting `ca` (PEM) for https, else the system's roots.
pub(crate) async fn connect(endpoint: &str, ca: Option<&Path>) -> Result<Channel, String> {
    let uri: Uri = endpoint.parse().map_err(|e| {
        format!("endpoint {endpoint}: {e}; write http://host:port or https://host:port")
    })?;
    if uri.scheme_str() != Some("https") {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("endpoint {endpoint}: {e}"))?
            .connect()
            .await
            .map_err(|e| connect_error(endpoint, &e))?;
        return Ok(channel);
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("endpoint {endpoint} names no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.clone())
        .map_err(|e| format!("endpoint {endpoint}: `{host}` is not a host name: {e}"))?;
    let tls = TlsConnector::from(Arc::new(client_config(ca)?));
    // tonic speaks HTTP/2 over the TLS stream this connector makes.
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, name, address) = (tls.clone(), name.clone(), (host.clone(), port));
        async move {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!(
        "http://{}",
        uri.authority().map_or("", |a| a.as_str())
    ))
    .map_err(|e| format!("endpoint {endpoint}: {e}"))?
    .connect_with_connector(connector)
    .await
    .map_err(|e| connect_error(endpoint, &e))
}

fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .ok_or("no TLS crypto provider is installed")?;
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("CA file {}: not PEM certificates: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "CA file {}: no certificate in it (expected `-----BEGIN CERTIFICATE-----`)",
                    path.display()
                ));
            }
            for cert in &certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
            pinned = certs;
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // Unusable system certificates are skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("TLS: {e}; pass the server's CA certificate with --ca"))?;
    let verifier = TrustedCertVerifier {
        webpki,
        pinned,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// webpki's verification, plus: a server presenting exactly a certificate
/// the user gave is trusted when webpki's only objection is that it is a CA
/// certificate, and it names the host connected to.
#[derive(Debug)]
struct TrustedCertVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for TrustedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // rustls passes webpki's CaUsedAsEndEntity on as "other".
            Err(e)
                if format!("{e:?}").contains("CaUsedAsEndEntity")
                    && self
                        .pinned
                        .iter()
                        .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
                    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
                })?;
                cert.verify_is_valid_for_subject_name(server_name)
                    .map_err(|_| {
                        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                    })?;
                debug!("the server presents the self-signed certificate given with --ca: trusted");
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What failed, from the deepest cause up, with what to do about it.
fn connect_error(endpoint: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        next = err.source();
    }
    let all = causes.join(": ");
    let hint = if all.contains("CaUsedAsEndEntity") {
        "the server presents a self-signed CA certificate (as `openssl req -x509` makes) that this client was not given: pass that certificate (PEM) with --ca"
    } else if all.contains("UnknownIssuer") {
        "the server's certificate is not signed by a CA this client trusts: pass the CA certificate (PEM) with --ca"
    } else if all.contains("NotValidForName") {
        "the server's certificate is not issued for this host name: connect with a name or IP address the certificate lists"
    } else if all.contains("Expired") || all.contains("NotValidYet") {
        "the server's certificate is outside its validity period: renew it"
    } else if all.contains("InvalidContentType") || all.contains("corrupt message") {
        "the server does not speak TLS there: use http:// instead of https://"
    } else if all.contains("Connection refused") {
        "nothing listens there: is `strata serve` (or `strata run`) running?"
    } else if all.contains("frame") || all.contains("h2 protocol error") {
        "the server may expect TLS: use https:// and --ca"
    } else {
        "check the address, and that `strata serve` (or `strata run`) is running there"
    };
    format!("cannot connect to {endpoint}: {all}; {hint}")
}
