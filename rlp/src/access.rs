//! Who may read from the RLP gateway.
//!
//! Loggregator's rlp-gateway checks every request's token with UAA. Here
//! the check is pluggable ([`Authenticate`]); two checks come with the RLP,
//! and a request passes when any configured one accepts it:
//!
//! - [`ClientCertificate`]: the TLS connection presented a client
//!   certificate that the gateway's client CA verified during the handshake
//!   (a certificate that does not verify fails the handshake itself).
//! - [`StaticTokens`]: the `Authorization` header carries one of the tokens
//!   of `--gateway-token-file`, as `<token>` or `Bearer <token>`, compared in
//!   constant time.

use std::path::Path;

use axum::http::{HeaderMap, header};
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

/// What the gateway knows of a request's connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer {
    /// The client presented a certificate that the client CA verified.
    pub client_certificate: bool,
}

/// A check of one request.
pub trait Authenticate: Send + Sync + 'static {
    /// Whether the request (its headers, its connection) may read.
    fn allows(&self, headers: &HeaderMap, peer: &Peer) -> bool;
}

/// Requests over a connection with a verified client certificate.
pub struct ClientCertificate;

impl Authenticate for ClientCertificate {
    fn allows(&self, _: &HeaderMap, peer: &Peer) -> bool {
        peer.client_certificate
    }
}

/// Requests whose `Authorization` header holds one of a fixed set of tokens.
pub struct StaticTokens {
    /// SHA-256 of each token: compared in constant time, whatever the length.
    digests: Vec<[u8; 32]>,
}

/// Largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

impl StaticTokens {
    /// Tokens one per line; blank lines and lines starting with `#` are
    /// skipped. Only a regular file of at most 64 KiB with at least one token
    /// is accepted; the error names the flag and the file.
    pub fn from_file(flag: &str, path: &Path) -> Result<Self, String> {
        let text = read_small_file(flag, path, MAX_TOKEN_FILE_BYTES)?;
        let text = String::from_utf8(text)
            .map_err(|_| format!("{flag} {} is not UTF-8 text", path.display()))?;
        let tokens = StaticTokens::new(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        );
        if tokens.digests.is_empty() {
            return Err(format!("{flag} {} holds no token", path.display()));
        }
        Ok(tokens)
    }

    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        StaticTokens {
            digests: tokens.into_iter().map(sha256).collect(),
        }
    }
}

/// Shows how many tokens, never their digests.
impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticTokens({} tokens)", self.digests.len())
    }
}

fn sha256(s: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, s.as_bytes()).as_ref());
    out
}

impl Authenticate for StaticTokens {
    fn allows(&self, headers: &HeaderMap, _: &Peer) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let value = value.trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => value,
        };
        let presented = sha256(token);
        // Every configured token is compared, so timing says nothing of
        // which one (if any) matched.
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |any, d| any | d.ct_eq(&presented))
            .into()
    }
}

/// Passes when any of its checks does.
pub struct AnyOf(pub Vec<Box<dyn Authenticate>>);

impl Authenticate for AnyOf {
    fn allows(&self, headers: &HeaderMap, peer: &Peer) -> bool {
        self.0.iter().any(|c| c.allows(headers, peer))
    }
}

/// Reads `path` if it is a regular file of at most `max` bytes (not a FIFO
/// or a device that would block or never end).
pub fn read_small_file(flag: &str, path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {flag} {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{flag} {shown} is not a regular file"));
    }
    if meta.len() > max {
        return Err(format!("{flag} {shown} is larger than {max} bytes"));
    }
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {flag} {shown}: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{flag} {shown} is larger than {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn tokens_pass_bare_or_as_bearer_and_nothing_else_does() {
        let t = StaticTokens::new(["s3cret", "other"]);
        let peer = Peer::default();
        assert!(t.allows(&with_auth("s3cret"), &peer));
        assert!(t.allows(&with_auth("Bearer s3cret"), &peer));
        assert!(t.allows(&with_auth("bearer other"), &peer));
        assert!(!t.allows(&with_auth("Bearer s3cre"), &peer));
        assert!(!t.allows(&with_auth("s3cret2"), &peer));
        assert!(!t.allows(&with_auth("Basic s3cret"), &peer));
        assert!(!t.allows(&HeaderMap::new(), &peer));
    }

    #[test]
    fn any_of_checks_certificates_and_tokens() {
        let check = AnyOf(vec![
            Box::new(ClientCertificate),
            Box::new(StaticTokens::new(["t"])),
        ]);
        let cert = Peer {
            client_certificate: true,
        };
        assert!(check.allows(&HeaderMap::new(), &cert));
        assert!(check.allows(&with_auth("t"), &Peer::default()));
        assert!(!check.allows(&HeaderMap::new(), &Peer::default()));
    }

    #[test]
    fn token_files_must_be_small_regular_files_with_a_token() {
        let dir = std::env::temp_dir().join(format!("spillway-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "# readers\n\n  abc  \n").unwrap();
        let t = StaticTokens::from_file("--gateway-token-file", &file).unwrap();
        assert!(t.allows(&with_auth("abc"), &Peer::default()));
        std::fs::write(&file, "# none\n").unwrap();
        assert!(
            StaticTokens::from_file("--f", &file)
                .unwrap_err()
                .contains("no token")
        );
        std::fs::write(&file, vec![b'a'; 70_000]).unwrap();
        assert!(
            StaticTokens::from_file("--f", &file)
                .unwrap_err()
                .contains("larger")
        );
        let e = StaticTokens::from_file("--f", &dir).err().unwrap();
        assert!(e.contains("not a regular file"), "{e}");
        let e = StaticTokens::from_file("--f", Path::new("/dev/zero"))
            .err()
            .unwrap();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
