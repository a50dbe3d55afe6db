#!/bin/sh
# Entrypoint of both PostgreSQL servers (postgresql, mentorflow-db): installs the server's TLS
# certificate and key where PostgreSQL accepts them, then hands over to the image's own
# entrypoint with the command from docker-compose.yml (which turns ssl on and points
# hba_file at pg_hba.conf beside this script: TCP connections without TLS are refused).
#
# Why a copy: the key arrives as a Docker secret, a bind mount keeping the owner and mode of
# the file on the host, and PostgreSQL refuses a key that is not owned by it (or root) with
# mode 0600 (0640 for root). This runs as root, before the image drops to the postgres user.
# The password needs nothing of the kind: the image reads POSTGRES_PASSWORD_FILE itself.
set -eu

: "${TLS_CERT_FILE:?TLS_CERT_FILE is not set (the server certificate, a secret)}"
: "${TLS_KEY_FILE:?TLS_KEY_FILE is not set (the server key, a secret)}"
tls_dir=/var/lib/postgresql/tls

for file in "$TLS_CERT_FILE" "$TLS_KEY_FILE"; do
    if [ ! -s "$file" ]; then
        echo "postgres-start: cannot read $file (create it with deploy/make-secrets.sh)" >&2
        exit 2
    fi
done

install -d -m 0700 -o postgres -g postgres "$tls_dir"
install -m 0644 -o postgres -g postgres "$TLS_CERT_FILE" "$tls_dir/server.crt"
install -m 0600 -o postgres -g postgres "$TLS_KEY_FILE" "$tls_dir/server.key"
unset TLS_CERT_FILE TLS_KEY_FILE

exec docker-entrypoint.sh "$@"
