from click.testing import CliRunner

from img2img import __version__
from img2img.cli import cli


def test_help_lists_the_seven_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("translate", "upscale", "train", "eval", "weights", "data", "serve"):
        assert f"  {name}" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
