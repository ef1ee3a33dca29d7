from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('practices', '0002_practice_booking_url_practice_min_age_sms_and_more'),
    ]

    operations = [
        migrations.AddField(
            model_name='practice',
            name='hl7_ack_mode',
            field=models.CharField(choices=[('commit', 'ACK once stored (commit accept)'), ('original', 'ACK once applied (original mode)')], default='commit', max_length=8),
        ),
        migrations.AddField(
            model_name='practice',
            name='pms_id_system',
            field=models.CharField(blank=True, default='', max_length=200),
        ),
    ]
