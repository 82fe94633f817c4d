#!/usr/bin/env bash
# The OHIF viewer that can correct and save a segmentation (served by the app at /ohif3/) and what
# the browser test drives it with. Each part is fetched only when missing:
#   - @ohif/app (prebuilt, from the npm registry, pinned) unpacked into viewer/ohif-<version>/
#   - Debian's chromium (the browser; playwright downloads none)
#   - playwright-core (pinned, npm) into viewer/node_modules/
# viewer/ is git-ignored. STROKELABEL_NO_VIEWER=1 skips this step (/ohif3/ then answers 404 and the
# browser test is skipped, saying so). Debian packages need root (or sudo);
# STROKELABEL_NO_SYSTEM_PACKAGES=1 skips them as in setup_system.sh.
set -euo pipefail
[ "${STROKELABEL_NO_VIEWER:-0}" = "1" ] && { echo "[setup] viewer skipped (STROKELABEL_NO_VIEWER=1)"; exit 0; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OHIF_VERSION=3.13.2          # keep in step with OHIF3_VERSION in apps/stroke/lib/ohif3.py
PLAYWRIGHT_CORE_VERSION=1.65.1
VIEWER="$ROOT/viewer"
mkdir -p "$VIEWER/cache"
SUDO=""
[ "$(id -u)" = "0" ] || SUDO="sudo"
apt_install() {
  [ "${STROKELABEL_NO_SYSTEM_PACKAGES:-0}" = "1" ] && { echo "[setup] not installing $* (STROKELABEL_NO_SYSTEM_PACKAGES=1)"; return 0; }
  echo "[setup] installing Debian packages: $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}
# node runs npm (fetching) and the browser test's driver; OHIF itself runs in the browser, not in node.
command -v npm >/dev/null && command -v node >/dev/null || apt_install nodejs npm

if [ ! -f "$VIEWER/ohif-$OHIF_VERSION/dist/index.html" ]; then
  command -v npm >/dev/null || { echo "[setup] npm is needed to fetch the OHIF viewer (apt-get install nodejs npm)" >&2; exit 1; }
  tarball="$VIEWER/cache/ohif-app-$OHIF_VERSION.tgz"
  if [ ! -f "$tarball" ]; then
    echo "[setup] fetching @ohif/app@$OHIF_VERSION from the npm registry (~50 MB)"
    (cd "$VIEWER/cache" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null)
  fi
  rm -rf "$VIEWER/ohif-$OHIF_VERSION.partial"
  mkdir -p "$VIEWER/ohif-$OHIF_VERSION.partial"
  tar xzf "$tarball" -C "$VIEWER/ohif-$OHIF_VERSION.partial" --strip-components=1
  rm -rf "$VIEWER/ohif-$OHIF_VERSION"
  mv "$VIEWER/ohif-$OHIF_VERSION.partial" "$VIEWER/ohif-$OHIF_VERSION"  # complete or absent, never half
  echo "[setup] OHIF $OHIF_VERSION unpacked in $VIEWER/ohif-$OHIF_VERSION"
else
  echo "[setup] OHIF $OHIF_VERSION present"
fi

dpkg -s chromium >/dev/null 2>&1 || apt_install chromium  # the browser test's browser

command -v node >/dev/null || { echo "[setup] no node: playwright-core not installed (the browser test is skipped)"; exit 0; }
installed="$(node -p "require('$VIEWER/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$PLAYWRIGHT_CORE_VERSION" ]; then
  echo "[setup] installing playwright-core@$PLAYWRIGHT_CORE_VERSION (no browser download: it drives /usr/bin/chromium)"
  [ -f "$VIEWER/package.json" ] || echo '{"private": true, "description": "StrokeLabel browser test tools (scripts/setup_viewer.sh)"}' > "$VIEWER/package.json"
  (cd "$VIEWER" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --save-exact "playwright-core@$PLAYWRIGHT_CORE_VERSION")
else
  echo "[setup] playwright-core $PLAYWRIGHT_CORE_VERSION present"
fi
