"""Training errors that name their remedy in the caller's terms.

The engine is called from Python (``train(config, run_dir, resume=True)``) and from the
command line (``fcnkit train ... --resume``). An error's remedy is therefore a template whose
fields name *options*, not spellings: ``{resume}``, ``{overwrite}``, ``{run_dir}``,
``{init_from:SOURCE}``, ``{set:KEY=VALUE}``, ``{train:RECIPE}`` and ``{resume_command}`` (the
whole call that continues the run). ``str(err)`` renders them
in Python and config terms (:data:`PYTHON_TERMS`); a front end renders them in its own with
:meth:`HintedError.render` (the CLI passes its flag names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# option -> how a Python caller spells it ("{}" takes the field's format spec)
PYTHON_TERMS: dict[str, str] = {
    "resume": "resume=True",
    "overwrite": "overwrite=True",
    "run_dir": "another run_dir",
    "init_from": "init_from={}",
    "set": "{}",
    "train": 'train(load_config("{}"), ...)',
    "resume_command": "train(config, run_dir, resume=True)",
}


class _Term:
    """A template field: its text, with the field's format spec put in place of ``{}``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __format__(self, spec: str) -> str:
        return self.text.replace("{}", spec) if spec else self.text  # a path may hold "{}"


class HintedError(Exception):
    """An error whose message names options through template fields (see the module doc).

    ``values`` fill the other fields (paths, numbers): they are never parsed as templates.
    """

    def __init__(self, template: str, /, **values: Any) -> None:
        self.template = template
        self.values = values
        super().__init__(self.render(PYTHON_TERMS))

    def render(self, terms: Mapping[str, str]) -> str:
        """The message with the option fields spelt per ``terms`` (option -> text)."""
        fields = {name: _Term(text) for name, text in terms.items()}
        return self.template.format(**fields, **self.values)


class RunDirExistsError(HintedError, FileExistsError):
    """The run directory exists and neither resume nor overwrite was asked for."""


class NothingToResumeError(HintedError, FileNotFoundError):
    """Resume was asked for but the run directory holds no ``checkpoints/last.pt``."""


class MissingStageError(HintedError, FileNotFoundError):
    """Staged training (Sec. 4.2): the previous stage's run to start from does not exist."""


class NonFiniteLossError(HintedError, RuntimeError):
    """The loss, a gradient or a weight became NaN or infinite; the message says what to do.

    Raised before the optimiser step when the loss or a gradient is non-finite (the weights
    are still those of the last good step), or after it when the update itself made a weight
    non-finite. Either way no non-finite weight is ever written to a checkpoint.
    ``what`` says what broke; ``template`` (with ``values``) is the full message, naming the
    remedy.
    """

    def __init__(
        self,
        what: str,
        *,
        weights_ok: bool = True,
        template: str = "{what}",
        **values: Any,
    ) -> None:
        super().__init__(template, what=what, **values)
        self.what = what
        self.weights_ok = weights_ok  # False: the update ran and broke the weights


class RunInUseError(HintedError, RuntimeError):
    """Another process is writing the run directory (it holds ``RUN/.lock``)."""


class ResumeConfigError(HintedError, ValueError):
    """A resume would change what a run cannot change midway (model, training data stream)."""


class TrainingInterrupted(HintedError):
    """SIGINT / SIGTERM stopped training; ``signum`` is the signal (exit status 128 + signum)."""

    def __init__(self, template: str, /, *, signum: int, **values: Any) -> None:
        super().__init__(template, **values)
        self.signum = signum


class StopNow(KeyboardInterrupt):
    """A second SIGINT / SIGTERM: stop at once, abandoning the current step."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
