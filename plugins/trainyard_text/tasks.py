"""Generated sequence-to-sequence tasks: (source, target) string pairs, seeded, sized by length.

- copy      "qwerty"        -> "qwerty"
- reverse   "qwerty"        -> "ytrewq"
- sort      "qwerty"        -> "eqrtwy"
- addition  "407+38"        -> "445"
- dates     "3 March 2021", "03/03/21", "Wednesday, March 3rd 2021", ... -> "2021-03-03"
- recall    "c" + 50 distractors "qzkw...mr"  -> "c"   (Hochreiter & Schmidhuber 1997's long time lag)

`lengths` is the range of source lengths (addition: of each operand's digits; recall: of the
lag, the distractors between the token to recall and the end of the source), so training on
one range and testing on another measures length generalisation; `exclude` keeps a test set's
sources out of the training set. The same arguments always give the same pairs.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Collection
from datetime import date

TASKS = ("copy", "reverse", "sort", "addition", "dates", "recall")

ALPHABET = string.ascii_lowercase
# recall: the token to remember is one of 8 (chance: 1/8); the distractors never are.
RECALL_TOKENS, DISTRACTORS = ALPHABET[:8], ALPHABET[8:]

# How many draws per requested pair before concluding that the space has run out.
_ATTEMPTS_PER_PAIR = 20
_MIN_ATTEMPTS = 1000


def generate(task: str, count: int, lengths: tuple[int, int], seed: int,
             exclude: Collection[str] = ()) -> list[tuple[str, str]]:
    """`count` distinct (source, target) pairs of `task`, none with a source in `exclude`.

    Lengths are inclusive: (5, 20) draws lengths 5 to 20 uniformly. `dates` ignores them: a
    date's length is set by its format. Raises ValueError when the task is unknown or the space
    cannot supply `count` distinct pairs.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    lo, hi = lengths
    if task != "dates":
        if not 1 <= lo <= hi:
            raise ValueError(f"lengths must be (lo, hi) with 1 <= lo <= hi, got {tuple(lengths)}")
        space = _space_size(task, lo, hi)
        if count > space:
            raise ValueError(f"{task} with lengths {lo}-{hi} has only {space} distinct sources, asked for {count}")
    rng = random.Random(seed)
    draw = _DRAWS[task]
    excluded = set(exclude)
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for _ in range(max(_MIN_ATTEMPTS, _ATTEMPTS_PER_PAIR * count)):
        if len(pairs) == count:
            break
        source, target = draw(rng, lo, hi)
        if source not in seen and source not in excluded:
            seen.add(source)
            pairs.append((source, target))
    if len(pairs) < count:
        raise ValueError(f"{task} with lengths {lo}-{hi}: found only {len(pairs)} distinct sources outside "
                         f"`exclude` of the {count} asked for; widen the lengths or ask for fewer")
    return pairs


def _space_size(task: str, lo: int, hi: int) -> int:
    """How many distinct sources a task has (before `exclude`)."""
    if task == "addition":
        numbers = sum(10 if digits == 1 else 9 * 10 ** (digits - 1) for digits in range(lo, hi + 1))
        return numbers * numbers
    if task == "recall":
        return sum(len(RECALL_TOKENS) * len(DISTRACTORS) ** lag for lag in range(lo, hi + 1))
    return sum(len(ALPHABET) ** length for length in range(lo, hi + 1))


def _letters(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choices(ALPHABET, k=rng.randint(lo, hi)))


def _copy(rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
    source = _letters(rng, lo, hi)
    return source, source


def _reverse(rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
    source = _letters(rng, lo, hi)
    return source, source[::-1]


def _sort(rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
    source = _letters(rng, lo, hi)
    return source, "".join(sorted(source))


def _number(rng: random.Random, digits: int) -> int:
    """A number with exactly `digits` digits: no leading zero, except 0 itself."""
    return rng.randint(0, 9) if digits == 1 else rng.randint(10 ** (digits - 1), 10 ** digits - 1)


def _addition(rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
    a, b = _number(rng, rng.randint(lo, hi)), _number(rng, rng.randint(lo, hi))
    return f"{a}+{b}", str(a + b)


def _recall(rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
    """The first token, followed by `lag` distractors: only a memory that lasts `lag` steps
    (the vanishing gradient's lesson) can say at the end what the first token was."""
    token = rng.choice(RECALL_TOKENS)
    return token + "".join(rng.choices(DISTRACTORS, k=rng.randint(lo, hi))), token


# --- dates -------------------------------------------------------------------------------------
# English names written out: calendar.month_name and strftime("%B") follow the process locale,
# and the data must not change with the machine it is generated on.
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

FIRST_DATE, LAST_DATE = date(1900, 1, 1), date(2099, 12, 31)
# A two-digit year names two dates in 1900-2099 ("03/03/21": 1921 or 2021?), which no model could
# resolve. That format only draws from the 100 years that strptime's %y reads it as: 1969-2068.
TWO_DIGIT_YEAR_DATES = (date(1969, 1, 1), date(2068, 12, 31))


def ordinal(day: int) -> str:
    """1st 2nd 3rd 4th ... 11th 12th 13th ... 21st 22nd 23rd ... 31st."""
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _month(d: date) -> str:
    return MONTHS[d.month - 1]


# Each renders a date as a source string; the target is always ISO (d.isoformat()).
DATE_FORMATS: dict[str, Callable[[date], str]] = {
    "day month year": lambda d: f"{d.day} {_month(d)} {d.year}",                        # 3 March 2021
    "dd/mm/yy": lambda d: f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}",              # 03/03/21
    "weekday, month ordinal year":
        lambda d: f"{WEEKDAYS[d.weekday()]}, {_month(d)} {ordinal(d.day)} {d.year}",   # Wednesday, March 3rd 2021
    "month day, year": lambda d: f"{_month(d)} {d.day}, {d.year}",                      # March 3, 2021
    "yyyy.mm.dd": lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}",                      # 2021.03.03
    "day mon year": lambda d: f"{d.day} {_month(d)[:3]} {d.year}",                      # 3 Mar 2021
    "mon dd year": lambda d: f"{_month(d)[:3]} {d.day:02d} {d.year}",                   # Mar 03 2021
    "dd-mon-yyyy": lambda d: f"{d.day:02d}-{_month(d)[:3]}-{d.year}",                   # 03-Mar-2021
    "ordinal of month year": lambda d: f"{ordinal(d.day)} of {_month(d)} {d.year}",     # 3rd of March 2021
    "wkd day mon year": lambda d: f"{WEEKDAYS[d.weekday()][:3]} {d.day} {_month(d)[:3]} {d.year}",  # Wed 3 Mar 2021
}


def _dates(rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
    name = rng.choice(list(DATE_FORMATS))
    first, last = TWO_DIGIT_YEAR_DATES if name == "dd/mm/yy" else (FIRST_DATE, LAST_DATE)
    day = date.fromordinal(rng.randint(first.toordinal(), last.toordinal()))
    return DATE_FORMATS[name](day), day.isoformat()


_DRAWS: dict[str, Callable[[random.Random, int, int], tuple[str, str]]] = {
    "copy": _copy, "reverse": _reverse, "sort": _sort, "addition": _addition, "dates": _dates,
    "recall": _recall,
}
