"""The fetch engine: pure asyncio + httpx, no Django (tests/test_architecture.py enforces it).

It fetches many URLs concurrently under bounded concurrency (worker-wide, per
job, per host) and returns one outcome value per URL: the client and its
transport, the SSRF guard, redirects, body reading and decoding, robots.txt and
per-host slots. The Django side turns a Job row into its `FetchOptions`
(jobs/worker/options.py) and stores the outcomes (jobs/queue/).

The modules, from the top: `pipeline` (`fetch_all`: a job's URLs through a
bounded queue) calls `fetch` (`fetch_one`: one URL in attempts, retried), which
calls `attempt` (redirect hops under one deadline), which reads each response
with `response` (headers, status, body through `decoding`). Beside them:
`values` (options, results, body sinks), `slots` (the caps a request runs
under, with `hostslots`), `errors` (exception to error class), `client`
(the shared `FetchClient` on `transport`), `netguard` (SSRF) and `robots`.
"""
