#!/usr/bin/env bash
# Install the Debian packages the explorer page's browser test (tests/test_explore_browser.py)
# drives through Selenium: Chromium and its chromedriver. Under CI the test fails, not skips,
# when they are missing.
set -euo pipefail
bash "$(dirname "$0")/apt-packages.sh" browser-setup chromium chromium-driver
chromium --version
chromedriver --version
