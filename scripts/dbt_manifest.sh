#!/bin/sh
# Regenerates a dbt project's manifest.json (what f.dbtModels reads when a flow is defined) with
# `dbt parse`, keeping only what FlowKit reads (nodes, their dependencies and tests), so that the
# committed file stays small. usage: scripts/dbt_manifest.sh PROJECT_DIR
set -eu
cd "$(dirname "$0")/.."
project=$(realpath "$1")
venv=.flowkit/venvs/dbt-manifest
[ -x "$venv/bin/dbt" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check dbt-core==1.10.15 dbt-postgres==1.9.1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
DBT_SEND_ANONYMOUS_USAGE_STATS=false "$venv/bin/dbt" parse --project-dir "$project" --profiles-dir "$project" \
  --target-path "$work/target" --log-path "$work/logs" >/dev/null
python3 - "$work/target/manifest.json" "$project/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
keep = {k: {f: v[f] for f in ("unique_id", "name", "resource_type", "depends_on", "original_file_path") if f in v}
        for k, v in m["nodes"].items() if v["resource_type"] in ("model", "seed", "test", "snapshot")}
for v in keep.values():
    v["depends_on"] = {"nodes": v.get("depends_on", {}).get("nodes", [])}
out = {"metadata": {"dbt_schema_version": m["metadata"]["dbt_schema_version"], "dbt_version": m["metadata"]["dbt_version"],
                    "project_name": m["metadata"].get("project_name")}, "nodes": keep}
json.dump(out, open(sys.argv[2], "w"), indent=1, sort_keys=True)
PY
echo "wrote $project/manifest.json"
