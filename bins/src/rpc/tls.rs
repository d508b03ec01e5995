//! Mutual TLS for every minipay connection (rustls with the ring provider,
//! through tonic), and roles read from peer certificates.
//!
//! A TLS directory holds `ca.pem` and `<name>.pem` / `<name>.key` per node.
//! Servers require a client certificate issued by the CA; what a peer may do
//! is then decided by its role, a DNS name in its certificate.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a server waits for a TLS handshake to finish.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a certificate's holder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Bank,
    Client,
}

impl Role {
    /// The DNS subject alternative name that marks the role.
    pub fn subject_name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway.minipay.internal",
            Role::Bank => "bank.minipay.internal",
            Role::Client => "client.minipay.internal",
        }
    }

    pub fn all() -> [Role; 3] {
        [Role::Gateway, Role::Bank, Role::Client]
    }
}

/// Installs the ring crypto provider for rustls (once per process).
pub fn install_crypto_provider() {
    // Err means one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A directory of PEM files.
#[derive(Clone, Debug)]
pub struct TlsDir {
    dir: PathBuf,
}

impl TlsDir {
    pub fn new(dir: &Path) -> TlsDir {
        TlsDir {
            dir: dir.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "read {} (generate certificates with `minipay certs`)",
                path.display()
            )
        })
    }

    fn ca(&self) -> anyhow::Result<Certificate> {
        Ok(Certificate::from_pem(self.read("ca.pem")?))
    }

    fn identity(&self, name: &str) -> anyhow::Result<Identity> {
        Ok(Identity::from_pem(
            self.read(&format!("{name}.pem"))?,
            self.read(&format!("{name}.key"))?,
        ))
    }

    /// Server side: present `name`'s certificate, require a client
    /// certificate from the CA.
    /// A connection that has not finished its handshake in
    /// [`HANDSHAKE_TIMEOUT`] is closed, so idle sockets cannot hold the
    /// server's `connections_max` places.
    pub fn server(&self, name: &str) -> anyhow::Result<ServerTlsConfig> {
        Ok(ServerTlsConfig::new()
            .identity(self.identity(name)?)
            .client_ca_root(self.ca()?)
            .timeout(HANDSHAKE_TIMEOUT))
    }

    /// Client side: present `name`'s certificate, trust only the CA.
    pub fn client(&self, name: &str) -> anyhow::Result<ClientTlsConfig> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(self.ca()?)
            .identity(self.identity(name)?)
            .domain_name("localhost"))
    }
}

/// The role named by a (CA-verified) peer certificate chain, if any.
pub fn peer_role(certs: &[CertificateDer<'static>]) -> Option<Role> {
    let leaf = certs.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    Role::all().into_iter().find(|role| {
        let name = ServerName::try_from(role.subject_name()).expect("role names are DNS names");
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    })
}

/// An interceptor admitting only peers whose certificate has `role`.
pub fn require_role(
    role: Role,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        let found = request.peer_certs().and_then(|certs| peer_role(&certs));
        match found {
            Some(found) if found == role => Ok(request),
            Some(found) => Err(tonic::Status::permission_denied(format!(
                "this service accepts only the {role:?} certificate; the peer presented a {found:?} certificate"
            ))),
            None => Err(tonic::Status::unauthenticated(
                "no client certificate with a minipay role",
            )),
        }
    }
}
