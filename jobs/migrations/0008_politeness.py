# Issue 13: per-host rate and autothrottle, held across all workers.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0007_requests"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="per_host_rate",
            field=models.FloatField(
                blank=True, null=True, help_text="Requests per second to one host over all workers (empty: no rate)."
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="autothrottle",
            field=models.BooleanField(
                default=False, help_text="Adapt the per-host concurrency to the host's latency and 429/503 answers."
            ),
        ),
    ]
