#!/usr/bin/env bash
# Make sure Debian's `chromium` is installed for the playground's browser tests
# (tests/live/test_playground_browser.py, driven by playwright-core from tests/browser/).
#
# Installs Debian/Ubuntu's `chromium` package (and `fonts-liberation`, so screenshots have
# readable text on a bare image) with apt-get when /usr/bin/chromium is missing, as root or
# through password-less sudo.  No browser is ever downloaded by Playwright: the tests launch
# this executable.  Exit status 0 when it runs afterwards; otherwise 1 with the reason on stderr
# (the tests then fail when CI is set, and skip otherwise).
set -euo pipefail

CHROMIUM=${DDX_LLM_TEST_CHROMIUM:-/usr/bin/chromium}

version() {
    # --version needs no display; a broken install (missing libraries) fails here.
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --version 2>/dev/null | head -n 1
}

if [ -x "$CHROMIUM" ] && found=$(version) && [ -n "$found" ]; then
    echo "ensure_chromium: $found"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and apt-get is not available;" \
         "install Chromium by hand and set DDX_LLM_TEST_CHROMIUM to its path" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_chromium: $CHROMIUM is missing and this user can neither run apt-get as root" \
         "nor use password-less sudo; install the chromium package" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=(chromium fonts-liberation)
if ! "${as_root[@]}" apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; then
    # A clean machine may have no package lists yet.
    "${as_root[@]}" apt-get update -qq || true
    if ! "${as_root[@]}" apt-get install -y --no-install-recommends "${packages[@]}"; then
        echo "ensure_chromium: apt-get could not install chromium (no mirror reachable?)" >&2
        exit 1
    fi
fi

if ! found=$(version) || [ -z "$found" ]; then
    echo "ensure_chromium: chromium was installed but $CHROMIUM --version fails" >&2
    exit 1
fi
echo "ensure_chromium: installed $found"
