"""Several folders of official QuickDraw ndjson files read as one, without duplicates.

`merge_folders` reads `<category>.ndjson` from every folder (e.g.
../shared/data/quickdraw/simplified and ../shared/data/quickdraw/extra/simplified),
drops drawings seen before (the same key_id, or the same stroke list: sources
without an official key_id carry a synthetic one, extra/PROVENANCE.md), keeps
the categories with at least `min_drawings` unique drawings and writes one
merged `<category>.ndjson` a category (the original lines) into a folder that
the TFDS builder reads as its manual folder. The split of the merged drawings
is the usual one by key_id (sketchjax/data/splits.py).

Prints the selection and its train/test counts:

  python -m sketchjax.data.quickdraw_folders \
      ../shared/data/quickdraw/simplified,../shared/data/quickdraw/extra/simplified \
      --min_drawings=1000 --test_fraction=0.1
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Sequence

from sketchjax.data import records
from sketchjax.data.formats import folder as folder_lib


@dataclasses.dataclass
class Merged:
  """What `merge_folders` found; counts are drawings (lines)."""
  folders: tuple[str, ...]
  read: dict[str, dict[str, int]]  # folder -> category -> lines read
  kept: dict[str, int]  # category -> unique drawings (all categories read)
  same_key_id: dict[str, int]  # category -> dropped: key_id seen before
  same_strokes: dict[str, int]  # category -> dropped: other key_id, same strokes
  categories: tuple[str, ...]  # the selected ones, in class-id order
  lines: dict[str, list[str]] = dataclasses.field(repr=False)  # selected -> kept lines

  def split_counts(self, test_fraction: float) -> dict[str, tuple[int, int]]:
    """{category: (train, test)} of the selected categories (splits.py's rounding)."""
    counts = {}
    for category in self.categories:
      n = self.kept[category]
      counts[category] = (n - round(n * test_fraction), round(n * test_fraction))
    return counts

  def summary(self, test_fraction: float) -> str:
    """Lines for the run's log: sources, duplicates, and each class's counts."""
    read = {f: sum(c.values()) for f, c in self.read.items()}
    lines = [f"QuickDraw drawings from {len(self.folders)} folder(s): " +
             ", ".join(f"{f} ({n})" for f, n in read.items()),
             f"duplicates dropped: {sum(self.same_key_id.values())} with a key_id seen "
             f"before, {sum(self.same_strokes.values())} with the strokes of another key_id",
             f"{len(self.categories)} categories selected; train / test (test fraction "
             f"{test_fraction:g}):"]
    splits = self.split_counts(test_fraction)
    for category, (train, test) in splits.items():
      lines.append(f"  {category}: {train} / {test}")
    lines.append(f"  total: {sum(t for t, _ in splits.values())} / "
                 f"{sum(s for _, s in splits.values())}")
    return "\n".join(lines)


def parse_dirs(dirs: str | Sequence[str]) -> tuple[str, ...]:
  """'a,b' or [a, b] -> (a, b), without empty entries."""
  parts = dirs.split(",") if isinstance(dirs, str) else list(dirs)
  return tuple(p.strip() for p in parts if p.strip())


def merge_folders(dirs: Sequence[str], categories: Sequence[str] | None = None,
                  min_drawings: int = 0,
                  policy: records.BadInputPolicy | None = None) -> Merged:
  """Reads and deduplicates the ndjson files of `dirs` (see the module doc).

  Args:
    categories: only these (None: every category with a file in some folder).
    min_drawings: keep the categories with at least this many unique drawings.
    policy: what to do with an unreadable line (default: raise, naming it).
  """
  policy = policy or records.BadInputPolicy()
  files: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
  for directory in dirs:
    for category, path in folder_lib.list_category_files(directory).items():
      if categories is not None and category not in categories:
        continue
      if path.suffix != ".ndjson":
        raise ValueError(f"{path}: several data folders are read as official ndjson "
                         "files; this one is not")
      files[category].append(path)
  missing = sorted(set(categories or ()) - set(files))
  if missing:
    raise FileNotFoundError(f"no <category>.ndjson for {missing[:10]} in any of {list(dirs)}")
  read = {d: {} for d in dirs}
  kept, same_key, same_strokes, lines = {}, {}, {}, {}
  for category in sorted(files, key=str.lower):
    seen_keys, seen_strokes, kept_lines = set(), set(), []
    same_key[category] = same_strokes[category] = 0
    for path in files[category]:
      count = 0
      with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
          if not line.strip():
            continue
          count += 1
          try:
            record = json.loads(line)
            key, strokes = int(record["key_id"]), json.dumps(record["drawing"])
          except (ValueError, KeyError, TypeError) as error:
            policy.handle(records.SketchFormatError(path, number, f"unreadable: {error}"))
            continue
          if key in seen_keys:
            same_key[category] += 1
          elif strokes in seen_strokes:
            same_strokes[category] += 1
          else:
            seen_keys.add(key)
            seen_strokes.add(strokes)
            kept_lines.append(line if line.endswith("\n") else line + "\n")
      read[_folder_of(path, dirs)][category] = count
    kept[category] = len(kept_lines)
    lines[category] = kept_lines
  selected = tuple(c for c in kept if kept[c] >= max(min_drawings, 1))
  if not selected:
    raise ValueError(f"no category of {list(dirs)} has at least {min_drawings} drawings")
  return Merged(folders=tuple(dirs), read=read, kept=kept, same_key_id=same_key,
                same_strokes=same_strokes, categories=selected,
                lines={c: lines[c] for c in selected})


def _folder_of(path: pathlib.Path, dirs: Sequence[str]) -> str:
  return next(d for d in dirs if pathlib.Path(d).resolve() == path.parent.resolve())


def write_merged(merged: Merged, cache_root: str | os.PathLike) -> pathlib.Path:
  """Writes the selected categories' files into `<cache_root>/merged-<digest>/manual`
  (the digest covers the content) and returns that folder; an existing one is reused."""
  digest = hashlib.sha1()
  for category in merged.categories:
    digest.update(category.encode() + b"\0")
    for line in merged.lines[category]:
      digest.update(line.encode())
  folder = pathlib.Path(cache_root) / f"merged-{digest.hexdigest()[:12]}" / "manual"
  folder.mkdir(parents=True, exist_ok=True)
  for category in merged.categories:
    target = folder / f"{category}.ndjson"
    if not target.exists():
      temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
      temporary.write_text("".join(merged.lines[category]), encoding="utf-8")
      os.replace(temporary, target)  # Atomic: processes writing the same file agree.
  return folder


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("dirs", help="comma-separated folders of <category>.ndjson")
  parser.add_argument("--min_drawings", type=int, default=0)
  parser.add_argument("--test_fraction", type=float, default=0.1)
  args = parser.parse_args(argv)
  merged = merge_folders(parse_dirs(args.dirs), min_drawings=args.min_drawings)
  print(merged.summary(args.test_fraction))
  print("categories:", ",".join(merged.categories))


if __name__ == "__main__":
  main()
