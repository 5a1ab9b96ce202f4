-- wrk script for bench/bench_service.py: POST one resolve request body again and again.
--
--   wrk ... -s bench_service.lua URL -- BODY_FILE [vary]
--
-- BODY_FILE holds the JSON body. With "vary", every request names a new host in its snapshot
-- (the body's "@HOST@" becomes a number unique to each request), so no two requests carry the
-- same snapshot: the service has to read and set up every one of them afresh.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "r"))
  local body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[2] == "vary" then
    local at = assert(string.find(body, "@HOST@", 1, true), "no @HOST@ in the body")
    before, after = string.sub(body, 1, at - 1), string.sub(body, at + 6)
  else
    wrk.body = string.gsub(body, "@HOST@", "hv3")
  end
end

function request()
  if before == nil then
    return wrk.request()
  end
  counter = counter + 1
  return wrk.format(nil, nil, nil, before .. "hv-" .. id .. "-" .. counter .. after)
end
