#!/usr/bin/env bash
# Install the Debian packages the test suite runs against; only those missing.
#   docker.io        the engine whose `docker load` judges our docker-archives
#   skopeo umoci oci-image-tool   cross-checkers of what we write
#   podman                        another loader of our archives (containerd, whose ctr
#                                 imports them, comes with docker.io)
#   docker-registry apache2-utils a real registry, htpasswd for its auth
#   crun runc bubblewrap          sandboxes for `run` steps
#   squashfs-tools zstd           squashfs layers, zstd cross-checks
#   busybox-static mmdebstrap     real root filesystems for test images
#   diffoscope-minimal            says what differs when a reproducibility test fails
#   gcc libc6-dev libssl-dev python3-dev   build ocikit's native core (src/native/, setup.py)
set -euo pipefail
packages=(docker.io skopeo umoci oci-image-tool podman docker-registry apache2-utils
          crun runc bubblewrap squashfs-tools zstd busybox-static mmdebstrap golang-go
          diffoscope-minimal gcc libc6-dev libssl-dev python3-dev)
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: missing ${missing[*]}; run as root or install them" >&2
  exit 2
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
