"""The fuzzers run a real gateway in front of the fakes (the end-to-end fixtures)."""

from tests.e2e.conftest import _clean_fakes as _clean_fakes
from tests.e2e.conftest import fakes as fakes
