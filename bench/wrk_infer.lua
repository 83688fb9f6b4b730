-- wrk script: POST one prebuilt KServe v2 infer body (binary tensor extension) over and over.
-- usage (from the repository root):
--   WRK_OUT=OUT_JSON wrk -t1 -cN -dDs -s bench/wrk_infer.lua URL -- BODY_FILE HEADER_LEN
dofile("bench/wrk_report.lua")

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = args[2]
end
