-- wrk script: each request is sent as the next user of the file named by
-- BENCH_TOKENS (lines `user<TAB>token`, from `dwp-bench tokens`), with the
-- headers a signed-in frontend sends: Authorization, X-Tenant-ID, X-User-ID.
-- The requests are formatted once, in init, so the load costs wrk no more
-- per request than a fixed request does.
local requests = {}
local next_one = 0

function init(args)
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    local user, token = line:match("^(%S+)\t(%S+)$")
    if user then
      requests[#requests + 1] = wrk.format("GET", wrk.path, {
        ["Authorization"] = "Bearer " .. token,
        ["X-Tenant-ID"] = "1",
        ["X-User-ID"] = user,
      })
    end
  end
  -- Each wrk thread starts at its own place in the list.
  next_one = math.random(#requests) - 1
end

function request()
  next_one = next_one % #requests + 1
  return requests[next_one]
end
