"""The check the input-check tests (tests/test_input_checks_data.py and
test_input_checks_commands.py) make of a command that must refuse its inputs: exit 2 and one
error line. conftest.py's ``no_models`` fixture makes sure no model loaded before it."""

from hmdiff_ros.cli import main


def refused(argv, capsys, *expected) -> str:
    """Runs ``hmdiff argv``: exit 2 and one error line that holds every ``expected`` text."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    for text in expected:
        assert text in err[0], err[0]
    return err[0]
