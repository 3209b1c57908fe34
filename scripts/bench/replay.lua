-- scripts/bench/replay.lua -- wrk script: cycles through the requests of a file, one request
-- per line, METHOD <tab> PATH <tab> TOKEN <tab> BODY <tab> HEADERS (TOKEN "-" = no bearer
-- token; BODY and HEADERS may be absent; HEADERS = "Name: value" lines separated by 0x1f), the
-- same format as gpload's. Each wrk thread starts at a different place in the
-- file, so with enough lines every request comes from another worker.
--
--   wrk -t2 -c64 -d10s -s scripts/bench/replay.lua http://127.0.0.1:PORT -- FILE
--
-- done() prints one line that scripts/bench.sh parses:
--   WRK requests=... duration_us=... rps=... p50_us=... p99_us=... p999_us=... max_us=...
--   errors_connect=... errors_read=... errors_write=... errors_status=... errors_timeout=...
-- (errors_status counts answers with a status >= 400.)

local threads_made = 0

function setup(thread)
   thread:set("tid", threads_made)
   threads_made = threads_made + 1
end

local reqs = {}
local pos = 0

function init(args)
   local file = args[1]
   if not file then
      error("replay.lua: give the request file after --")
   end
   for line in io.lines(file) do
      local method, path, token, body, extra =
         line:match("^([^\t]+)\t([^\t]+)\t?([^\t]*)\t?([^\t]*)\t?(.*)$")
      if method then
         local headers = {}
         if token ~= "" and token ~= "-" then
            headers["Authorization"] = "Bearer " .. token
         end
         for h in extra:gmatch("[^\31]+") do
            local name, value = h:match("^([^:]+):%s*(.*)$")
            if name then
               headers[name] = value
            end
         end
         if body == "" then
            body = nil
         else
            headers["Content-Type"] = "application/json"
         end
         reqs[#reqs + 1] = wrk.format(method, path, headers, body)
      end
   end
   if #reqs == 0 then
      error("replay.lua: no requests in " .. file)
   end
   pos = math.floor((tid or 0) * #reqs / 2) % #reqs
end

function request()
   pos = pos + 1
   if pos > #reqs then
      pos = 1
   end
   return reqs[pos]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d " ..
      "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
