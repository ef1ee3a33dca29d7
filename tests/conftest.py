import pytest

from tests.factories import make_practice


@pytest.fixture
def practice(db):
    return make_practice(slug="riverside")


@pytest.fixture
def au_practice(db):
    return make_practice(slug="harbour", pms="bestpractice")
