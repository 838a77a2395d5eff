# Shared setup for scripts/test and scripts/demo: virtualenv, requirements, Orthanc, and
# (bootstrap_browser, for scripts/test) chromium + the pinned npm packages of tests/browser.
# Source it from the repository root, then call `bootstrap`. Works on a fresh
# Debian machine as root (CI) or as a user with password-less sudo. Idempotent: each step
# runs only when what it installs is missing or its pinned versions changed.

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo -n)
    fi
    echo "bootstrap: apt-get install $*" >&2
    "${sudo[@]}" apt-get update -qq >/dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

bootstrap() {
    local venv=.venv
    if ! command -v python3 >/dev/null; then
        apt_install python3 python3-venv
    fi
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        echo "bootstrap: creating $venv" >&2
        rm -rf "$venv"
        if ! python3 -m venv "$venv"; then
            # Debian ships venv's ensurepip in a separate package.
            apt_install python3-venv
            rm -rf "$venv"
            python3 -m venv "$venv"
        fi
    fi
    # Reinstall only when requirements.txt changed since the last install.
    local stamp="$venv/.requirements.sha256" wanted
    wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        echo "bootstrap: pip install -r requirements.txt" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
        echo "$wanted" >"$stamp"
    fi
    "$venv/bin/python" scripts/devpacs.py ensure-installed >/dev/null
    bootstrap_viewer
}

# The viewer served at /viewer/ (scripts/demo and scripts/test): OHIF's prebuilt dist, npm
# @ohif/app pinned in viewer/package-lock.json. The lock file pins that one package: its dist is
# self-contained, and its declared build dependencies are neither needed nor all published.
# A failed install is reported; the facade then answers 503 at /viewer/ and the viewer's
# browser test fails with the same message.
bootstrap_viewer() {
    if ! command -v npm >/dev/null; then
        apt_install nodejs npm ||
            echo "bootstrap: WARNING: could not install node/npm; /viewer/ will answer 503" >&2
    fi
    command -v npm >/dev/null || return 0
    npm_ci viewer "/viewer/ will answer 503"
}

# The database tests on PostgreSQL (scripts/devpg.py: a throwaway cluster of Debian's binaries) and
# the scale-out test (two instances behind Debian's nginx, scripts/scaleout.py) need the packages
# postgresql and nginx-light; neither system service is used. A failed install is reported here and
# those tests then fail with their own message.
bootstrap_servers() {
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        apt_install postgresql ||
            echo "bootstrap: WARNING: could not install postgresql; the PostgreSQL tests will fail" >&2
    fi
    if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
        apt_install nginx-light ||
            echo "bootstrap: WARNING: could not install nginx-light; the scale-out test will fail" >&2
    fi
}

# The browser test (tests/smart/test_smart_clients.py) needs Debian's chromium, node >= 20 and the
# npm packages pinned in tests/browser/package-lock.json (fhirclient, playwright-core; no
# browser download: playwright-core drives /usr/bin/chromium). A failed install is reported
# here and the browser test then fails with the same message; it is never skipped.
bootstrap_browser() {
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium ||
            echo "bootstrap: WARNING: could not install chromium; the browser test will fail" >&2
    fi
    if ! command -v npm >/dev/null; then
        apt_install nodejs npm ||
            echo "bootstrap: WARNING: could not install node/npm; the browser test will fail" >&2
    fi
    command -v npm >/dev/null || return 0
    npm_ci tests/browser
    # The EHR of the EHR-token tests (tests/smart/test_ehr_tokens.py): oidc-provider, pinned in
    # tests/ehr/package-lock.json.
    npm_ci tests/ehr
}

# npm ci in folder $1, only when its package-lock.json changed since the last install; $2 says
# what a failure breaks (default: the tests that use the folder).
npm_ci() {
    local dir=$1 broken=${2:-the tests that use it will fail} wanted
    local stamp=$dir/node_modules/.package-lock.sha256
    wanted=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        echo "bootstrap: npm ci in $dir" >&2
        # --ignore-scripts: nothing may download a browser or a binary of its own.
        if (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null); then
            echo "$wanted" >"$stamp"
        else
            echo "bootstrap: WARNING: npm ci failed in $dir; $broken" >&2
        fi
    fi
}
