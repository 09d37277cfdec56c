#!/bin/bash
# Run once by the postgres image on an empty data volume: one database per service, each owned by its own
# login role whose password secrets-init generated (/run/secrets/pg/<db>_password). No role may connect to
# another service's database.
set -euo pipefail
for db in lt_quota lt_saga lt_analytics lt_notifier; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v db="$db" -v pw="$(cat "/run/secrets/pg/${db}_password")" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
done
