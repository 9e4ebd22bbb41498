#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d):
# the role the services use and the five databases it owns. The services would create a
# missing database themselves, but that needs CREATEDB; creating them here lets the role do
# no more than own its databases.
set -eu

psql --username "$POSTGRES_USER" --dbname postgres \
    --set ON_ERROR_STOP=1 \
    --set app_password="$ORDER_SAGA_DB_PASSWORD" <<'SQL'
CREATE ROLE order_saga LOGIN PASSWORD :'app_password';
-- "order" is a reserved word, hence the quotes.
CREATE DATABASE "order" OWNER order_saga;
CREATE DATABASE inventory OWNER order_saga;
CREATE DATABASE payment OWNER order_saga;
CREATE DATABASE fulfillment OWNER order_saga;
CREATE DATABASE notification OWNER order_saga;
SQL
