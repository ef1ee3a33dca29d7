from django.apps import AppConfig


class Hl7v2Config(AppConfig):
    """The HL7 v2 connector's own tables: the MLLP inbox (and its dead letters)."""

    name = "practicesync.connectors.hl7v2"
    label = "hl7v2"
    verbose_name = "HL7 v2"
