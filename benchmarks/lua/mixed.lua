-- Half creates of new ids, half completes of preloaded PENDING ids (TROTH_BENCH_IDS),
-- alternating request by request. (wrk cannot tie a response to the connection that sent
-- it, so a create-then-resolve of the *same* id per connection is not expressible here; the
-- write mix and the storage work are the same.)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local ids, i, n = nil, 0, 0

function init(args)
  ids = load_ids()
  base = "m-" .. nonce .. "-" .. tid .. "-"
  creates = 0
end

function request()
  n = n + 1
  if n % 2 == 1 then
    creates = creates + 1
    return create_request(base .. creates)
  end
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
