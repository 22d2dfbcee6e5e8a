"""The documentation: the configuration reference follows the schema."""

from conftest import ROOT
from corereg.config_doc import load_schema, render


def test_configuration_page_is_generated_from_the_schema():
    page, missing = render(load_schema(ROOT))
    assert missing == [], f"schema properties without a description: {missing}"
    assert (ROOT / "docs" / "configuration.md").read_text() == page, (
        "docs/configuration.md differs from the schema: run `python -m corereg config-doc`"
    )


def test_a_missing_description_is_reported():
    schema = load_schema(ROOT)
    del schema["properties"]["engine"]["properties"]["stages"]["description"]
    _, missing = render(schema)
    assert missing == ["engine.stages"]
