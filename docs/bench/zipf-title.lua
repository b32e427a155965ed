-- wrk script for the docs/LOAD.md comparison: GET /api/v1/titles/{id}
-- with Zipf(s = 1) keys over t00001…t01000, the same skew `fleet load
-- --mix title --zipf 1` draws. Run: wrk -t2 -c64 -d15s -s zipf-title.lua URL
local n, s = 1000, 1.0
local cdf, acc = {}, 0
for k = 1, n do
  acc = acc + 1 / (k ^ s)
  cdf[k] = acc
end
for k = 1, n do
  cdf[k] = cdf[k] / acc
end

math.randomseed(os.time())

request = function()
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", string.format("/api/v1/titles/t%05d", lo))
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    "wrk-summary requests=%d rate=%.1f errors=%d non2xx=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p99.9_ms=%.3f max_ms=%.3f\n",
    summary.requests, summary.requests / secs,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000))
end
