""" What the command-line tools share: user errors, how a run ends, logging and flag helpers

`train.py`, `validate.py` and `python -m hub.publish` raise `UsageError` for mistakes in what they were
given: an unknown model name, a missing or unreadable checkpoint, a dataset that is not where `--data-dir`
says, an invalid TokenMixup setting, ... Their `__main__` blocks call `run_tool(main, prog)`, which prints
such an error as one line on stderr, `PROG: error: MESSAGE` (argparse's form), and exits with status 2
(argparse's status for a bad command line). A `SystemExit` raised with a message is treated the same way;
Ctrl-C exits with status 130; any other exception is a bug and keeps its traceback. With the environment
variable `TOKENMIXUP_DEBUG=1` user errors show their traceback too.

`setup_logging` sends information to stdout and warnings to stderr, so that stderr carries only what
needs attention. The checks here (`check_model_name`, `create_model_checked`, `read_checkpoint_argument`)
turn the errors timm and torch raise for such inputs into `UsageError`s that name the flag and the file.
"""
import argparse
import difflib
import logging
import os
import pickle
import re
import sys
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence

import timm
import torch.nn as nn
from safetensors import SafetensorError
from timm.utils import FormatterNoInfo

from .checkpoints import MODEL_SOURCES, read_checkpoint

__all__ = [
    'DEBUG_ENV', 'USAGE_EXIT_CODE', 'INTERRUPT_EXIT_CODE', 'UsageError', 'debug_enabled', 'one_line', 'run_tool',
    'setup_logging', 'NegativeFlagAction', 'RecordingParser', 'check_model_name', 'create_model_checked',
    'read_checkpoint_argument',
]

DEBUG_ENV = 'TOKENMIXUP_DEBUG'
USAGE_EXIT_CODE = 2  # argparse's exit status for a bad command line
INTERRUPT_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
_LIST_MODELS_HINT = "list the registered names with timm.list_models('cct_*') or timm.list_models('vit_*_htm*')"


class UsageError(Exception):
    """A mistake in what a tool was given; the message says what was wrong and what was expected."""


# ---------------------------------------------------------------------------------------------
# how a tool's run ends

def debug_enabled() -> bool:
    """Whether `TOKENMIXUP_DEBUG` asks for tracebacks of user errors (any value but '', 0, false, no, off)."""
    return os.environ.get(DEBUG_ENV, '').strip().lower() not in ('', '0', 'false', 'no', 'off')


def one_line(text: Any) -> str:
    """`text` with every run of whitespace (newlines included) made one space."""
    return ' '.join(str(text).split())


def _exit_with_error(prog: str, message: str) -> NoReturn:
    sys.stdout.flush()
    print(f'{prog}: error: {one_line(message) or "failed"}', file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT_CODE)


def run_tool(main: Callable[[], Any], prog: str) -> Any:
    """Run a tool's `main()` and return its result; end expected failures without a traceback.

    `UsageError` and `SystemExit('message')`: `PROG: error: MESSAGE` on stderr, exit status 2.
    `KeyboardInterrupt`: exit status 130. Everything else propagates. With `TOKENMIXUP_DEBUG=1` the
    first two propagate as well (a `SystemExit` message as a `UsageError`), traceback included.
    """
    try:
        return main()
    except UsageError as e:
        if debug_enabled():
            raise
        _exit_with_error(prog, str(e))
    except SystemExit as e:
        if not isinstance(e.code, str):  # sys.exit(0), argparse's exit(2), ...: already said what it had to
            raise
        if debug_enabled():
            raise UsageError(e.code) from e
        _exit_with_error(prog, e.code)
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        sys.stdout.flush()
        print(f'{prog}: interrupted', file=sys.stderr, flush=True)
        sys.exit(INTERRUPT_EXIT_CODE)


def setup_logging(level: int = logging.INFO) -> None:
    """timm's console logging (`setup_default_logging`'s format), split by level: records below WARNING go
    to stdout, warnings and errors to stderr."""
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    for handler in (info, problems):
        handler.setFormatter(FormatterNoInfo())
        logging.root.addHandler(handler)
    logging.root.setLevel(level)


# ---------------------------------------------------------------------------------------------
# flags

class RecordingParser(argparse.ArgumentParser):
    """argparse's parser that keeps every argument added to it or to a group from `recording_group`, in order, in
    `arguments` (the `argparse.Action`s `add_argument` returns), so that nothing reads argparse's private action
    list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arguments: List[argparse.Action] = []  # before argparse's __init__, which adds -h
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action

    def recording_group(self, *args: Any, **kwargs: Any) -> '_RecordingGroup':
        """`add_argument_group`, whose arguments are recorded too (argparse adds its own groups through
        `add_argument_group`, which stays as it is)."""
        return _RecordingGroup(self.add_argument_group(*args, **kwargs), self.arguments)

    @property
    def destinations(self) -> List[str]:
        """The destination of every argument (`-h` aside), in the order they were added."""
        return [action.dest for action in self.arguments if action.dest != 'help']


class _RecordingGroup:
    """An argument group of a `RecordingParser`: its arguments are the parser's too."""

    def __init__(self, group: Any, arguments: List[argparse.Action]) -> None:
        self._group = group
        self._arguments = arguments

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = self._group.add_argument(*args, **kwargs)
        self._arguments.append(action)
        return action


class NegativeFlagAction(argparse.Action):
    """A switch named for turning something off, with its opposite: `--no-X` sets the value True and
    `--X` sets it back to False (to undo `no_X: true` in a YAML config). Like `BooleanOptionalAction`,
    which would name the opposite `--no-no-X`."""

    def __init__(self, option_strings: Sequence[str], dest: str, default: bool = False,
                 help: Optional[str] = None) -> None:
        negative = [option for option in option_strings if option.startswith('--no-')]
        if not negative:
            raise ValueError(f'NegativeFlagAction needs a --no-X option, got {list(option_strings)}')
        positive = ['--' + option[len('--no-'):] for option in negative]
        super().__init__(option_strings=[*option_strings, *positive], dest=dest, nargs=0, default=default,
                         help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        setattr(namespace, self.dest, bool(option_string and option_string.startswith('--no-')))

    def format_usage(self) -> str:
        return ' | '.join(self.option_strings)


# ---------------------------------------------------------------------------------------------
# models

def check_model_name(name: str, flag: str = '--model') -> None:
    """UsageError unless `name` is a registered model name (with or without a tag), `hf-hub:ORG/NAME` or
    `local-dir:DIR` with a config.json. `flag` starts the message."""
    source, sep, location = name.partition(':')
    if sep and source.lower() == 'local-dir':
        if not os.path.isfile(os.path.join(location, 'config.json')):
            raise UsageError(f'{flag} {name}: {location or "(empty)"} is not a model folder (no config.json in it); '
                             'expected a folder written by python -m hub.publish --local-dir')
        return
    if sep and source.lower() in MODEL_SOURCES:
        return
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        suggestion = f' (did you mean {close[0]}?)' if close else ''
        raise UsageError(f'{flag} {name}: not a registered model name{suggestion}; {_LIST_MODELS_HINT} '
                         'after `import models`')


def _weights_file(name: str) -> str:
    source, sep, location = name.partition(':')
    if sep and source.lower() == 'local-dir':
        return os.path.join(location, 'model.safetensors')
    if sep and source.lower() in MODEL_SOURCES:
        return f'the model.safetensors of {name} in the Hugging Face cache'
    return f'the pretrained weights file of {name}'


def create_model_checked(name: str, flag: str = '--model', given: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name, **kwargs)`, with the errors of a bad name, bad settings (the ValueError or
    TypeError of the settings validator or the model) or unreadable pretrained weights as UsageError; messages
    name `given` (what the user wrote, when `name` was derived from it) or `name`."""
    check_model_name(name, flag)
    try:
        return timm.create_model(name, **kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(f'cannot build {flag} {given or name}: {one_line(e)}') from e
    except SafetensorError as e:
        raise UsageError(f'{flag} {name}: {_weights_file(name)} is not a readable safetensors file ({one_line(e)}); '
                         'export or download it again') from e
    except RuntimeError as e:  # timm, with pretrained=True: no weights for this name or tag, a folder without any
        if not kwargs.get('pretrained'):
            raise
        message = one_line(e).replace(' Use `pretrained=False` for random init.', '')
        if message.startswith('No pretrained weights exist'):
            message += ' (timm.list_pretrained() lists the names and tags that have some); drop --pretrained ' \
                       'for random weights'
        raise UsageError(f'{flag} {name} --pretrained: {message}') from e


# ---------------------------------------------------------------------------------------------
# checkpoints

def _unreadable_reason(error: BaseException) -> str:
    """Why torch.load could not read a file, in our words (torch's own advice to turn off
    `weights_only` is never repeated: checkpoints are plain data, and other files are not trusted)."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and 'Unsupported global' in text:
        found = re.search(r'GLOBAL ([\w.]+)', text)
        what = f' ({found.group(1)})' if found else ''
        return (f'it holds Python objects other than tensors and plain data{what}, which are not loaded because '
                'that could run code; expected a train.py checkpoint or a state dict')
    if isinstance(error, RuntimeError) and 'zip archive' in text:
        return 'not a readable PyTorch checkpoint: its zip archive is damaged or truncated'
    return ('not a PyTorch checkpoint: torch.load cannot read it (another kind of file, or a damaged one); expected '
            'a train.py checkpoint or a state dict saved with torch.save')


def read_checkpoint_argument(path: str, flag: str) -> Dict[str, Any]:
    """`checkpoints.read_checkpoint(path)`, with a missing, unreadable or foreign file as a UsageError
    that starts with `flag` and the path."""
    try:
        return read_checkpoint(path)
    except OSError as e:  # a folder, or no such file: the message starts with the path
        raise UsageError(f'{flag} {one_line(e)}') from e
    except ValueError as e:
        cause = e.__cause__ if e.__cause__ is not None else e
        if isinstance(cause, ValueError) and str(cause).startswith(str(path)):  # ours: loaded, not a dict
            raise UsageError(f'{flag} {one_line(cause)}') from e
        raise UsageError(f'{flag} {path}: {_unreadable_reason(cause)}') from e
