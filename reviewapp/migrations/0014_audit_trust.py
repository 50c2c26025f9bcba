from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0013_backbone_weights"),
    ]

    operations = [
        migrations.AddField(
            model_name="labelaudit",
            name="oof_accuracy",
            field=models.FloatField(
                blank=True, help_text="Out-of-fold accuracy against the given labels.", null=True
            ),
        ),
        migrations.AddField(
            model_name="labelaudit",
            name="chance_accuracy",
            field=models.FloatField(
                blank=True, help_text="The largest class's share: always guessing it.", null=True
            ),
        ),
        migrations.AddField(
            model_name="labelaudit",
            name="version_accuracy",
            field=models.FloatField(
                blank=True, help_text="The version's own validation accuracy.", null=True
            ),
        ),
        migrations.AddField(
            model_name="labelaudit",
            name="issues_low",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="labelaudit",
            name="issues_high",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="labelaudit",
            name="trust",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="trainer.trust's whole assessment: per-class recall, warning, suggestions.",
            ),
        ),
    ]
