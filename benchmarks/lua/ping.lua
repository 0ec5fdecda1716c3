-- GET /ping: the server's ceiling for a request that does no storage work.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = "/ping"
-- No request()/response(): wrk sends the static request at full speed and counts non-2xx
-- itself (summary.errors.status).
