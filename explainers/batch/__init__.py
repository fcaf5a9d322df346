"""Explanations at dataset scale: ``python -m explainers batch SOURCE --out DIR`` and the Batch page.

- :mod:`.pipeline`: the sources (folder, glob, list), decoding, one batch explained into rows and maps;
- :mod:`.store`: the run folder (the writer, the table, the maps, the manifest, resume);
- :mod:`.text`: a run over texts (a .txt file or a list's text column), rows with per-token maps;
- :mod:`.views`: what reveals a spurious cue (rows ranked by a statistic and their chance level, mean maps per
  class; for texts, the words that are the top word of many rows);
- :mod:`.compare_runs`: two runs of different models on the same images, paired and ranked by how little their
  maps agree;
- :mod:`.local` and :mod:`.ray_engine`: the two engines; :mod:`.run` picks one and runs a whole source.
"""

from .compare_runs import RunComparison, compare_runs
from .pipeline import COLUMNS, MAP_POOL, Item, Settings, explain_batch, map_statistics, read_source
from .run import ENGINES, run
from .store import RunWriter, load_map, read_manifest, read_table
from .text import TEXT_COLUMNS, explain_texts, is_text_source, read_texts
from .views import VIEWS, WORD_SORTS, WORDS_VIEW, against_chance, chance_levels, mean_maps, ranked, word_table

__all__ = ["COLUMNS", "ENGINES", "MAP_POOL", "TEXT_COLUMNS", "VIEWS", "WORDS_VIEW", "WORD_SORTS", "Item",
           "RunComparison", "RunWriter", "Settings", "against_chance", "chance_levels", "compare_runs",
           "explain_batch", "explain_texts", "is_text_source", "load_map", "map_statistics", "mean_maps", "ranked",
           "read_manifest", "read_source", "read_table", "read_texts", "run", "word_table"]
