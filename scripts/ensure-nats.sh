#!/usr/bin/env bash
# Makes sure a nats-server 2.10 or newer is available to this repository (tests, `npm run dev`),
# changing nothing system-wide. It runs `jetstate nats install` from the sources, the one
# implementation (adapters/nats-server/install.ts): $JETSTATE_NATS_SERVER, .jetstate/nats or a
# nats-server on PATH when one is 2.10+; otherwise the distribution's package fetched with
# `apt-get download` (Debian 13 "trixie" when the system's own is older, as on Debian 12) and
# unpacked with `dpkg-deb -x` into .jetstate/nats. Prints the binary's path on the last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec node --import tsx adapters/cli/main.ts nats install
