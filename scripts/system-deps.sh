#!/usr/bin/env bash
# Debian packages the tests need (a real OpenSSH server for the flash tests). Installs only what is
# missing, and only as root; otherwise says what to install.
# With --arm64: only what `make test-arm64` needs (debootstrap, qemu-user-static, binfmt-support), not the above.
set -euo pipefail
need=()
default_deps() {
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
}
arm64_deps() {
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
  [ -x /usr/sbin/update-binfmts ] || need+=(binfmt-support)
}
if [ "${1:-}" = "--arm64" ]; then arm64_deps; else default_deps; fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 2
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
