"""The command line's parts: value types (each refuses a bad value in one line, before any
work), flags several commands share, and the registry every command is declared in once
(lsqueeze.commands and lsqueeze.tools declare them, lsqueeze.cli builds the parser from it)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass


def json_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def whole(low: int, odd: bool = False, hint: str = ""):
    """An argparse type: a whole number of at least `low` (and odd), refused in one line."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}{hint}")
        if odd and value % 2 == 0:
            raise argparse.ArgumentTypeError(f"{value} is not odd{hint}")
        return value
    return parse


def real(low: float = 0.0, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite number in [low, high] ((low, high] where low_open)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if low_open and value <= low:
            raise argparse.ArgumentTypeError(f"{value:g} is not greater than {low:g}")
        if value < low:
            raise argparse.ArgumentTypeError(f"{value:g} is less than {low:g}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value:g} is more than {high:g}")
        return value
    return parse


def model_flags(data: bool = True, n: bool = False):
    """The flags of a command that reads one trained model: --spec, --model, --out, and the test
    set's --data-dir (and its first --n images) where it reads the test set."""
    def add(s):
        s.add_argument("--spec", type=json_value, required=True, help="resolved training spec (JSON)")
        s.add_argument("--model", required=True, help="its model.pt")
        if data:
            s.add_argument("--data-dir", required=True)
        if n:
            s.add_argument("--n", type=whole(1, hint=" (leave --n out for every test image)"),
                           default=None, help="first n test images (default: all)")
        s.add_argument("--out", required=True)
    return add


def with_flags(*adders):
    """Flags from several declarations, in order."""
    def add(s):
        for adder in adders:
            adder(s)
    return add


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Callable
    flags: Callable | None = None  # declares the command's flags on its sub-parser
    gpu: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, flags: Callable | None = None, gpu: bool = False):
    """Register the decorated handler as `lsqueeze <name>`."""
    def register(handler):
        COMMANDS[name] = Command(name, help, handler, flags, gpu)
        return handler
    return register


def plan_file(s):
    """The --plan flag of the commands that read a tables plan."""
    s.add_argument("--plan", required=True, help="the tables plan (<results>/plan/tables.json)")


def refuse(command: str, exc) -> int:
    """A refusal the command can explain: one line on stderr, exit status 2."""
    print(f"lsqueeze {command}: error: {exc}", file=sys.stderr)
    return 2
