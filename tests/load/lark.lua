-- wrk script: replays the deliveries written by `loadgen make` (one per request, each thread its own
-- slice), as signed, encrypted POSTs. Usage:
--   wrk -t2 -c32 -d20s -s tests/load/lark.lua http://127.0.0.1:7777/webhook/event -- /tmp/load.tsv
local lines = {}
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local path = args[1] or "/tmp/load.tsv"
  for line in io.lines(path) do
    lines[#lines + 1] = line
  end
  -- With -t2 the two threads take odd and even lines, so no event is sent twice.
  pos = id + 1
  step = 2
end

function request()
  local line = lines[pos]
  if line == nil then
    pos = id + 1
    line = lines[pos]
  end
  pos = pos + step
  local ts, nonce, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json; charset=utf-8",
    ["X-Lark-Request-Timestamp"] = ts,
    ["X-Lark-Request-Nonce"] = nonce,
    ["X-Lark-Signature"] = sig,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d, errors: status %d, connect %d, read %d, timeout %d\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.timeout))
  for _, p in pairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("p%g latency: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
