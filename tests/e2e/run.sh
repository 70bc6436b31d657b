#!/usr/bin/env bash
# End-to-end tests of `kiln serve` with the real engine on a tiny model:
# the Python suite (stdlib HTTP, raw sockets, 64 concurrent streams, SIGTERM)
# and the official openai npm client. Needs a built `kiln` (KILN_BINARY,
# default build/kiln) and the shared test data (KILN_SHARED_DIR).
#   tests/e2e/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export KILN_BINARY=${KILN_BINARY:-$root/build/kiln}
export KILN_SHARED_DIR=${KILN_SHARED_DIR:-$(cd "$root/.." && pwd)/shared}
[ -x "$KILN_BINARY" ] || { echo "tests/e2e: no kiln binary at $KILN_BINARY" >&2; exit 2; }

rc=0
python3 "$here/test_server_e2e.py" || rc=1
python3 "$here/test_loadtest_e2e.py" || rc=1  # kiln loadtest sweep/run/replay, ~30 s
python3 "$here/test_bake_e2e.py" || rc=1
python3 "$here/test_cache_e2e.py" || rc=1   # response caches: Redis sharing, --cache-dir

if command -v node >/dev/null && command -v npm >/dev/null; then
  if [ ! -d "$here/node_modules/openai" ]; then
    (cd "$here" && npm install --no-audit --no-fund --silent) || { echo "tests/e2e: npm install openai failed" >&2; exit 1; }
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log=$(mktemp)
  "$KILN_BINARY" serve -m "${KILN_E2E_MODEL:-$KILN_SHARED_DIR/testdata/reference/llama3-f16.gguf}" \
      --host 127.0.0.1 --port "$port" --ctx-size 512 --chat-template "$here/chatml.jinja" \
      --model-name tiny --threads 2 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  node "$here/openai_client.mjs" "http://127.0.0.1:$port/v1" || { rc=1; cat "$log"; }
  # curl, as a user would: a streamed completion ends with [DONE]; a chat
  # answer has the OpenAI shape; a bad field names itself.
  base="http://127.0.0.1:$port"
  out=$(curl -sS -N "$base/v1/completions" -H 'Content-Type: application/json' \
        -d '{"prompt":"hello","max_tokens":4,"stream":true}')
  if echo "$out" | grep -q '^data: \[DONE\]' && echo "$out" | grep -q '"text_completion"'; then
    echo "ok   curl streamed completion"
  else echo "FAIL curl streamed completion: $out"; rc=1; fi
  out=$(curl -sS "$base/v1/chat/completions" -H 'Content-Type: application/json' \
        -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":3}')
  if echo "$out" | grep -q '"object":"chat.completion"' && echo "$out" | grep -q '"finish_reason"'; then
    echo "ok   curl chat completion"
  else echo "FAIL curl chat completion: $out"; rc=1; fi
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$base/v1/completions" \
         -H 'Content-Type: application/json' -d '{"prompt":"x","temperature":"hot"}')
  if [ "$code" = 400 ]; then echo "ok   curl bad request -> 400"; else echo "FAIL curl bad request -> $code"; rc=1; fi
  kill -TERM $pid; wait $pid || { echo "kiln serve exited non-zero after SIGTERM" >&2; rc=1; }
  rm -f "$log"
else
  echo "tests/e2e: node/npm not found; skipping the openai client tests" >&2
fi
exit $rc
