-- wrk script: GET /api/v1/titles/{id} over the seed's 1000 titles, in a
-- fixed pseudo-random order per thread (so runs are comparable).
--   wrk -t2 -c32 -d10s --latency -s scripts/bench/wrk-titles.lua http://127.0.0.1:8080
local n = 0
function setup(thread)
  n = n + 1
  thread:set("seed", n)
end
function init(args)
  math.randomseed(seed or 1)
end
function request()
  local id = string.format("t%05d", math.random(1, 1000))
  return wrk.format("GET", "/api/v1/titles/" .. id)
end
