-- wrk script: plain GETs, summary to $WRK_OUT (run from the repository root).
dofile("bench/wrk_report.lua")
