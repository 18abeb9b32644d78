"""Where rows come from: local JSONL/JSON/Parquet/CSV files, or a dataset on a hub through `datasets`."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

NUMERIC_CSV_COLUMNS = ("margin", "preference_strength")
TEXT_CSV_COLUMNS = ("chosen", "rejected")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".jsonl.gz", ".json.gz")


class SourceSpec(BaseModel):
    """One input: a file, a folder `datasets` can load, or a hub dataset name; weight scales its share."""

    path: str
    weight: float = Field(1.0, ge=0, description="1 keeps every training group once, 2 twice, 0.5 half")
    split: str = "train"
    name: str | None = Field(None, description="the hub dataset's configuration name")

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """'PATH[,weight=W][,split=S][,name=N]', as given on the command line."""
        path, *options = text.split(",")
        fields: dict[str, str] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in {"weight", "split", "name"}:
                raise ValueError(f"bad data option {option!r} in {text!r}; use weight=, split= or name=")
            fields[key] = value
        return cls(path=path, **fields)

    @property
    def label(self) -> str:
        """The name accuracy-per-source reports use."""
        p = Path(self.path)
        if p.is_file():
            for suffix in FILE_SUFFIXES:
                if p.name.endswith(suffix):
                    return p.name[: -len(suffix)]
        return self.path


def read_rows(spec: SourceSpec) -> Iterator[dict[str, object]]:
    path = Path(spec.path)
    if path.is_file():
        yield from _read_file(path)
    else:
        yield from _read_hub(spec)


def _read_file(path: Path) -> Iterator[dict[str, object]]:
    name = path.name.removesuffix(".gz")
    opener = gzip.open if path.name.endswith(".gz") else open
    if name.endswith(".jsonl"):
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield _json_row(line, f"{path}:{number}")
    elif name.endswith(".json"):
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
        rows = data.get("data", data.get("rows")) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of rows, or an object with a 'data' list")
        yield from (r if isinstance(r, dict) else {"_unparsable": r} for r in rows)
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif name.endswith(".csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield _csv_row(row)
    else:
        raise ValueError(f"{path}: unknown file type; use one of {', '.join(FILE_SUFFIXES)}")


def _json_row(line: str, where: str) -> dict[str, object]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return {"_unparsable": where}
    return row if isinstance(row, dict) else {"_unparsable": where}


def _csv_row(row: dict[str, str]) -> dict[str, object]:
    # An empty cell is "absent" for optional columns, but an empty text for the responses themselves.
    out: dict[str, object] = {k: (None if v == "" and k not in TEXT_CSV_COLUMNS else v) for k, v in row.items()}
    for column in NUMERIC_CSV_COLUMNS:
        value = out.get(column)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # text left as is is then reported as bad_margin
                out[column] = float(value)
    return out


def _read_hub(spec: SourceSpec) -> Iterator[dict[str, object]]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - the train extra brings it
        raise ValueError(f"{spec.path}: not a file, and the `datasets` package is not installed") from exc
    dataset = datasets.load_dataset(spec.path, spec.name, split=spec.split)
    yield from dataset
