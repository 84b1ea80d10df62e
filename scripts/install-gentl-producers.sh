#!/usr/bin/env bash
# Installs the software GenTL producers the GenICam tests acquire through, when missing:
# - viky.cti ships inside the `genicam` wheel (1.6.0, pinned in requirements.lock): nothing to do;
# - TLSimu.cti, the EMVA reference simulator (Mono8/RGB8 cameras with TriggerMode, TriggerSource
#   Software and TriggerSoftware), ships in the `genicam` 1.5.0 wheel only: it is unpacked from
#   that wheel into .cache/gentl/tlsimu/ (the producer and the one library it links).
# Usage: scripts/install-gentl-producers.sh PYTHON
set -euo pipefail
PY="${1:-.venv/bin/python}"
DEST=".cache/gentl/tlsimu"
[ -f "$DEST/TLSimu.cti" ] && exit 0
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux2014_x86_64 genicam==1.5.0 -d "$TMP" 2>&1 | grep -v "^WARNING: Location" || true
mkdir -p "$DEST"
"$PY" - "$TMP" "$DEST" <<'PYEOF'
import glob, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/genicam-1.5.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = name.rsplit("/", 1)[-1]
        if base in ("TLSimu.cti", "libVirtualFG.so"):
            with z.open(name) as src, open(f"{sys.argv[2]}/{base}", "wb") as dst:
                dst.write(src.read())
PYEOF
chmod +x "$DEST"/*
echo "TLSimu GenTL producer -> $DEST/TLSimu.cti"
