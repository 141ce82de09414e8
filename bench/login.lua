-- wrk script for scenario (e): POST the gateway's login form, count real sign-ins.
--
-- The CSRF token is HMAC(secret, nonce) and the nonce lives in a cookie, so one
-- pair fetched beforehand (bench/run.py does it) is valid for every POST: the
-- body and the Cookie header are static. run.py passes them in the environment:
--   BENCH_LOGIN_BODY    url-encoded form: csrf_token, rd, username, password
--   BENCH_LOGIN_COOKIE  "gateway_session_csrf=<nonce>"
-- Each response is counted by status: 303 is a successful sign-in (a new
-- session row and an Argon2 verification); anything else is an error.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_LOGIN_BODY") or ""
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = os.getenv("BENCH_LOGIN_COOKIE") or ""

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  signed_in = 0
  other = 0
end

function response(status, headers, body)
  if status == 303 then
    signed_in = signed_in + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("signed_in")
    bad = bad + thread:get("other")
  end
  io.write(string.format("LOGIN_303 %d\nLOGIN_OTHER %d\n", ok, bad))
end
