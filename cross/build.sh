#!/usr/bin/env bash
# Cross-builds a static `aq` for ARM gateways from an x86_64 Debian 12 machine, without Docker.
#
#   cross/build.sh aarch64            # -> dist/aq-aarch64-linux (static, stripped)
#   cross/build.sh armv7              # -> dist/aq-armv7-linux
#   cross/build.sh aarch64 --smoke    # then run the smoke test under qemu-user
#
# How: Debian's rustc-web compiler with Debian's ARM standard library (the two must be the very
# same Debian version; checked below), the GNU cross linker, and glibc linked statically
# (+crt-static). rustup's cargo drives Debian's rustc via RUSTC. Users with Docker can use
# cross-rs and the repository's Cross.toml instead.
#
# Installs what it needs with apt (as root). Environment: CARGO_TARGET_DIR (cross builds go to
# its cross/ subfolder, apart from host builds, whose compiler differs), AQ_DIST (default
# dist/), AQ_HOST_BIN (the host `aq` the smoke test compares against; built if unset).
#
# AQ_CROSS_STD=pool: when apt cannot install the target std because the mirror's index for
# that architecture is broken (Debian's armhf security index was mid-sync for days in Nov
# 2026), fetch the std .debs of the exact installed rustc-web version from the pool instead,
# check them against the mirror's index entry, and unpack them into a private sysroot (nothing
# is installed). That index is not checked against the signed Release (it is the broken part),
# so this is opt-in; rustc still refuses a std that this very compiler did not build.
# AQ_DEBIAN_SECURITY (default http://deb.debian.org/debian-security) is where they come from.
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${1:-}"; shift || true
smoke=0
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    *) echo "cross/build.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

case "$arch" in
  aarch64) deb_arch=arm64; triple=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; qemu=qemu-aarch64-static ;;
  armv7)   deb_arch=armhf; triple=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; qemu=qemu-arm-static ;;
  *) echo "usage: cross/build.sh aarch64|armv7 [--smoke]" >&2; exit 2 ;;
esac
env_triple=$(echo "$triple" | tr 'a-z-' 'A-Z_')
cc_triple=$(echo "$triple" | tr '-' '_')

std_from_pool=0
case "${AQ_CROSS_STD:-apt}" in
  apt) ;;
  pool) std_from_pool=1 ;;
  *) echo "cross/build.sh: AQ_CROSS_STD is apt or pool, not ${AQ_CROSS_STD}" >&2; exit 2 ;;
esac

need=()
std_pkg=("libstd-rust-web-dev:$deb_arch")
if [ "$std_from_pool" = 1 ]; then
  # The cross linker and libc are amd64 packages: no foreign architecture is needed.
  std_pkg=(curl xz-utils)
else
  dpkg --print-foreign-architectures | grep -qx "$deb_arch" || need_arch=1
fi
for p in rustc-web "${std_pkg[@]}" "gcc-$gnu" "libc6-dev-$deb_arch-cross" qemu-user-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${need_arch:-0}" = 1 ] || [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "cross/build.sh: please install as root: ${need[*]}" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  dpkg --add-architecture "$deb_arch"
  # Only this architecture's lists: a broken index of another one must not stop us.
  log=$(mktemp)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2; echo "cross/build.sh: apt failed installing ${need[*]}" >&2
    if grep -q "Some index files failed to download" "$log" && [ "$std_from_pool" = 0 ]; then
      echo "cross/build.sh: the mirror's $deb_arch index is broken; AQ_CROSS_STD=pool fetches the target std from the pool instead (see the top of this script)" >&2
    fi
    exit 1
  fi
  rm -f "$log"
fi

host_v=$(dpkg-query -W -f='${Version}' rustc-web)
sysroot_flag=""
if [ "$std_from_pool" = 1 ]; then
  sysroot="${CARGO_TARGET_DIR:-$PWD/target}/cross/sysroot-$deb_arch-$host_v"
  if [ ! -d "$sysroot" ]; then
    mirror="${AQ_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    series=$(echo "$host_v" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
    work=$(mktemp -d)
    curl -fsSL "$mirror/dists/$codename-security/main/binary-$deb_arch/Packages.xz" | xz -d >"$work/Packages"
    for pkg in libstd-rust-web-dev "libstd-rust-web-$series"; do
      deb="${pkg}_${host_v}_${deb_arch}.deb"
      want=$(awk -v p="$pkg" -v v="$host_v" '
        /^Package: / { name = $2 } /^Version: / { version = $2 }
        /^SHA256: / { if (name == p && version == v) print $2 }' "$work/Packages")
      if [ -z "$want" ]; then
        echo "cross/build.sh: $pkg $host_v ($deb_arch) is not in $mirror's index" >&2; exit 1
      fi
      curl -fsSL -o "$work/$deb" "$mirror/pool/updates/main/r/rustc-web/$deb"
      if ! echo "$want  $work/$deb" | sha256sum -c --quiet; then
        echo "cross/build.sh: $deb does not match the index's SHA256 $want" >&2; exit 1
      fi
      dpkg-deb -x "$work/$deb" "$work/root"
    done
    mkdir -p "$(dirname "$sysroot")"
    mv "$work/root/usr" "$sysroot"
    rm -rf "$work"
    echo "cross/build.sh: target std $host_v ($deb_arch) from the pool in $sysroot"
  fi
  sysroot_flag=" --sysroot $sysroot"
  std_v="$host_v"
else
  std_v=$(dpkg-query -W -f="\${Version}" "libstd-rust-web-dev:$deb_arch")
fi
if [ "$host_v" != "$std_v" ]; then
  echo "cross/build.sh: rustc-web $host_v and libstd-rust-web-dev:$deb_arch $std_v differ; run apt-get install --only-upgrade rustc-web libstd-rust-web-dev:$deb_arch" >&2
  exit 1
fi

host_target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export RUSTC=/usr/bin/rustc
export "CARGO_TARGET_${env_triple}_LINKER=$gnu-gcc"
export "CARGO_TARGET_${env_triple}_RUSTFLAGS=-C target-feature=+crt-static$sysroot_flag"
export "CARGO_TARGET_${env_triple}_RUNNER=$qemu"
export "CC_${cc_triple}=$gnu-gcc" "AR_${cc_triple}=$gnu-ar"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/cross"

echo "cross/build.sh: $($RUSTC --version) for $triple"
start=$(date +%s)
# Devices get no export passes (feature `export`): they run packs, build machines make them.
cargo build --release --locked --target "$triple" -p aq-agent --bin aq --no-default-features
bin="$CARGO_TARGET_DIR/$triple/release/aq"
dist="${AQ_DIST:-$PWD/dist}"
mkdir -p "$dist"
out="$dist/aq-$arch-linux"
cp "$bin" "$out"
echo "cross/build.sh: built $out ($(stat -c %s "$out") bytes) in $(( $(date +%s) - start )) s"
file "$out" 2>/dev/null || true

if [ "$smoke" = 1 ]; then
  # The host side of the comparison is built by the host toolchain into the host target dir
  # (a no-op after the test suite has built it), not by Debian's rustc used above.
  env -u RUSTC CARGO_TARGET_DIR="$host_target_dir" cross/smoke.sh "$out" "$qemu" "${AQ_HOST_BIN:-}"
fi
