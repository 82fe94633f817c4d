#!/usr/bin/env bash
# Debian packages the PACS mode and its tests need: Orthanc with its DICOMweb plugin (the embedded
# PACS), dcm2niix (the tests cross-check the project's DICOM converter with it) and dicom3tools (its
# dciodvfy checks that every object the app writes passes a strict PACS); and those of the viewer
# (node, npm, chromium: scripts/setup_viewer.sh; not with STROKELABEL_NO_VIEWER=1). Installed only
# when missing; needs root (or sudo). STROKELABEL_NO_SYSTEM_PACKAGES=1 skips this step (the PACS
# tests are then skipped and say so).
set -euo pipefail
[ "${STROKELABEL_NO_SYSTEM_PACKAGES:-0}" = "1" ] && { echo "[setup] Debian packages skipped (STROKELABEL_NO_SYSTEM_PACKAGES=1)"; exit 0; }
PACKAGES=(orthanc orthanc-dicomweb dcm2niix dicom3tools)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# The viewer's Debian packages (scripts/setup_viewer.sh) in the same apt run: one package-list update
# on a fresh machine instead of three.
if [ "${STROKELABEL_NO_VIEWER:-0}" != "1" ]; then
  PACKAGES+=(nodejs npm chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  dpkg -s chromium >/dev/null 2>&1 || missing+=(chromium)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "[setup] Debian packages present: ${PACKAGES[*]}"
  exit 0
fi
SUDO=""
[ "$(id -u)" = "0" ] || SUDO="sudo"
echo "[setup] installing Debian packages: ${missing[*]}"
# The orthanc package starts a system service on install where it can; the app never uses it
# (strokelabel/orthanc.py runs its own instance on loopback), so policy-rc.d refusals are harmless.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
