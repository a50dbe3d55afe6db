#!/bin/sh
# Creates (or upgrades) Temporal's two PostgreSQL databases: `temporal` for persistence and
# `temporal_visibility` for list/search queries. Runs in temporalio/admin-tools before the
# server starts. Safe to run on every `docker compose up`: `create` ignores an existing
# database, `setup-schema -v 0.0` leaves a versioned schema alone, and `update-schema` applies
# only the versions the database lacks, so a newer admin-tools image upgrades the schema.
#
# temporal-sql-tool reads the rest from the environment: SQL_PASSWORD (docker-compose.yml
# fills it from the secret in SQL_PASSWORD_FILE through deploy/secret-env.sh), and SQL_TLS /
# SQL_TLS_CA_FILE, with which it connects over TLS and checks the server's certificate and name.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is not set}"
: "${POSTGRES_USER:?POSTGRES_USER is not set}"
: "${SQL_PASSWORD:?SQL_PASSWORD is not set}"
port="${DB_PORT:-5432}"
schemas=/etc/temporal/schema/postgresql/v12

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
    database="${pair%%:*}"
    schema="${pair#*:}"
    echo "setting up database $database"
    sql_tool --db "$database" create
    sql_tool --db "$database" setup-schema -v 0.0
    sql_tool --db "$database" update-schema -d "$schemas/$schema/versioned"
done
echo "Temporal schema is up to date"
