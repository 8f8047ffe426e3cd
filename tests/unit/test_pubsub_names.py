"""Pub/Sub names: each wrong value is named with what is wrong, and the pipeline's flag check uses the rule."""

from __future__ import annotations

import pytest

from pipeline.options import ArchiveOptions, validate
from transforms.core.pubsub_names import problem


@pytest.mark.parametrize("path", ["projects/local-project/subscriptions/remote-write-pipeline",
                                  "projects/example.com:proj/subscriptions/a.b_c~d%e+f-g", "projects/p/subscriptions/" +
                                  "s" * 255])
def test_valid_names_pass(path: str) -> None:
    assert problem(path, "subscription") is None


@pytest.mark.parametrize("path,fragment", [
    (None, "is required, as projects/PROJECT/subscriptions/NAME"),
    ("remote-write-pipeline", "is not of the form projects/PROJECT/subscriptions/NAME"),
    ("projects/p/topics/abc", "is not of the form projects/PROJECT/subscriptions/NAME"),
    ("projects/local-project/subscriptions/pq", "the subscription name 'pq' has 2 characters; Pub/Sub needs 3 to 255"),
    ("projects/p/subscriptions/" + "s" * 256, "has 256 characters"),
    ("projects/p/subscriptions/9lives", "must start with a letter"),
    ("projects/p/subscriptions/a b!c", "holds ' !'; allowed are letters, digits and - . _ ~ % +"),
    ("projects/p/subscriptions/google-sub", "must not start with 'goog'"),
    ("projects/my project/subscriptions/abc", "project id 'my project' may hold only"),
])
def test_each_problem_is_named(path: str | None, fragment: str) -> None:
    found = problem(path, "subscription")
    assert found is not None and fragment in found, found


def test_the_pipeline_reports_the_rule_for_input_subscription() -> None:
    options = ArchiveOptions(["--input_subscription=projects/local-project/subscriptions/pq"])
    assert validate(options) == ["--input_subscription 'projects/local-project/subscriptions/pq': the subscription "
                                 "name 'pq' has 2 characters; Pub/Sub needs 3 to 255"]
