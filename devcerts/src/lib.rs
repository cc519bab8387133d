//! Development PKI for Spillway.
//!
//! Every gRPC link in Spillway uses mutual TLS, so every component needs a
//! certificate that works both as a server and as a client certificate, plus
//! the CA certificate to verify its peers. This crate makes those for local
//! development and tests:
//!
//! * [`Ca`] is an in-memory certificate authority. [`Ca::issue`] signs
//!   component certificates ([`Issued`]). A test that needs "a certificate from
//!   some other CA" simply creates a second [`Ca`] and issues from it.
//! * [`write_dir`] writes a CA certificate and one certificate/key pair per
//!   component into a directory (used by `cargo xtask certs`).
//!
//! ```
//! let ca = devcerts::Ca::new("test CA")?;
//! let router = ca.issue("router", &["localhost", "127.0.0.1"])?;
//! assert!(router.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! // A peer whose certificate must be rejected: same names, different CA.
//! let rogue = devcerts::Ca::new("rogue CA")?.issue("router", &["localhost"])?;
//! # let _ = (ca.cert_pem(), rogue);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! All keys are ECDSA P-256. Certificates are valid from yesterday (to tolerate
//! clock skew) until one year from now. None of this is meant for production.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate written by [`write_dir`].
pub const CA_CERT_FILE: &str = "ca.pem";

/// Common name of the CA created by [`write_dir`].
pub const DEV_CA_NAME: &str = "Spillway development CA";

/// How long issued certificates stay valid, counted from now.
const LEAF_VALIDITY: Duration = Duration::days(365);

/// How long the CA stays valid, counted from now (longer than any certificate it issues).
const CA_VALIDITY: Duration = Duration::days(2 * 365);

/// How far in the past certificates become valid, to tolerate clock skew.
const BACKDATE: Duration = Duration::days(1);

/// An in-memory development certificate authority.
///
/// The CA's private key never leaves memory; only its certificate is exposed
/// (see [`Ca::cert_pem`]).
pub struct Ca {
    common_name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// Creates a new self-signed CA with a fresh P-256 key.
    ///
    /// The CA may only sign end-entity certificates (path length 0).
    pub fn new(common_name: &str) -> Result<Ca> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;

        let key = new_key()?;
        let issuer = CertifiedIssuer::self_signed(params, key)
            .with_context(|| format!("self-signing CA certificate {common_name:?}"))?;
        Ok(Ca {
            common_name: common_name.to_owned(),
            issuer,
        })
    }

    /// The CA's common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The CA certificate, PEM encoded (the trust root peers verify against).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate for component `name`, signed by this CA.
    ///
    /// The certificate has common name `name`, a fresh P-256 key, extended key
    /// usages serverAuth *and* clientAuth, and one subject alternative name per
    /// entry of `sans`: an IP address SAN if the entry parses as an IPv4/IPv6
    /// address (e.g. `127.0.0.1`, `::1`), otherwise a DNS name SAN.
    pub fn issue(&self, name: &str, sans: &[&str]) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(name);
        params.subject_alt_names = sans
            .iter()
            .map(|san| parse_san(san))
            .collect::<Result<_>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;

        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing certificate for {name:?}"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("common_name", &self.common_name)
            .finish_non_exhaustive()
    }
}

/// A certificate issued by a [`Ca`], with its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate, PEM encoded.
    pub cert_pem: String,
    /// The private key, PEM encoded (PKCS#8 `PRIVATE KEY`).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    /// Shows the certificate but never the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Path of component `name`'s certificate in `dir`: `dir/NAME.pem`.
pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

/// Path of component `name`'s private key in `dir`: `dir/NAME-key.pem`.
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-key.pem"))
}

/// Whether `dir` already holds `ca.pem` and the certificate and key of every
/// component, i.e. whether [`write_dir`] would leave it alone.
pub fn is_complete(dir: &Path, components: &[&str]) -> bool {
    dir.join(CA_CERT_FILE).is_file()
        && components
            .iter()
            .all(|name| cert_path(dir, name).is_file() && key_path(dir, name).is_file())
}

/// Writes a development CA certificate and component certificates to `dir`.
///
/// Creates `dir` if needed and writes:
///
/// * `ca.pem`: the certificate of a fresh CA ([`DEV_CA_NAME`]); the CA key is
///   *not* written, it only lives in memory while this function runs;
/// * for each component `NAME`: `NAME.pem` (certificate, see [`Ca::issue`]
///   with `sans`) and `NAME-key.pem` (private key, mode 0600 on Unix).
///
/// Idempotent: if all these files already exist ([`is_complete`]), nothing is
/// touched. Otherwise everything is regenerated under a new CA, because the
/// old CA key is gone. To get fresh certificates (e.g. after they expired in a
/// year), delete the directory. `ca.pem` is removed first and written last,
/// so an interrupted run is redone on the next call.
///
/// Component names must be non-empty, must not be `ca` and must consist of
/// ASCII letters, digits, `-` and `_`.
pub fn write_dir(dir: &Path, components: &[&str], sans: &[&str]) -> Result<()> {
    for name in components {
        check_component_name(name)?;
    }
    if is_complete(dir, components) {
        return Ok(());
    }

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_path = dir.join(CA_CERT_FILE);
    match fs::remove_file(&ca_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", ca_path.display())),
    }

    let ca = Ca::new(DEV_CA_NAME)?;
    for name in components {
        let issued = ca.issue(name, sans)?;
        write_file(&cert_path(dir, name), &issued.cert_pem, 0o644)?;
        write_file(&key_path(dir, name), &issued.key_pem, 0o600)?;
    }
    write_file(&ca_path, &ca.cert_pem(), 0o644)
}

/// A fresh ECDSA P-256 key pair.
fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating ECDSA P-256 key")
}

/// A distinguished name holding only the common name `cn`.
fn common_name_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// An IP address SAN if `san` parses as an IP address, otherwise a DNS name SAN.
fn parse_san(san: &str) -> Result<SanType> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = Ia5String::try_from(san)
        .with_context(|| format!("invalid DNS subject alternative name {san:?}"))?;
    Ok(SanType::DnsName(dns))
}

/// Rejects component names that would produce odd or clashing file names.
fn check_component_name(name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || !valid_chars {
        bail!("invalid component name {name:?}: use ASCII letters, digits, '-' and '_'");
    }
    if name == "ca" {
        bail!("component name \"ca\" is reserved for {CA_CERT_FILE}");
    }
    Ok(())
}

/// Writes `contents` to `path` via a temporary file and a rename, so readers
/// never see a partial file. `mode` sets the Unix permissions of a new file.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from an interrupted run would make `create_new` fail.
    let _ = fs::remove_file(&tmp);

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;

    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::Pem;

    const SANS: &[&str] = &["localhost", "127.0.0.1", "::1"];

    /// Decodes a single PEM certificate to DER.
    fn pem_to_der(pem: &str) -> Pem {
        let (rest, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("valid PEM");
        assert!(rest.iter().all(u8::is_ascii_whitespace), "one PEM block");
        assert_eq!(pem.label, "CERTIFICATE");
        pem
    }

    fn common_name<'a>(cert: &'a X509Certificate<'_>) -> &'a str {
        cert.subject()
            .iter_common_name()
            .next()
            .expect("has CN")
            .as_str()
            .expect("CN is a string")
    }

    #[test]
    fn issued_cert_has_expected_names_and_usages() {
        let ca = Ca::new("test CA").unwrap();
        let issued = ca.issue("router", SANS).unwrap();
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

        let pem = pem_to_der(&issued.cert_pem);
        let cert = pem.parse_x509().expect("valid certificate");
        assert_eq!(common_name(&cert), "router");
        assert_eq!(cert.issuer().to_string(), "CN=test CA");

        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .expect("has SAN extension")
            .value
            .general_names;
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&Ipv4Addr::LOCALHOST.octets())));
        assert!(sans.contains(&GeneralName::IPAddress(&Ipv6Addr::LOCALHOST.octets())));
        assert_eq!(sans.len(), 3, "no DNS SAN for the IP addresses: {sans:?}");

        let eku = cert.extended_key_usage().unwrap().expect("has EKU").value;
        assert!(eku.server_auth && eku.client_auth);
        let ku = cert.key_usage().unwrap().expect("has key usage").value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        let bc = cert
            .basic_constraints()
            .unwrap()
            .expect("has basic constraints");
        assert!(!bc.value.ca);
    }

    #[test]
    fn issued_cert_validity_is_yesterday_to_one_year() {
        let ca = Ca::new("test CA").unwrap();
        let issued = ca.issue("rlp", SANS).unwrap();
        let pem = pem_to_der(&issued.cert_pem);
        let cert = pem.parse_x509().unwrap();

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let day = 24 * 60 * 60;
        assert!((now - day - 60..=now - day).contains(&not_before));
        assert!((now + 365 * day - 60..=now + 365 * day).contains(&not_after));
    }

    #[test]
    fn key_pem_matches_certificate() {
        let ca = Ca::new("test CA").unwrap();
        let issued = ca.issue("cli", SANS).unwrap();
        let key = KeyPair::from_pem(&issued.key_pem).expect("valid key PEM");
        assert!(key.is_compatible(&PKCS_ECDSA_P256_SHA256));

        let pem = pem_to_der(&issued.cert_pem);
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn ca_cert_is_a_ca() {
        let ca = Ca::new("test CA").unwrap();
        assert_eq!(ca.common_name(), "test CA");
        let pem = pem_to_der(&ca.cert_pem());
        let cert = pem.parse_x509().unwrap();
        assert_eq!(common_name(&cert), "test CA");
        let bc = cert
            .basic_constraints()
            .unwrap()
            .expect("has basic constraints");
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().expect("has key usage").value;
        assert!(ku.key_cert_sign());
        cert.verify_signature(None).expect("self-signed");
    }

    #[test]
    fn issued_cert_verifies_only_against_its_own_ca() {
        let ca = Ca::new("test CA").unwrap();
        let other = Ca::new("other CA").unwrap();
        let issued = ca.issue("collector", SANS).unwrap();

        let leaf_pem = pem_to_der(&issued.cert_pem);
        let leaf = leaf_pem.parse_x509().unwrap();
        let ca_pem = pem_to_der(&ca.cert_pem());
        let ca_cert = ca_pem.parse_x509().unwrap();
        let other_pem = pem_to_der(&other.cert_pem());
        let other_cert = other_pem.parse_x509().unwrap();

        leaf.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by its CA");
        assert!(
            leaf.verify_signature(Some(other_cert.public_key()))
                .is_err()
        );
    }

    #[test]
    fn invalid_san_is_an_error() {
        let ca = Ca::new("test CA").unwrap();
        assert!(ca.issue("router", &["bad\u{e9}name"]).is_err());
    }

    #[test]
    fn debug_does_not_leak_private_key() {
        let issued = Ca::new("test CA").unwrap().issue("cli", SANS).unwrap();
        let debug = format!("{issued:?}");
        assert!(!debug.contains("PRIVATE KEY"));
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn write_dir_writes_files_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let components = ["collector", "cli"];
        assert!(!is_complete(&dir, &components));

        write_dir(&dir, &components, SANS).unwrap();
        assert!(is_complete(&dir, &components));
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ca.pem",
                "cli-key.pem",
                "cli.pem",
                "collector-key.pem",
                "collector.pem"
            ]
        );

        let read = |file: &str| fs::read_to_string(dir.join(file)).unwrap();
        let ca_before = read("ca.pem");
        let cli_before = read("cli.pem");
        write_dir(&dir, &components, SANS).unwrap();
        assert_eq!(read("ca.pem"), ca_before, "existing files left alone");
        assert_eq!(read("cli.pem"), cli_before);

        // The written certificate chains to the written CA.
        let ca_pem = pem_to_der(&ca_before);
        let ca_cert = ca_pem.parse_x509().unwrap();
        let cli_pem = pem_to_der(&cli_before);
        let cli_cert = cli_pem.parse_x509().unwrap();
        cli_cert
            .verify_signature(Some(ca_cert.public_key()))
            .unwrap();

        // A missing file regenerates everything under a new CA.
        fs::remove_file(key_path(&dir, "collector")).unwrap();
        write_dir(&dir, &components, SANS).unwrap();
        assert!(is_complete(&dir, &components));
        assert_ne!(read("ca.pem"), ca_before);
        assert_ne!(read("cli.pem"), cli_before);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        write_dir(tmp.path(), &["router"], SANS).unwrap();
        let mode = |path: PathBuf| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(key_path(tmp.path(), "router")), 0o600);
        assert_eq!(mode(cert_path(tmp.path(), "router")) & 0o600, 0o600);
    }

    #[test]
    fn bad_component_names_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", "ca", "a/b", "../x", "a b"] {
            assert!(write_dir(tmp.path(), &[name], SANS).is_err(), "{name:?}");
        }
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
