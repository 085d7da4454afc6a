#!/usr/bin/env bash
# Instructions per proxied chat completion in the gateway process, counted by callgrind (exact and
# repeatable whatever else the machine is doing, unlike req/s on a shared 2-core box).
#   scripts/profile-gateway.sh [GPUFLEET_BIN|nginx] [SECONDS]
# With `nginx` in place of the binary, the peer is counted the same way: an nginx reverse proxy
# (one process, `master_process off`, keep-alive upstream as `gpufleet bench gateway` runs it).
# Starts an nginx mock backend (the fixed 272-byte completion of `gpufleet bench gateway`), the
# gateway under `valgrind --tool=callgrind` with an admin key, warms up, zeroes the counters, loads
# it with wrk (1 thread, 4 connections) for SECONDS, dumps, and prints instructions per request
# (all threads of the process, so the background workers of `gpufleet up` are included, spread
# over the requests: compare runs with similar request counts).
# The callgrind file stays in $OUT_DIR (default /tmp/gpufleet-profile) for callgrind_annotate.
set -euo pipefail
BIN=${1:-target/release/gpufleet}
SECS=${2:-10}
OUT_DIR=${OUT_DIR:-/tmp/gpufleet-profile}
for t in nginx wrk valgrind callgrind_control curl; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install nginx-light wrk valgrind)" >&2; exit 1; }
done
rm -rf "$OUT_DIR"; mkdir -p "$OUT_DIR/nginx" "$OUT_DIR/data"
MOCK_PORT=19601; GW_PORT=19602
BODY='{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"mock-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}'
P="$OUT_DIR/nginx"
cat > "$P/nginx.conf" <<NG
worker_processes 1; pid $P/nginx.pid; error_log $P/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $P/b; proxy_temp_path $P/p; fastcgi_temp_path $P/f; uwsgi_temp_path $P/u; scgi_temp_path $P/s;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$MOCK_PORT; default_type application/json; location / { return 200 '$BODY'; } } }
NG
cat > "$OUT_DIR/gpufleet.toml" <<TOML
[auth.rate_limits]
inference_per_minute = 1000000000
[gateway]
[[gateway.backends]]
name = "gpu1"
kind = "openai"
url = "http://127.0.0.1:$MOCK_PORT"
models = ["mock-gpt"]
max_concurrency = 256
TOML
KEY=$(python3 -c 'import secrets;print("gf_"+secrets.token_hex(4)+"_"+secrets.token_urlsafe(32))')
cat > "$OUT_DIR/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"mock-gpt","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
nginx -p "$P" -c "$P/nginx.conf" -g 'daemon off;' & pids+=($!)
if [ "$BIN" = nginx ]; then
  X="$OUT_DIR/proxy"; mkdir -p "$X"
  cat > "$X/nginx.conf" <<NG
worker_processes 1; master_process off; daemon off; pid $X/nginx.pid; error_log $X/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $X/b; proxy_temp_path $X/p; fastcgi_temp_path $X/f; uwsgi_temp_path $X/u; scgi_temp_path $X/s;
  keepalive_requests 1000000;
  upstream gpus { least_conn; server 127.0.0.1:$MOCK_PORT; keepalive 128; }
  server { listen 127.0.0.1:$GW_PORT; location / { proxy_pass http://gpus; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NG
  valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/callgrind.out" \
    nginx -p "$X" -c "$X/nginx.conf" 2>"$OUT_DIR/gpufleet.log" & pids+=($!)
else
  GPUFLEET_ADMIN_KEY=$KEY GPUFLEET_LOG_LEVEL=warn valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/callgrind.out" \
    "$BIN" up --config "$OUT_DIR/gpufleet.toml" --listen 127.0.0.1:$GW_PORT --data-dir "$OUT_DIR/data" 2>"$OUT_DIR/gpufleet.log" & pids+=($!)
fi
ok=""
for _ in $(seq 1 600); do
  if curl -sf -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
       -d '{"model":"mock-gpt","messages":[]}' "http://127.0.0.1:$GW_PORT/v1/chat/completions"; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { echo "gateway did not answer (see $OUT_DIR/gpufleet.log)" >&2; exit 1; }
wrk -t1 -c4 -d3s -s "$OUT_DIR/post.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions" >/dev/null
callgrind_control -z >/dev/null
wrk -t1 -c4 -d"${SECS}s" -s "$OUT_DIR/post.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions" > "$OUT_DIR/wrk.txt"
callgrind_control -d >/dev/null
reqs=$(awk '/requests in/ {print $1}' "$OUT_DIR/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$OUT_DIR/wrk.txt"); non2xx=${non2xx:-0}
f=$(ls -t "$OUT_DIR"/callgrind.out* | head -1)
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
echo "requests: $reqs (non-2xx: $non2xx)  instructions: $ir  per request: $(( ir / reqs ))"
echo "profile: $f (callgrind_annotate --inclusive=yes $f | head -60)"
