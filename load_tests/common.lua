-- What record.lua and events.lua share: the tenants with their keys, thread numbers and id
-- prefixes.
local common = {}

local function split(text)
  local parts = {}
  for part in string.gmatch(text or "", "[^,]+") do
    table.insert(parts, part)
  end
  return parts
end

-- Each tenant with the headers its requests carry (its own usage key).
function common.accounts()
  local tenants = split(os.getenv("METERWERK_TENANTS"))
  local keys = split(os.getenv("METERWERK_KEYS"))
  assert(#tenants > 0 and #tenants == #keys, "METERWERK_TENANTS and METERWERK_KEYS must match")
  local accounts = {}
  for i, tenant in ipairs(tenants) do
    accounts[i] = {
      tenant = tenant,
      headers = {
        ["Authorization"] = "Bearer " .. keys[i],
        ["Content-Type"] = "application/json",
      },
    }
  end
  return accounts
end

-- wrk's setup(thread), run in the main state for each thread: numbers the threads, so that
-- each has a thread_id of its own (see common.prefix). A script takes it with
-- `setup = common.setup`.
local threads = 0

function common.setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

-- Ids are "<run>-<thread>-<counter>": unique per request across the threads of one run.
function common.prefix(thread_id)
  return (os.getenv("METERWERK_RUN") or "run") .. "-" .. thread_id .. "-"
end

return common
