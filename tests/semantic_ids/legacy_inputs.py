"""Small deterministic inputs for `test_builder_matches_legacy.py`: a MovieLens-like catalogue of
300 movies (ML-1M `movies.dat` and ML-100K `u.item` formats, same titles and genres) and user
sequences over those 300 items. Invented text: no MovieLens data is copied."""
import os

import numpy as np

from recjax.data import movielens

NUM_ITEMS = 300
_WORDS = ("night", "star", "love", "war", "city", "dark", "river", "king", "ghost", "summer", "return",
          "blue", "last", "iron", "secret", "road", "house", "dream", "fire", "island", "storm", "lost")


def _catalogue(seed: int = 0):
  rng = np.random.default_rng(seed)
  titles, genres = [], []
  for i in range(NUM_ITEMS):
    words = rng.choice(_WORDS, size=int(rng.integers(1, 4)), replace=False)
    titles.append(f"{' '.join(w.capitalize() for w in words)} ({int(rng.integers(1930, 2001))})")
    g = rng.choice(len(movielens.ML100K_GENRES) - 1, size=int(rng.integers(1, 4)), replace=False) + 1
    genres.append(sorted(int(j) for j in g))
  return titles, genres


def write_movielens(root: str) -> dict[str, str]:
  """-> {"ml-1m": dir with movies.dat, "ml-100k": dir with u.item}."""
  titles, genres = _catalogue()
  dirs = {name: os.path.join(root, name) for name in ("ml-1m", "ml-100k")}
  for d in dirs.values():
    os.makedirs(d, exist_ok=True)
  with open(os.path.join(dirs["ml-1m"], "movies.dat"), "w", encoding="latin-1") as f:
    for i, (t, g) in enumerate(zip(titles, genres)):
      f.write(f"{i + 1}::{t}::{'|'.join(movielens.ML100K_GENRES[j] for j in g)}\n")
  with open(os.path.join(dirs["ml-100k"], "u.item"), "w", encoding="latin-1") as f:
    for i, (t, g) in enumerate(zip(titles, genres)):
      flags = "|".join("1" if j in g else "0" for j in range(len(movielens.ML100K_GENRES)))
      f.write(f"{i + 1}|{t}|01-Jan-1995||http://example.invalid/{i + 1}|{flags}\n")
  return dirs


def write_sequences(path: str, num_users: int = 400, seed: int = 0) -> str:
  """`user item ...` lines: each user walks a random stride through one of 10 item blocks, so
  co-occurrences carry structure; a few items (291..300) never appear in training events."""
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for u in range(1, num_users + 1):
      block, n = int(rng.integers(0, 10)), int(rng.integers(5, 25))
      start, stride = int(rng.integers(0, 29)), int(rng.integers(1, 4))
      items = [block * 29 + (start + stride * i) % 29 + 1 for i in range(n)]
      f.write(f"{u} " + " ".join(map(str, items)) + "\n")
  return path
