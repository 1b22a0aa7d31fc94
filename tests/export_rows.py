"""The example final rows the export tests and bench/trainers.py export: 12 Swahili UDHR paragraphs as responses,
with the columns a run's last stage has (an embedding included, which the export leaves out)."""

from pathlib import Path

import pyarrow as pa

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus" / "sw" / "udhr_swahili.txt"
SW = [p for p in CORPUS.read_text(encoding="utf-8").split("\n\n") if len(p) > 120][:12]


def final_rows() -> pa.Table:
    n = len(SW)
    return pa.table({
        "id": [f"id{i}" for i in range(n)], "lang": ["swh"] * n, "fragment": SW,
        "instruction": [f"Eleza kifungu namba {i} cha tamko." for i in range(n)],
        "instruction_en": [f"Explain article {i} of the declaration." for i in range(n)],
        "response_en": ["English text"] * n, "quality": [float(3 + i % 3) for i in range(n)],
        "source": ["examples/corpus/sw/udhr_swahili.txt"] * n, "source_id": ["doc"] * n,
        "bt_length_ratio": [1.1] * n, "embedding": [[0.1, 0.2]] * n,
    })
