#!/usr/bin/env bash
# Makes sure a nats-server 2.10 or newer is available to jetstate, changing nothing system-wide.
# Order: $JETSTATE_NATS_SERVER, the project-local copy in .jetstate/nats, a nats-server on PATH;
# otherwise the distribution's package is fetched with `apt-get download` (Debian 13 "trixie"
# when the system's own candidate is older than 2.10, as on Debian 12) and unpacked with
# `dpkg-deb -x` into .jetstate/nats. Prints the binary's path on the last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.jetstate/nats"
local_bin="$dest/usr/sbin/nats-server"

version_ok() { # $1: binary; true when it reports 2.10 or newer
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n1)" || return 1
  [ -n "$v" ] || return 1
  local major="${v%%.*}" minor="${v#*.}"
  [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

for candidate in "${JETSTATE_NATS_SERVER:-}" "$local_bin" "$(command -v nats-server || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && version_ok "$candidate"; then
    echo "nats-server: $("$candidate" --version) at $candidate" >&2
    echo "$candidate"
    exit 0
  fi
done

command -v apt-get >/dev/null || { echo "error: no nats-server 2.10+ found and no apt-get to fetch one; install nats-server 2.10 or newer and set JETSTATE_NATS_SERVER to its path" >&2; exit 1; }

work="$root/.jetstate/apt"
rm -rf "$work" && mkdir -p "$work/lists/partial" "$work/archives/partial"
cd "$work"
apt_opts=(-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work" -o "Dir::Cache::archives=$work/archives" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

# The system's own candidate first (Debian 13, Ubuntu 24.04 and newer package 2.10+).
sys_version="$(apt-cache policy nats-server 2>/dev/null | sed -n 's/ *Candidate: *\([0-9]*\.[0-9]*\).*/\1/p' | head -n1)"
use_system=false
if [ -n "$sys_version" ] && [ "$sys_version" != "(none)" ]; then
  major="${sys_version%%.*}"; minor="${sys_version#*.}"
  if [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }; then use_system=true; fi
fi

if $use_system; then
  echo "fetching the system's nats-server $sys_version package (no install)" >&2
  apt-get "${apt_opts[@]}" download nats-server >&2
else
  # The system's own Debian mirror, with suite trixie (Debian 13), in a private source list.
  uri="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)"
  [ -n "$uri" ] || uri="$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\).*/\2/p' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)"
  case "$uri" in *debian*) ;; *) uri="http://deb.debian.org/debian" ;; esac
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$keyring] $uri trixie main" > "$work/trixie.list"
  echo "fetching nats-server from Debian 13 (trixie) at $uri into .jetstate/nats (no install)" >&2
  apt_opts+=(-o "Dir::Etc::sourcelist=$work/trixie.list" -o Dir::Etc::sourceparts=-)
  apt-get "${apt_opts[@]}" update >&2
  apt-get "${apt_opts[@]}" download nats-server >&2
fi

deb="$(ls "$work"/nats-server_*.deb | head -n1)"
rm -rf "$dest" && mkdir -p "$dest"
dpkg-deb -x "$deb" "$dest"
rm -rf "$work"
version_ok "$local_bin" || { echo "error: the fetched nats-server at $local_bin is older than 2.10" >&2; exit 1; }
echo "nats-server: $("$local_bin" --version) at $local_bin" >&2
echo "$local_bin"
