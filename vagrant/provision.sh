#!/usr/bin/env bash
# Prepares a Debian 12 machine to build, test and run Spillway.
#
#   provision.sh --deps-only     Debian packages and Rust toolchains only.
#                                `cargo xtask test` (and so CI) runs this
#                                first, so the script cannot rot.
#   provision.sh [--workspace D] Also builds Spillway in D (default: the
#                                checkout this script is in), installs it
#                                with `cargo xtask install`, and starts the
#                                collector, router and RLP under systemd.
#                                The Vagrant VM is provisioned this way.
#
# Idempotent: what is there already is left alone (an installed nightly is
# not updated: the eBPF build is pinned to the LLVM it ships).
set -euo pipefail

# Debian packages, with why.
PACKAGES=(
    build-essential     # cc for crates with C parts (ring), the linker; c++ for libFuzzer
    pkg-config
    ca-certificates
    curl                # rustup's installer; the /logs and gateway tests
    git
    docker.io           # the container engine whose containers are captured
    busybox-static      # the test image (imported, nothing can be pulled)
    containerd          # the CRI runtime of the Kubernetes tests (its own instance)
    podman              # the podman tests (its Docker-compatible API)
    rsyslog             # the syslog receiver of the routes tests
    rsyslog-gnutls      # ... and its TLS driver
    fonts-dejavu-core   # the font of the benchmark report's charts
    libcap2-bin         # capsh: the collector under its unit's capabilities
    systemd             # systemd-analyze verifies the units
    python3             # the Kubernetes manifests' offline validator
    python3-venv
    ruby                # `ruby -c` checks the Vagrantfile
    shellcheck          # checks this script
)

deps_only=false
workspace="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
while [ $# -gt 0 ]; do
    case "$1" in
        --deps-only) deps_only=true ;;
        --workspace) workspace="$2"; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "provision.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "provision: $*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]} (run as root to install them)"
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Rust: stable for everything, nightly (with rust-src) for the eBPF program.
# Under sudo (Vagrant), toolchains go to the invoking user's home.
if ! command -v rustup >/dev/null && [ ! -x "$HOME/.cargo/bin/rustup" ]; then
    say "installing rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal --component rust-src
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    rustup component add rust-src --toolchain nightly
fi

if $deps_only; then
    exit 0
fi

# The whole thing: build (bpf-linker is installed by build-ebpf), install,
# start.
cd "$workspace"
say "building and installing Spillway from $workspace"
cargo xtask install
if [ -d /run/systemd/system ]; then
    systemctl enable --now docker
    systemctl enable --now spillway-router spillway-rlp spillway-collector
    say "running: systemctl status 'spillway-*'; logs: journalctl -u spillway-collector"
    say "try: spillway tail --rlp localhost:8083 --tls-ca /etc/spillway/certs/ca.pem --tls-cert /etc/spillway/certs/client.pem --tls-key /etc/spillway/certs/client-key.pem"
else
    say "systemd is not running here: start the services by hand (see README)"
fi
