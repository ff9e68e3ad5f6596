"""Django admin: the job history (job_admin) and API tokens (token_admin).

Importing this package registers both with the admin site (Django imports
`jobs.admin` at start-up, through admin autodiscovery).
"""

from jobs.admin import job_admin, monitoring_admin, token_admin  # noqa: F401  (registers the ModelAdmins)
