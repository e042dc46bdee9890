"""The attack kinds a preset may name (`attack: fgsm | pgd | autoattack`): one entry each.

An entry is the single source of what the rest of the package needs to know about a kind:
the settings it fixes and the ones it adds (the preset schema's enums and properties are filled
in from here), what it must be given, its canonical id (an id is a file name in the model store:
ids must never change for an existing kind), the image-steps a GPU-hour projection counts per
image, the attack budget the masking checks compare, and the function that runs it.

No torch here: planning, validation, cost and the aggregation read this module, and they load
without torch. `run` names the runner as "lsqueeze.<module>:<function>"; the function takes
(model, x, y, spec, seed, index, batched_restarts) and returns (x_adv, per-example robust mask)
or, to say more per example, (x_adv, robust, breakdown) (AutoAttack: which member broke each
image, kept in the evaluation record), and lsqueeze.runtime.fingerprint follows such names, so
an edit to a runner re-evaluates its results.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from lsqueeze.runtime.values import missing

# The settings every attack has, with their defaults (a kind fixes or ignores those it lacks).
BASE = {"loss": "xent", "steps": 1, "step_size": None, "random_start": False, "restarts": 1,
        "confidence": 50.0}


def num(x) -> str:
    """One spelling per number: 0.5, 0.50 and 5e-1 all become '0.5'; 2.0 becomes '2'."""
    return f"{float(x):.6g}"


def eps_part(a: dict) -> str:
    return "inf" if a.get("eps") is None else num(a["eps"])  # eps: null = unbounded (Table 9)


def _id_part(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v).lower()
    return num(v)


def generic_id(a: dict, fixed: dict | None = None) -> str:
    """The id of a kind without a format of its own: its name and each setting it sets that
    every attack does not have by default (its own settings, ε, ...), the settings the kind
    fixes left out, e.g. `square-eps0.3-queries5000`."""
    usual = {**BASE, **(fixed or {})}
    changed = [(k, v) for k, v in sorted(a.items()) if k != "attack" and usual.get(k) != v]
    return "-".join([a["attack"], *(f"{k.replace('_', '')}{_id_part(v)}" for k, v in changed)])


def steps_times_restarts(a: dict) -> float:
    s = a.get("steps")
    return 1.0 if missing(s) else float(s) * max(1, int(a.get("restarts") or 1))


@dataclass(frozen=True)
class AttackKind:
    name: str
    run: str                                   # "lsqueeze.<module>:<function>"
    fixed: dict = field(default_factory=dict)  # settings the kind always has, whatever the preset
    settings: dict = field(default_factory=dict)  # its own settings: name -> (default, JSON schema)
    needs: tuple = ()                          # settings a preset must give it
    make_id: Callable[[dict], str] | None = None  # None: generic_id
    # Forward + backward passes per image (cost); an upper bound where members stop early.
    image_steps: Callable[[dict], float] = steps_times_restarts
    # The attack budget the masking checks compare (a bigger one must not find fewer
    # adversarial examples), from a measurement row's steps and restarts; inf: the strongest.
    budget: Callable[[dict], float] = steps_times_restarts
    # Images per call where the result depends on how the images are grouped (the reference
    # AutoAttack draws its random state per call): fixed here, so that `eval.batch_size`, which
    # only trades memory for speed, changes no number. None: any batch gives the same result.
    batch: int | None = None


def _pgd_id(a: dict) -> str:
    rid = f"pgd-{a['loss']}-n{int(a['steps'])}-e{eps_part(a)}-a{num(a['step_size'])}"
    rid += f"-r{int(a['restarts'])}"
    return rid + ("-rand" if a["random_start"] else "")


def _pgd_image_steps(a: dict) -> float:
    # Without a random start every restart is the same attack, and runs once.
    restarts = max(1, int(a.get("restarts", 1))) if a.get("random_start") else 1
    return float(a["steps"]) * restarts


# Reference AutoAttack, version standard, per image that survives every member: APGD-CE 100 +
# APGD-T 9 × 100 + FAB-T 9 × 100 (one gradient a step) + Square 5,000 forwards at ⅓ of a step
# (lsqueeze.science.autoattack.IMAGE_STEPS, from its configuration; a test keeps them equal). An upper
# bound: each member attacks only what the earlier ones left, so a masked model costs far less.
AUTOATTACK_STEPS = 100 + 9 * 100 + 9 * 100 + 5_000 / 3
# Only the standard version: its configuration is checked member by member against the
# reference's (lsqueeze.science.autoattack.STANDARD); "plus" and "rand" are refused, not run
# unchecked.
AUTOATTACK_VERSIONS = ("standard",)
# The standard version's members, in the order they run; a table column reads the accuracy after
# one of them as metric accuracy_after_<member> (e.g. accuracy_after_apgd_t).
AUTOATTACK_MEMBERS = ("apgd-ce", "apgd-t", "fab-t", "square")
# Images per call of the reference (one seed per call, fixed by the first image's position): every
# kept AutoAttack record was made with 500, the evaluation batch it used to follow.
AUTOATTACK_BATCH = 500


def member_metric(member: str) -> str:
    return f"accuracy_after_{member.replace('-', '_')}"


AUTOATTACK_MEMBER_METRICS = tuple(member_metric(m) for m in AUTOATTACK_MEMBERS)

ATTACK_KINDS: dict[str, AttackKind] = {k.name: k for k in (
    # one signed-gradient step of size ε
    AttackKind(
        "fgsm", "lsqueeze.science.attacks:run_fgsm",
        fixed={"steps": 1, "step_size": None, "random_start": False, "restarts": 1},
        make_id=lambda a: f"fgsm-{a['loss']}-e{eps_part(a)}",
        image_steps=lambda a: 1.0, budget=lambda a: 1.0),
    # Madry's PGD: steps of step_size, optional random start and restarts
    AttackKind(
        "pgd", "lsqueeze.science.attacks:run_pgd", needs=("step_size",), make_id=_pgd_id,
        image_steps=_pgd_image_steps),
    # Croce & Hein's reference ensemble (parameter-free: only ε and the version)
    AttackKind(
        "autoattack", "lsqueeze.science.attacks:run_autoattack",
        fixed={"loss": None, "steps": None, "step_size": None, "random_start": False,
               "restarts": 1},
        settings={"version": ("standard", {"enum": list(AUTOATTACK_VERSIONS)})},
        make_id=lambda a: f"aa-{a.get('version', 'standard')}-e{eps_part(a)}",
        image_steps=lambda a: float(AUTOATTACK_STEPS),
        budget=lambda a: math.inf,  # hundreds of iterations, and a gradient-free member
        batch=AUTOATTACK_BATCH),
)}


def kind_of(a: dict) -> AttackKind:
    name = a.get("attack")
    if name not in ATTACK_KINDS:
        raise ValueError(f"attack: unknown kind {name!r} (known: {', '.join(ATTACK_KINDS)})")
    return ATTACK_KINDS[name]


def resolve(a: dict) -> dict:
    """An attack with every setting its kind has: the defaults filled in, the kind's fixed
    settings imposed, the settings it needs checked, another kind's settings refused."""
    kind = kind_of(a)
    a = {**BASE, **a}
    own = {k for other in ATTACK_KINDS.values() for k in other.settings} - set(kind.settings)
    foreign = sorted(k for k in a if k in own)
    if foreign:
        raise ValueError(f"attack {kind.name}: {', '.join(foreign)} is a setting of another kind "
                         f"(its own: {', '.join(kind.settings) or 'none'})")
    for key, (default, _) in kind.settings.items():
        a.setdefault(key, default)
    a.update(kind.fixed)
    absent = [k for k in kind.needs if a.get(k) is None]
    if absent:
        raise ValueError(f"attack {a}: {kind.name} needs {', '.join(absent)}")
    return a


def attack_id(a: dict) -> str:
    kind, a = ATTACK_KINDS.get(a.get("attack")), {**BASE, **a}
    if kind and kind.make_id:
        return kind.make_id(a)
    return generic_id(a, kind.fixed if kind else None)


def image_steps(a: dict) -> float:
    return float(kind_of(a).image_steps(a))


def budget(row: dict) -> float:
    """The masking checks' budget of a measurement row (its `attack`, `attack_steps`, `restarts`);
    a kind no longer registered counts its steps × restarts."""
    a = {"steps": row.get("attack_steps"), "restarts": row.get("restarts")}
    kind = ATTACK_KINDS.get(row.get("attack"))
    return float(kind.budget(a) if kind else steps_times_restarts(a))
