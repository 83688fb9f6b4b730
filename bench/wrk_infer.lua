-- wrk script: POST one prebuilt KServe v2 infer body (binary tensor extension) over and over.
-- usage: wrk -t1 -cN -dDs -s bench/wrk_infer.lua URL -- BODY_FILE HEADER_LEN OUT_JSON
local body_file, header_len, out_json
local non200 = 0

function init(args)
  body_file, header_len, out_json = args[1], args[2], args[3]
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = header_len
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local f = assert(io.open(out_json, "w"))
  local errs = summary.errors
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, errs.status,
    errs.connect + errs.read + errs.write + errs.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  f:close()
end
