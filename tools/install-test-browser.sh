#!/usr/bin/env bash
# Chromium and chromedriver for the web page's browser test (tests/test_serve_browser.py),
# from Debian's / Ubuntu's packages, when they are missing. Part of the README's test command.
# Without apt or the right to use it, it says so and the browser test is skipped (not failed).
if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get: install Chromium and chromedriver to run the browser test (it is skipped)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "not root and no password-less sudo: the browser test is skipped (apt-get install chromium chromium-driver to run it)"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
for packages in "chromium chromium-driver" "chromium-browser chromium-chromedriver"; do
    $SUDO apt-get install -y -qq $packages >/dev/null 2>&1 && exit 0
    $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq $packages >/dev/null 2>&1 && exit 0
done
echo "could not install Chromium with apt-get: the browser test is skipped"
exit 0
