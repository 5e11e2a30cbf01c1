-- wrk script: POST /v1/record (authorise and record one API call) with a fresh id per request.
--
-- Environment: METERWERK_TENANTS and METERWERK_KEYS, comma-separated and in the same order
-- (each request goes to the next tenant, with that tenant's usage key); METERWERK_RUN, a
-- prefix unique to this run, because an id reused with the same content would be answered
-- from the account's idempotency window instead of being charged again.
--
--   METERWERK_TENANTS=api-0 METERWERK_KEYS=mwk_… METERWERK_RUN=$RANDOM \
--     wrk -t2 -c64 -d10s --latency -s load_tests/record.lua http://127.0.0.1:8080/v1/record

-- common.lua is found beside this script, wherever wrk is started from.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")
setup = common.setup

function init(args)
  accounts = common.accounts()
  prefix = common.prefix(thread_id)
  meter = os.getenv("METERWERK_METER") or "api_calls"
  counter = 0
end

function request()
  counter = counter + 1
  local account = accounts[counter % #accounts + 1]
  local body = '{"id":"' .. prefix .. counter .. '","tenant":"' .. account.tenant
    .. '","meter":"' .. meter .. '"}'
  return wrk.format("POST", nil, account.headers, body)
end
