"""One network for the whole privacy suite: started, driven through every scenario and
stopped once (the slowest part is waiting for a request to expire); every test then reads
the data directory it left, or a copy of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from semops.privacy import ExposureReport, check_exposure
from tests.privacy.story import Story, run_story


@pytest.fixture(scope="session")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    yield run_story(tmp_path_factory.mktemp("privacy-net"))


@pytest.fixture(scope="session")
def clean_report(story: Story) -> ExposureReport:
    return check_exposure(story.data_dir, story.extra_data())
