"""docs/alerts.md, "Event payloads": the JSON schemas there are what the code sends,
for webhook bodies (alerts.services.alert_payload) and the sockets' alert messages
(alerts.selectors.alert_as_dict), checked with jsonschema, formats included."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
from django.utils import timezone

from alerts.selectors import alert_as_dict
from alerts.services import alert_acknowledge_by_member, alert_payload
from alerts.tests.web_fixtures import fire

DOC = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"

pytestmark = pytest.mark.django_db


def _section_schemas() -> dict[str, dict]:
    text = DOC.read_text()
    section = text.split("## Event payloads", 1)[1].split("\n## ", 1)[0]
    schemas = {}
    for block in re.findall(r"```json\n(.*?)```", section, re.S):
        value = json.loads(block)
        if "$schema" in value:
            schemas[value["$id"].rsplit("/", 1)[1]] = value
    return schemas


def _validate(schema, value):
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(value)


def test_the_doc_has_both_schemas_and_a_valid_example():
    schemas = _section_schemas()
    assert set(schemas) == {"alert-webhook.json", "alert-live.json"}
    section = DOC.read_text().split("## Event payloads", 1)[1]
    example = json.loads(re.findall(r"```json\n(.*?)```", section, re.S)[1])
    _validate(schemas["alert-webhook.json"], example)


@pytest.mark.parametrize("event", ["fired", "renotify", "resolved"])
def test_webhook_bodies_match(pool_a, event):
    alert = fire(pool_a, kind="device_offline", value=None, threshold=30)
    if event == "resolved":
        alert.state, alert.resolved_at = "resolved", timezone.now()
    body = json.loads(json.dumps(alert_payload(alert=alert, event=event)))
    _validate(_section_schemas()["alert-webhook.json"], body)


def test_live_messages_match(pool_a, olivia):
    schema = _section_schemas()["alert-live.json"]
    alert = fire(pool_a)
    _validate(schema, json.loads(json.dumps(alert_as_dict(alert))))
    alert = alert_acknowledge_by_member(membership=olivia, alert=alert)
    live = json.loads(json.dumps(alert_as_dict(alert)))
    assert live["acknowledged_by"] == "olivia@acme.test"
    _validate(schema, live)
    with pytest.raises(jsonschema.ValidationError):
        _validate(schema, {**live, "secret": "x"})
