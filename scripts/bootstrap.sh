# Shared setup for scripts/test and scripts/demo: virtualenv, requirements, Orthanc.
# Source it from the repository root, then call `bootstrap`. Works on a fresh
# Debian machine as root (CI) or as a user with password-less sudo.

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo -n)
    fi
    echo "bootstrap: apt-get install $*" >&2
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
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
}
