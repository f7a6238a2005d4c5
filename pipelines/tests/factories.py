import factory

from destinations.tests.factories import DestinationFactory
from pipelines.models import Pipeline, PipelineRun, PipelineTable
from sources.tests.factories import SourceFactory


class PipelineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pipeline

    name = factory.Sequence(lambda n: f"pipeline-{n}")
    source = factory.SubFactory(SourceFactory)
    destination = factory.SubFactory(DestinationFactory)


class PipelineTableFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PipelineTable

    pipeline = factory.SubFactory(PipelineFactory)
    schema_name = "public"
    table_name = factory.Sequence(lambda n: f"table_{n}")


class PipelineRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PipelineRun

    pipeline = factory.SubFactory(PipelineFactory)
    outcome = PipelineRun.Outcome.SUCCEEDED
    start_lsn = "0/1000000"
    end_lsn = "0/2000000"
    rows_inserted = 10
