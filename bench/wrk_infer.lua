-- wrk script: POST one prebuilt KServe v2 infer body (binary tensor extension) over and over.
-- usage: WRK_OUT=OUT_JSON wrk -t1 -cN -dDs -s bench/wrk_infer.lua URL -- BODY_FILE HEADER_LEN
-- (done() runs in wrk's main Lua state, not the thread's that init() saw: hence the env var)
function init(args)
  local body_file, header_len = args[1], args[2]
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = header_len
end

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
