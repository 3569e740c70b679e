from functools import partial

import pytest

from taq_runtime.testing import run_command


@pytest.fixture
def calib_cli():
    return partial(run_command, "taq_calib")
