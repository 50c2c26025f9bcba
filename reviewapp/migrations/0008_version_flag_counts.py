from django.db import migrations, models
from django.db.models import Count


def count_flags(apps, schema_editor):
    """Fill in the counts of the versions scored before they were kept."""
    ModelVersion = apps.get_model("reviewapp", "ModelVersion")
    ImageScore = apps.get_model("reviewapp", "ImageScore")
    for version in ModelVersion.objects.filter(flag_counts__isnull=True).only("pk"):
        rows = (
            ImageScore.objects.filter(version_id=version.pk, flagged=True)
            .values_list("label_id", "predicted_id", "split")
            .annotate(n=Count("id"))
            .order_by("label_id", "predicted_id", "split")
        )
        version.flag_counts = [list(row) for row in rows]
        version.save(update_fields=["flag_counts"])


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0007_review_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="flag_counts",
            field=models.JSONField(
                blank=True,
                help_text="Flagged scores as [label id, predicted id, split, count] rows.",
                null=True,
            ),
        ),
        migrations.RunPython(count_flags, migrations.RunPython.noop),
    ]
