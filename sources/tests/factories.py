import factory

from sources.models import Source


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source

    name = factory.Sequence(lambda n: f"source-{n}")
    pg_host = "127.0.0.1"
    pg_port = 5432
    pg_database = "app"
    pg_username = "replicator"
    pg_password = "source-secret-password"
    publication_name = factory.Sequence(lambda n: f"rosetta_pub_{n}")
    slot_name = factory.Sequence(lambda n: f"rosetta_slot_{n}")
