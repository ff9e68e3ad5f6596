"""The fetch engine: pure asyncio + httpx, no Django (tests/test_architecture.py enforces it).

It fetches many URLs concurrently under bounded concurrency (worker-wide, per
job, per host) and returns one outcome value per URL: the client and its
transport, the SSRF guard, redirects, body reading and decoding, robots.txt and
per-host slots. The Django side turns a Job row into its `FetchOptions`
(jobs/worker/options.py) and stores the outcomes (jobs/queue/).
"""
