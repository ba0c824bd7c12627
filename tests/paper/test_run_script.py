"""``run_script``: a script's exit status from what its ``main()`` returns or raises."""

import pytest

from balf.errors import BALFError
from balf_paper.experiments.cli.options import run_script


def _exit_code(main) -> int | str | None:
    with pytest.raises(SystemExit) as exc:
        run_script(main)
    return exc.value.code


@pytest.mark.parametrize(
    "returned, code", [(None, 0), (0, 0), (3, 3), ({"points": [1]}, 0), ([], 0)]
)
def test_exit_status_follows_the_returned_value(returned, code):
    assert _exit_code(lambda: returned) == code


def test_a_library_error_exits_2_with_the_message(capsys):
    def main():
        raise BALFError("dataset missing: expected datasets/x/train/<class>/*")

    assert _exit_code(main) == 2
    assert "dataset missing" in capsys.readouterr().err
