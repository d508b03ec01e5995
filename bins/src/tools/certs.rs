//! `minipay certs`: a development certificate authority and the keys and
//! certificates of every node, for mutual TLS on one machine.
//!
//! Each certificate names its *role* as a DNS subject alternative name
//! (`gateway.minipay.internal`, `bank.minipay.internal`,
//! `client.minipay.internal`); servers check a peer's role from it (see
//! [`crate::rpc::tls::peer_role`]). Server certificates are also valid for
//! `localhost` and `127.0.0.1`. Private keys are written with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

use crate::rpc::tls::Role;

/// Writes `ca.pem`, `gateway.pem/.key`, `<bank>.pem/.key` for each bank and
/// `client.pem/.key` into `out`. Returns the files written.
pub fn generate(out: &Path, banks: &[String]) -> anyhow::Result<Vec<String>> {
    for bank in banks {
        crate::rpc::setup::bank_name(bank)?;
    }
    if banks.is_empty() {
        bail!("--banks needs at least one bank name");
    }
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let ca_key = KeyPair::generate().context("generate CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "minipay development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut written = vec![write_file(out, "ca.pem", ca_cert.pem().as_bytes(), false)?];
    written.extend(leaf(out, "gateway", Role::Gateway, &issuer)?);
    for bank in banks {
        written.extend(leaf(out, bank, Role::Bank, &issuer)?);
    }
    written.extend(leaf(out, "client", Role::Client, &issuer)?);
    Ok(written)
}

fn set_validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2025, 1, 1);
    params.not_after = date_time_ymd(2036, 1, 1);
}

fn leaf(
    out: &Path,
    name: &str,
    role: Role,
    issuer: &Issuer<'_, KeyPair>,
) -> anyhow::Result<Vec<String>> {
    let mut names = vec![role.subject_name().to_owned()];
    if role != Role::Client {
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if role != Role::Client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    set_validity(&mut params);
    let key = KeyPair::generate().with_context(|| format!("generate key for {name}"))?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("sign certificate for {name}"))?;
    Ok(vec![
        write_file(out, &format!("{name}.pem"), cert.pem().as_bytes(), false)?,
        write_file(
            out,
            &format!("{name}.key"),
            key.serialize_pem().as_bytes(),
            true,
        )?,
    ])
}

fn write_file(dir: &Path, name: &str, bytes: &[u8], secret: bool) -> anyhow::Result<String> {
    let path = dir.join(name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    if secret {
        // An existing file keeps its mode on open; make sure it is private.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))?;
    file.sync_all()?;
    Ok(path.display().to_string())
}
