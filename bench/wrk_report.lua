-- Shared by the wrk scripts: write the run's summary as one JSON line to $WRK_OUT.
-- (done() runs in wrk's main Lua state, not the one init() saw: hence the env var)
function done(summary, latency, requests)
  local f = assert(io.open(os.getenv("WRK_OUT"), "w"))
  local errs = summary.errors
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, errs.status,
    errs.connect + errs.read + errs.write + errs.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  f:close()
end
