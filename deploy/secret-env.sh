#!/bin/sh
# Reads secrets from files into the environment variables a program expects, then runs it.
#
#   secret-env.sh VAR [VAR ...] -- COMMAND [ARG ...]
#
# For each VAR whose VAR_FILE is set (a Docker secret, e.g. /run/secrets/temporal_db_password),
# VAR becomes the file's content (trailing newlines dropped) and VAR_FILE is unset; a VAR
# without VAR_FILE is left as it is. Then COMMAND replaces this shell (exec), so it gets the
# signals and keeps PID 1. docker-compose.yml runs the Temporal server, the schema job and the
# mentorflow containers through it, because they read these secrets only from variables
# (asyncpg's PGPASSWORD above all; mentorflow.config.Settings now reads MENTORFLOW_X_FILE
# itself, and the HTTP API its MENTORFLOW_API_KEY_SECRET_FILE): the secret values stay out
# of the compose file, `docker inspect` and `docker compose config`.
#
# Fails (exit 2, naming the variable and never the value) when VAR and VAR_FILE are both set,
# or the file cannot be read or is empty. POSIX sh: busybox (Temporal's alpine images) and dash
# (python:*-slim) both run it.
set -eu

names=""
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
        "" | [0-9]* | *[!A-Za-z0-9_]*)
            echo "secret-env: '$1' is not a variable name" >&2
            exit 64
            ;;
    esac
    names="$names $1"
    shift
done
if [ "$#" -lt 2 ]; then
    echo "usage: secret-env.sh VAR [VAR ...] -- COMMAND [ARG ...]" >&2
    exit 64
fi
shift # the --

for name in $names; do
    eval "file=\${${name}_FILE:-}"
    [ -n "$file" ] || continue
    eval "current=\${${name}:-}"
    if [ -n "$current" ]; then
        echo "secret-env: both $name and ${name}_FILE are set; set only ${name}_FILE" >&2
        exit 2
    fi
    if [ ! -f "$file" ] || [ ! -r "$file" ]; then
        echo "secret-env: ${name}_FILE: cannot read $file (is the secret's file there and readable?)" >&2
        exit 2
    fi
    value=$(cat "$file")
    if [ -z "$value" ]; then
        echo "secret-env: ${name}_FILE: $file is empty" >&2
        exit 2
    fi
    export "$name=$value"
    unset "${name}_FILE"
done
unset names name file current value

exec "$@"
