"""What a CLI shows for an error: a :class:`twist.errors.TwistError` is one line and exit code 2;
anything else is a bug and keeps its traceback.

:func:`twist.cli.common.user_errors` wraps every stage's body, once, in ``hydra_cli``, so these
cases hold for every command. The last test runs one real command on a file a user could hand it.
"""

from __future__ import annotations

import errno

import pytest

from twist import errors
from twist.cli.common import user_errors

PROG = "twist-test"


def _raising(exc: BaseException):
    @user_errors(PROG)
    def body() -> None:
        raise exc

    return body


def _exit_line(body, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        body()
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("exc", [
    errors.ConfigError("train.max_steps: must be positive, got 0"),
    errors.InputError("data/pairs.jsonl:3: bad JSON line"),
    errors.MissingInputError("unit dataset not found: /nope"),
    errors.RunExistsError("/runs/a already holds a training run"),
    errors.ContractMismatch("unit contract mismatch between model and data:\n  n_units: model has 500, data has 200"),
    errors.UnsafeFileError("/m/pytorch_model.bin needs pickle"),
    errors.DiskFullError("cannot write /runs/a/metrics.jsonl: No space left on device"),
    errors.Diverged("10 non-finite steps in a row"),
], ids=lambda e: type(e).__name__)
def test_a_twist_error_is_one_line_and_exit_2(exc, capsys, monkeypatch):
    monkeypatch.delenv("TWIST_TRACEBACK", raising=False)
    line = _exit_line(_raising(exc), capsys)
    assert line == f"{PROG}: error: {' '.join(str(exc).split())}"


@pytest.mark.parametrize("exc", [
    KeyError("model"),
    ValueError("operands could not be broadcast together"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/tmp/x"),
    FileExistsError("/tmp/x"),
    RuntimeError("CUDA error: device-side assert triggered"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=lambda e: type(e).__name__)
def test_any_other_exception_keeps_its_traceback(exc, capsys, monkeypatch):
    monkeypatch.delenv("TWIST_TRACEBACK", raising=False)
    with pytest.raises(type(exc)) as got:
        _raising(exc)()
    assert got.value is exc
    assert capsys.readouterr().err == ""


def test_twist_traceback_reraises_a_twist_error(capsys, monkeypatch):
    monkeypatch.setenv("TWIST_TRACEBACK", "1")
    exc = errors.ConfigError("schedule.name: unknown schedule 'cosin'")
    with pytest.raises(errors.ConfigError) as got:
        _raising(exc)()
    assert got.value is exc
    assert capsys.readouterr().err == ""


def test_the_body_result_passes_through(monkeypatch):
    monkeypatch.delenv("TWIST_TRACEBACK", raising=False)

    @user_errors(PROG)
    def body(x: int, *, y: int) -> int:
        return x + y

    assert body(1, y=2) == 3


@pytest.mark.parametrize("cls, builtin", [
    (errors.ConfigError, ValueError), (errors.InputError, ValueError), (errors.ContractMismatch, ValueError),
    (errors.UnsafeFileError, ValueError), (errors.MissingInputError, FileNotFoundError),
    (errors.RunExistsError, FileExistsError), (errors.DiskFullError, OSError),
    (errors.Diverged, FloatingPointError),
])
def test_each_class_is_also_the_builtin_a_caller_catches(cls, builtin):
    assert issubclass(cls, errors.TwistError) and issubclass(cls, builtin)


def test_one_contract_mismatch_class():
    from twist.contract import ContractMismatchError

    assert ContractMismatchError is errors.ContractMismatch


def test_a_malformed_input_through_a_real_command_is_one_line(tmp_path, capsys, monkeypatch):
    """A unit contract that is not JSON, handed to twist-vocoder mode=convert: the refusal is
    raised deep in the library and still reaches the user as one line naming the file."""
    from hydra import compose, initialize_config_dir

    from twist.cli.common import CONFIGS
    from twist.cli.vocoder import main

    monkeypatch.delenv("TWIST_TRACEBACK", raising=False)
    bad = tmp_path / "contract.json"
    bad.write_text("{not json")
    ckpt, cfg_json = tmp_path / "g_00000001", tmp_path / "config.json"
    ckpt.write_bytes(b"")
    cfg_json.write_text("{}")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("vocoder", overrides=["mode=convert", f"out_dir={tmp_path / 'out'}", f"checkpoint={ckpt}",
                                            f"hifigan_config={cfg_json}", f"contract={bad}"])
    line = _exit_line(lambda: main.run(cfg), capsys)
    assert line.startswith("twist-vocoder: error: ") and str(bad) in line and "not valid JSON" in line
