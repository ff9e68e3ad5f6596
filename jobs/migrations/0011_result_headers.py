# Issue 19: the result's detail shows the response headers; a nullable column, added in place.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0010_monitoring"),
    ]

    operations = [
        migrations.AddField(
            model_name="result",
            name="headers",
            field=models.JSONField(
                blank=True,
                null=True,
                help_text="The last response's headers, [name, value] pairs (Set-Cookie •••).",
            ),
        ),
    ]
