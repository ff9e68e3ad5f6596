# Issue 19: "skip invalid lines" records the lines it left out on the job.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0008_politeness"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="skipped",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Lines left out by 'skip invalid lines': [{index, line?, value, error}], at most 1000.",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="skipped_urls",
            field=models.PositiveIntegerField(
                default=0, help_text="Submitted URLs left out as invalid (skip invalid lines); all are counted."
            ),
        ),
    ]
