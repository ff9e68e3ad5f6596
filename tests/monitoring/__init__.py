"""Tests of jobs/monitoring/: schedules, changes, notifications (in-process, live workers, the browser)."""
