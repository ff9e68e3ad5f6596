"""Running Batchfetch in production: metrics, health checks, retention, structured logs.

metrics (Prometheus: the worker's counters and the web's database gauges),
health (database and Redis reachable, for /readyz and `runworker --check`),
retention (purging old finished jobs with their rows and bodies), logs (JSON
log lines with the job and worker ids). The worker (jobs/worker/) and the web
(jobs/web/) build on these; nothing here imports them.
"""
