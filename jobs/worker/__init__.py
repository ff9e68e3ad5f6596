"""The worker process behind `manage.py runworker`: asyncio orchestration of claims, fetches and writes.

It joins jobs through the queue (jobs/queue/), runs them through the engine
(jobs/engine/) and publishes progress (jobs/progress/); its database
connections and outage handling live here too.
"""
