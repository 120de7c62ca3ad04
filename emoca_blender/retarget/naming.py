"""Match channel names to shape-key names across the naming schemes artists meet (stdlib only).

A name is read as words and a side (:func:`canonical`):
* words: split at every character that is not a letter or digit (``_ - . :`` spaces, ...), at lower-to-upper case
  changes (``mouthSmile`` -> mouth, smile), before the last capital of a run of capitals that starts a word
  (``HTMLParser`` -> html, parser) and around digits (``A25`` -> a, 25); compared in lower case;
* side: the words ``l``/``left`` and ``r``/``right`` anywhere in the name (``mouthSmile_L``, ``Mouth_Smile_Left``,
  ``mouthSmile.L``, ``L_mouthSmile``), or a trailing ``left``/``right`` glued to one all-lower or all-upper word
  (``MOUTHSMILELEFT``). A name whose words say both sides has no side that matches anything.
So ``mouthSmileLeft``, ``mouthSmile_L``, ``MouthSmileLeft``, ``Mouth_Smile_L``, ``mouth-smile.l`` and
``MOUTHSMILELEFT`` all read as (mouth smile, L). ARKit's own ``jawLeft``/``mouthLeft`` read as (jaw, L) and
(mouth, L), so ``Jaw_L`` matches ``jawLeft``.

Matching (:func:`match_names`): a target matches a source when the sides agree and the target's words end with the
source's words (joined, so ``mouthsmile_L`` matches too); the words before are a prefix (``A25_``, ``CC_``,
``CC_Base_``, ``Genesis8_``), dropped. The longest match wins; when several targets match one source the best
is kept (exact name, then same letters, then the shortest prefix, then the shorter name) and the others are
reported as duplicates. ``swap_sides`` reads every target's L as R and R as L (characters named from the
viewer's side).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

SIDES = {"l": "L", "left": "L", "r": "R", "right": "R"}
GLUED_SIDES = (("left", "L"), ("right", "R"))
# words: a capitalised or lower-case run, a run of capitals not followed by a lower-case letter, or digits
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# how a match was found, best first (the rank decides between duplicates)
HOW = ("exact", "same letters", "prefix")


@dataclass(frozen=True)
class Canon:
    """A name read as lower-case words (without the side words) and a side: "L", "R", "" (none) or "?" (both).
    ``starts``: where each word begins in the name (what a prefix is cut at)."""

    words: tuple[str, ...]
    side: str
    starts: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return "".join(self.words)


def words(name: str) -> list[str]:
    """``"CC_Mouth_Smile_L"`` -> ``["cc", "mouth", "smile", "l"]`` (see the module docstring)."""
    return [w.lower() for w in _WORDS.findall(name)]


def canonical(name: str) -> Canon:
    """The words and side of ``name`` (see the module docstring)."""
    found = [(m.group().lower(), m.start()) for m in _WORDS.finditer(name)]
    base = [(w, at) for w, at in found if w not in SIDES]
    sides = {SIDES[w] for w, _ in found if w in SIDES}
    if not sides and len(base) == 1 and (name.isupper() or name.islower()):
        word, at = base[0]
        for glued, side in GLUED_SIDES:
            if word.endswith(glued) and len(word) > len(glued):
                return Canon((word[: -len(glued)],), side, (at,))
    side = "?" if len(sides) > 1 else (sides.pop() if sides else "")
    return Canon(tuple(w for w, _ in base), side, tuple(at for _, at in base))


def _swapped(side: str) -> str:
    return {"L": "R", "R": "L"}.get(side, side)


@dataclass(frozen=True)
class Match:
    """One source channel matched to one target name, and how (:data:`HOW`; ``prefix`` names the dropped words)."""

    source: str
    target: str
    how: str
    prefix: str = ""

    @property
    def rank(self) -> tuple[int, int, int]:
        return HOW.index(self.how), len(self.prefix), len(self.target)

    def describe(self) -> str:
        how = f"prefix {self.prefix!r}" if self.how == "prefix" else self.how
        return f"{self.source} -> {self.target} ({how})"


@dataclass
class NameMatch:
    """What :func:`match_names` found: the matches (source order), sources and targets left over, duplicates
    (a target that matched a source another target matched better: (target, source, the target kept))."""

    matches: list[Match] = field(default_factory=list)
    unmatched_sources: list[str] = field(default_factory=list)
    unmatched_targets: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as lines for people (panel, console)."""
        out = [f"matched {len(self.matches)} channels"]
        out += ["  " + m.describe() for m in self.matches]
        if self.duplicates:
            out.append(f"not used ({len(self.duplicates)}): another key matched the channel better")
            out += [f"  {t} (also {s}; {kept} is used)" for t, s, kept in self.duplicates]
        if self.unmatched_sources:
            out.append(f"channels with no key ({len(self.unmatched_sources)}): {', '.join(self.unmatched_sources)}")
        if self.unmatched_targets:
            out.append(f"keys no channel drives ({len(self.unmatched_targets)}): {', '.join(self.unmatched_targets)}")
        return out


def match_one(target: str, index: dict[tuple[str, str], str], swap_sides: bool = False) -> Match | None:
    """The source ``target`` matches in ``index`` ((joined words, side) -> source name), or None."""
    canon = canonical(target)
    side = _swapped(canon.side) if swap_sides else canon.side
    if side == "?":
        return None
    for start in range(len(canon.words)):
        source = index.get(("".join(canon.words[start:]), side))
        if source is None:
            continue
        if start:
            return Match(source, target, "prefix", target[: canon.starts[start]].rstrip("_-.: "))
        return Match(source, target, "exact" if source == target and not swap_sides else "same letters")
    return None


def source_index(sources: Iterable[str]) -> dict[tuple[str, str], str]:
    """(joined words, side) -> source name; the first source wins when two read the same."""
    index: dict[tuple[str, str], str] = {}
    for name in sources:
        canon = canonical(name)
        if canon.words and canon.side != "?":
            index.setdefault((canon.key, canon.side), name)
    return index


def match_names(sources: Iterable[str], targets: Iterable[str], swap_sides: bool = False) -> NameMatch:
    """Match every target name to at most one source channel and keep one target per source (module docstring)."""
    sources, targets = list(sources), list(targets)
    index = source_index(sources)
    best: dict[str, Match] = {}
    losers: list[Match] = []
    for target in targets:
        match = match_one(target, index, swap_sides)
        if match is None:
            continue
        kept = best.get(match.source)
        if kept is None or match.rank < kept.rank:
            if kept is not None:
                losers.append(kept)
            best[match.source] = match
        else:
            losers.append(match)
    used = {m.target for m in best.values()}
    lost = {m.target for m in losers}
    return NameMatch(
        matches=[best[s] for s in sources if s in best],
        unmatched_sources=[s for s in sources if s not in best],
        unmatched_targets=[t for t in targets if t not in used and t not in lost],
        duplicates=[(m.target, m.source, best[m.source].target) for m in losers],
    )
