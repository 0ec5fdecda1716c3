-- POST /promises with a new id every request: one durable insert (fsynced) per request.
-- id = <prefix>-<nonce>-<thread>-<counter>; prefix from TROTH_BENCH_PREFIX (default "c").
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local prefix = os.getenv("TROTH_BENCH_PREFIX") or "c"
local n = 0

function init(args)
  base = prefix .. "-" .. nonce .. "-" .. tid .. "-"
end

function request()
  n = n + 1
  return create_request(base .. n)
end

function response(status, headers, body)
  count_response(status)
end
