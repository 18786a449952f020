# Sourced by the dashboard benchmarks (bench_w9.sh, bench_scale_browser.sh) with their arguments
# FLOWCTL REPEATS, after setting `workload` (for messages) and `out_name`: sets flowctl, repeats,
# python (the test virtualenv's), out, and the bench servers' URLs and an admin token; leaves
# (exit 0) when chromium is not installed.
flowctl="$(realpath "$1")"; repeats="${2:-3}"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "# $workload skipped: chromium and chromium-driver are not installed (scripts/deps.sh installs them)"; exit 0
fi
python="$(scripts/testvenv.sh)"
out=.flowkit/bench/$out_name; mkdir -p "$out"
export FLOWKIT_DATABASE_URL=postgres://flowkit@127.0.0.1:25532/bench FLOWKIT_REDIS_URL=redis://127.0.0.1:26479/0 FLOWKIT_LOG_LEVEL=warning
export FLOWKIT_API_TOKENS="admin:bench-admin" FLOWKIT_API_TOKEN=bench-admin
