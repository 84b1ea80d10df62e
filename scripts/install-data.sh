#!/usr/bin/env bash
# Installs the Debian data sets the tests and benchmarks use, when they are missing:
# dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) and visp-images-data, and the system
# programs the tests drive: mbpoll (the independent Modbus master of tests/line/test_modbus.py),
# chromium (the operator screen's browser tests, through Playwright), and the services the
# plant-data tests start on loopback: postgresql and mosquitto.
set -euo pipefail
need=()
for pkg in dataset-fashion-mnist visp-images-data mbpoll chromium postgresql mosquitto; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${need[@]}"
