-- wrk script: POST /v1/events, batch ingestion of METERWERK_BATCH events (default 1,000, the
-- most one request may carry) per request, each event with an id of its own.
--
-- Environment as for record.lua: METERWERK_TENANTS, METERWERK_KEYS, METERWERK_RUN; a request
-- carries the events of one tenant (a usage key acts for one tenant tree), the next request
-- those of the next tenant.

-- common.lua is found beside this script, wherever wrk is started from.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")
setup = common.setup

function init(args)
  accounts = common.accounts()
  prefix = common.prefix(thread_id)
  local meter = os.getenv("METERWERK_METER") or "api_calls"
  local size = tonumber(os.getenv("METERWERK_BATCH") or "1000")
  -- The body is built once per tenant with "@" where each id's request-unique part goes;
  -- one gsub per request fills it in, so that the generator spends little time per event.
  for _, account in ipairs(accounts) do
    local events = {}
    for i = 1, size do
      events[i] = '{"id":"@' .. i .. '","tenant":"' .. account.tenant .. '","meter":"'
        .. meter .. '"}'
    end
    account.template = '{"events":[' .. table.concat(events, ",") .. ']}'
  end
  counter = 0
end

function request()
  counter = counter + 1
  local account = accounts[counter % #accounts + 1]
  local body = string.gsub(account.template, "@", prefix .. counter .. "-")
  return wrk.format("POST", nil, account.headers, body)
end

-- A refusal is printed with its status and the error's code (a request of this script is
-- slow enough for wrk to call Lua on each answer): the benchmark reports what they were.
function response(status, headers, body)
  if status > 299 then
    io.write("meterwerk-refused " .. status .. " " .. (body:match('"code":"([%w_]+)"') or "-")
      .. "\n")
  end
end
