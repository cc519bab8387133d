//! `cargo xtask certs`: development CA and certificates for mutual TLS.

use std::path::PathBuf;

use crate::util;

/// Components that get a certificate; each is both a gRPC server and client.
pub const COMPONENTS: &[&str] = &["collector", "router", "rlp", "cli"];

/// Subject alternative names of every component certificate (local development).
pub const SANS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Default certificate directory: `<workspace root>/.dev/certs`.
pub fn default_dir() -> PathBuf {
    util::workspace_root().join(".dev").join("certs")
}

/// Arguments of `cargo xtask certs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for ca.pem, NAME.pem and NAME-key.pem.
    #[arg(long, value_name = "DIR", default_value_os_t = default_dir())]
    pub dir: PathBuf,
}

/// Writes the certificates unless they are all present already, then prints
/// where they are.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = &args.dir;
    let existed = devcerts::is_complete(dir, COMPONENTS);
    devcerts::write_dir(dir, COMPONENTS, SANS)?;

    if existed {
        println!(
            "Certificates already present in {} (delete the directory to regenerate)",
            dir.display()
        );
    } else {
        println!("Wrote certificates to {}", dir.display());
    }
    println!("  CA: {}", dir.join(devcerts::CA_CERT_FILE).display());
    for name in COMPONENTS {
        println!(
            "  {name}: {} {}",
            devcerts::cert_path(dir, name).display(),
            devcerts::key_path(dir, name).display()
        );
    }
    Ok(())
}
