#!/bin/sh
# Install the Debian packages named on the command line that are missing, when running as root.
# Not root: say what is missing and go on (tests that need a missing peer skip with a one-line reason).
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "wiregate: not root, cannot install:$missing (tests needing them will skip)" >&2
    exit 0
fi
echo "wiregate: installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || exit 1
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
