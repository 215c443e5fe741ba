-- wrk script: POST a JSON body read from the BODY_FILE environment variable.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
local auth = os.getenv("AUTH")
-- VARY=1: every request's body differs ("@N@" becomes a number of its own), so no
-- two requests are identical (the semantic cache scenario)
local vary = os.getenv("VARY") == "1"

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

if vary then
  sent = 0
  function request()
    sent = sent + 1
    local text = string.gsub(body, "@N@", tid .. "-" .. sent)
    return wrk.format(nil, nil, nil, text)
  end
end

function init(args)
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  if auth and auth ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. auth
  end
  bad = 0
end

-- A non-2xx answer, or a stream without [DONE], is a failure, never throughput.
function response(status, headers, resp_body)
  if status < 200 or status > 299 then
    bad = bad + 1
  elseif resp_body and string.find(resp_body, "chat.completion.chunk", 1, true)
      and not string.find(resp_body, "data: [DONE]", 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("bad")
  end
  io.write(string.format("BENCH %d %d %.3f %.3f %d\n",
    summary.requests, summary.duration, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, failed))
end
