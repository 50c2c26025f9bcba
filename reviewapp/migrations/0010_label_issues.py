"""Out-of-fold scoring, rankings, duplicates and outliers."""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0009_rollout_serving"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='LabelAudit',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('mode', models.CharField(choices=[('full', 'Full: one model trained per fold'), ('fast', "Fast: a linear head per fold on the model's embeddings")], default='fast', max_length=4)),
                ('k', models.PositiveSmallIntegerField(default=5, validators=[django.core.validators.MinValueValidator(2), django.core.validators.MaxValueValidator(20)])),
                ('seed', models.PositiveIntegerField(default=42)),
                ('config', models.JSONField(blank=True, default=dict, help_text="Full mode's TrainConfig.")),
                ('vocab', models.JSONField(blank=True, default=list, help_text='Class names, column order.')),
                ('snapshot', models.JSONField(blank=True, default=list)),
                ('status', models.CharField(choices=[('pending', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='pending', max_length=10)),
                ('phase', models.CharField(choices=[('queued', 'Waiting for a training worker'), ('preparing', 'Assigning folds and embedding the images'), ('folds', 'Scoring the folds'), ('finishing', 'Ranking labels, finding near-duplicates and outliers'), ('done', 'Done')], default='queued', max_length=10)),
                ('folds_finished', models.JSONField(blank=True, default=list, help_text='Fold numbers done.')),
                ('n_images', models.PositiveIntegerField(default=0)),
                ('estimated_issues', models.PositiveIntegerField(blank=True, null=True)),
                ('n_issues', models.PositiveIntegerField(blank=True, null=True)),
                ('n_duplicate_groups', models.PositiveIntegerField(blank=True, null=True)),
                ('n_leaks', models.PositiveIntegerField(blank=True, null=True)),
                ('thresholds', models.JSONField(blank=True, default=list, help_text='Per-class thresholds.')),
                ('error_message', models.TextField(blank=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='label_audits', to='reviewapp.project')),
                ('version', models.ForeignKey(help_text='The model whose body embeds the images (fast mode, duplicates, outliers).', on_delete=django.db.models.deletion.CASCADE, related_name='label_audits', to='reviewapp.modelversion')),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='AuditScore',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('probabilities', models.JSONField(help_text="Out-of-fold, in the audit's vocab order.")),
                ('fold', models.PositiveSmallIntegerField()),
                ('split', models.CharField(choices=[('train', 'Train'), ('valid', 'Valid')], max_length=5)),
                ('loss', models.FloatField()),
                ('self_confidence', models.FloatField()),
                ('margin', models.FloatField(blank=True, help_text='Normalized margin.', null=True)),
                ('is_issue', models.BooleanField(default=False, help_text='Confident learning calls it wrong.')),
                ('outlier_score', models.FloatField(blank=True, null=True)),
                ('duplicate_group', models.IntegerField(blank=True, null=True)),
                ('leaks', models.BooleanField(default=False, help_text='A near-duplicate of it is in the other split.')),
                ('image', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='audit_scores', to='reviewapp.image')),
                ('label', models.ForeignKey(blank=True, help_text="The image's label when it was audited.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='reviewapp.category')),
                ('predicted', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='reviewapp.category')),
                ('audit', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='scores', to='reviewapp.labelaudit')),
            ],
            options={
                'ordering': ['-loss'],
            },
        ),
        migrations.AddIndex(
            model_name='labelaudit',
            index=models.Index(fields=['project', '-id'], name='reviewapp_l_project_61af3c_idx'),
        ),
        migrations.AddIndex(
            model_name='auditscore',
            index=models.Index(fields=['audit', '-loss', 'id'], name='reviewapp_a_audit_i_6778af_idx'),
        ),
        migrations.AddIndex(
            model_name='auditscore',
            index=models.Index(fields=['audit', 'self_confidence', 'id'], name='reviewapp_a_audit_i_58f27f_idx'),
        ),
        migrations.AddIndex(
            model_name='auditscore',
            index=models.Index(fields=['audit', 'margin', 'id'], name='reviewapp_a_audit_i_60ad39_idx'),
        ),
        migrations.AddIndex(
            model_name='auditscore',
            index=models.Index(fields=['audit', '-is_issue', 'margin', 'id'], name='reviewapp_a_audit_i_c42992_idx'),
        ),
        migrations.AddIndex(
            model_name='auditscore',
            index=models.Index(fields=['audit', '-outlier_score', 'id'], name='reviewapp_a_audit_i_77cd8e_idx'),
        ),
        migrations.AddIndex(
            model_name='auditscore',
            index=models.Index(fields=['audit', '-leaks', 'duplicate_group', 'id'], name='reviewapp_a_audit_i_511b1f_idx'),
        ),
        migrations.AddConstraint(
            model_name='auditscore',
            constraint=models.UniqueConstraint(fields=('audit', 'image'), name='auditscore_unique_image'),
        ),
    ]
