#!/usr/bin/env bash
# Installs the Debian 12 packages that wpm's build, tests and benchmarks need.
# Idempotent: only missing packages are installed; a second run does nothing.
set -euo pipefail

PACKAGES=(
  # build
  cmake g++ make ninja-build pkg-config git
  # libraries found by find_package / pkg_check_modules
  libzmq3-dev cppzmq-dev capnproto libcapnp-dev librocksdb-dev
  prometheus-cpp-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libtomlplusplus-dev libsystemd-dev
  libssl-dev libpam0g-dev libcap-ng-dev libseccomp-dev libarchive-dev libzstd-dev
  # tests: processes, namespaces, networking (nft blocks a port in a test namespace), tmpfs
  procps iproute2 nftables util-linux python3 curl tar zstd
  # the monitoring test: a real Prometheus server and promtool (deploy/prometheus.yml)
  prometheus
)

# The PAM service of wpm logins (deploy/pam/wpm), installed when absent or
# different; root only (a non-root build skips it and says so).
install_pam_service() {
  local src
  src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pam/wpm"
  if cmp -s "$src" /etc/pam.d/wpm; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: not root: /etc/pam.d/wpm not installed (wpm login needs it: sudo install -m 0644 $src /etc/pam.d/wpm)"
    return 0
  fi
  install -D -m 0644 "$src" /etc/pam.d/wpm
  echo "install-deps: installed /etc/pam.d/wpm"
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  install_pam_service
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_pam_service
