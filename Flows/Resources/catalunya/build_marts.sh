#!/bin/sh
# Builds the marts from the SQL models: with dbt when it is installed, otherwise by running the
# same models with psql (each model becomes `create table marts.<name> as <model>`).
set -eu
here=$(dirname "$0")
url="${FLOWKIT_CONN_WAREHOUSE:?set FLOWKIT_CONN_WAREHOUSE to the warehouse PostgreSQL URL}"
if command -v dbt >/dev/null 2>&1 && [ "${FLOWKIT_USE_DBT:-1}" = 1 ]; then
  echo "building marts with $(dbt --version | head -n 1)"
  dbt run --project-dir "$here" --profiles-dir "$here"
else
  echo "dbt is not installed: running the models with psql"
  psql "$url" -v ON_ERROR_STOP=1 -q -c "create schema if not exists marts"
  for model in daily_station_averages municipality_exceedances; do
    body=$(sed -e "s/{{ *source('staging', *'\([a-z_]*\)') *}}/staging.\1/g" \
               -e "s/{{ *ref('\([a-z_]*\)') *}}/marts.\1/g" "$here/models/$model.sql")
    printf 'begin;\ndrop table if exists marts.%s cascade;\ncreate table marts.%s as\n%s\n;\ncommit;\n' \
      "$model" "$model" "$body" | psql "$url" -v ON_ERROR_STOP=1 -q
    echo "built marts.$model"
  done
fi
daily=$(psql "$url" -qAt -c "select count(*) from marts.daily_station_averages")
exceed=$(psql "$url" -qAt -c "select count(*) from marts.municipality_exceedances")
printf '{"daily_station_averages": %s, "municipality_exceedances": %s}\n' "$daily" "$exceed"
