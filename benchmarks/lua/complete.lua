-- PATCH /promises/{id} {"state":"RESOLVED"} on distinct, existing, PENDING ids (read from
-- TROTH_BENCH_IDS): one durable update (fsynced) per request.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local ids, i = nil, 0

function init(args)
  ids = load_ids()
end

function request()
  i = i + 1
  local id = ids[i]
  if id == nil then
    return exhausted_request()
  end
  return complete_request(id)
end

function response(status, headers, body)
  count_response(status)
end
