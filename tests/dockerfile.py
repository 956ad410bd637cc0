"""Read Dockerfiles and `.dockerignore` the way Docker does, for tests of the images (Docker cannot run here).

Only what our Dockerfiles use: line continuations, comments, stages, flags such as `--from=`,
`ENV` with `$VAR` expansion, exec-form JSON, and the ignore file's `**`, `!` and parent-folder rules.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    value: str  # the rest of the logical line


@dataclass
class Stage:
    base: str  # the image or stage it starts FROM
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[str]:
    """Join continued lines; drop comments (also those inside a continuation) and blank lines."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse(text: str) -> list[Instruction]:
    """Every instruction in the file, in order."""
    split = (line.partition(" ") for line in logical_lines(text))
    return [Instruction(keyword.upper(), rest.strip()) for keyword, _, rest in split]


def instructions(text: str, keyword: str) -> list[str]:
    """The values of every `keyword` instruction in the file, in order."""
    return [i.value for i in parse(text) if i.keyword == keyword]


def stages(text: str) -> list[Stage]:
    """The build stages in order; instructions before the first FROM (global ARGs) are dropped."""
    result: list[Stage] = []
    for instruction in parse(text):
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(words[0], name))
        elif result:
            result[-1].instructions.append(instruction)
    return result


def stage(text: str, name: str) -> Stage:
    (found,) = [s for s in stages(text) if s.name == name]
    return found


def lineage(text: str, name: str) -> list[Stage]:
    """Stage `name` and the stages it is built FROM, the first ancestor first."""
    by_name = {s.name: s for s in stages(text) if s.name}
    chain = [by_name[name]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def split_flags(value: str) -> tuple[dict[str, str], list[str]]:
    """`--from=builder a b` -> ({"from": "builder"}, ["a", "b"]); JSON arrays are read as JSON."""
    flags: dict[str, str] = {}
    words = shlex.split(value)
    while words and words[0].startswith("--"):
        key, _, flag_value = words.pop(0)[2:].partition("=")
        flags[key] = flag_value
    if words and words[0].startswith("["):
        words = json.loads(" ".join(words))
    return flags, words


def copy_sources(value: str) -> list[str]:
    """The build-context sources of a COPY (none when it copies from another stage)."""
    flags, words = split_flags(value)
    return [] if "from" in flags else words[:-1]


def exec_form(value: str) -> list[str]:
    """The argv of an exec-form CMD/ENTRYPOINT; fails on the shell form, which would wrap it in `sh -c`."""
    argv = json.loads(value)
    assert isinstance(argv, list), value
    assert all(isinstance(arg, str) for arg in argv), value
    return argv


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def env_of(chain: list[Stage], start: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the ENV lines of `chain` build on top of `start`, expanding `$VAR` as Docker does."""
    env = dict(start or {})
    for s in chain:
        for value in s.values("ENV"):
            words = shlex.split(value)
            pairs = [w.partition("=")[::2] for w in words] if "=" in words[0] else [(words[0], " ".join(words[1:]))]
            expanded = {key: _VAR.sub(lambda m: env.get(m[1] or m[2], ""), val) for key, val in pairs}
            env.update(expanded)
    return env


def healthcheck(value: str) -> tuple[dict[str, str], list[str]]:
    """`--interval=30s ... CMD ["python", ...]` -> (options, argv)."""
    options, _, command = value.partition("CMD ")
    flags, _ = split_flags(options)
    return flags, exec_form(command)


class DockerIgnore:
    """Docker's `.dockerignore` rules: patterns anchored at the context root, the last match wins,
    and a path is excluded when it or a folder above it matches."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for line in text.splitlines():
            pattern = line.strip()
            if not pattern or pattern.startswith("#"):
                continue
            keep = pattern.startswith("!")
            pattern = pattern.removeprefix("!").strip().strip("/")
            self.rules.append((keep, re.compile(_glob_to_regex(pattern))))

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        return cls(path.read_text())

    def excludes(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for keep, regex in self.rules:
            if any(regex.fullmatch(c) for c in candidates):
                excluded = not keep
        return excluded


def _glob_to_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
