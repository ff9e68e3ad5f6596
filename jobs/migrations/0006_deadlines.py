from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0005_shares_and_chunks"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="url_deadline",
            field=models.FloatField(
                blank=True, null=True, help_text="Seconds one URL may take over all its attempts and waits (empty: no limit)."
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="job_deadline",
            field=models.FloatField(
                blank=True, null=True, help_text="Seconds the job may run from its start (empty: no limit)."
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="deadline_at",
            field=models.DateTimeField(
                blank=True, null=True, help_text="When the job deadline passes (set when the job starts)."
            ),
        ),
    ]
