#!/usr/bin/env bash
# Creates each service's database and its two roles with provision.sql (which says what each
# role may do): <service>_owner owns the database and runs the migrations
# (DATABASE_MIGRATION_URL); <service>_app is what the service runs as (DATABASE_URL) and may
# only read and write rows of its own database.
#
# Run by the compose Postgres on an empty data directory (docker-entrypoint-initdb.d) and by
# the Kubernetes provisioning Job (kustomization.yaml here); safe to run again, e.g. to change
# passwords. It connects as the PG* environment variables say (in the image's init phase: the
# superuser over the local socket), and takes the ten passwords from the environment:
# <SERVICE>_DB_OWNER_PASSWORD and <SERVICE>_DB_APP_PASSWORD, e.g. ORDER_DB_APP_PASSWORD.
set -euo pipefail

provision_sql="${PROVISION_SQL:-/order-saga/provision.sql}"
export PGUSER="${PGUSER:-${POSTGRES_USER:-postgres}}"

for service in order inventory payment fulfillment notification; do
    owner_password="${service^^}_DB_OWNER_PASSWORD"
    app_password="${service^^}_DB_APP_PASSWORD"
    if [[ -z "${!owner_password:-}" || -z "${!app_password:-}" ]]; then
        echo "init-databases.sh: $owner_password and $app_password must be set" >&2
        exit 1
    fi
    psql --no-psqlrc --quiet --dbname postgres \
        --set ON_ERROR_STOP=1 \
        --set database="$service" \
        --set owner_role="${service}_owner" \
        --set owner_password="${!owner_password}" \
        --set app_role="${service}_app" \
        --set app_password="${!app_password}" \
        --file "$provision_sql"
    echo "init-databases.sh: database $service with roles ${service}_owner and ${service}_app"
done
