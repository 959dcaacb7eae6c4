-- wrk script: POST a fixed JSON body with a bearer token; report percentiles (including p99.9) as JSON.
-- Environment: BENCH_TOKEN or BENCH_TOKENS, BENCH_BODY.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- BENCH_TOKENS (space-separated) instead: each request takes the next token in turn, e.g. one per organization.
local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKENS") or "", "%S+") do
  tokens[#tokens + 1] = t
end
if #tokens > 0 then
  local next_token = 0
  request = function()
    next_token = next_token % #tokens + 1
    wrk.headers["Authorization"] = "Bearer " .. tokens[next_token]
    return wrk.format()
  end
end

function done(summary, latency, requests)
  local statuses = summary.errors.status or 0
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "p999_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    statuses, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
