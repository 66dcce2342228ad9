"""Reading rows from where users keep them: JSONL, JSON, parquet, CSV, a `datasets.save_to_disk` directory, a
`datasets.Dataset` in memory, or a hub id through `datasets.load_dataset` (the only path that may reach the
network, and only when named).

Rows come back numbered the way a user finds them again: the 1-based line for JSONL (blank lines count, as an
editor counts them), the 1-based row index for everything else. A JSONL line that is not JSON does not stop
the reading: it becomes a bad row like any other.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from prefkit.data.formats import BadRow
from prefkit.errors import PrefkitError

# CSV cells are strings; these columns are converted so that they validate like the same JSON row would.
_CSV_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_CSV_NUMBERS = ("score", "margin", "weight")


@dataclass
class Loaded:
    name: str                      # how messages name the source: the path as given, or the hub id and split
    unit: str                      # "line" (JSONL) or "row"
    rows: list[tuple[int, object]]
    unreadable: list[BadRow] = field(default_factory=list)


def load_rows(source, split: str = "train") -> Loaded:
    if not isinstance(source, (str, os.PathLike)):
        return _in_memory(source, split)
    path = Path(source)
    if path.is_dir():
        if any((path / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _saved_to_disk(path, split)
        return _hub_or_folder(str(source), split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in _FILE_LOADERS:
            raise PrefkitError(f"{source}: unsupported file type {suffix or '(none)'}; "
                               f"use one of {', '.join(sorted(_FILE_LOADERS))}, or a save_to_disk directory")
        return _FILE_LOADERS[suffix](path, str(source), split)
    if path.suffix.lower() in _FILE_LOADERS:  # clearly meant as a file: do not go asking the hub for it
        raise PrefkitError(f"{source}: no such file")
    return _hub_or_folder(str(source), split)


def _in_memory(data, split: str) -> Loaded:
    """A `datasets.Dataset` (or a DatasetDict and its split), as the Trainer API passes it."""
    import datasets

    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise PrefkitError(f"the DatasetDict has no split {split!r}; it has {', '.join(data)}")
        return Loaded(f"the dataset [{split}]", "row", list(enumerate(data[split].to_list(), 1)))
    if isinstance(data, datasets.Dataset):
        return Loaded("the dataset", "row", list(enumerate(data.to_list(), 1)))
    raise PrefkitError(f"data: expected a path, a hub id or a datasets.Dataset, got a {type(data).__name__}")


def _jsonl(path: Path, name: str, split: str) -> Loaded:
    loaded = Loaded(name, "line", [])
    # Lines are split as bytes (\n, \r\n, \r, as an editor counts them) and decoded one by one, so bytes that
    # are not UTF-8 make one bad line, not an unreadable file.
    for number, raw in enumerate(path.read_bytes().removeprefix(_BOM).splitlines(), 1):
        if not raw.strip():
            continue
        try:
            loaded.rows.append((number, json.loads(raw.decode("utf-8"))))
        except UnicodeDecodeError as error:
            loaded.unreadable.append(BadRow(number, None, _not_utf8(raw, error.start)))
        except json.JSONDecodeError as error:
            loaded.unreadable.append(BadRow(number, None, f"not valid JSON: {error.msg} (column {error.colno})"))
    return loaded


def read_text(path: Path, name: str) -> str:
    """The file as text; bytes that are not UTF-8 are one error naming the file, line and column."""
    data = path.read_bytes().removeprefix(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        start = data.rfind(b"\n", 0, error.start) + 1
        line = data.count(b"\n", 0, error.start) + 1
        raise PrefkitError(f"{name} line {line}: {_not_utf8(data[start:], error.start - start)}") from None


def _not_utf8(line: bytes, at: int) -> str:
    column = len(line[:at].decode("utf-8", errors="replace")) + 1
    return f"not valid UTF-8: byte 0x{line[at]:02x} at column {column} (save the file as UTF-8)"


_BOM = b"\xef\xbb\xbf"


def _json(path: Path, name: str, split: str) -> Loaded:
    try:
        data = json.loads(read_text(path, name))
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # JSON lines saved as .json, as datasets' to_json writes them
            return _jsonl(path, name, split)
        raise PrefkitError(f"{name}: not valid JSON: {error.msg} at line {error.lineno}") from None
    if isinstance(data, dict) and isinstance(data.get(split), list):
        data = data[split]
    elif isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise PrefkitError(f"{name}: expected a JSON list of rows (or {{\"{split}\": [...]}}), "
                           f"got {type(data).__name__}")
    return Loaded(name, "row", list(enumerate(data, 1)))


def _parquet(path: Path, name: str, split: str) -> Loaded:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise PrefkitError(f"{name}: not a readable parquet file ({type(error).__name__}: {error})") from None
    return Loaded(name, "row", list(enumerate(table.to_pylist(), 1)))


def _csv(path: Path, name: str, split: str) -> Loaded:
    reader = csv.DictReader(io.StringIO(read_text(path, name), newline=""))
    try:
        rows = [_csv_row(row) for row in reader]
    except csv.Error as error:  # a NUL byte, a field over csv's size limit, ...
        raise PrefkitError(f"{name} line {reader.line_num}: not readable as CSV: {error}") from None
    return Loaded(name, "row", list(enumerate(rows, 1)))


def _csv_row(row: dict) -> dict:
    out = {key: (value if value != "" else None) if key in _CSV_NUMBERS + ("label",) else value
           for key, value in row.items()}
    if isinstance(out.get("label"), str):
        out["label"] = _CSV_BOOLEANS.get(out["label"].strip().lower(), out["label"])
    for key in _CSV_NUMBERS:
        if isinstance(out.get(key), str):
            try:
                out[key] = float(out[key])
            except ValueError:
                pass  # left as text: validation reports it with its row
    return out


def _saved_to_disk(path: Path, split: str) -> Loaded:
    import datasets

    data = datasets.load_from_disk(str(path))
    name = str(path)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise PrefkitError(f"{path}: no split {split!r}; it has {', '.join(data)}")
        data, name = data[split], f"{path} [{split}]"
    return Loaded(name, "row", list(enumerate(data.to_list(), 1)))


def _hub_or_folder(source: str, split: str) -> Loaded:
    import datasets

    try:
        data = datasets.load_dataset(source, split=split)
    except Exception as error:  # datasets raises many types here; the user needs the one line
        raise PrefkitError(f"{source}: not a readable local file or directory, and datasets.load_dataset "
                           f"could not load it ({type(error).__name__}: {error})") from None
    return Loaded(f"{source} [{split}]", "row", list(enumerate(data.to_list(), 1)))


_FILE_LOADERS = {".jsonl": _jsonl, ".json": _json, ".parquet": _parquet, ".csv": _csv}
