"""Mazes (REFERENCE II.4, Maze-Hard): a seeded generator whose shortest S->G path is verified by BFS.

Charset "# SGo": wall, open, start, goal, path (answers only). Tokens 1..5, pad 0.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from hrm.core.errors import DataError

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = CHARSET
MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))


def parse(text: str, size: int, where: str, answer: bool = False) -> np.ndarray:
    """A size*size maze string -> char grid; errors name `where` (file and row) and the problem."""
    if len(text) != size * size:
        raise DataError(f"{where}: {len(text)} characters, a {size}x{size} maze needs {size * size}")
    allowed = CHARSET if answer else CHARSET[:4]
    bad = sorted(set(text) - set(allowed))
    if bad:
        raise DataError(f"{where}: foreign characters {''.join(bad)!r} (allowed: {allowed!r})")
    for mark in (START, GOAL):
        if text.count(mark) != 1:
            raise DataError(f"{where}: {text.count(mark)} {mark!r} cells, a maze needs exactly one")
    return np.array(list(text)).reshape(size, size)


Cell = tuple[int, int]


def _search(grid: np.ndarray) -> tuple[Cell, dict[Cell, Cell | None], dict[Cell, int]]:
    """BFS from S by layers: (G, each reached cell's first predecessor, its number of shortest paths
    from S), stopped once G's layer is reached (every predecessor of G lies on the layer before)."""
    start = tuple(int(v) for v in np.argwhere(grid == START)[0])
    goal = tuple(int(v) for v in np.argwhere(grid == GOAL)[0])
    parent: dict[Cell, Cell | None] = {start: None}
    dist, count = {start: 0}, {start: 1}
    queue = deque([start])
    h, w = grid.shape
    while queue:
        cell = queue.popleft()
        if goal in dist and dist[cell] >= dist[goal]:
            break
        for dr, dc in MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if not (0 <= nxt[0] < h and 0 <= nxt[1] < w) or grid[nxt] == WALL:
                continue
            if nxt not in dist:
                parent[nxt], dist[nxt], count[nxt] = cell, dist[cell] + 1, count[cell]
                queue.append(nxt)
            elif dist[nxt] == dist[cell] + 1:
                count[nxt] += count[cell]
    return goal, parent, count


def shortest_path(grid: np.ndarray) -> list[Cell] | None:
    """Cells of one shortest S->G path (both ends included) by BFS, or None if G is unreachable."""
    goal, parent, _ = _search(grid)
    return _trace(goal, parent) if goal in parent else None


def _trace(goal: Cell, parent: dict[Cell, Cell | None]) -> list[Cell]:
    path = []
    node: Cell | None = goal
    while node is not None:
        path.append(node)
        node = parent[node]
    return path[::-1]


def shortest_paths(grid: np.ndarray) -> int:
    """How many distinct shortest S->G paths the maze has (0 if G is unreachable)."""
    goal, _, count = _search(grid)
    return count.get(goal, 0)


def check_answer(grid: np.ndarray, answer: np.ndarray, where: str) -> None:
    """The answer's path cells, with S and G, must be one shortest S-to-G path of the maze."""
    shortest = shortest_path(grid)
    if shortest is None:
        raise DataError(f"{where}: G cannot be reached from S")
    marked = {tuple(int(v) for v in c) for c in np.argwhere((answer == PATH) | (grid == START) | (grid == GOAL))}
    start = tuple(int(v) for v in np.argwhere(grid == START)[0])
    seen, todo = {start}, [start]                # the marked cells S reaches through marked cells
    while todo:
        r, c = todo.pop()
        for dr, dc in MOVES:
            nxt = (r + dr, c + dc)
            if nxt in marked and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    goal = tuple(int(v) for v in np.argwhere(grid == GOAL)[0])
    if goal not in seen or len(marked) != len(shortest):
        raise DataError(f"{where}: the answer marks {len(marked) - 2} path cells "
                        f"{'joining' if goal in seen else 'not joining'} S to G; a shortest path has "
                        f"{len(shortest) - 2}")


def _carve(size: int, rng: np.random.Generator, loops: float) -> np.ndarray:
    """Randomised depth-first maze on the odd lattice, then a few walls knocked out for loops."""
    grid = np.full((size, size), WALL)
    cells = [(r, c) for r in range(1, size - 1, 2) for c in range(1, size - 1, 2)]
    start = cells[rng.integers(len(cells))]
    grid[start] = OPEN
    stack = [start]
    while stack:
        r, c = stack[-1]
        options = [(r + 2 * dr, c + 2 * dc, dr, dc) for dr, dc in MOVES
                   if 0 < r + 2 * dr < size - 1 and 0 < c + 2 * dc < size - 1 and grid[r + 2 * dr, c + 2 * dc] == WALL]
        if not options:
            stack.pop()
            continue
        nr, nc, dr, dc = options[rng.integers(len(options))]
        grid[r + dr, c + dc] = grid[nr, nc] = OPEN
        stack.append((nr, nc))
    inner = np.argwhere(grid[1:-1, 1:-1] == WALL) + 1
    for r, c in inner[rng.random(len(inner)) < loops]:
        grid[r, c] = OPEN
    return grid


def generate(seed: int, size: int = 30, min_path: int = 110, loops: float = 0.05, border: bool = True,
             tries: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(question, answer) char grids whose shortest S->G path is longer than `min_path` moves and is the
    only shortest path (with loops two routes can tie, and exact-match scoring needs one answer).
    `border=False`: no outer wall (a maze carved on size + 2, its border cut off), so every token of a
    small maze is a cell or a passage; `size` must then be odd."""
    if not border and size % 2 == 0:
        raise ValueError(f"a maze without border needs an odd size, got {size}")
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        grid = _carve(size, rng, loops) if border else _carve(size + 2, rng, loops)[1:-1, 1:-1]
        free = np.argwhere(grid == OPEN)
        s, g = free[rng.choice(len(free), 2, replace=False)]
        grid[tuple(s)], grid[tuple(g)] = START, GOAL
        goal, parent, count = _search(grid)
        if count.get(goal) == 1:
            path = _trace(goal, parent)
            if len(path) - 1 > min_path:
                answer = grid.copy()
                for cell in path[1:-1]:
                    answer[cell] = PATH
                return grid, answer
    raise ValueError(f"no maze with one shortest path longer than {min_path} in {tries} tries (seed {seed})")


def tokens(grid: np.ndarray) -> np.ndarray:
    """Chars -> tokens 1..5 (pad is 0)."""
    lookup = {ch: i + 1 for i, ch in enumerate(CHARSET)}
    return np.vectorize(lookup.__getitem__)(grid).astype(np.uint8)
