#!/bin/bash
# The plugin's headless probes in a newer QGIS: a Debian chroot built from Debian's archive
# (cached under build/chroots/SUITE), the checkout bound read-only at /repo inside it.
#   tools/qgis_chroot.sh trixie     # QGIS 3.40 on Python 3.13
#   tools/qgis_chroot.sh sid        # QGIS 3.44 on Python 3.14
# With T2E_ENGINE_URL and T2E_ENGINE_TOKEN (an engine serving on the host's 127.0.0.1, and its
# token file), the dock also runs one Generate against it (tests/plugin_generate_probe.py); its
# output stays in build/chroots/SUITE/tmp/t2e-generate for the test to read. With T2E_STAC_DIR (a
# batch's output folder, bound read-only at /stac), the QGIS application's own STAC support opens
# its collection.json (tests/plugin_stac_probe.py: needs the qgis package and xvfb-run).
# Needs root (debootstrap, chroot, bind mounts). Prints each probe's JSON line, prefixed.
set -euo pipefail
suite=${1:?suite: trixie or sid}
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/build/chroots/$suite"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -f "$dir/.ready" ]; then
  rm -rf "$dir" && mkdir -p "$dir"
  debootstrap --variant=minbase "$suite" "$dir" "$mirror"
  chroot "$dir" apt-get -o Acquire::Check-Valid-Until=false update -q
  DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -q --no-install-recommends \
    python3-qgis qgis-providers
  touch "$dir/.ready"
fi
if [ -n "${T2E_STAC_DIR:-}" ] && [ ! -f "$dir/.ready-app" ]; then
  # The STAC Browser items are registered by the application only (no Python bindings in 3.40)
  DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -q --no-install-recommends \
    qgis xvfb xauth
  touch "$dir/.ready-app"
fi

mkdir -p "$dir/repo" "$dir/rasters"
cleanup() {
  # Lazy: a probe's Xvfb may still hold /dev for a moment, and a /dev left bound into
  # build/chroots would be emptied by anything that later removes build/.
  for m in repo rasters stac proc dev; do umount -l "$dir/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
mount --bind "$root" "$dir/repo" && mount -o remount,bind,ro "$dir/repo"
mount --bind "$root/../shared/data/rasters" "$dir/rasters"
mount -t proc proc "$dir/proc"
mount --bind /dev "$dir/dev"

version=$(chroot "$dir" dpkg-query -W -f '${Version}' python3-qgis)
python=$(chroot "$dir" python3 -c 'import sys; print(sys.version.split()[0])')
echo "$suite: QGIS $version, Python $python"
# Each probe prints its JSON report as its last line; QGIS may still crash while exiting,
# so a probe is judged by its report, not its exit status.
set +e +o pipefail
probe() {  # name [env...]
  local name=$1; shift
  chroot "$dir" sh -c "cd /repo/tests && env -i HOME=/tmp PATH=/usr/bin:/bin \
    QT_QPA_PLATFORM=offscreen PYTHONDONTWRITEBYTECODE=1 $* python3 $name" \
    2>"$root/build/chroots/$suite-$name.log" | tail -1 | sed "s/^/$suite $name: /"
}
probe plugin_probe.py
probe plugin_layout_probe.py T2E_RASTER=/rasters/RGB.byte.tif
rm -rf "$dir/tmp/t2e-swipe" && mkdir -p "$dir/tmp/t2e-swipe"
probe plugin_swipe_probe.py T2E_WORK=/tmp/t2e-swipe
if [ -n "${T2E_ENGINE_URL:-}" ]; then
  rm -rf "$dir/tmp/t2e-generate" && mkdir -p "$dir/tmp/t2e-generate"
  install -m 600 "$T2E_ENGINE_TOKEN" "$dir/tmp/t2e-token"
  probe plugin_generate_probe.py T2E_ENGINE_URL="$T2E_ENGINE_URL" \
    T2E_TOKEN_FILE=/tmp/t2e-token T2E_WORK=/tmp/t2e-generate
  rm -f "$dir/tmp/t2e-token"
fi
if [ -n "${T2E_STAC_DIR:-}" ]; then
  mkdir -p "$dir/stac"
  mount --bind "$T2E_STAC_DIR" "$dir/stac" && mount -o remount,bind,ro "$dir/stac"
  chroot "$dir" sh -c "cd /tmp && rm -rf /tmp/t2e-stac-profile && env -i HOME=/tmp \
    PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 T2E_STAC_URL=file:///stac/collection.json \
    xvfb-run -a -s '-screen 0 1366x768x24' qgis --nologo --noversioncheck --noplugins \
    --profiles-path /tmp/t2e-stac-profile --code /repo/tests/plugin_stac_probe.py" \
    2>"$root/build/chroots/$suite-plugin_stac_probe.py.log" | tail -1 \
    | sed "s/^/$suite plugin_stac_probe.py: /"
fi
