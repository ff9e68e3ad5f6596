"""Monitoring: schedules that re-run a URL list, what changed since the previous run, and notifications.

The models live in jobs/monitoring_models.py (a top-level module that jobs/models.py imports, so they
belong to the `jobs` app and the package graph stays a DAG): Schedule, ScheduleRun (one per due tick,
started or skipped), JobMonitor (a job's schedule, its previous run, whom to notify), Change, Delivery,
DeliveryAttempt and WebhookSecret.

- inputs: validating schedules and notify_* fields (cron via cronsim, interval, time zone);
- schedules: next ticks, and the tick every worker runs (exactly one job per due tick);
- changes: the comparison with the previous run, in SQL, one query per batch of positions;
- settle: when a monitored job ends, its changes and notifications, once;
- webhooks: signing (HMAC-SHA256), taking, sending and recording deliveries, retries;
- ticker: the worker's periodic pass over all of it (jobs/worker/runner.py calls it from its loop);
- links, history, serialize: re-run links, a schedule's history and sparkline, plain-dict views.
"""
